//! MCP protocol versions and the negotiation rule.
//!
//! Two eras share one endpoint: up to 2025-11-25 a session starts with `initialize` and the
//! version is negotiated once; from 2026-07-28 there is no handshake and every request names
//! its version in `_meta`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A protocol version string such as `"2025-11-25"` (unknown versions are kept as written).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProtocolVersion(pub String);

/// The first published version; what the seed's client sends.
pub const V2024_11_05: &str = "2024-11-05";
/// Streamable HTTP replaces HTTP+SSE.
pub const V2025_03_26: &str = "2025-03-26";
/// Structured tool output, elicitation; batches removed.
pub const V2025_06_18: &str = "2025-06-18";
/// The newest version with the `initialize` handshake.
pub const V2025_11_25: &str = "2025-11-25";
/// The current, stateless version: per-request `_meta`, `server/discover`.
pub const V2026_07_28: &str = "2026-07-28";

/// Every version this project speaks, oldest first.
pub const SUPPORTED: &[&str] = &[
    V2024_11_05,
    V2025_03_26,
    V2025_06_18,
    V2025_11_25,
    V2026_07_28,
];

/// The versions that start with an `initialize` handshake, oldest first.
pub const HANDSHAKE_VERSIONS: &[&str] = &[V2024_11_05, V2025_03_26, V2025_06_18, V2025_11_25];

/// The newest version of all.
pub const LATEST: &str = V2026_07_28;

/// The newest version that has the `initialize` handshake.
pub const LATEST_HANDSHAKE: &str = V2025_11_25;

impl ProtocolVersion {
    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this project speaks this version.
    pub fn is_supported(&self) -> bool {
        is_supported(&self.0)
    }

    /// Whether this version is of the stateless era (no handshake).
    pub fn is_stateless(&self) -> bool {
        is_stateless(&self.0)
    }
}

impl From<&str> for ProtocolVersion {
    fn from(s: &str) -> Self {
        ProtocolVersion(s.to_owned())
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `version` is one this project speaks.
pub fn is_supported(version: &str) -> bool {
    SUPPORTED.contains(&version)
}

/// Whether `version` belongs to the stateless era (2026-07-28 and later).
///
/// Versions are dates, so a later unknown version compares greater as a string.
pub fn is_stateless(version: &str) -> bool {
    version >= V2026_07_28
}

/// The `initialize` negotiation rule: answer with the client's version when the server supports
/// it, otherwise with the newest handshake version the server supports (the client then
/// decides whether it can continue).
///
/// `server_supports` lists the handshake versions the server offers; an empty list means all of
/// [`HANDSHAKE_VERSIONS`]. A 2026-07-28 client that nevertheless sends `initialize` is answered
/// with [`LATEST_HANDSHAKE`], since that era has no handshake.
pub fn negotiate(requested: &str, server_supports: &[&str]) -> ProtocolVersion {
    let offered: &[&str] = if server_supports.is_empty() {
        HANDSHAKE_VERSIONS
    } else {
        server_supports
    };
    if offered.contains(&requested) && !is_stateless(requested) {
        return requested.into();
    }
    offered
        .iter()
        .filter(|v| !is_stateless(v))
        .max()
        .copied()
        .unwrap_or(LATEST_HANDSHAKE)
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_client_version_is_kept() {
        for v in HANDSHAKE_VERSIONS {
            assert_eq!(negotiate(v, &[]).as_str(), *v);
        }
    }

    #[test]
    fn unknown_or_stateless_version_falls_back_to_latest_handshake() {
        assert_eq!(negotiate("1999-01-01", &[]).as_str(), V2025_11_25);
        assert_eq!(negotiate("2030-01-01", &[]).as_str(), V2025_11_25);
        assert_eq!(negotiate(V2026_07_28, &[]).as_str(), V2025_11_25);
    }

    #[test]
    fn server_limits_are_respected() {
        assert_eq!(
            negotiate(V2025_11_25, &[V2024_11_05, V2025_03_26]).as_str(),
            V2025_03_26
        );
        assert_eq!(negotiate(V2024_11_05, &[V2024_11_05]).as_str(), V2024_11_05);
    }

    #[test]
    fn eras() {
        assert!(is_stateless(V2026_07_28));
        assert!(is_stateless("2027-01-01"));
        assert!(!is_stateless(V2025_11_25));
        assert!(is_supported(V2024_11_05));
        assert!(!is_supported("2024-10-07"));
        assert!(ProtocolVersion::from(LATEST).is_stateless());
        assert!(SUPPORTED.windows(2).all(|w| w[0] < w[1]));
    }
}
