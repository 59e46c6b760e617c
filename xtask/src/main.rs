//! `cargo xtask`: project automation written in Rust, so it runs wherever cargo does.

use std::process::ExitCode;

const USAGE: &str = "\
Usage: cargo xtask <TASK>

Tasks:
  e2e      Build once, start the proxy, a reverse server and the seed's client as real
           processes on free loopback ports, and check what they print (not yet available)
  help     Print this message
";

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        None | Some("help" | "--help" | "-h") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("error: unknown task `{other}`\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
