//! The hostile scenario's figures, printed in one block, and its checks.

use std::time::Duration;

use super::raw::Slow;
use super::{
    Calls, Figures, Memory, CLOSE_LIMIT, HEADER_TIMEOUT, IDLE_TIMEOUT, PEAK_SLACK,
    PER_ADDRESS_CONNECTIONS, PER_ADDRESS_REGISTRATIONS, PER_CALLER_SESSIONS, REFUSED_WITHIN,
    REGISTER_FROM, RSS_GROWTH_LIMIT, SESSIONS_FROM, SLOW_FROM, SLOW_WAIT,
};

/// How the slow connections ended, as the report needs it.
struct SlowSummary {
    opened: usize,
    failed: usize,
    accepted: usize,
    refused: usize,
    still_open: usize,
    max_delay: Duration,
    peak_accepted: usize,
}

fn summarize_slow(slow: &[Slow]) -> SlowSummary {
    let mut s = SlowSummary {
        opened: 0,
        failed: 0,
        accepted: 0,
        refused: 0,
        still_open: 0,
        max_delay: Duration::ZERO,
        peak_accepted: 0,
    };
    // (time, +1 opened / -1 closed) of the accepted ones, for the peak held at once.
    let mut events: Vec<(Duration, i32)> = Vec::new();
    for outcome in slow {
        match *outcome {
            Slow::Failed => s.failed += 1,
            Slow::Closed { sent, closed } if closed - sent < REFUSED_WITHIN => {
                s.opened += 1;
                s.refused += 1;
            }
            Slow::Closed { sent, closed } => {
                s.opened += 1;
                s.accepted += 1;
                s.max_delay = s.max_delay.max(closed - sent);
                events.extend([(sent, 1), (closed, -1)]);
            }
            Slow::Open { sent } => {
                s.opened += 1;
                s.accepted += 1;
                s.still_open += 1;
                events.push((sent, 1));
            }
        }
    }
    events.sort();
    let mut open = 0i32;
    for (_, d) in events {
        open += d;
        s.peak_accepted = s.peak_accepted.max(open.max(0) as usize);
    }
    s
}

/// Prints the figures in one block and judges them.
pub(super) fn report(
    f: &Figures,
    calls: &Calls,
    calls_during: u64,
    memory: &Memory,
    counters: &str,
    slow_n: usize,
) -> Result<(), String> {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let s = summarize_slow(&f.slow);
    let growth = memory.after.saturating_sub(memory.before);
    let [evil_text, evil_json, plain_text] = &f.cross_site;
    let ab = &f.sessions;
    println!(
        "     hostile traffic, all at once for {:.1} s (header timeout {} s, idle timeout {} s):",
        f.took.as_secs_f64(),
        HEADER_TIMEOUT.as_secs(),
        IDLE_TIMEOUT.as_secs()
    );
    println!(
        "       slow headers from {SLOW_FROM}: {slow_n} tried, {} opened ({} could not connect), \
         {} accepted, {} refused at once, {} still open after {} s; at most {} accepted at once \
         (cap {PER_ADDRESS_CONNECTIONS}); max close delay {:.2} s (limit {:.0} s)",
        s.opened,
        s.failed,
        s.accepted,
        s.refused,
        s.still_open,
        SLOW_WAIT.as_secs(),
        s.peak_accepted,
        s.max_delay.as_secs_f64(),
        CLOSE_LIMIT.as_secs_f64()
    );
    println!("       proxy's own counters: {counters}");
    println!(
        "       proxy memory (VmRSS): {:.1} MiB before, {:.1} MiB after, growth {:.1} MiB \
         (limit {} MiB); peak VmHWM {:.1} MiB",
        mib(memory.before),
        mib(memory.after),
        mib(growth),
        RSS_GROWTH_LIMIT >> 20,
        mib(memory.peak)
    );
    println!(
        "       honest calls from 127.0.0.1: {} made ({} over /message, {} over /mcp; {} during \
         the attack), {} failed{}",
        calls.made,
        calls.over_message,
        calls.over_mcp,
        calls_during,
        calls.failed,
        if calls.first_failures.is_empty() {
            String::new()
        } else {
            format!("; first: {}", calls.first_failures.join(" | "))
        }
    );
    println!(
        "       bloated /register from {REGISTER_FROM}: 700,000 protocol_versions (2.8 MB): {} \
         (expect 400); 3 MiB name: {} (expect 400)",
        f.bloated[0], f.bloated[1]
    );
    println!(
        "       /register until the per-address cap from {REGISTER_FROM}: {} accepted, then {} \
         {}(expect 429 after at most {PER_ADDRESS_REGISTRATIONS}); all: {}",
        f.flood.accepted,
        f.flood.cap.map_or("no cap".to_owned(), |c| c.to_string()),
        brief(&f.flood.cap_body),
        f.flood.tally
    );
    println!(
        "       rebinding Host (127.attacker.example, 127.0.0.1.attacker.example) on /mcp: {} \
         (expect 403)",
        f.rebinding
    );
    println!("       /message, Origin evil.example + text/plain: {evil_text} (expect 403)");
    println!("       /message, Origin evil.example + application/json: {evil_json} (expect 403)");
    println!("       /message, no Origin + text/plain: {plain_text} (expect 415)");
    println!(
        "       abandoned /mcp sessions from {SESSIONS_FROM}: {} hung up before the answer, \
         after its head: {}; then initialize until the cap: {} accepted, then {} {}(expect \
         429/503 after at most {PER_CALLER_SESSIONS}); all: {}",
        ab.hung_up_before,
        ab.hung_up_after,
        ab.until_cap.accepted,
        ab.until_cap
            .cap
            .map_or("no cap".to_owned(), |c| c.to_string()),
        brief(&ab.until_cap.cap_body),
        ab.until_cap.tally
    );

    let checks: Vec<(&str, bool)> = vec![
        (
            "every accepted slow connection closed within header timeout + 1 s",
            s.opened > 0 && s.still_open == 0 && s.max_delay <= CLOSE_LIMIT,
        ),
        (
            "slow connections capped per address",
            s.opened <= PER_ADDRESS_CONNECTIONS
                || (s.refused > 0 && s.peak_accepted <= PER_ADDRESS_CONNECTIONS + PEAK_SLACK),
        ),
        (
            "proxy RSS growth at most 32 MiB",
            growth <= RSS_GROWTH_LIMIT,
        ),
        (
            "no honest call failed (and some ran during the attack)",
            calls.failed == 0 && calls_during > 0,
        ),
        (
            "bloated registrations get 400 (long list)",
            f.bloated[0].all(400),
        ),
        (
            "bloated registrations get 400 (long name)",
            f.bloated[1].all(400),
        ),
        (
            "registrations capped per address (429)",
            f.flood.cap == Some(429) && f.flood.accepted <= PER_ADDRESS_REGISTRATIONS,
        ),
        ("DNS-rebinding Host on /mcp gets 403", f.rebinding.all(403)),
        (
            "foreign Origin + text/plain on /message gets 403",
            evil_text.all(403),
        ),
        (
            "foreign Origin + JSON on /message gets 403",
            evil_json.all(403),
        ),
        (
            "text/plain without Origin on /message gets 415",
            plain_text.all(415),
        ),
        (
            "/mcp sessions capped per caller (429/503)",
            ab.until_cap.cap.is_some() && ab.until_cap.accepted <= PER_CALLER_SESSIONS,
        ),
    ];
    let failed: Vec<&str> = checks.iter().filter(|c| !c.1).map(|c| c.0).collect();
    for (name, ok) in &checks {
        println!("       {} {name}", if *ok { "ok  " } else { "FAIL" });
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} hostile-traffic checks failed: {}",
            failed.len(),
            checks.len(),
            failed.join("; ")
        ))
    }
}

/// A body's start, for the report (`""` when empty).
fn brief(body: &str) -> String {
    if body.is_empty() {
        return String::new();
    }
    let short: String = body.chars().take(90).collect();
    format!("{short:?} ")
}
