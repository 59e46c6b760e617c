//! The `mcp-proxy` command line: every flag is also an environment variable.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::auth::{Auth, TokenKind, TokenSet};
use crate::config::ClusterConfig;
use crate::config::{self, Config};
use crate::limits::Rate;
use crate::peer::TrustedProxies;
use crate::tls::TlsConfig;
use crate::Error;

/// The port the seed's proxy was started on in its examples.
pub const DEFAULT_PORT: u16 = 9000;

/// The public MCP reverse proxy.
///
/// MCP servers behind NAT register here and long-poll for work (`/register`, `/poll`,
/// `/response`); MCP clients post JSON-RPC to `/message` (or `/servers/NAME/message`), or
/// speak MCP Streamable HTTP on `/mcp` (or `/servers/NAME/mcp`), as if the proxy were the
/// server. Compatible with the seed's `proxy_server PORT`.
///
/// Durations are in seconds (fractions allowed, e.g. 0.5). Logs go to stderr; set the level
/// with RUST_LOG (default: info). Session ids are never logged whole.
#[derive(Debug, Parser)]
#[command(name = "mcp-proxy", version, about, long_about)]
pub struct Cli {
    /// Port to listen on, as in the seed (`mcp-proxy 9000`). 0 picks a free port.
    #[arg(value_name = "PORT", conflicts_with = "port")]
    pub port_arg: Option<u16>,

    /// Port to listen on [default: 9000]. 0 picks a free port.
    #[arg(long, env = "MCP_PROXY_PORT")]
    pub port: Option<u16>,

    /// Address to listen on: an IP (`127.0.0.1`) or IP:PORT. The default, 0.0.0.0 (all
    /// interfaces), is what the seed did; use 127.0.0.1 behind a TLS-terminating proxy.
    #[arg(
        long,
        env = "MCP_PROXY_LISTEN",
        default_value = "0.0.0.0",
        value_name = "ADDR"
    )]
    pub listen: String,

    /// Poll hold when a poll names no timeout; also the longest hold for legacy (seed)
    /// registrations, whose HTTP read timeout is 35 s.
    #[arg(long, env = "MCP_PROXY_POLL_TIMEOUT", value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub poll_timeout: Duration,

    /// Longest poll hold granted to a modern registration that asks for more.
    #[arg(long, env = "MCP_PROXY_MAX_POLL_TIMEOUT", value_name = "SECS", default_value = "120", value_parser = parse_secs)]
    pub max_poll_timeout: Duration,

    /// How long a client waits for the server's answer before it gets 504 "request timeout".
    #[arg(long, env = "MCP_PROXY_REQUEST_TIMEOUT", value_name = "SECS", default_value = "300", value_parser = parse_secs)]
    pub request_timeout: Duration,

    /// Idle time (no poll, nothing in flight) after which a registration without held polls
    /// (every seed registration) expires; its queued requests then fail with 502.
    #[arg(long, env = "MCP_PROXY_EXPIRY", value_name = "SECS", default_value = "300", value_parser = parse_secs)]
    pub expiry: Duration,

    /// How long a registration that declared held polls may have none open before it is
    /// declared dead and its pending requests fail with 502.
    #[arg(long, env = "MCP_PROXY_LIVENESS_GRACE", value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub liveness_grace: Duration,

    /// Largest body accepted on any route, in bytes (413 above it).
    #[arg(long, visible_alias = "body-limit", env = "MCP_PROXY_MAX_BODY_BYTES", value_name = "BYTES", default_value_t = config::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// After SIGINT/SIGTERM, the longest the proxy waits for open connections to finish.
    #[arg(long, env = "MCP_PROXY_SHUTDOWN_DRAIN", value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub shutdown_drain: Duration,

    /// Host names `/mcp` accepts in the Host and Origin headers, comma-separated (`name` or
    /// `name:port`; `*` = any). Loopback names are always allowed. Others get 403: this is
    /// the DNS-rebinding defence the MCP spec requires, so list the public name clients use.
    #[arg(
        long,
        env = "MCP_PROXY_ALLOWED_HOSTS",
        value_name = "HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,

    /// Browser origins that get CORS headers on `/mcp`, comma-separated (e.g.
    /// `https://app.example.com`; `*` = any). Default: none, no CORS headers.
    #[arg(
        long,
        env = "MCP_PROXY_CORS_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// Interval of SSE keep-alive comments on idle `/mcp` streams.
    #[arg(long, env = "MCP_PROXY_SSE_KEEP_ALIVE", value_name = "SECS", default_value = "15", value_parser = parse_secs)]
    pub sse_keep_alive: Duration,

    /// A client session on `/mcp` with no request and no open stream for this long ends
    /// (its server is told with a `session_closed` item; the client's next request gets 404).
    #[arg(long, env = "MCP_PROXY_SESSION_IDLE", value_name = "SECS", default_value = "1800", value_parser = parse_secs)]
    pub session_idle: Duration,

    /// A server token, for reverse clients (`/register`, `/poll`, `/response`), as
    /// TOKEN[:NAMES]: NAMES is `*` (every pool) or comma-separated pool names, `@default` for
    /// the default pool; without NAMES the token reaches the default pool only. Repeat the
    /// flag for several tokens (rotation); the variable takes space-separated specs. Once any
    /// server token is configured, those routes need one (401 otherwise). Tokens: at least 16
    /// characters of A-Z a-z 0-9 - . _ ~ + / = (e.g. `openssl rand -hex 32`).
    #[arg(
        long = "server-token",
        env = "MCP_PROXY_SERVER_TOKENS",
        hide_env_values = true,
        value_name = "TOKEN[:NAMES]",
        value_delimiter = ' '
    )]
    pub server_tokens: Vec<Secret>,

    /// A client token, for MCP clients (`/message`, `/mcp`, `/servers/NAME/...`), as
    /// TOKEN[:NAMES] like --server-token. Once any client token is configured, client routes
    /// need one for the server they address (401 otherwise).
    #[arg(
        long = "client-token",
        env = "MCP_PROXY_CLIENT_TOKENS",
        hide_env_values = true,
        value_name = "TOKEN[:NAMES]",
        value_delimiter = ' '
    )]
    pub client_tokens: Vec<Secret>,

    /// A token file: one token per line, `server|client TOKEN [NAMES]` (NAMES as in
    /// --server-token), `#` comments. Re-read on SIGHUP and whenever its content changes; a
    /// malformed file is refused at start and ignored (old tokens stay) on reload. Its tokens
    /// add to the flags'. See docs/security.md.
    #[arg(long, env = "MCP_PROXY_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// The proxy's public base URL, as clients reach it (`https://mcp.example.com`). Each
    /// pool's OAuth resource URL is its MCP endpoint under it
    /// (`https://mcp.example.com/servers/files/mcp`), and its host joins --allowed-hosts.
    /// https, or http on loopback only. Needed by --oauth-issuer.
    #[arg(long, env = "MCP_PROXY_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// Turn on OAuth 2.1 for the client routes: the identity provider whose access tokens
    /// open them (its issuer identifier, exactly as in its tokens' `iss`; e.g.
    /// `https://keycloak.example.com/realms/mcp`), or `builtin`: the proxy is its own
    /// authorization server (login and consent pages, see --oauth-passphrase). Its metadata is found by RFC 8414 /
    /// OpenID Connect discovery and its JWKS fetched lazily, so the proxy starts while it is
    /// down. Tokens must name the pool's resource URL in `aud` (see --oauth-audience). Static
    /// client tokens keep working beside it. https, or http on loopback only. See
    /// docs/security.md.
    #[arg(
        long,
        env = "MCP_PROXY_OAUTH_ISSUER",
        value_name = "URL|builtin",
        requires = "public_url"
    )]
    pub oauth_issuer: Option<String>,

    /// Scopes a token needs, as [POOL[/TOOL]=]SCOPE[,SCOPE...]: without POOL= for every pool
    /// without a rule of its own, with POOL= for that pool (`@default` for /mcp), with
    /// POOL/TOOL= for a `tools/call` of that tool on top of the pool's (403
    /// insufficient_scope otherwise). Repeatable; the variable takes space-separated specs.
    #[arg(
        long = "oauth-scopes",
        env = "MCP_PROXY_OAUTH_SCOPES",
        value_name = "[POOL[/TOOL]=]SCOPES",
        value_delimiter = ' ',
        requires = "oauth_issuer"
    )]
    pub oauth_scopes: Vec<String>,

    /// What a pool accepts in a token's `aud` instead of its resource URL, as
    /// [POOL=]AUDIENCE[,AUDIENCE...], for providers that cannot put the resource URL there
    /// (Entra ID's application ID URI `api://…`; clients then need a pre-registered client
    /// id). Without POOL= for every pool without an override. Repeatable.
    #[arg(
        long = "oauth-audience",
        env = "MCP_PROXY_OAUTH_AUDIENCES",
        value_name = "[POOL=]AUDIENCES",
        value_delimiter = ' ',
        requires = "oauth_issuer"
    )]
    pub oauth_audiences: Vec<String>,

    /// Introspect access tokens that are not JWTs (RFC 7662) at this endpoint, or at the
    /// issuer's (`issuer`), with --oauth-client-id and --oauth-client-secret.
    #[arg(
        long,
        env = "MCP_PROXY_OAUTH_INTROSPECTION",
        value_name = "URL|issuer",
        requires_all = ["oauth_issuer", "oauth_client_id", "oauth_client_secret"]
    )]
    pub oauth_introspection: Option<String>,

    /// The proxy's client id at the authorization server, for introspection.
    #[arg(long, env = "MCP_PROXY_OAUTH_CLIENT_ID", value_name = "ID")]
    pub oauth_client_id: Option<String>,

    /// The proxy's client secret at the authorization server, for introspection.
    #[arg(
        long,
        env = "MCP_PROXY_OAUTH_CLIENT_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub oauth_client_secret: Option<Secret>,

    /// The built-in authorization server's flags (`--oauth-issuer builtin`).
    #[command(flatten)]
    pub builtin_args: BuiltinArgs,

    /// Serve HTTPS: the certificate chain, PEM (leaf first). Needs --tls-key.
    #[arg(
        long,
        env = "MCP_PROXY_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "MCP_PROXY_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Log format on stderr.
    #[arg(long, env = "MCP_PROXY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The audit log's and the console's flags.
    #[command(flatten)]
    pub observe: ObserveArgs,

    /// Requests per second each caller may make on the client routes (/message, /mcp,
    /// /servers/...), sustained. A caller is its bearer token when that is a configured client
    /// token, else its IP address. Above it: 429 with Retry-After. A finite number >= 0;
    /// 0 turns the limit off.
    #[arg(long, env = "MCP_PROXY_RATE_LIMIT", value_name = "PER_SEC", default_value_t = config::DEFAULT_CLIENT_RATE.per_second, value_parser = parse_rate)]
    pub rate_limit: f64,

    /// Requests each caller may make at once on the client routes, above the sustained rate.
    #[arg(long, env = "MCP_PROXY_RATE_BURST", value_name = "N", default_value_t = config::DEFAULT_CLIENT_RATE.burst)]
    pub rate_burst: u32,

    /// Requests per second each caller may make on /register, /poll and /response: a budget
    /// of their own, so clients cannot starve servers. A finite number >= 0; 0 turns the
    /// limit off.
    #[arg(long, env = "MCP_PROXY_SERVER_RATE_LIMIT", value_name = "PER_SEC", default_value_t = config::DEFAULT_SERVER_RATE.per_second, value_parser = parse_rate)]
    pub server_rate_limit: f64,

    /// Requests each caller may make at once on the reverse-client routes.
    #[arg(long, env = "MCP_PROXY_SERVER_RATE_BURST", value_name = "N", default_value_t = config::DEFAULT_SERVER_RATE.burst)]
    pub server_rate_burst: u32,

    /// Pending requests one registered server may have (queued or being handled); a client's
    /// next request to it gets 503 until some are answered.
    #[arg(long, env = "MCP_PROXY_MAX_PENDING", value_name = "N", default_value_t = config::DEFAULT_MAX_PENDING_PER_REGISTRATION)]
    pub max_pending: usize,

    /// Polls one registered server may hold open at once; the next poll gets 429.
    #[arg(long, env = "MCP_PROXY_MAX_POLLS", value_name = "N", default_value_t = config::DEFAULT_MAX_POLLS_PER_REGISTRATION)]
    pub max_polls: usize,

    /// Registrations one server token may have at once (with auth on); the next gets 429.
    #[arg(long, env = "MCP_PROXY_MAX_REGISTRATIONS_PER_TOKEN", value_name = "N", default_value_t = config::DEFAULT_MAX_REGISTRATIONS_PER_TOKEN)]
    pub max_registrations_per_token: usize,

    /// `/mcp` client sessions the proxy keeps at once (each keeps a replay log until it ends
    /// or idles out); the next `initialize` gets 503 with Retry-After.
    #[arg(long, env = "MCP_PROXY_MAX_SESSIONS", value_name = "N", default_value_t = config::DEFAULT_MAX_SESSIONS)]
    pub max_sessions: usize,

    /// `/mcp` client sessions pinned to one registered server at once; new sessions go to
    /// other members of the pool, and when all are full `initialize` gets 503.
    #[arg(long, env = "MCP_PROXY_MAX_SESSIONS_PER_REGISTRATION", value_name = "N", default_value_t = config::DEFAULT_MAX_SESSIONS_PER_REGISTRATION)]
    pub max_sessions_per_registration: usize,

    /// Registrations the proxy keeps at once, whoever made them; the next `/register` gets
    /// 503 with Retry-After.
    #[arg(long, env = "MCP_PROXY_MAX_REGISTRATIONS", value_name = "N", default_value_t = config::DEFAULT_MAX_REGISTRATIONS)]
    pub max_registrations: usize,

    /// Registrations one address may have at once when it registers without a server token
    /// (server auth off; with auth on, --max-registrations-per-token applies); the next gets
    /// 429. The address is the peer's, or X-Forwarded-For's from a --trusted-proxies peer.
    #[arg(long, env = "MCP_PROXY_MAX_REGISTRATIONS_PER_ADDRESS", value_name = "N", default_value_t = config::DEFAULT_MAX_REGISTRATIONS_PER_ADDRESS)]
    pub max_registrations_per_address: usize,

    /// `/mcp` client sessions one caller (its client token, else its address) may have at
    /// once; the next `initialize` gets 429. Ended and idle-expired sessions free their place.
    #[arg(long, env = "MCP_PROXY_MAX_SESSIONS_PER_CALLER", value_name = "N", default_value_t = config::DEFAULT_MAX_SESSIONS_PER_CALLER)]
    pub max_sessions_per_caller: usize,

    /// Bytes of SSE events one client session keeps for resumption with Last-Event-ID; its
    /// oldest events are forgotten first (a resumption from before them gets 404).
    #[arg(long, env = "MCP_PROXY_MAX_REPLAY_BYTES_PER_SESSION", value_name = "BYTES", default_value_t = config::DEFAULT_MAX_REPLAY_BYTES_PER_SESSION)]
    pub max_replay_bytes_per_session: usize,

    /// Bytes of SSE events all client sessions keep for resumption together; above it the
    /// oldest finished streams are forgotten first.
    #[arg(long, env = "MCP_PROXY_MAX_REPLAY_BYTES", value_name = "BYTES", default_value_t = config::DEFAULT_MAX_REPLAY_BYTES)]
    pub max_replay_bytes: usize,

    /// How long a caller may take to send a request's headers, from their first byte; a
    /// slower one is disconnected (slow-header attacks). Held polls and SSE streams are not
    /// affected: they are requests in flight.
    #[arg(long, env = "MCP_PROXY_HEADER_TIMEOUT", value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub header_timeout: Duration,

    /// How long a request body may go without a byte while it is read; the request then
    /// fails and its connection closes.
    #[arg(long, env = "MCP_PROXY_BODY_TIMEOUT", value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub body_timeout: Duration,

    /// How long a kept-alive connection with no request in flight stays open.
    #[arg(long, env = "MCP_PROXY_IDLE_TIMEOUT", value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    pub idle_timeout: Duration,

    /// Open connections in all (TLS handshakes included); the next is closed unread. 0 turns
    /// the cap off. Keep it below the process's open-file limit.
    #[arg(long, env = "MCP_PROXY_MAX_CONNECTIONS", value_name = "N", default_value_t = config::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Open connections from one address (IPv6: one /64); the next is closed unread. Peers
    /// in --trusted-proxies are exempt (they carry many callers). 0 turns the cap off.
    #[arg(long, env = "MCP_PROXY_MAX_CONNECTIONS_PER_ADDRESS", value_name = "N", default_value_t = config::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS)]
    pub max_connections_per_address: usize,

    /// Refuse the reverse channel (`GET /channel`, a WebSocket per reverse client): reverse
    /// clients then use long polling (`mcp-reverse --transport auto` falls back by itself).
    #[arg(long, env = "MCP_PROXY_NO_CHANNELS")]
    pub no_channels: bool,

    /// Reverse proxies in front of this one (comma-separated addresses or CIDRs, e.g.
    /// `127.0.0.1,10.0.0.0/8`): from these peers the client's address is read from
    /// X-Forwarded-For (rightmost untrusted entry) for every per-address limit. Default: none.
    #[arg(
        long,
        env = "MCP_PROXY_TRUSTED_PROXIES",
        value_name = "CIDRS",
        default_value = ""
    )]
    pub trusted_proxies: TrustedProxies,

    /// Where the broker's shared state lives: `memory` (this instance alone), or a Redis URL
    /// (`redis://[user:password@]HOST:PORT[/DB]`, `rediss://` for TLS) shared by several
    /// instances behind a load balancer (docs/deployment.md).
    #[arg(
        long,
        env = "MCP_PROXY_BROKER",
        value_name = "memory|URL",
        default_value = "memory"
    )]
    pub broker: BrokerSpec,

    /// Prefix of every Redis key and channel, so several clusters can share one Redis.
    #[arg(
        long,
        env = "MCP_PROXY_CLUSTER_PREFIX",
        value_name = "PREFIX",
        default_value = "mcp-proxy:"
    )]
    pub cluster_prefix: String,

    /// How often an instance tells the cluster it is alive. An instance that missed three
    /// beats is lost: requests relayed to it fail and its pools are taken over, so this sets
    /// how long a crash stays unnoticed (3 s by default).
    #[arg(long, env = "MCP_PROXY_CLUSTER_HEARTBEAT", value_name = "SECS", default_value = "1", value_parser = parse_secs)]
    pub cluster_heartbeat: Duration,
}

/// `--broker`: `memory`, or the Redis URL of a cluster. Checked by [`Cli::try_config`], not
/// by the parser, so no error message ever repeats a password; its `Debug` hides it too.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerSpec(pub String);

impl std::str::FromStr for BrokerSpec {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(BrokerSpec(s.trim().to_owned()))
    }
}

impl BrokerSpec {
    /// `None` for `memory`, the URL of a Redis, or why it is neither (password hidden).
    pub fn cluster_url(&self) -> Result<Option<&str>, String> {
        let s = self.0.as_str();
        if s.eq_ignore_ascii_case("memory") {
            return Ok(None);
        }
        let shown = ClusterConfig::new(s).redacted_url();
        match s.split_once("://").map(|(scheme, _)| scheme) {
            #[cfg(feature = "cluster")]
            Some("redis" | "rediss" | "redis+unix" | "unix") => {
                redis::Client::open(s)
                    .map_err(|e| format!("`{shown}` is not a usable Redis URL: {e}"))?;
                Ok(Some(s))
            }
            #[cfg(not(feature = "cluster"))]
            Some("redis" | "rediss" | "redis+unix" | "unix") => Err(format!(
                "`{shown}`: this mcp-proxy was built without the `cluster` feature"
            )),
            _ => Err(format!(
                "`{shown}` is neither `memory` nor a Redis URL (redis://HOST:PORT)"
            )),
        }
    }
}

impl std::fmt::Debug for BrokerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BrokerSpec({})",
            ClusterConfig::new(&self.0).redacted_url()
        )
    }
}

/// A secret given on the command line; its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// Compact single-line records (no colours), for log collectors.
    Compact,
    /// One JSON object per line (timestamp, level, target, fields, spans), for log shippers.
    Json,
}

/// Parses seconds, fractions allowed (`30`, `0.25`).
fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is not a valid duration"))
}

/// Parses a request rate: requests per second, finite and not negative (0 = off).
fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of requests per second"))?;
    if !rate.is_finite() || rate < 0.0 {
        return Err(format!(
            "`{s}` is not a valid rate: give requests per second, a finite number >= 0 (0 turns the limit off)"
        ));
    }
    Ok(rate)
}

impl Cli {
    /// The address to bind, from `--listen` and the port (positional or `--port`).
    pub fn addr(&self) -> Result<SocketAddr, String> {
        let port = self.port_arg.or(self.port);
        if let Ok(addr) = self.listen.parse::<SocketAddr>() {
            return match port {
                Some(p) if p != addr.port() => Err(format!(
                    "--listen {} names port {} but port {p} was also given",
                    self.listen,
                    addr.port()
                )),
                _ => Ok(addr),
            };
        }
        let ip: IpAddr = self
            .listen
            .parse()
            .map_err(|_| format!("--listen `{}` is not an IP address or IP:PORT", self.listen))?;
        Ok(SocketAddr::new(ip, port.unwrap_or(DEFAULT_PORT)))
    }

    /// [`Cli::config`] with the tokens and the TLS certificate, which need files read.
    pub fn try_config(&self) -> Result<Config, Error> {
        let mut fixed = TokenSet::new();
        for (kind, specs, origin) in [
            (TokenKind::Server, &self.server_tokens, "--server-token"),
            (TokenKind::Client, &self.client_tokens, "--client-token"),
        ] {
            for spec in specs.iter().filter(|s| !s.0.trim().is_empty()) {
                fixed.add_spec(kind, &spec.0, origin)?;
            }
        }
        self.broker
            .cluster_url()
            .map_err(|reason| Error::InvalidConfig {
                flag: "--broker",
                reason,
            })?;
        let mut config = self.config();
        config.auth = Auth::new(fixed, self.token_file.clone())?;
        self.apply_oauth(&mut config)?;
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config.tls = Some(TlsConfig::from_pem_files(cert, key)?);
        }
        self.observe.open(&mut config)?;
        Ok(config)
    }

    /// The proxy configuration these flags describe, without tokens or TLS (see
    /// [`Cli::try_config`]).
    pub fn config(&self) -> Config {
        Config {
            poll_timeout: self.poll_timeout,
            max_poll_timeout: self.max_poll_timeout.max(self.poll_timeout),
            request_timeout: self.request_timeout,
            expiry: self.expiry,
            liveness_grace: self.liveness_grace,
            max_body_bytes: self.max_body_bytes,
            shutdown_drain: self.shutdown_drain,
            allowed_hosts: self.allowed_hosts.clone(),
            cors_origins: self.cors_origins.clone(),
            sse_keep_alive: self.sse_keep_alive,
            session_idle: self.session_idle,
            client_rate: Rate {
                per_second: self.rate_limit,
                burst: self.rate_burst,
            },
            server_rate: Rate {
                per_second: self.server_rate_limit,
                burst: self.server_rate_burst,
            },
            max_pending_per_registration: self.max_pending,
            max_polls_per_registration: self.max_polls,
            max_registrations_per_token: self.max_registrations_per_token,
            max_sessions: self.max_sessions,
            max_sessions_per_registration: self.max_sessions_per_registration,
            max_registrations: self.max_registrations,
            max_registrations_per_address: self.max_registrations_per_address,
            max_sessions_per_caller: self.max_sessions_per_caller,
            max_replay_bytes_per_session: self.max_replay_bytes_per_session,
            max_replay_bytes: self.max_replay_bytes,
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            max_connections_per_address: self.max_connections_per_address,
            channels: !self.no_channels,
            trusted_proxies: self.trusted_proxies.clone(),
            audit: self.observe.audit_config(),
            // A bad URL is refused by `try_config`; here it just means no cluster.
            cluster: self
                .broker
                .cluster_url()
                .ok()
                .flatten()
                .map(|url| ClusterConfig {
                    prefix: self.cluster_prefix.clone(),
                    heartbeat: self.cluster_heartbeat,
                    ..ClusterConfig::new(url)
                }),
            ..Config::default()
        }
    }
}

mod console;
mod oauth;

pub use console::ObserveArgs;
pub use oauth::{BuiltinArgs, BUILTIN};
#[cfg(test)]
mod tests;
