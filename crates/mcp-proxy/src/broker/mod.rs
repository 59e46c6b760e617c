//! The session broker: registrations, their queues, pending requests and pools.
//!
//! The HTTP routes only talk to [`Broker`] through its narrow API (`register`, `deregister`,
//! `poll`, `respond`, `submit`, `open_session`, `sweep`, `shutdown`), so a distributed
//! backend (Redis streams, say) can later stand behind the same methods.
//!
//! All state lives behind one `std::sync::Mutex`: every operation is a few map and queue
//! updates with no `.await` under the lock, so a blocking mutex is both correct and faster
//! than an async one (see mini-redis's `db.rs`). Wake-ups go through `Notify` (held polls)
//! and `oneshot` (waiting clients); nothing sleeps in a loop.

mod pending;
mod pools;
mod queue;
mod registration;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mcp_protocol::jsonrpc::{ErrorCode, ErrorObject, Message, RequestId, Response as RpcResponse};
use mcp_protocol::wire::{
    is_valid_pool_name, to_raw, PollItem, RegisterRequest, ReplyItem, RequestItem,
    ResponseEnvelope, ResponseStatusKind, SessionIdKind,
};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use pending::Waiter;
pub use queue::Claimed;

use pending::{Answered, Pending, Stage, INTERIM_BUFFER};
use pools::{Pool, SessionPin};
use queue::QueueEntry;
pub(crate) use registration::Short;
use registration::{
    new_client_session_id, new_legacy_id, new_modern_id, new_request_id, Registration,
};

use crate::{Config, Error};

/// The MCP protocol version whose requests are probed (answered at once when unsupported).
pub const STATELESS_ERA: &str = "2026-07-28";

/// The in-memory broker; cheap to clone (one `Arc`).
#[derive(Clone, Debug)]
pub struct Broker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    config: Config,
    shutdown: CancellationToken,
}

#[derive(Debug, Default)]
struct State {
    registrations: HashMap<String, Registration>,
    pools: HashMap<String, Pool>,
    pending: HashMap<String, Pending>,
    sessions: HashMap<String, SessionPin>,
    answered: Answered,
    next_generation: u64,
    shutting_down: bool,
}

/// A client message to route to a pool.
#[derive(Debug)]
pub struct Submission {
    /// The pool (`""` is the default pool).
    pub pool: String,
    /// The client session from `Mcp-Session-Id`, if any.
    pub client_session: Option<String>,
    /// The message exactly as the client sent it.
    pub message: Box<RawValue>,
    /// Whether an answer is awaited (a request); `false` for a notification.
    pub expects_answer: bool,
    /// Whether the client can take interim messages (a stream); `false` on `/message`.
    pub streams: bool,
    /// Headers forwarded to modern registrations (lowercase names).
    pub headers: BTreeMap<String, String>,
    /// The request is marked for the stateless era (the era probe applies).
    pub stateless_era: bool,
}

/// Counts for `/healthz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Live registrations of both kinds.
    pub registrations: usize,
    /// Pending requests and notifications.
    pub pending: usize,
}

fn pool_error(pool: &str) -> Error {
    Error::NoServer {
        pool: (!pool.is_empty()).then(|| pool.to_owned()),
    }
}

impl Broker {
    /// A broker with no registrations.
    pub fn new(config: Config) -> Self {
        Broker {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                config,
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock leaves plain maps behind, still consistent enough to serve.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a server and returns its new session id.
    pub fn register(&self, req: &RegisterRequest) -> Result<String, Error> {
        let pool = req.name.clone().unwrap_or_default();
        if req.name.is_some() && !is_valid_pool_name(&pool) {
            return Err(Error::InvalidName);
        }
        let id = if req.is_modern() {
            new_modern_id()
        } else {
            new_legacy_id()
        };
        let mut st = self.lock();
        st.insert_registration(id.clone(), pool, req.capabilities.clone());
        info!(session = %Short(&id), modern = req.is_modern(), pool = req.name.as_deref().unwrap_or("default"), "registered");
        Ok(id)
    }

    /// Removes a registration; its pending requests fail at once and its polls end with 404.
    pub fn deregister(&self, session_id: &str) -> Result<(), Error> {
        SessionIdKind::of(session_id).ok_or(Error::UnknownSession)?;
        let mut st = self.lock();
        if !st.registrations.contains_key(session_id) {
            return Err(Error::UnknownSession);
        }
        st.remove_registration(session_id, "deregistered");
        Ok(())
    }

    /// Holds a poll until an item arrives (`Some`) or the hold ends (`None`).
    ///
    /// `requested` is the poll's `timeout`; the hold is capped by the configuration (legacy
    /// registrations at `poll_timeout`, modern ones at `max_poll_timeout`). An unknown id of
    /// the legacy format is re-adopted as a legacy registration in the default pool.
    pub async fn poll(
        &self,
        session_id: &str,
        requested: Option<Duration>,
    ) -> Result<Option<Claimed>, Error> {
        let kind = SessionIdKind::of(session_id).ok_or(Error::UnknownSession)?;
        let cfg = &self.inner.config;
        let (notify, generation, hold) = {
            let mut st = self.lock();
            if st.shutting_down {
                return Ok(None);
            }
            if !st.registrations.contains_key(session_id) {
                if kind == SessionIdKind::Modern {
                    return Err(Error::UnknownSession);
                }
                st.insert_registration(session_id.to_owned(), String::new(), None);
                info!(session = %Short(session_id), "re-adopted an unknown legacy session");
            }
            let reg = st
                .registrations
                .get_mut(session_id)
                .expect("present or just inserted");
            reg.open_polls += 1;
            reg.last_activity = Instant::now();
            let cap = if reg.is_modern() {
                cfg.max_poll_timeout
            } else {
                cfg.poll_timeout
            };
            let hold = requested.unwrap_or(cfg.poll_timeout).min(cap);
            (reg.notify.clone(), reg.generation, hold)
        };
        let _open = OpenPoll {
            broker: self,
            session_id,
            generation,
        };
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            {
                let mut st = self.lock();
                if st.shutting_down {
                    return Ok(None);
                }
                if let Some(entry) = st.claim(session_id, generation)? {
                    return Ok(Some(Claimed {
                        broker: self.clone(),
                        session_id: session_id.to_owned(),
                        generation,
                        entry: Some(entry),
                    }));
                }
                if hold.is_zero() {
                    return Ok(None);
                }
                // Registered as a waiter before the lock is released, so an item queued in
                // between cannot be missed.
                notified.as_mut().enable();
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
                _ = self.inner.shutdown.cancelled() => return Ok(None),
            }
        }
    }

    /// Takes a server's `/response`: a final answer, an interim or a session message.
    pub fn respond(
        &self,
        session_id: &str,
        envelope: ResponseEnvelope,
    ) -> Result<ResponseStatusKind, Error> {
        let kind = SessionIdKind::of(session_id).ok_or(Error::UnknownSession)?;
        let now = Instant::now();
        let mut st = self.lock();
        let Some(reg) = st.registrations.get_mut(session_id) else {
            return match kind {
                SessionIdKind::Legacy => {
                    info!(session = %Short(session_id), "answer from an unknown legacy session ignored");
                    Ok(ResponseStatusKind::Ignored)
                }
                SessionIdKind::Modern => Err(Error::UnknownSession),
            };
        };
        reg.last_activity = now;
        let modern = reg.is_modern();
        let generation = reg.generation;
        let refuse = |what: &str| {
            if modern {
                debug!(session = %Short(session_id), "{what} for an unknown request");
                Err(Error::UnknownRequest)
            } else {
                info!(session = %Short(session_id), "{what} for an unknown or late request ignored");
                Ok(ResponseStatusKind::Ignored)
            }
        };
        match envelope {
            ResponseEnvelope::Final {
                request_id,
                response,
            } => {
                if st.owns(&request_id, session_id, generation) {
                    let pending = st.take_pending(&request_id).expect("owned above");
                    st.answered
                        .insert(request_id.clone(), session_id.to_owned(), now);
                    if let Some(tx) = pending.waiter {
                        // The client may have just gone; its waiter's drop is then a no-op.
                        let _ = tx.send(Ok(response));
                    }
                    debug!(request = %request_id, "answered");
                    Ok(ResponseStatusKind::Ok)
                } else if st.answered.contains(&request_id, session_id) {
                    Ok(ResponseStatusKind::Duplicate)
                } else {
                    refuse("final answer")
                }
            }
            ResponseEnvelope::Interim {
                request_id,
                message,
            } => {
                if !modern {
                    return Ok(ResponseStatusKind::Ignored);
                }
                if !st.owns(&request_id, session_id, generation) {
                    return refuse("interim message");
                }
                let pending = st.pending.get(&request_id).expect("owned above");
                if let Some(tx) = &pending.interim {
                    if tx.try_send(message).is_err() {
                        warn!(request = %request_id, "interim message dropped: client not reading");
                    }
                    return Ok(ResponseStatusKind::Ok);
                }
                // `/message` returns one body: notifications are dropped, and a request to
                // the client is refused at once so the server does not wait for it.
                if let Ok(Message::Request(req)) = Message::parse(message.get().as_bytes()) {
                    let client_session = pending.client_session.clone();
                    let refusal = RpcResponse::error(
                        Some(req.id),
                        ErrorObject::new(
                            ErrorCode::METHOD_NOT_FOUND,
                            "client cannot take requests on /message",
                        ),
                    );
                    let item = PollItem::Reply(ReplyItem {
                        request_id,
                        client_session,
                        message: to_raw(&refusal),
                    });
                    let reg = st.registrations.get_mut(session_id).expect("looked up");
                    reg.queue.push_back(QueueEntry {
                        pending: None,
                        item: Arc::new(item),
                    });
                    reg.notify.notify_one();
                }
                Ok(ResponseStatusKind::Ok)
            }
            ResponseEnvelope::Session { client_session, .. } => {
                if !modern {
                    return Ok(ResponseStatusKind::Ignored);
                }
                let pinned_here = st
                    .sessions
                    .get(&client_session)
                    .is_some_and(|p| p.registration == session_id);
                // No GET stream exists yet (Streamable HTTP comes later): the message is
                // accepted and dropped.
                Ok(if pinned_here {
                    ResponseStatusKind::Ok
                } else {
                    ResponseStatusKind::Ignored
                })
            }
        }
    }

    /// Routes a client message; returns the waiter for a request, `None` for a notification.
    pub fn submit(&self, sub: Submission) -> Result<Option<Waiter>, Error> {
        let mut st = self.lock();
        if st.shutting_down {
            return Err(Error::ShuttingDown);
        }
        let target = match &sub.client_session {
            Some(cs) => {
                let pin = st.sessions.get(cs).ok_or(Error::UnknownClientSession)?;
                let alive = st
                    .registrations
                    .get(&pin.registration)
                    .is_some_and(|r| r.generation == pin.generation);
                if !alive {
                    st.sessions.remove(cs);
                    return Err(Error::UnknownClientSession);
                }
                pin.registration.clone()
            }
            None => {
                let State {
                    pools,
                    registrations,
                    ..
                } = &mut *st;
                let pool = pools
                    .get_mut(&sub.pool)
                    .ok_or_else(|| pool_error(&sub.pool))?;
                if sub.stateless_era
                    && !pool.members.iter().any(|m| {
                        registrations
                            .get(m)
                            .is_some_and(|r| r.speaks(STATELESS_ERA))
                    })
                {
                    return Err(Error::UnsupportedProtocolVersion);
                }
                pool.sticky_member(registrations)
                    .ok_or_else(|| pool_error(&sub.pool))?
            }
        };
        let request_id = new_request_id();
        let reg = st.registrations.get_mut(&target).expect("checked above");
        if sub.client_session.is_some() && sub.stateless_era && !reg.speaks(STATELESS_ERA) {
            return Err(Error::UnsupportedProtocolVersion);
        }
        let modern = reg.is_modern();
        let item = RequestItem {
            request_id: request_id.clone(),
            request: sub.message,
            client_session: sub
                .client_session
                .clone()
                .filter(|_| reg.takes_client_sessions()),
            headers: (modern && !sub.headers.is_empty()).then_some(sub.headers),
        };
        reg.queue.push_back(QueueEntry {
            pending: Some(request_id.clone()),
            item: Arc::new(PollItem::Request(item)),
        });
        reg.outstanding += 1;
        reg.notify.notify_one();
        let generation = reg.generation;
        debug!(request = %request_id, session = %Short(&target), "queued");

        let (waiter, rx) = if sub.expects_answer {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let (interim_tx, interim_rx) = if sub.streams && sub.expects_answer {
            let (tx, rx) = mpsc::channel(INTERIM_BUFFER);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        st.pending.insert(
            request_id.clone(),
            Pending {
                registration: target,
                generation,
                stage: Stage::Queued,
                waiter,
                interim: interim_tx,
                client_session: sub.client_session,
                deadline: Instant::now() + self.inner.config.request_timeout,
            },
        );
        Ok(rx.map(|rx| Waiter {
            broker: self.clone(),
            request_id,
            rx,
            interim: interim_rx,
        }))
    }

    /// Starts a client session in `pool` on its least loaded member; returns the session id.
    pub fn open_session(&self, pool: &str) -> Result<String, Error> {
        let mut st = self.lock();
        let State {
            pools,
            registrations,
            sessions,
            ..
        } = &mut *st;
        let member = pools
            .get(pool)
            .and_then(|p| p.least_loaded(registrations))
            .ok_or_else(|| pool_error(pool))?;
        let generation = registrations[member].generation;
        let id = new_client_session_id();
        sessions.insert(
            id.clone(),
            SessionPin {
                registration: member.clone(),
                generation,
            },
        );
        Ok(id)
    }

    /// Removes dead and expired registrations, unanswered notifications past the request
    /// timeout, and old answered ids. The sweeper task calls it periodically.
    pub fn sweep(&self) {
        let now = Instant::now();
        let cfg = &self.inner.config;
        let mut st = self.lock();
        let doomed: Vec<(String, &'static str)> = st
            .registrations
            .values()
            .filter_map(|r| r.verdict(now, cfg).map(|why| (r.id.clone(), why)))
            .collect();
        for (id, why) in doomed {
            st.remove_registration(&id, why);
        }
        let stale: Vec<String> = st
            .pending
            .iter()
            .filter(|(_, p)| p.waiter.is_none() && p.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            st.take_pending(&id);
        }
        st.answered.evict(now);
    }

    /// Runs [`Broker::sweep`] until `token` is cancelled.
    pub fn spawn_sweeper(&self, token: CancellationToken) -> tokio::task::JoinHandle<()> {
        let broker = self.clone();
        let period = self.inner.config.sweep_interval();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => broker.sweep(),
                }
            }
        })
    }

    /// Stops taking work: every pending request fails at once and held polls end empty.
    pub fn shutdown(&self) {
        let mut st = self.lock();
        st.shutting_down = true;
        let ids: Vec<String> = st.pending.keys().cloned().collect();
        let failed = ids.len();
        for id in ids {
            if let Some(p) = st.take_pending(&id) {
                if let Some(tx) = p.waiter {
                    let _ = tx.send(Err(Error::ShuttingDown));
                }
            }
        }
        for reg in st.registrations.values() {
            reg.notify.notify_waiters();
        }
        drop(st);
        self.inner.shutdown.cancel();
        info!(failed, "broker shut down");
    }

    /// Counts for health checks and tests.
    pub fn stats(&self) -> Stats {
        let st = self.lock();
        Stats {
            registrations: st.registrations.len(),
            pending: st.pending.len(),
        }
    }

    /// Withdraws a request whose client is gone (called by [`Waiter`]'s drop).
    fn abandon(&self, request_id: &str) {
        let mut st = self.lock();
        if let Some(p) = st.take_pending(request_id) {
            debug!(request = %request_id, handed_over = (p.stage == Stage::HandedOver), "client gone; request withdrawn");
        }
    }

    /// Puts back an item whose poll was dropped before returning it (called by [`Claimed`]).
    fn requeue(&self, session_id: &str, generation: u64, entry: QueueEntry) {
        let mut st = self.lock();
        let State {
            registrations,
            pending,
            ..
        } = &mut *st;
        let Some(reg) = registrations
            .get_mut(session_id)
            .filter(|r| r.generation == generation)
        else {
            return;
        };
        if let Some(id) = &entry.pending {
            match pending.get_mut(id) {
                Some(p) if p.stage == Stage::HandedOver => {
                    p.stage = Stage::Queued;
                    reg.in_flight = reg.in_flight.saturating_sub(1);
                }
                _ => return,
            }
        }
        debug!(session = %Short(session_id), "poll dropped before returning its item; requeued");
        reg.queue.push_front(entry);
        reg.notify.notify_one();
    }
}

impl State {
    fn insert_registration(
        &mut self,
        id: String,
        pool: String,
        capabilities: Option<mcp_protocol::wire::RegistrationCapabilities>,
    ) {
        self.next_generation += 1;
        let reg = Registration::new(
            id.clone(),
            self.next_generation,
            pool.clone(),
            capabilities,
            Instant::now(),
        );
        self.pools.entry(pool).or_default().members.push(id.clone());
        self.registrations.insert(id, reg);
    }

    /// Removes a registration, failing everything pending on it.
    fn remove_registration(&mut self, id: &str, why: &'static str) {
        let Some(reg) = self.registrations.remove(id) else {
            return;
        };
        if let Some(pool) = self.pools.get_mut(&reg.pool) {
            pool.remove(id);
            if pool.members.is_empty() {
                self.pools.remove(&reg.pool);
            }
        }
        let doomed: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.registration == id && p.generation == reg.generation)
            .map(|(rid, _)| rid.clone())
            .collect();
        let failed = doomed.len();
        for rid in doomed {
            if let Some(p) = self.pending.remove(&rid) {
                if let Some(tx) = p.waiter {
                    let _ = tx.send(Err(Error::ServerGone));
                }
            }
        }
        self.sessions.retain(|_, pin| pin.registration != id);
        reg.notify.notify_waiters();
        info!(session = %Short(id), why, failed, queued = reg.queue.len(), "registration removed");
    }

    /// Whether `request_id` is pending on this registration.
    fn owns(&self, request_id: &str, session_id: &str, generation: u64) -> bool {
        self.pending
            .get(request_id)
            .is_some_and(|p| p.registration == session_id && p.generation == generation)
    }

    /// Removes a pending entry, keeping its registration's counters and queue in step.
    fn take_pending(&mut self, request_id: &str) -> Option<Pending> {
        let p = self.pending.remove(request_id)?;
        if let Some(reg) = self
            .registrations
            .get_mut(&p.registration)
            .filter(|r| r.generation == p.generation)
        {
            reg.outstanding = reg.outstanding.saturating_sub(1);
            match p.stage {
                Stage::HandedOver => reg.in_flight = reg.in_flight.saturating_sub(1),
                Stage::Queued => {
                    reg.queue.remove_pending(request_id);
                }
            }
        }
        Some(p)
    }

    /// Takes the next item for a poll of this registration, marking a request handed over.
    fn claim(&mut self, session_id: &str, generation: u64) -> Result<Option<QueueEntry>, Error> {
        let State {
            registrations,
            pending,
            ..
        } = self;
        let reg = registrations
            .get_mut(session_id)
            .filter(|r| r.generation == generation)
            .ok_or(Error::UnknownSession)?;
        while let Some(entry) = reg.queue.pop_front() {
            match &entry.pending {
                None => return Ok(Some(entry)),
                Some(id) => {
                    if let Some(p) = pending.get_mut(id) {
                        p.stage = Stage::HandedOver;
                        reg.in_flight += 1;
                        return Ok(Some(entry));
                    }
                    // Withdrawn entries are removed from the queue; skip any stray one.
                }
            }
        }
        Ok(None)
    }
}

/// Counts a held poll for liveness while it is open.
struct OpenPoll<'a> {
    broker: &'a Broker,
    session_id: &'a str,
    generation: u64,
}

impl Drop for OpenPoll<'_> {
    fn drop(&mut self) {
        let mut st = self.broker.lock();
        if let Some(reg) = st
            .registrations
            .get_mut(self.session_id)
            .filter(|r| r.generation == self.generation)
        {
            let now = Instant::now();
            reg.open_polls = reg.open_polls.saturating_sub(1);
            reg.last_activity = now;
            if reg.open_polls == 0 {
                reg.no_polls_since = now;
            }
        }
    }
}

/// The client id's JSON text, to compare with the id in a server's answer.
pub(crate) fn id_text(id: &RequestId) -> String {
    serde_json::to_string(id).unwrap_or_default()
}

#[cfg(test)]
mod tests;
