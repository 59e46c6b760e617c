//! Serve an [`mcp_server::Server`] through the MCP reverse proxy from behind NAT or a firewall:
//! the server connects **out** to the proxy and long-polls it for work, so nothing has to
//! listen on your machine.
//!
//! This is the crate to embed. It stays small on purpose: no axum, no OpenSSL, only
//! `mcp-server`, `mcp-protocol`, reqwest (plain HTTP) and tokio (features `bridge` and `cli`
//! add rustix, clap and tracing-subscriber).
//!
//! What it does, as docs/protocol.md specifies: registers as a modern registration (with its
//! pool name and capabilities), keeps [`Configuration::held_polls`] polls open at all times,
//! runs every request concurrently with its client session, posts interim messages (progress,
//! logs, requests to the client) and the final answer, and survives the world: the proxy not
//! up yet, restarted (it registers again), network errors, failing posts (retried; the proxy
//! drops duplicates), with exponential backoff and jitter capped at
//! [`Configuration::retry_delay_seconds`].
//!
//! What it serves is a [`Service`]: an embedded [`mcp_server::Server`]
//! ([`ReverseClient::new`]), or with feature `bridge` someone else's MCP server
//! ([`ReverseClient::with_service`] and the `bridge` module): a program speaking stdio, or a
//! local Streamable HTTP endpoint. Messages the service sends a client session outside any
//! request (list changes, log lines) are posted as session messages.
//!
//! # The `mcp-reverse` command (feature `cli`)
//! Publishes any MCP server with one command, as ngrok or frp publish a port:
//!
//! ```text
//! cargo install mcp-reverse --features cli
//! mcp-reverse --proxy http://proxy.example.com:9000 --name everything -- npx -y @modelcontextprotocol/server-everything
//! mcp-reverse --proxy http://proxy.example.com:9000 --session-mode per-client -- python my_server.py
//! mcp-reverse --proxy http://proxy.example.com:9000 --upstream http://127.0.0.1:8000/mcp
//! ```
//!
//! Clients then use `http://proxy.example.com:9000/servers/everything/mcp`. In the default
//! `shared` mode one process serves every client: it is initialized once, with the first
//! client's `initialize`, and its state is shared; request ids and progress tokens are
//! rewritten so clients never collide. `--session-mode per-client` runs one process per
//! client session instead. The program is started before registering, restarted with backoff
//! when it dies (its pending requests fail at once), and stopped on SIGTERM/Ctrl-C (stdin
//! closed, then SIGTERM, then SIGKILL). `mcp-reverse --help` has every flag; the `bridge`
//! module's docs have the details.
//!
//! # Layout
//! - [`config`]: [`Configuration`], the seed's options and defaults plus ours.
//! - [`client`]: [`ReverseClient`] and its background [`ReverseHandle`].
//! - [`service`]: [`Service`], what a reverse client serves.
//! - `bridge` (feature `bridge`): stdio and Streamable HTTP bridges.
//! - `redact`: what of ids and HTTP errors reaches the logs (a short prefix; no URL).
//! - [`shutdown_signal`]: Ctrl-C or SIGTERM (mcp-protocol's, feature `signal`, re-exported).
//! - [`error`]: [`Error`], the reasons it stops.
//! - `backoff`: retry pauses.
//! - `src/bin/mcp-reverse.rs` (feature `cli`): the command.
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
mod redact;
pub mod service;

pub use client::{ReverseClient, ReverseHandle};
pub use config::{Configuration, Transport};
pub use error::Error;
pub use mcp_protocol::signal::shutdown_signal;
pub use service::{BoxFuture, Service, SessionSink};
