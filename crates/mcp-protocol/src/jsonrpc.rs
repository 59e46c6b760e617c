//! JSON-RPC 2.0: the envelope every MCP message travels in.
//!
//! [`Message::parse`] is the one way in: it classifies any bytes as a request, a notification
//! or a response, or returns a [`ParseError`] that already knows which JSON-RPC error object
//! (and which id, when one could be read) the sender should get back.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

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

/// A JSON-RPC error code (`#[serde(transparent)]` over `i32`), with the standard and MCP codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(pub i32);

impl ErrorCode {
    /// Invalid JSON was received.
    pub const PARSE_ERROR: ErrorCode = ErrorCode(-32700);
    /// The JSON sent is not a valid request object.
    pub const INVALID_REQUEST: ErrorCode = ErrorCode(-32600);
    /// The method does not exist or is not available.
    pub const METHOD_NOT_FOUND: ErrorCode = ErrorCode(-32601);
    /// Invalid method parameters.
    pub const INVALID_PARAMS: ErrorCode = ErrorCode(-32602);
    /// Internal JSON-RPC error.
    pub const INTERNAL_ERROR: ErrorCode = ErrorCode(-32603);
    /// MCP: the client session is not known to the server (the proxy maps it to HTTP 404).
    pub const UNKNOWN_SESSION: ErrorCode = ErrorCode(-32001);
    /// Generic implementation-defined server error: a transport refusal such as a Host or
    /// Origin not allowed (HTTP 403) or a missing token (HTTP 401).
    pub const SERVER_ERROR: ErrorCode = ErrorCode(-32000);
    /// MCP: the requested resource does not exist.
    pub const RESOURCE_NOT_FOUND: ErrorCode = ErrorCode(-32002);
    /// Proxy: no MCP server is registered for the addressed pool (HTTP 503).
    pub const NO_SERVER: ErrorCode = ErrorCode(-32010);
    /// Proxy: the server did not answer within the request timeout (HTTP 504).
    pub const REQUEST_TIMEOUT: ErrorCode = ErrorCode(-32011);
    /// Proxy: the server left or died while the request was pending (HTTP 502).
    pub const SERVER_GONE: ErrorCode = ErrorCode(-32012);
    /// MCP 2026-07-28: HTTP headers disagree with the body (HTTP 400).
    pub const HEADER_MISMATCH: ErrorCode = ErrorCode(-32020);
    /// MCP 2026-07-28: the requested protocol version is not supported (HTTP 400).
    pub const UNSUPPORTED_PROTOCOL_VERSION: ErrorCode = ErrorCode(-32022);
    /// MCP: the server needs the user to complete a URL elicitation first.
    pub const URL_ELICITATION_REQUIRED: ErrorCode = ErrorCode(-32042);
    /// The request was cancelled (`notifications/cancelled`, or its session ended) before it
    /// finished. MCP itself sends no answer to a cancelled request, but a relay (the proxy,
    /// the reverse client) needs a final answer to close its pending entry; the code is LSP's
    /// `RequestCancelled`, and the client that cancelled ignores the answer.
    pub const REQUEST_CANCELLED: ErrorCode = ErrorCode(-32800);
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The `error` member of a failed response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// What kind of error occurred.
    pub code: ErrorCode,
    /// A short, single-sentence description.
    pub message: String,
    /// Optional detail defined by the sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ErrorObject {
    /// An error with the given code and message and no data.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorObject {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The same error carrying `data`.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// -32700: the bytes are not JSON.
    pub fn parse_error(detail: impl fmt::Display) -> Self {
        Self::new(ErrorCode::PARSE_ERROR, format!("Parse error: {detail}"))
    }

    /// -32600: JSON, but not a valid JSON-RPC message.
    pub fn invalid_request(detail: impl fmt::Display) -> Self {
        Self::new(
            ErrorCode::INVALID_REQUEST,
            format!("Invalid request: {detail}"),
        )
    }

    /// -32601: nobody serves this method.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(
            ErrorCode::METHOD_NOT_FOUND,
            format!("Method not found: {method}"),
        )
    }

    /// -32602: the parameters are wrong.
    pub fn invalid_params(detail: impl fmt::Display) -> Self {
        Self::new(
            ErrorCode::INVALID_PARAMS,
            format!("Invalid params: {detail}"),
        )
    }

    /// -32603: the receiver failed for a reason of its own.
    pub fn internal_error(detail: impl fmt::Display) -> Self {
        Self::new(
            ErrorCode::INTERNAL_ERROR,
            format!("Internal error: {detail}"),
        )
    }

    /// -32800: the request was cancelled before it finished.
    pub fn request_cancelled() -> Self {
        Self::new(ErrorCode::REQUEST_CANCELLED, "request cancelled")
    }

    /// -32001: the client session is not (or no longer) known.
    pub fn unknown_session() -> Self {
        Self::new(ErrorCode::UNKNOWN_SESSION, "unknown session")
    }
}

impl fmt::Display for ErrorObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ErrorObject {}

/// A request: it has an id and expects exactly one response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Always `"2.0"`.
    pub jsonrpc: TwoPointZero,
    /// The id the response must carry.
    pub id: RequestId,
    /// The method name.
    pub method: String,
    /// The parameters, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

impl Request {
    /// A request with the given id, method and parameters.
    pub fn new(id: impl Into<RequestId>, method: impl Into<String>, params: Option<Value>) -> Self {
        Request {
            jsonrpc: TwoPointZero,
            id: id.into(),
            method: method.into(),
            params,
        }
    }

    /// Decodes the parameters into `T` (absent parameters read as `{}`), or an invalid-params error.
    pub fn params_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, ErrorObject> {
        params_as(self.params.as_ref())
    }
}

/// A notification: no id, no response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Always `"2.0"`.
    pub jsonrpc: TwoPointZero,
    /// The method name.
    pub method: String,
    /// The parameters, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

impl Notification {
    /// A notification with the given method and parameters.
    pub fn new(method: impl Into<String>, params: Option<Value>) -> Self {
        Notification {
            jsonrpc: TwoPointZero,
            method: method.into(),
            params,
        }
    }

    /// Decodes the parameters into `T` (absent parameters read as `{}`), or an invalid-params error.
    pub fn params_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, ErrorObject> {
        params_as(self.params.as_ref())
    }
}

fn params_as<T: serde::de::DeserializeOwned>(params: Option<&Value>) -> Result<T, ErrorObject> {
    let empty = Value::Object(Map::new());
    T::deserialize(params.unwrap_or(&empty)).map_err(ErrorObject::invalid_params)
}

/// What a response carries: a result or an error, never both.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The call succeeded with this result.
    Result(Value),
    /// The call failed with this error.
    Error(ErrorObject),
}

/// A response to a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Always `"2.0"`.
    pub jsonrpc: TwoPointZero,
    /// The id of the request answered; `null` only when it could not be read.
    pub id: Option<RequestId>,
    /// The result or the error.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Response {
    /// A successful response.
    pub fn success(id: RequestId, result: Value) -> Self {
        Response {
            jsonrpc: TwoPointZero,
            id: Some(id),
            outcome: Outcome::Result(result),
        }
    }

    /// A failed response; `id` is `None` when the request's id could not be read.
    pub fn error(id: Option<RequestId>, error: ErrorObject) -> Self {
        Response {
            jsonrpc: TwoPointZero,
            id,
            outcome: Outcome::Error(error),
        }
    }

    /// The error, if this response is one.
    pub fn as_error(&self) -> Option<&ErrorObject> {
        match &self.outcome {
            Outcome::Error(e) => Some(e),
            Outcome::Result(_) => None,
        }
    }

    /// The result, if this response is a success.
    pub fn as_result(&self) -> Option<&Value> {
        match &self.outcome {
            Outcome::Result(v) => Some(v),
            Outcome::Error(_) => None,
        }
    }
}

/// Any JSON-RPC message, classified by its members.
///
/// An object with `method` and an `id` is a [`Request`] whatever its method's name says (the
/// seed's client sends `notifications/initialized` with an id); with `method` and no `id` it
/// is a [`Notification`]; with `result` or `error` it is a [`Response`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Message {
    /// Expects a response.
    Request(Request),
    /// Expects nothing.
    Notification(Notification),
    /// Answers a request.
    Response(Response),
}

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

    /// The method of a request or notification.
    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request(r) => Some(&r.method),
            Message::Notification(n) => Some(&n.method),
            Message::Response(_) => None,
        }
    }

    /// The id of a request or response.
    pub fn id(&self) -> Option<&RequestId> {
        match self {
            Message::Request(r) => Some(&r.id),
            Message::Notification(_) => None,
            Message::Response(r) => r.id.as_ref(),
        }
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Message::from_value(value).map_err(de::Error::custom)
    }
}

impl From<Request> for Message {
    fn from(r: Request) -> Self {
        Message::Request(r)
    }
}

impl From<Notification> for Message {
    fn from(n: Notification) -> Self {
        Message::Notification(n)
    }
}

impl From<Response> for Message {
    fn from(r: Response) -> Self {
        Message::Response(r)
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

    #[test]
    fn params_as_reports_invalid_params() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct P {
            name: String,
        }
        let r = Request::new(1, "tools/call", Some(json!({"name": 5})));
        assert_eq!(
            r.params_as::<P>().unwrap_err().code,
            ErrorCode::INVALID_PARAMS
        );
        let r = Request::new(1, "tools/call", None);
        assert!(r.params_as::<P>().unwrap_err().message.contains("name"));
    }
}
