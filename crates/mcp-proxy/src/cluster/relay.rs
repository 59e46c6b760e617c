//! The relay: a request that arrived at the wrong instance travels whole to its home over
//! Redis pub/sub, runs through the home's own router, and its answer streams back frame by
//! frame (an SSE stream included) until it ends, its caller leaves, or either instance dies.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use mcp_protocol::jsonrpc::Message;
use mcp_protocol::streamable::SESSION_ID_HEADER;
use mcp_protocol::wire::{is_valid_pool_name, PollItem};
use tower::ServiceExt;
use tracing::{debug, warn};

use super::frame::{self, Head};
use super::{lock, Cluster, Target};
use crate::auth::TokenKind;
use crate::limits::TokenRefused;
use crate::{AppState, Error};

/// Marks a request that came through the relay: it is served here, never relayed again,
/// and not rate limited a second time (its first instance did).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Relayed;

/// A relayed request this instance waits on.
pub(crate) struct Outbound {
    /// The instance serving it.
    pub(crate) home: String,
    /// Where the subscriber puts its answer's events.
    pub(crate) tx: tokio::sync::mpsc::UnboundedSender<Event>,
}

/// A piece of a relayed answer.
pub(crate) enum Event {
    Head(StatusCode, HeaderMap),
    Data(Bytes),
    End,
    Fail(String),
}

/// Which routes are homed, and how their home is found.
#[derive(Debug)]
enum Route {
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

    /// `error` as this route answers it: JSON-RPC with the client's id, or a wire error.
    fn fail(&self, error: Error, body: &[u8]) -> Response {
        match self {
            Route::Client(_) => {
                let id = Message::parse(body).ok().and_then(|m| m.id().cloned());
                error.with_id(id).into_response()
            }
            Route::Register | Route::Registration | Route::Operator => error.into_response(),
        }
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
        None => {
            let kind = match route {
                Route::Client(_) => TokenKind::Client,
                _ => TokenKind::Server,
            };
            state.config().auth.check(kind, req.headers()).is_err()
        }
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
    let target = match &route {
        Route::Register => match pool_of_registration(&bytes) {
            Some(pool) => cluster.pool_home(&pool, true).await,
            None => Ok(Target::Local),
        },
        Route::Registration => match session_id_of(parts.uri.query()) {
            Some(id) => cluster.registration_home(&id).await,
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
    match route {
        Route::Registration => {
            if let Some(id) = session_id_of(req.uri().query()) {
                cluster.adopt_orphan(&state.broker, &id).await;
            }
        }
        Route::Client(pool) => {
            if let Some(cs) = &client_session {
                cluster.adopt_session(&state.broker, pool, cs).await;
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

/// Removes an outbound relay when its answer is dropped, and tells the home to stop when
/// the answer did not end (the client left).
struct RelayGuard {
    cluster: Cluster,
    id: u64,
    home: String,
    done: bool,
}

impl RelayGuard {
    /// The answer ended (or failed for good): nothing to cancel at the home.
    fn finish(&mut self) {
        self.done = true;
    }
}

impl Drop for RelayGuard {
    fn drop(&mut self) {
        self.cluster.close_outbound(self.id);
        if !self.done {
            let cluster = self.cluster.clone();
            let frame = frame::encode(
                &Head::Cancel {
                    id: self.id,
                    from: cluster.inner.id.clone(),
                },
                b"",
            );
            let home = std::mem::take(&mut self.home);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = cluster.publish(&home, frame).await;
                });
            }
        }
    }
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

/// Headers that describe one hop's connection, not the message.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "transfer-encoding" | "upgrade" | "te" | "trailer"
    )
}

fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| !hop_by_hop(k.as_str()))
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn header_map(pairs: Vec<(String, String)>) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            map.append(k, v);
        }
    }
    map
}

impl Cluster {
    /// `GET path` answered by every other live instance, as JSON, within `deadline` (an
    /// instance that does not answer in time is left out). For operator views of the whole
    /// cluster (`/servers`).
    pub(crate) async fn gather(
        &self,
        path: &str,
        headers: &HeaderMap,
        deadline: std::time::Duration,
    ) -> Vec<serde_json::Value> {
        let others: Vec<String> = self
            .instances()
            .into_iter()
            .filter(|i| *i != self.inner.id)
            .collect();
        let asks = others.into_iter().map(|instance| {
            let mut req = Request::builder().method(Method::GET).uri(path);
            if let Some(map) = req.headers_mut() {
                *map = headers.clone();
            }
            let (parts, _) = req.body(()).expect("a GET of a fixed path").into_parts();
            async move {
                let ask = async {
                    let response = self
                        .forward(instance, parts, Bytes::new(), &Route::Operator)
                        .await;
                    if !response.status().is_success() {
                        return None;
                    }
                    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                        .await
                        .ok()?;
                    serde_json::from_slice(&body).ok()
                };
                tokio::time::timeout(deadline, ask).await.ok().flatten()
            }
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Relays a request to `home` and answers with what it answers.
    async fn forward(
        &self,
        home: String,
        parts: axum::http::request::Parts,
        body: Bytes,
        route: &Route,
    ) -> Response {
        if !self
            .inner
            .subscribed
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            // Answers published to this instance now would reach nobody.
            return route.fail(
                Error::ClusterUnavailable("no cluster subscription".into()),
                &body,
            );
        }
        let (head_deadline, idle_deadline) = self.deadlines();
        let (id, mut rx) = self.open_outbound(&home);
        let mut guard = RelayGuard {
            cluster: self.clone(),
            id,
            home: home.clone(),
            done: false,
        };
        let head = Head::Req {
            id,
            from: self.inner.id.clone(),
            method: parts.method.as_str().to_owned(),
            uri: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
            headers: {
                let mut headers = header_pairs(&parts.headers);
                // HTTP/2 carries the host in the URI, not a header: the home checks `Host`.
                if let (None, Some(authority)) = (
                    parts.headers.get(axum::http::header::HOST),
                    parts.uri.authority(),
                ) {
                    headers.push(("host".to_owned(), authority.to_string()));
                }
                headers
            },
        };
        if let Err(e) = self.publish(&home, frame::encode(&head, &body)).await {
            guard.finish();
            self.inner
                .relays_failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return route.fail(e, &body);
        }
        debug!(relay = id, home = %home, path = %parts.uri.path(), "relayed");
        // Deadlines: a home that stays alive but whose frames were lost (a Redis hiccup)
        // must not leave the caller waiting forever. The head comes at the latest when the
        // longest poll hold or the request timeout ends; a stream sends keep-alive comments.
        let first = match tokio::time::timeout(head_deadline, rx.recv()).await {
            Ok(event) => event,
            Err(_) => {
                warn!(relay = id, home = %home, "relayed request got no answer in time");
                return route.fail(Error::InstanceLost, &body);
            }
        };
        match first {
            Some(Event::Head(status, headers)) => {
                let events =
                    futures::stream::unfold((rx, guard), move |(mut rx, mut guard)| async move {
                        let event = match tokio::time::timeout(idle_deadline, rx.recv()).await {
                            Ok(event) => event,
                            Err(_) => Some(Event::Fail("relayed stream went silent".into())),
                        };
                        match event {
                            Some(Event::Data(bytes)) => Some((Ok(bytes), (rx, guard))),
                            Some(Event::Fail(why)) => {
                                guard.finish();
                                Some((Err(std::io::Error::other(why)), (rx, guard)))
                            }
                            Some(Event::End) | Some(Event::Head(..)) | None => {
                                guard.finish();
                                None
                            }
                        }
                    });
                let mut response = Response::new(Body::from_stream(events));
                *response.status_mut() = status;
                *response.headers_mut() = headers;
                response
            }
            Some(Event::Fail(why)) => {
                guard.finish();
                warn!(relay = id, home = %home, %why, "relayed request failed");
                route.fail(Error::InstanceLost, &body)
            }
            Some(Event::Data(_)) | Some(Event::End) | None => {
                guard.finish();
                route.fail(Error::InstanceLost, &body)
            }
        }
    }

    /// Takes one frame from this instance's channel.
    pub(super) fn on_frame(&self, bytes: &[u8]) {
        let Some((head, payload)) = frame::decode(bytes) else {
            warn!(
                len = bytes.len(),
                "unreadable frame on the cluster channel dropped"
            );
            return;
        };
        match head {
            Head::Req {
                id,
                from,
                method,
                uri,
                headers,
            } => {
                self.inner
                    .relayed_in
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let body = Bytes::copy_from_slice(payload);
                let cluster = self.clone();
                let key = (from.clone(), id);
                // The lock is held across the spawn so the task cannot finish (and remove
                // itself) before it is recorded.
                let mut inbound = lock(&self.inner.inbound);
                let task = tokio::spawn(async move {
                    cluster.serve(&from, id, method, uri, headers, body).await;
                    lock(&cluster.inner.inbound).remove(&(from, id));
                });
                inbound.insert(key, task.abort_handle());
            }
            Head::Cancel { id, from } => {
                let task = lock(&self.inner.inbound).remove(&(from, id));
                if let Some(task) = task {
                    debug!(relay = id, "relayed request cancelled by its caller");
                    task.abort();
                }
            }
            Head::Res {
                id,
                status,
                headers,
                whole,
                from,
            } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                if !self.deliver(id, Event::Head(status, header_map(headers)), false) && !whole {
                    self.cancel_unknown(id, from);
                    return;
                }
                if whole {
                    if !payload.is_empty() {
                        self.deliver(id, Event::Data(Bytes::copy_from_slice(payload)), false);
                    }
                    self.deliver(id, Event::End, true);
                }
            }
            Head::Data { id, from } => {
                if !self.deliver(id, Event::Data(Bytes::copy_from_slice(payload)), false) {
                    self.cancel_unknown(id, from);
                }
            }
            Head::End { id } => {
                self.deliver(id, Event::End, true);
            }
            Head::Fail { id, reason } => {
                self.deliver(id, Event::Fail(reason), true);
            }
        }
    }

    /// Hands `event` to relay `id`; `false` when no such relay waits here (any more).
    fn deliver(&self, id: u64, event: Event, last: bool) -> bool {
        let mut outbound = lock(&self.inner.outbound);
        let known = match outbound.get(&id) {
            // A closed receiver: the caller left; its guard removes the entry.
            Some(relay) => {
                let _ = relay.tx.send(event);
                true
            }
            None => false,
        };
        if last {
            outbound.remove(&id);
        }
        known
    }

    /// A stream keeps coming for a relay this instance no longer has (its cancel was lost):
    /// tell the instance serving it to stop.
    fn cancel_unknown(&self, id: u64, home: String) {
        if home.is_empty() {
            return;
        }
        let cluster = self.clone();
        let frame = frame::encode(
            &Head::Cancel {
                id,
                from: self.inner.id.clone(),
            },
            b"",
        );
        tokio::spawn(async move {
            let _ = cluster.publish(&home, frame).await;
        });
    }

    /// Serves a relayed request through this instance's router and streams the answer back.
    async fn serve(
        &self,
        from: &str,
        id: u64,
        method: String,
        uri: String,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) {
        let Some(router) = self.inner.router.get().cloned() else {
            return;
        };
        let mut builder = Request::builder().method(method.as_str()).uri(uri.as_str());
        if let Some(map) = builder.headers_mut() {
            *map = header_map(headers);
        }
        let mut req = match builder.body(Body::from(body)) {
            Ok(req) => req,
            Err(e) => {
                let fail = Head::Fail {
                    id,
                    reason: format!("unreadable relayed request: {e}"),
                };
                let _ = self.publish(from, frame::encode(&fail, b"")).await;
                return;
            }
        };
        req.extensions_mut().insert(Relayed);
        let response = match router.oneshot(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        let carried = parts
            .extensions
            .get::<CarriedRequest>()
            .map(|c| c.0.clone());
        let status = parts.status.as_u16();
        let headers = header_pairs(&parts.headers);
        // A body of known length (JSON answers, errors, 202/204) is already complete: it
        // goes back in one frame, one publish instead of three.
        if axum::body::HttpBody::size_hint(&body).exact().is_some() {
            let head = Head::Res {
                id,
                status,
                headers,
                whole: true,
                from: self.inner.id.clone(),
            };
            // A poll's item is handed over once it leaves here: if `from` is lost before
            // passing it on, its request must fail, not wait for a timeout.
            if let Some(request_id) = &carried {
                self.track_transit(request_id.clone(), from);
            }
            let frame = match axum::body::to_bytes(body, usize::MAX).await {
                Ok(bytes) => frame::encode(&head, &bytes),
                Err(e) => {
                    let fail = Head::Fail {
                        id,
                        reason: e.to_string(),
                    };
                    frame::encode(&fail, b"")
                }
            };
            // Only a publish nobody received proves the item is lost; after a Redis timeout it
            // may have arrived, and failing it then could run the tool twice on a retry.
            if let Err(Error::InstanceLost) = self.publish(from, frame).await {
                if let Some(request_id) = carried {
                    self.transit_failed(&request_id);
                }
            }
            return;
        }
        let head = Head::Res {
            id,
            status,
            headers,
            whole: false,
            from: self.inner.id.clone(),
        };
        if self.publish(from, frame::encode(&head, b"")).await.is_err() {
            return;
        }
        let mut data = body.into_data_stream();
        while let Some(chunk) = data.next().await {
            let frame = match chunk {
                Ok(bytes) if bytes.is_empty() => continue,
                Ok(bytes) => frame::encode(
                    &Head::Data {
                        id,
                        from: self.inner.id.clone(),
                    },
                    &bytes,
                ),
                Err(e) => {
                    let fail = Head::Fail {
                        id,
                        reason: e.to_string(),
                    };
                    let _ = self.publish(from, frame::encode(&fail, b"")).await;
                    return;
                }
            };
            if self.publish(from, frame).await.is_err() {
                return;
            }
        }
        let _ = self
            .publish(from, frame::encode(&Head::End { id }, b""))
            .await;
    }
}

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
