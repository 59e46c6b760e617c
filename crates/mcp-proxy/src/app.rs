//! The router built from the route table (checks, body limit, rate limits, request spans),
//! joining a cluster, and the server loop with its graceful shutdown.

use std::io;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::Router;
use mcp_protocol::channel::CHANNEL_PATH;
use mcp_protocol::streamable::{
    LAST_EVENT_ID_HEADER, METHOD_HEADER, NAME_HEADER, PROTOCOL_VERSION_HEADER, SESSION_ID_HEADER,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::{debug_span, info, Level};

use crate::audit;
use crate::auth;
use crate::broker::Broker;
use crate::config::ClusterConfig;
use crate::console;
use crate::guard::{self, Guard};
use crate::limits::{self, RateLimiter};
use crate::listener;
use crate::metrics;
use crate::routes::{self, Surface};
pub use crate::state::AppState;
use crate::topology::Topology;
use crate::{Config, Error};

/// Joining a cluster needs the cluster itself, which serves through the routes that take
/// [`AppState`]: it is done here, above both.
impl AppState {
    /// A fresh state that joins `config.cluster` when it names one (connecting to Redis).
    pub async fn connect(config: Config) -> Result<Self, Error> {
        let mut state = AppState::new(config);
        if let Some(cluster) = &state.config().cluster {
            let topology = join(cluster, &state.broker).await?;
            if let Some(audit) = &state.audit {
                audit.set_instance(topology.instance_id());
            }
            state.topology = Some(topology);
        }
        Ok(state)
    }
}

/// Joins the cluster `config` names, whose pools this instance's `broker` serves.
#[cfg(feature = "cluster")]
async fn join(config: &ClusterConfig, broker: &Broker) -> Result<Arc<dyn Topology>, Error> {
    Ok(Arc::new(
        crate::cluster::Cluster::connect(config, broker.clone()).await?,
    ))
}

/// Without the `cluster` feature there is nothing to join.
#[cfg(not(feature = "cluster"))]
async fn join(_: &ClusterConfig, _: &Broker) -> Result<Arc<dyn Topology>, Error> {
    Err(Error::ClusterUnavailable(
        "this mcp-proxy was built without the `cluster` feature".into(),
    ))
}

/// The proxy's routes, from the route table (`routes::ROUTES`). No router-wide timeout:
/// polls are held for tens of seconds.
pub fn router(state: AppState) -> Router {
    let config = state.config();
    let limiter = RateLimiter::new(
        config.server_rate,
        config.client_rate,
        config.auth.clone(),
        state.topology.clone(),
    );
    let mut router = Router::new();
    for surface in [
        Surface::Reverse,
        Surface::Message,
        Surface::Streamable,
        Surface::Operator,
        Surface::Health,
        Surface::Discovery,
        Surface::Console,
        Surface::Login,
    ] {
        if surface == Surface::Console && state.console.is_none() {
            continue;
        }
        router = router.merge(surface_routes(surface, config));
    }
    let mut router = router.layer(DefaultBodyLimit::max(config.max_body_bytes));
    if let Some(topology) = state.topology.clone() {
        // Inside the rate limit: a caller is counted once, by the instance it reached.
        router = router.layer(middleware::from_fn(move |req: Request, next: Next| {
            topology.route(req, next)
        }));
    }
    router = router.layer(middleware::from_fn_with_state(limiter, limits::rate_limit));
    if let Some(oauth) = &config.oauth {
        // Outside the rate limit, which keys an access token's caller on its subject.
        let gate = auth::oauth::Gate {
            oauth: oauth.clone(),
            auth: config.auth.clone(),
        };
        router = router.layer(middleware::from_fn_with_state(
            gate,
            auth::oauth::authenticate,
        ));
    }
    if let Some(audit) = state.audit.clone() {
        // Outside the rate limit and the OAuth check: a 429 or a refused access token is
        // recorded like any refusal.
        router = router.layer(middleware::from_fn_with_state(audit, audit::layer));
    }
    router
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::measure,
        ))
        // The span names the path only: session ids travel in the query string.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    // `request_id` is the proxy's id of the forwarded request, recorded by
                    // the broker in the client's span, the poll's and the answer's: one call
                    // can be followed from client to server and back.
                    // At debug level: a span's fields are formatted when it opens, which at
                    // the default level would cost every call for logs it rarely gets.
                    debug_span!(
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

/// The routes of one surface, behind its checks:
/// - reverse clients: a server token when server auth is on;
/// - `/message`: the Origin and Content-Type check, then a client token for the pool;
/// - `/mcp`: the Host/Origin/Content-Type check, then the client token and, when origins
///   are configured, CORS (outermost, so preflights, which carry no token, are answered
///   before the checks);
/// - operators: a client token for every pool (`*`); the health check: nothing;
/// - the console: its own admin login (checked by its handlers), and security headers.
fn surface_routes(surface: Surface, config: &Config) -> Router<AppState> {
    let mut routes = Router::new();
    // `--no-channels`: no route, so an upgrade gets the 404 of a proxy that predates it.
    let served =
        |r: &&routes::Route| r.surface == surface && (config.channels || r.pattern != CHANNEL_PATH);
    for route in routes::ROUTES.iter().filter(served) {
        routes = routes.route(route.pattern, (route.handlers)());
    }
    let auth = config.auth.clone();
    match surface {
        Surface::Reverse => {
            routes.route_layer(middleware::from_fn_with_state(auth, auth::require_server))
        }
        Surface::Message | Surface::Streamable => {
            let streamable = surface == Surface::Streamable;
            let routes = routes
                .route_layer(middleware::from_fn_with_state(auth, auth::require_client))
                .layer(middleware::from_fn_with_state(
                    Guard::new(config, streamable),
                    guard::check,
                ));
            match cors_layer(&config.cors_origins).filter(|_| streamable) {
                Some(cors) => routes.layer(cors),
                None => routes,
            }
        }
        Surface::Operator => {
            routes.route_layer(middleware::from_fn_with_state(auth, auth::require_operator))
        }
        Surface::Health => routes,
        // The login and consent pages: same-site forms only (CSRF tokens), no CORS.
        Surface::Login => routes.layer(DefaultBodyLimit::max(auth::server::MAX_API_BODY)),
        // Public metadata any web page may read (RFC 9728 clients run in browsers too), and
        // the authorization server's API, which they call: small bodies only.
        Surface::Discovery => routes
            .layer(DefaultBodyLimit::max(auth::server::MAX_API_BODY))
            .layer(
                CorsLayer::new()
                    .allow_origin(AllowOrigin::any())
                    .allow_methods([Method::GET, Method::POST])
                    .allow_headers(AllowHeaders::list([
                        header::AUTHORIZATION,
                        header::CONTENT_TYPE,
                    ])),
            ),
        Surface::Console => routes.layer(middleware::from_fn(console::security_headers)),
    }
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
            .expose_headers([
                HeaderName::from_static(SESSION_ID_HEADER),
                // Browser clients read the OAuth challenge (resource_metadata) from it.
                header::WWW_AUTHENTICATE,
            ]),
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
        state
            .config()
            .auth
            .warn_if_open(addr, state.config().oauth.is_some());
    }
    let reloader = state.config().auth.spawn_reloader(shutdown.child_token());
    // The issuer's keys load in the background: the proxy serves while the issuer is down.
    let warm_up = state
        .config()
        .oauth
        .as_ref()
        .map(|oauth| oauth.spawn_warm_up(shutdown.child_token()));
    let sweeper = state.broker.spawn_sweeper(shutdown.child_token());
    let reopener = state
        .audit
        .as_ref()
        .and_then(|a| a.log())
        .and_then(|log| log.spawn_reopener(shutdown.child_token()));
    let ticker = state
        .console
        .as_ref()
        .map(|c| c.spawn_ticker(state.broker.clone(), shutdown.child_token()));
    let broker = state.broker.clone();
    let topology = state.topology.clone();
    let router = router(state);
    // Relayed requests from other instances run through the same router.
    let membership = topology
        .as_ref()
        .map(|t| t.start(router.clone(), shutdown.child_token()));
    let signal = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            info!("shutting down: failing pending requests, draining connections");
            broker.shutdown();
        }
    };
    let failing = tokio::spawn(signal);
    let limits = listener::ConnectionLimits::of(&state_config);
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
    for task in [reopener, ticker].into_iter().flatten() {
        task.abort();
    }
    if let Some(membership) = membership {
        // It leaves the cluster on cancellation; wait so the instance is gone from Redis
        // before this returns.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), membership).await;
    }
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    if let Some(warm_up) = warm_up {
        warm_up.abort();
    }
    result
}
