//! SSE event ids (`<stream>.<seq>`) and the bounded per-stream log a client resumes from
//! with `Last-Event-ID`.

use std::collections::VecDeque;

/// An SSE event id: which stream, and the position in it (`<stream>.<seq>`), so a client's
/// `Last-Event-ID` says where to resume and on which stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventId {
    /// The stream's id (opaque, chosen by the server).
    pub stream: String,
    /// The position in the stream, from 1.
    pub seq: u64,
}

impl EventId {
    /// Reads `<stream>.<seq>`.
    pub fn parse(text: &str) -> Option<EventId> {
        let (stream, seq) = text.trim().rsplit_once('.')?;
        if stream.is_empty() {
            return None;
        }
        Some(EventId {
            stream: stream.to_owned(),
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.stream, self.seq)
    }
}

/// The last events of one stream, kept so a client that reconnects with `Last-Event-ID` gets
/// what it missed. Bounded by count and by the bytes of its data: the oldest events are
/// forgotten first, and the newest is always kept (it may be a final answer in flight).
/// Event data is shared (`Arc<str>`): a replay hands out references, never copies.
#[derive(Clone, Debug)]
pub struct EventLog {
    stream: String,
    next: u64,
    events: VecDeque<(u64, std::sync::Arc<str>)>,
    capacity: usize,
    bytes: usize,
}

impl EventLog {
    /// An empty log for stream `stream`, keeping at most `capacity` events.
    pub fn new(stream: impl Into<String>, capacity: usize) -> Self {
        EventLog {
            stream: stream.into(),
            next: 1,
            events: VecDeque::new(),
            capacity: capacity.max(1),
            bytes: 0,
        }
    }

    /// The stream's id.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Bytes of event data kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Events kept.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event is kept.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Records `data` and returns its event id.
    pub fn push(&mut self, data: impl Into<std::sync::Arc<str>>) -> EventId {
        let data = data.into();
        let seq = self.next;
        self.next += 1;
        if self.events.len() == self.capacity {
            self.forget_oldest();
        }
        self.bytes += data.len();
        self.events.push_back((seq, data));
        EventId {
            stream: self.stream.clone(),
            seq,
        }
    }

    /// Forgets the oldest event unless it is the only one; the bytes freed.
    pub fn forget_oldest(&mut self) -> usize {
        if self.events.len() <= 1 && self.events.len() < self.capacity {
            return 0;
        }
        match self.events.pop_front() {
            Some((_, data)) => {
                self.bytes -= data.len();
                data.len()
            }
            None => 0,
        }
    }

    /// The events after `after`, shared; `None` as for [`EventLog::replay_after`].
    pub fn replay_shared_after(&self, after: u64) -> Option<Vec<(EventId, std::sync::Arc<str>)>> {
        self.replay_after(after).map(|events| {
            let skip = self.events.len() - events.len();
            self.events
                .iter()
                .skip(skip)
                .map(|(s, d)| {
                    (
                        EventId {
                            stream: self.stream.clone(),
                            seq: *s,
                        },
                        d.clone(),
                    )
                })
                .collect()
        })
    }

    /// The events after `after`, as `(id, data)`; `None` when some were already forgotten (or
    /// `after` is from the future), so the client cannot be made whole.
    pub fn replay_after(&self, after: u64) -> Option<Vec<(EventId, &str)>> {
        if after >= self.next {
            return None;
        }
        let first_kept = self.events.front().map_or(self.next, |(s, _)| *s);
        if after + 1 < first_kept {
            return None;
        }
        Some(
            self.events
                .iter()
                .filter(|(s, _)| *s > after)
                .map(|(s, d)| {
                    (
                        EventId {
                            stream: self.stream.clone(),
                            seq: *s,
                        },
                        &**d,
                    )
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_and_replay() {
        assert_eq!(
            EventId::parse("c-1.7"),
            Some(EventId {
                stream: "c-1".into(),
                seq: 7
            })
        );
        assert_eq!(EventId::parse("nope"), None);
        assert_eq!(EventId::parse(".3"), None);
        let mut log = EventLog::new("g", 3);
        for i in 1..=5 {
            assert_eq!(log.push(format!("m{i}")).to_string(), format!("g.{i}"));
        }
        let replay = log.replay_after(3).unwrap();
        assert_eq!(
            replay.iter().map(|(_, d)| *d).collect::<Vec<_>>(),
            ["m4", "m5"]
        );
        assert_eq!(log.replay_after(5).unwrap().len(), 0);
        assert!(log.replay_after(1).is_none(), "m2 was forgotten");
        assert!(log.replay_after(9).is_none(), "from the future");
    }
}
