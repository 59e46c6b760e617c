//! [`StdioBridge`]: one or many child processes speaking MCP over stdio (newline-delimited
//! JSON-RPC on stdin/stdout; stderr goes to our log), supervised and multiplexed.

use std::collections::{HashMap, HashSet};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mcp_protocol::jsonrpc::{
    ErrorObject, Message, Notification, Outcome, Request, RequestId, Response,
};
use mcp_protocol::mcp::methods;
use mcp_server::Outbound;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot, watch, OnceCell};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{default_initialize_params, unavailable, with_id, SessionMode};
use crate::backoff::Backoff;
use crate::service::{BoxFuture, Service, SessionSink};
use crate::Error;

/// How long a request waits for a child that is (re)starting before it fails.
const START_WAIT: Duration = Duration::from_secs(10);

/// What to run and how to share it.
#[derive(Clone, Debug)]
pub struct StdioConfig {
    /// The program to run.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Shared by all clients or one per client session.
    pub mode: SessionMode,
    /// In per-client mode, the most children alive at once; more sessions are refused.
    pub max_children: usize,
    /// How long a stopping child gets after its stdin closes, and again after SIGTERM.
    pub stop_grace: Duration,
    /// The longest pause between restarts of a child that keeps exiting.
    pub max_restart_delay: Duration,
}

impl StdioConfig {
    /// Runs `program` with `args`, shared, with the defaults.
    pub fn new(
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        StdioConfig {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            mode: SessionMode::Shared,
            max_children: 64,
            stop_grace: Duration::from_secs(5),
            max_restart_delay: Duration::from_secs(10),
        }
    }

    /// Shares the child as `mode` says.
    pub fn with_mode(mut self, mode: SessionMode) -> Self {
        self.mode = mode;
        self
    }
}

/// Serves a stdio MCP program through the proxy (see [the module docs](super)).
#[derive(Clone)]
pub struct StdioBridge {
    inner: Arc<BridgeInner>,
}

struct BridgeInner {
    config: StdioConfig,
    /// The shared child, or in per-client mode the child of sessionless traffic.
    main: Arc<Slot>,
    /// Per-client mode: the child of each client session. A std mutex: no await under it.
    sessions: Mutex<HashMap<String, Arc<Slot>>>,
    /// Where session messages go (set by the reverse client).
    sink: Arc<OnceLock<SessionSink>>,
    /// Client sessions seen and not closed (shared mode broadcasts untied messages to them).
    known: Arc<Mutex<HashSet<String>>>,
    stop: CancellationToken,
}

impl StdioBridge {
    /// Starts the child (the shared one, or the sessionless one in per-client mode) and
    /// returns once it runs; an error if the program cannot be started at all.
    pub async fn start(config: StdioConfig) -> Result<StdioBridge, Error> {
        let stop = CancellationToken::new();
        let sink = Arc::new(OnceLock::new());
        let known = Arc::new(Mutex::new(HashSet::new()));
        let main = Slot::start(
            &config,
            "main".into(),
            None,
            &sink,
            &known,
            stop.child_token(),
        )?;
        info!(program = %config.program, mode = ?config.mode, "MCP server process started");
        Ok(StdioBridge {
            inner: Arc::new(BridgeInner {
                config,
                main,
                sessions: Mutex::new(HashMap::new()),
                sink,
                known,
                stop,
            }),
        })
    }

    /// Stops every child: closes its stdin, then SIGTERM, then SIGKILL, each after the grace.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        let mut slots = vec![self.inner.main.clone()];
        slots.extend(
            self.inner
                .sessions
                .lock()
                .expect("sessions lock")
                .drain()
                .map(|(_, s)| s),
        );
        for slot in slots {
            slot.stopped().await;
        }
    }

    /// How many children are alive now (for tests and logs).
    pub fn children(&self) -> usize {
        let sessions = self.inner.sessions.lock().expect("sessions lock");
        std::iter::once(&self.inner.main)
            .chain(sessions.values())
            .filter(|s| s.current().is_some())
            .count()
    }

    /// The process id of the child serving `session` (`None`: sessionless/shared), if running.
    pub fn child_pid(&self, session: Option<&str>) -> Option<u32> {
        self.slot_for(session, false)
            .ok()
            .flatten()
            .and_then(|s| s.current())
            .and_then(|g| g.pid)
    }

    /// The slot serving `session`; in per-client mode a new one when `create`.
    fn slot_for(
        &self,
        session: Option<&str>,
        create: bool,
    ) -> Result<Option<Arc<Slot>>, ErrorObject> {
        let inner = &self.inner;
        let (SessionMode::PerClient, Some(session)) = (inner.config.mode, session) else {
            return Ok(Some(inner.main.clone()));
        };
        let mut sessions = inner.sessions.lock().expect("sessions lock");
        if let Some(slot) = sessions.get(session) {
            return Ok(Some(slot.clone()));
        }
        if !create {
            return Ok(None);
        }
        if inner.stop.is_cancelled() {
            return Err(unavailable("the bridge is shutting down"));
        }
        if sessions.len() >= inner.config.max_children {
            warn!(
                max = inner.config.max_children,
                "per-client child limit reached; session refused"
            );
            return Err(unavailable(format!(
                "too many client sessions: this server runs at most {} processes",
                inner.config.max_children
            )));
        }
        let label = format!("session {}", short(session));
        let slot = Slot::start(
            &inner.config,
            label,
            Some(session.to_owned()),
            &inner.sink,
            &inner.known,
            inner.stop.child_token(),
        )
        .map_err(|e| unavailable(e.to_string()))?;
        sessions.insert(session.to_owned(), slot.clone());
        Ok(Some(slot))
    }
}

impl Service for StdioBridge {
    fn handle<'a>(
        &'a self,
        session: Option<&'a str>,
        message: Message,
        outbound: Outbound,
    ) -> BoxFuture<'a, Option<Response>> {
        Box::pin(async move {
            if let Some(session) = session {
                if !self.inner.stop.is_cancelled() {
                    self.inner
                        .known
                        .lock()
                        .expect("known lock")
                        .insert(session.to_owned());
                }
            }
            let create = !matches!(message, Message::Response(_));
            let slot = match self.slot_for(session, create) {
                Ok(Some(slot)) => slot,
                Ok(None) => return None,
                Err(error) => {
                    return match message {
                        Message::Request(r) => Some(Response::error(Some(r.id), error)),
                        _ => None,
                    }
                }
            };
            slot.handle(session, message, outbound).await
        })
    }

    fn close_session(&self, session: &str) {
        self.inner.known.lock().expect("known lock").remove(session);
        let slot = self
            .inner
            .sessions
            .lock()
            .expect("sessions lock")
            .remove(session);
        if let Some(slot) = slot {
            debug!(
                session = short(session),
                "client session closed: stopping its child"
            );
            slot.stop.cancel();
        } else {
            self.inner.main.forget_session(session);
        }
    }

    fn set_session_sink(&self, sink: SessionSink) {
        let _ = self.inner.sink.set(sink);
    }
}

impl Drop for BridgeInner {
    fn drop(&mut self) {
        // The last handle is gone: stop the children rather than leave them running.
        self.stop.cancel();
    }
}

/// A short prefix of a session id for logs (ids are credentials of a sort).
fn short(session: &str) -> &str {
    // Session ids are ASCII (the proxy mints them); `get` keeps odd ones from panicking.
    session.get(..8).unwrap_or(session)
}

/// One supervised child: restarted when it exits, until stopped.
struct Slot {
    label: String,
    /// The client session this child serves alone (per-client mode).
    session: Option<String>,
    /// The running process, `None` between processes.
    current: watch::Receiver<Option<Arc<Generation>>>,
    /// The `initialize` parameters and result the first client got; replayed to each new
    /// process and given to later clients. A std mutex: no await under it.
    init: Mutex<Option<(Value, Response)>>,
    next_id: Arc<AtomicU64>,
    sink: Arc<OnceLock<SessionSink>>,
    known: Arc<Mutex<HashSet<String>>>,
    stop: CancellationToken,
    /// Cancelled once the supervisor has stopped the last process.
    done: CancellationToken,
}

impl Slot {
    /// Spawns the first process now (so a bad command fails here) and supervises it.
    fn start(
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

    fn current(&self) -> Option<Arc<Generation>> {
        self.current.borrow().clone()
    }

    async fn stopped(&self) {
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
    async fn generation(&self) -> Result<Arc<Generation>, ErrorObject> {
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

    async fn handle(
        &self,
        session: Option<&str>,
        message: Message,
        outbound: Outbound,
    ) -> Option<Response> {
        match message {
            Message::Request(request) => {
                let id = request.id.clone();
                Some(match self.request(session, request, outbound).await {
                    Ok(response) => response,
                    Err(error) => Response::error(Some(id), error),
                })
            }
            Message::Notification(notification) => {
                if let Err(e) = self.notify(session, notification).await {
                    debug!(slot = %self.label, "notification not delivered: {}", e.message);
                }
                None
            }
            Message::Response(response) => {
                if let Some(generation) = self.current() {
                    generation.reply(session, response);
                }
                None
            }
        }
    }

    async fn request(
        &self,
        session: Option<&str>,
        request: Request,
        outbound: Outbound,
    ) -> Result<Response, ErrorObject> {
        let generation = self.generation().await?;
        if request.method == methods::INITIALIZE {
            let cached = self
                .init
                .lock()
                .expect("init lock")
                .as_ref()
                .map(|(_, r)| r.clone());
            if let Some(cached) = cached {
                return Ok(with_id(cached, request.id));
            }
            let params = request
                .params
                .clone()
                .unwrap_or_else(default_initialize_params);
            let answer = generation.initialize(params).await?;
            return Ok(with_id(answer, request.id));
        }
        generation.initialized().await?;
        generation.call(session, request, outbound).await
    }

    async fn notify(
        &self,
        session: Option<&str>,
        notification: Notification,
    ) -> Result<(), ErrorObject> {
        // The bridge sends the child its own `notifications/initialized`, once per process.
        if notification.method == methods::NOTIFICATION_INITIALIZED {
            return Ok(());
        }
        let generation = self.generation().await?;
        generation.initialized().await?;
        generation.notify(session, notification);
        Ok(())
    }

    /// Shared mode: a client session ended; forget what routes to it.
    fn forget_session(&self, session: &str) {
        if let Some(generation) = self.current() {
            generation
                .server_requests
                .lock()
                .expect("server_requests lock")
                .retain(|_, route| route.session.as_deref() != Some(session));
        }
    }

    /// Sends a session message; `false` when there is no session to send it to.
    fn to_session(&self, message: &Message) -> bool {
        let Some(sink) = self.sink.get() else {
            return false;
        };
        match &self.session {
            Some(session) => sink(session, message.clone()),
            None => {
                let known: Vec<String> = self
                    .known
                    .lock()
                    .expect("known lock")
                    .iter()
                    .cloned()
                    .collect();
                let mut taken = false;
                for session in &known {
                    taken |= sink(session, message.clone());
                }
                taken
            }
        }
    }
}

fn spawn_child(config: &StdioConfig) -> Result<Child, Error> {
    Command::new(&config.program)
        .args(&config.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // If the bridge itself dies, the child must not outlive it.
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::Spawn {
            program: config.program.clone(),
            source,
        })
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

/// A request of a client waiting for the child's answer.
struct Pending {
    /// The client's own id, restored on the answer.
    original: RequestId,
    /// The client's progress token, when the bridge replaced it.
    progress_token: Option<Value>,
    session: Option<String>,
    outbound: Outbound,
    answer: oneshot::Sender<Response>,
}

/// Where a request of the child to a client went, so the client's answer can come back.
#[derive(Clone)]
struct Route {
    session: Option<String>,
    outbound: Option<Outbound>,
}

/// One running process of a slot.
struct Generation {
    slot: Arc<Slot>,
    number: u32,
    pid: Option<u32>,
    /// Lines for the child's stdin; `None` once closed. A std mutex: no await under it.
    stdin: Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>,
    /// Requests in flight by the bridge's id. A std mutex: no await under it.
    pending: Mutex<HashMap<u64, Pending>>,
    /// The child's requests to clients by the child's id.
    server_requests: Mutex<HashMap<RequestId, Route>>,
    /// This process's `initialize` result.
    initialized: OnceCell<Response>,
    /// Cancelled when the process has exited.
    alive: CancellationToken,
    exit: Mutex<Option<String>>,
}

impl Generation {
    /// Wires a new process's pipes to a new generation.
    fn attach(slot: Arc<Slot>, mut child: Child, number: u32) -> (Arc<Generation>, Child) {
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
            let label = slot.label.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    info!(target: "mcp_reverse::child", slot = %label, "{line}");
                }
            });
        }
        debug!(slot = %slot.label, number, pid = ?generation.pid, "MCP server process running");
        (generation, child)
    }

    fn close_stdin(&self) {
        self.stdin.lock().expect("stdin lock").take();
    }

    /// The process exited: every request pending on it fails now.
    fn exited(&self, status: Option<ExitStatus>) {
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

    fn exit_error(&self) -> ErrorObject {
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

    fn send(&self, message: &Message) -> bool {
        let mut line = serde_json::to_vec(message).expect("messages serialize");
        line.push(b'\n');
        match &*self.stdin.lock().expect("stdin lock") {
            Some(tx) => tx.send(line).is_ok(),
            None => false,
        }
    }

    /// Sends `initialize` (once per process) and then `notifications/initialized`.
    async fn initialize(&self, params: Value) -> Result<Response, ErrorObject> {
        let answer = self
            .initialized
            .get_or_try_init(|| async {
                let request = Request::new(0, methods::INITIALIZE, Some(params.clone()));
                let answer = self.call(None, request, Outbound::none()).await?;
                if let Outcome::Error(e) = &answer.outcome {
                    // Not cached: the next client tries again.
                    return Err(e.clone());
                }
                let initialized = Notification::new(methods::NOTIFICATION_INITIALIZED, None);
                self.send(&Message::Notification(initialized));
                let mut init = self.slot.init.lock().expect("init lock");
                if init.is_none() {
                    *init = Some((params, answer.clone()));
                }
                Ok(answer)
            })
            .await?;
        Ok(answer.clone())
    }

    /// Makes sure this process is initialized: with the first client's parameters when there
    /// were some (a restarted process), else with the bridge's own.
    async fn initialized(&self) -> Result<(), ErrorObject> {
        if self.initialized.initialized() {
            return Ok(());
        }
        let params = self
            .slot
            .init
            .lock()
            .expect("init lock")
            .as_ref()
            .map(|(p, _)| p.clone());
        debug!(
            slot = %self.slot.label,
            generation = self.number,
            replayed = params.is_some(),
            "initializing the MCP server before its first request"
        );
        self.initialize(params.unwrap_or_else(default_initialize_params))
            .await
            .map(|_| ())
    }

    /// Sends a client's request with the bridge's id and waits for the answer.
    async fn call(
        &self,
        session: Option<&str>,
        mut request: Request,
        outbound: Outbound,
    ) -> Result<Response, ErrorObject> {
        let ours = self.slot.next_id.fetch_add(1, Ordering::Relaxed);
        let original = std::mem::replace(&mut request.id, RequestId::from(ours as i64));
        // Progress tokens come from clients too: two clients may pick the same one.
        let progress_token = request
            .params
            .as_mut()
            .and_then(|p| p.get_mut("_meta"))
            .and_then(|m| m.get_mut("progressToken"))
            .map(|t| std::mem::replace(t, Value::from(ours)));
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(
            ours,
            Pending {
                original: original.clone(),
                progress_token,
                session: session.map(str::to_owned),
                outbound,
                answer: tx,
            },
        );
        // Removes the entry if the caller gives up (the proxy's request ended).
        let _guard = PendingGuard {
            generation: self,
            id: ours,
        };
        if self.alive.is_cancelled() || !self.send(&Message::Request(request)) {
            return Err(self.exit_error());
        }
        match rx.await {
            Ok(mut answer) => {
                answer.id = Some(original);
                Ok(answer)
            }
            Err(_) => Err(self.exit_error()),
        }
    }

    /// Forwards a client's notification; a cancellation names the bridge's id for the request.
    fn notify(&self, session: Option<&str>, mut notification: Notification) {
        if notification.method == methods::NOTIFICATION_CANCELLED {
            let target = notification
                .params
                .as_ref()
                .and_then(|p| p.get("requestId"))
                .and_then(RequestId::from_value);
            let ours = target.and_then(|target| {
                self.pending
                    .lock()
                    .expect("pending lock")
                    .iter()
                    .find(|(_, p)| p.original == target && p.session.as_deref() == session)
                    .map(|(id, _)| *id)
            });
            match (ours, notification.params.as_mut()) {
                (Some(ours), Some(Value::Object(params))) => {
                    params.insert("requestId".into(), Value::from(ours));
                }
                _ => return, // nothing of this client's is in flight
            }
        }
        self.send(&Message::Notification(notification));
    }

    /// A client answers a request of the child: only the client it went to may.
    fn reply(&self, session: Option<&str>, response: Response) {
        let Some(id) = response.id.clone() else {
            return;
        };
        let mut routes = self.server_requests.lock().expect("server_requests lock");
        match routes.get(&id) {
            Some(route) if route.session.as_deref() == session => {
                routes.remove(&id);
                drop(routes);
                self.send(&Message::Response(response));
            }
            _ => debug!(slot = %self.slot.label, "a reply to no request of this server; dropped"),
        }
    }

    async fn read_stdout(self: Arc<Self>, stdout: tokio::process::ChildStdout) {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            // No length limit: the child is the operator's own program, and a tool result of
            // many megabytes is one line.
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = line.trim_ascii();
                    if text.is_empty() {
                        continue;
                    }
                    match Message::parse(text) {
                        Ok(message) => self.on_child_message(message),
                        Err(e) => warn!(
                            slot = %self.slot.label,
                            "the MCP server wrote something that is not JSON-RPC on stdout ({e}); ignored"
                        ),
                    }
                }
            }
        }
    }

    /// Routes one message of the child.
    fn on_child_message(&self, message: Message) {
        match message {
            Message::Response(response) => {
                let ours = match &response.id {
                    Some(RequestId::Number(n)) => n.as_u64(),
                    _ => None,
                };
                let pending =
                    ours.and_then(|id| self.pending.lock().expect("pending lock").remove(&id));
                match pending {
                    Some(p) => {
                        let _ = p.answer.send(response);
                    }
                    None => debug!(slot = %self.slot.label, "an answer nobody waits for; dropped"),
                }
            }
            Message::Request(request) => self.child_request(request),
            Message::Notification(notification) => self.child_notification(notification),
        }
    }

    /// The latest request in flight: the best guess of whom an untied message is for.
    fn latest(&self) -> Option<(Option<String>, Outbound)> {
        let pending = self.pending.lock().expect("pending lock");
        pending
            .iter()
            .filter(|(_, p)| p.outbound.is_connected())
            .max_by_key(|(id, _)| **id)
            .map(|(_, p)| (p.session.clone(), p.outbound.clone()))
    }

    fn child_request(&self, request: Request) {
        let id = request.id.clone();
        let message = Message::Request(request);
        let route = match self.latest() {
            Some((session, outbound)) if outbound.send(message.clone()) => Some(Route {
                session,
                outbound: Some(outbound),
            }),
            _ if self.slot.session.is_some() && self.slot.to_session(&message) => Some(Route {
                session: self.slot.session.clone(),
                outbound: None,
            }),
            _ => None,
        };
        match route {
            Some(route) => {
                self.server_requests
                    .lock()
                    .expect("server_requests lock")
                    .insert(id, route);
            }
            None => {
                let error = unavailable(
                    "no client can take this request now (no request of a client is in flight)",
                );
                self.send(&Message::Response(Response::error(Some(id), error)));
            }
        }
    }

    fn child_notification(&self, mut notification: Notification) {
        // Progress names the bridge's token: restore the client's and send it to that client.
        if notification.method == methods::NOTIFICATION_PROGRESS {
            let token = notification
                .params
                .as_ref()
                .and_then(|p| p.get("progressToken"))
                .and_then(Value::as_u64);
            let target = token.and_then(|t| {
                let pending = self.pending.lock().expect("pending lock");
                pending
                    .get(&t)
                    .map(|p| (p.progress_token.clone(), p.outbound.clone()))
            });
            if let Some((Some(original), outbound)) = target {
                if let Some(Value::Object(params)) = notification.params.as_mut() {
                    params.insert("progressToken".into(), original);
                }
                outbound.send(Message::Notification(notification));
            }
            return;
        }
        // The child withdraws a request it sent a client: tell that client.
        if notification.method == methods::NOTIFICATION_CANCELLED {
            let target = notification
                .params
                .as_ref()
                .and_then(|p| p.get("requestId"))
                .and_then(RequestId::from_value);
            let route = target.and_then(|t| {
                self.server_requests
                    .lock()
                    .expect("server_requests lock")
                    .remove(&t)
            });
            if let Some(route) = route {
                let message = Message::Notification(notification);
                let sent = route.outbound.is_some_and(|o| o.send(message.clone()));
                if !sent {
                    if let (Some(session), Some(sink)) = (route.session, self.slot.sink.get()) {
                        sink(&session, message);
                    }
                }
            }
            return;
        }
        let message = Message::Notification(notification);
        if let Some((_, outbound)) = self.latest() {
            if outbound.send(message.clone()) {
                return;
            }
        }
        if !self.slot.to_session(&message) {
            debug!(slot = %self.slot.label, "a notification with nobody to take it; dropped");
        }
    }
}

/// Drops a pending entry when its caller stops waiting.
struct PendingGuard<'a> {
    generation: &'a Generation,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.generation
            .pending
            .lock()
            .expect("pending lock")
            .remove(&self.id);
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
