//! The session broker: registrations, their queues, pending requests and pools.
//!
//! The HTTP routes only talk to [`Broker`] through its API, one file per concern:
//! - here: registering and deregistering servers;
//! - `delivery`: items reaching servers through a [`Delivery`] (a held poll opens one);
//! - `submit`: client messages routed to a pool and queued;
//! - `answers`: the servers' answers matched to pending requests;
//! - `client`: the client sessions of `/mcp` and their streams;
//! - `lifecycle`: the sweeper, shutdown, counts and pool listings;
//! - `takeover` (feature `cluster`): what only a cluster asks, taking over a lost instance's
//!   registrations and sessions and the fate of the requests it carried.
//!
//! The data they share: `registration`, `queue`, `pending`, `pools`, `sessions` (client
//! sessions and their streams), `quota` (who holds what, the caps, the replay budget).
//!
//! All state lives behind one `std::sync::Mutex`: every operation is a few map and queue
//! updates with no `.await` under the lock, so a blocking mutex is both correct and faster
//! than an async one (see mini-redis's `db.rs`). Wake-ups go through `Notify` (held polls)
//! and `oneshot` (waiting clients); nothing sleeps in a loop.

mod answers;
mod client;
mod delivery;
mod lifecycle;
mod pending;
mod pools;
mod queue;
mod quota;
mod registration;
mod sessions;
mod submit;
#[cfg(feature = "cluster")]
mod takeover;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mcp_protocol::jsonrpc::{ErrorCode, ErrorObject, Message, RequestId, Response as RpcResponse};
use mcp_protocol::streamable::EventId;
use mcp_protocol::wire::{
    is_valid_pool_name, to_raw, Identity, PollItem, RegisterRequest, ReplyItem, RequestItem,
    ResponseEnvelope, ResponseStatusKind, SessionClosedItem, SessionIdKind,
};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use delivery::Delivery;
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
    /// Who is calling, when an OAuth access token said (modern registrations get it on the
    /// request item; the token itself never leaves the proxy).
    pub identity: Option<Arc<Identity>>,
}

/// What another instance needs to take a client session over.
#[derive(Clone, Debug)]
pub struct SessionRecord {
    /// The client session's id.
    pub client_session: String,
    /// Its pool (`""`: the default pool).
    pub pool: String,
    /// The registration it is pinned to.
    pub registration: String,
    /// Who opened it (the only caller that may use it), if anyone did with credentials.
    pub owner: Option<TokenId>,
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

    /// How many bodies the registration may post at once (its granted `poll_items`);
    /// `UnknownSession` when it is not here.
    pub fn answers_per_post(&self, session_id: &str) -> Result<usize, Error> {
        self.lock()
            .registrations
            .get(session_id)
            .map(|reg| reg.poll_items())
            .ok_or(Error::UnknownSession)
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
        // Its channel, if one is open, ends now (it finds the registration gone).
        if let Some((_, channel)) = &reg.channel {
            channel.cancel();
        }
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
}

/// The client id's JSON text, to compare with the id in a server's answer.
pub(crate) fn id_text(id: &RequestId) -> String {
    serde_json::to_string(id).unwrap_or_default()
}

#[cfg(test)]
mod tests;
