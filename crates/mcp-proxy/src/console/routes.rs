//! The console's handlers: the page and its assets, the login form and logout, the view as
//! JSON and as an SSE stream; and the security headers every console answer carries.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use tracing::{info, warn};

use super::session::{COOKIE, SESSION_LIFETIME};
use super::view::{merge, Filter};
use super::{Console, MAX_STREAMS, UPDATE_INTERVAL};
use crate::guard::Guard;
use crate::peer::ClientAddr;
use crate::state::AppState;
use crate::topology::Relayed;

/// The largest login form accepted.
pub(crate) const LOGIN_BODY_MAX: usize = 4096;
/// How long a view waits for the other instances' views (cluster).
const GATHER_DEADLINE: Duration = Duration::from_secs(1);

const INDEX: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");
const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// Only the proxy's own files, nothing inline, no frames, forms posting to itself.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Middleware of every console route: CSP, no framing, no sniffing, no referrer to other
/// sites, no cache.
pub(crate) async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        // Not `no-referrer`: with it, browsers send `Origin: null` on the login form's post,
        // which the same-origin check must refuse. No URL here carries a secret anyway.
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The console; its routes exist only when it does, but an embedder's router may differ.
fn console(state: &AppState) -> Option<&Arc<Console>> {
    state.console.as_ref()
}

fn not_found() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

/// Whether the request may see the console: a live session's cookie, or a view another
/// instance of the cluster gathers (relayed over the cluster's Redis, never from a caller).
fn admitted(console: &Console, headers: &HeaderMap, relayed: bool) -> bool {
    relayed || console.sessions.check(headers)
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn see_other(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

fn login_form(status: StatusCode, message: &str) -> Response {
    let alert = if message.is_empty() {
        String::new()
    } else {
        format!(r#"<p class="alert" role="alert">{message}</p>"#)
    };
    html(status, LOGIN.replace("<!--alert-->", &alert))
}

/// `GET /console`: the page, or the login form's address.
pub(crate) async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match console(&state) {
        Some(c) if c.sessions.check(&headers) => html(StatusCode::OK, INDEX.to_owned()),
        Some(_) => see_other("/console/login"),
        None => not_found(),
    }
}

/// `GET /console/login`: the form.
pub(crate) async fn login_page() -> Response {
    login_form(StatusCode::OK, "")
}

/// The login form's fields.
#[derive(Deserialize)]
pub(crate) struct LoginForm {
    user: String,
    password: String,
}

/// Whether a POST comes from the console's own page: no `Origin` (not a browser), or one
/// naming the `Host` it was sent to; and that `Host` one `/mcp` would take, so a page on a
/// DNS-rebinding name (`127.evil.example`) gets 403 as it would there.
fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !Guard::new(state.config(), true).allows(host, None) {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    host.is_some() && origin_host == host
}

/// `POST /console/login`: a session cookie for the right credential; 401 with the form
/// again otherwise; 429 after too many failures.
pub(crate) async fn login(
    State(state): State<AppState>,
    addr: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Some(console) = console(&state) else {
        return not_found();
    };
    if !same_origin(&state, &headers) {
        return login_form(
            StatusCode::FORBIDDEN,
            "This form must be sent from the console's own page.",
        );
    }
    let addr = addr.map(|Extension(a)| a.0);
    if let Err(wait) = console.logins.admit(addr) {
        info!(?addr, "console login refused: too many failures");
        let mut r = login_form(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed logins. Wait a minute and try again.",
        );
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs().max(1)),
        );
        return r;
    }
    let Ok(Form(form)) = form else {
        return login_form(StatusCode::BAD_REQUEST, "Enter a user name and a password.");
    };
    if !console.config.matches(&form.user, &form.password) {
        console.logins.failed(addr);
        // Never the password, nor the user name typed (it may be a password typed there).
        warn!(?addr, "console login failed");
        return login_form(StatusCode::UNAUTHORIZED, "Wrong user name or password.");
    }
    let Some(value) = console.sessions.open() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    info!(?addr, "console login");
    let secure = if console.secure { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_LIFETIME.as_secs()
    );
    let mut r = see_other("/console");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /console/logout`: ends the session.
pub(crate) async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(console) = console(&state) else {
        return not_found();
    };
    if !same_origin(&state, &headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    console.sessions.close(&headers);
    let mut r = see_other("/console/login");
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "mcp_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    r
}

/// `GET /console/assets/{file}`: the stylesheet and the script (public: they hold no data).
pub(crate) async fn assets(Path(file): Path<String>) -> Response {
    let (kind, body) = match file.as_str() {
        "console.css" => ("text/css; charset=utf-8", CSS),
        "console.js" => ("text/javascript; charset=utf-8", JS),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// The view `filter` asks for: this instance's, and unless this is itself a gathering
/// from another instance, the others' merged in.
async fn view(state: &AppState, console: &Console, filter: &Filter, relayed: bool) -> Value {
    let instance = state.topology.as_ref().map(|t| t.instance_id().to_owned());
    let local = console.local_view(&state.broker, instance.as_deref(), filter);
    match (&state.topology, relayed) {
        (Some(topology), false) => {
            let path = format!("/console/api/state?{}", filter.query());
            let others = topology
                .gather(path, HeaderMap::new(), GATHER_DEADLINE)
                .await;
            merge(local, others, filter)
        }
        _ => local,
    }
}

fn filter_of(query: Result<Query<Filter>, QueryRejection>) -> Filter {
    query.map(|Query(f)| f).unwrap_or_default().bounded()
}

/// `GET /console/api/state`: the view as JSON.
pub(crate) async fn state_json(
    State(state): State<AppState>,
    relayed: Option<Extension<Relayed>>,
    headers: HeaderMap,
    query: Result<Query<Filter>, QueryRejection>,
) -> Response {
    let Some(console) = console(&state).cloned() else {
        return not_found();
    };
    let relayed = relayed.is_some();
    if !admitted(&console, &headers, relayed) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let filter = filter_of(query);
    axum::Json(view(&state, &console, &filter, relayed).await).into_response()
}

/// A place among the [`MAX_STREAMS`] live streams, given back when dropped.
struct StreamSlot(Arc<Console>);

impl StreamSlot {
    fn take(console: &Arc<Console>) -> Option<StreamSlot> {
        let taken = console
            .streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_STREAMS).then_some(n + 1)
            });
        taken.ok().map(|_| StreamSlot(console.clone()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `GET /console/events`: the view as an SSE stream, one `state` event a second at most.
pub(crate) async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Filter>, QueryRejection>,
) -> Response {
    let Some(console) = console(&state).cloned() else {
        return not_found();
    };
    if !console.sessions.check(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(slot) = StreamSlot::take(&console) else {
        let mut r = (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the console serves at most {MAX_STREAMS} live views at once"),
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    };
    let filter = filter_of(query);
    let mut tick = tokio::time::interval(UPDATE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The session is checked at every update: a logout or an expiry ends the stream.
    let stream = futures::stream::unfold(
        (state, filter, slot, tick, headers),
        |(state, filter, slot, mut tick, headers)| async move {
            tick.tick().await;
            if !slot.0.sessions.check(&headers) {
                return None;
            }
            let view = view(&state, &slot.0, &filter, false).await;
            let event = format!("event: state\ndata: {view}\n\n");
            Some((
                Ok::<_, Infallible>(event),
                (state, filter, slot, tick, headers),
            ))
        },
    );
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream.boxed()),
    )
        .into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
