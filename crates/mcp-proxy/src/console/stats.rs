//! Calls per second and latency percentiles per pool member over the last minutes, counted
//! from audit records, for the console's small charts. Bounded: [`WINDOW_BUCKETS`] buckets of
//! [`BUCKET`] per member, at most [`MAX_SERIES`] members.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::audit::Record;

/// One chart point covers this long.
pub const BUCKET: Duration = Duration::from_secs(10);
/// Points per chart: with [`BUCKET`], the last five minutes.
pub const WINDOW_BUCKETS: usize = 30;
/// Members whose series are kept; beyond it the one idle longest is forgotten.
pub const MAX_SERIES: usize = 2048;
/// Latency bins: bin `i` holds calls that took at most `FIRST_BIN_MS * 2^(i/2)` ms, so a
/// percentile is known within a factor of √2 (0.05 ms to about 7 minutes).
const BINS: usize = 48;
const FIRST_BIN_MS: f64 = 0.05;

/// The series of every member, from the records the audit hands the console.
#[derive(Debug)]
pub(crate) struct Stats {
    started: Instant,
    series: Mutex<HashMap<(String, u64), Series>>,
}

#[derive(Debug, Default)]
struct Series {
    /// Newest last; each holds the index of its [`BUCKET`] since `started`.
    buckets: Vec<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    index: u64,
    calls: u32,
    errors: u32,
    bins: Box<[u32; BINS]>,
}

/// A member's (or a pool's) chart data, oldest point first.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Chart {
    /// Calls per second in each bucket.
    pub calls_per_second: Vec<f64>,
    /// Median latency in ms in each bucket (`None`: no calls).
    pub p50_ms: Vec<Option<f64>>,
    /// 99th-percentile latency in ms in each bucket.
    pub p99_ms: Vec<Option<f64>>,
    /// Failed calls in each bucket.
    pub errors: Vec<u32>,
    /// Over the whole window: calls per second, p50 and p99.
    pub window: Summary,
}

/// The whole window at a glance.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Calls per second.
    pub calls_per_second: f64,
    /// Median latency in ms.
    pub p50_ms: Option<f64>,
    /// 99th-percentile latency in ms.
    pub p99_ms: Option<f64>,
}

fn bin_of(ms: f64) -> usize {
    if ms <= FIRST_BIN_MS {
        return 0;
    }
    let i = (2.0 * (ms / FIRST_BIN_MS).log2()).ceil() as usize;
    i.min(BINS - 1)
}

fn bin_upper_ms(i: usize) -> f64 {
    FIRST_BIN_MS * 2f64.powf(i as f64 / 2.0)
}

/// The `q` quantile of a histogram: the upper bound of the bin it falls in.
fn quantile(bins: &[u32; BINS], q: f64) -> Option<f64> {
    let total: u64 = bins.iter().map(|&n| u64::from(n)).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0u64;
    for (i, &n) in bins.iter().enumerate() {
        seen += u64::from(n);
        if seen >= rank {
            return Some((bin_upper_ms(i) * 1000.0).round() / 1000.0);
        }
    }
    None
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            series: Mutex::new(HashMap::new()),
        }
    }
}

impl Stats {
    fn now_index(&self) -> u64 {
        (self.started.elapsed().as_millis() / BUCKET.as_millis()) as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u64), Series>> {
        // A sync lock: a counter update per record, a copy per snapshot.
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a record that reached a member.
    pub(crate) fn observe(&self, record: &Record) {
        let Some(member) = record.member else {
            return;
        };
        let index = self.now_index();
        let mut all = self.lock();
        let key = (record.pool.clone(), member);
        if !all.contains_key(&key) && all.len() >= MAX_SERIES {
            let idlest = all
                .iter()
                .min_by_key(|(_, s)| s.buckets.last().map_or(0, |b| b.index))
                .map(|(k, _)| k.clone());
            if let Some(k) = idlest {
                all.remove(&k);
            }
        }
        let series = all.entry(key).or_default();
        if series.buckets.last().map(|b| b.index) != Some(index) {
            series.buckets.push(Bucket {
                index,
                calls: 0,
                errors: 0,
                bins: Box::new([0; BINS]),
            });
            let excess = series.buckets.len().saturating_sub(WINDOW_BUCKETS);
            series.buckets.drain(..excess);
        }
        let bucket = series.buckets.last_mut().expect("just pushed");
        bucket.calls += 1;
        bucket.errors += u32::from(record.failed());
        bucket.bins[bin_of(record.latency_ms)] += 1;
    }

    /// Every member's chart, and each pool's (its members merged), over the window ending
    /// now; series idle for the whole window are forgotten.
    pub(crate) fn charts(&self) -> (HashMap<(String, u64), Chart>, HashMap<String, Chart>) {
        let now = self.now_index();
        let first = (now + 1).saturating_sub(WINDOW_BUCKETS as u64);
        let mut all = self.lock();
        all.retain(|_, s| s.buckets.last().is_some_and(|b| b.index >= first));
        let mut pools: HashMap<String, Vec<Bucket>> = HashMap::new();
        let mut members = HashMap::new();
        for (key, series) in all.iter() {
            members.insert(key.clone(), chart(&series.buckets, first, now));
            let merged = pools.entry(key.0.clone()).or_default();
            for b in &series.buckets {
                match merged.iter_mut().find(|m| m.index == b.index) {
                    Some(m) => {
                        m.calls += b.calls;
                        m.errors += b.errors;
                        for (x, y) in m.bins.iter_mut().zip(b.bins.iter()) {
                            *x += y;
                        }
                    }
                    None => merged.push(Bucket {
                        index: b.index,
                        calls: b.calls,
                        errors: b.errors,
                        bins: b.bins.clone(),
                    }),
                }
            }
        }
        let pools = pools
            .into_iter()
            .map(|(pool, buckets)| (pool, chart(&buckets, first, now)))
            .collect();
        (members, pools)
    }
}

/// The chart of `buckets` (any order) from index `first` to `last`, [`WINDOW_BUCKETS`] points;
/// its summary's rate is over the time covered (less than the window for a young proxy).
fn chart(buckets: &[Bucket], first: u64, last: u64) -> Chart {
    let secs = BUCKET.as_secs_f64();
    let mut c = Chart::default();
    let mut whole = [0u32; BINS];
    let mut calls = 0u64;
    // Always a full window of points: those before `first` (the proxy is younger than the
    // window) are empty.
    let empty_before = (WINDOW_BUCKETS as u64).saturating_sub(last - first + 1);
    for _ in 0..empty_before {
        c.calls_per_second.push(0.0);
        c.p50_ms.push(None);
        c.p99_ms.push(None);
        c.errors.push(0);
    }
    for index in first..=last {
        match buckets.iter().find(|b| b.index == index) {
            Some(b) => {
                c.calls_per_second.push(f64::from(b.calls) / secs);
                c.p50_ms.push(quantile(&b.bins, 0.5));
                c.p99_ms.push(quantile(&b.bins, 0.99));
                c.errors.push(b.errors);
                calls += u64::from(b.calls);
                for (x, y) in whole.iter_mut().zip(b.bins.iter()) {
                    *x += y;
                }
            }
            None => {
                c.calls_per_second.push(0.0);
                c.p50_ms.push(None);
                c.p99_ms.push(None);
                c.errors.push(0);
            }
        }
    }
    let span = (last - first + 1) as f64 * secs;
    c.window = Summary {
        calls_per_second: calls as f64 / span,
        p50_ms: quantile(&whole, 0.5),
        p99_ms: quantile(&whole, 0.99),
    };
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_young_proxy_still_charts_a_whole_window() {
        let b = Bucket {
            index: 0,
            calls: 10,
            errors: 1,
            bins: Box::new([0; BINS]),
        };
        let c = chart(&[b], 0, 0);
        assert_eq!(c.calls_per_second.len(), WINDOW_BUCKETS);
        assert_eq!(c.calls_per_second[WINDOW_BUCKETS - 1], 1.0);
        assert_eq!(c.errors[WINDOW_BUCKETS - 1], 1);
        assert_eq!(c.window.calls_per_second, 1.0);
    }

    #[test]
    fn bins_bound_their_latencies() {
        for ms in [0.01, 0.05, 0.3, 1.0, 7.5, 250.0, 90_000.0] {
            let i = bin_of(ms);
            assert!(ms <= bin_upper_ms(i) + 1e-9, "{ms} in bin {i}");
            assert!(i == 0 || ms > bin_upper_ms(i - 1) - 1e-9, "{ms} in bin {i}");
        }
        let mut bins = [0u32; BINS];
        for ms in (1..=100).map(f64::from) {
            bins[bin_of(ms)] += 1;
        }
        let p50 = quantile(&bins, 0.5).unwrap();
        let p99 = quantile(&bins, 0.99).unwrap();
        assert!((50.0..=50.0 * 1.42).contains(&p50), "{p50}");
        assert!((99.0..=99.0 * 1.42).contains(&p99), "{p99}");
    }
}
