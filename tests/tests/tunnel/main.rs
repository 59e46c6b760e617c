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
//! - `oauth`: a tool learns who calls (an access token's subject) through the whole tunnel.
//! - `cluster`: several proxy instances sharing a real Redis.
//! - `issuer`: the test identity provider (metadata and JWKS on 127.0.0.1:0, signed tokens).

mod cancel;
mod cluster;
mod common;
mod issuer;
mod legacy;
mod oauth;
mod session;
mod talkback;
mod workspace;
