//! What `cargo xtask bench` reports: the table on the terminal (ratios against the direct
//! server), `target/bench/latest.json`, and the change against an earlier run (`--compare`).

use serde_json::{json, Value};

use super::idle::Idle;
use super::load::Latency;
use super::Options;

/// One measured row.
pub(super) struct Row {
    pub(super) path: String,
    pub(super) hops: u32,
    pub(super) payload: &'static str,
    pub(super) latency: Latency,
    pub(super) rps: Vec<(usize, f64)>,
    /// CPU microseconds per call at 16 callers: the proxy's and the reverse client's.
    pub(super) cpu_us: Option<(f64, f64)>,
}

pub(super) fn print_table(rows: &[Row], idle: &[Idle]) {
    let direct = |payload: &str| {
        rows.iter()
            .find(|r| r.path.starts_with("direct") && r.payload == payload)
    };
    println!("\ntools/call echo, loopback, release builds; ratios are against direct (lower latency / higher throughput is better);");
    println!(
        "cpu us p/r: CPU microseconds per call at 16 callers in the proxy / the reverse client\n"
    );
    let w = rows.iter().map(|r| r.path.len()).max().unwrap_or(4).max(4);
    println!(
        "{:<w$} {:>4} {:>7} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>8} {:>13}",
        "path",
        "legs",
        "payload",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p50 x",
        "rps@1",
        "rps@16",
        "rps@64",
        "rps16 x",
        "cpu us p/r"
    );
    for r in rows {
        let d = direct(r.payload);
        let lat_ratio = d.map_or(f64::NAN, |d| r.latency.p50 / d.latency.p50);
        let rps_ratio = d.map_or(f64::NAN, |d| r.rps[1].1 / d.rps[1].1);
        println!(
            "{:<w$} {:>4} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>8.2} {:>9.0} {:>9.0} {:>9.0} {:>8.2} {:>13}",
            r.path,
            r.hops,
            r.payload,
            r.latency.p50,
            r.latency.p90,
            r.latency.p99,
            lat_ratio,
            r.rps[0].1,
            r.rps[1].1,
            r.rps[2].1,
            rps_ratio,
            r.cpu_us
                .map_or_else(String::new, |(p, rv)| format!("{p:.0}/{rv:.0}"))
        );
    }
    for i in idle {
        println!(
            "\nidle scale: {} registrations each holding a {}: {:.1} KiB resident per registration \
             ({:.1} MiB -> {:.1} MiB), {:.4} CPU-seconds per second while idle (open-file hard limit {})",
            i.registrations,
            i.holding,
            (i.rss_after.saturating_sub(i.rss_before)) as f64 / i.registrations as f64 / 1024.0,
            i.rss_before as f64 / 1048576.0,
            i.rss_after as f64 / 1048576.0,
            i.cpu_per_sec,
            i.fd_limit
        );
    }
}

pub(super) fn to_json(rows: &[Row], idle: &[Idle], options: &Options) -> Value {
    json!({
        "quick": options.quick,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "rows": rows.iter().map(|r| json!({
            "path": r.path, "legs": r.hops, "payload": r.payload,
            "p50_ms": r.latency.p50, "p90_ms": r.latency.p90, "p99_ms": r.latency.p99,
            "rps": r.rps.iter().map(|(c, v)| (c.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "cpu_us_per_call_at_16": r.cpu_us.map(|(p, rv)| json!({"proxy": p, "reverse_client": rv})),
        })).collect::<Vec<_>>(),
        "idle": idle.iter().map(|i| json!({
            "holding": i.holding,
            "registrations": i.registrations,
            "rss_before_bytes": i.rss_before,
            "rss_after_bytes": i.rss_after,
            "rss_per_registration_bytes": i.rss_after.saturating_sub(i.rss_before) as f64 / i.registrations as f64,
            "cpu_seconds_per_second": i.cpu_per_sec,
            "open_file_hard_limit": i.fd_limit,
        })).collect::<Vec<_>>(),
    })
}

pub(super) fn compare(old_path: &str, new: &Value) -> Result<(), String> {
    let old: Value = serde_json::from_str(
        &std::fs::read_to_string(old_path).map_err(|e| format!("{old_path}: {e}"))?,
    )
    .map_err(|e| format!("{old_path}: {e}"))?;
    println!("\nchange against {old_path} (negative latency / positive throughput is better):");
    for row in new["rows"].as_array().into_iter().flatten() {
        let same = old["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["path"] == row["path"] && o["payload"] == row["payload"]);
        let Some(o) = same else { continue };
        let pct = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) if a > 0.0 => format!("{:+.1}%", (b - a) / a * 100.0),
            _ => "n/a".into(),
        };
        println!(
            "  {:<18} {:>7}: p50 {:>8}  rps@16 {:>8}",
            row["path"].as_str().unwrap_or(""),
            row["payload"].as_str().unwrap_or(""),
            pct(&o["p50_ms"], &row["p50_ms"]),
            pct(&o["rps"]["16"], &row["rps"]["16"])
        );
    }
    Ok(())
}
