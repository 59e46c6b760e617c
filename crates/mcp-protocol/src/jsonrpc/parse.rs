//! [`Message::parse`]: any bytes classified as a request, a notification or a response, or a
//! [`ParseError`] that knows the JSON-RPC error (and the id) to answer with. It never panics.

use serde::{de, Deserialize, Deserializer};
use serde_json::Value;

use super::{
    ErrorObject, Message, Notification, Outcome, Request, RequestId, Response, TwoPointZero,
};

/// Why bytes could not be read as a [`Message`], with what to answer.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Not JSON at all (answer -32700).
    #[error("parse error: {0}")]
    NotJson(String),
    /// A JSON array: batches were removed from MCP in 2025-06-18 (answer -32600).
    #[error("JSON-RPC batches are not supported")]
    Batch,
    /// JSON, but not a JSON-RPC 2.0 message (answer -32600, with the id when it was readable).
    #[error("invalid request: {reason}")]
    Invalid {
        /// The id, when the object had a readable one.
        id: Option<RequestId>,
        /// What is wrong, for the sender.
        reason: String,
    },
}

impl ParseError {
    /// The id to answer with, if one could be read.
    pub fn id(&self) -> Option<RequestId> {
        match self {
            ParseError::Invalid { id, .. } => id.clone(),
            _ => None,
        }
    }

    /// The JSON-RPC error object the sender should receive.
    pub fn to_error_object(&self) -> ErrorObject {
        match self {
            ParseError::NotJson(detail) => ErrorObject::parse_error(detail),
            ParseError::Batch => ErrorObject::invalid_request("JSON-RPC batches are not supported"),
            ParseError::Invalid { reason, .. } => ErrorObject::invalid_request(reason),
        }
    }

    /// The complete error response for the sender.
    pub fn to_response(&self) -> Response {
        Response::error(self.id(), self.to_error_object())
    }
}

impl Message {
    /// Reads and classifies one message from bytes; never panics, whatever the input.
    pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ParseError::NotJson(e.to_string()))?;
        Message::from_value(value)
    }

    /// Classifies an already parsed JSON value.
    pub fn from_value(value: Value) -> Result<Message, ParseError> {
        let mut obj = match value {
            Value::Object(obj) => obj,
            Value::Array(_) => return Err(ParseError::Batch),
            other => {
                return Err(ParseError::Invalid {
                    id: None,
                    reason: format!("expected a JSON object, got {}", kind_of(&other)),
                })
            }
        };
        let raw_id = obj.remove("id");
        let id = raw_id.as_ref().and_then(RequestId::from_value);
        let invalid = |reason: String| ParseError::Invalid {
            id: id.clone(),
            reason,
        };
        match obj.get("jsonrpc") {
            Some(Value::String(v)) if v == "2.0" => {}
            Some(_) => return Err(invalid("\"jsonrpc\" must be \"2.0\"".into())),
            None => return Err(invalid("missing \"jsonrpc\": \"2.0\"".into())),
        }
        if let Some(raw) = &raw_id {
            // A null id is only acceptable on an error response whose request was unreadable.
            let null_id_allowed = raw.is_null() && !obj.contains_key("method");
            if id.is_none() && !null_id_allowed {
                return Err(invalid(format!(
                    "\"id\" must be a string or a number, got {}",
                    kind_of(raw)
                )));
            }
        }

        if let Some(method) = obj.remove("method") {
            let Value::String(method) = method else {
                return Err(invalid("\"method\" must be a string".into()));
            };
            let params = obj.remove("params");
            if let Some(p) = &params {
                if !p.is_object() && !p.is_array() {
                    return Err(invalid(format!(
                        "\"params\" must be an object or an array, got {}",
                        kind_of(p)
                    )));
                }
            }
            return Ok(match id {
                Some(id) => Message::Request(Request {
                    jsonrpc: TwoPointZero,
                    id,
                    method,
                    params,
                }),
                None => Message::Notification(Notification {
                    jsonrpc: TwoPointZero,
                    method,
                    params,
                }),
            });
        }

        let outcome = match (obj.remove("result"), obj.remove("error")) {
            (Some(result), None) => Outcome::Result(result),
            (None, Some(error)) => match serde_json::from_value::<ErrorObject>(error) {
                Ok(error) => Outcome::Error(error),
                Err(e) => return Err(invalid(format!("malformed \"error\" member: {e}"))),
            },
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "a response has \"result\" or \"error\", not both".into(),
                ))
            }
            (None, None) => return Err(invalid(
                "not a request, notification or response: no \"method\", \"result\" or \"error\""
                    .into(),
            )),
        };
        if raw_id.is_none() {
            return Err(invalid("a response needs an \"id\"".into()));
        }
        if id.is_none() && matches!(outcome, Outcome::Result(_)) {
            return Err(invalid(
                "a successful response needs a non-null \"id\"".into(),
            ));
        }
        Ok(Message::Response(Response {
            jsonrpc: TwoPointZero,
            id,
            outcome,
        }))
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Message::from_value(value).map_err(de::Error::custom)
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::ErrorCode;
    use serde_json::json;

    fn parse(s: &str) -> Result<Message, ParseError> {
        Message::parse(s.as_bytes())
    }

    #[test]
    fn classifies_request_notification_and_response() {
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Ok(Message::Request(_))
        ));
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Message::Notification(_))
        ));
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Ok(Message::Response(_))
        ));
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#),
            Ok(Message::Response(Response { id: None, .. }))
        ));
    }

    #[test]
    fn seed_initialized_with_id_is_a_request() {
        let m =
            parse(r#"{"jsonrpc":"2.0","id":2,"method":"notifications/initialized","params":{}}"#)
                .unwrap();
        let Message::Request(r) = m else {
            panic!("expected a request")
        };
        assert_eq!(r.id, RequestId::from(2));
        assert_eq!(r.method, "notifications/initialized");
    }

    #[test]
    fn ids_are_kept_exactly() {
        for raw in [
            r#"0"#,
            r#"-5"#,
            r#"18446744073709551615"#,
            r#"1.5"#,
            r#""abc""#,
            r#""""#,
        ] {
            let text = format!(r#"{{"jsonrpc":"2.0","id":{raw},"method":"m"}}"#);
            let m = parse(&text).unwrap();
            let out = serde_json::to_string(&m).unwrap();
            assert_eq!(out, text, "id {raw} changed on the way through");
        }
    }

    #[test]
    fn errors_carry_the_right_code_and_id() {
        let e = parse("{not json").unwrap_err();
        assert_eq!(e.to_error_object().code, ErrorCode::PARSE_ERROR);
        assert_eq!(e.id(), None);

        let e = parse(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap_err();
        assert_eq!(e, ParseError::Batch);
        assert_eq!(e.to_error_object().code, ErrorCode::INVALID_REQUEST);

        let e = parse(r#"{"jsonrpc":"1.0","id":9,"method":"ping"}"#).unwrap_err();
        assert_eq!(e.id(), Some(RequestId::from(9)));
        assert_eq!(e.to_error_object().code, ErrorCode::INVALID_REQUEST);

        let e = parse(r#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#).unwrap_err();
        assert!(e.to_string().contains("\"id\" must be"), "{e}");

        let e = parse(r#"{"jsonrpc":"2.0","id":1,"method":3}"#).unwrap_err();
        assert!(e.to_string().contains("method"), "{e}");

        let e = parse(r#"{"jsonrpc":"2.0","id":1,"method":"m","params":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("params"), "{e}");

        let e = parse(r#"{"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1,"message":""}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("not both"), "{e}");

        let e = parse(r#"{"jsonrpc":"2.0","id":1}"#).unwrap_err();
        assert!(e.to_string().contains("no \"method\""), "{e}");

        let e = parse("42").unwrap_err();
        assert!(e.to_string().contains("a number"), "{e}");
    }

    #[test]
    fn error_response_shape() {
        let r = Response::error(Some(3.into()), ErrorObject::method_not_found("nope"));
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"jsonrpc":"2.0","id":3,"error":{"code":-32601,"message":"Method not found: nope"}})
        );
        let r = parse("[").unwrap_err().to_response();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["id"], Value::Null);
        assert_eq!(v["error"]["code"], -32700);
    }

    #[test]
    fn response_roundtrip_through_serde() {
        let text = r#"{"jsonrpc":"2.0","id":"x","result":{"a":[1,2]}}"#;
        let r: Response = serde_json::from_str(text).unwrap();
        assert_eq!(r.as_result(), Some(&json!({"a":[1,2]})));
        assert_eq!(serde_json::to_string(&r).unwrap(), text);
        let m: Message = serde_json::from_str(text).unwrap();
        assert_eq!(m.id(), Some(&RequestId::from("x")));
    }
}
