//! `GET /channel`: the reverse channel. One WebSocket per reverse client carries items down,
//! against the credit the client grants, and answers up, instead of a long poll and a
//! `POST /response` per call (docs/protocol.md, "GET /channel").
//!
//! The channel is a [`Delivery`] held for the connection's life: it counts as one held poll
//! for liveness, and a channel that breaks is a dropped poll (suspect for the grace). Items wait
//! in the broker until the channel has credit and room to send them, so withdrawal and
//! failover still apply to them; an item is handed over when its frame enters the send queue.

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use mcp_protocol::channel::{self, Down, Up};
use mcp_protocol::wire::{ResponseEnvelope, SessionIdKind, WireErrorCode};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::auth::Grant;
use crate::broker::{Broker, Delivery, Requester, Short};
use crate::guard::Guard;
use crate::peer::ClientAddr;
use crate::state::AppState;
use crate::Error;

/// Frames that may wait to be written to one channel; items are claimed only while there is
/// room, so a slow reader leaves its work in the broker.
pub(crate) const CHANNEL_QUEUE: usize = 256;

/// Bytes read from a channel's socket at a time (and held while it idles): 2 KiB holds a
/// small answer's frame whole; 4 KiB cost every idle channel 2 KiB more resident and no less
/// CPU per 1 KiB call (docs/performance.md).
const CHANNEL_READ_BUFFER: usize = 2 * 1024;

/// How often the proxy pings a channel.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(20);

/// A channel that sends nothing (frame, ping, pong) for this long is dead and closed.
pub(crate) const SILENCE_LIMIT: Duration = Duration::from_secs(60);

/// Answers not yet acked are acked within this.
const ACK_WITHIN: Duration = Duration::from_secs(1);

/// How long one wait for an item lasts before it is renewed (the channel has no hold).
const WAIT: Duration = Duration::from_secs(3600);

/// The close of a channel whose registration is gone: the client registers again.
const GONE: (u16, &str) = (4004, "unknown session: register again");

/// How long the last frames (a close) may take to be written before the socket is dropped.
const LAST_WRITE: Duration = Duration::from_secs(5);

/// Checks the upgrade, opens the registration's delivery, and serves the channel.
pub(crate) async fn channel(
    State(state): State<AppState>,
    grant: Option<Extension<Grant>>,
    address: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Error> {
    let config = state.config();
    // Browsers apply no CORS to WebSockets: a page must not drive a channel.
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if origin.is_some() && !Guard::new(config, false).allows(None, origin) {
        info!("channel refused: Origin not allowed");
        return Err(Error::OriginRefused);
    }
    let upgrade = upgrade
        .map_err(|e| Error::InvalidQuery(format!("not a WebSocket upgrade: {}", e.body_text())))?;
    let id = headers
        .get(channel::SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::InvalidQuery("missing Mcp-Reverse-Session-Id".into()))?;
    match SessionIdKind::of(id) {
        None => return Err(Error::UnknownSession),
        Some(SessionIdKind::Legacy) => {
            return Err(Error::InvalidBody(
                "the channel is for modern registrations (register with capabilities)".into(),
            ))
        }
        Some(SessionIdKind::Modern) => {}
    }
    let who = Requester {
        token: grant.map(|Extension(g)| g.id),
        address: address.map(|Extension(ClientAddr(ip))| ip),
    };
    let mut delivery = state.broker.open_delivery(id, who, false)?;
    let replaced = delivery.become_channel()?;
    let limit = config.max_body_bytes + channel::FRAME_SLACK_BYTES;
    let channel = Channel {
        broker: state.broker.clone(),
        session: id.to_owned(),
        delivery,
        replaced,
        max_frame_bytes: config.max_body_bytes,
    };
    info!(session = %Short(id), "channel opened");
    Ok(upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        // tungstenite zero-fills its whole read buffer on the first read (128 KiB by default):
        // resident memory for every idle channel. Larger frames grow it as they come.
        .read_buffer_size(CHANNEL_READ_BUFFER)
        .on_upgrade(move |socket| channel.serve(socket)))
}

/// One open channel, before its socket is split.
struct Channel {
    broker: Broker,
    session: String,
    delivery: Delivery,
    /// Cancelled when a newer channel of the same registration replaces this one.
    replaced: CancellationToken,
    max_frame_bytes: usize,
}

/// How a channel ended.
enum Ending {
    /// In good order: the registration stays healthy while its client reconnects. With the
    /// close frame to send, unless the client sent one (its close was answered already).
    Clean(Option<(u16, &'static str)>),
    /// The connection broke or went silent: a dropped poll (suspect for the grace).
    Broken(&'static str),
}

/// What the reader loop keeps between frames.
struct Counts {
    /// Items the client still takes.
    credit: u32,
    /// Answer frames taken, and how many of them were acked.
    answers: u64,
    acked: u64,
    /// When the unacked answers must be acked at the latest.
    ack_by: Option<Instant>,
}

impl Channel {
    async fn serve(self, socket: WebSocket) {
        let Channel {
            broker,
            session,
            mut delivery,
            replaced,
            max_frame_bytes,
        } = self;
        let (sink, mut stream) = socket.split();
        let (tx, rx) = mpsc::channel(CHANNEL_QUEUE);
        let writer = tokio::spawn(write(sink, rx));
        let hello = Down::Hello {
            max_frame_bytes: max_frame_bytes as u64,
        };
        let _ = tx.try_send(control(&hello));
        let stopping = delivery.stopping();
        let ending = run(
            &broker,
            &session,
            &mut delivery,
            &mut stream,
            &tx,
            &replaced,
            &stopping,
        )
        .await;
        match ending {
            Ending::Clean(close) => {
                debug!(session = %Short(&session), "channel closed");
                if let Some((code, reason)) = close {
                    let frame = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    let _ = tx.try_send(Message::Close(Some(frame)));
                }
                delivery.close(false);
            }
            Ending::Broken(why) => {
                info!(session = %Short(&session), why, "channel broken");
                drop(delivery);
            }
        }
        drop(tx);
        if tokio::time::timeout(LAST_WRITE, writer).await.is_err() {
            debug!("channel's last frames not written in time; dropped");
        }
    }
}

/// Reads the client's frames and sends it items until the channel ends.
async fn run(
    broker: &Broker,
    session: &str,
    delivery: &mut Delivery,
    stream: &mut SplitStream<WebSocket>,
    tx: &mpsc::Sender<Message>,
    replaced: &CancellationToken,
    stopping: &CancellationToken,
) -> Ending {
    let mut counts = Counts {
        credit: 0,
        answers: 0,
        acked: 0,
        ack_by: None,
    };
    let mut heard = Instant::now();
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        let ack_by = counts.ack_by;
        tokio::select! {
            biased;
            _ = replaced.cancelled() => {
                return Ending::Clean(Some(if delivery.is_live() {
                    (4000, "replaced")
                } else {
                    GONE
                }))
            }
            _ = stopping.cancelled() => return Ending::Clean(Some((1001, "proxy shutting down"))),
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else {
                    return Ending::Broken("connection lost");
                };
                heard = Instant::now();
                match frame {
                    Message::Text(text) => {
                        if let Err(ending) = take(broker, session, text.as_bytes(), tx, &mut counts) {
                            return ending;
                        }
                    }
                    Message::Binary(_) => {
                        return Ending::Clean(Some((1003, "only text frames are taken")))
                    }
                    Message::Close(_) => return Ending::Clean(None),
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            claimed = delivery.next(WAIT), if counts.credit > 0 && tx.capacity() > 1 => {
                match claimed {
                    Ok(Some(claimed)) => {
                        // Serializing our own item cannot fail; were it to, dropping `claimed`
                        // requeues it.
                        let Ok(text) = serde_json::to_string(claimed.item()) else { continue };
                        if tx.try_send(Message::Text(text.into())).is_ok() {
                            // The hand-over: from here on the item is never queued again.
                            claimed.deliver();
                            counts.credit -= 1;
                        }
                    }
                    // The wait was renewed, or the broker is stopping (the branch above ends).
                    Ok(None) => {}
                    Err(_) => return Ending::Clean(Some(GONE)),
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() >= SILENCE_LIMIT {
                    return Ending::Broken("silent past the limit");
                }
                let _ = tx.try_send(Message::Ping(Bytes::new()));
            }
            _ = sleep_until(ack_by), if ack_by.is_some() => ack(tx, &mut counts),
        }
    }
}

/// Takes one text frame: a credit grant or an answer. `Err` ends the channel.
fn take(
    broker: &Broker,
    session: &str,
    frame: &[u8],
    tx: &mpsc::Sender<Message>,
    counts: &mut Counts,
) -> Result<(), Ending> {
    // Answers are the hot path: read as one first; only what is not an answer is read again,
    // as a control frame (whose members may come in any order).
    let envelope = match serde_json::from_slice::<ResponseEnvelope>(frame) {
        Ok(envelope) => envelope,
        Err(not_answer) => {
            match serde_json::from_slice::<Up>(frame) {
                Ok(Up::Credit { items }) if (1..=channel::MAX_CREDIT_GRANT).contains(&items) => {
                    counts.credit = (counts.credit + items).min(channel::MAX_CREDIT);
                }
                Ok(Up::Credit { .. }) => {
                    complain(tx, "a credit frame grants 1 to 1024 items".into())
                }
                Err(_) if channel::is_control_up(frame) => {
                    complain(tx, "unknown or malformed control frame".into())
                }
                Err(_) => complain(tx, format!("not an answer: {not_answer}")),
            }
            return Ok(());
        }
    };
    counts.answers += 1;
    match broker.respond(session, envelope) {
        Ok(_) => {}
        Err(Error::UnknownSession) => return Err(Ending::Clean(Some(GONE))),
        // Nobody waits for it (timed out, client gone): dropped, as `/response` would.
        Err(e) => debug!(session = %Short(session), error = %e, "channel answer not taken"),
    }
    if counts.answers - counts.acked >= channel::ACK_EVERY {
        ack(tx, counts);
    } else if counts.ack_by.is_none() {
        counts.ack_by = Some(Instant::now() + ACK_WITHIN);
    }
    Ok(())
}

/// Acks every answer taken so far (if the send queue is full, the next answer retries).
fn ack(tx: &mpsc::Sender<Message>, counts: &mut Counts) {
    let frame = control(&Down::Ack {
        answers: counts.answers,
    });
    if tx.try_send(frame).is_ok() {
        counts.acked = counts.answers;
        counts.ack_by = None;
    }
}

/// Tells the client an up frame could not be read; the channel stays open.
fn complain(tx: &mpsc::Sender<Message>, message: String) {
    debug!(%message, "unreadable channel frame");
    let _ = tx.try_send(control(&Down::Error {
        error: WireErrorCode::InvalidBody,
        message,
    }));
}

fn control(frame: &Down) -> Message {
    Message::Text(
        serde_json::to_string(frame)
            .expect("control frames serialize")
            .into(),
    )
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes queued frames, several per flush when they come together, until the queue closes.
async fn write(mut sink: SplitSink<WebSocket, Message>, mut rx: mpsc::Receiver<Message>) {
    while let Some(first) = rx.recv().await {
        if sink.feed(first).await.is_err() {
            return;
        }
        while let Ok(more) = rx.try_recv() {
            if sink.feed(more).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}
