//! The relay middleware: a request for a pool or registration homed on another instance
//! travels whole to its home over Redis pub/sub (`outbound`), runs through the home's own
//! router (`inbound`), and its answer streams back frame by frame (an SSE stream included)
//! until it ends, its caller leaves, or either instance dies. A request served here first
//! takes over what a lost instance held for it.
//!
//! Nothing in the cluster changes for a caller whose token does not reach the pool at stake:
//! no pool is claimed and nothing is taken over for it ([`Permit`]); the route's own 401
//! answers it.

use axum::body::Body;
use axum::extract::{Query, RawPathParams, Request};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use axum::RequestExt;
use mcp_protocol::channel::{CHANNEL_PATH, SESSION_HEADER as CHANNEL_SESSION_HEADER};
use mcp_protocol::jsonrpc::{ErrorCode, ErrorObject, Message, Response as RpcResponse};
use mcp_protocol::streamable::SESSION_ID_HEADER;
use mcp_protocol::wire::{
    is_valid_pool_name, RegisterResponse, WireError, WireErrorCode, REGISTER_PATH,
};
use tracing::{info, warn};

use super::frame::FRAME_HEAD_MAX;
use super::{Cluster, Target};
use crate::auth::oauth::Verdict;
use crate::auth::{Auth, TokenKind};
use crate::broker::Broker;
use crate::routes::{self, SessionQuery, Surface};
use crate::topology::{Relayed, TokenRefused};
use crate::Error;

/// Which routes are homed, and how their home is found.
#[derive(Debug)]
pub(super) enum Route {
    /// `POST /register`: the pool named in the body (claimed if it has no live home).
    Register,
    /// `/poll`, `/response`, `DELETE /register`: the registration's home.
    Registration,
    /// A client route of this pool.
    Client(String),
    /// An operator's view (`/servers`, `/metrics`, `/healthz`): served here, with what the
    /// cluster adds to it (`views`).
    View,
}

impl Route {
    /// How the request's route (from the route table) is homed; `None` for requests every
    /// instance answers alike.
    async fn of(req: &mut Request) -> Option<Route> {
        let route = routes::route_of(req)?;
        match route.surface {
            Surface::Reverse if route.pattern == REGISTER_PATH && req.method() == Method::POST => {
                Some(Route::Register)
            }
            Surface::Reverse => Some(Route::Registration),
            // CORS preflights are answered by any instance alike.
            Surface::Message | Surface::Streamable if req.method() == Method::OPTIONS => None,
            Surface::Message | Surface::Streamable => {
                // Decoded as the route decodes it: `%61lpha` is homed like `alpha`.
                let params = req.extract_parts::<RawPathParams>().await.ok()?;
                match params.iter().find(|(key, _)| *key == "name") {
                    None => Some(Route::Client(String::new())),
                    Some((_, name)) => {
                        is_valid_pool_name(name).then(|| Route::Client(name.to_owned()))
                    }
                }
            }
            Surface::Operator | Surface::Health => Some(Route::View),
            // Every instance answers the public metadata alike, and the authorization
            // server's routes (its state is in Redis).
            Surface::Discovery | Surface::Login => None,
            // The console gathers the other instances' views itself (its stream is long).
            Surface::Console => None,
        }
    }

    /// The kind of token this route takes.
    fn token_kind(&self) -> TokenKind {
        match self {
            Route::Client(_) => TokenKind::Client,
            _ => TokenKind::Server,
        }
    }

    /// `error` as this route answers it: JSON-RPC with the client's id, or a wire error.
    pub(super) fn fail(&self, error: Error, body: &[u8]) -> Response {
        match self {
            Route::Client(_) => {
                let id = Message::parse(body).ok().and_then(|m| m.id().cloned());
                error.with_id(id).into_response()
            }
            Route::Register | Route::Registration | Route::View => error.into_response(),
        }
    }

    /// A refusal no [`Error`] words: JSON-RPC with the client's id (`code`) on client
    /// routes, a wire error (`wire`) on the others.
    fn refuse(
        &self,
        status: StatusCode,
        code: ErrorCode,
        wire: WireErrorCode,
        message: String,
        body: &[u8],
    ) -> Response {
        match self {
            Route::Client(_) => {
                let id = Message::parse(body).ok().and_then(|m| m.id().cloned());
                let error = ErrorObject::new(code, message);
                (status, Json(RpcResponse::error(id, error))).into_response()
            }
            _ => (status, Json(WireError::new(wire, message))).into_response(),
        }
    }

    /// 431: a request whose head (`head_len` bytes: method, URI, headers) does not fit a
    /// relay frame's; it reached an instance that is not its pool's home.
    pub(super) fn headers_too_large(&self, head_len: usize, body: &[u8]) -> Response {
        info!(head_len, "refused: request headers too large to relay");
        self.refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::INVALID_REQUEST,
            WireErrorCode::PayloadTooLarge,
            format!(
                "request headers too large to relay to the proxy instance serving this \
                 server ({head_len} bytes; at most {FRAME_HEAD_MAX})"
            ),
            body,
        )
    }

    /// 502: the answer (or the request, at the home) was larger than a relay frame takes,
    /// which happens only when instances run with different `--max-body-bytes`.
    pub(super) fn answer_too_large(&self, body: &[u8]) -> Response {
        self.refuse(
            StatusCode::BAD_GATEWAY,
            ErrorCode::INTERNAL_ERROR,
            WireErrorCode::PayloadTooLarge,
            "the request or its answer is larger than the proxy instances relay between \
             them; every instance must run with the same --max-body-bytes"
                .to_owned(),
            body,
        )
    }

    fn too_large(&self, limit: usize) -> Response {
        match self {
            Route::Client(_) => Error::MessageTooLarge { limit }
                .with_id(None)
                .into_response(),
            _ => Error::BodyTooLarge { limit }.into_response(),
        }
    }
}

/// The pool a `/register` body names (`""`: default). A body that does not parse, or names
/// an invalid pool, is served here, where it gets the single instance's error (and no Redis
/// key is ever made of it).
fn pool_of_registration(body: &[u8]) -> Option<String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(String::new());
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    match value.get("name") {
        None | Some(serde_json::Value::Null) => Some(String::new()),
        Some(serde_json::Value::String(name)) if is_valid_pool_name(name) => Some(name.clone()),
        Some(_) => None,
    }
}

/// The `session_id` of a query, decoded as the routes decode it (so `%6D-…` is homed like
/// `m-…`).
fn session_id_of(uri: &axum::http::Uri) -> Option<String> {
    Query::<SessionQuery>::try_from_uri(uri).ok()?.0.session_id
}

/// Whether a request's token may change the cluster for a pool: claim it, or take over what
/// a lost instance held in it. Asked only where that would happen, so the hot path does not
/// check the token again (the route checks it anyway).
pub(super) struct Permit<'a> {
    auth: &'a Auth,
    kind: TokenKind,
    headers: &'a HeaderMap,
    /// What the OAuth layer decided, when it checked an access token.
    oauth: Option<&'a Verdict>,
}

impl Permit<'_> {
    /// Whether the token reaches `pool` (any request does while its kind of token is not
    /// enforced).
    pub(super) fn allows(&self, pool: &str) -> bool {
        // An access token is checked for its pool's audience: accepted means this pool.
        match self.oauth {
            Some(Verdict::Accepted(_)) => return true,
            Some(Verdict::Refused(_)) => return false,
            None => {}
        }
        match self.auth.check(self.kind, self.headers) {
            Ok(None) => true,
            Ok(Some(grant)) => grant.names.allows(pool),
            Err(_) => false,
        }
    }
}

impl Cluster {
    /// The layer's work: serves a request here when this instance is its home, else relays
    /// it; adds this instance's part to an operator's view.
    pub(super) async fn route_request(self, mut req: Request, next: Next) -> Response {
        let Some(route) = Route::of(&mut req).await else {
            return next.run(req).await;
        };
        if let Route::View = route {
            return self.view(req, next).await;
        }
        let broker = self.inner.broker.clone();
        let config = broker.config();
        // Read once, for finding the home and then for what the home does.
        let registration = match route {
            // The channel names its registration in a header, the other routes in the query.
            Route::Registration => session_id_of(req.uri()).or_else(|| {
                req.headers()
                    .get(CHANNEL_SESSION_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            }),
            _ => None,
        };
        if req.extensions().get::<Relayed>().is_some() {
            // This instance is the home the relaying instance chose.
            return self
                .serve_at_home(&broker, &route, registration, req, next)
                .await;
        }
        // A caller without a valid token changes nothing in the cluster (no pool claimed,
        // nothing taken over): it is answered here, by the route's own 401.
        let refused = match req.extensions().get::<TokenRefused>() {
            // The rate limiter checked the same kind of token for this route already.
            Some(TokenRefused(refused)) => *refused,
            None => config
                .auth
                .check(route.token_kind(), req.headers())
                .is_err(),
        };
        if refused {
            return next.run(req).await;
        }
        let limit = config.max_body_bytes;
        let (parts, body) = req.into_parts();
        // The whole body is read before anything else: the relay sends it as one frame, and
        // `/register` names its pool in it.
        let bytes = match axum::body::to_bytes(body, limit).await {
            Ok(bytes) => bytes,
            Err(_) => return route.too_large(limit),
        };
        let permit = Permit {
            auth: &config.auth,
            kind: route.token_kind(),
            headers: &parts.headers,
            oauth: parts.extensions.get::<Verdict>(),
        };
        let target = match &route {
            // A token bound to other pools claims nothing: served here, the route refuses it.
            Route::Register => match pool_of_registration(&bytes) {
                Some(pool) if permit.allows(&pool) => self.pool_home(&pool, true).await,
                _ => Ok(Target::Local),
            },
            Route::Registration => match &registration {
                Some(id) => self.registration_home(id, &permit).await,
                None => Ok(Target::Local),
            },
            Route::Client(pool) => self.pool_home(pool, false).await,
            Route::View => Ok(Target::Local),
        };
        match target {
            Ok(Target::Local) => {
                let req = Request::from_parts(parts, Body::from(bytes));
                self.serve_at_home(&broker, &route, registration, req, next)
                    .await
            }
            // A WebSocket cannot travel over the relay: the reverse client keeps polling (the
            // polls are relayed) and retries until its channel reaches the home.
            Ok(Target::Remote(_)) if parts.uri.path() == CHANNEL_PATH => {
                Error::Misdirected.into_response()
            }
            Ok(Target::Remote(home)) => self.forward(home, parts, bytes, &route).await,
            Err(e) => {
                warn!(error = %e, "cluster lookup failed");
                route.fail(e, &bytes)
            }
        }
    }

    /// Serves a request at its home: first takes over what a lost instance held for it (the
    /// `registration` its query names, or the client session), then keeps the directory in
    /// step with what the answer opened or ended.
    async fn serve_at_home(
        &self,
        broker: &Broker,
        route: &Route,
        registration: Option<String>,
        req: Request,
        next: Next,
    ) -> Response {
        let client_session = req
            .headers()
            .get(SESSION_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let permit = Permit {
            auth: &broker.config().auth,
            kind: route.token_kind(),
            headers: req.headers(),
            oauth: req.extensions().get::<Verdict>(),
        };
        match route {
            Route::Registration => {
                if let Some(id) = &registration {
                    self.adopt_orphan(broker, id, &permit).await;
                }
            }
            Route::Client(pool) => {
                if let Some(cs) = &client_session {
                    self.adopt_session(broker, pool, cs, &permit).await;
                }
            }
            Route::Register | Route::View => {}
        }
        let method = req.method().clone();
        let response = next.run(req).await;
        match route {
            Route::Register => self.record_new_registration(broker, response).await,
            Route::Registration if method == Method::DELETE => {
                if let (Some(id), true) = (&registration, response.status().is_success()) {
                    self.forget_registration(id).await;
                }
                response
            }
            Route::Client(_) => {
                let opened = response
                    .headers()
                    .get(SESSION_ID_HEADER)
                    .and_then(|v| v.to_str().ok());
                if let Some(opened) = opened.filter(|o| client_session.as_deref() != Some(*o)) {
                    if let Some(record) = broker.session_record(opened) {
                        self.record_session(&record).await;
                    }
                }
                if let (true, Some(cs), true) = (
                    method == Method::DELETE,
                    &client_session,
                    response.status().is_success(),
                ) {
                    self.forget_session(cs).await;
                }
                response
            }
            Route::Registration | Route::View => response,
        }
    }

    /// Names this instance the home of the registration `response` hands out, before the
    /// id leaves, so the server's first poll finds it from any instance. When Redis cannot
    /// be written, the registration is undone and the caller gets the error instead.
    async fn record_new_registration(&self, broker: &Broker, response: Response) -> Response {
        if response.status() != StatusCode::OK {
            return response;
        }
        let (parts, body) = response.into_parts();
        // A registration's answer is a few hundred bytes of our own JSON.
        let bytes = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => bytes,
            Err(e) => return Error::ClusterUnavailable(e.to_string()).into_response(),
        };
        let record = serde_json::from_slice::<RegisterResponse>(&bytes)
            .ok()
            .and_then(|answer| broker.registration_record(&answer.session_id));
        if let Some(record) = record {
            if let Err(e) = self.record_registration(&record).await {
                let _ = broker.deregister(&record.session_id);
                return e.into_response();
            }
        }
        Response::from_parts(parts, Body::from(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How a request to `path` is homed, found through a router of the route table (the
    /// route is known only once the router matched it).
    async fn homed(method: Method, path: &str) -> String {
        use axum::routing::any;
        use tower::ServiceExt;
        let mut router = axum::Router::new();
        for route in routes::ROUTES {
            router = router.route(route.pattern, any(|| async { "unreached" }));
        }
        let router = router.layer(axum::middleware::from_fn(
            |mut req: Request, _: Next| async move {
                format!("{:?}", Route::of(&mut req).await).into_response()
            },
        ));
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let response = router.oneshot(req).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1024).await;
        String::from_utf8(body.unwrap().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn routes_are_homed_by_pool_or_registration() {
        assert_eq!(homed(Method::POST, "/register").await, "Some(Register)");
        assert_eq!(
            homed(Method::DELETE, "/register").await,
            "Some(Registration)"
        );
        assert_eq!(homed(Method::GET, "/poll").await, "Some(Registration)");
        assert_eq!(homed(Method::POST, "/response").await, "Some(Registration)");
        assert_eq!(homed(Method::POST, "/message").await, "Some(Client(\"\"))");
        assert_eq!(homed(Method::GET, "/mcp").await, "Some(Client(\"\"))");
        assert_eq!(homed(Method::OPTIONS, "/mcp").await, "None");
        assert_eq!(
            homed(Method::POST, "/servers/alpha/mcp").await,
            "Some(Client(\"alpha\"))"
        );
        assert_eq!(homed(Method::POST, "/servers/a%20b/mcp").await, "None");
        assert_eq!(
            homed(Method::POST, "/servers/%61lpha/message").await,
            "Some(Client(\"alpha\"))"
        );
        assert_eq!(homed(Method::POST, "/servers/a%2Fb/mcp").await, "None");
        assert_eq!(homed(Method::GET, "/servers").await, "Some(View)");
        assert_eq!(homed(Method::GET, "/metrics").await, "Some(View)");
        assert_eq!(homed(Method::GET, "/healthz").await, "Some(View)");
        // No route: the router's 404, from any instance.
        assert_eq!(homed(Method::GET, "/nowhere").await, "None");
    }

    #[test]
    fn a_registration_body_names_its_pool() {
        assert_eq!(pool_of_registration(b""), Some(String::new()));
        assert_eq!(
            pool_of_registration(br#"{"type":"mcp-server"}"#),
            Some(String::new())
        );
        assert_eq!(
            pool_of_registration(br#"{"type":"mcp-server","name":"alpha"}"#),
            Some("alpha".into())
        );
        assert_eq!(pool_of_registration(br#"{"name":7}"#), None);
        assert_eq!(
            pool_of_registration(br#"{"name":"no spaces or slashes/"}"#),
            None
        );
        let long = format!(r#"{{"name":"{}"}}"#, "a".repeat(65));
        assert_eq!(pool_of_registration(long.as_bytes()), None);
        assert_eq!(pool_of_registration(b"not json"), None);
    }

    #[test]
    fn the_session_id_is_read_from_the_query() {
        let of = |uri: &str| session_id_of(&uri.parse().unwrap());
        assert_eq!(of("/poll?timeout=5&session_id=abc"), Some("abc".into()));
        assert_eq!(of("/poll?timeout=5"), None);
        assert_eq!(of("/poll"), None);
        assert_eq!(
            of("/poll?session%5Fid=%6D-ab&timeout=5"),
            Some("m-ab".into())
        );
        // As in a form: `+` is a space; a bad escape is kept as it came (the route then
        // answers for an unknown id, here as everywhere).
        assert_eq!(of("/poll?session_id=a+b"), Some("a b".into()));
        assert_eq!(of("/poll?session_id=%zz"), Some("%zz".into()));
    }
}
