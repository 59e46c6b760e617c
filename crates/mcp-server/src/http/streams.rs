//! The SSE streams of one client session, with the event logs that make them resumable.
//!
//! Every stream has an id unique in its session (`g` for the GET stream, `p1`, `p2`... for the
//! streams answering POSTs), so an event id `<stream>.<seq>` names the stream to resume. A
//! stream outlives its HTTP connection: messages pushed while no connection is attached are
//! logged, and a client reconnecting with `Last-Event-ID` gets them replayed before the live
//! ones. The locks are `std::sync::Mutex`: a push formats and sends under the lock (so the log
//! and the live order agree), nothing awaits under it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use mcp_protocol::streamable::{sse_event, EventLog};
use mcp_protocol::Message;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// How many events one stream keeps for replay.
const EVENT_LOG_CAPACITY: usize = 256;
/// How many finished POST streams a session keeps for resumption.
const KEPT_FINISHED_STREAMS: usize = 8;
/// The id of a session's GET stream.
const GET_STREAM: &str = "g";

/// One SSE stream: its log and, when a client is connected, the connection's sender.
#[derive(Debug)]
pub(crate) struct SseStream {
    state: Mutex<StreamState>,
}

#[derive(Debug)]
struct StreamState {
    log: EventLog,
    /// The attached connection, if any (frames are written to its body).
    live: Option<UnboundedSender<Bytes>>,
    /// The final message was pushed: nothing more will come.
    finished: bool,
}

impl SseStream {
    fn new(id: &str) -> Arc<Self> {
        Arc::new(SseStream {
            state: Mutex::new(StreamState {
                log: EventLog::new(id, EVENT_LOG_CAPACITY),
                live: None,
                finished: false,
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream's id.
    pub(crate) fn id(&self) -> String {
        self.state().log.stream().to_owned()
    }

    /// Logs a message and writes it to the attached connection, if any; `false` once the
    /// stream is finished.
    pub(crate) fn push(&self, message: &Message) -> bool {
        let mut s = self.state();
        if s.finished {
            return false;
        }
        send(&mut s, message);
        true
    }

    /// Pushes the final message and ends the stream (a client that missed it reads it from
    /// the log when it resumes).
    pub(crate) fn finish(&self, message: &Message) {
        let mut s = self.state();
        if s.finished {
            return;
        }
        send(&mut s, message);
        s.finished = true;
        // Dropping the sender ends the connection's body once it has written everything.
        s.live = None;
    }

    /// Attaches a new connection, replacing any earlier one; it gets what is pushed from now on.
    pub(crate) fn connect(&self) -> UnboundedReceiver<Bytes> {
        let (tx, rx) = unbounded_channel();
        let mut s = self.state();
        if !s.finished {
            s.live = Some(tx);
        }
        rx
    }

    /// Attaches a new connection that first gets the logged events after `after` (the seq of
    /// a client's `Last-Event-ID`); `None` when they are no longer all in the log.
    pub(crate) fn resume(&self, after: u64) -> Option<UnboundedReceiver<Bytes>> {
        let (tx, rx) = unbounded_channel();
        let mut s = self.state();
        for (id, data) in s.log.replay_after(after)? {
            // The receiver is in hand: this send cannot fail.
            let _ = tx.send(Bytes::from(sse_event(Some(&id.to_string()), data)));
        }
        if !s.finished {
            s.live = Some(tx);
        }
        Some(rx)
    }

    /// Whether the final message was pushed.
    pub(crate) fn is_finished(&self) -> bool {
        self.state().finished
    }

    /// Detaches the connection (the session ended or the server shuts down).
    fn detach(&self) {
        self.state().live = None;
    }
}

/// Logs `message` and writes it to the live connection, if any.
fn send(s: &mut StreamState, message: &Message) {
    let data = match serde_json::to_string(message) {
        Ok(data) => data,
        Err(e) => {
            tracing::error!("cannot encode a message for SSE: {e}");
            return;
        }
    };
    let frame = {
        // The log keeps the data for replays; the frame needs the id the log gives it.
        let id = s.log.push(data.clone());
        Bytes::from(sse_event(Some(&id.to_string()), &data))
    };
    if s.live
        .as_ref()
        .is_some_and(|live| live.send(frame).is_err())
    {
        s.live = None;
    }
}

/// The SSE streams of one client session.
#[derive(Debug, Default)]
pub(crate) struct SessionStreams {
    state: Mutex<Streams>,
}

#[derive(Debug, Default)]
struct Streams {
    next_post: u64,
    get: Option<Arc<SseStream>>,
    posts: HashMap<String, Arc<SseStream>>,
    /// Finished POST streams kept for resumption, oldest first.
    kept: VecDeque<String>,
}

impl SessionStreams {
    fn state(&self) -> MutexGuard<'_, Streams> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new stream for a POST's answer.
    pub(crate) fn open_post(&self) -> Arc<SseStream> {
        let mut s = self.state();
        s.next_post += 1;
        let stream = SseStream::new(&format!("p{}", s.next_post));
        s.posts.insert(stream.id(), Arc::clone(&stream));
        stream
    }

    /// A POST stream ended. It is kept (the last few per session) even when a connection
    /// took its last event: that connection may have been dropped by the client before the
    /// bytes left, and the client then resumes it.
    pub(crate) fn post_finished(&self, stream: &SseStream) {
        let id = stream.id();
        let mut s = self.state();
        s.kept.push_back(id);
        while s.kept.len() > KEPT_FINISHED_STREAMS {
            if let Some(old) = s.kept.pop_front() {
                s.posts.remove(&old);
            }
        }
    }

    /// A resumed POST stream was replayed to its end: it can go.
    pub(crate) fn forget(&self, stream: &SseStream) {
        let id = stream.id();
        let mut s = self.state();
        s.posts.remove(&id);
        s.kept.retain(|k| *k != id);
    }

    /// The session's GET stream, opened on first use.
    pub(crate) fn get_stream(&self) -> Arc<SseStream> {
        Arc::clone(
            self.state()
                .get
                .get_or_insert_with(|| SseStream::new(GET_STREAM)),
        )
    }

    /// The stream an event id names, if the session still has it.
    pub(crate) fn find(&self, stream: &str) -> Option<Arc<SseStream>> {
        let s = self.state();
        if stream == GET_STREAM {
            return s.get.clone();
        }
        s.posts.get(stream).cloned()
    }

    /// Sends a message not tied to a POST on the GET stream; `false` when the client never
    /// opened one. While it is disconnected the message waits in the log for a resume.
    pub(crate) fn send_on_get(&self, message: &Message) -> bool {
        let get = self.state().get.clone();
        get.is_some_and(|g| g.push(message))
    }

    /// Ends every attached connection (the session ended).
    pub(crate) fn close(&self) {
        let s = self.state();
        for stream in s.get.iter().chain(s.posts.values()) {
            stream.detach();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_protocol::Notification;

    fn note(n: u32) -> Message {
        Message::Notification(Notification::new(format!("n{n}"), None))
    }

    fn drain(rx: &mut UnboundedReceiver<Bytes>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn streams_log_replay_and_end() {
        let streams = SessionStreams::default();
        assert!(!streams.send_on_get(&note(0)), "no GET stream yet");
        let post = streams.open_post();
        assert_eq!(post.id(), "p1");
        let mut live = post.connect();
        assert!(post.push(&note(1)));
        drop(live);
        assert!(post.push(&note(2)), "logged while nobody listens");
        post.finish(&note(3));
        assert!(!post.push(&note(4)), "finished");
        streams.post_finished(&post);

        let found = streams.find("p1").expect("kept for a resume");
        let mut replay = found.resume(1).unwrap();
        let frames = drain(&mut replay);
        assert_eq!(frames.len(), 2);
        assert!(frames[0].starts_with("id: p1.2\n") && frames[0].contains("\"n2\""));
        assert!(frames[1].starts_with("id: p1.3\n"));
        assert!(
            replay.try_recv().is_err(),
            "finished: the replay ends the stream"
        );
        streams.forget(&found);
        assert!(streams.find("p1").is_none());

        let get = streams.get_stream();
        live = get.connect();
        assert!(streams.send_on_get(&note(5)));
        assert_eq!(drain(&mut live).len(), 1);
        streams.close();
        assert!(live.try_recv().is_err(), "closed");
    }

    #[test]
    fn only_the_last_finished_streams_are_kept() {
        let streams = SessionStreams::default();
        for _ in 0..KEPT_FINISHED_STREAMS + 2 {
            let s = streams.open_post();
            s.finish(&note(0));
            streams.post_finished(&s);
        }
        assert!(streams.find("p1").is_none());
        assert!(streams.find("p2").is_none());
        assert!(streams.find("p3").is_some());
    }
}
