//! Several proxy instances sharing one Redis: who is alive, which instance is home to each
//! pool and registration, a relay for requests that arrive at the wrong instance, and rate
//! limits shared by every instance.
//!
//! # Design
//! Each pool (server name) has one *home* instance whose in-memory [`Broker`] holds the
//! pool's registrations, queues, pending requests and client sessions, so every rule of the
//! single instance (pinning, failover, exactly-once answers, resumable streams, re-adoption)
//! holds by construction: one state machine decides. Redis holds the directory (live
//! instances, pool homes, registration homes), carries the relay, and keeps the shared rate
//! limit buckets.
//!
//! An instance that receives a request for a pool or registration homed elsewhere relays it
//! whole over Redis pub/sub to the home, which serves it through its own router and streams
//! the answer back (SSE included). So a client's message arriving at B reaches a server whose
//! polls are held by A, and the answer the server posts to C reaches the client waiting on B.
//!
//! Losing an instance: its heartbeat key expires within three heartbeats; every relay
//! waiting on it fails at once with [`Error::InstanceLost`] (never hangs). Registrations and
//! client sessions are recorded in Redis (home, pool, capabilities, owner token digest), so
//! the instance a server or client reaches next becomes the pool's home and takes them over
//! with their ids: servers keep polling and clients keep their sessions. Only what the lost
//! instance held in memory is gone: requests in flight (failed, never re-run) and the replay
//! logs of its SSE streams.
//!
//! Wake-ups are pub/sub messages; nothing polls Redis in a loop. The heartbeat is the one
//! periodic task (one pipeline a second).

mod frame;
mod relay;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use mcp_protocol::wire::SessionIdKind;
use redis::aio::ConnectionManager;
use redis::Script;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auth::TokenId;
use crate::broker::{Broker, RegistrationRecord, Short};
use crate::Error;

pub(crate) use relay::{carried_request, relay, CarriedRequest, Relayed};

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

/// The heartbeat's timing.
#[derive(Clone, Copy, Debug)]
struct Heartbeat {
    every: Duration,
}

impl Heartbeat {
    /// An instance whose key is older than this is dead: three missed beats.
    fn ttl(self) -> Duration {
        self.every * 3
    }
}

/// This instance's membership in a cluster; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("instance", &self.inner.id)
            .field("redis", &self.inner.redacted_url)
            .finish()
    }
}

struct Inner {
    /// This instance's id: random per process, so a restarted instance is a new one.
    id: String,
    prefix: String,
    redacted_url: String,
    heartbeat: Heartbeat,
    client: redis::Client,
    /// Commands and publishes; reconnects by itself.
    conn: ConnectionManager,
    /// Instances seen alive at the last beat.
    alive: Mutex<HashSet<String>>,
    /// Homes looked up before (`p:` pools, `r:` registrations), while their instance lives.
    homes: Mutex<HashMap<String, String>>,
    /// Requests this instance relayed and waits on, by relay id.
    outbound: Mutex<HashMap<u64, relay::Outbound>>,
    /// Requests this instance serves for others, by (caller instance, relay id).
    inbound: Mutex<HashMap<(String, u64), tokio::task::AbortHandle>>,
    next_id: AtomicU64,
    /// Requests relayed to other instances, served for them, and relays that failed.
    relayed_out: AtomicU64,
    relayed_in: AtomicU64,
    relays_failed: AtomicU64,
    /// The router relayed requests run through, and the broker behind it; set when serving
    /// starts.
    router: OnceLock<Router>,
    broker: OnceLock<Broker>,
    /// Requests handed to polls that other instances relayed, by request id: the instance
    /// that carried the item, and since when. If that instance is lost the item may never
    /// have reached its server, so the request fails at once rather than at its timeout.
    in_transit: Mutex<HashMap<String, (String, std::time::Instant)>>,
    /// Set by the first heartbeat: later, being added to the instance set again means Redis
    /// forgot this instance.
    joined: std::sync::atomic::AtomicBool,
    /// Whether this instance's channel is subscribed (relays are refused while it is not).
    subscribed: std::sync::atomic::AtomicBool,
    /// When the last heartbeat succeeded. Longer ago than three beats, this instance may have
    /// been taken for dead and its pools taken over: it stops trusting its cached homes.
    last_beat: Mutex<std::time::Instant>,
    /// The directory entries (`reg:…`, `sess:…`) written by the last refresh: those whose
    /// registration or session has since ended here are removed at the next one.
    recorded: Mutex<HashSet<String>>,
    /// Until when the shared rate limit is skipped after Redis failed it.
    limit_backoff: Mutex<Option<std::time::Instant>>,
    /// The subscription made before the first heartbeat (so no frame sent to this instance
    /// once others can see it is lost); consumed when serving starts.
    first_subscription: Mutex<Option<redis::aio::PubSub>>,
    scripts: Scripts,
}

struct Scripts {
    home: Script,
    bucket: Script,
    entry: Script,
    forget: Script,
}

/// Registration directory entries outlive a silent home by this much; the home refreshes
/// them every [`DIRECTORY_REFRESH`]. A stale entry is harmless: its instance is dead, or
/// it answers for the id like a single instance would.
const DIRECTORY_TTL: Duration = Duration::from_secs(600);
const DIRECTORY_REFRESH: Duration = Duration::from_secs(120);
/// The longest a Redis connection attempt or command may take before it counts as failed.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// After a failed rate-limit call, Redis is not asked again for this long (local buckets
/// answer meanwhile), so an outage costs each request nothing.
const LIMIT_BACKOFF: Duration = Duration::from_secs(2);
/// The home cache is cleared past this many entries (lookups then go to Redis again).
const HOME_CACHE_MAX: usize = 100_000;

/// The pool's home, taking the pool over when asked to (`ARGV[3] == "1"`) and the home is
/// missing or dead. One script, so two instances racing to take a pool agree on the winner.
const HOME_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and redis.call('EXISTS', ARGV[2] .. cur) == 1 then return cur end
if ARGV[3] ~= '1' then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
return ARGV[1]
"#;

/// Writes a directory entry (a registration or a client session) naming `ARGV[1]` its home,
/// unless another live instance already is: `1` written, `0` held elsewhere. After a
/// partition or a Redis restart this is what keeps two instances from both claiming one.
const ENTRY_SCRIPT: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'home')
if cur and cur ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. cur) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'home', ARGV[1], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#;

/// Deletes a directory entry only while it still names `ARGV[1]` as its home.
const FORGET_SCRIPT: &str = r#"
if redis.call('HGET', KEYS[1], 'home') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// A token bucket shared by every instance: `{allowed, seconds to wait}`. The clock is
/// Redis's, so instances with skewed clocks agree.
const BUCKET_SCRIPT: &str = r#"
local rate = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 't', 'n')
local last = tonumber(b[1]) or now
local tokens = tonumber(b[2]) or cap
tokens = math.min(cap, tokens + math.max(0, now - last) * rate)
local ok, wait = 0, 0
if tokens >= 1 then tokens = tokens - 1; ok = 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 't', tostring(now), 'n', tostring(tokens))
redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate * 1000) + 1000)
return {ok, tostring(wait)}
"#;

/// Where a request is served.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// Here.
    Local,
    /// On this other live instance.
    Remote(String),
}

/// Locks `mutex`, taking the state as it is after a panic elsewhere: every lock here guards
/// plain maps and values updated in one step, never across an `.await`.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn redis_error(what: &str, e: redis::RedisError) -> Error {
    Error::ClusterUnavailable(format!("{what}: {e}"))
}

impl Cluster {
    /// Connects to Redis and announces this instance (its first heartbeat).
    pub async fn connect(config: &ClusterConfig) -> Result<Cluster, Error> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| Error::ClusterUnavailable(format!("{}: {e}", config.redacted_url())))?;
        // Fail fast when Redis is down: a request that needs it gets 503 in about a second
        // (the rate limit then falls back to local buckets) instead of waiting on retries.
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = client
            .get_connection_manager_with_config(manager)
            .await
            .map_err(|e| redis_error(&config.redacted_url(), e))?;
        let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        // Subscribed before the first heartbeat makes this instance visible; frames that
        // arrive before serving starts wait in the connection until it does.
        let mut pubsub = client
            .get_async_pubsub()
            .await
            .map_err(|e| redis_error(&config.redacted_url(), e))?;
        pubsub
            .subscribe(format!("{}to:{id}", config.prefix))
            .await
            .map_err(|e| redis_error(&config.redacted_url(), e))?;
        let cluster = Cluster {
            inner: Arc::new(Inner {
                id,
                prefix: config.prefix.clone(),
                redacted_url: config.redacted_url(),
                heartbeat: Heartbeat {
                    every: config.heartbeat.max(Duration::from_millis(50)),
                },
                client,
                conn,
                alive: Mutex::new(HashSet::new()),
                homes: Mutex::new(HashMap::new()),
                outbound: Mutex::new(HashMap::new()),
                inbound: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                relayed_out: AtomicU64::new(0),
                relayed_in: AtomicU64::new(0),
                relays_failed: AtomicU64::new(0),
                router: OnceLock::new(),
                broker: OnceLock::new(),
                in_transit: Mutex::new(HashMap::new()),
                limit_backoff: Mutex::new(None),
                recorded: Mutex::new(HashSet::new()),
                last_beat: Mutex::new(std::time::Instant::now()),
                // The first subscription is made in `connect`.
                subscribed: std::sync::atomic::AtomicBool::new(true),
                joined: std::sync::atomic::AtomicBool::new(false),
                first_subscription: Mutex::new(Some(pubsub)),
                scripts: Scripts {
                    home: Script::new(HOME_SCRIPT),
                    bucket: Script::new(BUCKET_SCRIPT),
                    entry: Script::new(ENTRY_SCRIPT),
                    forget: Script::new(FORGET_SCRIPT),
                },
            }),
        };
        cluster.beat().await?;
        info!(instance = %cluster.inner.id, redis = %cluster.inner.redacted_url, "joined the cluster");
        Ok(cluster)
    }

    /// This instance's id in the cluster.
    pub fn instance_id(&self) -> &str {
        &self.inner.id
    }

    /// Requests relayed to other instances, requests served for them, and relays that failed
    /// (for `/metrics`).
    pub fn relay_counts(&self) -> (u64, u64, u64) {
        (
            self.inner.relayed_out.load(Ordering::Relaxed),
            self.inner.relayed_in.load(Ordering::Relaxed),
            self.inner.relays_failed.load(Ordering::Relaxed),
        )
    }

    /// The instances alive at the last heartbeat, this one included.
    pub fn instances(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.inner.alive).iter().cloned().collect();
        v.sort();
        v
    }

    fn key(&self, what: &str) -> String {
        format!("{}{what}", self.inner.prefix)
    }

    fn channel(&self, instance: &str) -> String {
        self.key(&format!("to:{instance}"))
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// Watches request `request_id`, handed to a poll that `via` relayed (see `in_transit`).
    fn track_transit(&self, request_id: String, via: &str) {
        lock(&self.inner.in_transit)
            .insert(request_id, (via.to_owned(), std::time::Instant::now()));
    }

    /// The item relayed to `via` did not get there: its request fails now.
    fn transit_failed(&self, request_id: &str) {
        lock(&self.inner.in_transit).remove(request_id);
        if let Some(broker) = self.inner.broker.get() {
            broker.fail_handed_over(request_id);
        }
    }

    /// Starts the subscriber, the heartbeat and the directory refresh; `router` serves the
    /// requests other instances relay here. They stop when `shutdown` is cancelled, and this
    /// instance then leaves the cluster at once (its pools are taken over without waiting
    /// for its heartbeat to expire).
    pub(crate) fn start(
        &self,
        router: Router,
        broker: Broker,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let _ = self.inner.router.set(router);
        let _ = self.inner.broker.set(broker.clone());
        let cluster = self.clone();
        tokio::spawn(async move {
            let subscriber = tokio::spawn(cluster.clone().subscribe_forever());
            let mut beat = tokio::time::interval(cluster.inner.heartbeat.every);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut refresh = tokio::time::interval(DIRECTORY_REFRESH);
            refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = beat.tick() => {
                        match cluster.beat().await {
                            // Redis lost its data (restarted empty): write back what this
                            // instance is home to, now rather than at the next refresh.
                            Ok(true) => {
                                warn!("the cluster's Redis forgot this instance; restoring its directory entries");
                                if let Err(e) = cluster.refresh_directory(&broker).await {
                                    warn!(error = %e, "cluster directory restore failed");
                                }
                            }
                            Ok(false) => {}
                            Err(e) => warn!(error = %e, "cluster heartbeat failed"),
                        }
                        cluster.reap();
                    }
                    _ = refresh.tick() => {
                        if let Err(e) = cluster.refresh_directory(&broker).await {
                            warn!(error = %e, "cluster directory refresh failed");
                        }
                    }
                }
            }
            subscriber.abort();
            cluster.leave().await;
        })
    }

    /// Says this instance is alive and reads who else is; `true` when Redis had forgotten
    /// this instance although it beat before (Redis restarted empty, or a failover lost
    /// writes).
    async fn beat(&self) -> Result<bool, Error> {
        let ttl = self.inner.heartbeat.ttl();
        let (added, members): (u64, Vec<String>) = redis::pipe()
            .cmd("SET")
            .arg(self.key(&format!("inst:{}", self.inner.id)))
            .arg(1)
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(self.key("instances"))
            .arg(&self.inner.id)
            .cmd("SMEMBERS")
            .arg(self.key("instances"))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| redis_error("heartbeat", e))?;
        let cut_off = {
            let mut last = lock(&self.inner.last_beat);
            let cut_off = last.elapsed() > ttl;
            *last = std::time::Instant::now();
            cut_off
        };
        // Forgotten by Redis (restarted empty), or cut off long enough to be taken for dead:
        // either way the directory must be checked and written back.
        let forgotten = (added == 1 || cut_off) && self.inner.joined.swap(true, Ordering::Relaxed);
        if forgotten {
            // What this instance remembered about homes predates the gap.
            lock(&self.inner.homes).clear();
        }
        let keys: Vec<String> = members
            .iter()
            .map(|m| self.key(&format!("inst:{m}")))
            .collect();
        let beats: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| redis_error("heartbeat", e))?;
        let mut alive = HashSet::new();
        let mut dead = Vec::new();
        for (member, beat) in members.into_iter().zip(beats) {
            if beat.is_some() {
                alive.insert(member);
            } else {
                dead.push(member);
            }
        }
        if !dead.is_empty() {
            let _: Result<(), _> = redis::cmd("SREM")
                .arg(self.key("instances"))
                .arg(&dead)
                .query_async(&mut self.conn())
                .await;
        }
        let gone: Vec<String> = {
            let mut current = lock(&self.inner.alive);
            let gone = current.difference(&alive).cloned().collect();
            *current = alive;
            gone
        };
        for instance in &gone {
            info!(instance = %instance, "a proxy instance left the cluster");
        }
        if !gone.is_empty() {
            let gone: HashSet<&String> = gone.iter().collect();
            lock(&self.inner.homes).retain(|_, home| !gone.contains(home));
        }
        Ok(forgotten)
    }

    /// Fails relays waiting on dead instances, stops serving relays for dead callers, and
    /// fails the requests dead instances were carrying to servers.
    fn reap(&self) {
        let alive = lock(&self.inner.alive).clone();
        if let Some(broker) = self.inner.broker.get() {
            let doomed: Vec<String> = {
                let mut transit = lock(&self.inner.in_transit);
                let doomed = transit
                    .iter()
                    .filter(|(_, (via, _))| !alive.contains(via))
                    .map(|(id, _)| id.clone())
                    .collect::<Vec<_>>();
                for id in &doomed {
                    transit.remove(id);
                }
                // Answered (or timed out) requests need no watching.
                let pending: HashSet<String> = broker
                    .still_pending(transit.keys().map(String::as_str))
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                transit.retain(|id, _| pending.contains(id));
                doomed
            };
            for id in doomed {
                broker.fail_handed_over(&id);
            }
        }
        self.fail_outbound(
            |home| !alive.contains(home),
            "the proxy instance serving it left",
        );
        let mut inbound = lock(&self.inner.inbound);
        inbound.retain(|(from, _), task| {
            let keep = alive.contains(from);
            if !keep {
                task.abort();
            }
            keep
        });
    }

    /// Fails every outbound relay whose home matches.
    fn fail_outbound(&self, matches: impl Fn(&str) -> bool, why: &str) {
        let mut outbound = lock(&self.inner.outbound);
        outbound.retain(|_, relay| {
            if matches(&relay.home) {
                self.inner.relays_failed.fetch_add(1, Ordering::Relaxed);
                let _ = relay.tx.send(relay::Event::Fail(why.to_owned()));
                false
            } else {
                true
            }
        });
    }

    /// Whether `instance` lives: known from the last beat, or (a newer instance) asked now.
    async fn is_alive(&self, instance: &str) -> Result<bool, Error> {
        if lock(&self.inner.alive).contains(instance) {
            return Ok(true);
        }
        let exists: bool = redis::cmd("EXISTS")
            .arg(self.key(&format!("inst:{instance}")))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| redis_error("instance lookup", e))?;
        if exists {
            lock(&self.inner.alive).insert(instance.to_owned());
        }
        Ok(exists)
    }

    fn target(&self, home: String) -> Target {
        if home == self.inner.id {
            Target::Local
        } else {
            Target::Remote(home)
        }
    }

    fn cached_home(&self, key: &str) -> Option<String> {
        let fenced = lock(&self.inner.last_beat).elapsed() > self.inner.heartbeat.ttl();
        if fenced {
            // Cut off from Redis for longer than others wait: whatever this instance
            // believed about homes may be stale, so every route asks Redis (and gets 503
            // while it cannot) rather than serving a pool another instance now holds.
            return None;
        }
        let home = lock(&self.inner.homes).get(key).cloned()?;
        // Only homes alive at the last beat count; others are asked again.
        lock(&self.inner.alive).contains(&home).then_some(home)
    }

    fn cache_home(&self, key: String, home: &str) {
        let mut homes = lock(&self.inner.homes);
        if homes.len() >= HOME_CACHE_MAX {
            homes.clear();
        }
        homes.insert(key, home.to_owned());
    }

    /// The home of `pool`. With `claim`, a pool without a live home becomes this instance's
    /// (a server registering, or a legacy id being re-adopted); without, it is served here,
    /// which answers as a single instance would (no server).
    pub(crate) async fn pool_home(&self, pool: &str, claim: bool) -> Result<Target, Error> {
        let cache_key = format!("p:{pool}");
        if let Some(home) = self.cached_home(&cache_key) {
            return Ok(self.target(home));
        }
        let home: Option<String> = self
            .inner
            .scripts
            .home
            .key(self.key(&format!("pool:{pool}")))
            .arg(&self.inner.id)
            .arg(self.key("inst:"))
            .arg(if claim { "1" } else { "0" })
            .arg(DIRECTORY_TTL.as_millis() as u64)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| redis_error("pool lookup", e))?;
        match home {
            Some(home) => {
                if home == self.inner.id && claim {
                    debug!(pool, "this instance is the pool's home");
                }
                self.cache_home(cache_key, &home);
                Ok(self.target(home))
            }
            None => Ok(Target::Local),
        }
    }

    /// The home of registration `session_id`. A registration whose home was lost is
    /// served by its pool's home (taking the pool over if need be), which adopts it
    /// ([`Cluster::adopt_orphan`]); an unrecorded id of the legacy form by the default pool's
    /// home (re-adoption, as after a restart); any other unknown id here (404).
    pub(crate) async fn registration_home(&self, session_id: &str) -> Result<Target, Error> {
        let cache_key = format!("r:{session_id}");
        if let Some(home) = self.cached_home(&cache_key) {
            return Ok(self.target(home));
        }
        let kind = SessionIdKind::of(session_id);
        if kind.is_some() {
            let (home, pool): (Option<String>, Option<String>) = redis::cmd("HMGET")
                .arg(self.key(&format!("reg:{session_id}")))
                .arg("home")
                .arg("pool")
                .query_async(&mut self.conn())
                .await
                .map_err(|e| redis_error("registration lookup", e))?;
            if let Some(home) = home {
                if self.is_alive(&home).await? {
                    self.cache_home(cache_key, &home);
                    return Ok(self.target(home));
                }
                return self.pool_home(pool.as_deref().unwrap_or(""), true).await;
            }
        }
        match kind {
            Some(SessionIdKind::Legacy) => self.pool_home("", true).await,
            _ => Ok(Target::Local),
        }
    }

    /// Records a registration (with what another instance needs to take it over) as living
    /// here, before its id is handed out.
    pub(crate) async fn record_registration(
        &self,
        record: &RegistrationRecord,
    ) -> Result<(), Error> {
        let mut pipe = redis::pipe();
        self.registration_entry(&mut pipe, record);
        self.write_entries(pipe).await?;
        self.note_recorded(format!("reg:{}", record.session_id));
        Ok(())
    }

    /// The command that writes `record`'s directory entry, naming this instance its home
    /// unless another live instance is (see `ENTRY_SCRIPT`).
    fn registration_entry(&self, pipe: &mut redis::Pipeline, record: &RegistrationRecord) {
        let capabilities = match &record.capabilities {
            Some(c) => serde_json::to_string(c).expect("capabilities serialize"),
            None => String::new(),
        };
        let owner = record
            .owner
            .as_ref()
            .map(TokenId::digest_hex)
            .unwrap_or_default();
        self.entry(
            pipe,
            &format!("reg:{}", record.session_id),
            &[
                ("pool", record.pool.as_str()),
                ("caps", &capabilities),
                ("owner", &owner),
            ],
        );
    }

    /// Remembers an entry this instance wrote, so the refresh removes it once it ends here.
    fn note_recorded(&self, what: String) {
        lock(&self.inner.recorded).insert(what);
    }

    /// One `ENTRY_SCRIPT` call for `what` with these fields.
    fn entry(&self, pipe: &mut redis::Pipeline, what: &str, fields: &[(&str, &str)]) {
        let cmd = pipe
            .cmd("EVALSHA")
            .arg(self.inner.scripts.entry.get_hash())
            .arg(1)
            .arg(self.key(what))
            .arg(&self.inner.id)
            .arg(self.key("inst:"))
            .arg(DIRECTORY_TTL.as_millis() as u64);
        for (field, value) in fields {
            cmd.arg(*field).arg(*value);
        }
    }

    /// Runs `pipe` (entry writes) after loading the entry script; one `1`/`0` per entry.
    async fn write_entries(&self, pipe: redis::Pipeline) -> Result<Vec<i64>, Error> {
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(ENTRY_SCRIPT)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(|e| redis_error("directory", e))?;
        pipe.query_async(&mut self.conn())
            .await
            .map_err(|e| redis_error("directory", e))
    }

    /// Forgets registration `session_id` (it deregistered): no instance may take it over.
    pub(crate) async fn forget_registration(&self, session_id: &str) {
        lock(&self.inner.homes).remove(&format!("r:{session_id}"));
        let result: Result<(), _> = redis::cmd("DEL")
            .arg(self.key(&format!("reg:{session_id}")))
            .query_async(&mut self.conn())
            .await;
        if let Err(e) = result {
            warn!(error = %e, "could not remove a registration from the cluster directory");
        }
    }

    /// Before a registration route is served here: when `session_id` is unknown to `broker`
    /// but recorded for an instance that is lost, take it over with its recorded pool,
    /// capabilities and owner, so its server carries on without registering again. Only the
    /// pool's home gets here for it (see [`Cluster::registration_home`]), so one instance
    /// adopts it.
    pub(crate) async fn adopt_orphan(&self, broker: &Broker, session_id: &str) {
        if SessionIdKind::of(session_id).is_none() || broker.knows(session_id) {
            return;
        }
        let key = self.key(&format!("reg:{session_id}"));
        let record: Result<HashMap<String, String>, _> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut self.conn())
            .await;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cluster directory unavailable; registration not taken over");
                return;
            }
        };
        let Some(home) = record.get("home") else {
            return;
        };
        // Recorded here but unknown: it left or died here; not ours to bring back.
        if *home == self.inner.id || self.is_alive(home).await.unwrap_or(true) {
            return;
        }
        let capabilities = match record.get("caps").map(String::as_str) {
            None | Some("") => None,
            Some(json) => match serde_json::from_str(json) {
                Ok(c) => Some(c),
                Err(_) => return,
            },
        };
        let owner = match record.get("owner").map(String::as_str) {
            None | Some("") => None,
            Some(hex) => match TokenId::from_digest_hex(hex) {
                Some(id) => Some(id),
                None => return,
            },
        };
        let pool = record.get("pool").cloned().unwrap_or_default();
        // Only the pool's home takes its registrations over (claiming the pool if nobody
        // holds it), so one instance has each.
        if self.pool_home(&pool, true).await.ok() != Some(Target::Local) {
            return;
        }
        if broker.adopt(session_id, &pool, capabilities.clone(), owner) {
            let record = RegistrationRecord {
                session_id: session_id.to_owned(),
                pool,
                capabilities,
                owner,
            };
            if let Err(e) = self.record_registration(&record).await {
                warn!(error = %e, "could not record a registration taken over");
            }
        }
    }

    /// Records client session `client_session` (just opened here, pinned to `registration`),
    /// so the pool's next home can take it over if this instance is lost.
    pub(crate) async fn record_session(
        &self,
        client_session: &str,
        pool: &str,
        registration: &str,
    ) {
        let mut pipe = redis::pipe();
        self.session_entry(&mut pipe, client_session, pool, registration);
        match self.write_entries(pipe).await {
            Ok(_) => self.note_recorded(format!("sess:{client_session}")),
            Err(e) => {
                warn!(error = %e, "could not record a client session in the cluster directory")
            }
        }
    }

    /// The command that writes a client session's directory entry (see `ENTRY_SCRIPT`).
    fn session_entry(
        &self,
        pipe: &mut redis::Pipeline,
        client_session: &str,
        pool: &str,
        registration: &str,
    ) {
        self.entry(
            pipe,
            &format!("sess:{client_session}"),
            &[("pool", pool), ("registration", registration)],
        );
    }

    /// Forgets client session `client_session` (the client ended it).
    pub(crate) async fn forget_session(&self, client_session: &str) {
        let result: Result<(), _> = redis::cmd("DEL")
            .arg(self.key(&format!("sess:{client_session}")))
            .query_async(&mut self.conn())
            .await;
        if let Err(e) = result {
            warn!(error = %e, "could not remove a client session from the cluster directory");
        }
    }

    /// Before a client route of `pool` is served here with `client_session`: when the
    /// session is unknown to `broker` but recorded for a lost instance, take it (and its
    /// registration) over, so the client carries on without initializing again.
    pub(crate) async fn adopt_session(&self, broker: &Broker, pool: &str, client_session: &str) {
        if broker.session_registration(client_session).is_some() {
            return;
        }
        let key = self.key(&format!("sess:{client_session}"));
        let record: HashMap<String, String> = match redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut self.conn())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cluster directory unavailable; client session not taken over");
                return;
            }
        };
        let (Some(home), Some(recorded_pool), Some(registration)) = (
            record.get("home"),
            record.get("pool"),
            record.get("registration"),
        ) else {
            return;
        };
        if *home == self.inner.id
            || recorded_pool != pool
            || self.is_alive(home).await.unwrap_or(true)
        {
            return;
        }
        // Only the pool's home takes its sessions over (claiming the pool if nobody holds
        // it): two instances adopting one session would split its client from its server.
        if self.pool_home(pool, true).await.ok() != Some(Target::Local) {
            return;
        }
        self.adopt_orphan(broker, registration).await;
        if broker.adopt_session(client_session, pool, registration) {
            self.record_session(client_session, pool, registration)
                .await;
        }
    }

    /// Refreshes the directory entries of the registrations and client sessions homed here
    /// (and records re-adopted legacy ids, which have no entry yet), and the homes of the
    /// pools with members here, claiming those with no home recorded (Redis forgot them). A
    /// pool without members anywhere is forgotten after `DIRECTORY_TTL`.
    async fn refresh_directory(&self, broker: &Broker) -> Result<(), Error> {
        // Pools: claim (or keep) each pool with members here. One that another live instance
        // holds now (it took the pool over while this one was cut off from Redis) is not
        // ours any more: its members here are dropped, and their servers, told 404, register
        // again with the pool's home.
        let registrations = broker.registration_records();
        for pool in broker.pool_names() {
            if self.pool_home(&pool, true).await? != Target::Local {
                warn!(
                    pool,
                    "another instance took this pool over; dropping its members here"
                );
                for record in registrations.iter().filter(|r| r.pool == pool) {
                    let _ = broker.deregister(&record.session_id);
                }
            } else {
                let _: Result<(), _> = redis::cmd("PEXPIRE")
                    .arg(self.key(&format!("pool:{pool}")))
                    .arg(DIRECTORY_TTL.as_millis() as u64)
                    .query_async(&mut self.conn())
                    .await;
            }
        }
        // Whole entries, not just their expiry: after Redis lost its data they are written
        // back with everything a takeover needs. An entry another live instance holds is
        // dropped here likewise.
        let registrations: Vec<RegistrationRecord> = registrations
            .into_iter()
            .filter(|r| broker.knows(&r.session_id))
            .collect();
        for chunk in registrations.chunks(500) {
            let mut pipe = redis::pipe();
            for record in chunk {
                self.registration_entry(&mut pipe, record);
            }
            for (record, written) in chunk.iter().zip(self.write_entries(pipe).await?) {
                if written == 0 {
                    warn!(session = %Short(&record.session_id), "another instance took this registration over; dropping it here");
                    let _ = broker.deregister(&record.session_id);
                }
            }
        }
        let sessions = broker.session_records();
        for chunk in sessions.chunks(500) {
            let mut pipe = redis::pipe();
            for (id, pool, registration) in chunk {
                self.session_entry(&mut pipe, id, pool, registration);
            }
            for ((id, _, _), written) in chunk.iter().zip(self.write_entries(pipe).await?) {
                if written == 0 {
                    broker.forget_session(id);
                }
            }
        }
        // Entries of registrations that died or expired here, and of sessions that ended,
        // since the last refresh: removed, so no instance takes them over later.
        let current: HashSet<String> = registrations
            .iter()
            .map(|r| format!("reg:{}", r.session_id))
            .chain(sessions.iter().map(|(id, _, _)| format!("sess:{id}")))
            .collect();
        let ended: Vec<String> = {
            let mut recorded = lock(&self.inner.recorded);
            let ended = recorded.difference(&current).cloned().collect();
            *recorded = current;
            ended
        };
        for what in ended {
            let _: Result<i64, _> = self
                .inner
                .scripts
                .forget
                .key(self.key(&what))
                .arg(&self.inner.id)
                .invoke_async(&mut self.conn())
                .await;
        }
        Ok(())
    }

    /// Takes one request from the caller's shared bucket: `Ok(None)` allowed, `Ok(Some(wait))`
    /// refused for that long.
    pub(crate) async fn take_token(
        &self,
        bucket: &str,
        per_second: f64,
        burst: u32,
    ) -> Result<Option<Duration>, Error> {
        let backing_off =
            lock(&self.inner.limit_backoff).is_some_and(|until| std::time::Instant::now() < until);
        if backing_off {
            return Err(Error::ClusterUnavailable("rate limit: backing off".into()));
        }
        let result: Result<(i64, String), _> = self
            .inner
            .scripts
            .bucket
            .key(self.key(&format!("rl:{bucket}")))
            .arg(per_second)
            .arg(burst.max(1))
            .invoke_async(&mut self.conn())
            .await;
        let (ok, wait) = result.map_err(|e| {
            *lock(&self.inner.limit_backoff) = Some(std::time::Instant::now() + LIMIT_BACKOFF);
            warn!(error = %e, backoff = ?LIMIT_BACKOFF, "shared rate limit unavailable; each instance limits alone meanwhile");
            redis_error("rate limit", e)
        })?;
        if ok == 1 {
            return Ok(None);
        }
        let wait = wait.parse::<f64>().unwrap_or(1.0);
        Ok(Some(
            Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX),
        ))
    }

    /// Leaves at once: the heartbeat key goes, so others take this instance's pools over.
    async fn leave(&self) {
        let _: Result<(), _> = redis::pipe()
            .cmd("DEL")
            .arg(self.key(&format!("inst:{}", self.inner.id)))
            .ignore()
            .cmd("SREM")
            .arg(self.key("instances"))
            .arg(&self.inner.id)
            .ignore()
            .query_async(&mut self.conn())
            .await;
        self.fail_outbound(|_| true, "this proxy instance is shutting down");
        info!(instance = %self.inner.id, "left the cluster");
    }

    /// Runs the subscription to this instance's channel, reconnecting when it drops. Frames
    /// published while it was down are lost, so every relay in flight then fails (clearly)
    /// rather than waiting for frames that will never come.
    async fn subscribe_forever(self) {
        use futures::StreamExt;
        let channel = self.channel(&self.inner.id);
        let mut delay = Duration::from_millis(100);
        loop {
            let first = lock(&self.inner.first_subscription).take();
            let subscribed = async {
                if let Some(pubsub) = first {
                    return Ok(pubsub);
                }
                let mut pubsub = self.inner.client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            }
            .await;
            match subscribed {
                Ok(pubsub) => {
                    delay = Duration::from_millis(100);
                    self.inner.subscribed.store(true, Ordering::Relaxed);
                    let mut messages = pubsub.into_on_message();
                    while let Some(msg) = messages.next().await {
                        self.on_frame(msg.get_payload_bytes());
                    }
                    warn!("cluster subscription lost; resubscribing");
                }
                Err(e) => warn!(error = %e, "cluster subscription failed; retrying"),
            }
            // Frames for the relays waiting here may have been lost: fail them, and take no
            // new ones until subscribed again. Requests served here for others go on: they
            // publish on the other connection, and a caller that left cancels them again
            // when their next frame finds it gone.
            self.inner.subscribed.store(false, Ordering::Relaxed);
            self.fail_outbound(|_| true, "the proxy lost its cluster subscription");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Publishes `frame` to `instance`'s channel; [`Error::InstanceLost`] when nobody
    /// listens there (the instance died, or is between two subscriptions).
    async fn publish(&self, instance: &str, frame: Vec<u8>) -> Result<(), Error> {
        let receivers: u64 = redis::cmd("PUBLISH")
            .arg(self.channel(instance))
            .arg(frame)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| redis_error("relay", e))?;
        if receivers == 0 {
            return Err(Error::InstanceLost);
        }
        Ok(())
    }

    /// How long a relay waits for its answer's head, and then between two pieces of it.
    fn deadlines(&self) -> (Duration, Duration) {
        match self.inner.broker.get().map(Broker::config) {
            Some(c) => (
                c.request_timeout.max(c.max_poll_timeout) + Duration::from_secs(30),
                c.sse_keep_alive * 3 + Duration::from_secs(10),
            ),
            None => (Duration::from_secs(330), Duration::from_secs(55)),
        }
    }

    /// Opens an outbound relay: its id and the events of its answer.
    fn open_outbound(&self, home: &str) -> (u64, mpsc::UnboundedReceiver<relay::Event>) {
        self.inner.relayed_out.fetch_add(1, Ordering::Relaxed);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.inner.outbound).insert(
            id,
            relay::Outbound {
                home: home.to_owned(),
                tx,
            },
        );
        (id, rx)
    }

    fn close_outbound(&self, id: u64) {
        lock(&self.inner.outbound).remove(&id);
    }
}
