//! [`RequestContext`]: what a handler knows about its request, and its handle to talk back to
//! the client (progress, log messages, sampling, elicitation, roots).

use std::sync::Arc;

use mcp_protocol::mcp::client_requests::{
    CreateMessageParams, CreateMessageResult, ElicitParams, ElicitResult, ListRootsResult,
};
use mcp_protocol::mcp::lifecycle::{ClientCapabilities, Implementation};
use mcp_protocol::mcp::methods;
use mcp_protocol::mcp::notifications::{LoggingLevel, LoggingMessageParams, ProgressParams};
use mcp_protocol::mcp::JsonObject;
use mcp_protocol::wire::Identity;
use mcp_protocol::{Message, Notification, Request, RequestId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::outbound::Outbound;
use crate::pending::PendingClientRequests;
use crate::session::Session;
use crate::Error;

/// Which log messages the client wants for this request.
#[derive(Clone, Debug)]
pub(crate) enum LogFilter {
    /// 2025 era: the session's `logging/setLevel` (everything until the client sets one).
    Session(Arc<Session>),
    /// 2026-07-28: the request's `_meta` log level; none when it names none.
    PerRequest(Option<LoggingLevel>),
}

/// Everything a handler may need about the request it serves, and the way back to the client.
///
/// Cheap to clone; a clone talks to the same client and shares the cancellation token.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub(crate) session_id: Option<Arc<str>>,
    pub(crate) request_id: RequestId,
    pub(crate) cancel: CancellationToken,
    pub(crate) meta: Option<JsonObject>,
    pub(crate) protocol_version: String,
    pub(crate) client_capabilities: Option<ClientCapabilities>,
    pub(crate) client_info: Option<Implementation>,
    pub(crate) log_filter: LogFilter,
    pub(crate) outbound: Outbound,
    pub(crate) pending: Arc<PendingClientRequests>,
    pub(crate) identity: Option<Arc<Identity>>,
}

impl RequestContext {
    /// The client session this request belongs to; `None` for sessionless traffic.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// Who is calling, when the proxy authorized the client with an OAuth access token
    /// (subject, client id, scopes as the identity provider issued them); `None` for a client
    /// with a static token, an open proxy, or a transport that carries no identity. A tool
    /// decides with it what this caller may do; the token itself never reaches the server.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_deref()
    }

    /// The id of the request being served.
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }

    /// Cancelled when the client cancels the request or its session ends.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Whether the request has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the request is cancelled; use it in a `select!` around long work.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// The request's `_meta` object, if it had one.
    pub fn meta(&self) -> Option<&JsonObject> {
        self.meta.as_ref()
    }

    /// The progress token the client asked progress notifications to carry, if any.
    pub fn progress_token(&self) -> Option<&Value> {
        self.meta.as_ref()?.get("progressToken")
    }

    /// The protocol version this request is served under.
    pub fn protocol_version(&self) -> &str {
        &self.protocol_version
    }

    /// What the client declared it can do; `None` when it never said (e.g. sessionless traffic
    /// that skipped `initialize`).
    pub fn client_capabilities(&self) -> Option<&ClientCapabilities> {
        self.client_capabilities.as_ref()
    }

    /// Who the client said it is, if it did.
    pub fn client_info(&self) -> Option<&Implementation> {
        self.client_info.as_ref()
    }

    /// Whether the transport of this request can carry messages to the client at all.
    pub fn can_reach_client(&self) -> bool {
        self.outbound.is_connected()
    }

    /// Sends `notifications/progress` if the client asked for progress; `false` if not sent.
    pub fn progress(&self, progress: f64, total: Option<f64>, message: Option<String>) -> bool {
        let Some(token) = self.progress_token() else {
            return false;
        };
        let params = ProgressParams {
            progress_token: token.clone(),
            progress,
            total,
            message,
        };
        self.notify(methods::NOTIFICATION_PROGRESS, &params)
    }

    /// Sends a `notifications/message` log entry if the client wants this level; `false` if not sent.
    pub fn log(&self, level: LoggingLevel, data: impl Into<Value>) -> bool {
        self.log_to(level, None, data)
    }

    /// Like [`RequestContext::log`], naming the logger.
    pub fn log_to(
        &self,
        level: LoggingLevel,
        logger: Option<&str>,
        data: impl Into<Value>,
    ) -> bool {
        let wanted = match &self.log_filter {
            LogFilter::Session(session) => session.wants_log(level),
            LogFilter::PerRequest(min) => min.is_some_and(|min| level >= min),
        };
        if !wanted {
            return false;
        }
        let params = LoggingMessageParams {
            level,
            logger: logger.map(str::to_owned),
            data: data.into(),
        };
        self.notify(methods::NOTIFICATION_MESSAGE, &params)
    }

    /// Sends any notification to the client; `false` if the transport could not take it.
    pub fn notify(&self, method: &str, params: &impl Serialize) -> bool {
        let params = serde_json::to_value(params).ok();
        self.outbound
            .send(Message::Notification(Notification::new(method, params)))
    }

    /// Asks the client's model for a message (`sampling/createMessage`) and waits for it.
    pub async fn create_message(
        &self,
        params: CreateMessageParams,
    ) -> Result<CreateMessageResult, Error> {
        self.require("sampling", |c| c.sampling.is_some())?;
        self.request_typed(methods::SAMPLING_CREATE_MESSAGE, &params)
            .await
    }

    /// Asks the user for input (`elicitation/create`) and waits for the answer.
    pub async fn elicit(&self, params: ElicitParams) -> Result<ElicitResult, Error> {
        self.require("elicitation", |c| c.elicitation.is_some())?;
        self.request_typed(methods::ELICITATION_CREATE, &params)
            .await
    }

    /// Asks for the client's roots (`roots/list`) and waits for them.
    pub async fn list_roots(&self) -> Result<ListRootsResult, Error> {
        self.require("roots", |c| c.roots.is_some())?;
        self.request_typed(methods::ROOTS_LIST, &serde_json::json!({}))
            .await
    }

    /// Sends any request to the client and waits for its result.
    ///
    /// Fails with [`Error::ClientUnreachable`] when the transport carries nothing,
    /// [`Error::ClientError`] when the client answers with an error, and [`Error::Cancelled`]
    /// when this request is cancelled first. Whenever the answer is no longer awaited
    /// (cancelled, or the handler dropped), the client is told with `notifications/cancelled`.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, Error> {
        if !self.outbound.is_connected() {
            return Err(Error::ClientUnreachable);
        }
        let (id, rx, _guard) = self
            .pending
            .register(self.session_id(), self.outbound.clone());
        let request = Request::new(id, method, Some(params));
        if !self.outbound.send(Message::Request(request)) {
            return Err(Error::ClientUnreachable);
        }
        tokio::select! {
            answer = rx => match answer {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(error)) => Err(Error::ClientError { method: method.to_owned(), error }),
                Err(_) => Err(Error::Cancelled),
            },
            // Dropping the guard tells the client the request is abandoned.
            () = self.cancel.cancelled() => Err(Error::Cancelled),
        }
    }

    async fn request_typed<T: DeserializeOwned>(
        &self,
        method: &str,
        params: &impl Serialize,
    ) -> Result<T, Error> {
        let params = serde_json::to_value(params).map_err(|e| Error::InvalidClientResult {
            method: method.to_owned(),
            reason: format!("cannot encode the request: {e}"),
        })?;
        let value = self.request(method, params).await?;
        serde_json::from_value(value).map_err(|e| Error::InvalidClientResult {
            method: method.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Fails when the client declared capabilities and `capability` is not among them.
    fn require(
        &self,
        capability: &'static str,
        has: impl Fn(&ClientCapabilities) -> bool,
    ) -> Result<(), Error> {
        match &self.client_capabilities {
            Some(caps) if !has(caps) => Err(Error::ClientLacksCapability { capability }),
            _ => Ok(()),
        }
    }
}
