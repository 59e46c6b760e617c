//! Who may use the console: the admin credential, the cookie sessions a login opens, and the
//! bound on login attempts. Every store here is bounded by a named constant.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// The shortest admin password accepted.
pub const MIN_PASSWORD_LEN: usize = 12;
/// Console sessions kept at once; a new login beyond it ends the oldest session.
pub const MAX_SESSIONS: usize = 64;
/// A session ends this long after its login, however active.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// A session ends after this long without a request.
pub const SESSION_IDLE: Duration = Duration::from_secs(3600);
/// Failed logins one address may make per [`LOGIN_WINDOW`]; then 429 until it passes.
pub const LOGIN_FAILURES_PER_ADDRESS: u32 = 5;
/// Failed logins all addresses together may make per [`LOGIN_WINDOW`] (a spread-out
/// guessing attempt), then 429 for everyone until it passes.
pub const LOGIN_FAILURES_TOTAL: u32 = 50;
/// The window login failures are counted in.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose failures are remembered; beyond it the oldest window is forgotten.
pub const LOGIN_TRACKED_ADDRESSES: usize = 4096;
/// The session cookie's name.
pub const COOKIE: &str = "mcp_console";

/// The console's admin credential (`--console-user`, `--console-password`): kept as
/// digests, never shown by `Debug`.
#[derive(Clone)]
pub struct ConsoleConfig {
    user: [u8; 32],
    password: [u8; 32],
}

impl std::fmt::Debug for ConsoleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsoleConfig(<credential>)")
    }
}

fn sha256(s: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, s).as_ref());
    out
}

impl ConsoleConfig {
    /// The credential `user` / `password`; refused (with the reason, never the password)
    /// when the user is empty or the password shorter than [`MIN_PASSWORD_LEN`].
    pub fn new(user: &str, password: &str) -> Result<ConsoleConfig, String> {
        if user.trim().is_empty() {
            return Err("the console user name is empty".into());
        }
        if password.chars().count() < MIN_PASSWORD_LEN {
            return Err(format!(
                "the console password must have at least {MIN_PASSWORD_LEN} characters"
            ));
        }
        Ok(ConsoleConfig {
            user: sha256(user.trim().as_bytes()),
            password: sha256(password.as_bytes()),
        })
    }

    /// Whether `user` / `password` is the credential, in constant time.
    pub fn matches(&self, user: &str, password: &str) -> bool {
        let user_ok = sha256(user.trim().as_bytes()).ct_eq(&self.user);
        let password_ok = sha256(password.as_bytes()).ct_eq(&self.password);
        bool::from(user_ok & password_ok)
    }
}

/// Open console sessions, keyed by the digest of their cookie (a lookup by secret takes the
/// same time whatever the guess).
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    open: Mutex<HashMap<[u8; 32], Session>>,
}

#[derive(Debug)]
struct Session {
    opened: Instant,
    seen: Instant,
}

impl Sessions {
    /// Opens a session; returns its cookie value (64 hex digits of randomness).
    pub(crate) fn open(&self) -> Option<String> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).ok()?;
        let value: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut open = self.lock();
        open.retain(|_, s| s.alive(now));
        if open.len() >= MAX_SESSIONS {
            let oldest = open.iter().min_by_key(|(_, s)| s.opened).map(|(k, _)| *k);
            if let Some(k) = oldest {
                open.remove(&k);
            }
        }
        open.insert(
            sha256(value.as_bytes()),
            Session {
                opened: now,
                seen: now,
            },
        );
        Some(value)
    }

    /// Whether the request carries the cookie of a live session (which it keeps alive).
    pub(crate) fn check(&self, headers: &HeaderMap) -> bool {
        let Some(value) = cookie(headers) else {
            return false;
        };
        let key = sha256(value.as_bytes());
        let now = Instant::now();
        let mut open = self.lock();
        match open.get_mut(&key) {
            Some(s) if s.alive(now) => {
                s.seen = now;
                true
            }
            Some(_) => {
                open.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Ends the request's session, if any.
    pub(crate) fn close(&self, headers: &HeaderMap) {
        if let Some(value) = cookie(headers) {
            self.lock().remove(&sha256(value.as_bytes()));
        }
    }

    /// Sessions open now.
    pub(crate) fn count(&self) -> usize {
        let now = Instant::now();
        self.lock().values().filter(|s| s.alive(now)).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // A sync lock: map updates only.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Session {
    fn alive(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.opened) < SESSION_LIFETIME
            && now.saturating_duration_since(self.seen) < SESSION_IDLE
    }
}

/// The console cookie's value, if the request has one.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    crate::auth::read_cookie(headers, COOKIE).filter(|v| v.len() == 64)
}

/// Counts failed logins per address and in all, per window.
#[derive(Debug, Default)]
pub(crate) struct LoginLimiter {
    state: Mutex<Failures>,
}

#[derive(Debug, Default)]
struct Failures {
    total: (Option<Instant>, u32),
    by_address: HashMap<IpAddr, (Instant, u32)>,
}

impl LoginLimiter {
    /// `Err(wait)` when `addr` (or everyone) failed too often in the current window.
    pub(crate) fn admit(&self, addr: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let st = self.lock();
        let left =
            |since: Instant| LOGIN_WINDOW.saturating_sub(now.saturating_duration_since(since));
        if let (Some(since), n) = st.total {
            if n >= LOGIN_FAILURES_TOTAL && left(since) > Duration::ZERO {
                return Err(left(since));
            }
        }
        if let Some((since, n)) = addr.and_then(|a| st.by_address.get(&a)) {
            if *n >= LOGIN_FAILURES_PER_ADDRESS && left(*since) > Duration::ZERO {
                return Err(left(*since));
            }
        }
        Ok(())
    }

    /// Counts a failed login from `addr`.
    pub(crate) fn failed(&self, addr: Option<IpAddr>) {
        let now = Instant::now();
        let mut st = self.lock();
        let fresh = |since: Instant| now.saturating_duration_since(since) >= LOGIN_WINDOW;
        st.total = match st.total {
            (Some(since), n) if !fresh(since) => (Some(since), n.saturating_add(1)),
            _ => (Some(now), 1),
        };
        let Some(addr) = addr else { return };
        if !st.by_address.contains_key(&addr) && st.by_address.len() >= LOGIN_TRACKED_ADDRESSES {
            st.by_address.retain(|_, (since, _)| !fresh(*since));
            if st.by_address.len() >= LOGIN_TRACKED_ADDRESSES {
                let oldest = st
                    .by_address
                    .iter()
                    .min_by_key(|(_, v)| v.0)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    st.by_address.remove(&k);
                }
            }
        }
        let entry = st.by_address.entry(addr).or_insert((now, 0));
        if fresh(entry.0) {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        // A sync lock: counter updates only.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, HeaderValue};

    #[test]
    fn the_credential_is_checked_whole() {
        assert!(ConsoleConfig::new("admin", "short").is_err());
        let c = ConsoleConfig::new("admin", "correct horse battery").unwrap();
        assert!(c.matches("admin", "correct horse battery"));
        assert!(!c.matches("admin", "correct horse batter"));
        assert!(!c.matches("root", "correct horse battery"));
        assert!(!format!("{c:?}").contains("horse"));
    }

    #[test]
    fn sessions_open_check_and_close() {
        let s = Sessions::default();
        let value = s.open().unwrap();
        let mut h = HeaderMap::new();
        assert!(!s.check(&h));
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={value}")).unwrap(),
        );
        assert!(s.check(&h));
        s.close(&h);
        assert!(!s.check(&h));
        for _ in 0..MAX_SESSIONS + 5 {
            s.open().unwrap();
        }
        assert_eq!(s.count(), MAX_SESSIONS);
    }

    #[test]
    fn failures_are_bounded_per_address_and_in_all() {
        let l = LoginLimiter::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..LOGIN_FAILURES_PER_ADDRESS {
            assert!(l.admit(Some(a)).is_ok());
            l.failed(Some(a));
        }
        assert!(l.admit(Some(a)).is_err());
        assert!(l.admit(Some(b)).is_ok());
        for _ in 0..LOGIN_FAILURES_TOTAL {
            l.failed(Some(b));
        }
        assert!(l.admit(Some("10.0.0.3".parse().unwrap())).is_err());
    }
}
