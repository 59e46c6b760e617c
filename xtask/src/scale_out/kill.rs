//! One proxy instance SIGKILLed under load, and what the survivors must do: every call in
//! flight ends right or fails fast, every pool serves again through nginx, and afterwards
//! everything is whole.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_client::text_of;
use serde_json::{json, Value};

use super::load::{describe, load_worker, shorten, Call, End, Log};
use super::traffic::{client, echo, many_calls, wait_members};
use super::{Cluster, DEFAULT_MEMBERS, HUNG, IN_FLIGHT_DEADLINE, NAMED, RECOVERY_DEADLINE, START};
use crate::procs::{self, Proc};

/// How long nginx may still send a new call to a killed instance on a kept-alive connection
/// (until it reads that connection's close).
const NGINX_NOTICES: Duration = Duration::from_millis(250);

/// The instance to kill: the default pool's home (so its pools must be taken over), when the
/// named pool's home is the other one, as [`super::start`] arranged.
fn victim(cluster: &Cluster) -> Result<(usize, String), String> {
    let pools = cluster.rt.block_on(procs::servers(&cluster.url))?;
    let home_of = |name: Value| {
        pools["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .and_then(|p| p["home"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("no home for pool {name} in /servers: {pools}"))
    };
    let default_home = home_of(Value::Null)?;
    let named_home = home_of(Value::String(NAMED.to_owned()))?;
    let mut ids = Vec::new();
    for i in &cluster.instances {
        let health = procs::healthz(&i.url).ok_or_else(|| format!("{} has no /healthz", i.name))?;
        ids.push(health["instance"].as_str().unwrap_or_default().to_owned());
    }
    let name_of = |id: &str| {
        ids.iter()
            .position(|i| i == id)
            .map(|v| cluster.instances[v].name)
            .ok_or_else(|| format!("home {id} is none of the instances {ids:?}"))
    };
    if default_home == named_home {
        return Err(format!(
            "both pools are homed on {}: the homes claimed at the start did not hold",
            name_of(&default_home)?
        ));
    }
    let v = ids.iter().position(|i| *i == default_home);
    let v = v.ok_or_else(|| format!("home {default_home} is none of the instances {ids:?}"))?;
    Ok((
        v,
        format!(
            "the default pool's home; {NAMED}'s home is {}",
            name_of(&named_home)?
        ),
    ))
}

pub(super) fn kill_under_load(cluster: &mut Cluster) -> Result<(), String> {
    const ROUTES: [(&str, &str, bool, usize); 3] = [
        ("default /message", "/message", false, 12),
        ("alpha /message", "/servers/alpha/message", false, 4),
        ("default /mcp", "/mcp", true, 4),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let log: Log = Arc::default();
    let mut workers = Vec::new();
    for (route, path, session, count) in ROUTES {
        for w in 0..count {
            workers.push(cluster.rt.spawn(load_worker(
                route,
                format!("{}{path}", cluster.url),
                w,
                session,
                stop.clone(),
                log.clone(),
            )));
        }
    }
    let calls = || log.lock().expect("log lock").len();
    wait_for(Duration::from_secs(30), || calls() >= 300)?;

    // Calls pending on the servers when the instance dies: each sleeps 2.5 s.
    let sleepers: Vec<_> = (0..6)
        .map(|i| {
            let endpoint = if i % 2 == 0 {
                format!("{}/message", cluster.url)
            } else {
                format!("{}/servers/{NAMED}/message", cluster.url)
            };
            cluster.rt.spawn(async move {
                let client = client(&endpoint)?;
                let started = Instant::now();
                let end =
                    tokio::time::timeout(HUNG, client.call_tool("sleep", json!({"seconds": 2.5})))
                        .await;
                let end = match end {
                    Err(_) => End::Hung,
                    Ok(Ok(r)) if text_of(&r) == "Slept 2.5 seconds" => End::Right,
                    Ok(Ok(r)) => End::Wrong(format!("sleep answered {:?}", text_of(&r))),
                    Ok(Err(e)) => End::Failed(describe(&e)),
                };
                Ok::<_, String>(Call {
                    route: "sleep 2.5 s",
                    text: format!("sleep {i}"),
                    started,
                    ended: Instant::now(),
                    end,
                })
            })
        })
        .collect();
    let sleeping = |reverse: &[Proc]| {
        reverse
            .iter()
            .flat_map(|p| p.output())
            .filter(|l| l.contains("sleep tool started"))
            .count()
    };
    let wait_sleeping = Instant::now();
    while sleeping(&cluster.reverse) < sleepers.len() {
        if wait_sleeping.elapsed() > START {
            stop.store(true, Ordering::Relaxed);
            return Err("the sleep calls did not reach the servers".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    let (v, why) = match victim(cluster) {
        Ok(v) => v,
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            return Err(e);
        }
    };
    let before_kill = calls();
    let killed_at = Instant::now();
    cluster.instances[v].proc.kill();
    println!("     killed at {} UTC", utc(killed_at));
    let victim_name = cluster.instances[v].name;

    // Load goes on until every route has served 100 calls after its recovery (or the deadline).
    let recovered = |log: &[Call]| -> BTreeMap<&'static str, Instant> {
        let mut first = BTreeMap::new();
        for c in log.iter().filter(|c| c.started > killed_at) {
            if matches!(c.end, End::Right) {
                let e = first.entry(c.route).or_insert(c.ended);
                *e = (*e).min(c.ended);
            }
        }
        first
    };
    let enough = || {
        let log = log.lock().expect("log lock");
        let first = recovered(&log);
        first.len() == ROUTES.len()
            && first.iter().all(|(route, at)| {
                log.iter()
                    .filter(|c| c.route == *route && c.started > *at)
                    .count()
                    >= 100
            })
    };
    let waited = wait_for(RECOVERY_DEADLINE + Duration::from_secs(30), enough);
    stop.store(true, Ordering::Relaxed);
    let mut problems = Vec::new();
    for w in workers {
        if let Err(e) = cluster
            .rt
            .block_on(w)
            .map_err(|e| e.to_string())
            .and_then(|r| r)
        {
            problems.push(format!("a load worker stopped: {e}"));
        }
    }
    let mut log = std::mem::take(&mut *log.lock().expect("log lock"));
    for s in sleepers {
        log.push(cluster.rt.block_on(s).map_err(|e| e.to_string())??);
    }

    // Judge.
    let first = recovered(&log);
    let in_flight: Vec<&Call> = log
        .iter()
        .filter(|c| c.started <= killed_at && c.ended > killed_at)
        .collect();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut latest_failure = Duration::ZERO;
    for c in &log {
        match &c.end {
            End::Right => {}
            End::Wrong(m) => problems.push(format!("{}: {m}", c.route)),
            End::Hung => problems.push(format!(
                "{}: {:?} hung for {HUNG:?} (started {:.2} s after the kill, at {} UTC)",
                c.route,
                c.text,
                secs_since(killed_at, c.started),
                utc(c.started)
            )),
            End::Failed(m) => {
                *errors.entry(shorten(m)).or_default() += 1;
                // A call sent in the first moments after the kill may still go out on one of
                // nginx's kept-alive connections to the dead instance, before nginx has seen
                // it close; nginx does not resend a POST it has sent (rightly: a tool must
                // not run twice), so it answers 502. Such a call is judged as in flight.
                let racing = c.started <= killed_at + NGINX_NOTICES;
                if racing {
                    latest_failure = latest_failure.max(c.ended.duration_since(killed_at));
                }
                if !racing && first.get(c.route).is_some_and(|at| c.started > *at) {
                    problems.push(format!(
                        "{}: a call failed {:.1} s after the route served again: {m}",
                        c.route,
                        secs_since(*first.get(c.route).expect("checked"), c.started)
                    ));
                }
            }
        }
    }
    for c in &in_flight {
        if c.ended.duration_since(killed_at) > IN_FLIGHT_DEADLINE {
            problems.push(format!(
                "{}: a call in flight at the kill ended only {:.1} s after it ({:?})",
                c.route,
                secs_since(killed_at, c.ended),
                c.end
            ));
        }
    }
    for (route, ..) in ROUTES {
        match first.get(route) {
            Some(at) if at.duration_since(killed_at) <= RECOVERY_DEADLINE => {}
            Some(at) => problems.push(format!(
                "{route} served again only {:.1} s after the kill",
                secs_since(killed_at, *at)
            )),
            None => problems.push(format!("{route} never served again after the kill")),
        }
    }
    if let Err(e) = waited {
        problems.push(format!(
            "the load did not reach 100 calls per route after recovery: {e}"
        ));
    }
    let in_flight_right = in_flight
        .iter()
        .filter(|c| matches!(c.end, End::Right))
        .count();
    println!(
        "     killed {victim_name} ({why}) after {before_kill} calls; {} calls in flight at the kill: \
         {in_flight_right} answered right, {} failed, the last failure {:.2} s after the kill",
        in_flight.len(),
        in_flight.len() - in_flight_right,
        latest_failure.as_secs_f64()
    );
    for (route, at) in &first {
        println!(
            "     {route}: served again {:.2} s after the kill",
            secs_since(killed_at, *at)
        );
    }
    println!(
        "     {} calls in all, {} failed: {errors:?}",
        log.len(),
        errors.values().sum::<usize>()
    );
    if problems.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = problems.iter().take(10).map(String::as_str).collect();
    Err(format!(
        "{} problems:\n       {}",
        problems.len(),
        shown.join("\n       ")
    ))
}

pub(super) fn after_kill(cluster: &Cluster) -> Result<(), String> {
    cluster.rt.block_on(async {
        // The reverse servers registered again by themselves on the surviving instance, each
        // back on its channel, which that instance now serves.
        wait_members(&cluster.url, None, DEFAULT_MEMBERS, RECOVERY_DEADLINE).await?;
        wait_members(&cluster.url, Some(NAMED), 1, RECOVERY_DEADLINE).await?;
        many_calls(&cluster.url, 150, "after").await?;
        many_calls(
            &format!("{}/servers/{NAMED}/message", cluster.url),
            100,
            "after",
        )
        .await?;
        let session = client(&format!("{}/mcp", cluster.url))?;
        session.initialize().await.map_err(|e| e.to_string())?;
        for i in 0..50 {
            echo(&session, &format!("after the kill, session call {i}")).await?;
        }
        session.close().await.map_err(|e| e.to_string())
    })?;
    for p in &cluster.reverse {
        if let Some(line) = p.output().iter().find(|l| l.contains("panicked")) {
            return Err(format!("a reverse server panicked: {line}"));
        }
    }
    Ok(())
}

/// The wall-clock time of `at` as `HH:MM:SS.mmm` UTC, to find it in the processes' logs.
fn utc(at: Instant) -> String {
    let now = std::time::SystemTime::now();
    let then = now
        .checked_sub(Instant::now().saturating_duration_since(at))
        .unwrap_or(now);
    let ms = then
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
        % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

fn secs_since(earlier: Instant, later: Instant) -> f64 {
    later.saturating_duration_since(earlier).as_secs_f64()
}

/// Waits until `cond` holds, or fails after `deadline`.
fn wait_for(deadline: Duration, cond: impl Fn() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > deadline {
            return Err(format!("condition not reached in {deadline:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
