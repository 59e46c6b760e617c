//! [`HostAllowList`]: the Host and Origin checks that defend a Streamable HTTP endpoint
//! against DNS rebinding. Loopback is recognised by parsing addresses, never by prefix.

/// Host names that are always allowed: the loopback names (DNS rebinding cannot point them
/// elsewhere).
fn is_loopback_host(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    // An address, parsed: `127.attacker.example` starts like one and is a name anyone can
    // point anywhere (the rebinding case this check exists for).
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<std::net::IpAddr>().is_ok_and(|ip| match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    })
}

/// Splits `host[:port]` (or `[v6]:port`) and returns the host, lowercased.
fn host_part(authority: &str) -> String {
    let authority = authority.trim().to_ascii_lowercase();
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.find(']') {
            Some(end) => format!("[{}]", &rest[..end]),
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host.to_owned(),
        _ => authority,
    }
}

/// The Host and Origin allow-list that defends against DNS rebinding. Loopback names are always
/// allowed; `*` allows every host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostAllowList {
    hosts: Vec<String>,
    any: bool,
}

impl HostAllowList {
    /// Allows loopback names plus `hosts` (names or `name:port`; `*` for any).
    pub fn new<I, S>(hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = HostAllowList::default();
        for h in hosts {
            let h = h.as_ref().trim();
            if h == "*" {
                list.any = true;
            } else if !h.is_empty() {
                list.hosts.push(host_part(h));
            }
        }
        list
    }

    /// Whether `host` (from a `Host` header or an Origin's authority) may reach us.
    pub fn allows_host(&self, authority: &str) -> bool {
        let host = host_part(authority);
        self.any || is_loopback_host(&host) || self.hosts.contains(&host)
    }

    /// Whether a request's `Origin` header is acceptable: absent (not a browser) or naming an
    /// allowed host. `null` and unparsable origins are refused.
    pub fn allows_origin(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        let Some((_, rest)) = origin.trim().split_once("://") else {
            return false;
        };
        let authority = rest.split('/').next().unwrap_or("");
        !authority.is_empty() && self.allows_host(authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins() {
        let list = HostAllowList::new(["mcp.example.com"]);
        for ok in [
            "localhost:9000",
            "127.0.0.1",
            "[::1]:8080",
            "MCP.example.com:443",
            "mcp.example.com",
        ] {
            assert!(list.allows_host(ok), "{ok}");
        }
        assert!(!list.allows_host("evil.example.com"));
        assert!(!list.allows_host("mcp.example.com.evil.net"));
        assert!(list.allows_origin(None));
        assert!(list.allows_origin(Some("http://localhost:6274")));
        assert!(list.allows_origin(Some("https://mcp.example.com")));
        assert!(!list.allows_origin(Some("https://evil.example.com")));
        assert!(!list.allows_origin(Some("null")));
        assert!(HostAllowList::new(["*"]).allows_host("anything.example"));
    }

    #[test]
    fn loopback_is_an_address_test_never_a_prefix_test() {
        let list = HostAllowList::new::<_, &str>([]);
        for ok in [
            "127.0.0.1:9000",
            "127.8.9.10",
            "[::1]",
            "[::ffff:127.0.0.1]:1",
            "LOCALHOST",
        ] {
            assert!(list.allows_host(ok), "{ok}");
        }
        for rebinding in [
            "127.attacker.example:9000",
            "127.0.0.1.evil.example",
            "127.0.0.1.nip.io",
            "localhost.evil.example",
            "128.0.0.1",
            "[::2]",
        ] {
            assert!(!list.allows_host(rebinding), "{rebinding}");
            assert!(
                !list.allows_origin(Some(&format!("http://{rebinding}"))),
                "{rebinding}"
            );
        }
    }
}
