//! An idle reverse channel through nginx, whose `/channel` location keeps nginx's default 60 s
//! `proxy_read_timeout`: a reverse server in a pool of its own ([`POOL`]) gets no traffic for
//! [`IDLE_FOR`] while the other scenarios run, then a call through nginx is answered over the
//! same channel. "Same" is read from two sides: the proxy's `idle_seconds` for the member (a
//! channel opening or closing resets it) covers the whole wait, and the reverse server logged
//! "channel open" once and never a broken channel.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinHandle;

use super::traffic::{client, echo};
use super::Cluster;
use crate::procs::{self, Proc};

/// The pool of the idle reverse server.
pub(super) const POOL: &str = "quiet";

/// How long the channel stays idle: over twice nginx's default 60 s read timeout.
const IDLE_FOR: Duration = Duration::from_secs(130);

/// `idle_seconds` is rounded to the millisecond, and the two clocks are read a request apart.
const SLACK: f64 = 0.5;

/// When the idle member was first seen with nothing but its channel open: from then on the
/// proxy records no activity for it unless a channel opens or closes.
pub(super) struct Watch(JoinHandle<Result<Instant, String>>);

/// Starts watching [`POOL`] through `url` (the other scenarios run meanwhile).
pub(super) fn watch(rt: &tokio::runtime::Runtime, url: &str, deadline: Duration) -> Watch {
    let url = url.to_owned();
    Watch(rt.spawn(async move {
        let start = Instant::now();
        loop {
            let member = the_member(&url).await;
            // Only its channel: a poll's end would count as activity (it takes none in `ws`
            // mode, and this makes sure).
            if member
                .as_ref()
                .is_ok_and(|m| m["delivery"] == "channel" && m["polls_open"] == 1)
            {
                return Ok(Instant::now());
            }
            if start.elapsed() > deadline {
                return Err(format!(
                    "pool {POOL} never had only its channel open: {member:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }))
}

/// The one member of [`POOL`] in `GET /servers` through `url`.
async fn the_member(url: &str) -> Result<Value, String> {
    let members = procs::pool_members(url, Some(POOL)).await?;
    match members.as_slice() {
        [member] => Ok(member.clone()),
        other => Err(format!("pool {POOL} has {} members", other.len())),
    }
}

/// What the idle reverse server logged about its channels: (opened, broke).
fn channel_log(reverse: &Proc) -> (usize, usize) {
    let lines = reverse.output();
    let opened = lines.iter().filter(|l| l.contains("channel open")).count();
    let broke = lines
        .iter()
        .filter(|l| l.contains("channel broken") || l.contains("keeps breaking"))
        .count();
    (opened, broke)
}

/// The `location = /channel { ... }` block of the nginx configuration the cluster runs.
fn channel_location(conf: &str) -> Option<&str> {
    let start = conf.find("location = /channel")?;
    let block = &conf[start..];
    Some(&block[..=block.find('}')?])
}

pub(super) fn idle_channel(cluster: &mut Cluster) -> Result<(), String> {
    let conf_path = format!("{}/nginx.conf", cluster.dir.path());
    let conf =
        std::fs::read_to_string(&conf_path).map_err(|e| format!("cannot read {conf_path}: {e}"))?;
    let location = channel_location(&conf).ok_or("nginx.conf has no /channel location")?;
    if location.contains("proxy_read_timeout") || location.contains("proxy_send_timeout") {
        return Err(format!(
            "the /channel location sets its own timeouts, so this proves nothing about \
             nginx's default 60 s: {location}"
        ));
    }
    let watch = cluster
        .idle_watch
        .take()
        .ok_or("the idle watch ran already")?;
    let since = cluster.rt.block_on(watch.0).map_err(|e| e.to_string())??;
    // The wait is what is tested: nothing happens on the channel but its pings.
    std::thread::sleep(IDLE_FOR.saturating_sub(since.elapsed()));
    let reverse = &cluster.idle_reverse;
    cluster.rt.block_on(async {
        let waited = since.elapsed().as_secs_f64();
        let member = the_member(&cluster.url).await?;
        let idle = member["idle_seconds"].as_f64().unwrap_or_default();
        if member["delivery"] != "channel" || idle + SLACK < waited {
            return Err(format!(
                "after {waited:.1} s without traffic the member shows delivery {} and \
                 idle_seconds {idle}: its channel closed or reopened meanwhile",
                member["delivery"]
            ));
        }
        let (opened, broke) = channel_log(reverse);
        if (opened, broke) != (1, 0) {
            return Err(format!(
                "the idle reverse server opened {opened} channels and logged {broke} breaks"
            ));
        }
        let quiet = client(&format!("{}/servers/{POOL}/message", cluster.url))?;
        echo(&quiet, "after the idle wait").await?;
        let member = the_member(&cluster.url).await?;
        if member["delivery"] != "channel" || channel_log(reverse) != (1, 0) {
            return Err(format!(
                "the call was answered, but the channel did not hold: {member}, log {:?}",
                channel_log(reverse)
            ));
        }
        println!(
            "     {waited:.1} s idle through nginx's default 60 s read timeout: idle_seconds \
             {idle}, one channel opened, none broken, then answered over it"
        );
        Ok(())
    })
}
