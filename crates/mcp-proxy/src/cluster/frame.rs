//! Frames on the relay channels: one JSON head line, then the raw payload bytes.
//!
//! Bodies travel as bytes after the head rather than inside the JSON, so a 1 MiB tool result
//! is not escaped and re-parsed on its way through Redis.
//!
//! # Size
//! A frame's head is at most [`FRAME_HEAD_MAX`] bytes and its payload at most the instance's
//! `--max-body-bytes` (the largest body any route takes), so no frame is larger than that
//! plus [`FRAME_HEAD_MAX`]. Senders keep to it: a relayed request's body is already within
//! the body limit, and one whose headers do not fit the head is refused (431) before it is
//! sent; an answer body larger than the limit goes as a stream of pieces ([`pieces`]).
//! Receivers refuse bigger frames unparsed ([`decode`]): one from an instance run with a
//! larger limit, or from anything else publishing on the channel.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The largest head line of a frame: the request's method, URI and headers (or an answer's
/// status and headers) with room to spare; browsers and proxies send a few KiB.
pub(crate) const FRAME_HEAD_MAX: usize = 64 * 1024;

/// What a frame says; every frame names the relay it belongs to by `id`, which is unique
/// per sending instance (`from` for requests and cancels, the channel's owner otherwise).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub(crate) enum Head {
    /// An HTTP request for the receiving instance to serve; the payload is its body.
    Req {
        id: u64,
        from: String,
        method: String,
        uri: String,
        headers: Vec<(String, String)>,
        /// The caller's address as the instance it reached resolved it (per-address limits
        /// apply at the home); absent from instances that predate it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<std::net::IpAddr>,
    },
    /// The status and headers of the answer to request `id`; with `whole`, the payload is
    /// its entire body and nothing follows (one frame for every answer but a stream).
    Res {
        id: u64,
        status: u16,
        headers: Vec<(String, String)>,
        #[serde(default)]
        whole: bool,
        /// The instance answering (a caller that forgot `id` tells it to stop).
        #[serde(default)]
        from: String,
    },
    /// A piece of the answer's body; the payload is the bytes.
    Data {
        id: u64,
        #[serde(default)]
        from: String,
    },
    /// The answer's body is complete.
    End { id: u64 },
    /// The answer broke off (the home could not build or finish it); `too_large`: the
    /// request or its answer was larger than a frame may be.
    Fail {
        id: u64,
        reason: String,
        #[serde(default)]
        too_large: bool,
    },
    /// The caller of request `id` went away: stop serving it.
    Cancel { id: u64, from: String },
}

impl Head {
    /// The frame's kind, as its `k` field names it (for logs that must not name ids).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Head::Req { .. } => "req",
            Head::Res { .. } => "res",
            Head::Data { .. } => "data",
            Head::End { .. } => "end",
            Head::Fail { .. } => "fail",
            Head::Cancel { .. } => "cancel",
        }
    }
}

/// `head` as one JSON line, then `payload`.
pub(crate) fn encode(head: &Head, payload: &[u8]) -> Vec<u8> {
    // Serializing a plain enum of strings and numbers cannot fail.
    let mut out = serde_json::to_vec(head).expect("a frame head serializes");
    out.reserve(payload.len() + 1);
    out.push(b'\n');
    out.extend_from_slice(payload);
    out
}

/// Whether the head of `frame`, encoded with a payload of `payload_len` bytes, fits
/// [`FRAME_HEAD_MAX`].
pub(crate) fn head_fits(frame: &[u8], payload_len: usize) -> bool {
    frame.len() - payload_len - 1 <= FRAME_HEAD_MAX
}

/// Why a frame was not taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not a frame (another program publishing on our channel): logged and dropped.
    Unreadable,
    /// Larger than this instance takes; its head, when the head itself was within
    /// [`FRAME_HEAD_MAX`] and readable, so the relay it names can fail at once.
    TooLarge(Option<Box<Head>>),
}

/// The head and the payload of a frame whose payload is at most `max_payload` bytes. JSON
/// escapes newlines inside strings, so the first newline ends the head. Nothing beyond
/// [`FRAME_HEAD_MAX`] bytes is ever parsed.
pub(crate) fn decode(frame: &[u8], max_payload: usize) -> Result<(Head, &[u8]), Refused> {
    let oversized = frame.len() > max_payload.saturating_add(FRAME_HEAD_MAX + 1);
    let refused = || {
        if oversized {
            Refused::TooLarge(None)
        } else {
            Refused::Unreadable
        }
    };
    let scan = &frame[..frame.len().min(FRAME_HEAD_MAX + 1)];
    let end = scan.iter().position(|b| *b == b'\n').ok_or_else(refused)?;
    let head: Head = serde_json::from_slice(&frame[..end]).map_err(|_| refused())?;
    let payload = &frame[end + 1..];
    if payload.len() > max_payload {
        return Err(Refused::TooLarge(Some(Box::new(head))));
    }
    Ok((head, payload))
}

/// `payload` in pieces of at most `max` bytes (at least one byte each), sharing its memory.
pub(crate) fn pieces(payload: Bytes, max: usize) -> impl Iterator<Item = Bytes> {
    let max = max.max(1);
    let mut rest = payload;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = rest.len().min(max);
        Some(rest.split_to(n))
    })
}

/// Headers that describe one hop's connection, not the message.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "transfer-encoding" | "upgrade" | "te" | "trailer"
    )
}

/// `headers` as a frame carries them (hop-by-hop ones left out).
pub(crate) fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| !hop_by_hop(k.as_str()))
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// A frame's headers back as a map (any that are not valid headers left out).
pub(crate) fn header_map(pairs: Vec<(String, String)>) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            map.append(k, v);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_with_any_payload() {
        let head = Head::Req {
            id: 7,
            from: "abc".into(),
            method: "POST".into(),
            uri: "/message?x=\n".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            client: Some("198.51.100.7".parse().unwrap()),
        };
        let payload = b"{\"a\":1}\n\n\xff binary";
        let frame = encode(&head, payload);
        let (back, body) = decode(&frame, 1024).unwrap();
        assert_eq!(back, head);
        assert_eq!(body, payload);
        assert!(head_fits(&frame, payload.len()));

        let frame = encode(&Head::End { id: 1 }, b"");
        let (end, empty) = decode(&frame, 0).unwrap();
        assert_eq!(end, Head::End { id: 1 });
        assert!(empty.is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(decode(b"no newline", 1024), Err(Refused::Unreadable));
        assert_eq!(
            decode(b"{\"k\":\"nope\"}\n", 1024),
            Err(Refused::Unreadable)
        );
        assert_eq!(decode(b"\n", 1024), Err(Refused::Unreadable));
    }

    #[test]
    fn a_frame_larger_than_the_body_limit_is_refused_unparsed() {
        let head = Head::Data {
            id: 3,
            from: "home".into(),
        };
        // Its payload one byte over: refused, naming the relay so it can fail at once.
        let frame = encode(&head, &[b'x'; 101]);
        assert_eq!(
            decode(&frame, 100),
            Err(Refused::TooLarge(Some(Box::new(head.clone()))))
        );
        assert!(decode(&frame, 101).is_ok());
        // A head beyond FRAME_HEAD_MAX is never parsed, however it ends.
        let mut huge = vec![b' '; FRAME_HEAD_MAX + 200];
        huge.extend_from_slice(&encode(&head, b""));
        assert_eq!(decode(&huge, 100), Err(Refused::TooLarge(None)));
        assert_eq!(decode(&huge, 1 << 20), Err(Refused::Unreadable));
        // A request whose headers do not fit is known before it is sent.
        let big = Head::Req {
            id: 1,
            from: "b".into(),
            method: "POST".into(),
            uri: "/mcp".into(),
            headers: vec![("x-pad".into(), "p".repeat(FRAME_HEAD_MAX))],
            client: None,
        };
        assert!(!head_fits(&encode(&big, b"{}"), 2));
    }

    #[test]
    fn a_long_answer_goes_in_pieces_within_the_limit() {
        let body = Bytes::from((0..=255u8).cycle().take(1000).collect::<Vec<_>>());
        let parts: Vec<Bytes> = pieces(body.clone(), 300).collect();
        assert_eq!(
            parts.iter().map(Bytes::len).collect::<Vec<_>>(),
            [300, 300, 300, 100]
        );
        assert_eq!(parts.concat(), body);
        assert_eq!(pieces(Bytes::new(), 300).count(), 0);
        assert_eq!(pieces(Bytes::from_static(b"ab"), 0).count(), 2);
    }
}
