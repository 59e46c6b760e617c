//! mcp-reverse's integration tests: the real proxy in-process on 127.0.0.1:0, real reverse
//! clients, real MCP clients, real child processes.

mod channel;
mod command;
mod common;
mod embedded;
mod interop;
mod killed;
mod logs;
mod stdio;
mod tls;
mod upstream;
