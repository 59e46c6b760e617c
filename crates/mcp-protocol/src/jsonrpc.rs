//! JSON-RPC 2.0: the envelope every MCP message travels in.
//!
//! [`Message::parse`] is the one way in: it classifies any bytes as a request, a notification
//! or a response, or returns a [`ParseError`] that already knows which JSON-RPC error object
//! (and which id, when one could be read) the sender should get back.
//!
//! This file owns the two small types every message carries, [`TwoPointZero`] and
//! [`RequestId`]; the rest is in submodules, re-exported here:
//! - `error`: [`ErrorCode`] and [`ErrorObject`], the `error` member of a failed response.
//! - `message`: [`Request`], [`Notification`], [`Response`] and [`Message`], the shapes.
//! - `parse`: [`Message::parse`] and [`ParseError`], the classification of incoming bytes.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

mod error;
mod message;
mod parse;

pub use error::{ErrorCode, ErrorObject};
pub use message::{Message, Notification, Outcome, Request, Response};
pub use parse::ParseError;

/// The `"jsonrpc": "2.0"` marker: serializes as `"2.0"` and accepts nothing else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TwoPointZero;

impl Serialize for TwoPointZero {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("2.0")
    }
}

impl<'de> Deserialize<'de> for TwoPointZero {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        if s == "2.0" {
            Ok(TwoPointZero)
        } else {
            Err(de::Error::invalid_value(
                de::Unexpected::Str(&s),
                &"\"2.0\"",
            ))
        }
    }
}

/// A request id: a number or a string, kept exactly as the sender wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// A numeric id (integers and floats keep their JSON form).
    Number(serde_json::Number),
    /// A string id.
    String(String),
}

impl From<i64> for RequestId {
    fn from(n: i64) -> Self {
        RequestId::Number(n.into())
    }
}

impl From<&str> for RequestId {
    fn from(s: &str) -> Self {
        RequestId::String(s.to_owned())
    }
}

impl From<String> for RequestId {
    fn from(s: String) -> Self {
        RequestId::String(s)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Number(n) => write!(f, "{n}"),
            RequestId::String(s) => write!(f, "{s:?}"),
        }
    }
}

impl RequestId {
    /// Reads an id from a JSON value; `None` for anything but a number or a string.
    pub fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Number(n) => Some(RequestId::Number(n.clone())),
            Value::String(s) => Some(RequestId::String(s.clone())),
            _ => None,
        }
    }
}
