//! Exponential backoff with jitter, capped, and reset after stable service.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The first pause after a failure.
const INITIAL: Duration = Duration::from_millis(100);
/// Service this long without a failure counts as stable: the next failure starts over.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// Pauses between retries: doubling from 100 ms up to `max`, each drawn at random between half
/// and all of its step so that many servers restarted together do not retry in lockstep.
#[derive(Debug)]
pub(crate) struct Backoff {
    max: Duration,
    attempt: u32,
    last_failure: Option<Instant>,
}

impl Backoff {
    pub(crate) fn new(max: Duration) -> Self {
        Backoff {
            max: max.max(INITIAL),
            attempt: 0,
            last_failure: None,
        }
    }

    /// The pause before the next retry.
    pub(crate) fn next_delay(&mut self) -> Duration {
        if self
            .last_failure
            .is_some_and(|t| t.elapsed() >= STABLE_AFTER + self.max)
        {
            self.attempt = 0;
        }
        self.last_failure = Some(Instant::now());
        let step = INITIAL
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        half + half.mul_f64(random_fraction())
    }

    /// Service is fine again: the next failure starts from the shortest pause.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
        self.last_failure = None;
    }
}

/// A number in [0, 1): SipHash of a counter under the standard library's `RandomState` keys,
/// which are drawn from the OS at random for each process. Every draw hashes a new counter
/// value, so draws differ within a process, and the keys make the sequence differ between
/// processes (servers restarted together do not retry in lockstep). That is all jitter needs,
/// with no random-number crate.
fn random_fraction() -> f64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let mut h = KEYS.get_or_init(RandomState::new).build_hasher();
    h.write_u64(DRAWS.fetch_add(1, Ordering::Relaxed));
    // The top 53 bits, exactly representable in an f64: uniform over [0, 1).
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn grows_then_caps() {
        let mut b = Backoff::new(Duration::from_secs(5));
        let delays: Vec<_> = (0..12).map(|_| b.next_delay()).collect();
        assert!(delays[0] <= INITIAL && delays[0] >= INITIAL / 2);
        for d in &delays {
            assert!(*d <= Duration::from_secs(5), "{d:?} exceeds the cap");
        }
        assert!(
            delays[11] >= Duration::from_millis(2500),
            "{:?}",
            delays[11]
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(Duration::from_secs(5));
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= INITIAL);
    }

    #[test]
    fn jitter_differs_and_stays_in_range() {
        let draws: Vec<f64> = (0..1000).map(|_| random_fraction()).collect();
        assert!(draws.iter().all(|f| (0.0..1.0).contains(f)), "{draws:?}");
        let distinct: HashSet<u64> = draws.iter().map(|f| f.to_bits()).collect();
        assert_eq!(distinct.len(), draws.len(), "two draws were equal");
        assert!(draws.iter().any(|&f| f < 0.5) && draws.iter().any(|&f| f >= 0.5));

        // Many clients failing at once: their first pauses spread over half to all of INITIAL.
        let firsts: Vec<Duration> = (0..100)
            .map(|_| Backoff::new(Duration::from_secs(5)).next_delay())
            .collect();
        for d in &firsts {
            assert!(*d >= INITIAL / 2 && *d <= INITIAL, "{d:?}");
        }
        let distinct: HashSet<Duration> = firsts.iter().copied().collect();
        assert!(
            distinct.len() > 90,
            "only {} distinct pauses",
            distinct.len()
        );
    }

    #[test]
    fn tiny_cap_is_respected() {
        let mut b = Backoff::new(Duration::from_millis(1));
        for _ in 0..5 {
            assert!(b.next_delay() <= INITIAL);
        }
    }
}
