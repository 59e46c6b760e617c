//! Frames on the relay channels: one JSON head line, then the raw payload bytes.
//!
//! Bodies travel as bytes after the head rather than inside the JSON, so a 1 MiB tool result
//! is not escaped and re-parsed on its way through Redis.

use serde::{Deserialize, Serialize};

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
    /// The answer broke off (the home could not build or finish it).
    Fail { id: u64, reason: String },
    /// The caller of request `id` went away: stop serving it.
    Cancel { id: u64, from: String },
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

/// The head and the payload of a frame. JSON escapes newlines inside strings, so the first
/// newline ends the head. `None` for anything that is not a frame (another program
/// publishing on our channel): the caller logs and drops it.
pub(crate) fn decode(frame: &[u8]) -> Option<(Head, &[u8])> {
    let end = frame.iter().position(|b| *b == b'\n')?;
    let head = serde_json::from_slice(&frame[..end]).ok()?;
    Some((head, &frame[end + 1..]))
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
        };
        let payload = b"{\"a\":1}\n\n\xff binary";
        let frame = encode(&head, payload);
        let (back, body) = decode(&frame).unwrap();
        assert_eq!(back, head);
        assert_eq!(body, payload);

        let frame = encode(&Head::End { id: 1 }, b"");
        let (end, empty) = decode(&frame).unwrap();
        assert_eq!(end, Head::End { id: 1 });
        assert!(empty.is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"no newline").is_none());
        assert!(decode(b"{\"k\":\"nope\"}\n").is_none());
        assert!(decode(b"\n").is_none());
    }
}
