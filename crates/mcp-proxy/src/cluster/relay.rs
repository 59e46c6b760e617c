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
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use mcp_protocol::jsonrpc::{ErrorCode, ErrorObject, Message, Response as RpcResponse};
use mcp_protocol::streamable::SESSION_ID_HEADER;
use mcp_protocol::wire::{is_valid_pool_name, PollItem, WireError, WireErrorCode};
use tracing::{info, warn};

use super::frame::FRAME_HEAD_MAX;
use super::{Cluster, Target};
use crate::auth::{Auth, TokenKind};
use crate::limits::TokenRefused;
use crate::{AppState, Error};

/// Marks a request that came through the relay: it is served here, never relayed again,
/// and not rate limited a second time (its first instance did).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Relayed;

/// Which routes are homed, and how their home is found.
#[derive(Debug)]
pub(super) enum Route {
    /// `POST /register`: the pool named in the body (claimed if it has no live home).
    Register,
    /// `/poll`, `/response`, `DELETE /register`: the registration's home.
    Registration,
    /// A client route of this pool.
    Client(String),
    /// An operator's view gathered from every instance (never relayed by the middleware).
    Operator,
}

impl Route {
    fn of(method: &Method, path: &str) -> Option<Route> {
        match (path, method) {
            ("/register", &Method::POST) => Some(Route::Register),
            ("/register", &Method::DELETE) | ("/poll", _) | ("/response", _) => {
                Some(Route::Registration)
            }
            // CORS preflights are answered by any instance alike.
            (_, &Method::OPTIONS) => None,
            ("/message" | "/mcp", _) => Some(Route::Client(String::new())),
            _ => {
                let rest = path.strip_prefix("/servers/")?;
                let (name, tail) = rest.split_once('/')?;
                // Decoded as the router decodes the path (a `+` stays a `+` in a path).
                let name = percent_decode(&name.replace('+', "%2B"))?;
                (matches!(tail, "message" | "mcp") && is_valid_pool_name(&name))
                    .then_some(Route::Client(name))
            }
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
            Route::Register | Route::Registration | Route::Operator => error.into_response(),
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
fn session_id_of(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (percent_decode(k)? == "session_id").then(|| percent_decode(v))?
    })
}

/// `%XX` (and `+` as a space, as in a query) decoded; `None` for bad escapes or non-UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Whether a request's token may change the cluster for a pool: claim it, or take over what
/// a lost instance held in it. Asked only where that would happen, so the hot path does not
/// check the token again (the route checks it anyway).
pub(super) struct Permit<'a> {
    auth: &'a Auth,
    kind: TokenKind,
    headers: &'a HeaderMap,
}

impl Permit<'_> {
    /// Whether the token reaches `pool` (any request does while its kind of token is not
    /// enforced).
    pub(super) fn allows(&self, pool: &str) -> bool {
        match self.auth.check(self.kind, self.headers) {
            Ok(None) => true,
            Ok(Some(grant)) => grant.names.allows(pool),
            Err(_) => false,
        }
    }
}

/// Middleware: serves a request here when this instance is its home, else relays it.
pub(crate) async fn relay(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(cluster) = state.cluster.clone() else {
        return next.run(req).await;
    };
    let Some(route) = Route::of(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    if req.extensions().get::<Relayed>().is_some() {
        // This instance is the home the relaying instance chose.
        return serve_at_home(&state, &cluster, &route, req, next).await;
    }
    // A caller without a valid token changes nothing in the cluster (no pool claimed, nothing
    // taken over): it is answered here, by the route's own 401.
    let refused = match req.extensions().get::<TokenRefused>() {
        // The rate limiter checked the same kind of token for this route already.
        Some(TokenRefused(refused)) => *refused,
        None => state
            .config()
            .auth
            .check(route.token_kind(), req.headers())
            .is_err(),
    };
    if refused {
        return next.run(req).await;
    }
    let limit = state.config().max_body_bytes;
    let (parts, body) = req.into_parts();
    // The whole body is read before anything else: the relay sends it as one frame, and
    // `/register` names its pool in it.
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => return route.too_large(limit),
    };
    let permit = Permit {
        auth: &state.config().auth,
        kind: route.token_kind(),
        headers: &parts.headers,
    };
    let target = match &route {
        // A token bound to other pools claims nothing: served here, the route refuses it.
        Route::Register => match pool_of_registration(&bytes) {
            Some(pool) if permit.allows(&pool) => cluster.pool_home(&pool, true).await,
            _ => Ok(Target::Local),
        },
        Route::Registration => match session_id_of(parts.uri.query()) {
            Some(id) => cluster.registration_home(&id, &permit).await,
            None => Ok(Target::Local),
        },
        Route::Client(pool) => cluster.pool_home(pool, false).await,
        Route::Operator => Ok(Target::Local),
    };
    match target {
        Ok(Target::Local) => {
            let req = Request::from_parts(parts, Body::from(bytes));
            serve_at_home(&state, &cluster, &route, req, next).await
        }
        Ok(Target::Remote(home)) => cluster.forward(home, parts, bytes, &route).await,
        Err(e) => {
            warn!(error = %e, "cluster lookup failed");
            route.fail(e, &bytes)
        }
    }
}

/// Serves a request at its home: first takes over what a lost instance held for it (the
/// registration, or the client session), then keeps the directory in step with what the
/// answer opened or ended.
async fn serve_at_home(
    state: &AppState,
    cluster: &Cluster,
    route: &Route,
    req: Request,
    next: Next,
) -> Response {
    let client_session = req
        .headers()
        .get(SESSION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let permit = Permit {
        auth: &state.config().auth,
        kind: route.token_kind(),
        headers: req.headers(),
    };
    match route {
        Route::Registration => {
            if let Some(id) = session_id_of(req.uri().query()) {
                cluster.adopt_orphan(&state.broker, &id, &permit).await;
            }
        }
        Route::Client(pool) => {
            if let Some(cs) = &client_session {
                cluster
                    .adopt_session(&state.broker, pool, cs, &permit)
                    .await;
            }
        }
        Route::Register | Route::Operator => {}
    }
    let is_delete = req.method() == Method::DELETE;
    let response = next.run(req).await;
    if let Route::Client(pool) = route {
        let opened = response
            .headers()
            .get(SESSION_ID_HEADER)
            .and_then(|v| v.to_str().ok());
        if let Some(opened) = opened.filter(|o| client_session.as_deref() != Some(*o)) {
            if let Some(registration) = state.broker.session_registration(opened) {
                cluster.record_session(opened, pool, &registration).await;
            }
        }
        if let (true, Some(cs), true) = (is_delete, &client_session, response.status().is_success())
        {
            cluster.forget_session(cs).await;
        }
    }
    response
}

/// The request a poll's item hands to its server (`request` items; `reply` and
/// `session_closed` items carry no client waiting on them).
pub(crate) fn carried_request(item: &PollItem) -> Option<&str> {
    match item {
        PollItem::Request(request) => Some(&request.request_id),
        _ => None,
    }
}

/// Set by the poll route (in a cluster) on an answer that hands a request to a server, so a
/// relayed poll's home knows what it carries without parsing the body again.
#[derive(Clone, Debug)]
pub(crate) struct CarriedRequest(pub(crate) String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_homed_by_pool_or_registration() {
        let of = |m: Method, p: &str| format!("{:?}", Route::of(&m, p));
        assert_eq!(of(Method::POST, "/register"), "Some(Register)");
        assert_eq!(of(Method::DELETE, "/register"), "Some(Registration)");
        assert_eq!(of(Method::GET, "/poll"), "Some(Registration)");
        assert_eq!(of(Method::POST, "/response"), "Some(Registration)");
        assert_eq!(of(Method::POST, "/message"), "Some(Client(\"\"))");
        assert_eq!(of(Method::GET, "/mcp"), "Some(Client(\"\"))");
        assert_eq!(of(Method::OPTIONS, "/mcp"), "None");
        assert_eq!(
            of(Method::POST, "/servers/alpha/mcp"),
            "Some(Client(\"alpha\"))"
        );
        assert_eq!(of(Method::POST, "/servers/a b/mcp"), "None");
        assert_eq!(
            of(Method::POST, "/servers/%61lpha/message"),
            "Some(Client(\"alpha\"))"
        );
        assert_eq!(of(Method::POST, "/servers/a%2Fb/mcp"), "None");
        assert_eq!(of(Method::GET, "/servers"), "None");
        assert_eq!(of(Method::GET, "/healthz"), "None");
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
    fn a_request_item_names_the_request_it_carries() {
        let carried_request = |body: &[u8]| {
            serde_json::from_slice::<PollItem>(body)
                .ok()
                .and_then(|item| super::carried_request(&item).map(str::to_owned))
        };
        let item = br#"{"request_id":"r-1","request":{"jsonrpc":"2.0","id":1,"method":"ping"}}"#;
        assert_eq!(carried_request(item), Some("r-1".into()));
        let escaped = br#"{"request":{"jsonrpc":"2.0","method":"x"},"request_id":"r-2"}"#;
        assert_eq!(carried_request(escaped), Some("r-2".into()));
        let reply = br#"{"type":"reply","request_id":"r-3","message":{"jsonrpc":"2.0","id":1,"result":{}}}"#;
        assert_eq!(carried_request(reply), None);
        assert_eq!(carried_request(b"not json"), None);
    }

    #[test]
    fn the_session_id_is_read_from_the_query() {
        assert_eq!(
            session_id_of(Some("timeout=5&session_id=abc")),
            Some("abc".into())
        );
        assert_eq!(session_id_of(Some("timeout=5")), None);
        assert_eq!(
            session_id_of(Some("session%5Fid=%6D-ab&timeout=5")),
            Some("m-ab".into())
        );
        assert_eq!(session_id_of(Some("session_id=%zz")), None);
        assert_eq!(session_id_of(None), None);
    }
}
