//! The WebSocket channel's control frames (docs/protocol.md, "GET /channel"): the frames that
//! are neither a poll item (down) nor a `/response` body (up), and the channel's constants.

use serde::{Deserialize, Serialize};

/// The channel's route on the proxy.
pub const CHANNEL_PATH: &str = "/channel";

/// The request header that names the registration a channel serves (never the URL).
pub const SESSION_HEADER: &str = "mcp-reverse-session-id";

/// Most items one credit frame may grant.
pub const MAX_CREDIT_GRANT: u32 = 1024;

/// Most credit a channel may have outstanding (granted and not yet used).
pub const MAX_CREDIT: u32 = 4096;

/// Envelope room a frame may take beyond `--max-body-bytes` (ids, headers, JSON syntax).
pub const FRAME_SLACK_BYTES: usize = 64 * 1024;

/// Answers larger than this go by `POST /response`, so they never hold up small ones.
pub const INLINE_ANSWER_MAX: usize = 128 * 1024;

/// The proxy acks at least every this many answer frames.
pub const ACK_EVERY: u64 = 32;

/// A control frame the proxy sends (items travel as poll items, without `kind` or with theirs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Down {
    /// The first frame: what the proxy takes on this channel.
    Hello {
        /// Answers larger than this must go by `POST /response`.
        max_frame_bytes: u64,
    },
    /// The proxy has taken the first `answers` answer frames of this channel.
    Ack {
        /// Cumulative count of answer frames taken.
        answers: u64,
    },
    /// An up frame could not be read; the channel stays open.
    Error {
        /// What went wrong, for programs (`invalid_body`).
        error: crate::wire::WireErrorCode,
        /// What went wrong, for people.
        message: String,
    },
}

/// A control frame the reverse client sends (answers travel as `/response` bodies, no `kind`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Up {
    /// The reverse client takes `items` more items.
    Credit {
        /// How many (1 to [`MAX_CREDIT_GRANT`]).
        items: u32,
    },
}

/// Whether an up frame that is not an answer looks like a control frame (starts with its
/// `kind`), for a clearer complaint; the proxy reads control frames whatever their order.
pub fn is_control_up(frame: &[u8]) -> bool {
    frame.starts_with(br#"{"kind""#)
}

/// Whether a down frame is a control frame rather than a poll item, from its first bytes:
/// the proxy writes `kind` first in its control frames (items may have a `kind` too).
pub fn is_control_down(frame: &[u8]) -> bool {
    [
        &br#"{"kind":"hello""#[..],
        br#"{"kind":"ack""#,
        br#"{"kind":"error""#,
    ]
    .iter()
    .any(|start| frame.starts_with(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames_have_their_documented_shapes() {
        let hello = serde_json::to_string(&Down::Hello {
            max_frame_bytes: 10,
        })
        .unwrap();
        assert_eq!(hello, r#"{"kind":"hello","max_frame_bytes":10}"#);
        let ack = serde_json::to_string(&Down::Ack { answers: 3 }).unwrap();
        assert_eq!(ack, r#"{"kind":"ack","answers":3}"#);
        let credit = serde_json::to_string(&Up::Credit { items: 16 }).unwrap();
        assert_eq!(credit, r#"{"kind":"credit","items":16}"#);
        assert!(is_control_up(credit.as_bytes()));
        assert!(!is_control_up(br#"{"request_id":"r-1","response":null}"#));
        assert!(is_control_down(hello.as_bytes()) && is_control_down(ack.as_bytes()));
        assert!(!is_control_down(
            br#"{"kind":"reply","request_id":"r-1","message":{}}"#
        ));
        assert!(!is_control_down(
            br#"{"kind":"session_closed","client_session":"c-1"}"#
        ));
        let parsed: Up = serde_json::from_str(r#"{"kind":"credit","items":2}"#).unwrap();
        assert_eq!(parsed, Up::Credit { items: 2 });
        assert!(serde_json::from_str::<Up>(r#"{"kind":"other"}"#).is_err());
    }
}
