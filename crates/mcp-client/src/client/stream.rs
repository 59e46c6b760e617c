//! Event streams: an SSE answer read until its response (resumed with `GET` and
//! `Last-Event-ID` when it ends early), the session's own GET stream ([`ServerStream`],
//! [`Client::open_stream`], [`Client::listen`]), and the server's requests answered on either.

use std::collections::VecDeque;
use std::time::Duration;

use mcp_protocol::jsonrpc::{ErrorObject, Message, Request, RequestId, Response};
use mcp_protocol::mcp::methods;
use mcp_protocol::sse::{SseEvent, SseParser};
use mcp_protocol::streamable::{EVENT_STREAM, LAST_EVENT_ID_HEADER};
use reqwest::header::ACCEPT;
use reqwest::StatusCode;
use serde_json::json;

use super::{is_event_stream, status_error, Client};
use crate::Error;

/// How often in a row an event stream may end before its response without delivering a
/// message in between, before the client gives up resuming it.
const MAX_RESUMES: u32 = 5;

/// The longest life of the session's GET stream: it idles for hours by design, so
/// [`ClientOptions::timeout`](super::ClientOptions::timeout) (meant for one answer) does not
/// apply to it.
const SESSION_STREAM_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// How long to wait before resuming a stream when the server gave no `retry:` field.
const DEFAULT_RETRY: Duration = Duration::from_millis(500);

impl Client {
    /// Reads an event stream until the response to `id`, handing notifications to the
    /// callback and answering the server's requests on the way. A stream that ends early
    /// after giving event ids is resumed with `GET` and `Last-Event-ID`, as 2025-11-25 allows.
    pub(super) async fn read_stream(
        &self,
        mut stream: reqwest::Response,
        id: &RequestId,
        method: &str,
    ) -> Result<Response, Error> {
        let mut last_event: Option<String> = None;
        let mut retry = DEFAULT_RETRY;
        let mut fruitless = 0;
        loop {
            let mut parser = SseParser::new();
            while let Some(chunk) = stream.chunk().await? {
                for event in parser.push(&chunk) {
                    if event.id.is_some() {
                        last_event = event.id;
                    }
                    if let Some(ms) = event.retry {
                        retry = Duration::from_millis(ms);
                    }
                    // An event without data primes the stream with an id to resume from.
                    if event.data.is_empty() {
                        continue;
                    }
                    fruitless = 0;
                    if let Some(response) = self.on_stream_message(&event.data, id).await? {
                        return Ok(response);
                    }
                }
            }
            let Some(last) = last_event.clone() else {
                return Err(Error::InvalidResponse(format!(
                    "the event stream for {method} ended before its response"
                )));
            };
            fruitless += 1;
            if fruitless > MAX_RESUMES {
                return Err(Error::InvalidResponse(format!(
                    "the event stream for {method} kept ending without its response"
                )));
            }
            // The server's `retry:` is how long it asked us to wait: a backoff, not a sync.
            tokio::time::sleep(retry).await;
            stream = self.resume(&last).await?;
        }
    }

    /// Reopens a stream after `last_event` with `GET` and `Last-Event-ID`.
    async fn resume(&self, last_event: &str) -> Result<reqwest::Response, Error> {
        let req = self
            .http
            .get(self.endpoint.clone())
            .header(ACCEPT, EVENT_STREAM)
            .header(LAST_EVENT_ID_HEADER, last_event);
        let (req, had_session) = self.with_session(req);
        let resp = req.send().await?;
        match resp.status() {
            StatusCode::NOT_FOUND if had_session => Err(self.expired()),
            StatusCode::OK if is_event_stream(&resp) => Ok(resp),
            StatusCode::OK => Err(Error::InvalidResponse(
                "resuming a stream did not return an event stream".into(),
            )),
            s => Err(status_error(s, &resp.bytes().await?)),
        }
    }

    /// Opens the session's own stream (`GET` with `Accept: text/event-stream`), where the server
    /// sends what belongs to no request: list changes, resource updates, log lines, and its
    /// requests while the client takes JSON answers. Returns once the server has accepted the
    /// stream; read it with [`ServerStream::next`], or hand it to [`Client::listen`]. The
    /// stream ends after a day at the latest; open it again to go on listening.
    pub async fn open_stream(&self) -> Result<ServerStream, Error> {
        let req = self
            .http
            .get(self.endpoint.clone())
            .header(ACCEPT, EVENT_STREAM)
            .timeout(SESSION_STREAM_LIFETIME);
        let (req, had_session) = self.with_session(req);
        let resp = req.send().await?;
        match resp.status() {
            StatusCode::NOT_FOUND if had_session => Err(self.expired()),
            StatusCode::OK if is_event_stream(&resp) => Ok(ServerStream {
                response: resp,
                parser: SseParser::new(),
                ready: VecDeque::new(),
                last_event_id: None,
            }),
            StatusCode::OK => Err(Error::InvalidResponse(
                "the session's stream is not an event stream".into(),
            )),
            s => Err(status_error(s, &resp.bytes().await?)),
        }
    }

    /// Serves a stream from [`Client::open_stream`] until the server ends it: notifications go
    /// to [`ClientOptions::on_notification`](super::ClientOptions::on_notification), requests
    /// are answered as on response streams.
    pub async fn listen(&self, mut stream: ServerStream) -> Result<(), Error> {
        while let Some(message) = stream.next().await? {
            match message {
                Message::Notification(n) => {
                    if let Some(handler) = &self.options.on_notification {
                        handler(n);
                    }
                }
                Message::Request(r) => self.answer_server_request(r).await,
                Message::Response(r) => {
                    tracing::warn!(id = ?r.id, "ignoring a response on the session's stream");
                }
            }
        }
        Ok(())
    }

    /// Handles one message from a stream; returns it when it is the awaited response.
    async fn on_stream_message(
        &self,
        data: &str,
        id: &RequestId,
    ) -> Result<Option<Response>, Error> {
        let message = Message::parse(data.as_bytes())
            .map_err(|e| Error::InvalidResponse(format!("event stream message: {e}")))?;
        match message {
            Message::Response(r) if r.id.as_ref() == Some(id) => return Ok(Some(r)),
            Message::Response(r) => {
                tracing::warn!(id = ?r.id, "ignoring a response to another request on a stream");
            }
            Message::Notification(n) => {
                if let Some(handler) = &self.options.on_notification {
                    handler(n);
                }
            }
            Message::Request(r) => self.answer_server_request(r).await,
        }
        Ok(None)
    }

    /// Answers a request the server sent on a stream: `ping` here, the rest by
    /// [`ClientOptions::on_request`](super::ClientOptions::on_request), or "method not found"
    /// without one rather than no answer, which would leave the server waiting.
    async fn answer_server_request(&self, request: Request) {
        let outcome = match (&self.options.on_request, request.method.as_str()) {
            (_, methods::PING) => Ok(json!({})),
            (Some(handler), _) => handler(request.method.clone(), request.params.clone()).await,
            (None, method) => Err(ErrorObject::method_not_found(method)),
        };
        let response = match outcome {
            Ok(result) => Response::success(request.id.clone(), result),
            Err(error) => Response::error(Some(request.id.clone()), error),
        };
        if let Err(e) = self.post(&Message::Response(response)).await {
            tracing::warn!(method = %request.method, "could not answer the server's request: {e}");
        }
    }
}

/// The session's server-to-client stream, from [`Client::open_stream`].
#[derive(Debug)]
pub struct ServerStream {
    response: reqwest::Response,
    parser: SseParser,
    /// Events parsed from a chunk and not yet returned.
    ready: VecDeque<SseEvent>,
    last_event_id: Option<String>,
}

impl ServerStream {
    /// The next message; `Ok(None)` once the server has ended the stream.
    pub async fn next(&mut self) -> Result<Option<Message>, Error> {
        loop {
            while let Some(event) = self.ready.pop_front() {
                if event.id.is_some() {
                    self.last_event_id = event.id;
                }
                // An event without data primes the stream with an id to resume from.
                if event.data.is_empty() {
                    continue;
                }
                return Message::parse(event.data.as_bytes())
                    .map(Some)
                    .map_err(|e| Error::InvalidResponse(format!("event stream message: {e}")));
            }
            match self.response.chunk().await? {
                Some(chunk) => self.ready.extend(self.parser.push(&chunk)),
                None => return Ok(None),
            }
        }
    }

    /// The id of the last event received (to resume with `Last-Event-ID`).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }
}
