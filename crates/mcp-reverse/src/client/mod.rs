//! [`ReverseClient`]: registers with the proxy, keeps polls open, hands each item to the
//! server, and posts the answers back. Here: the client, its lifecycle and registering; the
//! polls and what their items become are in `poll`, the posting in `post`.

mod channel;
mod gather;
mod handshake;
mod poll;
mod post;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcp_protocol::jsonrpc::Message;
use mcp_protocol::wire::{
    self, RegisterRequest, RegisterResponse, RegistrationCapabilities, WireError,
};
use mcp_server::Server;

use crate::service::{Service, SessionSink};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{StatusCode, Url};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::redact::http_cause;
use crate::{Configuration, Error};

/// How many session messages may wait for a registration before new ones are dropped.
const SESSION_QUEUE: usize = 1024;

/// Deadline of one registration, answer or deregistration round trip.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one [`Server`] through the proxy: the seed's `mcp::reverse_client`.
///
/// ```no_run
/// # async fn run() -> Result<(), mcp_reverse::Error> {
/// use mcp_reverse::{Configuration, ReverseClient};
/// use mcp_server::{Server, ServerConfig};
///
/// let server = Server::new(ServerConfig::new("Reverse MCP Server", "1.0.0"));
/// let reverse = ReverseClient::new(server, Configuration::new("http://localhost:9000"))?;
/// reverse.run().await // serves until `reverse.shutdown_token()` is cancelled
/// # }
/// ```
#[derive(Clone)]
pub struct ReverseClient {
    inner: Arc<Inner>,
}

struct Inner {
    service: Arc<dyn Service>,
    config: Configuration,
    http: reqwest::Client,
    register_url: Url,
    poll_url: Url,
    response_url: Url,
    /// `ws://` or `wss://` address of the channel.
    channel_url: Url,
    /// How the channel connects (TLS roots for `wss://`).
    ws_tls: Option<Arc<rustls::ClientConfig>>,
    /// The open channel answers go up through, if any. A std mutex: no await under it.
    channel: Mutex<Option<Arc<channel::ChannelUp>>>,
    /// Cancelled to stop serving (graceful shutdown).
    shutdown: CancellationToken,
    /// What was last logged about the link, so each change is logged once, not every retry.
    link: Mutex<Link>,
    /// The registration session messages are posted under; `None` while (re)registering.
    current: Mutex<Option<Registration>>,
    /// Session messages from the service, taken by [`ReverseClient::run`] to post them in
    /// order. A std mutex: taken once, never held across an await.
    session_rx: Mutex<Option<mpsc::Receiver<(String, Message)>>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Starting,
    Up,
    Down,
}

/// A handle on a reverse client running in the background (the seed's non-blocking start).
#[derive(Debug)]
pub struct ReverseHandle {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), Error>>,
}

impl ReverseHandle {
    /// Stops taking requests, finishes those in flight (bounded by the configured grace),
    /// deregisters, and returns how the client ended.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits for the client to end (it ends by itself only on a fatal error).
    pub async fn wait(self) -> Result<(), Error> {
        match self.task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Ok(()),
        }
    }

    /// Whether the client has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// One registration: the proxy's session id for it, and the client sessions it carries.
#[derive(Clone)]
struct Registration {
    id: Arc<str>,
    /// Client sessions seen in this registration's requests and not closed since: when the
    /// registration is lost they go with it, and the service closes them. A std mutex: no
    /// await under it. Bounded by the proxy's own limit on client sessions per registration.
    sessions: Arc<Mutex<HashSet<String>>>,
    /// Final answers waiting to go several to a post, for a registration granted several
    /// items per poll (which also takes several answers per post).
    answers: Arc<gather::Gather>,
}

impl Registration {
    /// A short prefix for logs: the id is the registration's only credential.
    fn short(&self) -> &str {
        crate::redact::short_id(&self.id)
    }

    /// The proxy granted several items per poll answer: every poll answer is a batch.
    fn batched(&self) -> bool {
        self.answers.enabled()
    }
}

impl ReverseClient {
    /// A reverse client for `server` with `config`; checks the configuration, connects nothing.
    pub fn new(server: Server, config: Configuration) -> Result<ReverseClient, Error> {
        ReverseClient::with_service(server, config)
    }

    /// A reverse client for any [`Service`], such as a bridge (feature `bridge`) to a stdio or HTTP
    /// MCP server; checks the configuration, connects nothing.
    pub fn with_service(
        service: impl Service,
        config: Configuration,
    ) -> Result<ReverseClient, Error> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: config.proxy_url.clone(),
            reason: reason.to_owned(),
        };
        let base = Url::parse(&config.proxy_url).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if let Some(name) = &config.server_name {
            if !wire::is_valid_pool_name(name) {
                return Err(Error::InvalidConfig(format!(
                    "server name {name:?} must match [A-Za-z0-9._-]{{1,64}}"
                )));
            }
        }
        if config.poll_timeout_seconds == 0 {
            return Err(Error::InvalidConfig(
                "poll_timeout_seconds must be at least 1".into(),
            ));
        }
        let join = |path: &str| base.join(path).map_err(|e| invalid(&e.to_string()));
        let (register_url, poll_url, response_url) = (
            join(&config.register_endpoint)?,
            join(&config.poll_endpoint)?,
            join(&config.response_endpoint)?,
        );

        let mut headers = HeaderMap::new();
        if let Some(token) = &config.auth_token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                Error::InvalidConfig("the token is not a valid header value".into())
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(config.held_polls as usize * 2 + 8);
        let http = crate::config::trust_pem(http, config.ca_cert_pem.as_deref())?.build()?;
        let channel_url = channel::channel_url(&base).map_err(|e| invalid(&e))?;
        let ws_tls = if channel_url.scheme() == "wss" {
            Some(channel::connector(config.ca_cert_pem.as_deref())?)
        } else {
            None
        };
        let service: Arc<dyn Service> = Arc::new(service);
        let (session_tx, session_rx) = mpsc::channel(SESSION_QUEUE);
        let sink: SessionSink = Arc::new(move |session: &str, message: Message| {
            let taken = session_tx.try_send((session.to_owned(), message)).is_ok();
            if !taken {
                debug!("session message dropped: too many waiting, or the client stopped");
            }
            taken
        });
        service.set_session_sink(sink);
        Ok(ReverseClient {
            inner: Arc::new(Inner {
                service,
                config,
                http,
                register_url,
                poll_url,
                response_url,
                channel_url,
                ws_tls,
                channel: Mutex::new(None),
                shutdown: CancellationToken::new(),
                link: Mutex::new(Link::Starting),
                current: Mutex::new(None),
                session_rx: Mutex::new(Some(session_rx)),
            }),
        })
    }

    /// The token that stops [`ReverseClient::run`] gracefully when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Serves until Ctrl-C or SIGTERM, then shuts down gracefully: what a `main` wants.
    pub async fn run_until_signal(&self) -> Result<(), Error> {
        let token = self.shutdown_token();
        let watcher = tokio::spawn(async move {
            crate::shutdown_signal().await;
            info!("stop requested");
            token.cancel();
        });
        let result = self.run().await;
        watcher.abort();
        result
    }

    /// Runs in the background; the handle stops it (the seed's `start(false)`).
    pub fn spawn(self) -> ReverseHandle {
        let shutdown = self.shutdown_token();
        let task = tokio::spawn(async move { self.run().await });
        ReverseHandle { shutdown, task }
    }

    /// Serves until [`ReverseClient::shutdown_token`] is cancelled (the seed's `start(true)`):
    /// registers (again after a proxy restart), keeps the configured number of polls open,
    /// and runs every request concurrently. Returns `Err` only when the proxy refuses the
    /// registration for good (a bad name or token); everything else is retried.
    pub async fn run(&self) -> Result<(), Error> {
        let inner = &self.inner;
        let handlers = TaskTracker::new();
        // Cancelled when the shutdown grace is over: handlers still running are abandoned.
        let hard_stop = CancellationToken::new();
        let mut backoff = Backoff::new(Duration::from_secs(inner.config.retry_delay_seconds));
        let stop_sessions = CancellationToken::new();
        let _stop_sessions = stop_sessions.clone().drop_guard();
        let session_rx = inner.session_rx.lock().expect("session_rx lock").take();
        if let Some(rx) = session_rx {
            tokio::spawn(inner.clone().post_session_messages(rx, stop_sessions));
        }
        loop {
            let registration = tokio::select! {
                _ = inner.shutdown.cancelled() => break,
                r = inner.register(&mut backoff) => match r? {
                    Some(registration) => registration,
                    None => break,
                },
            };
            *inner.current.lock().expect("current lock") = Some(registration.clone());
            let lost = CancellationToken::new();
            let stop_polls = CancellationToken::new();
            let delivery = tokio::spawn(inner.clone().deliver(
                registration.clone(),
                stop_polls.clone(),
                lost.clone(),
                handlers.clone(),
                hard_stop.clone(),
            ));
            let shutting_down = tokio::select! {
                _ = inner.shutdown.cancelled() => true,
                _ = lost.cancelled() => false,
            };
            stop_polls.cancel();
            let _ = delivery.await;
            if !shutting_down {
                *inner.current.lock().expect("current lock") = None;
                inner.close_sessions_of(&registration);
            }
            if shutting_down {
                info!(
                    in_flight = handlers.len(),
                    "shutting down: finishing requests in flight"
                );
                handlers.close();
                if tokio::time::timeout(inner.config.shutdown_grace, handlers.wait())
                    .await
                    .is_err()
                {
                    warn!(
                        abandoned = handlers.len(),
                        "shutdown grace over; abandoning requests still running"
                    );
                    hard_stop.cancel();
                }
                *inner.current.lock().expect("current lock") = None;
                inner.deregister(&registration).await;
                return Ok(());
            }
            info!(
                registration = registration.short(),
                "the proxy no longer knows this registration; registering again"
            );
        }
        // Cancelled before any registration succeeded.
        Ok(())
    }
}

impl Inner {
    /// The proxy lost `registration`, and its client sessions with it (their clients get 404
    /// and initialize again): the service drops their state (per-client children, upstream
    /// sessions) now, before registering again, rather than keep it forever.
    fn close_sessions_of(&self, registration: &Registration) {
        let sessions: Vec<String> = registration
            .sessions
            .lock()
            .expect("sessions lock")
            .drain()
            .collect();
        if !sessions.is_empty() {
            info!(
                registration = registration.short(),
                sessions = sessions.len(),
                "closing the client sessions of the lost registration"
            );
        }
        for session in &sessions {
            self.service.close_session(session);
        }
    }

    fn link_up(&self) {
        let mut link = self.link.lock().expect("link lock");
        if *link == Link::Down {
            info!(proxy = %self.config.proxy_url, "connection to the proxy restored");
        }
        *link = Link::Up;
    }

    fn link_down(&self, why: &dyn std::fmt::Display) {
        let mut link = self.link.lock().expect("link lock");
        if *link != Link::Down {
            warn!(proxy = %self.config.proxy_url, "cannot reach the proxy ({why}); retrying with backoff");
        }
        *link = Link::Down;
    }

    /// Registers, retrying with backoff until the proxy accepts (or refuses for good);
    /// `None` when shut down meanwhile.
    async fn register(&self, backoff: &mut Backoff) -> Result<Option<Registration>, Error> {
        let body = RegisterRequest::modern(
            self.config.server_name.clone(),
            RegistrationCapabilities {
                client_sessions: true,
                server_messages: true,
                held_polls: self.config.held_polls,
                poll_items: self.config.poll_items,
                protocol_versions: mcp_protocol::version::SUPPORTED
                    .iter()
                    .map(|v| v.to_string())
                    .collect(),
            },
        );
        loop {
            let sent = self
                .http
                .post(self.register_url.clone())
                .timeout(CALL_TIMEOUT)
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status() == StatusCode::OK => {
                    match resp.json::<RegisterResponse>().await {
                        Ok(answer) => {
                            self.link_up();
                            backoff.reset();
                            let registration = Registration {
                                id: answer.session_id.into(),
                                sessions: Arc::default(),
                                answers: Arc::new(gather::Gather::new(
                                    answer.poll_items.unwrap_or(1) as usize,
                                )),
                            };
                            info!(
                                proxy = %self.config.proxy_url,
                                pool = self.config.server_name.as_deref().unwrap_or("(default)"),
                                registration = registration.short(),
                                polls = self.config.held_polls,
                                "registered with the proxy"
                            );
                            return Ok(Some(registration));
                        }
                        Err(e) => self.link_down(&format!(
                            "unreadable registration answer: {}",
                            http_cause(e)
                        )),
                    }
                }
                Ok(resp)
                    if matches!(
                        resp.status(),
                        StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                    ) =>
                {
                    let status = resp.status().as_u16();
                    let message = match resp.json::<WireError>().await {
                        Ok(e) => e.message.unwrap_or_else(|| format!("{:?}", e.error)),
                        Err(_) => "no explanation given".to_owned(),
                    };
                    error!(status, %message, "the proxy refused the registration");
                    return Err(Error::Rejected { status, message });
                }
                Ok(resp) => {
                    self.link_down(&format!("registration answered HTTP {}", resp.status()))
                }
                Err(e) => self.link_down(&http_cause(e)),
            }
            if !self.pause(backoff, &self.shutdown).await {
                return Ok(None);
            }
        }
    }

    /// Sleeps for the next backoff step; `false` if `stop` was cancelled meanwhile.
    async fn pause(&self, backoff: &mut Backoff, stop: &CancellationToken) -> bool {
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(backoff.next_delay()) => true,
        }
    }
}
