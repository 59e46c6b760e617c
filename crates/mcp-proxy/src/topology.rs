//! The seam where other instances serving the same pools plug in. A proxy alone has none; the
//! `cluster` feature's Redis cluster is the implementation (docs/deployment.md).
//!
//! The whole of what several instances change goes through [`Topology`]: one layer decides
//! whether a request is served here or at its home (and adds this instance's part to the
//! operators' views), the rate limits may share their buckets, and the instance serves the
//! requests others relay to it. The routes and the broker know nothing of it.

use std::fmt;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// Other instances serving the same pools.
pub trait Topology: Send + Sync + fmt::Debug + 'static {
    /// Serves `req` here (through `next`) or relays it to the instance that is its home.
    fn route(&self, req: Request, next: Next) -> BoxFuture<'static, Response>;

    /// Takes one request from `bucket`, shared by every instance: `Ok(None)` allowed,
    /// `Ok(Some(wait))` refused for that long, `Err` when the shared buckets are out of reach
    /// (the caller then limits with its own).
    fn take_token(
        &self,
        bucket: String,
        per_second: f64,
        burst: u32,
    ) -> BoxFuture<'static, Result<Option<Duration>, Error>>;

    /// Starts serving other instances' relayed requests through `router`; the task ends once
    /// `shutdown` is cancelled and this instance has left.
    fn start(&self, router: Router, shutdown: CancellationToken) -> tokio::task::JoinHandle<()>;

    /// This instance's id in the cluster (audit lines and the console name it).
    fn instance_id(&self) -> &str;

    /// GETs `path_and_query` from every other live instance, through their routers as a
    /// relayed request, with `headers`; the JSON answers that came back by `deadline`
    /// (the console gathers every instance's view this way).
    fn gather(
        &self,
        path_and_query: String,
        headers: axum::http::HeaderMap,
        deadline: Duration,
    ) -> BoxFuture<'static, Vec<serde_json::Value>>;
}

/// Marks a request relayed here by another instance: it is served here, never relayed again,
/// and not rate limited a second time (the instance it reached first counted it).
#[derive(Clone, Copy, Debug)]
pub struct Relayed;

/// Whether the rate limiter's token check refused the caller (auth on, token missing or
/// wrong for the route's kind), left on the request for the topology, so the token is not
/// hashed and compared twice.
#[derive(Clone, Copy, Debug)]
pub struct TokenRefused(pub bool);

/// Marks a response that another instance made (the request was relayed to its home, which
/// recorded it in its audit log): the instance the caller reached does not record it again.
#[derive(Clone, Copy, Debug)]
pub struct AnsweredElsewhere;
