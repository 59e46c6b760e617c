//! Real processes for end-to-end runs: build once, spawn, watch output, always clean up.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The workspace root (xtask lives one level below it).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Cargo's target directory.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Where cargo puts debug binaries.
fn target_debug() -> PathBuf {
    target_dir().join("debug")
}

/// Builds every binary and example the scenarios run, once.
pub(crate) fn build() -> Result<(), String> {
    cargo_build(&[
        "-p",
        "mcp-proxy",
        "--bin",
        "mcp-proxy",
        "-p",
        "mcp-reverse",
        "--example",
        "reverse_server_example",
        "-p",
        "mcp-client",
        "--example",
        "proxy_client_example",
    ])
}

/// Runs `cargo build` with `args` in the workspace.
pub(crate) fn cargo_build(args: &[&str]) -> Result<(), String> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace_root())
        .arg("build")
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo build failed: {status}"))
    }
}

/// The path of a release binary (`bin`) or example (`examples/NAME`).
pub(crate) fn release_binary(name: &str) -> PathBuf {
    target_dir().join("release").join(name)
}

/// The path of a built binary (`bin`) or example (`examples/NAME`).
pub(crate) fn binary(name: &str) -> PathBuf {
    target_debug().join(name)
}

/// A running child process whose output lines are collected; killed when dropped.
pub(crate) struct Proc {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `program` with `args`, collecting stdout and stderr lines.
    pub(crate) fn spawn(name: &str, program: &Path, args: &[&str]) -> Result<Proc, String> {
        let mut child = Command::new(program)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        for stream in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().expect("lines lock").push(line);
                }
            });
        }
        Ok(Proc {
            name: name.to_owned(),
            child,
            lines,
        })
    }

    /// Like [`Proc::spawn`], with the open-file limit raised to the hard limit first (through
    /// `sh -c "ulimit ...; exec"`, so the pid is still `program`'s own): for runs that hold
    /// one descriptor per connection or poll.
    pub(crate) fn spawn_raised(name: &str, program: &Path, args: &[&str]) -> Result<Proc, String> {
        let program = program.to_str().ok_or("non-UTF-8 path")?;
        let mut sh_args = vec![
            "-c",
            "ulimit -n \"$(ulimit -Hn)\" 2>/dev/null; exec \"$0\" \"$@\"",
            program,
        ];
        sh_args.extend_from_slice(args);
        Proc::spawn(name, Path::new("/bin/sh"), &sh_args)
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line printed so far.
    pub(crate) fn output(&self) -> Vec<String> {
        self.lines.lock().expect("lines lock").clone()
    }

    /// Waits until a printed line satisfies `find`, returning what it found.
    pub(crate) fn wait_for_line<T>(
        &mut self,
        deadline: Duration,
        find: impl Fn(&str) -> Option<T>,
    ) -> Result<T, String> {
        let start = Instant::now();
        loop {
            if let Some(found) = self.output().iter().find_map(|l| find(l)) {
                return Ok(found);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before printing what was expected; it printed:\n{}",
                    self.name,
                    self.output().join("\n")
                ));
            }
            if start.elapsed() > deadline {
                return Err(format!(
                    "{} did not print what was expected within {deadline:?}; it printed:\n{}",
                    self.name,
                    self.output().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself.
    pub(crate) fn wait_exit(
        &mut self,
        deadline: Duration,
    ) -> Result<std::process::ExitStatus, String> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                // Let the reader threads catch the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return Ok(status);
            }
            if start.elapsed() > deadline {
                return Err(format!("{} still running after {deadline:?}", self.name));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGKILL (no goodbye: the process vanishes as if the machine died).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a graceful exit (SIGKILL after `deadline`).
    pub(crate) fn terminate(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        match self.wait_exit(deadline) {
            Ok(status) => Some(status),
            Err(_) => {
                self.kill();
                None
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// Runs `program args` to completion with its output shown (installs, version probes); `Err`
/// says what failed.
pub(crate) fn run_shown(program: &Path, args: &[&str], cwd: &Path) -> Result<(), String> {
    let status = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {} failed: {status}",
            program.display(),
            args.join(" ")
        ))
    }
}

/// `GET /healthz` by hand (HTTP/1.0, so the answer ends when the connection closes).
pub(crate) fn healthz(url: &str) -> Option<serde_json::Value> {
    let addr = url.strip_prefix("http://")?;
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let body = text.split("\r\n\r\n").nth(1)?;
    serde_json::from_str(body).ok()
}

/// Waits until the proxy at `url` counts at least `n` registrations.
pub(crate) fn wait_registrations(url: &str, n: u64, deadline: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let count = healthz(url).and_then(|v| v["registrations"].as_u64());
        if count.is_some_and(|c| c >= n) {
            return Ok(());
        }
        if start.elapsed() > deadline {
            return Err(format!(
                "the proxy at {url} counts {count:?} registrations after {deadline:?}, expected {n}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads `http://HOST:PORT` out of a log line such as `mcp-proxy listening on http://127.0.0.1:40123`.
pub(crate) fn listening_url(line: &str) -> Option<String> {
    if !line.contains("listening") {
        return None;
    }
    let start = line.find("http://")?;
    let rest = &line[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .unwrap_or(rest.len());
    Some(rest[..end].trim_end_matches('/').to_owned())
}

/// Runs a check script (`program args`) until it exits, at most `deadline`, and prints its
/// output; it passes when it exits 0 having printed at least `min_pass` lines starting with
/// `PASS ` (so a script that stops early cannot pass). Returns the output.
pub(crate) fn run_checks(
    name: &str,
    program: &Path,
    args: &[&str],
    deadline: Duration,
    min_pass: usize,
) -> Result<Vec<String>, String> {
    let mut script = Proc::spawn(name, program, args)?;
    let status = script.wait_exit(deadline);
    let output = script.output();
    for line in &output {
        println!("    {line}");
    }
    let status = status?;
    if !status.success() {
        return Err(format!("{name} exited with {status}"));
    }
    let passed = output.iter().filter(|l| l.starts_with("PASS ")).count();
    if passed < min_pass {
        return Err(format!(
            "{name} printed {passed} PASS lines, expected {min_pass}"
        ));
    }
    Ok(output)
}

/// Runs one scenario or step, prints `PASS`/`FAIL` with its duration, and records the outcome.
pub(crate) fn timed<T>(
    name: &str,
    results: &mut Vec<bool>,
    step: impl FnOnce() -> Result<T, String>,
) -> Option<T> {
    let start = Instant::now();
    let outcome = step();
    let took = start.elapsed().as_secs_f64();
    match outcome {
        Ok(v) => {
            println!("PASS {name} ({took:.2}s)");
            results.push(true);
            Some(v)
        }
        Err(e) => {
            println!("FAIL {name} ({took:.2}s): {e}");
            results.push(false);
            None
        }
    }
}

/// Prints the tally of [`timed`] outcomes (`what` names them) and turns it into the exit code.
pub(crate) fn summary(
    results: &[bool],
    what: &str,
    began: Option<Instant>,
) -> std::process::ExitCode {
    let failed = results.iter().filter(|ok| !**ok).count();
    let took = began.map_or(String::new(), |b| {
        format!(" ({:.1}s)", b.elapsed().as_secs_f64())
    });
    println!(
        "\n{} {what}, {} passed, {failed} failed{took}",
        results.len(),
        results.len() - failed
    );
    if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// `GET /servers` at a proxy's `url` (no proxy from the environment).
pub(crate) async fn servers(url: &str) -> Result<serde_json::Value, String> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?
        .get(format!("{url}/servers"))
        .send()
        .await
        .map_err(|e| format!("GET {url}/servers: {e}"))?
        .json()
        .await
        .map_err(|e| format!("GET {url}/servers: {e}"))
}

/// The members of a pool (`None` = the default pool) in `GET /servers` at `url`, oldest
/// first; empty when it has none.
pub(crate) async fn pool_members(
    url: &str,
    pool: Option<&str>,
) -> Result<Vec<serde_json::Value>, String> {
    let name = pool.map_or(serde_json::Value::Null, |p| p.into());
    Ok(servers(url).await?["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["members"].as_array().cloned())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_url() {
        assert_eq!(
            listening_url("INFO mcp-proxy listening on http://127.0.0.1:4242").as_deref(),
            Some("http://127.0.0.1:4242")
        );
        assert_eq!(listening_url("registered"), None);
    }
}
