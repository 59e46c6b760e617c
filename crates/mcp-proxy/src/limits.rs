//! Request-rate limits: a token bucket per caller and budget, answered with 429 and
//! `Retry-After`.
//!
//! A caller is its bearer token when that token is one the proxy has configured for the
//! route's kind (keyed by the token's digest: the token itself is never stored or logged),
//! else its address (an IPv6 address by its /64, what one host is usually given). Keying on
//! *any* presented token would let a caller mint a fresh bucket per request by sending random
//! tokens; checking the token costs one SHA-256 and a compare per configured token, the same
//! work the auth check after this layer does. Reverse-client routes (`/register`, `/poll`,
//! `/response`) have their own budget, so servers are never starved by clients sharing their
//! address or token; `/healthz` (two map sizes) is not limited, `/metrics` (which walks the
//! sessions) draws from the client budget.
//!
//! The map of buckets is bounded: full (idle) buckets are swept out at most once per
//! [`SWEEP_EVERY`] once there are more than [`SWEEP_ABOVE`], so no request pays for a sweep
//! more often than that; and at [`MAX_BUCKETS`] a caller without a bucket shares one overflow
//! bucket per budget until a sweep makes room.
//!
//! Our own layer rather than `tower::limit::RateLimitLayer` (one global rate, and it makes
//! callers wait instead of answering 429) or `tower_governor` (its key extractors take the
//! peer address from `ConnectInfo` only, and we key on a token *or* the address, with two
//! budgets chosen by route): the whole of it is one map of buckets under a mutex held for a
//! few arithmetic operations.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::oauth::Verdict;
use crate::auth::{Auth, TokenId, TokenKind};
pub use crate::config::Rate;
use crate::peer::{address_key, ClientAddr};
use crate::routes::{self, Route, Surface};
use crate::topology::{Relayed, TokenRefused, Topology};
use crate::Error;

/// Which budget a route draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Budget {
    /// `/register`, `/poll`, `/response`.
    Server,
    /// Everything clients call.
    Client,
}

impl Budget {
    /// The kind of token that opens this budget's routes.
    fn token_kind(self) -> TokenKind {
        match self {
            Budget::Server => TokenKind::Server,
            Budget::Client => TokenKind::Client,
        }
    }
}

/// Who is calling: a configured token, or an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Caller {
    /// A valid token of the route's kind, by its digest.
    Token(TokenId),
    /// An address; IPv6 by its /64.
    Addr(IpAddr),
    /// No valid token and no known address (an in-process router without connection info).
    Unknown,
    /// Everyone without a bucket while the map is at [`MAX_BUCKETS`].
    Overflow,
}

impl Caller {
    /// The name of this caller's bucket in Redis (a token by its digest, never the token).
    fn bucket_key(&self, budget: Budget) -> String {
        let budget = match budget {
            Budget::Server => 's',
            Budget::Client => 'c',
        };
        match self {
            Caller::Token(id) => format!("{budget}:t:{}", id.digest_hex()),
            Caller::Addr(ip) => format!("{budget}:a:{ip}"),
            Caller::Unknown | Caller::Overflow => format!("{budget}:u"),
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets kept before idle ones are swept out.
pub const SWEEP_ABOVE: usize = 10_000;
/// The shortest interval between two sweeps: bounds the work any one request can cause.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// The most buckets kept (about 100 bytes each); callers beyond share an overflow bucket.
pub const MAX_BUCKETS: usize = 100_000;

#[derive(Debug)]
struct Buckets {
    map: HashMap<(Budget, Caller), Bucket>,
    /// No sweep before this.
    next_sweep: Instant,
}

/// The rate limiter shared by every request.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    server: Rate,
    client: Rate,
    /// The configured tokens: only a valid one keys a bucket of its own.
    auth: Auth,
    buckets: Mutex<Buckets>,
    /// Several instances: the buckets are shared by all (the local map is the fallback
    /// while the shared ones cannot be reached).
    shared: Option<Arc<dyn Topology>>,
}

impl RateLimiter {
    /// A limiter with these budgets; `auth` tells configured tokens from made-up ones.
    pub(crate) fn new(
        server: Rate,
        client: Rate,
        auth: Auth,
        shared: Option<Arc<dyn Topology>>,
    ) -> Arc<Self> {
        Arc::new(RateLimiter {
            server,
            client,
            auth,
            shared,
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                next_sweep: Instant::now(),
            }),
        })
    }

    fn rate(&self, budget: Budget) -> Rate {
        match budget {
            Budget::Server => self.server,
            Budget::Client => self.client,
        }
    }

    /// Takes one request from the caller's bucket; `Err(wait)` when it is empty.
    fn take(&self, budget: Budget, caller: Caller, now: Instant) -> Result<(), Duration> {
        let rate = self.rate(budget);
        if rate.is_off() {
            return Ok(());
        }
        let capacity = f64::from(rate.burst.max(1));
        // A plain mutex: arithmetic under it, never an `.await`; a sweep at most once per
        // `SWEEP_EVERY`.
        let mut guard = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let buckets = &mut *guard;
        if buckets.map.len() > SWEEP_ABOVE && now >= buckets.next_sweep {
            buckets.next_sweep = now + SWEEP_EVERY;
            // Full buckets carry no state worth keeping.
            buckets.map.retain(|(b, _), bucket| {
                let r = self.rate(*b);
                let refill =
                    now.saturating_duration_since(bucket.updated).as_secs_f64() * r.per_second;
                bucket.tokens + refill < f64::from(r.burst.max(1))
            });
        }
        let key =
            if buckets.map.len() >= MAX_BUCKETS && !buckets.map.contains_key(&(budget, caller)) {
                (budget, Caller::Overflow)
            } else {
                (budget, caller)
            };
        let bucket = buckets.map.entry(key).or_insert(Bucket {
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
            // A tiny rate means a wait too long for a `Duration`: never panic, wait "forever".
            Err(
                Duration::try_from_secs_f64((1.0 - bucket.tokens) / rate.per_second)
                    .unwrap_or(Duration::MAX),
            )
        }
    }

    /// Who calls, and whether the token check refused the caller (auth on, token missing or
    /// wrong for this kind of route).
    fn caller(&self, budget: Budget, req: &Request) -> (Caller, bool) {
        // An access token the OAuth layer checked names its subject; a refused one, the
        // address.
        match req.extensions().get::<Verdict>() {
            Some(Verdict::Accepted(who)) => return (Caller::Token(who.id), false),
            Some(Verdict::Refused(_)) => return (self.address_of(req), true),
            None => {}
        }
        // Only a token the proxy knows for this kind of route names a caller; anything else
        // (a made-up token, the other kind's, auth off) is the address's.
        let refused = match self.auth.check(budget.token_kind(), req.headers()) {
            Ok(Some(grant)) => return (Caller::Token(grant.id), false),
            Ok(None) => false,
            Err(_) => true,
        };
        (self.address_of(req), refused)
    }

    /// The caller by address: the listener resolves it (X-Forwarded-For from trusted
    /// proxies); an in-process router given only `ConnectInfo` keys on the peer.
    fn address_of(&self, req: &Request) -> Caller {
        match (
            req.extensions().get::<ClientAddr>(),
            req.extensions().get::<ConnectInfo<SocketAddr>>(),
        ) {
            (Some(ClientAddr(ip)), _) => Caller::Addr(*ip),
            (None, Some(ConnectInfo(addr))) => Caller::Addr(address_key(addr.ip())),
            (None, None) => Caller::Unknown,
        }
    }
}

/// Which budget a request to `route` draws from, by who calls it; a path no route matched
/// (answered 404) draws from the client budget. `None` for the health check (two map sizes),
/// never limited.
fn budget(route: Option<&Route>) -> Option<Budget> {
    match route.map(|r| r.surface) {
        Some(Surface::Health) => None,
        Some(Surface::Reverse) => Some(Budget::Server),
        Some(
            Surface::Message
            | Surface::Streamable
            | Surface::Operator
            | Surface::Discovery
            | Surface::Console
            | Surface::Login,
        )
        | None => Some(Budget::Client),
    }
}

/// Middleware: 429 with `Retry-After` (whole seconds, at least 1) when the caller's bucket
/// for the route's budget is empty.
pub(crate) async fn rate_limit(
    State(limiter): State<Arc<RateLimiter>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(budget) = budget(routes::route_of(&req)) else {
        return next.run(req).await;
    };
    if req.extensions().get::<Relayed>().is_some() {
        return next.run(req).await; // counted by the instance it reached first
    }
    let mut req = req;
    let (caller, refused) = limiter.caller(budget, &req);
    if limiter.shared.is_some() {
        // Only the topology reads it; a single instance pays nothing for it.
        req.extensions_mut().insert(TokenRefused(refused));
    }
    let verdict = match &limiter.shared {
        Some(shared) if !limiter.rate(budget).is_off() => {
            let rate = limiter.rate(budget);
            match shared
                .take_token(caller.bucket_key(budget), rate.per_second, rate.burst)
                .await
            {
                Ok(None) => Ok(()),
                Ok(Some(wait)) => Err(wait),
                // The cluster logged it (once per back-off): limit with this instance's buckets.
                Err(_) => limiter.take(budget, caller, Instant::now()),
            }
        }
        _ => limiter.take(budget, caller, Instant::now()),
    };
    match verdict {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            tracing::info!(path = %req.uri().path(), ?budget, "rate limited");
            let error = match budget {
                Budget::Server => Error::RateLimited("too many requests from this caller"),
                Budget::Client => Error::ClientRateLimited,
            };
            let mut resp = error.into_response();
            // `as` saturates: a wait too long for a u64 is sent as u64::MAX seconds.
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
            Auth::off(),
            None,
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
        let of = |pattern: &str| {
            let route = routes::ROUTES.iter().find(|r| r.pattern == pattern);
            budget(Some(route.expect("a route of the table")))
        };
        assert_eq!(of("/poll"), Some(Budget::Server));
        assert_eq!(of("/response"), Some(Budget::Server));
        assert_eq!(of("/register"), Some(Budget::Server));
        assert_eq!(of("/message"), Some(Budget::Client));
        assert_eq!(of("/servers/{name}/mcp"), Some(Budget::Client));
        assert_eq!(of("/healthz"), None);
        assert_eq!(of("/metrics"), Some(Budget::Client));
        assert_eq!(of("/servers"), Some(Budget::Client));
        assert_eq!(budget(None), Some(Budget::Client));
    }

    #[test]
    fn the_map_is_swept_at_most_once_per_interval_and_capped() {
        let l = RateLimiter::new(
            Rate {
                per_second: 1.0,
                burst: 1,
            },
            Rate::OFF,
            Auth::off(),
            None,
        );
        let t0 = Instant::now();
        let addr = |i: u32| Caller::Addr(IpAddr::from(i.to_be_bytes()));
        // Fill to the cap with callers whose buckets are empty (not sweepable).
        for i in 0..MAX_BUCKETS as u32 {
            assert!(l.take(Budget::Server, addr(i), t0).is_ok());
        }
        let len = || l.buckets.lock().unwrap().map.len();
        assert_eq!(len(), MAX_BUCKETS);
        // Newcomers share the overflow bucket: one gets through, the next waits.
        assert!(l.take(Budget::Server, addr(u32::MAX), t0).is_ok());
        assert!(l.take(Budget::Server, addr(u32::MAX - 1), t0).is_err());
        assert_eq!(len(), MAX_BUCKETS + 1);
        // Known callers keep their own bucket.
        assert!(l.take(Budget::Server, addr(0), t0).is_err());
        // Every bucket is full again two seconds later; the first call then sweeps them.
        let t1 = t0 + Duration::from_secs(2);
        assert!(l.take(Budget::Server, addr(7), t1).is_ok());
        assert_eq!(len(), 1);
        // Many new callers, but no second sweep within `SWEEP_EVERY`.
        let base = 1_000_000;
        for i in 0..(SWEEP_ABOVE as u32 + 5) {
            assert!(l.take(Budget::Server, addr(base + i), t1).is_ok());
        }
        let t2 = t1 + Duration::from_millis(500);
        assert!(l.take(Budget::Server, addr(base), t2).is_err());
        assert_eq!(len(), SWEEP_ABOVE + 6);
    }

    #[test]
    fn ipv6_callers_are_keyed_by_their_64() {
        let a = address_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = address_key("2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = address_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mapped = address_key("::ffff:10.0.0.1".parse().unwrap());
        assert_eq!(mapped, "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_tiny_rate_waits_forever_instead_of_panicking() {
        let l = RateLimiter::new(
            Rate {
                per_second: 1e-30,
                burst: 1,
            },
            Rate::OFF,
            Auth::off(),
            None,
        );
        let t0 = Instant::now();
        assert!(l.take(Budget::Server, Caller::Unknown, t0).is_ok());
        assert_eq!(
            l.take(Budget::Server, Caller::Unknown, t0),
            Err(Duration::MAX)
        );
        assert!(Rate {
            per_second: f64::NAN,
            burst: 1
        }
        .is_off());
    }
}
