//! Client ID metadata documents: a client whose `client_id` is an https URL is described by
//! the JSON document at that URL, which the proxy fetches (the MCP spec's preferred way for
//! a client and a server with no prior relationship).
//!
//! Fetching a URL a stranger chose is a server-side request forgery risk, so: https only,
//! no credentials, fragments or dot segments in the URL; the host is resolved first and
//! every address must be public (no loopback, private, link-local, shared, multicast or
//! reserved ranges), then the connection goes to exactly the address checked (a second DNS
//! answer cannot point it elsewhere); no redirects; [`FETCH_TIMEOUT`]; at most
//! [`MAX_DOCUMENT_BYTES`]. Documents are cached [`CACHE_FOR`] (failures
//! [`FAILURE_CACHE_FOR`]), at most [`MAX_CACHED`] of them; at most [`MAX_FETCHES`] at once. Tests (only) may trust a test CA
//! and allow loopback addresses (`--oauth-cimd-test-ca`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::{debug, info};
use url::{Host, Url};

use super::clients::{check_redirect_uri, Client, MAX_REDIRECT_URIS};
use super::store::unix_now;
use crate::Error;

/// The largest document read.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024;
/// The deadline of one fetch (connection included).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a fetched document is used.
pub const CACHE_FOR: Duration = Duration::from_secs(10 * 60);
/// How long a document that could not be used is not fetched again.
pub const FAILURE_CACHE_FOR: Duration = Duration::from_secs(60);
/// The most documents (and failures) cached; past it failures and stale entries go first.
pub const MAX_CACHED: usize = 1_000;
/// The most documents fetched at once: past it a new client id is unusable for now (not
/// cached), so strangers' ids cannot make the proxy hold unbounded outbound fetches.
pub const MAX_FETCHES: usize = 16;

/// The documents fetched, and how to fetch them.
pub(crate) struct Documents {
    /// Tests only: trusted besides the public roots, and loopback allowed.
    test_ca: Option<reqwest::Certificate>,
    /// A sync lock: no `.await` under it.
    cache: Mutex<HashMap<String, (Instant, Option<Client>)>>,
    /// Fetches under way, at most [`MAX_FETCHES`].
    fetching: tokio::sync::Semaphore,
}

impl Documents {
    pub(crate) fn new(test_ca_pem: Option<&str>) -> Result<Self, Error> {
        let test_ca = test_ca_pem
            .map(|pem| {
                reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| Error::InvalidConfig {
                    flag: "--oauth-cimd-test-ca",
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        Ok(Documents {
            test_ca,
            cache: Mutex::new(HashMap::new()),
            fetching: tokio::sync::Semaphore::new(MAX_FETCHES),
        })
    }

    /// The client the document at `url` describes; `None` when it cannot be used (why is
    /// logged).
    pub(crate) async fn client(&self, url: &str) -> Option<Client> {
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, client)) = cache.get(url) {
                let ttl = if client.is_some() {
                    CACHE_FOR
                } else {
                    FAILURE_CACHE_FOR
                };
                if at.elapsed() < ttl {
                    return client.clone();
                }
            }
        }
        let Ok(_fetching) = self.fetching.try_acquire() else {
            info!(client_id = %url, "client metadata document not fetched: too many fetches under way");
            return None;
        };
        let client = match self.fetch(url).await {
            Ok(client) => {
                info!(client_id = %url, "client metadata document fetched");
                Some(client)
            }
            Err(why) => {
                info!(client_id = %url, %why, "client metadata document refused");
                None
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            // Failures and stale entries go first: a caller spraying client ids cannot flush
            // the documents of clients in use.
            cache.retain(|_, (at, client)| client.is_some() && at.elapsed() < CACHE_FOR);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(url.to_owned(), (Instant::now(), client.clone()));
        client
    }

    async fn fetch(&self, client_id: &str) -> Result<Client, String> {
        let url = check_url(client_id)?;
        let allow_loopback = self.test_ca.is_some();
        let port = url.port_or_known_default().unwrap_or(443);
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .no_proxy();
        match url.host() {
            Some(Host::Ipv4(ip)) => check_address(IpAddr::V4(ip), allow_loopback)?,
            Some(Host::Ipv6(ip)) => check_address(IpAddr::V6(ip), allow_loopback)?,
            Some(Host::Domain(domain)) => {
                let addrs: Vec<SocketAddr> =
                    tokio::time::timeout(FETCH_TIMEOUT, tokio::net::lookup_host((domain, port)))
                        .await
                        .map_err(|_| "DNS lookup timed out".to_owned())?
                        .map_err(|e| format!("DNS lookup failed: {e}"))?
                        .collect();
                let first = *addrs.first().ok_or("the host has no address")?;
                for addr in &addrs {
                    check_address(addr.ip(), allow_loopback)?;
                }
                // Connect to the address checked, not to a second answer of the resolver.
                builder = builder.resolve(domain, first);
            }
            None => return Err("no host".into()),
        }
        if let Some(ca) = &self.test_ca {
            builder = builder.add_root_certificate(ca.clone());
        }
        let http = builder.build().map_err(|e| e.to_string())?;
        let mut response = http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(format!("HTTP {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| e.without_url().to_string())?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_document(client_id, &body)
    }
}

/// The rules a client id URL must follow: https, a host, a path beyond `/`, no
/// credentials, query-free, no fragment, and written as it parses (no dot segments or
/// other forms a parser would rewrite).
fn check_url(client_id: &str) -> Result<Url, String> {
    let url = Url::parse(client_id).map_err(|e| format!("not a URL: {e}"))?;
    if url.scheme() != "https" {
        return Err("not https".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL".into());
    }
    if url.fragment().is_some() || url.query().is_some() {
        return Err("a query or fragment in the URL".into());
    }
    if url.path() == "/" || url.path().is_empty() {
        return Err("no path".into());
    }
    if url.as_str() != client_id {
        return Err("not in normal form (dot segments, case, escapes)".into());
    }
    Ok(url)
}

/// Refuses every address that is not plainly public (loopback only when allowed, in tests).
fn check_address(ip: IpAddr, allow_loopback: bool) -> Result<(), String> {
    let public = match ip {
        IpAddr::V4(v4) => public_v4(v4, allow_loopback),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public_v4(v4, allow_loopback),
            None => public_v6(v6, allow_loopback),
        },
    };
    if public {
        Ok(())
    } else {
        debug!(%ip, "client metadata document host refused");
        Err("the host resolves to a private, loopback or reserved address".into())
    }
}

fn public_v4(ip: Ipv4Addr, allow_loopback: bool) -> bool {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        return allow_loopback;
    }
    !(ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || a >= 240) // reserved
}

fn public_v6(ip: Ipv6Addr, allow_loopback: bool) -> bool {
    if ip.is_loopback() {
        return allow_loopback;
    }
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || (first == 0x64 && ip.segments()[1] == 0xff9b)) // NAT64 (could reach private v4)
}

/// What the proxy reads of a document.
#[derive(Deserialize)]
struct Document {
    client_id: String,
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
}

/// The client a document describes, if it is usable for `client_id`.
fn parse_document(client_id: &str, body: &[u8]) -> Result<Client, String> {
    let doc: Document =
        serde_json::from_slice(body).map_err(|e| format!("not a client metadata document: {e}"))?;
    if doc.client_id != client_id {
        return Err("its client_id is not its own URL".into());
    }
    if doc.redirect_uris.is_empty() || doc.redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err("redirect_uris must list 1 to 10 URIs".into());
    }
    for uri in &doc.redirect_uris {
        check_redirect_uri(uri)?;
    }
    // A document is public: it cannot hold a shared secret.
    if doc
        .token_endpoint_auth_method
        .as_deref()
        .is_some_and(|m| m != "none")
    {
        return Err("token_endpoint_auth_method must be none".into());
    }
    Ok(Client {
        client_id: doc.client_id,
        client_name: doc
            .client_name
            .map(|n| n.chars().filter(|c| !c.is_control()).take(200).collect()),
        redirect_uris: doc.redirect_uris,
        auth_method: "none".into(),
        secret_digest: None,
        issued_at: unix_now(),
        from_document: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_urls_are_checked() {
        assert!(check_url("https://app.example/client.json").is_ok());
        for bad in [
            "http://app.example/client.json",
            "https://app.example",
            "https://app.example/",
            "https://user:pw@app.example/c",
            "https://app.example/c#f",
            "https://app.example/c?q=1",
            "https://app.example/a/../c",
            "https://app.example/./c",
            "https://APP.example/c",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn private_and_reserved_addresses_are_refused() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(check_address(ip, false).is_err(), "{bad}");
        }
        for good in ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"] {
            assert!(
                check_address(good.parse().unwrap(), false).is_ok(),
                "{good}"
            );
        }
        assert!(check_address("127.0.0.1".parse().unwrap(), true).is_ok());
        assert!(
            check_address("10.0.0.1".parse().unwrap(), true).is_err(),
            "tests allow loopback only"
        );
    }

    #[test]
    fn documents_must_name_themselves_and_be_public() {
        let id = "https://app.example/client.json";
        let good = br#"{"client_id":"https://app.example/client.json","client_name":"App","redirect_uris":["http://127.0.0.1:3000/cb"]}"#;
        let client = parse_document(id, good).unwrap();
        assert!(client.from_document && client.secret_digest.is_none());
        assert!(parse_document("https://other.example/c.json", good).is_err());
        let secret = br#"{"client_id":"https://app.example/client.json","redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"client_secret_post"}"#;
        assert!(parse_document(id, secret).is_err());
        let no_uris = br#"{"client_id":"https://app.example/client.json"}"#;
        assert!(parse_document(id, no_uris).is_err());
    }

    #[tokio::test]
    async fn a_loopback_document_is_refused_before_any_connection() {
        let docs = Documents::new(None).unwrap();
        // Nothing listens there; the refusal comes from the address check, not the network.
        let err = docs
            .fetch("https://127.0.0.1:9/client.json")
            .await
            .unwrap_err();
        assert!(err.contains("private, loopback"), "{err}");
        let err = docs
            .fetch("https://localhost:9/client.json")
            .await
            .unwrap_err();
        assert!(err.contains("private, loopback"), "{err}");
        assert!(docs
            .client("https://127.0.0.1:9/client.json")
            .await
            .is_none());
    }
}
