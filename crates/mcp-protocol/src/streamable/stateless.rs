//! The 2026-07-28 (stateless) era, decided per request: [`classify_request`] reads the era from
//! the version header or `params._meta` and checks the routing headers (`Mcp-Method`,
//! `Mcp-Name`, `MCP-Protocol-Version`) against the body; [`stateless_error_status`] maps the
//! era's JSON-RPC errors to HTTP statuses.

use serde_json::Value;

use crate::jsonrpc::{ErrorCode, ErrorObject};
use crate::version;

/// The `params` key each name-bearing 2026-07-28 method mirrors in `Mcp-Name`.
pub fn name_param(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// The HTTP status of a JSON-RPC error answering a 2026-07-28 request, by its code: 400 for
/// malformed requests, bad parameters, header mismatches and unsupported versions, 404 for an
/// unknown method, `None` (200) otherwise.
pub fn stateless_error_status(code: ErrorCode) -> Option<u16> {
    match code {
        ErrorCode::PARSE_ERROR
        | ErrorCode::INVALID_REQUEST
        | ErrorCode::INVALID_PARAMS
        | ErrorCode::HEADER_MISMATCH
        | ErrorCode::UNSUPPORTED_PROTOCOL_VERSION => Some(400),
        ErrorCode::METHOD_NOT_FOUND => Some(404),
        // -32021: a client capability the request needs is missing.
        ErrorCode(-32021) => Some(400),
        _ => None,
    }
}

/// The routing headers of one POST, as the client sent them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoutingHeaders<'a> {
    /// `MCP-Protocol-Version`.
    pub protocol_version: Option<&'a str>,
    /// `Mcp-Method`.
    pub method: Option<&'a str>,
    /// `Mcp-Name` (possibly `=?base64?..?=`-wrapped).
    pub name: Option<&'a str>,
}

/// Which era a POSTed request belongs to, decided per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Era {
    /// 2025-11-25 and older: a session from `initialize`, `Mcp-Session-Id`.
    Handshake,
    /// 2026-07-28: no session; headers mirror the body and are checked.
    Stateless,
}

/// Why a POST is refused before it reaches a server (HTTP 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestRefusal {
    /// The version (header or `_meta`) is not one this project speaks.
    #[error("unsupported protocol version {0:?}")]
    UnsupportedVersion(String),
    /// A 2026-07-28 routing header is missing or disagrees with the body.
    #[error("{0}")]
    HeaderMismatch(String),
}

impl RequestRefusal {
    /// The JSON-RPC error to answer with: -32022 with `data: {"supported", "requested"}`, or
    /// -32020.
    pub fn to_error_object(&self) -> ErrorObject {
        match self {
            RequestRefusal::UnsupportedVersion(requested) => unsupported_version_error(requested),
            RequestRefusal::HeaderMismatch(message) => {
                ErrorObject::new(ErrorCode::HEADER_MISMATCH, message.clone())
            }
        }
    }
}

/// -32022 for `requested`, naming every supported version in `data.supported` (so a
/// dual-era client can re-probe at a mutual version or fall back to `initialize`).
pub fn unsupported_version_error(requested: &str) -> ErrorObject {
    ErrorObject::new(
        ErrorCode::UNSUPPORTED_PROTOCOL_VERSION,
        format!("Unsupported protocol version: {requested}"),
    )
    .with_data(serde_json::json!({"supported": version::SUPPORTED, "requested": requested}))
}

/// Decides a request's era and checks its headers against its body.
///
/// A request is of the stateless era when its `MCP-Protocol-Version` header or its
/// `params._meta` protocol version is 2026-07-28 or later. A version header naming a version
/// this project does not speak is refused in either era. In the stateless era the header must
/// equal the `_meta` version, `Mcp-Method` must equal the method, and for `tools/call`,
/// `prompts/get` and `resources/read` `Mcp-Name` must equal the named parameter (a missing
/// header is a mismatch, as the spec requires the headers).
pub fn classify_request(
    headers: RoutingHeaders<'_>,
    method: &str,
    params: Option<&Value>,
) -> Result<Era, RequestRefusal> {
    let header = headers.protocol_version.map(str::trim);
    if let Some(v) = header.filter(|v| !version::is_supported(v)) {
        return Err(RequestRefusal::UnsupportedVersion(v.to_owned()));
    }
    let body = params
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"))
        .and_then(Value::as_str);
    let stateless =
        header.is_some_and(version::is_stateless) || body.is_some_and(version::is_stateless);
    if !stateless {
        return Ok(Era::Handshake);
    }
    if header != body {
        return Err(RequestRefusal::HeaderMismatch(format!(
            "MCP-Protocol-Version header ({}) does not match params._meta's protocol version ({})",
            header.unwrap_or("absent"),
            body.unwrap_or("absent")
        )));
    }
    if let Some(v) = body.filter(|v| !version::is_supported(v)) {
        return Err(RequestRefusal::UnsupportedVersion(v.to_owned()));
    }
    if headers.method != Some(method) {
        return Err(RequestRefusal::HeaderMismatch(format!(
            "Mcp-Method header ({}) does not match the body's method ({method})",
            headers.method.unwrap_or("absent")
        )));
    }
    if let Some(key) = name_param(method) {
        let wanted = params.and_then(|p| p.get(key)).and_then(Value::as_str);
        if let Some(wanted) = wanted {
            if headers.name.and_then(decode_header_value).as_deref() != Some(wanted) {
                return Err(RequestRefusal::HeaderMismatch(format!(
                    "Mcp-Name header does not match params.{key}"
                )));
            }
        }
    }
    Ok(Era::Stateless)
}

/// Decodes a header value that may be wrapped as `=?base64?<payload>?=` (how clients send
/// names that are not plain visible ASCII); `None` for a malformed wrapping.
pub fn decode_header_value(value: &str) -> Option<String> {
    let Some(payload) = value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    else {
        return Some(value.to_owned());
    };
    String::from_utf8(decode_base64(payload)?).ok()
}

/// Standard base64 with padding, strictly (no whitespace, canonical trailing bits).
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = i + 1 == bytes.len() / 4;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | sextet(c)?;
        }
        n <<= 6 * pad as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        // Non-canonical: bits the padding hides must be zero.
        if (pad == 1 && n & 0xff != 0) || (pad == 2 && n & 0xffff != 0) {
            return None;
        }
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eras_are_decided_per_request_and_headers_checked() {
        let meta = |v: &str| {
            serde_json::json!({"name": "echo", "_meta": {
            "io.modelcontextprotocol/protocolVersion": v,
            "io.modelcontextprotocol/clientCapabilities": {}}})
        };
        let ok = RoutingHeaders {
            protocol_version: Some("2026-07-28"),
            method: Some("tools/call"),
            name: Some("echo"),
        };
        let p = meta("2026-07-28");
        assert_eq!(
            classify_request(ok, "tools/call", Some(&p)),
            Ok(Era::Stateless)
        );
        let b64 = RoutingHeaders {
            name: Some("=?base64?ZWNobw==?="),
            ..ok
        };
        assert_eq!(
            classify_request(b64, "tools/call", Some(&p)),
            Ok(Era::Stateless)
        );
        // Handshake era: no checks beyond a known version.
        let old = RoutingHeaders {
            protocol_version: Some("2025-11-25"),
            ..Default::default()
        };
        assert_eq!(
            classify_request(old, "tools/call", None),
            Ok(Era::Handshake)
        );
        assert_eq!(
            classify_request(RoutingHeaders::default(), "ping", None),
            Ok(Era::Handshake)
        );
        let mismatch = |h: RoutingHeaders<'_>, p: &Value| {
            let e = classify_request(h, "tools/call", Some(p)).unwrap_err();
            assert!(matches!(e, RequestRefusal::HeaderMismatch(_)), "{e:?}");
            assert_eq!(e.to_error_object().code, ErrorCode::HEADER_MISMATCH);
        };
        mismatch(
            RoutingHeaders {
                method: Some("tools/list"),
                ..ok
            },
            &p,
        );
        mismatch(RoutingHeaders { method: None, ..ok }, &p);
        mismatch(
            RoutingHeaders {
                name: Some("other"),
                ..ok
            },
            &p,
        );
        mismatch(RoutingHeaders { name: None, ..ok }, &p);
        mismatch(
            RoutingHeaders {
                protocol_version: None,
                ..ok
            },
            &p,
        );
        mismatch(ok, &serde_json::json!({"name": "echo"}));
        mismatch(
            RoutingHeaders {
                protocol_version: Some("2025-11-25"),
                ..ok
            },
            &p,
        );
        let e = classify_request(
            RoutingHeaders {
                protocol_version: Some("2099-01-01"),
                ..ok
            },
            "tools/call",
            Some(&meta("2099-01-01")),
        )
        .unwrap_err();
        let obj = e.to_error_object();
        assert_eq!(obj.code, ErrorCode::UNSUPPORTED_PROTOCOL_VERSION);
        let data = obj.data.unwrap();
        assert_eq!(data["requested"], "2099-01-01");
        assert!(data["supported"]
            .as_array()
            .unwrap()
            .contains(&"2026-07-28".into()));
        assert!(data["supported"]
            .as_array()
            .unwrap()
            .contains(&"2025-11-25".into()));
    }

    #[test]
    fn header_values_and_statuses() {
        assert_eq!(decode_header_value("plain").as_deref(), Some("plain"));
        assert_eq!(decode_header_value("=?base64?w6k=?=").as_deref(), Some("é"));
        assert_eq!(decode_header_value("=?base64?YQ==?=").as_deref(), Some("a"));
        assert_eq!(
            decode_header_value("=?base64?YWI=?=").as_deref(),
            Some("ab")
        );
        assert_eq!(
            decode_header_value("=?base64?YWJj?=").as_deref(),
            Some("abc")
        );
        assert_eq!(
            decode_header_value("=?base64?YR==?="),
            None,
            "non-canonical"
        );
        assert_eq!(decode_header_value("=?base64?Y?="), None);
        assert_eq!(decode_header_value("=?base64?!!!!?="), None);
        assert_eq!(
            stateless_error_status(ErrorCode::METHOD_NOT_FOUND),
            Some(404)
        );
        assert_eq!(
            stateless_error_status(ErrorCode::HEADER_MISMATCH),
            Some(400)
        );
        assert_eq!(stateless_error_status(ErrorCode::INVALID_PARAMS), Some(400));
        assert_eq!(stateless_error_status(ErrorCode::INTERNAL_ERROR), None);
        assert_eq!(name_param("resources/read"), Some("uri"));
        assert_eq!(name_param("tools/list"), None);
    }
}
