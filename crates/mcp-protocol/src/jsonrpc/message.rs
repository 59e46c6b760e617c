//! The message shapes: [`Request`], [`Notification`], [`Response`] (with its [`Outcome`]) and
//! [`Message`], any one of them. How bytes become one is `parse`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{ErrorObject, RequestId, TwoPointZero};

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

impl Message {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::ErrorCode;
    use serde_json::json;

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
