//! redis-server and nginx for the cluster runs (`e2e --scale-out` and bench's cluster rows):
//! found on the machine or installed by `xtask/scale-out/install-deps.sh`, started on free
//! loopback ports, their files in a [`TempDir`] removed when dropped.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::procs::{self, Proc};

/// How long redis-server or nginx gets to start and say so.
const START: Duration = Duration::from_secs(30);
/// nginx's configuration, with `@DIR@`, `@PORT@` and `@UPSTREAMS@` to fill in.
const NGINX_TEMPLATE: &str = include_str!("../scale-out/nginx.conf.template");

/// A directory removed when dropped (redis's and nginx's files).
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// A fresh `mcp-{tag}-{pid}` under the system's temporary directory.
    pub(crate) fn new(tag: &str) -> Result<TempDir, String> {
        let dir = std::env::temp_dir().join(format!("mcp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }

    pub(crate) fn path(&self) -> &str {
        self.0
            .to_str()
            .expect("the temporary directory's path is UTF-8")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// redis-server and nginx, installed by `install-deps.sh` when either is missing.
pub(crate) struct Tools {
    pub(crate) redis: PathBuf,
    nginx: PathBuf,
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    // nginx lives in /usr/sbin, which a non-root PATH may lack.
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Finds redis-server and nginx, running `install-deps.sh` first when either is missing.
pub(crate) fn tools() -> Result<Tools, String> {
    let found = || {
        Some(Tools {
            redis: find_tool("redis-server")?,
            nginx: find_tool("nginx")?,
        })
    };
    if let Some(tools) = found() {
        return Ok(tools);
    }
    let root = procs::workspace_root();
    println!("redis-server or nginx not found: running xtask/scale-out/install-deps.sh");
    procs::run_shown(
        Path::new("bash"),
        &["xtask/scale-out/install-deps.sh"],
        &root,
    )
    .map_err(|e| {
        format!(
            "{e}\nredis-server and nginx are needed: run `bash xtask/scale-out/install-deps.sh` \
             as root (Debian/Ubuntu), or install both by other means"
        )
    })?;
    found().ok_or_else(|| "redis-server or nginx still not found after install-deps.sh".into())
}

/// A port that was free a moment ago (bound to 127.0.0.1:0, read back, released).
pub(crate) fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// Starts a program on a free port: `attempt` answers `Ok(None)` when the program could not
/// bind it (someone took it between our probe and its bind), and then another port is tried.
fn on_free_port<T>(
    what: &str,
    mut attempt: impl FnMut(u16) -> Result<Option<T>, String>,
) -> Result<T, String> {
    for _ in 0..5 {
        if let Some(started) = attempt(free_port()?)? {
            return Ok(started);
        }
    }
    Err(format!("{what} found no free port in 5 tries"))
}

fn port_taken(proc: &Proc) -> bool {
    proc.output()
        .iter()
        .any(|l| l.contains("Address already in use"))
}

/// A `redis-server` on a free loopback port, keeping nothing on disk; its port.
pub(crate) fn start_redis(tools: &Tools, dir: &str) -> Result<(Proc, u16), String> {
    on_free_port("redis-server", |port| {
        let port_arg = port.to_string();
        let mut redis = Proc::spawn(
            "redis-server",
            &tools.redis,
            &[
                "--port",
                &port_arg,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                // Every relayed request and answer passes through pub/sub whole: the bench's
                // 64 callers of 1 MiB put 64 MiB and more in flight at once, past the default
                // 32 MB at which Redis drops a subscriber (docs/deployment.md says to raise it).
                "--client-output-buffer-limit",
                "pubsub 512mb 128mb 60",
                "--daemonize",
                "no",
                "--dir",
                dir,
            ],
        )?;
        match redis.wait_for_line(START, |l| {
            l.contains("Ready to accept connections").then_some(())
        }) {
            Ok(()) => Ok(Some((redis, port))),
            Err(_) if port_taken(&redis) => Ok(None),
            Err(e) => Err(e),
        }
    })
}

/// nginx on a free loopback port in front of `upstreams` (round robin, the proxies' own
/// URLs), with its configuration and files in `dir`; ready once a proxy's `/healthz` answers
/// through it. Returns it and its URL.
pub(crate) fn start_nginx(
    tools: &Tools,
    dir: &str,
    upstreams: &[&str],
) -> Result<(Proc, String), String> {
    let servers: String = upstreams.iter().fold(String::new(), |mut s, url| {
        let addr = url.trim_start_matches("http://");
        let _ = writeln!(s, "        server {addr} max_fails=1 fail_timeout=2s;");
        s
    });
    let conf = Path::new(dir).join("nginx.conf");
    let conf_arg = conf.to_str().expect("UTF-8 path").to_owned();
    on_free_port("nginx", |port| {
        let text = NGINX_TEMPLATE
            .replace("@DIR@", dir)
            .replace("@PORT@", &port.to_string())
            .replace("@UPSTREAMS@", servers.trim_end());
        std::fs::write(&conf, text).map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let mut nginx = Proc::spawn(
            "nginx",
            &tools.nginx,
            &[
                "-p",
                dir,
                "-c",
                &conf_arg,
                "-e",
                "stderr",
                "-g",
                "daemon off;",
            ],
        )?;
        let url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        // Ready when a proxy's /healthz answers through it.
        loop {
            if procs::healthz(&url).is_some() {
                return Ok(Some((nginx, url)));
            }
            if let Ok(status) = nginx.wait_exit(Duration::ZERO) {
                if port_taken(&nginx) {
                    return Ok(None);
                }
                return Err(format!(
                    "nginx exited ({status}):\n{}",
                    nginx.output().join("\n")
                ));
            }
            if start.elapsed() > START {
                return Err(format!(
                    "nginx did not pass /healthz through within {START:?}:\n{}",
                    nginx.output().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}
