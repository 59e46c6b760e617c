//! [`Configuration`]: the seed's options with their defaults, plus ours.

use std::time::Duration;

/// How the reverse client reaches the proxy. The first six fields and their defaults are the
/// seed's `mcp::reverse_client::configuration`.
#[derive(Clone)]
pub struct Configuration {
    /// The proxy's base URL, e.g. `http://proxy.example.com:9000` (required).
    pub proxy_url: String,
    /// Path of registration.
    pub register_endpoint: String,
    /// Path of the long poll.
    pub poll_endpoint: String,
    /// Path where answers are posted.
    pub response_endpoint: String,
    /// How long the proxy may hold each poll, in seconds.
    pub poll_timeout_seconds: u64,
    /// The longest pause between retries, in seconds (backoff grows up to it).
    pub retry_delay_seconds: u64,
    /// The pool to join; `None` joins the proxy's default pool.
    pub server_name: Option<String>,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub auth_token: Option<String>,
    /// PEM certificates (one or more) trusted for an `https://` proxy besides the built-in
    /// public roots: the CA of a private deployment, or a self-signed proxy certificate.
    pub ca_cert_pem: Option<String>,
    /// How many polls to keep open at all times (the proxy's liveness signal).
    pub held_polls: u32,
    /// The most items to take in one poll answer (asked at registration; the proxy grants
    /// at most 64, and an older proxy one): fewer exchanges when requests come in bursts.
    pub poll_items: u32,
    /// How long a graceful shutdown waits for requests in flight before deregistering.
    pub shutdown_grace: Duration,
    /// How items and answers travel: the WebSocket channel, long polling, or the channel
    /// with long polling as the fallback (the default).
    pub transport: Transport,
    /// How often the channel is pinged (keeps load balancers from cutting it idle, and finds
    /// a dead proxy): at most 30 s, below nginx's default 60 s read timeout.
    pub ping_interval: Duration,
}

/// How a reverse client takes its items and posts its answers (docs/protocol.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Transport {
    /// The channel, falling back to long polling where it is refused or keeps breaking.
    #[default]
    Auto,
    /// The channel only (retried with backoff).
    Ws,
    /// Long polling only (`GET /poll`, `POST /response`).
    Poll,
}

impl Configuration {
    /// The defaults, for `proxy_url`.
    pub fn new(proxy_url: impl Into<String>) -> Self {
        Configuration {
            proxy_url: proxy_url.into(),
            register_endpoint: mcp_protocol::wire::REGISTER_PATH.to_owned(),
            poll_endpoint: mcp_protocol::wire::POLL_PATH.to_owned(),
            response_endpoint: mcp_protocol::wire::RESPONSE_PATH.to_owned(),
            poll_timeout_seconds: 30,
            retry_delay_seconds: 5,
            server_name: None,
            auth_token: None,
            ca_cert_pem: None,
            held_polls: 4,
            poll_items: 16,
            shutdown_grace: Duration::from_secs(10),
            transport: Transport::Auto,
            ping_interval: Duration::from_secs(20),
        }
    }

    /// Joins pool `name`.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Authenticates with `token`.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(token.into());
        self
    }

    /// Trusts the PEM certificates in `pem` for an `https://` proxy (besides the public roots).
    pub fn with_ca_cert_pem(mut self, pem: impl Into<String>) -> Self {
        self.ca_cert_pem = Some(pem.into());
        self
    }

    /// Keeps `n` polls open.
    pub fn with_held_polls(mut self, n: u32) -> Self {
        self.held_polls = n;
        self
    }

    /// Takes items and posts answers over `transport`.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Takes at most `n` items per poll answer (1: one item per answer, the seed's shape).
    pub fn with_poll_items(mut self, n: u32) -> Self {
        self.poll_items = n;
        self
    }
}

impl std::fmt::Debug for Configuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Configuration")
            .field("proxy_url", &self.proxy_url)
            .field("register_endpoint", &self.register_endpoint)
            .field("poll_endpoint", &self.poll_endpoint)
            .field("response_endpoint", &self.response_endpoint)
            .field("poll_timeout_seconds", &self.poll_timeout_seconds)
            .field("retry_delay_seconds", &self.retry_delay_seconds)
            .field("server_name", &self.server_name)
            // The token is a credential: never in logs.
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("ca_cert_pem", &self.ca_cert_pem.is_some())
            .field("held_polls", &self.held_polls)
            .field("poll_items", &self.poll_items)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("transport", &self.transport)
            .field("ping_interval", &self.ping_interval)
            .finish()
    }
}

/// Adds the PEM certificates in `pem` to `builder`'s trusted roots.
pub(crate) fn trust_pem(
    builder: reqwest::ClientBuilder,
    pem: Option<&str>,
) -> Result<reqwest::ClientBuilder, crate::Error> {
    let Some(pem) = pem else {
        return Ok(builder);
    };
    let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
        .map_err(|e| crate::Error::InvalidConfig(format!("CA certificate: {e}")))?;
    if certs.is_empty() {
        return Err(crate::Error::InvalidConfig(
            "CA certificate: no PEM CERTIFICATE block found".into(),
        ));
    }
    Ok(certs
        .into_iter()
        .fold(builder, |b, cert| b.add_root_certificate(cert)))
}
