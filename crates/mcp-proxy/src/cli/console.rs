//! The audit log's and the console's flags (`--audit-*`, `--console*`): opened and checked
//! into the [`Config`] by [`Cli::try_config`](super::Cli::try_config).

use std::path::PathBuf;

use super::Secret;
use crate::audit::{AuditConfig, AuditLog};
use crate::console::ConsoleConfig;
use crate::{Config, Error};

/// What the proxy records and shows its operators.
#[derive(Debug, clap::Args)]
pub struct ObserveArgs {
    /// Write the audit log: one JSON line per client request answered (refused ones
    /// included), to this file (appended, created 0600, reopened on SIGHUP for logrotate) or
    /// `-` for stdout. Fields: docs/operations.md. Default: no audit log.
    #[arg(long, env = "MCP_PROXY_AUDIT_LOG", value_name = "PATH|-")]
    pub audit_log: Option<PathBuf>,

    /// Also record each request's `params` and each answer's body in the audit log, each cut
    /// at --audit-payload-cap bytes. Off by default: tool arguments and results often hold
    /// what a security record must not.
    #[arg(long, env = "MCP_PROXY_AUDIT_PAYLOADS")]
    pub audit_payloads: bool,

    /// With --audit-payloads: the most bytes of arguments, and of a result, one line keeps.
    #[arg(long, env = "MCP_PROXY_AUDIT_PAYLOAD_CAP", value_name = "BYTES", default_value_t = crate::audit::DEFAULT_PAYLOAD_CAP)]
    pub audit_payload_cap: usize,

    /// Serve the operator's console at /console: pools and members, client sessions, the
    /// latest audit lines, updated live. Needs --console-password or --console-password-file.
    #[arg(long, env = "MCP_PROXY_CONSOLE")]
    pub console: bool,

    /// The console's admin user name.
    #[arg(
        long,
        env = "MCP_PROXY_CONSOLE_USER",
        value_name = "NAME",
        default_value = "admin"
    )]
    pub console_user: String,

    /// The console's admin password (at least 12 characters). Prefer the environment or
    /// --console-password-file: a flag shows in the process list.
    #[arg(
        long,
        env = "MCP_PROXY_CONSOLE_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD",
        conflicts_with = "console_password_file"
    )]
    pub console_password: Option<Secret>,

    /// A file whose first line is the console's admin password.
    #[arg(long, env = "MCP_PROXY_CONSOLE_PASSWORD_FILE", value_name = "PATH")]
    pub console_password_file: Option<PathBuf>,
}

impl ObserveArgs {
    /// The audit's settings but its file, which [`ObserveArgs::open`] opens.
    pub(super) fn audit_config(&self) -> AuditConfig {
        AuditConfig {
            log: None,
            payloads: self.audit_payloads.then_some(self.audit_payload_cap),
        }
    }

    /// Opens the audit log and reads the console's credential into `config`.
    pub(super) fn open(&self, config: &mut Config) -> Result<(), Error> {
        if let Some(path) = &self.audit_log {
            config.audit.log = Some(AuditLog::open(path).map_err(|e| Error::InvalidConfig {
                flag: "--audit-log",
                reason: format!("cannot open {}: {e}", path.display()),
            })?);
        }
        if self.console {
            config.console = Some(self.console_config()?);
        }
        Ok(())
    }

    /// The console's admin credential, from the flag, the environment or the file.
    fn console_config(&self) -> Result<ConsoleConfig, Error> {
        let refuse = |reason: String| Error::InvalidConfig {
            flag: "--console-password",
            reason,
        };
        let password = match (&self.console_password, &self.console_password_file) {
            (Some(p), _) => p.0.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| refuse(format!("cannot read {}: {e}", path.display())))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            (None, None) => {
                return Err(refuse(
                    "--console needs --console-password or --console-password-file".into(),
                ))
            }
        };
        ConsoleConfig::new(&self.console_user, &password).map_err(refuse)
    }
}
