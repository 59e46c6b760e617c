//! Who a caller is by address: the peer of the connection, or, when that peer is a trusted
//! reverse proxy (`--trusted-proxies`), the address it forwarded in `X-Forwarded-For`.
//!
//! Per-address limits (connections, rate, registrations and sessions without a token) key on
//! [`ClientAddr`], which the listener puts on every request. Behind nginx every peer is
//! 127.0.0.1; believing `X-Forwarded-For` from anyone would let a caller pick its own key, so
//! only the CIDRs the operator names are believed, and the header is read from the right:
//! the first address that is not itself a trusted proxy is the client (the entries to its
//! left were written by the client and prove nothing).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The header a trusted reverse proxy appends the client's address to.
pub const FORWARDED_FOR: &str = "x-forwarded-for";

/// The caller's address as per-address limits see it (IPv6 by its /64); a request extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

/// The networks whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// A `--trusted-proxies` entry that is neither an address nor a CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadCidr(pub String);

impl fmt::Display for BadCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an IP address or CIDR (e.g. 127.0.0.1, 10.0.0.0/8, ::1/128)",
            self.0
        )
    }
}

impl std::error::Error for BadCidr {}

impl FromStr for TrustedProxies {
    type Err = BadCidr;

    /// A comma-separated list of addresses and CIDRs; empty trusts none.
    fn from_str(s: &str) -> Result<Self, BadCidr> {
        let mut nets = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let net = match part.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => part
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| BadCidr(part.to_owned()))?,
            };
            nets.push(net.trunc());
        }
        Ok(TrustedProxies(nets))
    }
}

impl TrustedProxies {
    /// Trusts no one: every caller is its peer address.
    pub fn none() -> Self {
        TrustedProxies(Vec::new())
    }

    /// Whether any network is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client behind `peer`: `peer` itself unless it is trusted, else the rightmost
    /// `X-Forwarded-For` entry that is not a trusted proxy (or the leftmost if all are).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> ClientAddr {
        ClientAddr(address_key(self.client_ip(peer, headers)))
    }

    /// The client's own address behind `peer`, as [`TrustedProxies::client`] finds it but
    /// whole (an IPv6 address not cut to its /64): what the audit log records.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        // Every header line in order, each a comma-separated list: the last hop is rightmost.
        let hops: Vec<&str> = headers
            .get_all(FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                // Junk is where trust ends: whoever wrote it is the client we know of.
                break;
            };
            client = canonical(ip);
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// An `X-Forwarded-For` entry: an address, perhaps with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = hop.parse::<std::net::SocketAddr>() {
        return Some(sock.ip());
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse().ok())
}

/// IPv4-mapped IPv6 addresses as IPv4, so `::ffff:10.0.0.1` meets `10.0.0.0/8`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The key per-address limits use: IPv4 as is, IPv6 by its /64 (a host usually has a whole
/// /64 and could otherwise take a fresh key per address).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append(FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let t: TrustedProxies = "127.0.0.1".parse().unwrap();
        let c = t.client(ip("203.0.113.9"), &headers(&["198.51.100.1"]));
        assert_eq!(c, ClientAddr(ip("203.0.113.9")));
    }

    #[test]
    fn a_trusted_peer_forwards_the_rightmost_untrusted_hop() {
        let t: TrustedProxies = "127.0.0.1, 10.0.0.0/8".parse().unwrap();
        // The client wrote 1.1.1.1 itself; nginx appended the real address, then an inner
        // proxy at 10.0.0.2.
        let h = headers(&["1.1.1.1, 198.51.100.7", "10.0.0.2"]);
        assert_eq!(
            t.client(ip("127.0.0.1"), &h),
            ClientAddr(ip("198.51.100.7"))
        );
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_itself() {
        let t: TrustedProxies = "127.0.0.0/8".parse().unwrap();
        assert_eq!(
            t.client(ip("127.0.0.1"), &HeaderMap::new()),
            ClientAddr(ip("127.0.0.1"))
        );
    }

    #[test]
    fn junk_in_the_header_ends_the_walk() {
        let t: TrustedProxies = "127.0.0.1".parse().unwrap();
        let h = headers(&["198.51.100.7, not-an-ip"]);
        assert_eq!(t.client(ip("127.0.0.1"), &h), ClientAddr(ip("127.0.0.1")));
    }

    #[test]
    fn hops_with_ports_and_mapped_addresses_are_understood() {
        let t: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let h = headers(&["[2001:db8::1]:443"]);
        assert_eq!(
            t.client(ip("::ffff:10.1.2.3"), &h),
            ClientAddr(ip("2001:db8::"))
        );
        assert_eq!(t.client_ip(ip("::ffff:10.1.2.3"), &h), ip("2001:db8::1"));
    }

    #[test]
    fn bad_entries_are_refused_by_name() {
        let e = "10.0.0.0/8, nonsense"
            .parse::<TrustedProxies>()
            .unwrap_err();
        assert!(e.to_string().contains("nonsense"));
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
    }
}
