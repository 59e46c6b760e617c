//! The MCP conformance suite's authorization server scenarios against the built-in server.
//!
//! `cargo xtask conformance` pins `@modelcontextprotocol/conformance` 0.1.16, which has no
//! scenario for a server's authorization (docs/conformance.md). Its 0.2.0 alphas add a mode,
//! `conformance authorization`, whose two scenarios (`authorization-server-metadata-endpoint`,
//! `authorization-code-grant`) test an authorization server: they apply to
//! `--oauth-issuer builtin`. This installs that alpha on its own under
//! `target/oauth/as-conformance/` (cached while the pin holds) and runs
//! `xtask/oauth/as_conformance.mjs`, which registers the suite's client, runs the suite, and
//! signs in at the URL the suite prints with the scripted browser.

use std::path::{Path, PathBuf};

use crate::conformance::installed_version;
use crate::procs;

use super::{Runtimes, CLIENT_DEADLINE};

/// The suite's version with the `authorization` mode (an alpha: the `latest` tag, 0.1.16, has
/// no such mode).
pub(super) const SUITE: &str = "0.2.0-alpha.12";
/// The scenarios it runs; each must pass.
const SCENARIOS: [&str; 2] = [
    "authorization-server-metadata-endpoint",
    "authorization-code-grant",
];

/// Installs the suite (when its pin is not there yet); returns its command line entry point.
pub(super) fn install(runtimes: &Runtimes) -> Result<PathBuf, String> {
    let dir = runtimes.dir.join("as-conformance");
    crate::conformance::npm_project(&dir, "mcp-oauth-as-conformance")?;
    let package = dir.join("node_modules/@modelcontextprotocol/conformance");
    if installed_version(&package).as_deref() != Some(SUITE) {
        procs::run_shown(
            Path::new("npm"),
            &[
                "install",
                "--no-audit",
                "--no-fund",
                "--save-exact",
                "--engine-strict=false",
                &format!("@modelcontextprotocol/conformance@{SUITE}"),
            ],
            &dir,
        )
        .map_err(|e| format!("{e} (npm, from Node.js, installs it)"))?;
    }
    let cli = package.join("dist/index.js");
    if cli.exists() {
        Ok(cli)
    } else {
        Err(format!("after the install, {} is missing", cli.display()))
    }
}

/// Runs the suite's authorization server scenarios against the built-in server at `url`
/// (whose passphrase is in `dir`); every scenario must pass.
pub(super) fn run(runtimes: &Runtimes, cli: &Path, url: &str, dir: &Path) -> Result<(), String> {
    let script = runtimes.dir.join("as_conformance.mjs");
    let out = runtimes.dir.join("as-conformance/results");
    let passphrase = dir.join("passphrase");
    let path = |p: &Path| p.to_str().map(str::to_owned).ok_or("non-UTF-8 path");
    let args = [
        path(&script)?,
        path(cli)?,
        url.to_owned(),
        path(&passphrase)?,
        path(&out)?,
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = procs::run_checks(
        "conformance authorization",
        &runtimes.node,
        &args,
        CLIENT_DEADLINE,
        0,
    )?;
    // The suite's summary: `✓ NAME: N passed, 0 failed` per scenario.
    for scenario in SCENARIOS {
        let passed = output
            .iter()
            .any(|l| l.contains(&format!("✓ {scenario}:")) && l.contains(" 0 failed"));
        if !passed {
            return Err(format!("the suite did not pass {scenario}"));
        }
    }
    Ok(())
}
