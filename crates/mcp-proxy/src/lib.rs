//! The public MCP reverse proxy: MCP servers behind NAT connect **out** to it by long polling;
//! MCP clients talk to it as if it were the server.
//!
//! ```text
//! MCP client ──POST /message, /mcp──▶ mcp-proxy ◀──GET /poll, POST /response── reverse client + server
//! ```
//!
//! It speaks the seed's wire protocol (so the seed's C++ reverse client and client work
//! unmodified) plus the additive extensions of docs/protocol.md, which is the contract.
//!
//! # Layout
//! - [`app`]: the axum [`router`] (from the route table), joining a cluster, and [`serve`]
//!   (bound listener + shutdown token); [`AppState`] (`state`), what every handler shares.
//! - `routes`: the route table (which the router, the rate limits and the relay read), and
//!   one file per route: `register` (`POST`/`DELETE /register`), `poll`, `response`,
//!   `message` (`/message`, `/servers/{name}/message`), `mcp` (Streamable HTTP on `/mcp` and
//!   `/servers/{name}/mcp`: sessions, SSE streams, resumption), `health`, `servers`
//!   (`GET /servers`, the pools for operators).
//! - [`broker`]: registrations, their queues, pending requests, pools, and the client sessions
//!   of `/mcp` with their resumable SSE streams, behind the narrow
//!   [`Broker`] API so a distributed backend can be added later.
//! - [`topology`]: the seam where other instances serving the same pools plug in.
//! - `cluster` (feature `cluster`, on by default): several instances sharing one Redis
//!   (`--broker redis://…`) behind that seam: pool homes, the relay between instances,
//!   shared rate limits (docs/deployment.md).
//! - [`config`]: [`Config`] and its defaults.
//! - [`auth`]: server and client bearer tokens bound to pool names, the token file and its
//!   reload, and the middleware that answers 401.
//! - [`tls`]: rustls from PEM files and the TLS listener (docs/security.md).
//! - [`cli`]: the `mcp-proxy` command line (clap), which builds a [`Config`].
//! - [`error`]: [`Error`], the crate's one error type, and how it looks on the wire.
//! - `guard`: Host, Origin and Content-Type checks on the client routes (DNS rebinding,
//!   cross-site posts).
//! - [`limits`]: request-rate limits per caller (429 with Retry-After).
//! - [`listener`]: the accept loop: connection caps, header/body/idle deadlines, TLS
//!   handshakes, the drain on shutdown.
//! - [`peer`]: who a caller is by address, `X-Forwarded-For` from trusted proxies.
//! - [`audit`]: one JSON line per client request answered (`--audit-log`), the layer that
//!   writes it, and what handlers note for it.
//! - [`console`]: the operator's web console at `/console` (`--console`): admin login,
//!   live view of pools, members and the latest audit lines.
//! - [`metrics`]: Prometheus text at `/metrics`, and the middleware that measures routes.
//!
//! # Example
//! Start a proxy in-process on an ephemeral port, then stop it:
//! ```no_run
//! use mcp_proxy::{serve, Config};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let shutdown = CancellationToken::new();
//! let server = tokio::spawn(serve(listener, Config::default(), shutdown.clone()));
//! println!("proxy at http://{addr}/message");
//! shutdown.cancel();
//! server.await.expect("the server task does not panic")?;
//! # Ok(())
//! # }
//! ```

pub mod app;
pub mod audit;
pub mod auth;
pub mod broker;
pub mod cli;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
pub mod console;
pub mod error;
mod guard;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod peer;
mod routes;
mod state;
pub mod tls;
pub mod topology;

pub use app::{router, serve, serve_with_state, AppState};
pub use broker::Broker;
#[cfg(feature = "cluster")]
pub use cluster::Cluster;
pub use config::{ClusterConfig, Config};
pub use error::{Error, RpcError};
