//! JSON-RPC 2.0 and Model Context Protocol types, shared by every crate of the MCP reverse proxy.
//!
//! This crate has no async runtime and no HTTP dependency: it is plain data and the rules that
//! go with it, so the proxy, the server, the reverse client and the client all agree on one
//! definition of every message. (Its `signal` feature adds tokio, for binaries only.)
//!
//! # Layout
//! - [`jsonrpc`]: requests, notifications, responses, ids and error objects, and
//!   [`jsonrpc::Message::parse`], which classifies any incoming bytes and never panics.
//! - [`version`]: the protocol versions this project knows and the negotiation rule.
//! - [`mcp`]: the MCP method payloads of both spec eras (2025-11-25 and older with the
//!   `initialize` handshake; 2026-07-28, stateless with per-request `_meta`).
//! - [`streamable`]: the HTTP-free rules of the Streamable HTTP transport (headers, Accept,
//!   Origin checks, SSE framing, resumable event logs), shared by the proxy and mcp-server.
//! - [`sse`]: [`sse::SseParser`], the one Server-Sent Events reader, for every client of
//!   Streamable HTTP (mcp-client, the reverse client's upstream bridge).
//! - `signal` (feature `signal`): `shutdown_signal`, the Ctrl-C/SIGTERM wait of every binary.
//! - [`BoxFuture`]: the boxed future the other crates' handlers and services return.
//! - [`channel`]: the WebSocket channel's control frames and constants.
//! - [`wire`]: the envelopes the proxy and reverse client exchange (`/register`, `/poll`,
//!   `/response`), the seed's shapes plus our extensions, as docs/protocol.md specifies.
//!
//! # Example
//! ```
//! use mcp_protocol::jsonrpc::{Message, Response};
//!
//! // The seed's client sends `notifications/initialized` *with* an id: that makes it a request.
//! let msg = Message::parse(br#"{"jsonrpc":"2.0","id":7,"method":"notifications/initialized"}"#)
//!     .unwrap();
//! let Message::Request(req) = msg else { panic!("a message with an id is a request") };
//! let answer = Response::success(req.id.clone(), serde_json::json!({}));
//! assert_eq!(
//!     serde_json::to_string(&answer).unwrap(),
//!     r#"{"jsonrpc":"2.0","id":7,"result":{}}"#
//! );
//! ```

pub mod channel;
pub mod jsonrpc;
pub mod mcp;
#[cfg(feature = "signal")]
pub mod signal;
pub mod sse;
pub mod streamable;
pub mod version;
pub mod wire;

pub use jsonrpc::{ErrorCode, ErrorObject, Message, Notification, Request, RequestId, Response};
pub use version::ProtocolVersion;

/// A boxed future that can move between threads: what stored handlers and object-safe traits
/// return. Defined once here, the lowest crate, so mcp-server, mcp-client and mcp-reverse name
/// the same type; it is `futures::future::BoxFuture`'s definition, so futures boxed by either
/// fit.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
