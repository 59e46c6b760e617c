//! [`SseReader`]: the `data` of server-sent events, from a byte stream split anywhere (the
//! upstream bridge's answers and GET streams).

/// Splits an SSE byte stream into the `data` of its events.
#[derive(Default)]
pub(super) struct SseReader {
    buffer: Vec<u8>,
    data: String,
}

impl SseReader {
    /// Takes the next bytes; returns the events they complete.
    pub(super) fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(std::mem::take(&mut self.data));
                }
            } else if let Some(value) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
            // `event:`, `id:`, `retry:` and comments do not change what is forwarded.
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::SseReader;

    #[test]
    fn sse_events_split_across_chunks_and_lines() {
        let mut reader = SseReader::default();
        assert!(reader.push(b": keep-alive\n\nid: 1\nda").is_empty());
        assert_eq!(reader.push(b"ta: {\"a\":1}\r\n\r\n"), vec!["{\"a\":1}"]);
        assert_eq!(
            reader.push(b"event: message\ndata: x\ndata:y\n\ndata: z\n\n"),
            vec!["x\ny", "z"]
        );
    }
}
