//! `cargo xtask console`: the operator's console in a real browser. Debian's `chromium`
//! (installed by `xtask/console/install-deps.sh` when missing), driven headless by
//! puppeteer-core over the DevTools protocol, loads the console of a running proxy with
//! reverse servers behind it and checks what a person would see: the login form, the
//! members, a call appearing in the audit list, a killed member marked down, the keyboard
//! path; axe-core runs over both pages and no serious or critical violation may remain;
//! then a screenshot is saved (docs/console.png by default, the README's).
//!
//! puppeteer-core and axe-core are installed once at pinned versions under
//! `target/console/node` from npm; the browser script is `xtask/console/check.mjs`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::procs::{self, listening_url, Proc};

/// The npm package that drives chromium over the DevTools protocol (supports Node.js 18+).
const PUPPETEER: &str = "24.43.1";
/// The accessibility checker run in the page.
const AXE: &str = "4.14.1";
/// How long a process gets to start and say so.
const START: Duration = Duration::from_secs(60);
/// How long the browser script may run.
const CHECK_DEADLINE: Duration = Duration::from_secs(180);
/// PASS lines `check.mjs` prints when every check holds (an early exit 0 cannot pass).
const CHECKS: usize = 19;
/// The proxy's liveness grace in the run: a killed member is down within about this.
const GRACE_SECS: &str = "1";

/// `cargo xtask console`'s options.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// Where to save the screenshot [default: docs/console.png]
    #[arg(long, value_name = "PATH")]
    screenshot: Option<PathBuf>,
}

pub(crate) fn run(options: &Options) -> ExitCode {
    let began = Instant::now();
    let dir = procs::target_dir().join("console");
    let mut results = Vec::new();
    let chromium = procs::timed("chromium (Debian's package)", &mut results, find_chromium);
    let node = procs::timed(
        &format!("puppeteer-core@{PUPPETEER} and axe-core@{AXE} from npm"),
        &mut results,
        || setup_node(&dir.join("node")),
    );
    let (Some(chromium), Some(node)) = (chromium, node) else {
        return procs::summary(&results, "steps", Some(began));
    };
    let Some(stack) = procs::timed(
        "build, start mcp-proxy --console and three reverse servers",
        &mut results,
        || start_stack(&dir),
    ) else {
        return procs::summary(&results, "steps", Some(began));
    };
    let screenshot = options
        .screenshot
        .clone()
        .unwrap_or_else(|| procs::workspace_root().join("docs/console.png"));
    procs::timed("the console in headless chromium", &mut results, || {
        run_check(&node, &chromium, &stack, &screenshot)
    });
    let Stack {
        mut proxy,
        mut servers,
        ..
    } = stack;
    for s in &mut servers {
        s.terminate(Duration::from_secs(10));
    }
    proxy.terminate(Duration::from_secs(10));
    procs::summary(&results, "steps", Some(began))
}

/// Debian's chromium: on PATH, or installed by `xtask/console/install-deps.sh`.
fn find_chromium() -> Result<PathBuf, String> {
    let found = || {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    };
    if let Some(path) = found() {
        return Ok(path);
    }
    let script = procs::workspace_root().join("xtask/console/install-deps.sh");
    procs::run_shown(
        Path::new("bash"),
        &[&script.to_string_lossy()],
        &procs::workspace_root(),
    )?;
    found().ok_or_else(|| "chromium is still missing after install-deps.sh".into())
}

/// puppeteer-core and axe-core at their pins in `folder`; returns the folder, where the
/// browser script runs (ES modules resolve packages next to the script).
fn setup_node(folder: &Path) -> Result<PathBuf, String> {
    crate::conformance::npm_project(folder, "mcp-console-check")?;
    let version_of = |package: &str| {
        crate::conformance::installed_version(&folder.join("node_modules").join(package))
    };
    if version_of("puppeteer-core").as_deref() != Some(PUPPETEER)
        || version_of("axe-core").as_deref() != Some(AXE)
    {
        procs::run_shown(
            Path::new("npm"),
            &[
                "install",
                "--no-audit",
                "--no-fund",
                "--save-exact",
                &format!("puppeteer-core@{PUPPETEER}"),
                &format!("axe-core@{AXE}"),
            ],
            folder,
        )
        .map_err(|e| format!("{e} (needs node >= 18 and npm)"))?;
    }
    std::fs::copy(
        procs::workspace_root().join("xtask/console/check.mjs"),
        folder.join("check.mjs"),
    )
    .map_err(|e| format!("cannot copy check.mjs: {e}"))?;
    Ok(folder.to_owned())
}

/// The proxy, its password file, and the reverse servers behind it.
struct Stack {
    proxy: Proc,
    url: String,
    password_file: PathBuf,
    /// alpha's two members (the second is killed by the check), then beta's one.
    servers: Vec<Proc>,
}

fn start_stack(dir: &Path) -> Result<Stack, String> {
    procs::build()?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    // A file, not an argument or a URL: the password never shows in `ps`.
    let password_file = dir.join("console-password");
    std::fs::write(&password_file, "console-check-password-0123\n").map_err(|e| e.to_string())?;
    let audit = dir.join("audit.log");
    let _ = std::fs::remove_file(&audit);
    let mut proxy = Proc::spawn(
        "mcp-proxy",
        &procs::binary("mcp-proxy"),
        &[
            "--listen",
            "127.0.0.1",
            "--port",
            "0",
            "--console",
            "--console-password-file",
            &password_file.to_string_lossy(),
            "--audit-log",
            &audit.to_string_lossy(),
            "--liveness-grace",
            GRACE_SECS,
        ],
    )?;
    let url = proxy.wait_for_line(START, listening_url)?;
    let mut servers = Vec::new();
    for name in ["alpha", "alpha", "beta"] {
        servers.push(Proc::spawn(
            &format!("reverse_server_example --name {name}"),
            &procs::binary("examples/reverse_server_example"),
            &[&url, "--name", name],
        )?);
    }
    procs::wait_registrations(&url, 3, START)?;
    Ok(Stack {
        proxy,
        url,
        password_file,
        servers,
    })
}

/// Runs `check.mjs`; it passes when it exits 0 (each check prints PASS or FAIL).
fn run_check(
    node_dir: &Path,
    chromium: &Path,
    stack: &Stack,
    screenshot: &Path,
) -> Result<(), String> {
    let script = node_dir.join("check.mjs");
    let axe = node_dir.join("node_modules/axe-core/axe.min.js");
    let victim = stack.servers[1].pid().to_string();
    let args = [
        script.to_string_lossy().into_owned(),
        stack.url.clone(),
        stack.password_file.to_string_lossy().into_owned(),
        victim,
        chromium.to_string_lossy().into_owned(),
        axe.to_string_lossy().into_owned(),
        screenshot.to_string_lossy().into_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    procs::run_checks(
        "check.mjs",
        Path::new("node"),
        &args,
        CHECK_DEADLINE,
        CHECKS,
    )
    .map(drop)
}
