//! Phase 2 of `cargo xtask oauth`: mcp-proxy as its own authorization server
//! (`--oauth-issuer builtin --public-url http://127.0.0.1:PORT`, sign-in by passphrase), and
//! the SDK clients (`ts_builtin.mjs`, `python_builtin.py`) through it, one step per run with
//! their client state kept in a file between steps:
//!
//! - `signin`: 401 and the pool's resource metadata, the authorization server's metadata,
//!   dynamic registration (RFC 7591), the proxy's real login and consent pages posted by a
//!   scripted browser (the form read as a browser reads it, CSRF token and cookies
//!   included), tokens, `whoami` and `echo` on `alpha`; a refresh through the SDK's own
//!   refresh path; the `alpha` token refused on `beta` (401, `invalid_token`).
//! - `cimd`: the client id is an https URL on loopback whose client metadata document the
//!   proxy fetches (a test CA made here; the proxy trusts it through its tests-only
//!   `--oauth-cimd-test-ca`, which also lets it fetch from loopback): no registration.
//! - after mcp-proxy is SIGKILLed and started again on the same state file, `resume`: the
//!   stored access token works as it is, the refresh token refreshes, and the registered
//!   client signs in again without registering (its consent remembered).
//! - the MCP conformance suite's authorization server scenarios (`suite`);
//! - two instances sharing one redis-server (`--broker`) behind a switch that stands in for
//!   the balancer: `signin` on instance A, then `resume` on instance B.

use std::path::{Path, PathBuf};

use crate::infra::{self, TempDir};
use crate::procs::{self, listening_url, Proc};

use super::switch::Switch;
use super::{run_client, start_pools, Runtimes, Sdk, SCOPE, START};

/// How many of a proxy's last log lines a failed step shows.
const LOG_TAIL: usize = 25;
/// The passphrase that signs in (a loopback test: no secret to keep).
const PASSPHRASE: &str = "xtask oauth: the built-in passphrase";

/// PASS lines each client script prints for a step when every check holds.
fn checks(sdk: Sdk, step: &str) -> usize {
    match (sdk, step) {
        (Sdk::TypeScript, "signin") => 13,
        (Sdk::TypeScript, "cimd") => 9,
        (Sdk::TypeScript, _) => 11,
        (Sdk::Python, "signin") => 13,
        (Sdk::Python, "cimd") => 10,
        (Sdk::Python, _) => 13,
    }
}

/// Runs the phase, recording each step in `results`.
pub(super) fn run(runtimes: &Runtimes, results: &mut Vec<bool>) {
    let Some(fixtures) = procs::timed(
        "a test CA, and client metadata documents served over https on loopback",
        results,
        || Fixtures::start(runtimes),
    ) else {
        return;
    };
    let single = procs::timed(
        "start mcp-proxy --oauth-issuer builtin (its state in a file) and two pools",
        results,
        || Single::start(&fixtures),
    );
    if let Some(mut single) = single {
        run_single(runtimes, &fixtures, &mut single, results);
    }
    let Some(cluster) = procs::timed(
        "start redis-server, two mcp-proxy --broker sharing it behind a switch, two pools",
        results,
        || Cluster::start(&fixtures),
    ) else {
        return;
    };
    for sdk in runtimes.sdks() {
        procs::timed(
            &format!(
                "{}: signs in on instance A; its token used and refreshed on instance B, its client known there",
                sdk.name()
            ),
            results,
            || with_logs(cluster.across(runtimes, sdk), &[&cluster.instances[0], &cluster.instances[1]]),
        );
    }
}

fn run_single(
    runtimes: &Runtimes,
    fixtures: &Fixtures,
    single: &mut Single,
    results: &mut Vec<bool>,
) {
    let (url, dir) = (single.url.clone(), fixtures.single.clone());
    for sdk in runtimes.sdks() {
        procs::timed(
            &format!("{}: 401, discovery, registration, the login and consent pages, tokens, whoami and echo, a refresh, the alpha token refused on beta", sdk.name()),
            results,
            || with_logs(step(runtimes, sdk, "signin", &url, &dir, None), &[&single.proxy]),
        );
    }
    for sdk in runtimes.sdks() {
        let document = format!("/{}-client.json", sdk.prefix());
        procs::timed(
            &format!("{}: a client metadata document ({document}) as client id, fetched by the proxy; the pages, whoami", sdk.name()),
            results,
            || {
                let ran = step(runtimes, sdk, "cimd", &url, &dir, Some(&fixtures.cimd_url));
                with_logs(ran, &[&single.proxy])?;
                let fetched = format!("FETCHED {document}");
                if fixtures.cimd.output().contains(&fetched) {
                    Ok(())
                } else {
                    Err(format!("the proxy never fetched {document}"))
                }
            },
        );
    }
    let cli = procs::timed(
        &format!(
            "install @modelcontextprotocol/conformance@{} (its authorization mode)",
            super::suite::SUITE
        ),
        results,
        || super::suite::install(runtimes),
    );
    if let Some(cli) = cli {
        procs::timed(
            "the conformance suite's authorization server scenarios (its client registered, the pages signed in by the scripted browser)",
            results,
            || with_logs(super::suite::run(runtimes, &cli, &url, &dir), &[&single.proxy]),
        );
    }
    if procs::timed(
        "mcp-proxy SIGKILLed, then started again on the same state file",
        results,
        || single.restart(),
    )
    .is_none()
    {
        return;
    }
    for sdk in runtimes.sdks() {
        procs::timed(
            &format!("{} after the restart: the stored access token works, its refresh token refreshes, the registered client is still known", sdk.name()),
            results,
            || with_logs(step(runtimes, sdk, "resume", &url, &dir, None), &[&single.proxy]),
        );
    }
}

impl Sdk {
    /// How its files are named (`ts-client.json`, `python-client.json`).
    fn prefix(self) -> &'static str {
        match self {
            Sdk::TypeScript => "ts",
            Sdk::Python => "python",
        }
    }
}

/// `result`, with the last lines of each proxy's log added to a failure.
fn with_logs(result: Result<(), String>, proxies: &[&Proc]) -> Result<(), String> {
    result.map_err(|e| {
        let mut e = e;
        for proxy in proxies {
            let lines = proxy.output();
            e.push_str("\n    mcp-proxy's last log lines:");
            for line in &lines[lines.len().saturating_sub(LOG_TAIL)..] {
                e.push_str("\n      ");
                e.push_str(line);
            }
        }
        e
    })
}

/// Runs `sdk`'s script for `step` against the proxy at `url`, its state in `dir`.
fn step(
    runtimes: &Runtimes,
    sdk: Sdk,
    step: &str,
    url: &str,
    dir: &Path,
    cimd: Option<&str>,
) -> Result<(), String> {
    let (program, script) = runtimes.client(sdk, "builtin");
    let dir = dir.to_str().ok_or("non-UTF-8 path")?;
    let mut args = vec![step, url, dir];
    args.extend(cimd);
    run_client(sdk.name(), &program, &script, &args, checks(sdk, step))
}

/// What every part of the phase shares: its folders, the test CA, the document server.
struct Fixtures {
    /// The single instance's folder: its state file, the passphrase, the clients' state.
    single: PathBuf,
    /// The cluster's folder: the passphrase and the clients' state.
    cluster: PathBuf,
    /// The test CA's certificate (PEM), for `--oauth-cimd-test-ca`.
    ca: PathBuf,
    /// `node cimd.mjs`: the client metadata documents.
    cimd: Proc,
    /// Its base URL, `https://127.0.0.1:PORT`.
    cimd_url: String,
}

impl Fixtures {
    fn start(runtimes: &Runtimes) -> Result<Fixtures, String> {
        let root = runtimes.dir.join("builtin");
        // Every run starts from nothing: no state file, no client state.
        let _ = std::fs::remove_dir_all(&root);
        let (single, cluster) = (root.join("single"), root.join("cluster"));
        for dir in [&single, &cluster] {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            write(&dir.join("passphrase"), PASSPHRASE)?;
        }
        let (ca, cert, key) = test_ca().map_err(|e| format!("cannot make the test CA: {e}"))?;
        let paths = [
            root.join("ca.pem"),
            root.join("cert.pem"),
            root.join("key.pem"),
        ];
        for (path, pem) in paths.iter().zip([ca, cert, key]) {
            write(path, &pem)?;
        }
        let script = procs::workspace_root().join("xtask/oauth/cimd.mjs");
        let mut cimd = Proc::spawn(
            "cimd.mjs",
            &runtimes.node,
            &[
                script.to_str().ok_or("non-UTF-8 path")?,
                paths[1].to_str().ok_or("non-UTF-8 path")?,
                paths[2].to_str().ok_or("non-UTF-8 path")?,
                "http://127.0.0.1:9/callback",
            ],
        )?;
        let cimd_url = cimd.wait_for_line(START, |l| {
            l.strip_prefix("CIMD_URL ").map(|u| u.trim().to_owned())
        })?;
        let [ca, ..] = paths;
        Ok(Fixtures {
            single,
            cluster,
            ca,
            cimd,
            cimd_url,
        })
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A CA, and a certificate for 127.0.0.1 it issued: the CA's, the leaf's and the leaf key's
/// PEM.
fn test_ca() -> Result<(String, String, String), rcgen::Error> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "xtask oauth test CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = params.self_signed(&ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let leaf =
        CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(&leaf_key, &ca, &ca_key)?;
    Ok((ca.pem(), leaf.pem(), leaf_key.serialize_pem()))
}

/// The flags of a builtin-server proxy whose public URL is `public`.
fn builtin_flags(public: &str, dir: &Path) -> Result<Vec<String>, String> {
    let passphrase = dir.join("passphrase");
    Ok([
        "--listen",
        "127.0.0.1",
        "--public-url",
        public,
        "--oauth-issuer",
        "builtin",
        "--oauth-passphrase-file",
        passphrase.to_str().ok_or("non-UTF-8 path")?,
        "--oauth-scopes",
        SCOPE,
    ]
    .map(str::to_owned)
    .to_vec())
}

/// One proxy (its state in a file) and the two pools. Fields drop in order: pools first.
struct Single {
    _pools: Vec<Proc>,
    proxy: Proc,
    /// Its URL, which is also its public URL.
    url: String,
    /// Its command line, for the restart.
    args: Vec<String>,
}

impl Single {
    fn start(fixtures: &Fixtures) -> Result<Single, String> {
        // The public URL names the port, so the port is chosen first (and kept on restart).
        let port = infra::free_port()?.to_string();
        let url = format!("http://127.0.0.1:{port}");
        let mut args = builtin_flags(&url, &fixtures.single)?;
        let state = fixtures.single.join("state.json");
        args.extend(["--port".to_owned(), port]);
        args.extend(["--oauth-state".to_owned(), path_arg(&state)?]);
        args.extend(["--oauth-cimd-test-ca".to_owned(), path_arg(&fixtures.ca)?]);
        let proxy = spawn_proxy("mcp-proxy", &args)?.0;
        let pools = start_pools(&url)?;
        procs::wait_registrations(&url, 2, START)?;
        Ok(Single {
            _pools: pools,
            proxy,
            url,
            args,
        })
    }

    /// SIGKILL (nothing flushed at exit), then the same command line; ready when both pools
    /// registered again.
    fn restart(&mut self) -> Result<(), String> {
        self.proxy.kill();
        self.proxy = spawn_proxy("mcp-proxy (restarted)", &self.args)?.0;
        procs::wait_registrations(&self.url, 2, START)
    }
}

fn path_arg(path: &Path) -> Result<String, String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| "non-UTF-8 path".into())
}

/// Starts mcp-proxy with `args`; it and its own URL once it listens.
fn spawn_proxy(name: &str, args: &[String]) -> Result<(Proc, String), String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut proxy = Proc::spawn(name, &procs::binary("mcp-proxy"), &args)?;
    let url = proxy.wait_for_line(START, listening_url)?;
    Ok((proxy, url))
}

/// Two proxies sharing one Redis behind the switch, the pools registered at B. Fields drop in
/// order: the pools first, Redis and its folder last.
struct Cluster {
    _pools: Vec<Proc>,
    instances: [Proc; 2],
    /// The instances' own URLs.
    a: String,
    b: String,
    switch: Switch,
    _redis: Proc,
    _dir: TempDir,
    /// The clients' state and the passphrase.
    state: PathBuf,
}

impl Cluster {
    fn start(fixtures: &Fixtures) -> Result<Cluster, String> {
        let tools = infra::tools()?;
        let dir = TempDir::new("oauth-cluster")?;
        let (redis, redis_port) = infra::start_redis(&tools, dir.path())?;
        let switch = Switch::start()?;
        let mut args = builtin_flags(&switch.url(), &fixtures.cluster)?;
        args.extend(["--port", "0", "--broker"].map(str::to_owned));
        args.push(format!("redis://127.0.0.1:{redis_port}"));
        let (a, a_url) = spawn_proxy("mcp-proxy A", &args)?;
        let (b, b_url) = spawn_proxy("mcp-proxy B", &args)?;
        let pools = start_pools(&b_url)?;
        procs::wait_registrations(&b_url, 2, START)?;
        Ok(Cluster {
            _pools: pools,
            instances: [a, b],
            a: a_url,
            b: b_url,
            switch,
            _redis: redis,
            _dir: dir,
            state: fixtures.cluster.clone(),
        })
    }

    /// `sdk` signs in through the switch set to A, then resumes through it set to B; B must
    /// have served every connection of the second step.
    fn across(&self, runtimes: &Runtimes, sdk: Sdk) -> Result<(), String> {
        let public = self.switch.url();
        self.switch.route_to(&self.a)?;
        step(runtimes, sdk, "signin", &public, &self.state, None)?;
        if self.switch.connections_to(&self.a) == 0 {
            return Err("the sign-in never reached instance A".into());
        }
        self.switch.route_to(&self.b)?;
        let (a_before, b_before) = (
            self.switch.connections_to(&self.a),
            self.switch.connections_to(&self.b),
        );
        step(runtimes, sdk, "resume", &public, &self.state, None)?;
        let (a_after, b_after) = (
            self.switch.connections_to(&self.a),
            self.switch.connections_to(&self.b),
        );
        if a_after != a_before || b_after == b_before {
            return Err(format!(
                "instance B was to serve the second step alone: A got {} connections, B {}",
                a_after - a_before,
                b_after - b_before
            ));
        }
        Ok(())
    }
}
