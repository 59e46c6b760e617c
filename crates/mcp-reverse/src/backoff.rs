//! Exponential backoff with jitter, capped, and reset after stable service.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
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

/// A number in [0, 1) from the standard library's per-process random hasher keys, which is
/// all jitter needs.
fn random_fraction() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
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
    fn tiny_cap_is_respected() {
        let mut b = Backoff::new(Duration::from_millis(1));
        for _ in 0..5 {
            assert!(b.next_delay() <= INITIAL);
        }
    }
}
