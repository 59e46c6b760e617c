//! MCP method payloads for both spec eras, with field names exactly as the spec's schema.
//!
//! Every struct keeps fields it does not know in `extra`, so a message from a newer peer
//! passes through this project without losing anything.
//!
//! # Layout
//! - [`methods`]: the method names as constants.
//! - [`lifecycle`]: `initialize`, capabilities, implementation info, `ping`, `logging/setLevel`.
//! - [`stateless`]: the 2026-07-28 era: request `_meta`, `server/discover`, `resultType`,
//!   `input_required`, caching hints.
//! - [`tools`], [`resources`], [`prompts`], [`completion`]: the server features.
//! - [`notifications`]: initialized, cancelled, progress, message, list_changed, updated.
//! - [`client_requests`]: what a server asks the client: sampling, elicitation, roots.

pub mod client_requests;
pub mod completion;
pub mod lifecycle;
pub mod notifications;
pub mod prompts;
pub mod resources;
pub mod stateless;
pub mod tools;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A free-form JSON object (`_meta`, capability settings, unknown fields).
pub type JsonObject = Map<String, Value>;

/// Method names, as sent on the wire.
pub mod methods {
    /// Starts a 2025-era session.
    pub const INITIALIZE: &str = "initialize";
    /// Liveness check (2025 era).
    pub const PING: &str = "ping";
    /// Sets the session's log level (2025 era).
    pub const LOGGING_SET_LEVEL: &str = "logging/setLevel";
    /// Describes the server without a session (2026-07-28).
    pub const SERVER_DISCOVER: &str = "server/discover";
    /// Lists tools.
    pub const TOOLS_LIST: &str = "tools/list";
    /// Calls a tool.
    pub const TOOLS_CALL: &str = "tools/call";
    /// Lists resources.
    pub const RESOURCES_LIST: &str = "resources/list";
    /// Lists resource templates.
    pub const RESOURCES_TEMPLATES_LIST: &str = "resources/templates/list";
    /// Reads a resource.
    pub const RESOURCES_READ: &str = "resources/read";
    /// Subscribes to a resource's updates.
    pub const RESOURCES_SUBSCRIBE: &str = "resources/subscribe";
    /// Ends a subscription.
    pub const RESOURCES_UNSUBSCRIBE: &str = "resources/unsubscribe";
    /// Lists prompts.
    pub const PROMPTS_LIST: &str = "prompts/list";
    /// Gets one prompt.
    pub const PROMPTS_GET: &str = "prompts/get";
    /// Asks for argument completions.
    pub const COMPLETION_COMPLETE: &str = "completion/complete";
    /// Server asks the client's model for a message.
    pub const SAMPLING_CREATE_MESSAGE: &str = "sampling/createMessage";
    /// Server asks the user for input.
    pub const ELICITATION_CREATE: &str = "elicitation/create";
    /// Server asks for the client's roots.
    pub const ROOTS_LIST: &str = "roots/list";
    /// The client finished initializing.
    pub const NOTIFICATION_INITIALIZED: &str = "notifications/initialized";
    /// A request was cancelled.
    pub const NOTIFICATION_CANCELLED: &str = "notifications/cancelled";
    /// Progress of a long request.
    pub const NOTIFICATION_PROGRESS: &str = "notifications/progress";
    /// A log message.
    pub const NOTIFICATION_MESSAGE: &str = "notifications/message";
    /// The tool list changed.
    pub const NOTIFICATION_TOOLS_LIST_CHANGED: &str = "notifications/tools/list_changed";
    /// The resource list changed.
    pub const NOTIFICATION_RESOURCES_LIST_CHANGED: &str = "notifications/resources/list_changed";
    /// A subscribed resource changed.
    pub const NOTIFICATION_RESOURCES_UPDATED: &str = "notifications/resources/updated";
    /// The prompt list changed.
    pub const NOTIFICATION_PROMPTS_LIST_CHANGED: &str = "notifications/prompts/list_changed";
    /// The client's roots changed (2025 era).
    pub const NOTIFICATION_ROOTS_LIST_CHANGED: &str = "notifications/roots/list_changed";
}

/// Who a message or content is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The human user.
    User,
    /// The model.
    Assistant,
}

/// An opaque pagination cursor.
pub type Cursor = String;

/// Parameters of the `*/list` requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PaginatedParams {
    /// Where to continue, from a previous `nextCursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
    /// Request metadata (progress token; in 2026-07-28 the protocol fields).
    #[serde(rename = "_meta", default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<JsonObject>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: JsonObject,
}

/// Hints for the client about how to use or show an object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Annotations {
    /// Who the data is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<Vec<Role>>,
    /// Importance from 0 (optional) to 1 (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<f64>,
    /// ISO 8601 time of the last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// Fields this version does not know.
    #[serde(flatten)]
    pub extra: JsonObject,
}

/// An icon a client may show.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Icon {
    /// URL or `data:` URI of the image.
    pub src: String,
    /// MIME type override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Sizes such as `"48x48"` or `"any"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizes: Option<Vec<String>>,
    /// `"light"` or `"dark"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theme: Option<String>,
}

/// The empty result (`{}`), as answered to `ping` and `notifications/initialized` with an id.
pub fn empty_result() -> Value {
    Value::Object(Map::new())
}
