//! Where audit lines go: stdout or a file (`--audit-log`), one `write` per line so a crash
//! loses at most the line being written, and the file reopened on SIGHUP for logrotate; and
//! the latest records kept in memory for the console, bounded.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::record::Record;

/// The most records the console keeps (about 400 bytes each, payloads never kept).
pub const RECENT_RECORDS: usize = 10_000;

/// Where audit lines are written; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Mutex<Target>>,
}

enum Target {
    Stdout,
    File { path: PathBuf, file: File },
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.lock() {
            Target::Stdout => f.write_str("AuditLog(stdout)"),
            Target::File { path, .. } => write!(f, "AuditLog({})", path.display()),
        }
    }
}

impl AuditLog {
    /// Lines to the process's standard output.
    pub fn stdout() -> AuditLog {
        AuditLog {
            inner: Arc::new(Mutex::new(Target::Stdout)),
        }
    }

    /// Lines appended to the file at `path` (created, mode 0600 on Unix, when missing).
    pub fn file(path: impl Into<PathBuf>) -> io::Result<AuditLog> {
        let path = path.into();
        let file = open(&path)?;
        Ok(AuditLog {
            inner: Arc::new(Mutex::new(Target::File { path, file })),
        })
    }

    /// `-` for stdout, else a file path.
    pub fn open(spec: &Path) -> io::Result<AuditLog> {
        if spec.as_os_str() == "-" {
            Ok(AuditLog::stdout())
        } else {
            AuditLog::file(spec)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Target> {
        // A sync lock: one `write` under it, never an `.await`.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes one line with a single `write_all` and no buffer of ours, so what the kernel
    /// has is every line but perhaps the last. A failed write is logged, not retried.
    pub fn write(&self, line: &[u8]) {
        let result = match &mut *self.lock() {
            Target::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(line).and_then(|()| out.flush())
            }
            Target::File { file, .. } => file.write_all(line),
        };
        if let Err(e) = result {
            error!(error = %e, "audit line not written");
        }
    }

    /// Reopens the file at its path (logrotate moved it away); stdout stays as it is.
    pub fn reopen(&self) -> io::Result<()> {
        if let Target::File { path, file } = &mut *self.lock() {
            *file = open(path)?;
            info!(path = %path.display(), "audit log reopened");
        }
        Ok(())
    }

    /// Reopens the file on every SIGHUP until `shutdown` (Unix; a file target only).
    pub fn spawn_reopener(
        &self,
        shutdown: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if matches!(&*self.lock(), Target::Stdout) {
            return None;
        }
        let log = self.clone();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hangup = signal(SignalKind::hangup()).ok()?;
            Some(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = hangup.recv() => {}
                    }
                    if let Err(e) = log.reopen() {
                        error!(error = %e, "audit log not reopened; lines go to the old file");
                    }
                }
            }))
        }
        #[cfg(not(unix))]
        {
            let _ = (log, shutdown);
            None
        }
    }
}

fn open(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// The latest records, newest last, at most [`RECENT_RECORDS`].
#[derive(Debug, Default)]
pub struct Recent {
    records: Mutex<VecDeque<Arc<Record>>>,
    /// Records ever added, so a reader can tell new ones from old.
    total: std::sync::atomic::AtomicU64,
}

impl Recent {
    /// Keeps `record`, forgetting the oldest beyond the bound.
    pub fn push(&self, record: Arc<Record>) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() >= RECENT_RECORDS {
            records.pop_front();
        }
        records.push_back(record);
        self.total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The newest `limit` records that `keep` accepts, newest first.
    pub fn latest(&self, limit: usize, keep: impl Fn(&Record) -> bool) -> Vec<Arc<Record>> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records
            .iter()
            .rev()
            .filter(|r| keep(r))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Records ever added.
    pub fn total(&self) -> u64 {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_reopened_after_a_rotation() {
        let dir = std::env::temp_dir().join(format!("mcp-proxy-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let log = AuditLog::file(&path).unwrap();
        log.write(b"one\n");
        std::fs::rename(&path, dir.join("audit.log.1")).unwrap();
        log.write(b"two\n");
        log.reopen().unwrap();
        log.write(b"three\n");
        let old = std::fs::read_to_string(dir.join("audit.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!((old.as_str(), new.as_str()), ("one\ntwo\n", "three\n"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
