//! Client sessions of `/mcp` and their SSE streams.
//!
//! A client session is pinned to the registration that answered its `initialize`. It owns
//! its streams: the GET stream (`g`), where session messages go, and one stream per request
//! answered as SSE (`p1`, `p2`, ...). Every event is recorded in the stream's [`EventLog`]
//! before it is sent, so a client that lost its connection resumes with `Last-Event-ID`
//! (`<stream>.<seq>`); the HTTP response is only a receiver attached to the stream, and a
//! dropped connection detaches it without losing what comes later.
//!
//! Stateless-era (2026-07-28) requests have no session: their streams are "loose", not
//! resumable, and closing one cancels its request.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_protocol::jsonrpc::RequestId;
use mcp_protocol::streamable::{sse_event, EventId, EventLog};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::Broker;

/// The name of a session's GET stream.
pub(crate) const GET_STREAM: &str = "g";
/// Events kept for replay on a session's GET stream.
pub(crate) const GET_STREAM_LOG: usize = 256;
/// Events kept for replay on one request's stream.
pub(crate) const REQUEST_STREAM_LOG: usize = 64;
/// How long a client that lost a stream should wait before resuming it with `Last-Event-ID`
/// (the `retry` field of every priming event, in milliseconds): the SDKs' own default, said
/// out loud as SEP-1699 asks, so every client resumes the same way.
pub(crate) const SSE_RETRY_MS: u64 = 1000;
/// Finished request streams a session keeps for resumption (oldest forgotten first).
pub(crate) const FINISHED_STREAMS_KEPT: usize = 16;
/// Server-to-client requests awaiting the client's answer, per session.
pub(crate) const OUTBOUND_CAP: usize = 256;
/// Framed events buffered for a connected client; a client this far behind is cut off and
/// resumes from the log.
pub(crate) const LIVE_BUFFER: usize = 64;

/// Where a pending request's answer goes when it is streamed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StreamRef {
    /// The client session owning the stream; `None` for a loose (stateless-era) stream.
    pub(crate) session: Option<String>,
    /// The stream's name (its key in the session, or in the loose streams).
    pub(crate) name: String,
}

/// One SSE stream: its replay log and the connection attached to it, if any.
#[derive(Debug)]
pub(crate) struct StreamState {
    /// Every event sent on it, for `Last-Event-ID` replay.
    pub(crate) log: EventLog,
    /// The attached HTTP response: connection number and its channel of framed chunks.
    pub(crate) live: Option<(u64, mpsc::Sender<String>)>,
    /// The pending request it answers (`None` for the GET stream, or once finished).
    pub(crate) request: Option<String>,
    /// Closing it cancels its request (stateless era).
    pub(crate) cancel_on_close: bool,
    /// Its final answer was sent; it ends after the replay.
    pub(crate) done: bool,
}

impl StreamState {
    /// A stream named `name` whose log keeps `capacity` events.
    pub(crate) fn new(name: &str, capacity: usize) -> Self {
        StreamState {
            log: EventLog::new(name, capacity),
            live: None,
            request: None,
            cancel_on_close: false,
            done: false,
        }
    }

    /// Records `data` and sends it to the attached connection, if any. A connection that is
    /// too far behind is cut off (it resumes from the log).
    pub(crate) fn push(&mut self, data: String) {
        let data: Arc<str> = data.into();
        let id = self.log.push(data.clone());
        if let Some((_, tx)) = &self.live {
            if tx
                .try_send(sse_event(Some(&id.to_string()), &data))
                .is_err()
            {
                self.live = None;
            }
        }
    }

    /// Sends the final answer and ends the attached connection.
    pub(crate) fn finish(&mut self, data: String) {
        self.push(data);
        self.done = true;
        self.request = None;
        self.live = None;
    }

    /// Attaches a new connection (replacing any earlier one): records a priming event (an id
    /// and no data, so the client can resume even before the first message) and returns the
    /// chunks to send first and the live receiver (`None` when the stream already ended).
    pub(crate) fn attach(
        &mut self,
        conn: u64,
        after: Option<u64>,
    ) -> (Vec<Initial>, Option<mpsc::Receiver<String>>) {
        let mut chunks = Vec::new();
        if let Some(after) = after {
            // Callers check replayability first; an unreplayable point replays nothing.
            // Shared references only: the events are framed after the lock is released.
            for (id, data) in self.log.replay_shared_after(after).unwrap_or_default() {
                if !data.is_empty() {
                    chunks.push(Initial::Event(id, data));
                }
            }
        }
        if self.done {
            return (chunks, None);
        }
        let priming = self.log.push(String::new());
        chunks.push(Initial::Priming(priming));
        let (tx, rx) = mpsc::channel(LIVE_BUFFER);
        self.live = Some((conn, tx));
        (chunks, Some(rx))
    }
}

/// A chunk to send first on a newly attached connection, framed when taken (outside the
/// broker lock: a resumption of a large answer copies nothing under it).
#[derive(Debug)]
pub(crate) enum Initial {
    /// A replayed event.
    Event(EventId, Arc<str>),
    /// The priming event.
    Priming(EventId),
}

impl Initial {
    /// The SSE text of this chunk.
    pub(crate) fn frame(self) -> String {
        match self {
            Initial::Event(id, data) => sse_event(Some(&id.to_string()), &data),
            Initial::Priming(id) => priming_event(&id),
        }
    }
}

/// An SSE event with an id, the reconnection delay and empty data: it sets the client's last
/// event id and carries no message (the 2025-11-25 "priming" event).
pub(crate) fn priming_event(id: &EventId) -> String {
    format!("id: {id}\nretry: {SSE_RETRY_MS}\ndata:\n\n")
}

/// A server-to-client request awaiting the client's answer.
#[derive(Debug)]
pub(crate) struct Outbound {
    /// The proxy request id the server tied it to (the session id for session messages).
    pub(crate) request_id: String,
    /// The server's own id, when the proxy had to rewrite it to avoid a collision.
    pub(crate) original_id: Option<Value>,
}

/// A client session pinned to the registration that answered its `initialize`.
#[derive(Debug)]
pub(crate) struct ClientSession {
    /// The registration's session id.
    pub(crate) registration: String,
    /// The pool it was opened in (`""`: the default pool): the only pool whose routes may use
    /// it, so a client token bound to another pool cannot reach this one with its id.
    pub(crate) pool: String,
    /// Its generation when pinned.
    pub(crate) generation: u64,
    /// Its streams by name: the GET stream and request streams.
    pub(crate) streams: HashMap<String, StreamState>,
    /// Finished request streams, oldest first, kept for resumption.
    pub(crate) finished: VecDeque<String>,
    /// Server-to-client requests by the id text the client sees.
    pub(crate) outbound: HashMap<String, Outbound>,
    /// Insertion order of `outbound`, to bound it.
    pub(crate) outbound_order: VecDeque<String>,
    /// Numbers request streams and outbound id rewrites.
    pub(crate) counter: u64,
    /// Last request, stream end or DELETE (for idle expiry).
    pub(crate) last_seen: Instant,
    /// The caller its session quota is counted on.
    pub(crate) holder: Option<super::quota::Holder>,
    /// Who opened it (a static client token, or an access token's issuer and subject): the
    /// only caller that may use it. `None` when it was opened without credentials (client
    /// auth off): anyone who passes the route's check may.
    pub(crate) owner: Option<crate::auth::TokenId>,
}

impl ClientSession {
    /// A new session of `pool` with an empty GET stream.
    pub(crate) fn new(registration: String, pool: String, generation: u64, now: Instant) -> Self {
        let mut streams = HashMap::new();
        streams.insert(
            GET_STREAM.to_owned(),
            StreamState::new(GET_STREAM, GET_STREAM_LOG),
        );
        ClientSession {
            registration,
            pool,
            generation,
            streams,
            finished: VecDeque::new(),
            outbound: HashMap::new(),
            outbound_order: VecDeque::new(),
            counter: 0,
            last_seen: now,
            holder: None,
            owner: None,
        }
    }

    /// Opens a stream for a request; returns its name.
    pub(crate) fn new_request_stream(&mut self, request_id: &str) -> String {
        self.counter += 1;
        let name = format!("p{}", self.counter);
        let mut stream = StreamState::new(&name, REQUEST_STREAM_LOG);
        stream.request = Some(request_id.to_owned());
        self.streams.insert(name.clone(), stream);
        name
    }

    /// Keeps a finished request stream for resumption, forgetting the oldest beyond the cap.
    pub(crate) fn retire(&mut self, name: &str) {
        self.finished.push_back(name.to_owned());
        while self.finished.len() > FINISHED_STREAMS_KEPT {
            self.forget_oldest_finished();
        }
    }

    /// Forgets the oldest finished stream; the bytes freed.
    pub(crate) fn forget_oldest_finished(&mut self) -> usize {
        self.finished
            .pop_front()
            .and_then(|old| self.streams.remove(&old))
            .map_or(0, |s| s.log.bytes())
    }

    /// Bytes of replay this session keeps, over all its streams.
    pub(crate) fn replay_bytes(&self) -> usize {
        self.streams.values().map(|s| s.log.bytes()).sum()
    }

    /// Keeps this session's replay within `max` bytes: the oldest finished streams go first,
    /// then the oldest events of the largest streams; the newest event of each stream stays
    /// (it may be an answer not yet delivered). The bytes it holds afterwards.
    pub(crate) fn trim_replay(&mut self, max: usize) -> usize {
        let mut bytes = self.replay_bytes();
        while bytes > max && !self.finished.is_empty() {
            bytes -= self.forget_oldest_finished();
        }
        while bytes > max {
            let Some(largest) = self
                .streams
                .values_mut()
                .filter(|s| s.log.len() > 1)
                .max_by_key(|s| s.log.bytes())
            else {
                break;
            };
            bytes -= largest.log.forget_oldest();
        }
        bytes
    }

    /// Whether it has been idle (no connection attached, nothing seen) for `idle`.
    pub(crate) fn is_idle(&self, now: Instant, idle: Duration) -> bool {
        self.streams.values().all(|s| s.live.is_none())
            && now.saturating_duration_since(self.last_seen) >= idle
    }

    /// Records a server-to-client request so the client's answer finds its way back; returns
    /// the message as the client must see it (its id rewritten only on a collision).
    pub(crate) fn track_outbound(
        &mut self,
        request_id: &str,
        id: &RequestId,
        message: &RawValue,
    ) -> String {
        let text = super::id_text(id);
        let (key, data, original_id) = if self.outbound.contains_key(&text) {
            // Two pending server requests with one id in one session: the client could not
            // tell its answers apart, so the second gets a proxy id, restored on the way back.
            self.counter += 1;
            let fresh = Value::String(format!("proxy-{}-{}", self.counter, id));
            let rewritten = serde_json::from_str::<Map<String, Value>>(message.get())
                .ok()
                .map(|mut obj| {
                    let old = obj.insert("id".into(), fresh.clone());
                    (Value::Object(obj).to_string(), old)
                });
            match rewritten {
                Some((data, old)) => (fresh.to_string(), data, old),
                None => (text, message.get().to_owned(), None),
            }
        } else {
            (text, message.get().to_owned(), None)
        };
        if self.outbound_order.len() >= OUTBOUND_CAP {
            if let Some(old) = self.outbound_order.pop_front() {
                self.outbound.remove(&old);
            }
        }
        self.outbound_order.push_back(key.clone());
        self.outbound.insert(
            key,
            Outbound {
                request_id: request_id.to_owned(),
                original_id,
            },
        );
        data
    }

    /// Takes the server request a client's answer (with id text `key`) belongs to.
    pub(crate) fn take_outbound(&mut self, key: &str) -> Option<Outbound> {
        let out = self.outbound.remove(key)?;
        self.outbound_order.retain(|k| k != key);
        Some(out)
    }
}

/// A connection attached to a stream: what to send first, then live chunks until the stream
/// ends. Dropping it (the client went away) detaches it; for a stateless-era request that
/// cancels the request.
#[derive(Debug)]
pub struct Attached {
    pub(crate) broker: Broker,
    pub(crate) stream: StreamRef,
    pub(crate) conn: u64,
    pub(crate) initial: Vec<Initial>,
    pub(crate) rx: Option<mpsc::Receiver<String>>,
}

impl Attached {
    /// The chunks to send first (replayed events, then the priming event).
    pub fn take_initial(&mut self) -> Vec<String> {
        std::mem::take(&mut self.initial)
            .into_iter()
            .map(Initial::frame)
            .collect()
    }

    /// The next live chunk; `None` when the stream ended (or was taken over).
    pub async fn next(&mut self) -> Option<String> {
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => None,
        }
    }

    /// Whether nothing more will come: the chunks taken so far end the stream (its final
    /// answer was among them, or the connection was cut off or taken over).
    pub fn ended(&self) -> bool {
        // The broker sends the final answer and drops the sender under one lock: once the
        // answer is taken, the channel is both empty and closed.
        self.rx
            .as_ref()
            .is_none_or(|rx| rx.is_empty() && rx.is_closed())
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.broker.detach(&self.stream, self.conn);
    }
}

/// The text of a final answer for a stream: the server's response with the client's id, or
/// `None` when it is not a JSON-RPC response.
pub(crate) fn stream_answer(answer: &RawValue, client_id: &RequestId) -> Option<String> {
    let mut obj: Map<String, Value> = serde_json::from_str(answer.get()).ok()?;
    if !obj.contains_key("result") && !obj.contains_key("error") {
        return None;
    }
    let wanted = serde_json::to_value(client_id).ok()?;
    if obj.get("id") == Some(&wanted) {
        return Some(answer.get().to_owned());
    }
    obj.insert("id".into(), wanted);
    Some(Value::Object(obj).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(v: Value) -> Box<RawValue> {
        RawValue::from_string(v.to_string()).unwrap()
    }

    #[test]
    fn colliding_server_ids_are_rewritten_and_restored() {
        let mut s = ClientSession::new("m-x".into(), String::new(), 1, Instant::now());
        let msg = raw(json!({"jsonrpc": "2.0", "id": 1, "method": "sampling/createMessage"}));
        let first = s.track_outbound("r-a", &RequestId::from(1), &msg);
        assert_eq!(first, msg.get(), "the first keeps its id and bytes");
        let second = s.track_outbound("r-b", &RequestId::from(1), &msg);
        let seen: Value = serde_json::from_str(&second).unwrap();
        assert_ne!(seen["id"], json!(1));
        let key = seen["id"].to_string();
        let out = s.take_outbound(&key).unwrap();
        assert_eq!(
            (out.request_id.as_str(), out.original_id),
            ("r-b", Some(json!(1)))
        );
        let out = s.take_outbound("1").unwrap();
        assert_eq!((out.request_id.as_str(), out.original_id), ("r-a", None));
        assert!(s.take_outbound("1").is_none());
    }

    #[test]
    fn a_stream_replays_after_the_last_event_and_skips_priming() {
        let mut st = StreamState::new("p1", 8);
        let (first, rx) = st.attach(1, None);
        let first: Vec<String> = first.into_iter().map(Initial::frame).collect();
        assert_eq!(first, ["id: p1.1\nretry: 1000\ndata:\n\n"]);
        assert!(rx.is_some());
        st.push("a".into());
        st.finish("b".into());
        assert!(st.live.is_none(), "finishing ends the connection");
        let (replay, rx) = st.attach(2, Some(1));
        let replay: Vec<String> = replay.into_iter().map(Initial::frame).collect();
        assert!(rx.is_none(), "a finished stream only replays");
        assert_eq!(
            replay,
            [
                "id: p1.2\nevent: message\ndata: a\n\n",
                "id: p1.3\nevent: message\ndata: b\n\n"
            ]
        );
    }

    #[test]
    fn a_session_keeps_its_replay_within_its_byte_budget() {
        let mut s = ClientSession::new("m-r".into(), String::new(), 1, Instant::now());
        let big = "x".repeat(1000);
        for i in 0..5 {
            let name = s.new_request_stream(&format!("r{i}"));
            let stream = s.streams.get_mut(&name).unwrap();
            stream.push(big.clone());
            stream.finish(big.clone());
            s.retire(&name);
        }
        assert_eq!(s.replay_bytes(), 10_000);
        // The oldest finished streams go first, whole.
        assert_eq!(s.trim_replay(4_500), 4_000);
        assert_eq!(s.finished.len(), 2);
        assert!(!s.streams.contains_key("p1"));
        assert!(s.streams.contains_key("p5"));
        // A live stream is trimmed to its newest event, never emptied.
        let live = s.new_request_stream("r9");
        for _ in 0..3 {
            s.streams.get_mut(&live).unwrap().push(big.clone());
        }
        assert_eq!(s.trim_replay(0), 1_000);
        assert!(s.finished.is_empty());
        let kept = &s.streams[&live].log;
        assert_eq!((kept.len(), kept.bytes()), (1, 1_000));
    }

    #[test]
    fn answers_get_the_client_id() {
        let id = RequestId::from("x");
        let fixed =
            stream_answer(&raw(json!({"jsonrpc": "2.0", "id": 9, "result": {}})), &id).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&fixed).unwrap()["id"], "x");
        assert!(stream_answer(&raw(json!(null)), &id).is_none());
        assert!(stream_answer(&raw(json!({"jsonrpc": "2.0", "id": "x"})), &id).is_none());
    }
}
