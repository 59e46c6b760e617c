//! Reading Server-Sent Events: [`SseParser`], an incremental reader of the WHATWG event-stream
//! format, enough for MCP: `data`, `id`, `event` and `retry` fields, comments, and `\n`,
//! `\r\n` or `\r` line ends. Bytes arrive in arbitrary chunks; events come out whole.
//!
//! Plain bytes in, [`SseEvent`]s out: no I/O, so every reader of a Streamable HTTP answer
//! (mcp-client, the reverse client's upstream bridge) shares this one parser. Writing events is
//! [`crate::streamable::sse_event`].

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id:` field, when this event carried one.
    pub id: Option<String>,
    /// The `event:` field (`message` when absent, by the format's rule).
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`; empty for a priming event (an id and no data).
    pub data: String,
    /// The `retry:` field in milliseconds: how long to wait before reconnecting.
    pub retry: Option<u64>,
}

/// Turns chunks of bytes into events.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not yet ended.
    line: Vec<u8>,
    /// The event being built; `None` until a field arrives (blank lines alone dispatch nothing).
    event: Option<SseEvent>,
    /// Whether the data field has had a line yet (to know when to insert `\n`).
    has_data: bool,
    /// The previous chunk ended in `\r`, so a leading `\n` belongs to that line end.
    after_cr: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        SseParser::default()
    }

    /// Feeds `chunk`, returning the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in chunk {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line_done(&line) {
                        out.push(event);
                    }
                }
                _ => self.line.push(b),
            }
        }
        out
    }

    /// Handles one complete line; a blank one dispatches the event built so far.
    fn line_done(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            self.has_data = false;
            return self.event.take();
        }
        if line[0] == b':' {
            return None; // a comment, e.g. a keep-alive
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        let event = self.event.get_or_insert_with(SseEvent::default);
        match field {
            "data" => {
                if std::mem::replace(&mut self.has_data, true) {
                    event.data.push('\n');
                }
                event.data.push_str(value);
            }
            "id" if !value.contains('\0') => event.id = Some(value.to_owned()),
            "event" => event.event = Some(value.to_owned()),
            "retry" => event.retry = value.parse().ok(),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_across_chunks_and_line_ends() {
        let mut p = SseParser::new();
        let mut events = p.push(b": keep-alive\n\nid: s.1\nevent: mess");
        assert!(events.is_empty());
        events.extend(p.push(b"age\ndata: {\"a\":\r\ndata: 1}\r"));
        events.extend(p.push(b"\n\r\nid: s.2\nretry: 1500\ndata:\n\n"));
        assert_eq!(
            events,
            [
                SseEvent {
                    id: Some("s.1".into()),
                    event: Some("message".into()),
                    data: "{\"a\":\n1}".into(),
                    retry: None,
                },
                SseEvent {
                    id: Some("s.2".into()),
                    event: None,
                    data: String::new(),
                    retry: Some(1500),
                },
            ]
        );
    }

    #[test]
    fn data_of_events_split_across_chunks_and_lines() {
        let mut p = SseParser::new();
        let data = |events: Vec<SseEvent>| events.into_iter().map(|e| e.data).collect::<Vec<_>>();
        assert!(p.push(b": keep-alive\n\nid: 1\nda").is_empty());
        assert_eq!(data(p.push(b"ta: {\"a\":1}\r\n\r\n")), vec!["{\"a\":1}"]);
        assert_eq!(
            data(p.push(b"event: message\ndata: x\ndata:y\n\ndata: z\n\n")),
            vec!["x\ny", "z"]
        );
    }

    #[test]
    fn an_unterminated_event_is_not_dispatched() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: half").is_empty());
        assert!(p.push(b"\n").is_empty());
        assert_eq!(p.push(b"\n")[0].data, "half");
    }
}
