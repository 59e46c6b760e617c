//! A child's life: a [`Slot`] spawns its process, watches it, restarts it with backoff when it
//! exits (failing what was pending on it), and stops it (stdin closed, SIGTERM, SIGKILL);
//! a [`Generation`]'s pipes are wired here.

use std::collections::{HashMap, HashSet};
use std::process::ExitStatus;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mcp_protocol::jsonrpc::{ErrorObject, Response};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin};
use tokio::sync::{mpsc, watch, OnceCell};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::config::{spawn_child, StdioConfig};
use super::multiplex::{Generation, Pending};
use super::stderr;
use crate::backoff::Backoff;
use crate::bridge::unavailable;
use crate::service::SessionSink;
use crate::Error;

/// How long a request waits for a child that is (re)starting before it fails.
const START_WAIT: Duration = Duration::from_secs(10);

/// One supervised child: restarted when it exits, until stopped.
pub(super) struct Slot {
    pub(super) label: String,
    /// The client session this child serves alone (per-client mode).
    pub(super) session: Option<String>,
    /// The running process, `None` between processes.
    pub(super) current: watch::Receiver<Option<Arc<Generation>>>,
    /// The `initialize` parameters and result the first client got; replayed to each new
    /// process and given to later clients. A std mutex: no await under it.
    pub(super) init: Mutex<Option<(Value, Response)>>,
    pub(super) next_id: Arc<AtomicU64>,
    pub(super) sink: Arc<OnceLock<SessionSink>>,
    pub(super) known: Arc<Mutex<HashSet<String>>>,
    pub(super) stop: CancellationToken,
    /// Cancelled once the supervisor has stopped the last process.
    pub(super) done: CancellationToken,
}

impl Slot {
    /// Spawns the first process now (so a bad command fails here) and supervises it.
    pub(super) fn start(
        config: &StdioConfig,
        label: String,
        session: Option<String>,
        sink: &Arc<OnceLock<SessionSink>>,
        known: &Arc<Mutex<HashSet<String>>>,
        stop: CancellationToken,
    ) -> Result<Arc<Slot>, Error> {
        let (tx, rx) = watch::channel(None);
        let slot = Arc::new(Slot {
            label,
            session,
            current: rx,
            init: Mutex::new(None),
            next_id: Arc::new(AtomicU64::new(1)),
            sink: sink.clone(),
            known: known.clone(),
            stop,
            done: CancellationToken::new(),
        });
        // The first process is running and published before `start` returns.
        let child = spawn_child(config)?;
        let first = Generation::attach(slot.clone(), child, 1);
        let _ = tx.send(Some(first.0.clone()));
        tokio::spawn(slot.clone().supervise(config.clone(), first, tx));
        Ok(slot)
    }

    pub(super) fn current(&self) -> Option<Arc<Generation>> {
        self.current.borrow().clone()
    }

    pub(super) async fn stopped(&self) {
        self.done.cancelled().await;
    }

    /// Runs processes one after another until stopped.
    async fn supervise(
        self: Arc<Self>,
        config: StdioConfig,
        first: (Arc<Generation>, Child),
        publish: watch::Sender<Option<Arc<Generation>>>,
    ) {
        let mut backoff = Backoff::new(config.max_restart_delay);
        let mut next = Some(first);
        let mut number = 1u32;
        loop {
            let (generation, child) = match next.take() {
                Some(first) => first,
                None => match spawn_child(&config) {
                    Ok(child) => {
                        number += 1;
                        let attached = Generation::attach(self.clone(), child, number);
                        let _ = publish.send(Some(attached.0.clone()));
                        attached
                    }
                    Err(e) => {
                        warn!(slot = %self.label, "cannot start the MCP server again: {e}");
                        if !self.pause(&mut backoff).await {
                            break;
                        }
                        continue;
                    }
                },
            };
            let status = self.watch_child(child, &config).await;
            let _ = publish.send(None);
            generation.exited(status);
            if self.stop.is_cancelled() {
                break;
            }
            warn!(
                slot = %self.label,
                status = %describe(status),
                "the MCP server process exited; restarting it"
            );
            if !self.pause(&mut backoff).await {
                break;
            }
        }
        self.done.cancel();
    }

    async fn pause(&self, backoff: &mut Backoff) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(backoff.next_delay()) => true,
        }
    }

    /// Waits for the process to exit, or stops it: stdin closed, SIGTERM, SIGKILL.
    async fn watch_child(&self, mut child: Child, config: &StdioConfig) -> Option<ExitStatus> {
        tokio::select! {
            status = child.wait() => return status.ok(),
            _ = self.stop.cancelled() => {}
        }
        // The MCP stdio spec's order: close stdin, then SIGTERM, then SIGKILL.
        if let Some(generation) = self.current() {
            generation.close_stdin();
        }
        if let Ok(status) = tokio::time::timeout(config.stop_grace, child.wait()).await {
            return status.ok();
        }
        terminate(&child);
        if let Ok(status) = tokio::time::timeout(config.stop_grace, child.wait()).await {
            return status.ok();
        }
        warn!(slot = %self.label, "the MCP server ignored SIGTERM; killing it");
        let _ = child.kill().await;
        child.wait().await.ok()
    }

    /// Waits for a running process (a restart may be under way).
    pub(super) async fn generation(&self) -> Result<Arc<Generation>, ErrorObject> {
        let mut rx = self.current.clone();
        let waited = tokio::time::timeout(START_WAIT, async {
            tokio::select! {
                r = rx.wait_for(|g| g.as_ref().is_some_and(|g| !g.alive.is_cancelled())) => {
                    r.ok().and_then(|g| g.clone())
                }
                _ = self.stop.cancelled() => None,
            }
        })
        .await;
        match waited {
            Ok(Some(generation)) => Ok(generation),
            Ok(None) => Err(unavailable("the MCP server is shutting down")),
            Err(_) => Err(unavailable(
                "the MCP server process is not running (it keeps exiting; see the bridge's log)",
            )),
        }
    }
}

#[cfg(unix)]
fn terminate(child: &Child) {
    let pid = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32));
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

#[cfg(not(unix))]
fn terminate(_child: &Child) {
    // No SIGTERM elsewhere: the kill that follows the grace is the only stop.
}

fn describe(status: Option<ExitStatus>) -> String {
    status.map_or_else(|| "unknown".to_owned(), |s| s.to_string())
}

impl Generation {
    /// Wires a new process's pipes to a new generation.
    pub(super) fn attach(
        slot: Arc<Slot>,
        mut child: Child,
        number: u32,
    ) -> (Arc<Generation>, Child) {
        let (tx, rx) = mpsc::unbounded_channel();
        let generation = Arc::new(Generation {
            slot: slot.clone(),
            number,
            pid: child.id(),
            stdin: Mutex::new(Some(tx)),
            pending: Mutex::new(HashMap::new()),
            server_requests: Mutex::new(HashMap::new()),
            initialized: OnceCell::new(),
            alive: CancellationToken::new(),
            exit: Mutex::new(None),
        });
        if let Some(stdin) = child.stdin.take() {
            tokio::spawn(write_lines(stdin, rx));
        }
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(generation.clone().read_stdout(stdout));
        }
        if let Some(stderr) = child.stderr.take() {
            // Drained to EOF whatever it holds: a closed stderr would kill the child.
            tokio::spawn(stderr::drain(stderr, slot.label.clone()));
        }
        debug!(slot = %slot.label, number, pid = ?generation.pid, "MCP server process running");
        (generation, child)
    }

    pub(super) fn close_stdin(&self) {
        self.stdin.lock().expect("stdin lock").take();
    }

    /// The process exited: every request pending on it fails now.
    pub(super) fn exited(&self, status: Option<ExitStatus>) {
        *self.exit.lock().expect("exit lock") = Some(describe(status));
        self.alive.cancel();
        self.close_stdin();
        let pending: Vec<Pending> = self
            .pending
            .lock()
            .expect("pending lock")
            .drain()
            .map(|(_, p)| p)
            .collect();
        for p in pending {
            let _ = p
                .answer
                .send(Response::error(Some(p.original), self.exit_error()));
        }
    }

    pub(super) fn exit_error(&self) -> ErrorObject {
        let status = self
            .exit
            .lock()
            .expect("exit lock")
            .clone()
            .unwrap_or_else(|| "unknown".into());
        unavailable(format!(
            "the MCP server process exited ({status}) before answering; it is being restarted"
        ))
    }
}

async fn write_lines(mut stdin: ChildStdin, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(line) = rx.recv().await {
        if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
            return;
        }
    }
    // Every sender is gone: dropping stdin closes it, which asks the child to exit.
}
