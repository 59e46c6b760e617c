//! Membership: the heartbeat that says this instance is alive and learns who else is, what
//! happens when another instance is lost (relays waiting on it fail, requests it carried to
//! servers fail, requests served for it stop), the subscription to this instance's channel,
//! and leaving the cluster.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mcp_protocol::wire::PollItem;
use tracing::{info, warn};

use super::outbound::Failure;
use super::{lock, redis_error, Cluster};
use crate::Error;

impl Cluster {
    /// Watches request `request_id`, handed to a poll that `via` relayed (see `in_transit`).
    pub(super) fn track_transit(&self, request_id: String, via: &str) {
        lock(&self.inner.in_transit)
            .insert(request_id, (via.to_owned(), std::time::Instant::now()));
    }

    /// The item relayed to `via` provably did not get there (nobody received its frame):
    /// its request goes back to the queue for another poll (a tool never runs twice: the
    /// item never left), or fails now when it cannot (`item` unreadable, or it is no longer
    /// handed over here).
    pub(super) fn transit_failed(&self, request_id: &str, item: Option<PollItem>) {
        lock(&self.inner.in_transit).remove(request_id);
        let broker = &self.inner.broker;
        let requeued = item.is_some_and(|item| broker.requeue_undelivered(request_id, item));
        if !requeued {
            broker.fail_handed_over(request_id);
        }
    }

    /// Says this instance is alive and reads who else is; `true` when Redis had forgotten
    /// this instance although it beat before (Redis restarted empty, or a failover lost
    /// writes).
    pub(super) async fn beat(&self) -> Result<bool, Error> {
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
    pub(super) fn reap(&self) {
        let alive = lock(&self.inner.alive).clone();
        let broker = &self.inner.broker;
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
    pub(super) fn fail_outbound(&self, matches: impl Fn(&str) -> bool, why: &str) {
        let mut outbound = lock(&self.inner.outbound);
        outbound.retain(|_, relay| {
            if matches(&relay.home) {
                self.inner.relays_failed.fetch_add(1, Ordering::Relaxed);
                relay.fail(Failure::Lost(why.to_owned()), &self.inner.relay_buffered);
                false
            } else {
                true
            }
        });
    }

    /// Whether `instance` lives: known from the last beat, or (a newer instance) asked now.
    pub(super) async fn is_alive(&self, instance: &str) -> Result<bool, Error> {
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

    /// Leaves at once: the heartbeat key goes, so others take this instance's pools over.
    pub(super) async fn leave(&self) {
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
    pub(super) async fn subscribe_forever(self, router: axum::Router) {
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
                        self.on_frame(msg.get_payload_bytes(), &router);
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
}
