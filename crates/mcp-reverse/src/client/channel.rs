//! The reverse channel (`GET /channel`, docs/protocol.md): one WebSocket that brings items
//! down, against the credit this client grants, and takes answers up; and how a registration
//! is served by it or by long polls ([`Transport`]), falling back and coming back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use mcp_protocol::channel::{self as wire, Down, Up};
use reqwest::Url;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::handshake::{self, Opening, Socket};
use super::{Inner, Registration};
use crate::backoff::Backoff;
use crate::{Error, Transport};

/// Credit granted when a channel opens; more is granted as half of it is used.
const CREDIT: u32 = 256;

/// Frames that may wait to be written to the channel before answers go by HTTP instead.
const UP_QUEUE: usize = 1024;

/// Final answers kept until the proxy acks them (it acks every 32): past this the oldest
/// are forgotten, as an ack that never comes is a proxy that is not listening anyway.
const MAX_UNACKED: usize = 4096;

/// How long opening a channel (TCP, TLS, upgrade) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Channels that break within this long of opening count towards falling back.
const QUICK_BREAK: Duration = Duration::from_secs(60);

/// Quick breaks in a row after which `auto` falls back to long polling.
const QUICK_BREAKS: u32 = 3;

/// How long `auto` long-polls after the channel was refused or kept breaking.
const FALLBACK_PERIOD: Duration = Duration::from_secs(300);

/// How long to long-poll after a cluster instance that is not the home refused the channel.
const MISDIRECTED_RETRY: Duration = Duration::from_secs(1);

/// The channel's sending side while it is open: answers go up through it.
pub(super) struct ChannelUp {
    registration: Arc<str>,
    tx: mpsc::Sender<Message>,
    /// Answers above this go by `POST /response` (the proxy's frame limit, and ours).
    max_inline: AtomicUsize,
    ledger: Mutex<Ledger>,
}

/// Answer frames sent, and the final answers among them not yet acked.
#[derive(Default)]
struct Ledger {
    sent: u64,
    unacked: VecDeque<(u64, Utf8Bytes)>,
}

impl ChannelUp {
    /// Sends an answer body over the channel of `registration`; gives it back when it must go
    /// by HTTP instead (another registration's, too large, or the channel is full or gone).
    pub(super) fn send(
        &self,
        registration: &str,
        body: String,
        is_final: bool,
    ) -> Result<(), String> {
        if *self.registration != *registration
            || body.len() > self.max_inline.load(Ordering::Relaxed)
        {
            return Err(body);
        }
        let text = Utf8Bytes::from(body);
        let mut ledger = self.ledger.lock().expect("ledger lock");
        if let Err(refused) = self.tx.try_send(Message::Text(text.clone())) {
            let Message::Text(text) = refused.into_inner() else {
                unreachable!("a text frame was sent")
            };
            return Err(text.as_str().to_owned());
        }
        ledger.sent += 1;
        if is_final {
            if ledger.unacked.len() == MAX_UNACKED {
                ledger.unacked.pop_front();
            }
            let sent = ledger.sent;
            ledger.unacked.push_back((sent, text));
        }
        Ok(())
    }

    fn acked(&self, answers: u64) {
        let mut ledger = self.ledger.lock().expect("ledger lock");
        while ledger.unacked.front().is_some_and(|(n, _)| *n <= answers) {
            ledger.unacked.pop_front();
        }
    }
}

/// How a channel ended.
enum End {
    /// Shutdown or the registration's end: nothing more to do.
    Stopped,
    /// The proxy no longer knows the registration.
    Lost,
    /// The connection broke or was closed; reconnect.
    Broken(String),
}

/// Why a channel did not open.
enum Refusal {
    /// The proxy does not take channels here (no route, 400, 403...): long-poll.
    Refused(String),
    /// A cluster instance that is not the registration's home: retry soon.
    Misdirected,
    /// The registration is unknown: register again.
    UnknownSession,
    /// Network trouble or an overloaded proxy: retry with backoff.
    Unreachable(String),
}

/// The channel's URL (`ws://` or `wss://`) on the proxy at `base`.
pub(super) fn channel_url(base: &Url) -> Result<Url, String> {
    let mut url = base.join(wire::CHANNEL_PATH).map_err(|e| e.to_string())?;
    let scheme = if base.scheme() == "https" {
        "wss"
    } else {
        "ws"
    };
    url.set_scheme(scheme)
        .map_err(|()| "cannot make a WebSocket URL".to_owned())?;
    Ok(url)
}

/// The TLS connector of `wss://`: the public roots plus `pem`'s certificates, ring crypto.
pub(super) fn connector(pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let bad = |e: &dyn std::fmt::Display| Error::InvalidConfig(format!("CA certificate: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidConfig(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Inner {
    /// Serves `registration` until `stop` or until it is `lost`: over the channel, long
    /// polls, or the one then the other, as the configured transport says.
    pub(super) async fn deliver(
        self: Arc<Self>,
        registration: Registration,
        stop: CancellationToken,
        lost: CancellationToken,
        handlers: TaskTracker,
        hard_stop: CancellationToken,
    ) {
        let transport = self.config.transport;
        if transport == Transport::Poll {
            return self
                .poll_while(&registration, &stop, &lost, &handlers, &hard_stop, None)
                .await;
        }
        let mut backoff = Backoff::new(Duration::from_secs(self.config.retry_delay_seconds));
        let mut quick_breaks = 0;
        while !stop.is_cancelled() && !lost.is_cancelled() {
            let opened = tokio::select! {
                _ = stop.cancelled() => return,
                opened = self.open_channel(&registration) => opened,
            };
            let fallback = match opened {
                Ok(socket) => {
                    backoff.reset();
                    self.link_up();
                    let since = Instant::now();
                    match self
                        .run_channel(socket, &registration, &stop, &handlers, &hard_stop)
                        .await
                    {
                        End::Stopped => return,
                        End::Lost => return lost.cancel(),
                        End::Broken(why) => {
                            quick_breaks = if since.elapsed() < QUICK_BREAK {
                                quick_breaks + 1
                            } else {
                                0
                            };
                            if transport == Transport::Auto && quick_breaks >= QUICK_BREAKS {
                                quick_breaks = 0;
                                warn!(why, "the channel keeps breaking; long polling for a while");
                                Some(FALLBACK_PERIOD)
                            } else {
                                info!(why, "channel broken; reconnecting");
                                None
                            }
                        }
                    }
                }
                Err(Refusal::UnknownSession) => return lost.cancel(),
                Err(Refusal::Misdirected) => {
                    debug!("this proxy instance is not the registration's home; retrying soon");
                    Some(MISDIRECTED_RETRY)
                }
                Err(Refusal::Refused(why)) if transport == Transport::Auto => {
                    warn!(why, "the proxy refused the channel; long polling instead");
                    Some(FALLBACK_PERIOD)
                }
                Err(Refusal::Refused(why) | Refusal::Unreachable(why)) => {
                    self.link_down(&format!("channel: {why}"));
                    if !self.pause(&mut backoff, &stop).await {
                        return;
                    }
                    None
                }
            };
            if let Some(period) = fallback {
                if transport == Transport::Ws {
                    // No polls in `ws` mode: only wait before trying again.
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(period.min(MISDIRECTED_RETRY)) => {}
                    }
                } else {
                    self.poll_while(
                        &registration,
                        &stop,
                        &lost,
                        &handlers,
                        &hard_stop,
                        Some(period),
                    )
                    .await;
                }
            }
        }
    }

    /// Keeps the configured number of polls open until `stop`, `lost`, or `period` is over.
    /// At the end of `period` the polls in flight are not dropped: a poll dropped just as the
    /// proxy hands it an item would lose the item (a relayed one in a cluster all the more),
    /// so each finishes on its own, beside the channel that opens next, and none follows.
    async fn poll_while(
        self: &Arc<Self>,
        registration: &Registration,
        stop: &CancellationToken,
        lost: &CancellationToken,
        handlers: &TaskTracker,
        hard_stop: &CancellationToken,
        period: Option<Duration>,
    ) {
        let until = stop.child_token();
        let wind_down = CancellationToken::new();
        let polls: Vec<_> = (0..self.config.held_polls.max(1))
            .map(|_| {
                tokio::spawn(self.clone().poll_loop(
                    registration.clone(),
                    until.clone(),
                    wind_down.clone(),
                    lost.clone(),
                    handlers.clone(),
                    hard_stop.clone(),
                ))
            })
            .collect();
        let over = async {
            match period {
                Some(period) => tokio::time::sleep(period).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = until.cancelled() => {}
            _ = lost.cancelled() => {}
            _ = over => {
                // Detached: each ends after its poll in flight (or at `stop`).
                wind_down.cancel();
                return;
            }
        }
        // Stopping or lost: the polls in flight are dropped (the proxy puts back an item not
        // yet handed over; a lost registration has nothing left to hand over).
        until.cancel();
        for poll in polls {
            let _ = poll.await;
        }
    }

    /// Opens the channel of `registration`.
    async fn open_channel(&self, registration: &Registration) -> Result<Socket, Refusal> {
        let authorization = self
            .config
            .auth_token
            .as_ref()
            .map(|t| format!("Bearer {t}"));
        let mut headers = vec![(wire::SESSION_HEADER, &*registration.id)];
        if let Some(authorization) = &authorization {
            headers.push(("authorization", authorization));
        }
        let open = handshake::open(&self.channel_url, self.ws_tls.as_ref(), &headers);
        let answer = match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
            Err(_) => return Err(Refusal::Unreachable("opening timed out".into())),
            Ok(answer) => answer,
        };
        match answer {
            Ok(socket) => Ok(socket),
            Err(Opening::Refused { status, body }) => {
                let code = serde_json::from_slice::<mcp_protocol::wire::WireError>(&body)
                    .ok()
                    .map(|e| e.error);
                use mcp_protocol::wire::WireErrorCode as Code;
                Err(match (status, code) {
                    (404, Some(Code::UnknownSession)) => Refusal::UnknownSession,
                    (421, _) => Refusal::Misdirected,
                    (429, _) | (500..=599, _) => {
                        Refusal::Unreachable(format!("channel answered HTTP {status}"))
                    }
                    (404, _) => Refusal::Refused("HTTP 404: this proxy has no channel".into()),
                    _ => Refusal::Refused(format!("channel answered HTTP {status}")),
                })
            }
            Err(Opening::Failed(e)) => Err(Refusal::Unreachable(e)),
        }
    }

    /// Runs an open channel: takes items, grants credit, pings; returns how it ended.
    async fn run_channel(
        self: &Arc<Self>,
        socket: Socket,
        registration: &Registration,
        stop: &CancellationToken,
        handlers: &TaskTracker,
        hard_stop: &CancellationToken,
    ) -> End {
        let (mut sink, mut stream) = socket.split();
        let (tx, mut rx) = mpsc::channel::<Message>(UP_QUEUE);
        let writer = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let closing = matches!(first, Message::Close(_));
                if sink.feed(first).await.is_err() {
                    return;
                }
                while let Ok(more) = rx.try_recv() {
                    if sink.feed(more).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() || closing {
                    return;
                }
            }
        });
        let up = Arc::new(ChannelUp {
            registration: registration.id.clone(),
            tx: tx.clone(),
            max_inline: AtomicUsize::new(wire::INLINE_ANSWER_MAX),
            ledger: Mutex::default(),
        });
        let _ = tx.try_send(credit(CREDIT));
        *self.channel.lock().expect("channel lock") = Some(up.clone());
        info!(registration = registration.short(), "channel open");
        let ping_every = self.config.ping_interval;
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let mut heard = Instant::now();
        let mut taken = 0;
        let end = loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    let _ = tx.try_send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "stopping".into(),
                    })));
                    break End::Stopped;
                }
                frame = stream.next() => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(e)) => break End::Broken(e.to_string()),
                        None => break End::Broken("connection closed".into()),
                    };
                    heard = Instant::now();
                    match frame {
                        Message::Text(text) if wire::is_control_down(text.as_bytes()) => {
                            match serde_json::from_str::<Down>(&text) {
                                Ok(Down::Hello { max_frame_bytes }) => {
                                    let max = usize::try_from(max_frame_bytes).unwrap_or(usize::MAX);
                                    up.max_inline.store(max.min(wire::INLINE_ANSWER_MAX), Ordering::Relaxed);
                                }
                                Ok(Down::Ack { answers }) => up.acked(answers),
                                Ok(Down::Error { message, .. }) => {
                                    warn!(%message, "the proxy could not read a frame we sent")
                                }
                                Err(e) => warn!("unreadable control frame from the proxy: {e}"),
                            }
                        }
                        Message::Text(text) => {
                            self.take_item(registration, text.as_bytes(), handlers, hard_stop).await;
                            taken += 1;
                            if taken >= CREDIT / 2 {
                                let _ = tx.try_send(credit(taken));
                                taken = 0;
                            }
                        }
                        Message::Close(frame) => {
                            let (code, reason) = frame
                                .map(|f| (u16::from(f.code), f.reason.to_string()))
                                .unwrap_or((1005, String::new()));
                            break if code == 4004 {
                                End::Lost
                            } else {
                                End::Broken(format!("closed by the proxy ({code} {reason})"))
                            };
                        }
                        Message::Binary(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
                _ = ping.tick() => {
                    if heard.elapsed() >= ping_every * 2 {
                        break End::Broken("the proxy went silent".into());
                    }
                    let _ = tx.try_send(Message::Ping(Default::default()));
                }
            }
        };
        {
            let mut current = self.channel.lock().expect("channel lock");
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &up)) {
                *current = None;
            }
        }
        drop(tx);
        match &end {
            End::Stopped => {
                let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
            }
            End::Lost | End::Broken(_) => writer.abort(),
        }
        if let End::Broken(_) = end {
            self.repost_unacked(registration, &up);
        }
        end
    }

    /// Posts again by HTTP the final answers a broken channel may have lost: the proxy
    /// answers a repeat of one that landed with `duplicate`, so none is delivered twice.
    fn repost_unacked(self: &Arc<Self>, registration: &Registration, up: &ChannelUp) {
        let unacked = std::mem::take(&mut up.ledger.lock().expect("ledger lock").unacked);
        if unacked.is_empty() {
            return;
        }
        debug!(answers = unacked.len(), "posting unacked answers again");
        let inner = self.clone();
        let registration = registration.clone();
        tokio::spawn(async move {
            for (_, body) in unacked {
                inner
                    .post_body(&registration, body.as_str().to_owned())
                    .await;
            }
        });
    }
}

fn credit(items: u32) -> Message {
    let frame = serde_json::to_string(&Up::Credit { items }).expect("credit frames serialize");
    Message::Text(frame.into())
}
