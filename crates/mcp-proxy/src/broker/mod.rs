//! The session broker: registrations, their queues, pending requests and pools.
//!
//! The HTTP routes only talk to [`Broker`] through its narrow API (`register`, `deregister`,
//! `poll`, `respond`, `submit`, `submit_streamed`, `open_session`, `open_stream`,
//! `client_reply`, `end_session`, `sweep`, `shutdown`, `servers`), so a distributed backend (Redis
//! streams, say) can later stand behind the same methods.
//!
//! Beside this file: `quota` (who holds what, the registration caps, the replay budget in
//! all), `takeover` (what only a cluster asks: taking over a lost instance's registrations
//! and sessions, its carried requests), `sessions`, `queue`, `pending`, `pools`,
//! `registration`.
//!
//! All state lives behind one `std::sync::Mutex`: every operation is a few map and queue
//! updates with no `.await` under the lock, so a blocking mutex is both correct and faster
//! than an async one (see mini-redis's `db.rs`). Wake-ups go through `Notify` (held polls)
//! and `oneshot` (waiting clients); nothing sleeps in a loop.

mod pending;
mod pools;
mod queue;
mod quota;
mod registration;
mod sessions;
#[cfg(feature = "cluster")]
mod takeover;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mcp_protocol::jsonrpc::{ErrorCode, ErrorObject, Message, RequestId, Response as RpcResponse};
use mcp_protocol::streamable::EventId;
use mcp_protocol::wire::{
    is_valid_pool_name, to_raw, PollItem, RegisterRequest, ReplyItem, RequestItem,
    ResponseEnvelope, ResponseStatusKind, SessionClosedItem, SessionIdKind,
};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use pending::Waiter;
pub use pools::{MemberInfo, PoolInfo};
pub use queue::Claimed;
pub use quota::Requester;
pub use sessions::Attached;

use pending::{Answered, Outcome, Pending, Stage};
use pools::Pool;
use queue::QueueEntry;
use quota::Held;
pub(crate) use registration::Short;
use registration::{
    new_client_session_id, new_legacy_id, new_modern_id, new_request_id, Registration,
};
use sessions::{stream_answer, ClientSession, StreamRef, StreamState, GET_STREAM};

use crate::auth::TokenId;
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
    sessions: HashMap<String, ClientSession>,
    /// Sessions per registration id, kept with `sessions` (by `insert_session` and
    /// `remove_session`) so opening one never counts them all under the lock.
    sessions_per_registration: HashMap<String, usize>,
    /// Streams of stateless-era requests, which have no session (not resumable).
    loose: HashMap<String, StreamState>,
    /// Numbers attached connections and loose streams.
    next_conn: u64,
    answered: Answered,
    next_generation: u64,
    shutting_down: bool,
    /// Registrations per caller (token, else address).
    registrants: Held,
    /// Client sessions per caller (token, else address).
    session_holders: Held,
    /// Replay bytes one session may keep (`--max-replay-bytes-per-session`).
    replay_budget: usize,
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
    /// It came from `/mcp` (Streamable HTTP), not `/message`.
    pub streamable: bool,
    /// Headers forwarded to modern registrations (lowercase names).
    pub headers: BTreeMap<String, String>,
    /// The request is marked for the stateless era (the era probe applies).
    pub stateless_era: bool,
}

/// What another instance needs to take a registration over: everything it was registered
/// with.
#[derive(Clone, Debug)]
pub struct RegistrationRecord {
    /// The registration's id.
    pub session_id: String,
    /// Its pool (`""`: the default pool).
    pub pool: String,
    /// What it declared; `None` for a legacy registration.
    pub capabilities: Option<mcp_protocol::wire::RegistrationCapabilities>,
    /// The server token it registered with.
    pub owner: Option<TokenId>,
}

/// Counts for `/healthz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Live registrations of both kinds.
    pub registrations: usize,
    /// Pending requests and notifications.
    pub pending: usize,
    /// Client sessions of `/mcp`.
    pub sessions: usize,
    /// SSE connections attached to streams.
    pub attached: usize,
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
                state: Mutex::new(State {
                    replay_budget: config.max_replay_bytes_per_session,
                    ..State::default()
                }),
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
        self.register_as(req, Requester::default())
    }

    /// [`Broker::register`] by `who`: its server token (auth on), from then on the only one
    /// accepted for the registration ([`Broker::check_owner`]), and its address; both count
    /// against the registration quotas.
    pub fn register_as(&self, req: &RegisterRequest, who: Requester) -> Result<String, Error> {
        let owner = who.token;
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
        st.admit_registration(&who, &self.inner.config)?;
        st.insert_registration(id.clone(), pool, req.capabilities.clone());
        st.charge_registration(&id, owner, who.holder());
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

    /// Refuses (401) a caller whose server token is not the one `session_id` registered
    /// with. An unknown id passes: the route's own answer for unknown ids applies.
    pub fn check_owner(&self, session_id: &str, owner: Option<&TokenId>) -> Result<(), Error> {
        match self.lock().registrations.get(session_id) {
            Some(reg) if reg.owner.as_ref() != owner => Err(Error::ServerUnauthorized),
            _ => Ok(()),
        }
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
        self.poll_as(session_id, requested, Requester::default(), true)
            .await
    }

    /// [`Broker::poll`] by `who`: 401 unless the registration was made with its server token
    /// (auth on). An unknown legacy id is re-adopted for `who` only when `may_adopt` (the
    /// token reaches the default pool), else 401, and within the registration quotas.
    pub async fn poll_as(
        &self,
        session_id: &str,
        requested: Option<Duration>,
        who: Requester,
        may_adopt: bool,
    ) -> Result<Option<Claimed>, Error> {
        let owner = who.token;
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
                if !may_adopt {
                    return Err(Error::ServerUnauthorized);
                }
                // A re-adoption is a registration: the same quotas as `/register`.
                st.admit_registration(&who, cfg)?;
                st.insert_registration(session_id.to_owned(), String::new(), None);
                st.charge_registration(session_id, owner, who.holder());
                info!(session = %Short(session_id), "re-adopted an unknown legacy session");
            }
            let reg = st
                .registrations
                .get_mut(session_id)
                .expect("present or just inserted");
            if reg.owner != owner {
                return Err(Error::ServerUnauthorized);
            }
            if reg.open_polls >= cfg.max_polls_per_registration {
                return Err(Error::RateLimited(
                    "too many polls open for this registration",
                ));
            }
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
        let mut open = OpenPoll {
            broker: self,
            session_id,
            generation,
            end: PollEnd::Dropped,
        };
        let deadline = tokio::time::Instant::now() + hold;
        // Not reached when hyper drops this future (the peer closed the connection): the
        // guard then marks the registration suspect (see `Registration::is_suspect`).
        let result = async {
            loop {
                let notified = notify.notified();
                tokio::pin!(notified);
                {
                    let mut st = self.lock();
                    if st.shutting_down {
                        return Ok(None);
                    }
                    if let Some(entry) = st.claim(session_id, generation)? {
                        if let Some(id) = &entry.pending {
                            tracing::Span::current().record("request_id", id.as_str());
                        }
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
        .await;
        open.end = match &result {
            Ok(Some(_)) => PollEnd::Item,
            _ => PollEnd::Empty,
        };
        result
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
                tracing::Span::current().record("request_id", request_id.as_str());
                if st.owns(&request_id, session_id, generation) {
                    let pending = st.take_pending(&request_id).expect("owned above");
                    st.answered
                        .insert(request_id.clone(), session_id.to_owned(), now);
                    // The client may have just gone; delivering is then a no-op.
                    st.finish(pending, Ok(response));
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
                let stream = pending.stream.clone();
                let client_session = pending.client_session.clone();
                let streamable = pending.streamable;
                let server_request = match Message::parse(message.get().as_bytes()) {
                    Ok(Message::Request(req)) => Some(req.id),
                    _ => None,
                };
                // Its own stream first, attached or not (a resuming client gets it).
                if let Some(stream) = &stream {
                    if st.push_to_stream(stream, &request_id, server_request.as_ref(), &message) {
                        return Ok(ResponseStatusKind::Ok);
                    }
                }
                let Some(id) = server_request else {
                    // A notification for a client answered as JSON has nowhere to go.
                    return Ok(ResponseStatusKind::Ok);
                };
                // A request to a client answered as JSON may use the session's open GET stream.
                if let Some(cs) = client_session.as_deref() {
                    let get = StreamRef {
                        session: Some(cs.to_owned()),
                        name: GET_STREAM.to_owned(),
                    };
                    if st.stream_is_attached(&get)
                        && st.push_to_stream(&get, &request_id, Some(&id), &message)
                    {
                        return Ok(ResponseStatusKind::Ok);
                    }
                }
                // Nobody can answer it: refuse it at once so the server does not wait for it.
                let why = if streamable {
                    "client cannot take requests: answered as JSON with no GET stream open"
                } else {
                    "client cannot take requests on /message"
                };
                let refusal = RpcResponse::error(
                    Some(id),
                    ErrorObject::new(ErrorCode::METHOD_NOT_FOUND, why),
                );
                st.queue_reply(session_id, request_id, client_session, to_raw(&refusal));
                Ok(ResponseStatusKind::Ok)
            }
            ResponseEnvelope::Session {
                client_session,
                message,
            } => {
                if !modern {
                    return Ok(ResponseStatusKind::Ignored);
                }
                let pinned_here = st
                    .sessions
                    .get(&client_session)
                    .is_some_and(|s| s.registration == session_id && s.generation == generation);
                if !pinned_here {
                    debug!(session = %Short(session_id), "session message for an ended client session ignored");
                    return Ok(ResponseStatusKind::Ignored);
                }
                let server_request = match Message::parse(message.get().as_bytes()) {
                    Ok(Message::Request(req)) => Some(req.id),
                    _ => None,
                };
                let get = StreamRef {
                    session: Some(client_session.clone()),
                    name: GET_STREAM.to_owned(),
                };
                // Logged even with no GET stream open: a later GET with Last-Event-ID sees it.
                // A request's answer comes back as a reply whose request_id is the session id.
                st.push_to_stream(&get, &client_session, server_request.as_ref(), &message);
                Ok(ResponseStatusKind::Ok)
            }
        }
    }

    /// Routes a client message; returns the waiter for a request, `None` for a notification.
    pub fn submit(&self, sub: Submission) -> Result<Option<Waiter>, Error> {
        let mut st = self.lock();
        if st.shutting_down {
            return Err(Error::ShuttingDown);
        }
        let client_id = Message::parse(sub.message.get().as_bytes())
            .ok()
            .and_then(|m| m.id().cloned());
        let expects_answer = sub.expects_answer;
        let (waiter, rx) = if expects_answer {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let request_id = st.enqueue(sub, client_id, waiter, &self.inner.config)?;
        Ok(rx.map(|rx| Waiter {
            broker: self.clone(),
            request_id,
            rx,
        }))
    }

    /// Routes a client request whose answer is streamed as SSE (`/mcp`): its interim messages
    /// and final answer go to a new stream, and the returned connection is attached to it.
    pub fn submit_streamed(
        &self,
        sub: Submission,
        client_id: RequestId,
    ) -> Result<Attached, Error> {
        let mut st = self.lock();
        if st.shutting_down {
            return Err(Error::ShuttingDown);
        }
        st.next_conn += 1;
        let n = st.next_conn;
        // The stream is created right after the request is queued, under the same lock, so
        // nothing can answer before it exists.
        let stream = match &sub.client_session {
            Some(cs) => StreamRef {
                session: Some(cs.clone()),
                name: String::new(),
            },
            None => StreamRef {
                session: None,
                name: format!("l{n}"),
            },
        };
        let stateless = sub.stateless_era;
        let client_session = sub.client_session.clone();
        let request_id = st.enqueue(sub, Some(client_id), None, &self.inner.config)?;
        let mut stream = stream;
        let state = match &client_session {
            Some(cs) => {
                let session = st.sessions.get_mut(cs).expect("checked by enqueue");
                stream.name = session.new_request_stream(&request_id);
                session.last_seen = Instant::now();
                session.streams.get_mut(&stream.name).expect("just created")
            }
            None => {
                let mut state = StreamState::new(&stream.name, sessions::REQUEST_STREAM_LOG);
                state.request = Some(request_id.clone());
                st.loose.entry(stream.name.clone()).or_insert(state)
            }
        };
        state.cancel_on_close = stateless;
        let (initial, rx) = state.attach(n, None);
        if let Some(p) = st.pending.get_mut(&request_id) {
            p.stream = Some(stream.clone());
        }
        Ok(Attached {
            broker: self.clone(),
            stream,
            conn: n,
            initial,
            rx,
        })
    }

    /// Starts a client session in `pool` on its least loaded member; returns the session id.
    pub fn open_session(&self, pool: &str) -> Result<String, Error> {
        self.open_session_for(pool, Requester::default())
    }

    /// [`Broker::open_session`] for `who`, within its quota of sessions (429 above it).
    pub fn open_session_for(&self, pool: &str, who: Requester) -> Result<String, Error> {
        let mut st = self.lock();
        if st.shutting_down {
            return Err(Error::ShuttingDown);
        }
        let cfg = &self.inner.config;
        let holder = who.holder();
        if let Some(h) = &holder {
            if st.session_holders.of(h) >= cfg.max_sessions_per_caller {
                info!(
                    max = cfg.max_sessions_per_caller,
                    "client session refused: --max-sessions-per-caller reached"
                );
                return Err(Error::RateLimited(
                    "too many client sessions for this caller",
                ));
            }
        }
        if st.sessions.len() >= cfg.max_sessions {
            // `info`, not `warn`: a flood of initializes must not flood the log at warn.
            info!(
                max = cfg.max_sessions,
                "client session refused: --max-sessions reached"
            );
            return Err(Error::TooManySessions);
        }
        let State {
            pools,
            registrations,
            sessions_per_registration,
            ..
        } = &mut *st;
        let pool_ref = pools.get(pool).ok_or_else(|| pool_error(pool))?;
        if pool_ref.members.is_empty() {
            return Err(pool_error(pool));
        }
        let member = pool_ref
            .least_loaded_for_session(
                registrations,
                sessions_per_registration,
                cfg.max_sessions_per_registration,
            )
            .ok_or_else(|| {
                info!(
                    pool,
                    max = cfg.max_sessions_per_registration,
                    "client session refused: every member has --max-sessions-per-registration"
                );
                Error::TooManySessions
            })?
            .clone();
        let generation = registrations[&member].generation;
        let id = new_client_session_id();
        let mut session =
            ClientSession::new(member.clone(), pool.to_owned(), generation, Instant::now());
        session.holder = holder;
        st.insert_session(id.clone(), session);
        debug!(client_session = %Short(&id), session = %Short(&member), "client session opened");
        Ok(id)
    }

    /// Whether the client session exists in `pool` and its registration lives (touching it).
    pub fn check_session(&self, pool: &str, client_session: &str) -> Result<(), Error> {
        let mut st = self.lock();
        st.live_session(pool, client_session)?.last_seen = Instant::now();
        Ok(())
    }

    /// Opens a session's GET stream, or resumes the stream named by `last_event_id`.
    ///
    /// Resuming replays what came after that event, then stays attached while the stream
    /// lives. An id on the GET stream whose events were partly forgotten starts a fresh GET
    /// stream; any other id this session cannot replay is [`Error::CannotResume`].
    pub fn open_stream(
        &self,
        pool: &str,
        client_session: &str,
        last_event_id: Option<&str>,
    ) -> Result<Attached, Error> {
        let mut st = self.lock();
        if st.shutting_down {
            return Err(Error::ShuttingDown);
        }
        st.next_conn += 1;
        let conn = st.next_conn;
        let session = st.live_session(pool, client_session)?;
        session.last_seen = Instant::now();
        let (name, after) = match last_event_id {
            None => (GET_STREAM.to_owned(), None),
            Some(text) => {
                let id = EventId::parse(text).ok_or(Error::CannotResume)?;
                let stream = session.streams.get(&id.stream).ok_or(Error::CannotResume)?;
                if stream.log.replay_after(id.seq).is_some() {
                    (id.stream, Some(id.seq))
                } else if id.stream == GET_STREAM {
                    (id.stream, None)
                } else {
                    return Err(Error::CannotResume);
                }
            }
        };
        let stream = session.streams.get_mut(&name).expect("looked up above");
        let (initial, rx) = stream.attach(conn, after);
        Ok(Attached {
            broker: self.clone(),
            stream: StreamRef {
                session: Some(client_session.to_owned()),
                name,
            },
            conn,
            initial,
            rx,
        })
    }

    /// Takes a client's answer to a server-to-client request and queues it as a `reply` item
    /// for the registration that asked. `Ok(false)`: nobody asked (unknown or late id).
    pub fn client_reply(
        &self,
        pool: &str,
        client_session: &str,
        message: Box<RawValue>,
        id: Option<&RequestId>,
    ) -> Result<bool, Error> {
        let mut st = self.lock();
        let session = st.live_session(pool, client_session)?;
        session.last_seen = Instant::now();
        let Some(out) = id.and_then(|id| session.take_outbound(&id_text(id))) else {
            debug!(client_session = %Short(client_session), "client answer for no pending server request dropped");
            return Ok(false);
        };
        let registration = session.registration.clone();
        let message = match out.original_id {
            Some(original) => match serde_json::from_str::<Map<String, Value>>(message.get()) {
                Ok(mut obj) => {
                    obj.insert("id".into(), original);
                    to_raw(&obj)
                }
                Err(_) => message,
            },
            None => message,
        };
        st.queue_reply(
            &registration,
            out.request_id,
            Some(client_session.to_owned()),
            message,
        );
        Ok(true)
    }

    /// Ends a client session (`DELETE`): its streams close and its server gets a
    /// `session_closed` item.
    pub fn end_session(&self, pool: &str, client_session: &str) -> Result<(), Error> {
        let mut st = self.lock();
        st.live_session(pool, client_session)?;
        st.close_session(client_session, true, "ended by the client");
        Ok(())
    }

    /// Forgets a client session without telling its server (the server forgot it first, or
    /// its `initialize` failed).
    pub fn forget_session(&self, client_session: &str) {
        self.lock()
            .close_session(client_session, false, "forgotten by its server");
    }

    /// Ends a client session whose `initialize` the client abandoned before its answer: the
    /// client never learnt it, so it is not kept for the idle time (its server is told).
    pub fn abandon_session(&self, client_session: &str) {
        self.lock()
            .close_session(client_session, true, "its initialize was abandoned");
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
        // Waiters time out in their route; notifications and streamed requests here.
        let stale: Vec<String> = st
            .pending
            .iter()
            .filter(|(_, p)| p.waiter.is_none() && p.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some(p) = st.take_pending(&id) {
                st.finish(p, Err(Error::RequestTimeout));
            }
        }
        let idle: Vec<String> = st
            .sessions
            .iter()
            .filter(|(_, s)| s.is_idle(now, cfg.session_idle))
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            st.close_session(&id, true, "idle");
        }
        st.trim_replay_in_all(cfg.max_replay_bytes);
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
                st.finish(p, Err(Error::ShuttingDown));
            }
        }
        for reg in st.registrations.values() {
            reg.notify.notify_waiters();
        }
        // End every open SSE stream, or the drain would wait for them until its deadline.
        for session in st.sessions.values_mut() {
            for stream in session.streams.values_mut() {
                stream.live = None;
            }
        }
        st.loose.clear();
        drop(st);
        self.inner.shutdown.cancel();
        info!(failed, "broker shut down");
    }

    /// Counts for health checks and tests.
    /// Registrations and pending requests: two map sizes, what `/healthz` (open to anyone,
    /// not rate limited) may cost under the lock.
    pub fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        (st.registrations.len(), st.pending.len())
    }

    /// Everything `/metrics` shows; walks the sessions' streams (operators only).
    pub fn stats(&self) -> Stats {
        let st = self.lock();
        Stats {
            registrations: st.registrations.len(),
            pending: st.pending.len(),
            sessions: st.sessions.len(),
            attached: st
                .sessions
                .values()
                .flat_map(|s| s.streams.values())
                .chain(st.loose.values())
                .filter(|s| s.live.is_some())
                .count(),
        }
    }

    /// The pools and their members, default pool first, then by name (`GET /servers`).
    pub fn servers(&self) -> Vec<PoolInfo> {
        let st = self.lock();
        let now = Instant::now();
        let sessions_per_member = &st.sessions_per_registration;
        let mut names: Vec<&String> = st.pools.keys().collect();
        names.sort();
        names
            .into_iter()
            .map(|name| st.pools[name].info(name, &st.registrations, sessions_per_member, now))
            .collect()
    }

    /// Withdraws a request whose client is gone (called by [`Waiter`]'s drop).
    fn abandon(&self, request_id: &str) {
        let mut st = self.lock();
        st.withdraw(request_id);
    }

    /// Detaches a connection from its stream (called by [`Attached`]'s drop). Under the
    /// stateless era, closing a request's stream cancels the request.
    fn detach(&self, stream: &StreamRef, conn: u64) {
        let mut st = self.lock();
        let now = Instant::now();
        let state = match &stream.session {
            Some(cs) => st.sessions.get_mut(cs).and_then(|s| {
                s.last_seen = now;
                s.streams.get_mut(&stream.name)
            }),
            None => st.loose.get_mut(&stream.name),
        };
        let Some(state) = state else { return };
        if state.live.as_ref().is_none_or(|(c, _)| *c != conn) {
            return; // finished, or taken over by a newer connection
        }
        state.live = None;
        let cancel = (state.cancel_on_close && !state.done)
            .then(|| state.request.clone())
            .flatten();
        if stream.session.is_none() {
            st.loose.remove(&stream.name);
        }
        if let Some(request_id) = cancel {
            debug!(request = %request_id, "stateless-era stream closed by the client: cancelling");
            st.withdraw(&request_id);
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
    /// Routes a message to its registration and queues it; records the pending entry.
    fn enqueue(
        &mut self,
        sub: Submission,
        client_id: Option<RequestId>,
        waiter: Option<oneshot::Sender<Outcome>>,
        config: &Config,
    ) -> Result<String, Error> {
        let target = match &sub.client_session {
            Some(cs) => {
                let session = self.live_session(&sub.pool, cs)?;
                session.last_seen = Instant::now();
                session.registration.clone()
            }
            None => {
                let State {
                    pools,
                    registrations,
                    ..
                } = &mut *self;
                let pool = pools
                    .get_mut(&sub.pool)
                    .ok_or_else(|| pool_error(&sub.pool))?;
                let speaks = |m: &String| {
                    registrations
                        .get(m)
                        .is_some_and(|r| r.speaks(STATELESS_ERA))
                };
                if sub.stateless_era && !pool.members.iter().any(speaks) {
                    return Err(Error::UnsupportedProtocolVersion);
                }
                let sticky = pool
                    .sticky_member(registrations)
                    .ok_or_else(|| pool_error(&sub.pool))?;
                if sub.stateless_era && !speaks(&sticky) {
                    // A mixed pool: a stateless request goes to a member that speaks its era
                    // (the least loaded, healthy ones first), leaving stickiness alone.
                    let pick = pool.members.iter().filter(|m| speaks(m)).min_by_key(|m| {
                        registrations
                            .get(*m)
                            .map_or((true, usize::MAX), |r| (r.is_suspect(), r.outstanding))
                    });
                    pick.cloned().ok_or_else(|| pool_error(&sub.pool))?
                } else {
                    sticky
                }
            }
        };
        let reg = self.registrations.get(&target).expect("checked above");
        if sub.client_session.is_some() && sub.stateless_era && !reg.speaks(STATELESS_ERA) {
            return Err(Error::UnsupportedProtocolVersion);
        }
        if reg.outstanding >= config.max_pending_per_registration {
            return Err(Error::QueueFull);
        }
        let request_id = self.queue_request(
            &target,
            sub.message,
            sub.client_session.clone(),
            sub.headers,
        );
        tracing::Span::current().record("request_id", request_id.as_str());
        let p = self.pending.get_mut(&request_id).expect("just queued");
        p.waiter = waiter;
        p.client_id = client_id;
        p.streamable = sub.streamable;
        p.cancel_on_abandon = sub.stateless_era;
        p.deadline = Instant::now() + config.request_timeout;
        Ok(request_id)
    }

    /// Queues a request item for `target` (live) with a pending entry nobody waits on yet.
    fn queue_request(
        &mut self,
        target: &str,
        message: Box<RawValue>,
        client_session: Option<String>,
        headers: BTreeMap<String, String>,
    ) -> String {
        let request_id = new_request_id();
        let reg = self.registrations.get_mut(target).expect("a live target");
        let modern = reg.is_modern();
        let item = RequestItem {
            request_id: request_id.clone(),
            request: message,
            client_session: client_session
                .clone()
                .filter(|_| reg.takes_client_sessions()),
            headers: (modern && !headers.is_empty()).then_some(headers),
        };
        reg.queue.push_back(QueueEntry {
            pending: Some(request_id.clone()),
            item: Arc::new(PollItem::Request(item)),
        });
        reg.outstanding += 1;
        reg.notify.notify_one();
        let generation = reg.generation;
        debug!(request = %request_id, session = %Short(target), "queued");
        self.pending.insert(
            request_id.clone(),
            Pending {
                registration: target.to_owned(),
                generation,
                stage: Stage::Queued,
                waiter: None,
                stream: None,
                client_id: None,
                streamable: false,
                cancel_on_abandon: false,
                client_session,
                // `enqueue` sets the request timeout; a cancellation the proxy sends on its own
                // is forgotten after this if the server never acknowledges it.
                deadline: Instant::now() + pending::ANSWERED_MEMORY,
            },
        );
        request_id
    }

    /// Queues a `reply` item (a client's answer to a server request) for a registration.
    fn queue_reply(
        &mut self,
        registration: &str,
        request_id: String,
        client_session: Option<String>,
        message: Box<RawValue>,
    ) {
        let Some(reg) = self.registrations.get_mut(registration) else {
            return;
        };
        if !reg.is_modern() {
            return; // legacy registrations never get reply items
        }
        let item = PollItem::Reply(ReplyItem {
            request_id,
            client_session: client_session.filter(|_| reg.takes_client_sessions()),
            message,
        });
        reg.queue.push_back(QueueEntry {
            pending: None,
            item: Arc::new(item),
        });
        reg.notify.notify_one();
    }

    /// Delivers a pending request's outcome: to its waiter, or as the last event of its stream.
    fn finish(&mut self, p: Pending, outcome: Outcome) {
        if let Some(tx) = p.waiter {
            let _ = tx.send(outcome);
            return;
        }
        let (Some(stream), Some(client_id)) = (p.stream, p.client_id) else {
            return; // a notification
        };
        let error = |e: Error| {
            let obj = e
                .to_error_object()
                .unwrap_or_else(|| ErrorObject::new(ErrorCode::INTERNAL_ERROR, e.to_string()));
            serde_json::to_string(&RpcResponse::error(Some(client_id.clone()), obj))
                .unwrap_or_default()
        };
        let data = match outcome {
            Ok(answer) => stream_answer(&answer, &client_id).unwrap_or_else(|| {
                warn!("server's final answer is not a JSON-RPC response");
                error(Error::InvalidServerResponse(
                    "not a JSON-RPC response".into(),
                ))
            }),
            Err(e) => error(e),
        };
        match &stream.session {
            Some(cs) => {
                // A pinned request the server answers "unknown session": it forgot the
                // session, so the client's next request gets 404 and it re-initializes.
                let forgotten = serde_json::from_str::<Value>(&data)
                    .is_ok_and(|v| v["error"]["code"] == json!(ErrorCode::UNKNOWN_SESSION.0));
                if let Some(session) = self.sessions.get_mut(cs) {
                    session.last_seen = Instant::now();
                    if let Some(state) = session.streams.get_mut(&stream.name) {
                        state.finish(data);
                    }
                    session.retire(&stream.name);
                    session.trim_replay(self.replay_budget);
                }
                if forgotten {
                    self.close_session(cs, false, "forgotten by its server");
                }
            }
            None => {
                if let Some(mut state) = self.loose.remove(&stream.name) {
                    state.finish(data);
                }
            }
        }
    }

    /// Sends `message` (from a server, tied to `request_id`) on a stream that has not ended.
    /// A request to the client is tracked so its answer finds its way back. `false` when the
    /// stream is gone or ended, or a request cannot be answered there (a loose stream).
    fn push_to_stream(
        &mut self,
        stream: &StreamRef,
        request_id: &str,
        server_request: Option<&RequestId>,
        message: &RawValue,
    ) -> bool {
        match &stream.session {
            Some(cs) => {
                let Some(session) = self.sessions.get_mut(cs) else {
                    return false;
                };
                if !matches!(session.streams.get(&stream.name), Some(s) if !s.done) {
                    return false;
                }
                let data = match server_request {
                    Some(id) => session.track_outbound(request_id, id, message),
                    None => message.get().to_owned(),
                };
                if let Some(state) = session.streams.get_mut(&stream.name) {
                    state.push(data);
                }
                session.trim_replay(self.replay_budget);
                true
            }
            None => match self.loose.get_mut(&stream.name) {
                Some(state) if !state.done && server_request.is_none() => {
                    state.push(message.get().to_owned());
                    true
                }
                _ => false,
            },
        }
    }

    /// Whether a connection is attached to the stream.
    fn stream_is_attached(&self, stream: &StreamRef) -> bool {
        stream
            .session
            .as_ref()
            .and_then(|cs| self.sessions.get(cs))
            .and_then(|s| s.streams.get(&stream.name))
            .is_some_and(|s| s.live.is_some())
    }

    /// The client session, if it exists, belongs to `pool` (the pool the route addresses) and
    /// its registration lives; a session whose registration is gone is removed (404 for the
    /// client). A session of another pool is answered as an unknown one: the route's token
    /// check covered `pool` only, and the answer must not tell that the id exists elsewhere.
    fn live_session(
        &mut self,
        pool: &str,
        client_session: &str,
    ) -> Result<&mut ClientSession, Error> {
        let alive = match self.sessions.get(client_session) {
            None => return Err(Error::UnknownClientSession),
            Some(s) if s.pool != pool => return Err(Error::UnknownClientSession),
            Some(s) => self
                .registrations
                .get(&s.registration)
                .is_some_and(|r| r.generation == s.generation),
        };
        if !alive {
            self.remove_session(client_session);
            return Err(Error::UnknownClientSession);
        }
        Ok(self
            .sessions
            .get_mut(client_session)
            .expect("present above"))
    }

    /// Adds a client session, counting it for its registration.
    fn insert_session(&mut self, id: String, session: ClientSession) {
        self.session_holders.add(session.holder);
        *self
            .sessions_per_registration
            .entry(session.registration.clone())
            .or_default() += 1;
        self.sessions.insert(id, session);
    }

    /// Removes a client session, uncounting it.
    fn remove_session(&mut self, id: &str) -> Option<ClientSession> {
        let session = self.sessions.remove(id)?;
        self.session_holders.remove(session.holder);
        if let Some(n) = self
            .sessions_per_registration
            .get_mut(&session.registration)
        {
            *n -= 1;
            if *n == 0 {
                self.sessions_per_registration.remove(&session.registration);
            }
        }
        Some(session)
    }

    /// Ends a client session: its streams close; with `notify`, its server gets a
    /// `session_closed` item (when it takes client sessions).
    fn close_session(&mut self, client_session: &str, notify: bool, why: &'static str) {
        let Some(session) = self.remove_session(client_session) else {
            return;
        };
        debug!(client_session = %Short(client_session), why, "client session ended");
        if !notify {
            return;
        }
        if let Some(reg) = self
            .registrations
            .get_mut(&session.registration)
            .filter(|r| r.generation == session.generation && r.takes_client_sessions())
        {
            reg.queue.push_back(QueueEntry {
                pending: None,
                item: Arc::new(PollItem::SessionClosed(SessionClosedItem {
                    client_session: client_session.to_owned(),
                })),
            });
            reg.notify.notify_one();
        }
    }

    /// Withdraws a request whose client is gone. A stateless-era request already handed
    /// over is cancelled at the server with `notifications/cancelled`.
    fn withdraw(&mut self, request_id: &str) {
        let Some(p) = self.take_pending(request_id) else {
            return;
        };
        let handed_over = p.stage == Stage::HandedOver;
        debug!(request = %request_id, handed_over, "client gone; request withdrawn");
        let (true, true, Some(client_id)) = (handed_over, p.cancel_on_abandon, p.client_id) else {
            return;
        };
        if !self
            .registrations
            .get(&p.registration)
            .is_some_and(|r| r.generation == p.generation && r.is_modern())
        {
            return;
        }
        let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": client_id, "reason": "the client closed the response stream"}});
        let headers = BTreeMap::from([
            (
                "mcp-method".to_owned(),
                "notifications/cancelled".to_owned(),
            ),
            ("mcp-protocol-version".to_owned(), STATELESS_ERA.to_owned()),
        ]);
        self.queue_request(&p.registration, to_raw(&cancel), p.client_session, headers);
    }

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
                self.finish(p, Err(Error::ServerGone));
            }
        }
        let orphans: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.registration == id)
            .map(|(sid, _)| sid.clone())
            .collect();
        for sid in orphans {
            self.remove_session(&sid);
        }
        self.registrants.remove(reg.holder);
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
    /// How the poll ended; `Dropped` until it returns.
    end: PollEnd,
}

/// How a held poll ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PollEnd {
    /// Hyper dropped it: its connection closed (or the server died).
    Dropped,
    /// It returned an item.
    Item,
    /// It returned nothing (its hold ended): its server was alive all along.
    Empty,
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
            match self.end {
                // Suspect until it proves alive or the grace decides.
                PollEnd::Dropped => {
                    reg.suspect_until = Some(now + self.broker.inner.config.liveness_grace)
                }
                PollEnd::Empty => reg.suspect_until = None,
                PollEnd::Item => {}
            }
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
