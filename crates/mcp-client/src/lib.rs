//! An async MCP client: connect to a URL, `initialize`, list and call tools, ping, read
//! resources and prompts, send notifications.
//!
//! It speaks two transports ([`Transport`]), chosen from the URL unless
//! [`ClientOptions::transport`] says otherwise:
//! - the seed proxy's `POST /message`: one JSON-RPC message per HTTP POST, answered with HTTP
//!   200 and the JSON-RPC response (202 for a notification);
//! - MCP Streamable HTTP (2025-11-25), for URLs ending in `/mcp`: answers come as JSON or as an
//!   SSE stream (notifications before the response go to [`ClientOptions::on_notification`]),
//!   the `Mcp-Session-Id` from `initialize` and the negotiated `MCP-Protocol-Version` go on every
//!   later request, and [`Client::close`] deletes the session. The server's requests
//!   (sampling, elicitation, roots) go to [`ClientOptions::on_request`];
//!   [`Client::open_stream`] and [`Client::listen`] serve the session's own GET stream.
//!
//! Errors say what went wrong: the connection ([`Error::Transport`]), the HTTP status
//! ([`Error::Status`]), a session the server forgot ([`Error::SessionExpired`]: initialize
//! again), the peer's JSON-RPC error ([`Error::Rpc`]), or an answer that makes no sense
//! ([`Error::InvalidResponse`]).
//!
//! # Layout
//! - [`client`]: [`Client`], the MCP operations; in its submodules, [`ClientOptions`] with the
//!   [`Transport`] and callbacks (`client/options.rs`), and event streams, [`ServerStream`]
//!   among them (`client/stream.rs`).
//! - [`error`]: the [`Error`] type.
//! - [`sse`]: the Server-Sent Events reader behind Streamable HTTP answers (mcp-protocol's,
//!   re-exported).
//! - `main.rs` (feature `cli`, on by default): the `mcp-client` CLI (`mcp-client URL tools`,
//!   `mcp-client URL call echo '{...}'`). Embed the library with `default-features = false` to
//!   leave clap out.
//!
//! # Example
//! ```no_run
//! # async fn run() -> Result<(), mcp_client::Error> {
//! let client = mcp_client::Client::connect("http://localhost:9000")?;
//! let info = client.initialize().await?;
//! println!("{} v{}", info.server_info.name, info.server_info.version);
//! let result = client
//!     .call_tool("echo", serde_json::json!({"text": "hi"}))
//!     .await?;
//! println!("{}", mcp_client::text_of(&result));
//! client.close().await?;
//! # Ok(()) }
//! ```

pub mod client;
pub mod error;
pub use mcp_protocol::sse;

pub use client::{
    request_handler, text_of, BoxFuture, Client, ClientOptions, NotificationHandler,
    RequestHandler, ServerStream, Transport,
};
pub use error::Error;
