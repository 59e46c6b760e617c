//! [`Service`]: what a [`crate::ReverseClient`] serves — an embedded [`mcp_server::Server`] or a
//! bridge to someone else's MCP server (module `bridge`, feature `bridge`).

use std::sync::Arc;

use mcp_protocol::jsonrpc::{Message, Response};
use mcp_server::{Identity, Outbound, Server};

/// A boxed future, as [`Service::handle`] returns (object-safe, no extra crate): mcp-protocol's.
pub use mcp_protocol::BoxFuture;

/// Where a service sends messages for a client session that are tied to no request (list
/// changes, log lines between calls): the reverse client posts them as
/// `{"client_session","message"}` envelopes, which reach that session's GET stream on `/mcp`.
/// Returns whether the message was taken (queued for posting).
pub type SessionSink = Arc<dyn Fn(&str, Message) -> bool + Send + Sync>;

/// Something that answers MCP messages on behalf of the clients of the proxy.
pub trait Service: Send + Sync + 'static {
    /// Processes one message of client session `session` (`None`: sessionless), sending what
    /// it says meanwhile (progress, logs, requests to the client) through `outbound`. Returns
    /// the answer to a request, `None` for a notification or a client's response.
    fn handle<'a>(
        &'a self,
        session: Option<&'a str>,
        message: Message,
        outbound: Outbound,
    ) -> BoxFuture<'a, Option<Response>>;

    /// [`Service::handle`] for a request whose item named who is calling (the proxy's OAuth
    /// layer: subject, client id, scopes). Services that make no use of it (the bridges: the
    /// program behind them has no way to receive it) keep this default, which drops it.
    fn handle_as<'a>(
        &'a self,
        session: Option<&'a str>,
        message: Message,
        outbound: Outbound,
        identity: Option<Arc<Identity>>,
    ) -> BoxFuture<'a, Option<Response>> {
        let _ = identity;
        self.handle(session, message, outbound)
    }

    /// Client session `session` ended: drop its state. Called when the proxy says so
    /// (`session_closed`), and for every client session of a registration the proxy lost,
    /// before registering again. A message of the session may still arrive afterwards (it can
    /// overtake the close on another poll): refuse it with -32001 "unknown session" rather
    /// than start anything for it, as the bridges do.
    fn close_session(&self, session: &str);

    /// Installs where session messages go; the reverse client calls it once, at construction.
    /// Services that never send session messages ignore it.
    fn set_session_sink(&self, sink: SessionSink) {
        let _ = sink;
    }
}

impl Service for Server {
    fn handle<'a>(
        &'a self,
        session: Option<&'a str>,
        message: Message,
        outbound: Outbound,
    ) -> BoxFuture<'a, Option<Response>> {
        Box::pin(Server::handle(self, session, message, outbound))
    }

    /// The identity reaches the tool handlers ([`mcp_server::RequestContext::identity`]).
    fn handle_as<'a>(
        &'a self,
        session: Option<&'a str>,
        message: Message,
        outbound: Outbound,
        identity: Option<Arc<Identity>>,
    ) -> BoxFuture<'a, Option<Response>> {
        Box::pin(Server::handle_as(
            self, session, message, outbound, identity,
        ))
    }

    fn close_session(&self, session: &str) {
        Server::close_session(self, session);
    }

    /// List changes, resource updates and [`Server::log`] reach clients through the proxy.
    fn set_session_sink(&self, sink: SessionSink) {
        Server::set_session_sink(self, move |session, message| sink(session, message));
    }
}
