//! One audit record: what the proxy writes as one JSON line per client request it answers,
//! and what the console lists. Its fields are documented in docs/operations.md; the tests
//! there and in `tests/proxy/audit.rs` assert them by name.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// How a request reached its server: the member's kind of connection to the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Long polling (`GET /poll`), the seed's way and the fallback.
    Poll,
    /// The reverse client's persistent channel (`GET /channel`, one WebSocket).
    Channel,
}

/// Who made a request, as far as the proxy can tell without keeping a secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClientIdentity {
    /// The first 8 hex digits of the SHA-256 of the bearer token presented (valid or not);
    /// `None` without one.
    pub token: Option<String>,
    /// Who a valid OAuth access token names; absent for static tokens and refused ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthIdentity>,
}

/// What a valid OAuth access token says about its holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OAuthIdentity {
    /// The authorization server that issued it (`iss`).
    pub issuer: String,
    /// The user, or the client of a client-credentials token (`sub`).
    pub subject: Option<String>,
    /// The OAuth client the user authorized (`client_id`, `azp` or `appid`).
    pub client_id: Option<String>,
}

/// One client request the proxy answered (refused ones included).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Record {
    /// When the request arrived: RFC 3339, UTC, milliseconds.
    pub time: String,
    /// The proxy's id of the forwarded request (a poll item's `request_id`, the logs'
    /// `request_id`); `None` when it never reached a server.
    pub request_id: Option<String>,
    /// The cluster instance that served it; `None` for a proxy alone.
    pub instance: Option<String>,
    /// It reached another instance first, which relayed it here (cluster).
    pub relayed: bool,
    /// The caller's address: the peer, or `X-Forwarded-For`'s from a trusted proxy.
    pub peer: Option<IpAddr>,
    /// The pool addressed (`""`: the default pool).
    pub pool: String,
    /// The pool member it was routed to (the ordinal `GET /servers` shows).
    pub member: Option<u64>,
    /// How it reached that member; `None` when it reached none.
    pub delivery: Option<Delivery>,
    /// Who called.
    pub client: ClientIdentity,
    /// The route's pattern (`/servers/{name}/mcp`).
    pub route: &'static str,
    /// The HTTP method.
    pub http_method: String,
    /// The JSON-RPC method, when the body was one JSON-RPC request or notification.
    pub method: Option<String>,
    /// The tool, resource (URI) or prompt the request names.
    pub name: Option<String>,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The JSON-RPC error code of the answer, when it was an error.
    pub error_code: Option<i64>,
    /// Milliseconds from arrival to the answer's last byte (for a stream: its end).
    pub latency_ms: f64,
    /// Body bytes received.
    pub bytes_in: u64,
    /// Body bytes sent (a stream's included).
    pub bytes_out: u64,
    /// The request's `params`, only when the operator opted in, cut at the cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Capped>,
    /// The answer's body, only when the operator opted in, cut at the cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Capped>,
}

/// A payload kept for the audit: its JSON text, cut at the operator's cap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Capped {
    /// The text, at most the cap's bytes (cut on a character boundary).
    pub text: String,
    /// Its whole length in bytes.
    pub bytes: usize,
    /// Whether `text` is only its start.
    pub truncated: bool,
}

impl Capped {
    /// `text` cut at `cap` bytes.
    pub fn new(text: &str, cap: usize) -> Capped {
        let mut end = cap.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Capped {
            text: text[..end].to_owned(),
            bytes: text.len(),
            truncated: end < text.len(),
        }
    }
}

impl Record {
    /// The record as one line of JSON, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        line.push(b'\n');
        line
    }

    /// Whether the request failed: an HTTP error status or a JSON-RPC error.
    pub fn failed(&self) -> bool {
        self.status >= 400 || self.error_code.is_some()
    }
}

/// `t` as RFC 3339 in UTC with milliseconds (`2026-12-05T10:31:46.152Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// The calendar date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`), so the
/// proxy needs no date crate for one timestamp format.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_764_930_706_152);
        assert_eq!(rfc3339(t), "2025-12-05T10:31:46.152Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn payloads_are_cut_on_a_character_boundary() {
        let c = Capped::new("héllo", 2);
        assert_eq!((c.text.as_str(), c.bytes, c.truncated), ("h", 6, true));
        let c = Capped::new("abc", 10);
        assert_eq!((c.text.as_str(), c.truncated), ("abc", false));
    }

    #[test]
    fn a_record_is_one_line_with_every_field() {
        let r = Record {
            time: "t".into(),
            request_id: None,
            instance: None,
            relayed: false,
            peer: Some("127.0.0.1".parse().unwrap()),
            pool: String::new(),
            member: Some(3),
            delivery: Some(Delivery::Poll),
            client: ClientIdentity::default(),
            route: "/message",
            http_method: "POST".into(),
            method: Some("tools/call".into()),
            name: Some("echo".into()),
            status: 200,
            error_code: None,
            latency_ms: 1.5,
            bytes_in: 10,
            bytes_out: 20,
            arguments: None,
            result: None,
        };
        let line = r.to_line();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["peer"], "127.0.0.1");
        assert_eq!(v["delivery"], "poll");
        assert_eq!(v["client"]["token"], serde_json::Value::Null);
        assert!(
            v.get("arguments").is_none(),
            "no payload keys unless opted in"
        );
        assert_eq!(v.as_object().unwrap().len(), 18);
    }
}
