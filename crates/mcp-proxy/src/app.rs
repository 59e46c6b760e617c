//! The router and the server loop: routes, body limit, request spans, graceful shutdown.

use std::io;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use mcp_protocol::streamable::{
    LAST_EVENT_ID_HEADER, METHOD_HEADER, NAME_HEADER, PROTOCOL_VERSION_HEADER, SESSION_ID_HEADER,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::{info, info_span, Level};

use crate::auth::{self, Auth};
use crate::broker::Broker;
use crate::cluster::{self, Cluster};
use crate::guard::{self, Guard};
use crate::limits::{self, RateLimiter};
use crate::listener;
use crate::metrics::{self, Metrics};
use crate::routes;
use crate::{Config, Error};

/// What every handler shares: the broker (which owns the configuration), the metrics, and
/// the cluster when several instances share a Redis.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The session broker.
    pub broker: Broker,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// This instance's membership in a cluster; `None` runs alone.
    pub cluster: Option<Cluster>,
}

impl AppState {
    /// A fresh state with an empty in-memory broker, alone (`config.cluster` is not joined:
    /// see [`AppState::connect`]).
    pub fn new(config: Config) -> Self {
        AppState {
            broker: Broker::new(config),
            metrics: Arc::new(Metrics::new()),
            cluster: None,
        }
    }

    /// A fresh state that joins `config.cluster` when it names one (connecting to Redis).
    pub async fn connect(config: Config) -> Result<Self, Error> {
        let cluster = match &config.cluster {
            Some(c) => Some(Cluster::connect(c).await?),
            None => None,
        };
        Ok(AppState {
            cluster,
            ..AppState::new(config)
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        self.broker.config()
    }
}

/// The proxy's routes. No router-wide timeout: polls are held for tens of seconds.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config().max_body_bytes;
    let limiter = RateLimiter::new(
        state.config().server_rate,
        state.config().client_rate,
        state.config().auth.clone(),
        state.cluster.clone(),
    );
    Router::new()
        .merge(mcp_routes(state.config()))
        .merge(reverse_client_routes(&state.config().auth))
        .merge(message_routes(state.config()))
        .route("/healthz", get(routes::health::healthz))
        .merge(
            // Pool names and load are for operators: a client token for every pool (`*`).
            Router::new()
                .route("/servers", get(routes::servers::servers))
                .route("/metrics", get(metrics::serve))
                .route_layer(middleware::from_fn_with_state(
                    state.config().auth.clone(),
                    auth::require_operator,
                )),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        // Inside the rate limit: a caller is counted once, by the instance it reached.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            cluster::relay,
        ))
        .layer(middleware::from_fn_with_state(limiter, limits::rate_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::measure,
        ))
        // The span names the path only: session ids travel in the query string.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    // `request_id` is the proxy's id of the forwarded request, recorded by
                    // the broker in the client's span, the poll's and the answer's: one call
                    // can be followed from client to server and back.
                    info_span!(
                        "http",
                        method = %req.method(),
                        path = %req.uri().path(),
                        request_id = tracing::field::Empty,
                    )
                })
                // 502/503/504 are answers about servers, not proxy failures; the routes log
                // them at the right level themselves.
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .with_state(state)
}

/// `/register`, `/poll`, `/response`: a server token when server auth is on.
fn reverse_client_routes(auth: &Auth) -> Router<AppState> {
    Router::new()
        .route(
            "/register",
            post(routes::register::register).delete(routes::register::deregister),
        )
        .route("/poll", get(routes::poll::poll))
        .route("/response", post(routes::response::response))
        .route_layer(middleware::from_fn_with_state(
            auth.clone(),
            auth::require_server,
        ))
}

/// `/message` and `/servers/{name}/message`: behind the Origin and Content-Type check, then
/// a client token for the pool when client auth is on.
fn message_routes(config: &Config) -> Router<AppState> {
    Router::new()
        .route("/message", post(routes::message::default_pool))
        .route("/servers/{name}/message", post(routes::message::named_pool))
        .route_layer(middleware::from_fn_with_state(
            config.auth.clone(),
            auth::require_client,
        ))
        .layer(middleware::from_fn_with_state(
            Guard::new(config, false),
            guard::check,
        ))
}

/// `/mcp` and `/servers/{name}/mcp`, behind the Host/Origin/Content-Type check, then the client token
/// check and, when origins are configured, CORS (outermost, so preflights, which carry no
/// token, are answered before the checks).
fn mcp_routes(config: &Config) -> Router<AppState> {
    let guard = Guard::new(config, true);
    let mut routes = Router::new()
        .route(
            "/mcp",
            post(routes::mcp::post_default)
                .get(routes::mcp::get_default)
                .delete(routes::mcp::delete_default),
        )
        .route(
            "/servers/{name}/mcp",
            post(routes::mcp::post_named)
                .get(routes::mcp::get_named)
                .delete(routes::mcp::delete_named),
        )
        .route_layer(middleware::from_fn_with_state(
            config.auth.clone(),
            auth::require_client,
        ))
        .layer(middleware::from_fn_with_state(guard, guard::check));
    if let Some(cors) = cors_layer(&config.cors_origins) {
        routes = routes.layer(cors);
    }
    routes
}

/// CORS for browser clients, or `None` when no origins are configured.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
        )
    };
    let names = [
        SESSION_ID_HEADER,
        PROTOCOL_VERSION_HEADER,
        LAST_EVENT_ID_HEADER,
        METHOD_HEADER,
        NAME_HEADER,
    ]
    .map(HeaderName::from_static);
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers(AllowHeaders::list(
                [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT]
                    .into_iter()
                    .chain(names),
            ))
            .expose_headers([HeaderName::from_static(SESSION_ID_HEADER)]),
    )
}

/// Serves the proxy on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let state = AppState::connect(config)
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
    serve_with_state(listener, state, shutdown).await
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
    let tls = state.config().tls.clone();
    let state_config = state.config().clone();
    let stats = state.metrics.connections.clone();
    if let Ok(addr) = listener.local_addr() {
        state.config().auth.warn_if_open(addr);
    }
    let reloader = state.config().auth.spawn_reloader(shutdown.child_token());
    let sweeper = state.broker.spawn_sweeper(shutdown.child_token());
    let broker = state.broker.clone();
    let cluster = state.cluster.clone();
    let router = router(state);
    // Relayed requests from other instances run through the same router.
    let membership = cluster
        .as_ref()
        .map(|c| c.start(router.clone(), broker.clone(), shutdown.child_token()));
    let signal = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            info!("shutting down: failing pending requests, draining connections");
            broker.shutdown();
        }
    };
    let failing = tokio::spawn(signal);
    let limits = state_config.connection_limits();
    let result = listener::serve(
        listener,
        tls,
        router,
        limits,
        stats,
        shutdown.clone(),
        drain,
    )
    .await;
    failing.abort();
    sweeper.abort();
    if let Some(membership) = membership {
        // It leaves the cluster on cancellation; wait so the instance is gone from Redis
        // before this returns.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), membership).await;
    }
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    result
}
