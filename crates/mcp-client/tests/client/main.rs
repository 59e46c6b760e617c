//! The client against scripted HTTP peers on 127.0.0.1:0 (how each rule of each transport
//! shows, and how each kind of failure surfaces), and against the real Streamable HTTP
//! servers of this workspace. (The client through the real proxy and a real reverse server is
//! also tested in the workspace's `tests` crate and by `cargo xtask e2e`.)

mod direct;
mod message;
mod streamable;
