//! Serve an [`mcp_server::Server`] through the MCP reverse proxy from behind NAT or a firewall:
//! the server connects **out** to the proxy and long-polls it for work, so nothing has to
//! listen on your machine.
//!
//! This is the crate to embed. It stays small on purpose: no axum, no OpenSSL, only
//! `mcp-server`, `mcp-protocol`, reqwest (plain HTTP) and tokio.
//!
//! What it does, as docs/protocol.md specifies: registers as a modern registration (with its
//! pool name and capabilities), keeps [`Configuration::held_polls`] polls open at all times,
//! runs every request concurrently with its client session, posts interim messages (progress,
//! logs, requests to the client) and the final answer, and survives the world: the proxy not
//! up yet, restarted (it registers again), network errors, failing posts (retried; the proxy
//! drops duplicates), with exponential backoff and jitter capped at
//! [`Configuration::retry_delay_seconds`].
//!
//! # Layout
//! - [`config`]: [`Configuration`], the seed's options and defaults plus ours.
//! - [`client`]: [`ReverseClient`] and its background [`ReverseHandle`].
//! - [`error`]: [`Error`], the reasons it stops.
//! - `backoff`: retry pauses.
//!
//! # Example
//! The seed's C++ example, in Rust:
//! ```no_run
//! use mcp_reverse::{Configuration, ReverseClient};
//! use mcp_server::{Server, ServerConfig};
//!
//! # async fn run() -> Result<(), mcp_reverse::Error> {
//! // 1. Create the MCP server (it listens nowhere).
//! let server = Server::new(ServerConfig::new("Reverse MCP Server", "1.0.0"));
//! // 2. Register tools on it as usual (see mcp-server).
//! // 3. Point the reverse client at the proxy.
//! let config = Configuration::new("http://your-proxy.example.com:9000");
//! // 4. Serve until shut down (the seed's `start(true)`), or `.spawn()` for a handle.
//! ReverseClient::new(server, config)?.run().await
//! # }
//! ```

mod backoff;
#[cfg(feature = "bridge")]
pub mod bridge;
pub mod client;
pub mod config;
pub mod error;
pub mod service;

pub use client::{ReverseClient, ReverseHandle};
pub use config::Configuration;
pub use error::Error;
pub use service::{BoxFuture, Service, SessionSink};
