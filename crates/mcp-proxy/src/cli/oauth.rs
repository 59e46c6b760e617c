//! The OAuth flags (`--public-url`, `--oauth-*`) into an [`OAuthConfig`], and, with
//! `--oauth-issuer builtin`, the built-in authorization server ([`BuiltinArgs`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{parse_secs, Cli, Secret};
use crate::auth::oauth::{OAuth, OAuthConfig};
use crate::auth::server::{self, AuthServer, AuthServerConfig, Credentials, FileStore, Store};
use crate::config::Config;
use crate::Error;

/// `--oauth-issuer` naming the proxy's own authorization server.
pub const BUILTIN: &str = "builtin";

/// The flags of the built-in authorization server (`--oauth-issuer builtin`).
#[derive(Args, Debug, Clone)]
pub struct BuiltinArgs {
    /// Built-in authorization server: the passphrase that signs users in (at least 12
    /// characters). Everyone who knows it is one user (one subject, `owner`); give each
    /// their own password with --oauth-users-file instead. Prefer the variable or
    /// --oauth-passphrase-file (flags show in the process list).
    #[arg(
        long,
        env = "MCP_PROXY_OAUTH_PASSPHRASE",
        hide_env_values = true,
        value_name = "TEXT"
    )]
    pub oauth_passphrase: Option<Secret>,

    /// Built-in authorization server: a file holding the passphrase (its first line).
    #[arg(long, env = "MCP_PROXY_OAUTH_PASSPHRASE_FILE", value_name = "PATH")]
    pub oauth_passphrase_file: Option<PathBuf>,

    /// Built-in authorization server: users with their own passwords, one `NAME HASH` per
    /// line (`#` comments); make a HASH with `mcp-proxy --oauth-hash-password` (it reads
    /// the password on stdin). Each user is a subject of their own.
    #[arg(long, env = "MCP_PROXY_OAUTH_USERS_FILE", value_name = "PATH")]
    pub oauth_users_file: Option<PathBuf>,

    /// Built-in authorization server: the file its state lives in (signing keys, clients,
    /// refresh tokens, consents), kept across restarts; readable by the proxy's user only.
    /// With --broker redis://… the state lives in Redis instead, shared by the cluster.
    #[arg(
        long,
        env = "MCP_PROXY_OAUTH_STATE",
        value_name = "PATH",
        default_value = "mcp-proxy-oauth.json"
    )]
    pub oauth_state: PathBuf,

    /// Built-in authorization server: seconds an access token lives.
    #[arg(long, env = "MCP_PROXY_OAUTH_ACCESS_LIFETIME", value_name = "SECS", default_value = "600", value_parser = parse_secs)]
    pub oauth_access_lifetime: Duration,

    /// Built-in authorization server: seconds a refresh token lives (each use renews it).
    #[arg(long, env = "MCP_PROXY_OAUTH_REFRESH_LIFETIME", value_name = "SECS", default_value = "2592000", value_parser = parse_secs)]
    pub oauth_refresh_lifetime: Duration,

    /// Built-in authorization server: seconds a dynamically registered client is kept after
    /// its registration or its last token.
    #[arg(long, env = "MCP_PROXY_OAUTH_CLIENT_LIFETIME", value_name = "SECS", default_value = "2592000", value_parser = parse_secs)]
    pub oauth_client_lifetime: Duration,

    /// Built-in authorization server: the most dynamically registered clients kept at once
    /// (registration is open to anyone; past it, registrations get 503).
    #[arg(long, env = "MCP_PROXY_OAUTH_MAX_CLIENTS", value_name = "N", default_value_t = server::DEFAULT_MAX_CLIENTS)]
    pub oauth_max_clients: usize,

    /// Built-in authorization server: seconds one signing key signs before the next takes
    /// over (the previous key keeps verifying, so nobody is logged out).
    #[arg(long, env = "MCP_PROXY_OAUTH_KEY_ROTATION", value_name = "SECS", default_value = "2592000", value_parser = parse_secs)]
    pub oauth_key_rotation: Duration,

    /// Tests only: trust this CA for client ID metadata documents and allow them on
    /// loopback addresses.
    #[arg(
        long,
        env = "MCP_PROXY_OAUTH_CIMD_TEST_CA",
        value_name = "PATH",
        hide = true
    )]
    pub oauth_cimd_test_ca: Option<PathBuf>,

    /// Print a --oauth-users-file hash of the password read on stdin, then exit.
    #[arg(long)]
    pub oauth_hash_password: bool,
}

fn bad(flag: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        flag,
        reason: reason.into(),
    }
}

impl Cli {
    /// Whether --oauth-issuer names the built-in authorization server.
    fn builtin(&self) -> bool {
        self.oauth_issuer.as_deref().map(str::trim) == Some(BUILTIN)
    }

    /// The OAuth resource server's settings, when --oauth-issuer is given.
    pub fn oauth_config(&self) -> Result<Option<OAuthConfig>, Error> {
        let Some(issuer) = &self.oauth_issuer else {
            return Ok(None);
        };
        let public_url = self.public_url.as_deref().ok_or(Error::InvalidConfig {
            flag: "--oauth-issuer",
            reason: "needs --public-url".into(),
        })?;
        // The built-in authorization server's issuer is the proxy itself.
        let issuer = if self.builtin() {
            public_url
        } else {
            issuer.as_str()
        };
        let mut config = OAuthConfig::new(public_url, issuer)?;
        if self.builtin() {
            // As written in `iss` and the metadata: the public URL as normalised (no trailing
            // slash), so its endpoints and RFC 8414's well-known path line up.
            config.issuer = config.public_url.clone();
        }
        for spec in self.oauth_scopes.iter().filter(|s| !s.trim().is_empty()) {
            config.add_scopes(spec)?;
        }
        for spec in self.oauth_audiences.iter().filter(|s| !s.trim().is_empty()) {
            if self.builtin() {
                return Err(bad(
                    "--oauth-audience",
                    "not with --oauth-issuer builtin (its tokens name the resource URL)",
                ));
            }
            config.add_audience(spec)?;
        }
        if let Some(endpoint) = &self.oauth_introspection {
            if self.builtin() {
                return Err(bad(
                    "--oauth-introspection",
                    "not with --oauth-issuer builtin",
                ));
            }
            let endpoint = (endpoint != "issuer").then_some(endpoint.as_str());
            config.set_introspection(
                endpoint,
                self.oauth_client_id.clone().unwrap_or_default(),
                self.oauth_client_secret
                    .clone()
                    .map(|s| s.0)
                    .unwrap_or_default(),
            )?;
        }
        Ok(Some(config))
    }

    /// Sets `config.oauth` (and, for `builtin`, `config.auth_server`) from the flags.
    pub(super) fn apply_oauth(&self, config: &mut Config) -> Result<(), Error> {
        let Some(resources) = self.oauth_config()? else {
            return Ok(());
        };
        if !self.builtin() {
            config.oauth = Some(Arc::new(OAuth::new(resources)));
            return Ok(());
        }
        let args = &self.builtin_args;
        let credentials = match (&args.oauth_passphrase, &args.oauth_passphrase_file, &args.oauth_users_file) {
            (Some(p), None, None) => Credentials::passphrase(&p.0)?,
            (None, Some(path), None) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| bad("--oauth-passphrase-file", format!("{}: {e}", path.display())))?;
                Credentials::passphrase(text.lines().next().unwrap_or_default())?
            }
            (None, None, Some(path)) => Credentials::users_file(path)?,
            _ => {
                return Err(bad(
                    "--oauth-issuer",
                    "builtin needs exactly one of --oauth-passphrase, --oauth-passphrase-file, --oauth-users-file",
                ))
            }
        };
        let cimd_test_ca = args
            .oauth_cimd_test_ca
            .as_ref()
            .map(|p| {
                std::fs::read_to_string(p).map_err(|e| bad("--oauth-cimd-test-ca", e.to_string()))
            })
            .transpose()?;
        let settings = AuthServerConfig {
            credentials,
            access_lifetime: args.oauth_access_lifetime.max(Duration::from_secs(1)),
            code_lifetime: server::DEFAULT_CODE_LIFETIME,
            refresh_lifetime: args.oauth_refresh_lifetime.max(Duration::from_secs(60)),
            client_lifetime: args.oauth_client_lifetime.max(Duration::from_secs(60)),
            unused_client_lifetime: server::DEFAULT_UNUSED_CLIENT_LIFETIME,
            max_clients: args.oauth_max_clients,
            key_rotation: args.oauth_key_rotation.max(Duration::from_secs(60)),
            cimd_test_ca,
        };
        let store = self.oauth_store(config)?;
        let server = Arc::new(AuthServer::new(settings, resources.clone(), store)?);
        config.oauth = Some(Arc::new(OAuth::with_local_issuer(
            resources,
            server.clone(),
        )));
        config.auth_server = Some(server);
        Ok(())
    }

    /// The built-in authorization server's state: Redis in a cluster, else the file.
    fn oauth_store(&self, config: &Config) -> Result<Arc<dyn Store>, Error> {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &config.cluster {
            return Ok(Arc::new(server::redis_store::RedisStore::new(
                &cluster.url,
                &cluster.prefix,
            )?));
        }
        #[cfg(not(feature = "cluster"))]
        let _ = config;
        Ok(Arc::new(FileStore::open(&self.builtin_args.oauth_state)?))
    }
}
