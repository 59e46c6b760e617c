//! The paths `cargo xtask bench` measures beyond the direct server and one proxy: a proxy
//! writing the audit log, two proxy instances sharing Redis (at home and relayed), and the
//! generic TCP tunnels rathole and bore in front of the direct server when they are
//! installed.

use std::path::Path;

use super::load::{Kind, Path_};
use super::{PROXY_ARGS, START};
use crate::infra::{self, TempDir};
use crate::procs::{self, listening_url, Proc};

/// `--install-tunnels`: `cargo install` rathole and bore-cli; a failed install only skips its
/// row.
pub(super) fn install_tunnels() {
    // rathole 0.5's own lockfile pins a `time` that no longer builds on current Rust, and
    // its default TLS feature wants OpenSSL: take fresh dependencies and plain TCP only.
    let installs: [(&str, &[&str]); 2] = [
        (
            "rathole",
            &[
                "rathole",
                "--no-default-features",
                "--features",
                "server,client",
            ],
        ),
        ("bore-cli", &["--locked", "bore-cli"]),
    ];
    for (krate, args) in installs {
        println!("installing {krate} (cargo install)...");
        let ok = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
            .arg("install")
            .args(args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            println!("  could not install {krate}; its row will be skipped");
        }
    }
}

/// A second proxy like the first but writing the audit log to a file (as an operator would,
/// one line per call), with a reverse server of its own: its row against
/// "proxy /message (ws)" (audit off) is what the audit costs. Dropping what it returns stops both and removes
/// the file.
pub(super) fn start_audited(paths: &mut Vec<Path_>) -> Result<(Vec<Proc>, TempDir), String> {
    let dir = TempDir::new("bench-audit")?;
    let log = format!("{}/audit.log", dir.path());
    let mut proxy = Proc::spawn_raised(
        "mcp-proxy (audit on)",
        &procs::release_binary("mcp-proxy"),
        &[PROXY_ARGS, &["--audit-log", &log]].concat(),
    )?;
    let url = proxy.wait_for_line(START, listening_url)?;
    // As "proxy /message (ws)": a pool of one reverse client over the channel.
    let reverse = Proc::spawn(
        "reverse_server_example (audit on)",
        &procs::release_binary("examples/reverse_server_example"),
        &[&url, "--name", "ws", "--transport", "ws"],
    )?;
    procs::wait_registrations(&url, 1, START)?;
    paths.push(Path_ {
        name: "proxy /message (ws), audit on".into(),
        hops: 4,
        kind: Kind::Message,
        url: format!("{url}/servers/ws/message"),
        cpu_of: Some((proxy.pid(), reverse.pid())),
    });
    Ok((vec![reverse, proxy], dir))
}

/// Two proxy instances sharing a `redis-server` (`--broker`), the same reverse server
/// registered through A, so A is its pool's home: a call to A is served at home (what the
/// cluster costs when the balancer happens to pick the home), a call to B is relayed to A over
/// Redis pub/sub and its answer relayed back (the cost of reaching any other instance).
/// Dropping what it returns stops them all, the directory last.
pub(super) fn start_cluster(paths: &mut Vec<Path_>) -> Result<(Vec<Proc>, TempDir), String> {
    let tools = infra::tools()?;
    let dir = TempDir::new("bench-cluster")?;
    let (redis, port) = infra::start_redis(&tools, dir.path())?;
    let broker = format!("redis://127.0.0.1:{port}");
    let mut proxies = Vec::new();
    let mut urls = Vec::new();
    for name in ["mcp-proxy A", "mcp-proxy B"] {
        let mut proxy = Proc::spawn_raised(
            name,
            &procs::release_binary("mcp-proxy"),
            &[PROXY_ARGS, &["--broker", &broker]].concat(),
        )?;
        urls.push(proxy.wait_for_line(START, listening_url)?);
        proxies.push(proxy);
    }
    let (home, other) = (urls[0].clone(), urls[1].clone());
    let reverse = Proc::spawn(
        "reverse_server_example (cluster)",
        &procs::release_binary("examples/reverse_server_example"),
        &[&home],
    )?;
    procs::wait_registrations(&home, 1, START)?;
    paths.push(Path_ {
        name: "cluster /message, at home".into(),
        hops: 4,
        kind: Kind::Message,
        url: format!("{home}/message"),
        cpu_of: None,
    });
    paths.push(Path_ {
        name: "cluster /message, relayed".into(),
        hops: 8,
        kind: Kind::Message,
        url: format!("{other}/message"),
        cpu_of: None,
    });
    paths.push(Path_ {
        name: "cluster /mcp, relayed".into(),
        hops: 8,
        kind: Kind::Mcp,
        url: format!("{other}/mcp"),
        cpu_of: None,
    });
    // Dropped in order: the reverse server first (no storm of reconnects), Redis last.
    let mut procs = vec![reverse];
    procs.extend(proxies);
    procs.push(redis);
    Ok((procs, dir))
}

/// Starts the TCP tunnels that are installed in front of the direct server; each adds a path.
pub(super) fn start_tunnels(direct_url: &str, paths: &mut Vec<Path_>) -> Vec<Proc> {
    let mut procs = Vec::new();
    let direct_addr = direct_url.trim_start_matches("http://").to_owned();
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
    };
    if which("rathole") {
        let result = (|| -> Result<(Proc, Proc, u16), String> {
            let (ctrl, public) = (
                free_port().map_err(|e| e.to_string())?,
                free_port().map_err(|e| e.to_string())?,
            );
            let dir = procs::target_dir().join("bench");
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let server = dir.join("rathole-server.toml");
            let client = dir.join("rathole-client.toml");
            std::fs::write(&server, format!(
                "[server]\nbind_addr = \"127.0.0.1:{ctrl}\"\n[server.services.mcp]\ntoken = \"bench\"\nbind_addr = \"127.0.0.1:{public}\"\n"
            )).map_err(|e| e.to_string())?;
            std::fs::write(&client, format!(
                "[client]\nremote_addr = \"127.0.0.1:{ctrl}\"\n[client.services.mcp]\ntoken = \"bench\"\nlocal_addr = \"{direct_addr}\"\n"
            )).map_err(|e| e.to_string())?;
            let s = Proc::spawn(
                "rathole server",
                Path::new("rathole"),
                &["--server", server.to_str().unwrap()],
            )?;
            let c = Proc::spawn(
                "rathole client",
                Path::new("rathole"),
                &["--client", client.to_str().unwrap()],
            )?;
            Ok((s, c, public))
        })();
        let result = result.map(|(s, c, public)| (s, c, format!("http://127.0.0.1:{public}/mcp")));
        add_tunnel("rathole", result, &mut procs, paths);
    } else {
        println!("skipped rathole: not installed (--install-tunnels installs it)");
    }
    if which("bore") {
        let port = direct_addr.rsplit(':').next().unwrap_or("0").to_owned();
        let result = (|| -> Result<(Proc, Proc, String), String> {
            let s = Proc::spawn(
                "bore server",
                Path::new("bore"),
                &["server", "--bind-addr", "127.0.0.1"],
            )?;
            let mut c = Proc::spawn(
                "bore local",
                Path::new("bore"),
                &["local", &port, "--to", "127.0.0.1"],
            )?;
            // `bore local` logs `listening at 127.0.0.1:PORT` (with colour codes around it).
            let public = c.wait_for_line(START, |l| {
                let rest = &l[l.find("listening at ")? + "listening at ".len()..];
                let addr: String = rest
                    .chars()
                    .take_while(|ch| ch.is_ascii_digit() || *ch == '.' || *ch == ':')
                    .collect();
                addr.contains(':').then_some(addr)
            })?;
            Ok((s, c, public))
        })();
        let result = result.map(|(s, c, public)| (s, c, format!("http://{public}/mcp")));
        add_tunnel("bore", result, &mut procs, paths);
    } else {
        println!("skipped bore: not installed (--install-tunnels installs it)");
    }
    procs
}

/// A started tunnel (its server, its client, the direct server's URL through it) becomes the
/// path `NAME -> direct`; one that failed to start is skipped, saying why.
fn add_tunnel(
    name: &str,
    started: Result<(Proc, Proc, String), String>,
    procs: &mut Vec<Proc>,
    paths: &mut Vec<Path_>,
) {
    match started {
        Ok((server, client, url)) => {
            procs.push(server);
            procs.push(client);
            paths.push(Path_ {
                name: format!("{name} -> direct"),
                hops: 6,
                kind: Kind::Mcp,
                url,
                cpu_of: None,
            });
        }
        Err(e) => println!("skipped {name}: {e}"),
    }
}

fn which(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
