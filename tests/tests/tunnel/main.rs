//! The whole tunnel in one process: the real proxy (`mcp_proxy::serve` on 127.0.0.1:0), a real
//! reverse client (`mcp_reverse`) serving a real `mcp_server::Server`, and a real MCP client
//! (`mcp_client`) on `/mcp`, or raw HTTP where a test must control the bytes.
//!
//! - `talkback`: progress and log messages before the answer, sampling and elicitation
//!   answered by the client.
//! - `cancel`: cancellation by era, observed by the running handler.
//! - `session`: `logging/setLevel` per session, list changes and resource updates on the GET
//!   stream, `resources/subscribe` and `unsubscribe`.
//! - `legacy`: a seed-style registration never receives the new item kinds.
//! - `workspace`: wire shapes no single crate can check.
//! - `cluster`: several proxy instances sharing a real Redis.

mod cancel;
mod cluster;
mod common;
mod legacy;
mod session;
mod talkback;
mod workspace;
