//! Messages outside any request, through the session sink a transport installs: list changes
//! to every session, resource updates to the sessions subscribed, server-wide log messages to
//! the sessions whose level lets them through, and any message to one session.

use std::sync::Arc;

use mcp_protocol::mcp::methods;
use mcp_protocol::mcp::notifications::{LoggingLevel, LoggingMessageParams, ResourceUpdatedParams};
use mcp_protocol::{Message, Notification};
use serde_json::Value;

use super::{Server, SessionSink};
use crate::session::Session;

impl Server {
    /// Installs the transport's way to reach a client session outside any request: `sink(session,
    /// message)` delivers `message` to that session's client (over HTTP, its GET stream; through
    /// the proxy, a `{"client_session","message"}` envelope) and returns whether it could.
    ///
    /// The server calls it for list changes, resource updates and [`Server::log`]; a transport
    /// may also use it for a request's messages when the request's own stream cannot carry
    /// them. One sink per server: installing another replaces it. Without one, such messages
    /// are dropped (the notify methods return 0).
    pub fn set_session_sink(&self, sink: impl Fn(&str, Message) -> bool + Send + Sync + 'static) {
        *self
            .inner
            .session_sink
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(sink));
    }

    /// Removes the session sink (a transport shutting down).
    pub fn clear_session_sink(&self) {
        *self
            .inner
            .session_sink
            .write()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn session_sink(&self) -> Option<SessionSink> {
        self.inner
            .session_sink
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends a message to one client session through the session sink; `false` when the
    /// session is unknown, no sink is installed or the sink could not deliver it.
    pub fn send_to_session(&self, session: &str, message: Message) -> bool {
        if !self.has_session(session) {
            return false;
        }
        self.session_sink()
            .is_some_and(|sink| sink(session, message))
    }

    /// Sends a notification to every session `pick` accepts; returns how many took it.
    fn broadcast(
        &self,
        method: &str,
        params: Option<Value>,
        pick: impl Fn(&Session) -> bool,
    ) -> usize {
        let Some(sink) = self.session_sink() else {
            return 0;
        };
        let message = Message::Notification(Notification::new(method, params));
        self.inner
            .sessions
            .all()
            .into_iter()
            .filter(|(_, s)| pick(s))
            .filter(|(id, _)| sink(id, message.clone()))
            .count()
    }

    /// Tells every client session that the tool list changed
    /// (`notifications/tools/list_changed`); returns how many sessions were reached.
    /// [`Server::register_tool`] and [`Server::remove_tool`] call it.
    pub fn notify_tools_list_changed(&self) -> usize {
        self.broadcast(methods::NOTIFICATION_TOOLS_LIST_CHANGED, None, |_| true)
    }

    /// Tells every client session that the resource list changed
    /// (`notifications/resources/list_changed`); returns how many sessions were reached.
    pub fn notify_resources_list_changed(&self) -> usize {
        self.broadcast(methods::NOTIFICATION_RESOURCES_LIST_CHANGED, None, |_| true)
    }

    /// Tells every client session that the prompt list changed
    /// (`notifications/prompts/list_changed`); returns how many sessions were reached.
    pub fn notify_prompts_list_changed(&self) -> usize {
        self.broadcast(methods::NOTIFICATION_PROMPTS_LIST_CHANGED, None, |_| true)
    }

    /// Tells the client sessions subscribed to `uri` (`resources/subscribe`) that it changed
    /// (`notifications/resources/updated`); returns how many sessions were reached.
    pub fn notify_resource_updated(&self, uri: &str) -> usize {
        let params = ResourceUpdatedParams {
            uri: uri.to_owned(),
            meta: None,
        };
        let params = serde_json::to_value(params).ok();
        self.broadcast(methods::NOTIFICATION_RESOURCES_UPDATED, params, |s| {
            s.is_subscribed(uri)
        })
    }

    /// Sends a log message not tied to a request (`notifications/message`) to every client
    /// session whose `logging/setLevel` lets it through; returns how many were reached.
    pub fn log(&self, level: LoggingLevel, logger: Option<&str>, data: impl Into<Value>) -> usize {
        let params = LoggingMessageParams {
            level,
            logger: logger.map(str::to_owned),
            data: data.into(),
        };
        let params = serde_json::to_value(params).ok();
        self.broadcast(methods::NOTIFICATION_MESSAGE, params, |s| {
            s.wants_log(level)
        })
    }
}
