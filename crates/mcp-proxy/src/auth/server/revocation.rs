//! The revocation check of the built-in server's access tokens, and its short cache.
//!
//! Every request with a built-in access token asks the store whether the token or its
//! refresh family was revoked: two reads, which in a cluster are two Redis round trips per
//! request. A "still valid" answer is therefore reused for [`CACHE_FOR`], at most
//! [`MAX_CACHED`] tokens at once. A revocation made on this instance empties the cache, so
//! it takes effect here at once; one made on another instance of a cluster takes effect
//! here within [`CACHE_FOR`]. "Revoked" answers are not cached (the token is refused and
//! its holder must sign in again anyway).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a "still valid" answer is reused: the longest a revocation made on another
/// instance of a cluster takes to be honoured here.
pub const CACHE_FOR: Duration = Duration::from_secs(5);
/// The most tokens whose answer is kept; past it the cache starts over.
pub const MAX_CACHED: usize = 10_000;

/// Tokens (by `jti` and family) recently found valid.
pub(crate) struct ValidCache {
    ttl: Duration,
    max: usize,
    /// A sync lock: no `.await` under it.
    entries: Mutex<HashMap<(String, Option<String>), Instant>>,
}

impl Default for ValidCache {
    fn default() -> Self {
        ValidCache::new(CACHE_FOR, MAX_CACHED)
    }
}

impl ValidCache {
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        ValidCache {
            ttl,
            max,
            entries: Mutex::default(),
        }
    }

    fn key(jti: &str, family: Option<&str>) -> (String, Option<String>) {
        (jti.to_owned(), family.map(str::to_owned))
    }

    /// Whether this token was found valid less than the cache's time ago.
    pub(crate) fn fresh(&self, jti: &str, family: Option<&str>) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&Self::key(jti, family))
            .is_some_and(|at| at.elapsed() < self.ttl)
    }

    /// Notes that this token was just found valid.
    pub(crate) fn remember(&self, jti: &str, family: Option<&str>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.max {
            let ttl = self.ttl;
            entries.retain(|_, at| at.elapsed() < ttl);
            if entries.len() >= self.max {
                entries.clear();
            }
        }
        entries.insert(Self::key(jti, family), Instant::now());
    }

    /// Forgets every answer: something was revoked here.
    pub(crate) fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_kept_briefly_and_bounded() {
        let cache = ValidCache::new(Duration::from_secs(60), 3);
        assert!(!cache.fresh("a", Some("f")));
        cache.remember("a", Some("f"));
        assert!(cache.fresh("a", Some("f")));
        assert!(
            !cache.fresh("a", Some("g")),
            "another family is another token"
        );
        for jti in ["b", "c", "d"] {
            cache.remember(jti, None);
        }
        assert!(cache.len() <= 3, "bounded: {}", cache.len());
        assert!(cache.fresh("d", None));
        cache.clear();
        assert!(!cache.fresh("d", None));

        let brief = ValidCache::new(Duration::ZERO, 3);
        brief.remember("a", None);
        assert!(!brief.fresh("a", None), "expired at once");
    }
}
