//! [`StdioConfig`]: what to run and how to share it, and how a child is spawned.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::SessionMode;
use crate::Error;

/// What to run and how to share it.
#[derive(Clone, Debug)]
pub struct StdioConfig {
    /// The program to run.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Shared by all clients or one per client session.
    pub mode: SessionMode,
    /// In per-client mode, the most children alive at once; more sessions are refused.
    pub max_children: usize,
    /// How long a stopping child gets after its stdin closes, and again after SIGTERM.
    pub stop_grace: Duration,
    /// The longest pause between restarts of a child that keeps exiting.
    pub max_restart_delay: Duration,
}

impl StdioConfig {
    /// Runs `program` with `args`, shared, with the defaults.
    pub fn new(
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        StdioConfig {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            mode: SessionMode::Shared,
            max_children: 64,
            stop_grace: Duration::from_secs(5),
            max_restart_delay: Duration::from_secs(10),
        }
    }

    /// Shares the child as `mode` says.
    pub fn with_mode(mut self, mode: SessionMode) -> Self {
        self.mode = mode;
        self
    }
}

/// The environment variable the `mcp-reverse` command reads its proxy token from.
pub const TOKEN_ENV: &str = "MCP_REVERSE_TOKEN";

/// Environment variables no child ever inherits: every secret the `mcp-reverse` command reads
/// from the environment (the proxy token), so a wrapped program can neither use nor leak it.
pub const SECRET_ENV_VARS: &[&str] = &[TOKEN_ENV];

/// Spawns one process of `config`'s program, its stdio piped, its environment without
/// [`SECRET_ENV_VARS`].
pub(super) fn spawn_child(config: &StdioConfig) -> Result<Child, Error> {
    let mut command = Command::new(&config.program);
    for name in SECRET_ENV_VARS {
        command.env_remove(name);
    }
    command
        .args(&config.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // If the bridge itself dies, the child must not outlive it.
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::Spawn {
            program: config.program.clone(),
            source,
        })
}
