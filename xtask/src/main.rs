//! `cargo xtask`: project automation written in Rust, so it runs wherever cargo does.
//!
//! # Layout
//! - `procs`: building the binaries once, spawning them, reading their output, cleaning up.
//! - `e2e`: the seed's walkthrough and the fault scenarios, as real processes on loopback.

mod e2e;
mod procs;

use std::process::ExitCode;

const USAGE: &str = "\
Usage: cargo xtask <TASK>

Tasks:
  e2e      Build once, then run the proxy, a reverse server and the seed's client as real
           processes on free loopback ports: the seed's walkthrough, 200 concurrent calls,
           a reverse server killed mid-call, and a proxy restart. Prints PASS/FAIL per
           scenario; exits non-zero if any fails.
  help     Print this message
";

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        None | Some("help" | "--help" | "-h") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("e2e") => e2e::run(),
        Some(other) => {
            eprintln!("error: unknown task `{other}`\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
