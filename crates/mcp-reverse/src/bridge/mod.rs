//! Bridges that put someone else's MCP server behind the proxy (feature `bridge`): a program
//! speaking stdio ([`StdioBridge`]) or a local Streamable HTTP endpoint ([`UpstreamBridge`]).
//! Both implement [`crate::Service`], so [`crate::ReverseClient::with_service`] serves them
//! like an embedded server.
//!
//! # Sharing, ids and `initialize`
//! Many client sessions arrive through the proxy; a stdio program has one stdin. So the stdio
//! bridge rewrites every request id (and progress token) to one of its own, unique per child,
//! and restores the client's on the way back: two clients may both send id 1 at once and each
//! gets its own answer. How the child itself is shared is [`SessionMode`]:
//!
//! - [`SessionMode::Shared`] (the default): one child for everyone. It is initialized once,
//!   with the first client's `initialize` (its capabilities and protocol version); later clients
//!   get that cached result under their own id, and the bridge swallows their
//!   `notifications/initialized`. The child's state (subscriptions, log level, anything the
//!   program keeps) is shared by all clients. A message the child does not tie to a request by
//!   id or progress token (a log line, a request for sampling) goes to the client whose request
//!   is the latest in flight, or, with none in flight, list changes and logs go to every client
//!   session. Cheap; right for stateless tool servers, which most are.
//! - [`SessionMode::PerClient`]: one child per client session, spawned at its first message
//!   and stopped when the session ends; sessionless traffic (the seed's client) shares one more
//!   child. Each client initializes its own child; nothing is shared.
//!
//! A request that arrives before any `initialize` (the seed's client may skip it, and
//! sessionless traffic needs no handshake through the proxy) makes the bridge initialize the
//! child itself, as `mcp-reverse` with no capabilities.
//!
//! # Lifecycle
//! The child is started before the reverse client registers (a command that cannot start is an
//! error at once). When it exits, every request pending on it fails at once with JSON-RPC error
//! -32603 "the MCP server process exited", and it is started again with exponential backoff;
//! the new child is initialized again with the same parameters, so clients carry on (with the
//! child's state lost). On shutdown its stdin is closed, then it gets SIGTERM, then SIGKILL
//! after a grace.
//!
//! # Ended client sessions
//! When a client session ends (`session_closed`, or its registration lost), its child is
//! stopped (per-client mode) or its upstream session deleted, and the session is remembered
//! (the last `CLOSED_SESSIONS_REMEMBERED`, 4096): a message of it that arrives later (it can
//! overtake the close on another poll) is refused with JSON-RPC -32001 "unknown session",
//! which the proxy answers with 404, and starts nothing.
//!
//! # Environment and stderr
//! A child inherits the bridge's environment except the secrets of [`SECRET_ENV_VARS`] (the
//! proxy token of the `mcp-reverse` command, [`TOKEN_ENV`]): the program is the operator's,
//! but what it runs (a package fetched by `npx`, say) need not be trusted with the token.
//! Its stderr goes to the log, read as bytes to EOF: decoded lossily, each line capped.

mod closed;
mod stdio;
mod upstream;

pub use stdio::{StdioBridge, StdioConfig, SECRET_ENV_VARS, TOKEN_ENV};
pub use upstream::{UpstreamBridge, UpstreamConfig};

use mcp_protocol::jsonrpc::{ErrorObject, Notification, RequestId, Response};
use mcp_protocol::mcp::notifications::CancelledParams;
use serde_json::{json, Value};

/// How client sessions share a stdio child.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessionMode {
    /// One child for every client: initialized once, state shared (see the module docs).
    #[default]
    Shared,
    /// One child per client session (plus one for sessionless traffic).
    PerClient,
}

/// The `initialize` parameters the bridge sends when no client has sent its own.
fn default_initialize_params() -> Value {
    json!({
        "protocolVersion": mcp_protocol::version::LATEST_HANDSHAKE,
        "capabilities": {},
        "clientInfo": {"name": "mcp-reverse", "version": env!("CARGO_PKG_VERSION")},
    })
}

/// Answers `response` with another id (a cached answer given to another client).
fn with_id(mut response: Response, id: mcp_protocol::jsonrpc::RequestId) -> Response {
    response.id = Some(id);
    response
}

/// The JSON-RPC error a request gets when its server cannot answer it.
fn unavailable(message: impl Into<String>) -> ErrorObject {
    ErrorObject::new(mcp_protocol::jsonrpc::ErrorCode::INTERNAL_ERROR, message)
}

/// The request a `notifications/cancelled` names (its typed `requestId`); `None` when it names
/// none or its params are malformed, and then there is nothing to cancel.
fn cancelled_request(notification: &Notification) -> Option<RequestId> {
    notification.params_as::<CancelledParams>().ok()?.request_id
}

/// Points a `notifications/cancelled` at `ours`, the bridge's id for the request. Only
/// `requestId` is replaced, so the rest of its params (`reason`, `_meta`) travel as the client
/// wrote them; `false` when the params are not an object (nothing to rewrite).
fn retarget_cancel(notification: &mut Notification, ours: u64) -> bool {
    match notification.params.as_mut() {
        Some(Value::Object(params)) => {
            params.insert("requestId".into(), Value::from(ours));
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_protocol::mcp::methods;

    #[test]
    fn a_cancellation_is_read_typed_and_retargeted_in_place() {
        let params = json!({"requestId": "c-7", "reason": "user", "_meta": {"k": 1}});
        let mut n = Notification::new(methods::NOTIFICATION_CANCELLED, Some(params));
        assert_eq!(cancelled_request(&n), Some(RequestId::from("c-7")));
        assert!(retarget_cancel(&mut n, 42));
        assert_eq!(
            n.params,
            Some(json!({"requestId": 42, "reason": "user", "_meta": {"k": 1}}))
        );

        let none = Notification::new(methods::NOTIFICATION_CANCELLED, None);
        assert_eq!(cancelled_request(&none), None);
        let bad = Notification::new(
            methods::NOTIFICATION_CANCELLED,
            Some(json!({"requestId": true})),
        );
        assert_eq!(cancelled_request(&bad), None);
    }
}
