//! `cargo xtask interop`: the official MCP SDK clients, unmodified, against mcp-proxy's `/mcp`
//! with `reverse_server_example` registered behind it.
//!
//! Each SDK is installed once at a pinned version under `target/interop/` (a Python venv, an
//! npm folder) and reused while the pin holds. The client scripts live in `xtask/interop/`:
//! each runs initialize, tools/list and tools/call echo, printing PASS/FAIL per check. The
//! Python SDK then runs `python_client_2026.py` (its 2026-07-28 modes, and auto mode falling
//! back to `initialize`) and `python_client_talkback.py` (a progress callback, a logging
//! callback, and a sampling callback answering a tool's request through the proxy). This workspace's own `mcp-client` then makes the same checks.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use mcp_client::{text_of, Client, Transport};
use serde_json::json;

use crate::procs::{self, listening_url, Proc};

/// The Python SDK (PyPI package `mcp`) the check installs.
const PYTHON_SDK: &str = "2.3.0";
/// The TypeScript SDK (npm package `@modelcontextprotocol/sdk`) the check installs.
const TS_SDK: &str = "1.32.2";
/// The oldest Node.js the TypeScript SDK supports.
const MIN_NODE_MAJOR: u32 = 18;
/// How long a process gets to start and say so.
const START: Duration = Duration::from_secs(30);
/// How long one client script may run (its own deadline is 60 s).
const CLIENT_DEADLINE: Duration = Duration::from_secs(90);
/// Checks each client script must report as PASS.
const CHECKS: usize = 3;

/// `cargo xtask interop`'s options.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// Test this Streamable HTTP endpoint instead of starting the proxy
    ///
    /// Test this Streamable HTTP endpoint instead of building and starting mcp-proxy with
    /// reverse_server_example behind it
    #[arg(long, value_name = "URL", verbatim_doc_comment)]
    url: Option<String>,
    /// Run one client only (rust: this workspace's mcp-client)
    #[arg(long, value_name = "SDK", value_parser = ["python", "typescript", "rust"])]
    only: Option<String>,
}

/// How to run a client script: the program and the arguments before the endpoint URL.
type Runner = (PathBuf, Vec<String>);

/// One SDK client: how to install it and how to run its script.
struct Sdk {
    /// Shown in PASS/FAIL lines.
    name: String,
    /// Installs (or finds) the SDK; returns the program and leading arguments that run the
    /// client script (the endpoint URL is appended).
    setup: fn(&Path) -> Result<Runner, String>,
}

pub(crate) fn run(options: &Options) -> ExitCode {
    let (url, only) = (options.url.clone(), options.only.clone());
    let began = Instant::now();
    let dir = procs::target_dir().join("interop");
    let sdks = [
        Sdk {
            name: format!("python (mcp=={PYTHON_SDK})"),
            setup: setup_python,
        },
        Sdk {
            name: format!("typescript (@modelcontextprotocol/sdk@{TS_SDK})"),
            setup: setup_typescript,
        },
    ];
    let sdks: Vec<_> = sdks
        .into_iter()
        .filter(|s| only.as_deref().is_none_or(|o| s.name.starts_with(o)))
        .collect();
    let mut results = Vec::new();

    let mut runners = Vec::new();
    for sdk in &sdks {
        let ready = procs::timed(&format!("install {}", sdk.name), &mut results, || {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            (sdk.setup)(&dir)
        });
        if let Some(runner) = ready {
            runners.push((sdk, runner));
        }
    }

    // The processes live until the end of this function: dropping a Proc kills it.
    let mut _stack = None;
    let endpoint = match url {
        Some(url) => url,
        None => match procs::timed(
            "build, start mcp-proxy and reverse_server_example",
            &mut results,
            start_stack,
        ) {
            Some((proxy, reverse, base)) => {
                _stack = Some((proxy, reverse));
                format!("{base}/mcp")
            }
            None => return procs::summary(&results, "steps", Some(began)),
        },
    };
    for (sdk, (program, leading)) in &runners {
        procs::timed(
            &format!("{} against {endpoint}", sdk.name),
            &mut results,
            || run_client(&sdk.name, program, leading, &endpoint),
        );
    }
    // The Python SDK's `Client` in its 2026-07-28 modes through our proxy: the default auto
    // mode (discover probe), mode "2026-07-28", and auto mode's fallback to `initialize` on a
    // pool with no 2026-07-28 member (the script registers that member itself, so only
    // against the proxy this command started).
    let python = runners
        .iter()
        .find(|(sdk, _)| sdk.name.starts_with("python"));
    if let (Some((sdk, (program, _))), true) = (python, _stack.is_some()) {
        let script = procs::workspace_root().join("xtask/interop/python_client_2026.py");
        let leading = [script.to_string_lossy().into_owned()];
        procs::timed(
            &format!("{} 2026-07-28 modes against {endpoint}", sdk.name),
            &mut results,
            || run_client(&sdk.name, program, &leading, &endpoint),
        );
        // Talk-back through the tunnel: progress and a log line reach the SDK's callbacks, and
        // its sampling callback answers the `sample` test tool's request (the reverse server
        // this command started has `--test-tools`).
        let script = procs::workspace_root().join("xtask/interop/python_client_talkback.py");
        let leading = [script.to_string_lossy().into_owned()];
        procs::timed(
            &format!("{} progress and sampling against {endpoint}", sdk.name),
            &mut results,
            || run_client(&sdk.name, program, &leading, &endpoint),
        );
    }
    // This workspace's own client, held to the same three checks.
    if only.as_deref().is_none_or(|o| o == "rust") {
        procs::timed(
            &format!("rust (mcp-client) against {endpoint}"),
            &mut results,
            || rust_client(&endpoint),
        );
    }
    if let Some((mut proxy, mut reverse)) = _stack.take() {
        reverse.terminate(Duration::from_secs(10));
        proxy.terminate(Duration::from_secs(10));
    }
    procs::summary(&results, "steps", Some(began))
}

/// Builds the binaries, starts the proxy on a free port and a reverse server behind it, and
/// waits for the registration.
fn start_stack() -> Result<(Proc, Proc, String), String> {
    procs::build()?;
    let mut proxy = Proc::spawn(
        "mcp-proxy",
        &procs::binary("mcp-proxy"),
        &["--listen", "127.0.0.1", "--port", "0"],
    )?;
    let url = proxy.wait_for_line(START, listening_url)?;
    let reverse = Proc::spawn(
        "reverse_server_example",
        &procs::binary("examples/reverse_server_example"),
        &[&url, "--test-tools"],
    )?;
    procs::wait_registrations(&url, 1, START)?;
    Ok((proxy, reverse, url))
}

/// Runs one client script; it passes when it exits 0 having printed every check as PASS.
fn run_client(name: &str, program: &Path, leading: &[String], url: &str) -> Result<(), String> {
    let mut args: Vec<&str> = leading.iter().map(String::as_str).collect();
    args.push(url);
    procs::run_checks(name, program, &args, CLIENT_DEADLINE, CHECKS).map(drop)
}

/// The checks of the SDK scripts, with `mcp_client` in process.
fn rust_client(url: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = Client::connect(url).map_err(|e| e.to_string())?;
        if client.transport() != Transport::Streamable {
            return Err(format!("{url} does not select Streamable HTTP"));
        }
        let info = client
            .initialize()
            .await
            .map_err(|e| format!("initialize: {e}"))?;
        println!(
            "    PASS initialize: {} {}, protocol {}",
            info.server_info.name, info.server_info.version, info.protocol_version
        );
        let tools = client
            .list_tools()
            .await
            .map_err(|e| format!("tools/list: {e}"))?;
        let names: Vec<_> = tools.iter().map(|t| t.name.as_str()).collect();
        if !["get_time", "calculator", "echo"]
            .iter()
            .all(|n| names.contains(n))
        {
            return Err(format!("tools/list: {}", names.join(", ")));
        }
        println!("    PASS tools/list: {}", names.join(", "));
        let result = client
            .call_tool(
                "echo",
                json!({"text": "Hello from reverse proxy!", "uppercase": true}),
            )
            .await
            .map_err(|e| format!("tools/call echo: {e}"))?;
        let text = text_of(&result);
        if text != "HELLO FROM REVERSE PROXY!" || result.is_error() {
            return Err(format!("tools/call echo answered {text:?}"));
        }
        println!("    PASS tools/call echo: {text:?}");
        client.close().await.map_err(|e| format!("DELETE: {e}"))
    })
}

/// A venv under `dir/venv` with `mcp==PYTHON_SDK`; runs `xtask/interop/python_client.py`.
pub(crate) fn setup_python(dir: &Path) -> Result<Runner, String> {
    let venv = dir.join("venv");
    let python = venv.join("bin").join("python");
    if !python.exists() {
        let venv_arg = venv.to_string_lossy().into_owned();
        procs::run_shown(Path::new("python3"), &["-m", "venv", &venv_arg], dir)
            .map_err(|e| format!("{e} (is python3 with its venv module installed?)"))?;
    }
    let installed = output_of(
        &python,
        &[
            "-c",
            "import importlib.metadata as m; print(m.version('mcp'))",
        ],
    );
    if installed.as_deref() != Some(PYTHON_SDK) {
        procs::run_shown(
            &python,
            &[
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                &format!("mcp=={PYTHON_SDK}"),
            ],
            dir,
        )?;
    }
    let script = procs::workspace_root().join("xtask/interop/python_client.py");
    Ok((python, vec![script.to_string_lossy().into_owned()]))
}

/// `@modelcontextprotocol/sdk@TS_SDK` in `dir/node`; runs `xtask/interop/ts_client.mjs` from
/// there (ES modules resolve packages next to the script, not through NODE_PATH).
fn setup_typescript(dir: &Path) -> Result<Runner, String> {
    let version = output_of(Path::new("node"), &["--version"])
        .ok_or("node is not installed (the TypeScript SDK needs Node.js >= 18)")?;
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("cannot read the node version {version:?}"))?;
    if major < MIN_NODE_MAJOR {
        return Err(format!(
            "node {version} is too old; the TypeScript SDK needs >= {MIN_NODE_MAJOR}"
        ));
    }
    let folder = dir.join("node");
    crate::conformance::npm_project(&folder, "mcp-interop")?;
    let installed = crate::conformance::installed_version(
        &folder.join("node_modules/@modelcontextprotocol/sdk"),
    );
    if installed.as_deref() != Some(TS_SDK) {
        procs::run_shown(
            Path::new("npm"),
            &[
                "install",
                "--no-audit",
                "--no-fund",
                "--save-exact",
                &format!("@modelcontextprotocol/sdk@{TS_SDK}"),
            ],
            &folder,
        )?;
    }
    let script = folder.join("ts_client.mjs");
    std::fs::copy(
        procs::workspace_root().join("xtask/interop/ts_client.mjs"),
        &script,
    )
    .map_err(|e| format!("cannot copy ts_client.mjs: {e}"))?;
    Ok((
        PathBuf::from("node"),
        vec![script.to_string_lossy().into_owned()],
    ))
}

/// The trimmed stdout of a successful run, `None` when it cannot run or fails.
fn output_of(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
