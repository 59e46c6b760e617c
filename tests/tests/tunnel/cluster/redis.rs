//! The Redis the cluster tests run against: a `redis-server` of each test's own on a Unix
//! socket in a fresh directory.
//!
//! Where no `redis-server` is installed, the project's own installer
//! (`bash xtask/scale-out/install-deps.sh redis-server`, what CI runs) runs first, once for
//! every test process at a time (a lock file under `target/tmp`): as root with apt-get it
//! installs Redis from Debian's packages and the tests go on; anywhere else every cluster
//! test fails saying what to run.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use crate::common::DEADLINE;

/// The installer, relative to this crate.
const INSTALLER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../xtask/scale-out/install-deps.sh"
);

/// How long a test process waits for another one's install (apt-get update and install of
/// one package) before giving up; a lock file older than this is a dead installer's.
const INSTALL_DEADLINE: Duration = Duration::from_secs(600);

/// A `redis-server` of this test's own on a Unix socket in a fresh directory: no port to
/// race for, nothing persisted, killed when dropped.
pub(super) struct Redis {
    child: Child,
    dir: PathBuf,
    /// Where the instances connect (`redis+unix://…`).
    pub(super) url: String,
}

impl Redis {
    /// Starts one (installing Redis first when it is missing).
    pub(super) fn start() -> Redis {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mcp-cluster-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Redis::spawn(&dir);
        let url = format!("redis+unix://{}", dir.join("redis.sock").display());
        Redis { child, url, dir }
    }

    /// A crash and restart with nothing kept: the same socket, an empty store.
    pub(super) fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.dir.join("redis.sock"));
        self.child = Redis::spawn(&self.dir);
    }

    /// Runs `redis-cli` (installed with `redis-server`) against this server; its output.
    pub(super) fn cli(&self, args: &[&str]) -> String {
        let cli = find_tool("redis-cli").expect("redis-cli comes with redis-server");
        let out = Command::new(cli)
            .arg("-s")
            .arg(self.dir.join("redis.sock"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Starts `redis-server` on `dir/redis.sock` and waits for the socket.
    fn spawn(dir: &Path) -> Child {
        let socket = dir.join("redis.sock");
        let child = Command::new(redis_server())
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server did not start");
        let start = Instant::now();
        while !socket.exists() {
            assert!(
                start.elapsed() < DEADLINE,
                "redis-server never opened its socket"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        child
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `name` on `PATH`, or where Debian puts it (`/usr/sbin` may be missing from `PATH`).
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The `redis-server` binary, installed by the project's installer first when missing. Every
/// cluster test panics with what to run when it cannot be had.
fn redis_server() -> &'static Path {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let lock = Path::new(env!("CARGO_TARGET_TMPDIR")).join("install-redis.lock");
        once_across_processes(&lock, || find_tool("redis-server").is_some(), install_redis)?;
        find_tool("redis-server")
            .ok_or_else(|| "redis-server still missing after the installer ran".to_owned())
    });
    match found {
        Ok(path) => path,
        Err(e) => panic!(
            "the cluster tests need redis-server: {e}\n\
             Install it with `sudo bash xtask/scale-out/install-deps.sh redis-server` \
             (Debian/Ubuntu; what CI runs), or put a redis-server (Redis 6 or later) on PATH."
        ),
    }
}

/// Runs `install-deps.sh redis-server`; its complaint when it fails (not root, no apt-get,
/// no network).
fn install_redis() -> Result<(), String> {
    eprintln!("redis-server not found: running xtask/scale-out/install-deps.sh redis-server");
    let out = Command::new("bash")
        .arg(INSTALLER)
        .arg("redis-server")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run {INSTALLER}: {e}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        eprint!("{said}");
        Ok(())
    } else {
        Err(format!(
            "it is not installed and the installer failed ({}):\n{}",
            out.status,
            said.trim_end()
        ))
    }
}

/// Runs `install` unless `present()` already holds, one caller at a time across processes:
/// whoever creates `lock` (exclusively) installs and then removes it; the others wait for the
/// lock to go and check again. A lock older than [`INSTALL_DEADLINE`] belonged to an
/// installer that died and is taken over.
fn once_across_processes(
    lock: &Path,
    present: impl Fn() -> bool,
    install: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    /// Removes the lock file when the installer is done (or panicked).
    struct Held<'a>(&'a Path);
    impl Drop for Held<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }

    let start = Instant::now();
    loop {
        if present() {
            return Ok(());
        }
        match OpenOptions::new().write(true).create_new(true).open(lock) {
            Ok(_) => {
                let _held = Held(lock);
                // Another process may have finished installing just before this one locked.
                if present() {
                    return Ok(());
                }
                return install();
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let age = std::fs::metadata(lock)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok());
                if age.is_some_and(|age| age > INSTALL_DEADLINE) {
                    let _ = std::fs::remove_file(lock);
                    continue;
                }
                if start.elapsed() > INSTALL_DEADLINE {
                    return Err(format!(
                        "another test process has been installing it for too long (lock {})",
                        lock.display()
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(format!("cannot create {}: {e}", lock.display())),
        }
    }
}

#[test]
fn the_installer_runs_once_however_many_wait_for_it() {
    use std::sync::atomic::AtomicBool;
    let lock = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("install-once-test-{}.lock", std::process::id()));
    let installed = AtomicBool::new(false);
    let installs = AtomicU32::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                once_across_processes(
                    &lock,
                    || installed.load(Ordering::SeqCst),
                    || {
                        installs.fetch_add(1, Ordering::SeqCst);
                        // Long enough for the others to find the lock taken.
                        std::thread::sleep(Duration::from_millis(200));
                        installed.store(true, Ordering::SeqCst);
                        Ok(())
                    },
                )
                .unwrap();
            });
        }
    });
    assert_eq!(installs.load(Ordering::SeqCst), 1);
    assert!(!lock.exists(), "the lock is removed after the install");

    // A failed install is reported to its caller, and the next caller tries again.
    let failed = once_across_processes(&lock, || false, || Err("no apt-get".into()));
    assert_eq!(failed, Err("no apt-get".into()));
    assert!(!lock.exists());
}
