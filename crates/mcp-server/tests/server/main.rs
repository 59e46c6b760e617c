//! Integration tests of `mcp-server`, driven through `Server::handle` with in-memory transports.

mod common;
mod concurrency;
mod features;
mod lifecycle;
mod notify;
mod sessions;
mod stateless;
mod talkback;
mod tools;
