//! The audit log: one structured JSON line per client request the proxy answers (`/message`,
//! `/mcp` and their `/servers/{name}/…` forms), refused ones included, written when the
//! answer's last byte has gone (a stream's end), to stdout or a file (`--audit-log`).
//!
//! The [`layer`] wraps the whole router, outside the rate limits, so a 429 is recorded like
//! any refusal; it reads what the request itself says (route, pool, peer, token
//! fingerprint, sizes) and the answer's status. What only a handler learns (the JSON-RPC
//! method and the tool it names, the member a request was routed to and its request id, an
//! error code) the handler *notes* through a task-local the layer opens around the request
//! ([`note_message`], [`note_routed`], [`note_error_code`]): nothing is parsed twice, and with
//! the audit off the layer is not installed and a note is one failed task-local lookup.
//!
//! Arguments and results are never recorded unless the operator opts in
//! (`--audit-payloads`), and then cut at a cap. Field by field: docs/operations.md.
//!
//! - `record`: [`Record`], its JSON line, the timestamp format.
//! - `sink`: [`AuditLog`] (stdout or a file reopened on SIGHUP) and [`Recent`] (the bounded
//!   memory the console lists).

mod record;
mod sink;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use mcp_protocol::jsonrpc::Message;
use serde_json::Value;

pub use record::{rfc3339, Capped, ClientIdentity, Delivery, OAuthIdentity, Record};
pub use sink::{AuditLog, Recent, RECENT_RECORDS};

use crate::auth::TokenId;
use crate::peer::{ClientAddr, TrustedProxies};
use crate::routes::{self, Surface};
use crate::topology::{AnsweredElsewhere, Relayed};

/// Default cap on the bytes of arguments and of results recorded when the operator opts in.
pub const DEFAULT_PAYLOAD_CAP: usize = 4096;

/// The longest tool, resource or prompt name recorded (longer ones are cut).
pub const NAME_CAP: usize = 256;

/// What the audit records and where: [`AuditConfig::default`] records nothing.
#[derive(Clone, Debug, Default)]
pub struct AuditConfig {
    /// Where lines are written; `None` writes none (the console may still keep records).
    pub log: Option<AuditLog>,
    /// Record requests' `params` and answers' bodies, each cut at this many bytes; `None`
    /// (the default) records neither.
    pub payloads: Option<usize>,
}

/// Something that wants every record as it is made (the console); records it gets never
/// carry payloads.
pub type Observer = Arc<dyn Fn(Arc<Record>) + Send + Sync>;

/// Records client requests; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

struct Inner {
    log: Option<AuditLog>,
    observer: Option<Observer>,
    payloads: Option<usize>,
    trusted: TrustedProxies,
    /// The cluster instance, once joined.
    instance: OnceLock<String>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("log", &self.inner.log)
            .field("observer", &self.inner.observer.is_some())
            .field("payloads", &self.inner.payloads)
            .finish()
    }
}

impl Audit {
    /// An audit writing to `config.log` and telling `observer`; `None` when there is neither
    /// (the layer is then not installed at all).
    pub fn new(
        config: &AuditConfig,
        trusted: TrustedProxies,
        observer: Option<Observer>,
    ) -> Option<Audit> {
        if config.log.is_none() && observer.is_none() {
            return None;
        }
        Some(Audit {
            inner: Arc::new(Inner {
                log: config.log.clone(),
                observer,
                payloads: config.payloads,
                trusted,
                instance: OnceLock::new(),
            }),
        })
    }

    /// Names the cluster instance in every later record.
    pub fn set_instance(&self, id: &str) {
        let _ = self.inner.instance.set(id.to_owned());
    }

    /// The file target, to reopen on SIGHUP.
    pub fn log(&self) -> Option<&AuditLog> {
        self.inner.log.as_ref()
    }

    /// Writes `record`'s line and hands it (without payloads) to the observer.
    fn emit(&self, mut record: Record) {
        if let Some(log) = &self.inner.log {
            log.write(&record.to_line());
        }
        if let Some(observer) = &self.inner.observer {
            record.arguments = None;
            record.result = None;
            observer(Arc::new(record));
        }
    }
}

/// What handlers learn about a request, for its record.
#[derive(Debug, Default)]
struct Note {
    payloads: Option<usize>,
    request_id: Option<String>,
    member: Option<u64>,
    delivery: Option<Delivery>,
    identity: Option<OAuthIdentity>,
    method: Option<String>,
    name: Option<String>,
    error_code: Option<i64>,
    arguments: Option<Capped>,
}

tokio::task_local! {
    /// The note of the request this task is answering (set by [`layer`]).
    static NOTE: Arc<Mutex<Note>>;
}

fn with_note(f: impl FnOnce(&mut Note)) {
    // Outside the layer's scope (audit off, or no client request) this is all it costs.
    let _ = NOTE.try_with(|note| f(&mut note.lock().unwrap_or_else(|e| e.into_inner())));
}

/// Notes the client's message: its method, the tool, resource or prompt it names, and its
/// `params` when the operator opted in.
pub(crate) fn note_message(message: &Message) {
    let (method, params) = match message {
        Message::Request(r) => (&r.method, r.params.as_ref()),
        Message::Notification(n) => (&n.method, n.params.as_ref()),
        Message::Response(_) => return,
    };
    with_note(|note| {
        note.method = Some(cut(method, NAME_CAP));
        let key = match method.as_str() {
            "tools/call" | "prompts/get" => "name",
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => "uri",
            _ => "",
        };
        note.name = params
            .and_then(|p| p.get(key))
            .and_then(Value::as_str)
            .map(|n| cut(n, NAME_CAP));
        if let (Some(cap), Some(params)) = (note.payloads, params) {
            note.arguments = Some(Capped::new(&params.to_string(), cap));
        }
    });
}

/// Notes where the broker routed the request: its request id, the member's ordinal, and
/// whether that member holds a channel (else it long-polls).
pub(crate) fn note_routed(request_id: &str, member: u64, channel: bool) {
    with_note(|note| {
        note.request_id = Some(request_id.to_owned());
        note.member = Some(member);
        note.delivery = Some(if channel {
            Delivery::Channel
        } else {
            Delivery::Poll
        });
    });
}

/// Notes who an access token names (OAuth): its issuer, subject and client.
pub(crate) fn note_identity(identity: &mcp_protocol::wire::Identity) {
    with_note(|note| {
        note.identity = Some(OAuthIdentity {
            issuer: cut(&identity.issuer, NAME_CAP),
            subject: identity.subject.as_deref().map(|s| cut(s, NAME_CAP)),
            client_id: identity.client_id.as_deref().map(|s| cut(s, NAME_CAP)),
        });
    });
}

/// Notes the JSON-RPC error code of the answer (the last noted wins: it is the answer's).
pub(crate) fn note_error_code(code: i64) {
    with_note(|note| note.error_code = Some(code));
}

fn cut(s: &str, cap: usize) -> String {
    Capped::new(s, cap).text
}

/// What the layer knows before the answer's end.
struct Pending {
    audit: Audit,
    started: Instant,
    time: SystemTime,
    relayed: bool,
    peer: Option<std::net::IpAddr>,
    pool: String,
    token: Option<String>,
    route: &'static str,
    http_method: String,
    status: u16,
    note: Arc<Mutex<Note>>,
    bytes_in: Arc<AtomicU64>,
    bytes_out: u64,
    /// The last event of a stream, whose final answer may be an error (SSE).
    last_event: Option<Bytes>,
}

impl Pending {
    fn finish(self) {
        let note = std::mem::take(&mut *self.note.lock().unwrap_or_else(|e| e.into_inner()));
        let payloads = note.payloads;
        let sniffed = (note.error_code.is_none())
            .then(|| self.last_event.as_deref().and_then(event_error_code))
            .flatten();
        let record = Record {
            time: rfc3339(self.time),
            request_id: note.request_id,
            instance: self.audit.inner.instance.get().cloned(),
            relayed: self.relayed,
            peer: self.peer,
            pool: self.pool,
            delivery: note.delivery,
            member: note.member,
            client: ClientIdentity {
                token: self.token,
                oauth: note.identity,
            },
            route: self.route,
            http_method: self.http_method,
            method: note.method,
            name: note.name,
            status: self.status,
            error_code: note.error_code.or(sniffed),
            latency_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out,
            arguments: note.arguments,
            result: payloads.and_then(|cap| {
                let body = self.last_event.as_deref()?;
                Some(Capped::new(&String::from_utf8_lossy(body), cap))
            }),
        };
        self.audit.emit(record);
    }
}

/// Written when the stream ends or is dropped (the client went away).
struct StreamGuard(Option<Pending>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(pending) = self.0.take() {
            pending.finish();
        }
    }
}

/// Middleware around the whole router: records every request to a client route.
pub(crate) async fn layer(State(audit): State<Audit>, req: Request, next: Next) -> Response {
    let route = match routes::route_of(&req) {
        Some(r) if matches!(r.surface, Surface::Message | Surface::Streamable) => r,
        _ => return next.run(req).await,
    };
    if req.method() == Method::OPTIONS {
        return next.run(req).await; // a CORS preflight is no request of a client's
    }
    let (started, time) = (Instant::now(), SystemTime::now());
    let relayed = req.extensions().get::<Relayed>().is_some();
    let peer = match req.extensions().get::<ConnectInfo<std::net::SocketAddr>>() {
        Some(ConnectInfo(addr)) if !relayed => {
            Some(audit.inner.trusted.client_ip(addr.ip(), req.headers()))
        }
        _ => req.extensions().get::<ClientAddr>().map(|a| a.0),
    };
    let token = crate::auth::bearer(req.headers()).map(|t| TokenId::of(t).fingerprint());
    let pool = pool_of(req.uri().path());
    let http_method = req.method().as_str().to_owned();
    let bytes_in = Arc::new(AtomicU64::new(0));
    let req = req.map(|body| counted_in(body, bytes_in.clone()));
    let note = Arc::new(Mutex::new(Note {
        payloads: audit.inner.payloads,
        ..Note::default()
    }));
    let response = NOTE.scope(note.clone(), next.run(req)).await;
    if response.extensions().get::<AnsweredElsewhere>().is_some() {
        return response; // the instance that served it records it
    }
    let mut pending = Pending {
        audit: audit.clone(),
        started,
        time,
        relayed,
        peer,
        pool,
        token,
        route: route.pattern,
        http_method,
        status: response.status().as_u16(),
        note,
        bytes_in,
        bytes_out: 0,
        last_event: None,
    };
    let (parts, body) = response.into_parts();
    if let Some(n) = body.size_hint().exact() {
        pending.bytes_out = n;
        if audit.inner.payloads.is_none() {
            pending.finish();
            return Response::from_parts(parts, body);
        }
        // Opted in: the answer is already in memory, whole (its size is known).
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        pending.last_event = Some(bytes.clone());
        pending.finish();
        return Response::from_parts(parts, Body::from(bytes));
    }
    let mut guard = StreamGuard(Some(pending));
    let stream = body.into_data_stream().inspect(move |chunk| {
        if let (Ok(chunk), Some(pending)) = (chunk, guard.0.as_mut()) {
            pending.bytes_out += chunk.len() as u64;
            // Keep-alive comments are not events.
            if !chunk.starts_with(b":") {
                pending.last_event = Some(chunk.clone());
            }
        }
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Counts a request body's bytes: at once when its size is known, else as it is read.
fn counted_in(body: Body, counter: Arc<AtomicU64>) -> Body {
    if let Some(n) = body.size_hint().exact() {
        counter.store(n, Ordering::Relaxed);
        return body;
    }
    Body::from_stream(body.into_data_stream().inspect(move |chunk| {
        if let Ok(c) = chunk {
            counter.fetch_add(c.len() as u64, Ordering::Relaxed);
        }
    }))
}

/// The pool a client path addresses, decoded as the routes decode it (`""`: the default
/// pool); a name no route would accept is kept, cut at [`NAME_CAP`].
fn pool_of(path: &str) -> String {
    let name = crate::auth::client_pool(path);
    cut(
        &percent_encoding::percent_decode_str(name).decode_utf8_lossy(),
        NAME_CAP,
    )
}

/// The JSON-RPC error code an SSE event's data carries, if it is an error answer.
fn event_error_code(event: &[u8]) -> Option<i64> {
    // Most events are results: only one that mentions an error is parsed.
    if !event.windows(7).any(|w| w == b"\"error\"") {
        return None;
    }
    let text = std::str::from_utf8(event).ok()?;
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    let data = if data.is_empty() {
        text.to_owned()
    } else {
        data.join("\n")
    };
    #[derive(serde::Deserialize)]
    struct View {
        error: Option<Code>,
    }
    #[derive(serde::Deserialize)]
    struct Code {
        code: i64,
    }
    serde_json::from_str::<View>(&data)
        .ok()?
        .error
        .map(|e| e.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_are_read_from_the_path() {
        assert_eq!(pool_of("/message"), "");
        assert_eq!(pool_of("/mcp"), "");
        assert_eq!(pool_of("/servers/alpha/mcp"), "alpha");
        assert_eq!(pool_of("/servers/%61lpha/message"), "alpha");
        assert_eq!(
            pool_of(&format!("/servers/{}/mcp", "x".repeat(300))).len(),
            NAME_CAP
        );
    }

    #[test]
    fn an_error_event_gives_its_code() {
        let event = b"id: 1\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32601,\"message\":\"no\"}}\n\n";
        assert_eq!(event_error_code(event), Some(-32601));
        let ok = b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";
        assert_eq!(event_error_code(ok), None);
    }

    #[tokio::test]
    async fn notes_outside_a_request_are_ignored_and_inside_are_kept() {
        note_error_code(-1); // no scope: nothing happens
        let note = Arc::new(Mutex::new(Note::default()));
        NOTE.scope(note.clone(), async {
            let msg = Message::parse(
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"secret"}}}"#,
            )
            .unwrap();
            note_message(&msg);
            note_routed("r-1", 4, true);
            note_error_code(-32602);
        })
        .await;
        let n = note.lock().unwrap();
        assert_eq!(n.method.as_deref(), Some("tools/call"));
        assert_eq!(n.name.as_deref(), Some("echo"));
        assert_eq!((n.request_id.as_deref(), n.member), (Some("r-1"), Some(4)));
        assert_eq!(n.delivery, Some(Delivery::Channel));
        assert_eq!(n.error_code, Some(-32602));
        assert!(n.arguments.is_none(), "no payloads unless opted in");
    }
}
