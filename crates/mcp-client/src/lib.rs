//! An async MCP client: connect to a URL, `initialize`, list and call tools, ping, read
//! resources and prompts, send notifications.
//!
//! It speaks the seed proxy's `POST /message` transport: one JSON-RPC message per HTTP POST,
//! answered with HTTP 200 and the JSON-RPC response (202 for a notification). Errors say what
//! went wrong: the connection ([`Error::Transport`]), the HTTP status ([`Error::Status`]), the
//! peer's JSON-RPC error ([`Error::Rpc`]), or an answer that makes no sense
//! ([`Error::InvalidResponse`]).
//!
//! # Layout
//! - [`client`]: [`Client`], the MCP operations.
//! - [`error`]: the [`Error`] type.
//! - `main.rs`: the `mcp-client` CLI (`mcp-client URL tools`, `mcp-client URL call echo '{...}'`).
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
//! # Ok(()) }
//! ```

pub mod client;
pub mod error;

pub use client::{text_of, Client, ClientOptions};
pub use error::Error;
