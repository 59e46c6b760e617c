//! Integration tests: the proxy over real HTTP on 127.0.0.1:0, with a hand-written server
//! that behaves like the seed's reverse client, a modern fake server, and fake clients.

mod proxy {
    pub(crate) mod common;
    pub(crate) mod fake;
    pub(crate) mod modern;
    pub(crate) mod seed;

    mod audit;
    mod auth;
    mod authflow;
    mod authserver;
    mod authserver_guards;
    mod batch;
    mod browser;
    mod channel;
    mod connections;
    mod console;
    mod fuzz;
    mod limits;
    mod mcp;
    pub(crate) mod oauth;
    mod pools;
    mod quotas;
    mod routing;
    mod seed_compat;
    mod session_owner;
    mod stateless;
    mod talkback;
    pub(crate) mod tls;
    mod trouble;
    mod wire;
}
