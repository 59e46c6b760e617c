//! The operator's console at `/console` (off unless `--console`): a read-only page of the
//! pools and their members (delivery, protocol versions, connected since, in flight, calls
//! per second and p50/p99 over the last minutes as small charts), client sessions per pool,
//! and the latest audit lines with filters, updated live over SSE at most once a second; in
//! a cluster, every instance's view gathered.
//!
//! Behind an admin login (a form, then an `HttpOnly`, `SameSite=Strict` cookie; never a
//! token in a URL), with a strict Content-Security-Policy. The page, its stylesheet and its
//! script are embedded in the binary and need no build step.
//!
//! - `session`: the admin credential, cookie sessions, the bound on login attempts.
//! - `stats`: calls per second and latency percentiles per member, from audit records.
//! - `view`: what the page shows, as JSON: this instance's view and the cluster's merged.
//! - `routes`: the handlers, the security headers, the SSE stream.
//!
//! Every store is bounded by a named constant: [`MAX_STREAMS`] live streams,
//! `session::MAX_SESSIONS` sessions, `session::LOGIN_*` login failures,
//! `audit::RECENT_RECORDS` records, `stats::MAX_SERIES` series, [`MAX_DOWN`] members
//! remembered as down.

mod routes;
mod session;
mod stats;
mod view;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) use routes::{
    assets, events, login, login_page, logout, page, security_headers, state_json, LOGIN_BODY_MAX,
};
pub use session::{
    ConsoleConfig, COOKIE, LOGIN_FAILURES_PER_ADDRESS, LOGIN_FAILURES_TOTAL,
    LOGIN_TRACKED_ADDRESSES, LOGIN_WINDOW, MAX_SESSIONS, MIN_PASSWORD_LEN, SESSION_IDLE,
    SESSION_LIFETIME,
};
pub use stats::{Chart, Summary, BUCKET, MAX_SERIES, WINDOW_BUCKETS};
pub use view::{DEFAULT_AUDIT_LINES, MAX_AUDIT_LINES};

use crate::audit::{Observer, Recent};
use crate::broker::{Broker, MemberInfo, PoolInfo};
use session::{LoginLimiter, Sessions};
use stats::Stats;

/// Live SSE streams of the console, in all; the next gets 503.
pub const MAX_STREAMS: usize = 16;
/// The console's page is updated at most this often.
pub const UPDATE_INTERVAL: Duration = Duration::from_secs(1);
/// A member gone from its pool is shown as down for this long.
pub const DOWN_MEMORY: Duration = Duration::from_secs(600);
/// Members remembered as down at once; beyond it the oldest is forgotten.
pub const MAX_DOWN: usize = 1024;

/// The console's state; one per proxy, shared by its handlers.
#[derive(Debug)]
pub struct Console {
    config: ConsoleConfig,
    /// Cookies get `Secure` when the proxy serves HTTPS.
    secure: bool,
    sessions: Sessions,
    logins: LoginLimiter,
    /// The latest audit records.
    recent: Recent,
    stats: Stats,
    /// SSE streams open now.
    streams: AtomicUsize,
    /// Members seen at the last tick, and those gone since (shown as down).
    members: Mutex<Members>,
}

#[derive(Debug, Default)]
struct Members {
    /// (pool, member) → what it looked like when last seen.
    seen: HashMap<(String, u64), MemberInfo>,
    /// (pool, member) → what it looked like, and when it went.
    down: HashMap<(String, u64), (MemberInfo, std::time::SystemTime, Instant)>,
}

impl Console {
    /// A console that admits `config`'s credential.
    pub fn new(config: ConsoleConfig, secure: bool) -> Console {
        Console {
            config,
            secure,
            sessions: Sessions::default(),
            logins: LoginLimiter::default(),
            recent: Recent::default(),
            stats: Stats::default(),
            streams: AtomicUsize::new(0),
            members: Mutex::new(Members::default()),
        }
    }

    /// What the audit tells the console: each record is kept and counted.
    pub fn observer(self: &Arc<Self>) -> Observer {
        let console = self.clone();
        Arc::new(move |record| {
            console.stats.observe(&record);
            console.recent.push(record);
        })
    }

    /// Notes which members came and went since the last look.
    pub fn tick(&self, broker: &Broker) {
        self.observe_members(&broker.servers());
    }

    /// Notes which members of `pools` (the broker's view now) came and went since the last
    /// look: a view looks too, so a member that lived less than a tick is still seen.
    fn observe_members(&self, pools: &[PoolInfo]) {
        let now = Instant::now();
        let mut live = HashMap::new();
        for pool in pools {
            let name = pool.name.clone().unwrap_or_default();
            for m in &pool.members {
                live.insert((name.clone(), m.member), m.clone());
            }
        }
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<_> = members
            .seen
            .keys()
            .filter(|k| !live.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(info) = members.seen.remove(&key) {
                members
                    .down
                    .insert(key, (info, std::time::SystemTime::now(), now));
            }
        }
        members
            .down
            .retain(|_, (_, _, at)| now.saturating_duration_since(*at) < DOWN_MEMORY);
        while members.down.len() > MAX_DOWN {
            let oldest = members
                .down
                .iter()
                .min_by_key(|(_, v)| v.2)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => members.down.remove(&k),
                None => break,
            };
        }
        members.seen = live;
    }

    /// Ticks every [`UPDATE_INTERVAL`] until `shutdown`.
    pub fn spawn_ticker(
        self: &Arc<Self>,
        broker: Broker,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let console = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPDATE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => console.tick(&broker),
                }
            }
        })
    }
}
