//! Write MCP servers: tool, resource and prompt registries, request processing and per-client
//! sessions.
//!
//! This is "your normal MCP server code": what a user writes tools against, however the server
//! is reached. A transport (the reverse client polling the proxy, a direct HTTP endpoint, a test)
//! hands every incoming JSON-RPC message to [`Server::handle`] with the client session it
//! belongs to, and passes an [`Outbound`] for what the server sends back while it works
//! (progress, log messages, sampling, elicitation and roots requests). This crate has no HTTP
//! dependency (unless its `http` feature is on) and spawns nothing on its own.
//!
//! Both spec eras are served: 2025-11-25 and older, where a client session starts with
//! `initialize` (sessionless traffic shares one session that needs no handshake), and
//! 2026-07-28, where each request carries its version in `_meta` and needs no session.
//!
//! # Behaviour
//! - **Sessions.** `initialize` under a session id creates (or re-initializes) that client
//!   session and negotiates the version (the client's when supported, else 2025-11-25). Any
//!   other request naming a session the server does not hold (never initialized, closed by
//!   [`Server::close_session`], or idle past [`ServerConfig::session_idle_timeout`]) gets
//!   -32001 "unknown session", which the proxy maps to HTTP 404 so the client re-initializes.
//!   Requests before `notifications/initialized` are served (clients race it).
//! - **Sessionless** (`None`) traffic shares one session that needs no handshake and never
//!   expires; `notifications/initialized` sent with an id (the seed's client) is answered `{}`.
//! - **2026-07-28.** A request whose `_meta` names 2026-07-28 is served without a session, its
//!   result marked `resultType: "complete"`; a later, unknown version gets -32022 with
//!   `{"supported": [..]}`. `server/discover` is answered in any era without a session.
//! - **Tools.** Unknown tool or malformed params: -32602. Arguments failing the tool's
//!   `inputSchema` (or, for a typed tool, failing to parse into its type), a handler's
//!   [`ToolError`] and a handler panic: a result with `isError: true` (a panic's message stays
//!   in the log).
//! - **Messages outside any request.** A transport installs a *session sink* with
//!   [`Server::set_session_sink`] (`Fn(&str, Message) -> bool`: deliver this message to that
//!   client session). Through it the server sends `notifications/tools/list_changed` (and the
//!   resources and prompts ones) to every session whenever something is registered or removed
//!   (or on [`Server::notify_tools_list_changed`] and friends), `notifications/resources/updated`
//!   to the sessions that sent `resources/subscribe` for that URI
//!   ([`Server::notify_resource_updated`]), and server-wide log messages ([`Server::log`]) to the
//!   sessions whose `logging/setLevel` lets them through. The direct HTTP transport writes them
//!   to the session's GET stream; the reverse client posts them to the proxy as
//!   `{"client_session","message"}`. Sessionless traffic has nowhere to receive them.
//! - **Cancellation.** `notifications/cancelled` (or the end of the session) cancels the
//!   request's token and drops its handler; the request is answered -32800 "request
//!   cancelled" so a relay can close it (the client that cancelled ignores it).
//!
//! # Layout
//! - [`server`]: [`Server`] and [`Server::handle`], the one entry point; its methods by what
//!   they do in `server/register.rs`, `notify.rs` (messages outside requests), `handle.rs`
//!   (sessions, eras, cancellation) and `dispatch.rs` (methods served from the registries).
//! - [`config`]: [`ServerConfig`], the server's identity and limits.
//! - [`context`]: [`RequestContext`], what a handler knows and its way back to the client.
//! - [`outbound`]: [`Outbound`], the transport's handle for server-to-client messages.
//! - [`registry`]: tools ([`tool_builder`]), resources and templates, prompts, completion.
//! - [`typed`]: typed tools, arguments parsed into a Rust type and (feature `schemars`, on by
//!   default) the input and output schemas written from the types; [`Structured`] answers.
//! - [`schema`]: the JSON Schema subset tool arguments are checked against.
//! - `session`: per-client session state and expiry (internal).
//! - `pending`: requests sent to clients, waiting for their answers (internal).
//! - [`error`]: [`Error`] and [`ToolError`].
//! - `demo` (feature `schemars`): the seed's demonstration tools, typed, for examples and the
//!   benchmark.
//! - `http` (feature `http`): Streamable HTTP served directly, `mcp_server::http::{router,
//!   serve, start}` and `Server::start`. Without the feature the crate has no HTTP
//!   dependency (`cargo tree -p mcp-server -e normal` shows no axum).
//!
//! # Typed tools
//! A tool's arguments are best a Rust type: `Server::register_typed_tool` writes the tool's
//! `inputSchema` from the type (`#[derive(JsonSchema)]`, field doc comments becoming
//! descriptions) and hands the handler the parsed value, so the schema and the parsing cannot
//! drift. A handler answering [`Structured<T>`] also declares `T`'s `outputSchema` and sends
//! `structuredContent`. Bad arguments are `isError` results naming the field; unknown ones are
//! ignored unless the type says `#[serde(deny_unknown_fields)]` (see [`typed`]). Without the
//! `schemars` feature, [`Server::register_parsed_tool`] parses the same way under a schema
//! written by hand, and [`Server::register_tool`] takes the raw JSON object as before.
//!
//! # Example
//! ```
//! use mcp_protocol::mcp::tools::CallToolResult;
//! use mcp_protocol::{Message, Request};
//! use mcp_server::{schemars::JsonSchema, tool_builder, Outbound, Server, ServerConfig};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize, JsonSchema)]
//! #[schemars(crate = "mcp_server::schemars")] // no `schemars` dependency of your own needed
//! struct Echo {
//!     /// Text to echo
//!     text: String,
//!     /// Uppercase it
//!     #[serde(default)]
//!     uppercase: bool,
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let server = Server::new(ServerConfig::new("demo", "1.0.0"));
//! server.register_typed_tool(
//!     tool_builder("echo").with_description("Echo back the provided text"),
//!     |args: Echo, _ctx| async move {
//!         let text = if args.uppercase { args.text.to_uppercase() } else { args.text };
//!         Ok(CallToolResult::text(text))
//!     },
//! );
//! assert_eq!(server.tools()[0].input_schema["required"], serde_json::json!(["text"]));
//!
//! // Sessionless traffic (the seed's client) needs no handshake.
//! let call = Request::new(1, "tools/call", Some(serde_json::json!({
//!     "name": "echo", "arguments": {"text": "hi", "uppercase": true}
//! })));
//! let response = server.handle(None, Message::Request(call), Outbound::none()).await.unwrap();
//! assert_eq!(response.as_result().unwrap()["content"][0]["text"], "HI");
//! # });
//! ```

pub mod config;
pub mod context;
#[cfg(feature = "schemars")]
pub mod demo;
pub mod error;
#[cfg(feature = "http")]
pub mod http;
pub mod outbound;
mod pending;
pub mod registry;
pub mod schema;
pub mod server;
mod session;
pub mod typed;

pub use config::ServerConfig;
pub use context::RequestContext;
pub use error::{Error, ToolError};
/// Who is calling ([`RequestContext::identity`]), as the proxy's OAuth layer vouched for it.
pub use mcp_protocol::wire::Identity;
pub use outbound::Outbound;
pub use registry::completion::CompletionResult;
pub use registry::prompts::{prompt_builder, PromptBuilder, PromptResult};
pub use registry::resources::ResourceResult;
pub use registry::tools::{tool_builder, ToolBuilder};
pub use server::Server;
pub use typed::Structured;

/// The `schemars` crate, for `#[derive(JsonSchema)]` on typed tools' arguments without a
/// dependency of one's own (add `#[schemars(crate = "mcp_server::schemars")]` to the type).
#[cfg(feature = "schemars")]
pub use schemars;
