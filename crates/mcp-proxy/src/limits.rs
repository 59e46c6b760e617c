//! Request-rate limits: a token bucket per caller and budget, answered with 429 and
//! `Retry-After`.
//!
//! A caller is its bearer token when it presents one (hashed with a per-process random key:
//! the token itself is never stored or logged), else its address. Reverse-client routes
//! (`/register`, `/poll`, `/response`) have their own budget, so servers are never starved
//! by clients sharing their address or token; `/healthz` and `/metrics` are not limited.
//!
//! Our own layer rather than `tower::limit::RateLimitLayer` (one global rate, and it makes
//! callers wait instead of answering 429) or `tower_governor` (its key extractors take the
//! peer address from `ConnectInfo` only, and we key on a token *or* the address, with two
//! budgets chosen by route): the whole of it is one map of buckets under a mutex held for a
//! few arithmetic operations.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Error;

/// A sustained rate and the burst allowed above it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Requests per second, sustained; 0 turns the limit off.
    pub per_second: f64,
    /// Requests allowed at once on top of an idle period.
    pub burst: u32,
}

impl Rate {
    /// No limit.
    pub const OFF: Rate = Rate {
        per_second: 0.0,
        burst: 0,
    };

    fn is_off(&self) -> bool {
        self.per_second <= 0.0
    }
}

/// Which budget a route draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Budget {
    /// `/register`, `/poll`, `/response`.
    Server,
    /// Everything clients call.
    Client,
}

/// Who is calling: a hashed bearer token, or an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Caller {
    Token(u64),
    Addr(IpAddr),
    /// No token and no known address (an in-process router without connection info).
    Unknown,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets kept before idle ones are swept out.
const SWEEP_ABOVE: usize = 10_000;

/// The rate limiter shared by every request.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    server: Rate,
    client: Rate,
    hasher: RandomState,
    buckets: Mutex<HashMap<(Budget, Caller), Bucket>>,
}

impl RateLimiter {
    /// A limiter with these budgets.
    pub(crate) fn new(server: Rate, client: Rate) -> Arc<Self> {
        Arc::new(RateLimiter {
            server,
            client,
            hasher: RandomState::new(),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one request from the caller's bucket; `Err(wait)` when it is empty.
    fn take(&self, budget: Budget, caller: Caller, now: Instant) -> Result<(), Duration> {
        let rate = match budget {
            Budget::Server => self.server,
            Budget::Client => self.client,
        };
        if rate.is_off() {
            return Ok(());
        }
        let capacity = f64::from(rate.burst.max(1));
        // A plain mutex: a few float operations under it, never an `.await`.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > SWEEP_ABOVE {
            // Full buckets carry no state worth keeping.
            buckets.retain(|(b, _), bucket| {
                let r = if *b == Budget::Server {
                    self.server
                } else {
                    self.client
                };
                let refill = now.duration_since(bucket.updated).as_secs_f64() * r.per_second;
                bucket.tokens + refill < f64::from(r.burst.max(1))
            });
        }
        let bucket = buckets.entry((budget, caller)).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate.per_second).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / rate.per_second,
            ))
        }
    }

    fn caller(&self, req: &Request) -> Caller {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        if let Some(t) = token {
            return Caller::Token(self.hasher.hash_one(t));
        }
        match req.extensions().get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(addr)) => Caller::Addr(addr.ip()),
            None => Caller::Unknown,
        }
    }
}

/// Which budget `path` draws from; `None` for routes that are never limited.
fn budget(path: &str) -> Option<Budget> {
    match path {
        "/healthz" | "/metrics" => None,
        "/register" | "/poll" | "/response" => Some(Budget::Server),
        _ => Some(Budget::Client),
    }
}

/// Middleware: 429 with `Retry-After` (whole seconds, at least 1) when the caller's bucket
/// for the route's budget is empty.
pub(crate) async fn rate_limit(
    State(limiter): State<Arc<RateLimiter>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(budget) = budget(req.uri().path()) else {
        return next.run(req).await;
    };
    let caller = limiter.caller(&req);
    match limiter.take(budget, caller, Instant::now()) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            tracing::info!(path = %req.uri().path(), ?budget, "rate limited");
            let error = match budget {
                Budget::Server => Error::RateLimited("too many requests from this caller"),
                Budget::Client => Error::ClientRateLimited,
            };
            let mut resp = error.into_response();
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let l = RateLimiter::new(
            Rate {
                per_second: 2.0,
                burst: 3,
            },
            Rate::OFF,
        );
        let a = Caller::Addr("10.0.0.1".parse().unwrap());
        let b = Caller::Addr("10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.take(Budget::Server, a, t0).is_ok());
        }
        let wait = l.take(Budget::Server, a, t0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        // Another caller, and the other budget, are not affected.
        assert!(l.take(Budget::Server, b, t0).is_ok());
        assert!(l.take(Budget::Client, a, t0).is_ok());
        // Half a second later one request is allowed again, not two.
        let t1 = t0 + Duration::from_millis(500);
        assert!(l.take(Budget::Server, a, t1).is_ok());
        assert!(l.take(Budget::Server, a, t1).is_err());
    }

    #[test]
    fn routes_draw_from_their_budget() {
        assert_eq!(budget("/poll"), Some(Budget::Server));
        assert_eq!(budget("/response"), Some(Budget::Server));
        assert_eq!(budget("/register"), Some(Budget::Server));
        assert_eq!(budget("/message"), Some(Budget::Client));
        assert_eq!(budget("/servers/a/mcp"), Some(Budget::Client));
        assert_eq!(budget("/healthz"), None);
        assert_eq!(budget("/metrics"), None);
    }
}
