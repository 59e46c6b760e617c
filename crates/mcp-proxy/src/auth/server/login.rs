//! Who may sign in: one passphrase (everyone who knows it is the same user, subject
//! [`PASSPHRASE_SUBJECT`]) or a file of users with their own passwords (PBKDF2-SHA256
//! hashes); and the limit on login attempts, per address and in all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use ring::digest::{digest, SHA256};
use ring::pbkdf2;
use subtle::ConstantTimeEq;

use crate::Error;

/// The subject of everyone who signs in with the shared passphrase: one passphrase is one
/// user as far as servers can tell.
pub const PASSPHRASE_SUBJECT: &str = "owner";
/// The shortest passphrase accepted.
pub const MIN_PASSPHRASE_LEN: usize = 12;
/// Login attempts one address may make per [`LOGIN_WINDOW`].
pub const LOGIN_ATTEMPTS_PER_ADDRESS: u32 = 10;
/// Login attempts all addresses together may make per [`LOGIN_WINDOW`].
pub const LOGIN_ATTEMPTS_IN_ALL: u32 = 100;
/// The window of the login limits.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Addresses the login limiter tracks at once (it forgets them all past this).
const TRACKED_ADDRESSES: usize = 10_000;
/// The PBKDF2 iterations `mcp-proxy --oauth-hash-password` uses.
pub const PBKDF2_ITERATIONS: u32 = 310_000;

/// How users sign in.
#[derive(Clone)]
pub enum Credentials {
    /// One passphrase, by its SHA-256 digest.
    Passphrase([u8; 32]),
    /// Users by name: (iterations, salt, PBKDF2-SHA256 hash).
    Users(HashMap<String, (NonZeroU32, Vec<u8>, Vec<u8>)>),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Passphrase(_) => f.write_str("Passphrase(<redacted>)"),
            Credentials::Users(u) => write!(f, "Users({} users)", u.len()),
        }
    }
}

fn bad(flag: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        flag,
        reason: reason.into(),
    }
}

impl Credentials {
    /// One shared passphrase (at least [`MIN_PASSPHRASE_LEN`] characters).
    pub fn passphrase(text: &str) -> Result<Self, Error> {
        let text = text.trim_end_matches(['\n', '\r']);
        if text.chars().count() < MIN_PASSPHRASE_LEN {
            return Err(bad(
                "--oauth-passphrase",
                format!("at least {MIN_PASSPHRASE_LEN} characters"),
            ));
        }
        let mut d = [0u8; 32];
        d.copy_from_slice(digest(&SHA256, text.as_bytes()).as_ref());
        Ok(Credentials::Passphrase(d))
    }

    /// The users file: `NAME HASH` per line (`#` comments), HASH as
    /// `pbkdf2-sha256$ITERATIONS$SALT$HASH` (salt and hash in base64).
    pub fn users_file(path: &Path) -> Result<Self, Error> {
        const FLAG: &str = "--oauth-users-file";
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(FLAG, format!("{}: {e}", path.display())))?;
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = || format!("{} line {}", path.display(), n + 1);
            let mut words = line.split_whitespace();
            let (Some(name), Some(hash), None) = (words.next(), words.next(), words.next()) else {
                return Err(bad(FLAG, format!("{}: expected `NAME HASH`", at())));
            };
            if name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad(
                    FLAG,
                    format!("{}: a user name is 1-64 visible characters", at()),
                ));
            }
            let parsed = parse_hash(hash).ok_or_else(|| {
                bad(
                    FLAG,
                    format!("{}: the hash is not pbkdf2-sha256$ITER$SALT$HASH", at()),
                )
            })?;
            users.insert(name.to_owned(), parsed);
        }
        if users.is_empty() {
            return Err(bad(FLAG, format!("{}: no users", path.display())));
        }
        Ok(Credentials::Users(users))
    }

    /// Whether the login form names a user (a users file) or only asks the passphrase.
    pub fn has_users(&self) -> bool {
        matches!(self, Credentials::Users(_))
    }

    /// The subject `user`/`password` sign in as, if they are right.
    pub fn check(&self, user: &str, password: &str) -> Option<String> {
        match self {
            Credentials::Passphrase(expected) => {
                let presented = digest(&SHA256, password.as_bytes());
                bool::from(presented.as_ref().ct_eq(expected))
                    .then(|| PASSPHRASE_SUBJECT.to_owned())
            }
            Credentials::Users(users) => {
                let Some((iterations, salt, hash)) = users.get(user) else {
                    // The same work as a known user, so timing does not tell who exists.
                    let mut sink = [0u8; 32];
                    pbkdf2::derive(
                        pbkdf2::PBKDF2_HMAC_SHA256,
                        NonZeroU32::new(PBKDF2_ITERATIONS).expect("non-zero"),
                        b"unknown-user-salt",
                        password.as_bytes(),
                        &mut sink,
                    );
                    return None;
                };
                pbkdf2::verify(
                    pbkdf2::PBKDF2_HMAC_SHA256,
                    *iterations,
                    salt,
                    password.as_bytes(),
                    hash,
                )
                .ok()
                .map(|()| user.to_owned())
            }
        }
    }
}

/// Parses `pbkdf2-sha256$ITERATIONS$SALT$HASH`.
fn parse_hash(text: &str) -> Option<(NonZeroU32, Vec<u8>, Vec<u8>)> {
    let mut parts = text.split('$');
    if parts.next()? != "pbkdf2-sha256" {
        return None;
    }
    let iterations = NonZeroU32::new(parts.next()?.parse().ok()?)?;
    let decode = |s: &str| STANDARD_NO_PAD.decode(s.trim_end_matches('=')).ok();
    let salt = decode(parts.next()?)?;
    let hash = decode(parts.next()?)?;
    (parts.next().is_none() && salt.len() >= 8 && hash.len() == 32)
        .then_some((iterations, salt, hash))
}

/// A users-file hash of `password` with a fresh salt.
pub fn hash_password(password: &str) -> String {
    let salt = super::random_bytes::<16>();
    let mut hash = [0u8; 32];
    let iterations = NonZeroU32::new(PBKDF2_ITERATIONS).expect("non-zero");
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &mut hash,
    );
    format!(
        "pbkdf2-sha256${PBKDF2_ITERATIONS}${}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(hash)
    )
}

/// Counts login attempts in fixed windows, per address and in all (this instance's count:
/// in a cluster each instance allows its own).
#[derive(Debug, Default)]
pub struct LoginLimiter {
    /// A sync lock: no `.await` under it.
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    window: Option<Instant>,
    in_all: u32,
    by_address: HashMap<IpAddr, u32>,
}

impl LoginLimiter {
    /// Counts an attempt from `address`; `Err(seconds)` to wait when over a limit.
    pub fn attempt(&self, address: Option<IpAddr>) -> Result<(), u64> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let start = *st.window.get_or_insert(now);
        if now.duration_since(start) >= LOGIN_WINDOW {
            *st = LimiterState {
                window: Some(now),
                ..LimiterState::default()
            };
        }
        let wait = (LOGIN_WINDOW.saturating_sub(now.duration_since(st.window.unwrap_or(now))))
            .as_secs()
            .max(1);
        if st.in_all >= LOGIN_ATTEMPTS_IN_ALL {
            return Err(wait);
        }
        if let Some(address) = address {
            if st.by_address.len() >= TRACKED_ADDRESSES {
                st.by_address.clear();
            }
            let count = st.by_address.entry(address).or_default();
            if *count >= LOGIN_ATTEMPTS_PER_ADDRESS {
                return Err(wait);
            }
            *count += 1;
        }
        st.in_all += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_and_users() {
        let p = Credentials::passphrase("correct horse battery\n").unwrap();
        assert_eq!(
            p.check("", "correct horse battery").as_deref(),
            Some(PASSPHRASE_SUBJECT)
        );
        assert_eq!(p.check("", "wrong horse battery"), None);
        assert!(Credentials::passphrase("short").is_err());

        let dir = std::env::temp_dir().join(format!("mcp-proxy-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("users");
        std::fs::write(
            &file,
            format!("# users\nalice {}\n", hash_password("alice's password")),
        )
        .unwrap();
        let users = Credentials::users_file(&file).unwrap();
        assert_eq!(
            users.check("alice", "alice's password").as_deref(),
            Some("alice")
        );
        assert_eq!(users.check("alice", "bob's password"), None);
        assert_eq!(users.check("bob", "alice's password"), None);
        std::fs::write(&file, "alice plaintext\n").unwrap();
        assert!(Credentials::users_file(&file).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn attempts_are_limited_per_address_and_in_all() {
        let limiter = LoginLimiter::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..LOGIN_ATTEMPTS_PER_ADDRESS {
            limiter.attempt(Some(a)).unwrap();
        }
        let wait = limiter.attempt(Some(a)).unwrap_err();
        assert!(wait >= 1 && wait <= LOGIN_WINDOW.as_secs());
        // Others still may, up to the limit in all.
        let mut n = LOGIN_ATTEMPTS_PER_ADDRESS;
        let mut host = 2u8;
        while n < LOGIN_ATTEMPTS_IN_ALL {
            let b = IpAddr::from([192, 0, 2, host]);
            if limiter.attempt(Some(b)).is_ok() {
                n += 1;
            } else {
                host += 1;
            }
        }
        assert!(limiter
            .attempt(Some("198.51.100.7".parse().unwrap()))
            .is_err());
    }
}
