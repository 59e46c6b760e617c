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
//!
//! Everything a relay holds is bounded: a frame carries at most `--max-body-bytes` of body
//! after a head of at most `FRAME_HEAD_MAX` (64 KiB), and bigger ones are neither sent nor
//! parsed (`frame`); an answer waiting for a slow caller holds at most `RELAY_BUFFER_FRAMES`
//! (1024) frames and `RELAY_BUFFER_BYTES` (16 MiB), all answers of an instance together
//! `RELAY_BUFFER_TOTAL_BYTES` (256 MiB), past which that relay fails and its home stops
//! serving it, as when its caller disconnects (`outbound`).
//!
//! # Modules
//! - `directory`: pool, registration and session homes in Redis, takeovers, the refresh.
//! - `membership`: the heartbeat, losing instances, the subscription, leaving.
//! - `relay`: the middleware that serves a request here or relays it to its home.
//! - `outbound`: relays this instance waits on, and their bounded queues.
//! - `inbound`: frames arriving on this instance's channel; serving relayed requests.
//! - `frame`: the frames' format and size limit.
//! - `views`: what the cluster adds to `/healthz`, `/metrics` and `/servers`.

mod directory;
mod frame;
mod inbound;
mod membership;
mod outbound;
mod relay;
mod views;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use futures::future::BoxFuture;
use redis::aio::ConnectionManager;
use redis::Script;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::Broker;
use crate::config::ClusterConfig;
use crate::topology::Topology;
use crate::Error;

use directory::{DIRECTORY_REFRESH, ENTRY_SCRIPT, FORGET_SCRIPT, HOME_SCRIPT};

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
    outbound: Mutex<HashMap<u64, outbound::Outbound>>,
    /// Body bytes the relays waiting here hold for their callers, in all (bounded by
    /// `outbound::RELAY_BUFFER_TOTAL_BYTES`).
    relay_buffered: AtomicUsize,
    /// Requests this instance serves for others, by (caller instance, relay id).
    inbound: Mutex<HashMap<(String, u64), tokio::task::AbortHandle>>,
    next_id: AtomicU64,
    /// Requests relayed to other instances, served for them, and relays that failed.
    relayed_out: AtomicU64,
    relayed_in: AtomicU64,
    relays_failed: AtomicU64,
    /// This instance's broker: the pools it is home to.
    broker: Broker,
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

/// The longest a Redis connection attempt or command may take before it counts as failed.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// After a failed rate-limit call, Redis is not asked again for this long (local buckets
/// answer meanwhile), so an outage costs each request nothing.
const LIMIT_BACKOFF: Duration = Duration::from_secs(2);
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
    /// Connects to Redis and announces this instance (its first heartbeat); `broker` holds
    /// the pools this instance becomes home to.
    pub async fn connect(config: &ClusterConfig, broker: Broker) -> Result<Cluster, Error> {
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
                relay_buffered: AtomicUsize::new(0),
                inbound: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                relayed_out: AtomicU64::new(0),
                relayed_in: AtomicU64::new(0),
                relays_failed: AtomicU64::new(0),
                broker,
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

    /// Takes one request from the caller's shared bucket: `Ok(None)` allowed, `Ok(Some(wait))`
    /// refused for that long.
    async fn take_shared_token(
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
        let c = self.inner.broker.config();
        (
            c.request_timeout.max(c.max_poll_timeout) + Duration::from_secs(30),
            c.sse_keep_alive * 3 + Duration::from_secs(10),
        )
    }

    /// The most body bytes a frame carries: this instance's body limit.
    fn max_body_bytes(&self) -> usize {
        self.inner.broker.config().max_body_bytes
    }
}

impl Topology for Cluster {
    fn route(&self, req: Request, next: Next) -> BoxFuture<'static, Response> {
        Box::pin(self.clone().route_request(req, next))
    }

    fn take_token(
        &self,
        bucket: String,
        per_second: f64,
        burst: u32,
    ) -> BoxFuture<'static, Result<Option<Duration>, Error>> {
        let cluster = self.clone();
        Box::pin(async move { cluster.take_shared_token(&bucket, per_second, burst).await })
    }

    fn instance_id(&self) -> &str {
        &self.inner.id
    }

    fn gather(
        &self,
        path_and_query: String,
        headers: axum::http::HeaderMap,
        deadline: Duration,
    ) -> BoxFuture<'static, Vec<serde_json::Value>> {
        let cluster = self.clone();
        Box::pin(async move { cluster.gather(&path_and_query, &headers, deadline).await })
    }

    // Starts the subscriber, the heartbeat and the directory refresh; `router` serves the
    // requests other instances relay here. They stop when `shutdown` is cancelled, and this
    // instance then leaves the cluster at once (its pools are taken over without waiting
    // for its heartbeat to expire).
    fn start(&self, router: Router, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let cluster = self.clone();
        let broker = self.inner.broker.clone();
        tokio::spawn(async move {
            let subscriber = tokio::spawn(cluster.clone().subscribe_forever(router));
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
}
