//! The broker over time: the sweeper (dead and expired registrations, idle sessions), the
//! shutdown, and the counts and pool listings operators read.

use super::*;

impl Broker {
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
}
