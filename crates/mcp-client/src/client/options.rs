//! How a [`Client`](super::Client) connects: [`ClientOptions`], the [`Transport`] it speaks, and
//! the callbacks for what the server sends unasked (notifications and requests on streams).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mcp_protocol::jsonrpc::{ErrorObject, Notification};
use mcp_protocol::mcp::lifecycle::{ClientCapabilities, Implementation};
use mcp_protocol::version;
use serde_json::Value;

use super::MCP_PATH;

/// Which HTTP transport a [`Client`](super::Client) speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The seed's `POST /message`: one JSON answer per POST, no session needed.
    Message,
    /// MCP Streamable HTTP (2025-11-25): JSON or SSE answers, `Mcp-Session-Id` from
    /// `initialize` on every later request, `DELETE` on close.
    Streamable,
}

impl Transport {
    /// The transport a URL implies: a path ending in `/mcp` is Streamable HTTP, anything else
    /// the seed's `/message`.
    pub fn for_url(url: &str) -> Transport {
        let path = reqwest::Url::parse(url)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        if path.ends_with(MCP_PATH) {
            Transport::Streamable
        } else {
            Transport::Message
        }
    }
}

/// Called with each notification the server sends on a response stream (progress, logging,
/// list changes) before the response itself.
pub type NotificationHandler = Arc<dyn Fn(Notification) + Send + Sync>;

/// A boxed future that can move between threads (`BoxFuture<'static, T>`): mcp-protocol's.
pub use mcp_protocol::BoxFuture;

/// Answers a request the server sends the client (`sampling/createMessage`,
/// `elicitation/create`, `roots/list`, ...): called with the method and its params, it returns
/// the result or the JSON-RPC error to send back. Build one with [`request_handler`].
pub type RequestHandler = Arc<
    dyn Fn(String, Option<Value>) -> BoxFuture<'static, Result<Value, ErrorObject>> + Send + Sync,
>;

/// A [`RequestHandler`] from an async closure:
///
/// ```
/// use mcp_client::{request_handler, ClientOptions};
/// use mcp_protocol::ErrorObject;
/// use serde_json::json;
///
/// let options = ClientOptions {
///     on_request: Some(request_handler(|method, _params| async move {
///         match method.as_str() {
///             "sampling/createMessage" => Ok(json!({
///                 "role": "assistant",
///                 "content": {"type": "text", "text": "42"},
///                 "model": "by-hand",
///             })),
///             other => Err(ErrorObject::method_not_found(other)),
///         }
///     })),
///     capabilities: serde_json::from_value(json!({"sampling": {}})).unwrap(),
///     ..ClientOptions::default()
/// };
/// ```
pub fn request_handler<F, Fut>(handler: F) -> RequestHandler
where
    F: Fn(String, Option<Value>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, ErrorObject>> + Send + 'static,
{
    Arc::new(move |method, params| Box::pin(handler(method, params)))
}

/// How to connect.
#[derive(Clone)]
pub struct ClientOptions {
    /// Longest wait for one answer; longer than the proxy's request timeout (300 s) by default,
    /// so the proxy's own "request timeout" error is what the user sees.
    pub timeout: Duration,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// PEM certificates (one or more) trusted for `https://` besides the built-in public
    /// roots: the CA of a private deployment, or a self-signed proxy certificate.
    pub ca_cert: Option<String>,
    /// The protocol version offered in `initialize`.
    pub protocol_version: String,
    /// Who this client says it is.
    pub client_info: Implementation,
    /// The transport; `None` picks it from the URL ([`Transport::for_url`]).
    pub transport: Option<Transport>,
    /// Receives the server's notifications that arrive on response streams; they are
    /// dropped when unset.
    pub on_notification: Option<NotificationHandler>,
    /// Answers the server's requests (sampling, elicitation, roots) that arrive on response
    /// streams and on [`Client::listen`](super::Client::listen); when unset, each gets "method
    /// not found". `ping` is always answered by the client itself.
    pub on_request: Option<RequestHandler>,
    /// What the client declares in `initialize`: declare `sampling`, `elicitation` or `roots`
    /// for the requests [`ClientOptions::on_request`] answers, or servers will not send them.
    pub capabilities: ClientCapabilities,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("timeout", &self.timeout)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert.is_some())
            .field("protocol_version", &self.protocol_version)
            .field("client_info", &self.client_info)
            .field("transport", &self.transport)
            .field("on_notification", &self.on_notification.is_some())
            .field("on_request", &self.on_request.is_some())
            .field("capabilities", &self.capabilities)
            .finish()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(330),
            token: None,
            ca_cert: None,
            protocol_version: version::LATEST_HANDSHAKE.to_owned(),
            client_info: Implementation::new("mcp-client", env!("CARGO_PKG_VERSION")),
            transport: None,
            on_notification: None,
            on_request: None,
            capabilities: ClientCapabilities::default(),
        }
    }
}
