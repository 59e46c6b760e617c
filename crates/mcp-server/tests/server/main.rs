//! Integration tests of `mcp-server`, driven through `Server::handle` with in-memory transports.

mod common;
mod concurrency;
mod features;
#[cfg(feature = "http")]
mod http;
mod lifecycle;
mod notify;
mod sessions;
mod stateless;
mod talkback;
mod tools;
#[cfg(feature = "schemars")]
mod typed;
