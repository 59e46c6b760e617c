//! The proxy's settings, with the defaults docs/protocol.md promises.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::AuditConfig;
use crate::auth::oauth::OAuth;
use crate::auth::server::AuthServer;
use crate::auth::Auth;
use crate::console::ConsoleConfig;
use crate::peer::TrustedProxies;
use crate::tls::TlsConfig;

/// Default poll hold when the poll names no `timeout` (and the cap for legacy registrations).
pub const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest poll hold granted to a modern registration.
pub const DEFAULT_MAX_POLL_TIMEOUT: Duration = Duration::from_secs(120);
/// Default time a client waits for its answer (real tools can take minutes).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Default idle time after which a registration without held polls expires.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(300);
/// Default grace a held-poll registration has to reopen a poll before it is dead.
pub const DEFAULT_LIVENESS_GRACE: Duration = Duration::from_secs(5);
/// Default body limit on every route (axum's own 2 MB breaks real tool results).
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Default deadline for the drain after a shutdown signal.
pub const DEFAULT_SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);
/// Default interval of SSE keep-alive comments on idle `/mcp` streams.
pub const DEFAULT_SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Default idle time after which a client session on `/mcp` ends.
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(30 * 60);

/// Default request rate per client caller (token, else address) on client routes.
pub const DEFAULT_CLIENT_RATE: Rate = Rate {
    per_second: 1000.0,
    burst: 2000,
};
/// Default request rate per caller on `/register`, `/poll`, `/response`: their own budget,
/// generous, since every forwarded request costs a server one poll and one answer.
pub const DEFAULT_SERVER_RATE: Rate = Rate {
    per_second: 10_000.0,
    burst: 20_000,
};
/// Default pending requests one registration may have (queued or handed over).
pub const DEFAULT_MAX_PENDING_PER_REGISTRATION: usize = 1024;
/// Default polls one registration may hold open at once.
pub const DEFAULT_MAX_POLLS_PER_REGISTRATION: usize = 64;
/// Default registrations one server token may have at once (auth on).
pub const DEFAULT_MAX_REGISTRATIONS_PER_TOKEN: usize = 256;
/// Default `/mcp` client sessions the proxy keeps at once (each holds up to a few hundred
/// events for replay for as long as `--session-idle`).
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// Default `/mcp` client sessions pinned to one registration at once.
pub const DEFAULT_MAX_SESSIONS_PER_REGISTRATION: usize = 1_000;

/// Default time from a request head's first byte to its end (slow-header callers are cut).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a request body may go without a byte while it is read.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a connection with no request in flight stays open (held polls and SSE
/// streams are requests in flight: never cut by it).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default open connections in all.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// Default open connections from one address (trusted proxies exempt).
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 512;

/// Default registrations the proxy keeps at once, whoever made them.
pub const DEFAULT_MAX_REGISTRATIONS: usize = 20_000;
/// Default registrations one address may have at once when it registers without a server
/// token (server auth off).
pub const DEFAULT_MAX_REGISTRATIONS_PER_ADDRESS: usize = 256;
/// Default `/mcp` client sessions one caller (client token, else address) may have at once.
pub const DEFAULT_MAX_SESSIONS_PER_CALLER: usize = 256;
/// Default bytes of SSE events one client session keeps for `Last-Event-ID` replay.
pub const DEFAULT_MAX_REPLAY_BYTES_PER_SESSION: usize = 16 * 1024 * 1024;
/// Default bytes of SSE events kept for replay by all sessions together.
pub const DEFAULT_MAX_REPLAY_BYTES: usize = 256 * 1024 * 1024;

/// Everything the proxy can be told; [`Config::default`] is what the CLI starts from.
#[derive(Clone, Debug)]
pub struct Config {
    /// Poll hold when the poll names no `timeout`; also the most a legacy poll is held,
    /// because the seed's HTTP read timeout is `poll_timeout_seconds + 5` = 35 s.
    pub poll_timeout: Duration,
    /// The longest hold granted to a modern poll that asks for more.
    pub max_poll_timeout: Duration,
    /// How long a client waits for its answer before it gets 504.
    pub request_timeout: Duration,
    /// Idle time (no poll, nothing in flight) after which a registration without held polls
    /// expires and its queued requests fail.
    pub expiry: Duration,
    /// How long a registration that declared held polls may have none open before it is dead.
    pub liveness_grace: Duration,
    /// The largest body accepted on any route (413 above it).
    pub max_body_bytes: usize,
    /// After a shutdown signal, the longest the proxy waits for connections to finish.
    pub shutdown_drain: Duration,
    /// Hosts (`name` or `name:port`, `*` for any) that `/mcp` accepts in `Host` and `Origin`,
    /// besides the loopback names, which are always allowed (DNS-rebinding defence).
    pub allowed_hosts: Vec<String>,
    /// Browser origins given CORS headers on `/mcp` (`*` for any); empty = no CORS headers.
    pub cors_origins: Vec<String>,
    /// Interval of SSE keep-alive comments on `/mcp` streams (idle proxies cut silent streams).
    pub sse_keep_alive: Duration,
    /// A client session with no request and no open stream for this long ends.
    pub session_idle: Duration,
    /// Server and client tokens; [`Auth::off`] (the default) leaves every route open.
    pub auth: Auth,
    /// The OAuth 2.1 resource server (`--oauth-issuer`): access tokens from an identity
    /// provider open the client routes, beside the static client tokens. `None`: off.
    pub oauth: Option<Arc<OAuth>>,
    /// The built-in authorization server (`--oauth-issuer builtin`), whose tokens `oauth`
    /// checks. `None`: off.
    pub auth_server: Option<Arc<AuthServer>>,
    /// Serve HTTPS with this certificate; `None` serves plain HTTP.
    pub tls: Option<TlsConfig>,
    /// Request rate per caller on client routes (429 with Retry-After above it).
    pub client_rate: Rate,
    /// Request rate per caller on the reverse-client routes, a budget of their own.
    pub server_rate: Rate,
    /// Pending requests one registration may have; a client's next one gets 503.
    pub max_pending_per_registration: usize,
    /// Polls one registration may hold open; the next poll gets 429.
    pub max_polls_per_registration: usize,
    /// Registrations one server token may have at once (auth on); the next gets 429.
    pub max_registrations_per_token: usize,
    /// `/mcp` client sessions kept at once; the next `initialize` gets 503.
    pub max_sessions: usize,
    /// `/mcp` client sessions pinned to one registration; a pool whose members are all full
    /// answers the next `initialize` with 503.
    pub max_sessions_per_registration: usize,
    /// Registrations kept at once, in all; the next `/register` gets 503.
    pub max_registrations: usize,
    /// Registrations one address may have at once without a server token; the next gets 429.
    pub max_registrations_per_address: usize,
    /// `/mcp` client sessions one caller (client token, else address) may have; the next
    /// `initialize` gets 429.
    pub max_sessions_per_caller: usize,
    /// Replay bytes one client session keeps (its oldest events are forgotten first).
    pub max_replay_bytes_per_session: usize,
    /// Replay bytes all sessions keep together (the oldest finished streams go first).
    pub max_replay_bytes: usize,
    /// From a request head's first byte to its end; a slower head closes the connection.
    pub header_timeout: Duration,
    /// The longest a request body may go without a byte; the request then fails.
    pub body_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Open connections in all; the next is closed unread. 0 = no cap.
    pub max_connections: usize,
    /// Open connections from one address (trusted proxies exempt); 0 = no cap.
    pub max_connections_per_address: usize,
    /// Serve the reverse channel (`GET /channel`); off, reverse clients long-poll.
    pub channels: bool,
    /// Networks whose `X-Forwarded-For` names the client (the per-address limits' key).
    pub trusted_proxies: TrustedProxies,
    /// Join the instances sharing this Redis (`--broker redis://…`); `None` runs alone with
    /// the in-memory broker.
    pub cluster: Option<ClusterConfig>,
    /// The audit log (`--audit-log`); the default writes none.
    pub audit: AuditConfig,
    /// The operator's console at `/console` (`--console`); `None` (the default) serves none.
    pub console: Option<ConsoleConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            poll_timeout: DEFAULT_POLL_TIMEOUT,
            max_poll_timeout: DEFAULT_MAX_POLL_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            expiry: DEFAULT_EXPIRY,
            liveness_grace: DEFAULT_LIVENESS_GRACE,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            shutdown_drain: DEFAULT_SHUTDOWN_DRAIN,
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
            sse_keep_alive: DEFAULT_SSE_KEEP_ALIVE,
            session_idle: DEFAULT_SESSION_IDLE,
            auth: Auth::off(),
            oauth: None,
            auth_server: None,
            tls: None,
            client_rate: DEFAULT_CLIENT_RATE,
            server_rate: DEFAULT_SERVER_RATE,
            max_pending_per_registration: DEFAULT_MAX_PENDING_PER_REGISTRATION,
            max_polls_per_registration: DEFAULT_MAX_POLLS_PER_REGISTRATION,
            max_registrations_per_token: DEFAULT_MAX_REGISTRATIONS_PER_TOKEN,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_sessions_per_registration: DEFAULT_MAX_SESSIONS_PER_REGISTRATION,
            max_registrations: DEFAULT_MAX_REGISTRATIONS,
            max_registrations_per_address: DEFAULT_MAX_REGISTRATIONS_PER_ADDRESS,
            max_sessions_per_caller: DEFAULT_MAX_SESSIONS_PER_CALLER,
            max_replay_bytes_per_session: DEFAULT_MAX_REPLAY_BYTES_PER_SESSION,
            max_replay_bytes: DEFAULT_MAX_REPLAY_BYTES,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            channels: true,
            trusted_proxies: TrustedProxies::none(),
            cluster: None,
            audit: AuditConfig::default(),
            console: None,
        }
    }
}

impl Config {
    /// How often the sweeper looks for dead and expired registrations: often enough that a
    /// death is noticed within a quarter of the shorter of grace and expiry (at most 1 s).
    pub(crate) fn sweep_interval(&self) -> Duration {
        (self.liveness_grace.min(self.expiry).min(self.session_idle) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// A sustained rate and the burst allowed above it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Requests per second, sustained; 0 turns the limit off.
    pub per_second: f64,
    /// Requests allowed at once on top of an idle period.
    pub burst: u32,
}

impl Rate {
    /// No limit.
    pub const OFF: Rate = Rate {
        per_second: 0.0,
        burst: 0,
    };

    /// Off for 0 and, defensively, for anything that is not a positive number (the CLI
    /// refuses NaN and negatives; an embedder's `Config` is not checked).
    pub(crate) fn is_off(&self) -> bool {
        self.per_second.is_nan() || self.per_second <= 0.0
    }
}

/// Where and how to join a cluster (`--broker redis://HOST:PORT`).
#[derive(Clone)]
pub struct ClusterConfig {
    /// The Redis URL (`redis://[user:password@]host:port[/db]`, `rediss://` for TLS).
    pub url: String,
    /// Prefix of every key and channel, so several clusters can share one Redis.
    pub prefix: String,
    /// How often an instance says it is alive; it is taken for dead after three missed beats.
    pub heartbeat: Duration,
}

impl ClusterConfig {
    /// A cluster on the Redis at `url`, with the default prefix and heartbeat.
    pub fn new(url: impl Into<String>) -> Self {
        ClusterConfig {
            url: url.into(),
            prefix: "mcp-proxy:".to_owned(),
            heartbeat: Duration::from_secs(1),
        }
    }

    /// The URL without its password, for logs and `Debug`.
    pub fn redacted_url(&self) -> String {
        match (self.url.find("://"), self.url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}://***@{}", &self.url[..scheme], &self.url[at + 1..])
            }
            _ => self.url.clone(),
        }
    }
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("url", &self.redacted_url())
            .field("prefix", &self.prefix)
            .field("heartbeat", &self.heartbeat)
            .finish()
    }
}
