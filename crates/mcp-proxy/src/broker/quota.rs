//! Who holds what: registrations and client sessions counted per caller (a token, else an
//! address), so that no one caller fills the proxy's shared caps.
//!
//! The counts live beside the maps they count and change only where an entry is inserted or
//! removed, so a check is a map lookup under the broker lock, never a scan.

use std::collections::HashMap;
use std::net::IpAddr;

use std::time::Instant;

use tracing::info;

use crate::auth::TokenId;
use crate::{Config, Error};

/// A caller as quotas see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Holder {
    /// A configured token, by its digest.
    Token(TokenId),
    /// An address (IPv6 by its /64), for callers without a token.
    Address(IpAddr),
}

/// Who asks for a registration or a client session: its token (auth on) and its address
/// (the peer, or `X-Forwarded-For` from a trusted proxy).
#[derive(Clone, Copy, Debug, Default)]
pub struct Requester {
    /// The token it authenticated with, if any.
    pub token: Option<TokenId>,
    /// Its address, when known (absent for requests relayed from another instance).
    pub address: Option<IpAddr>,
}

impl Requester {
    /// A requester known by its token only.
    pub fn with_token(token: Option<TokenId>) -> Self {
        Requester {
            token,
            address: None,
        }
    }

    /// What its quota is counted on: the token when there is one, else the address.
    pub(crate) fn holder(&self) -> Option<Holder> {
        self.token
            .map(Holder::Token)
            .or(self.address.map(Holder::Address))
    }
}

/// Entries held per caller.
#[derive(Debug, Default)]
pub(crate) struct Held(HashMap<Holder, usize>);

impl Held {
    /// How many `holder` holds.
    pub(crate) fn of(&self, holder: &Holder) -> usize {
        self.0.get(holder).copied().unwrap_or(0)
    }

    /// Counts one more for `holder`.
    pub(crate) fn add(&mut self, holder: Option<Holder>) {
        if let Some(h) = holder {
            *self.0.entry(h).or_default() += 1;
        }
    }

    /// Counts one less for `holder`, forgetting callers that hold nothing.
    pub(crate) fn remove(&mut self, holder: Option<Holder>) {
        let Some(h) = holder else { return };
        if let Some(n) = self.0.get_mut(&h) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&h);
            }
        }
    }
}

impl super::State {
    /// Keeps all sessions' replay within `max` bytes: the finished streams of the sessions
    /// seen longest ago go first, then each such session is trimmed to its newest events.
    pub(super) fn trim_replay_in_all(&mut self, max: usize) {
        let mut by_session: Vec<(Instant, String, usize)> = self
            .sessions
            .iter()
            .map(|(id, s)| (s.last_seen, id.clone(), s.replay_bytes()))
            .collect();
        let mut total: usize = by_session.iter().map(|(_, _, b)| b).sum();
        if total <= max {
            return;
        }
        by_session.sort();
        let before = total;
        for (_, id, bytes) in by_session {
            if total <= max {
                break;
            }
            if let Some(session) = self.sessions.get_mut(&id) {
                total -= bytes - session.trim_replay(0);
            }
        }
        info!(
            before,
            after = total,
            max,
            "replay logs over --max-replay-bytes: the least recent sessions' trimmed"
        );
    }

    /// Refuses a registration over the caps: all registrations (503), the caller's token's
    /// or, without a token, its address's (429).
    pub(super) fn admit_registration(&self, who: &Requester, cfg: &Config) -> Result<(), Error> {
        if self.registrations.len() >= cfg.max_registrations {
            info!(
                max = cfg.max_registrations,
                "registration refused: --max-registrations reached"
            );
            return Err(Error::RegistrationsFull);
        }
        match who.holder() {
            Some(h @ Holder::Token(_))
                if self.registrants.of(&h) >= cfg.max_registrations_per_token =>
            {
                Err(Error::RateLimited("too many registrations for this token"))
            }
            Some(h @ Holder::Address(_))
                if self.registrants.of(&h) >= cfg.max_registrations_per_address =>
            {
                Err(Error::RateLimited(
                    "too many registrations from this address",
                ))
            }
            _ => Ok(()),
        }
    }

    /// Records who made registration `id`: its owner token and the caller it counts against.
    pub(super) fn charge_registration(
        &mut self,
        id: &str,
        owner: Option<TokenId>,
        holder: Option<Holder>,
    ) {
        if let Some(reg) = self.registrations.get_mut(id) {
            reg.owner = owner;
            reg.holder = holder;
            self.registrants.add(holder);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_adds_and_removes_and_empty_holders_are_forgotten() {
        let a = Holder::Address("192.0.2.1".parse().unwrap());
        let mut held = Held::default();
        held.add(Some(a));
        held.add(Some(a));
        held.add(None);
        assert_eq!(held.of(&a), 2);
        held.remove(Some(a));
        held.remove(Some(a));
        assert_eq!(held.of(&a), 0);
        assert!(held.0.is_empty());
    }

    #[test]
    fn a_token_is_the_holder_before_an_address() {
        let r = Requester {
            token: None,
            address: Some("192.0.2.1".parse().unwrap()),
        };
        assert!(matches!(r.holder(), Some(Holder::Address(_))));
        assert_eq!(Requester::default().holder(), None);
    }
}
