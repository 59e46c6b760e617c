//! The router and the server loop: routes, body limit, request spans, graceful shutdown.

use std::future::IntoFuture;
use std::io;

use axum::extract::{DefaultBodyLimit, Request};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::{info, info_span, warn, Level};

use crate::broker::Broker;
use crate::routes;
use crate::Config;

/// What every handler shares: the broker (which owns the configuration).
#[derive(Clone, Debug)]
pub struct AppState {
    /// The session broker.
    pub broker: Broker,
}

impl AppState {
    /// A fresh state with an empty in-memory broker.
    pub fn new(config: Config) -> Self {
        AppState {
            broker: Broker::new(config),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        self.broker.config()
    }
}

/// The proxy's routes. No router-wide timeout: polls are held for tens of seconds.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config().max_body_bytes;
    Router::new()
        .route(
            "/register",
            post(routes::register::register).delete(routes::register::deregister),
        )
        .route("/poll", get(routes::poll::poll))
        .route("/response", post(routes::response::response))
        .route("/message", post(routes::message::default_pool))
        .route("/servers/{name}/message", post(routes::message::named_pool))
        .route("/healthz", get(routes::health::healthz))
        .layer(DefaultBodyLimit::max(body_limit))
        // The span names the path only: session ids travel in the query string.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    info_span!("http", method = %req.method(), path = %req.uri().path())
                })
                // 502/503/504 are answers about servers, not proxy failures; the routes log
                // them at the right level themselves.
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .with_state(state)
}

/// Serves the proxy on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> io::Result<()> {
    serve_with_state(listener, AppState::new(config), shutdown).await
}

/// [`serve`] with a state the caller keeps a handle on (tests inspect its broker).
///
/// On cancellation: stop accepting, fail every pending request (its client gets an error at
/// once), end held polls, and give open connections up to `shutdown_drain` to finish.
pub async fn serve_with_state(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let drain = state.config().shutdown_drain;
    let sweeper = state.broker.spawn_sweeper(shutdown.child_token());
    let broker = state.broker.clone();
    let app = router(state);
    let listener = listener.tap_io(|tcp| {
        // Nagle's algorithm meeting delayed ACKs stalls bodies of 8 KiB and more by ~40-90 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            warn!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let signal = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            info!("shutting down: failing pending requests, draining connections");
            broker.shutdown();
        }
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(signal);
    let result = tokio::select! {
        r = server.into_future() => r,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(drain).await } => {
            warn!(?drain, "drain deadline passed; closing remaining connections");
            Ok(())
        }
    };
    sweeper.abort();
    result
}
