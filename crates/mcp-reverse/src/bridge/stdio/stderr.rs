//! A child's stderr, drained to our log: read as bytes to EOF whatever it holds (invalid
//! UTF-8, lines of any length), decoded lossily, each line capped at [`STDERR_LINE_MAX`].
//!
//! The pipe is never closed early: a child whose stderr is closed dies of EPIPE (or SIGPIPE)
//! at its next write, so junk on stderr must cost a log line, not the server.

use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::{debug, info};

/// The most bytes of one stderr line that reach the log; the rest of the line, up to its
/// newline, is discarded and counted in a note "… (N bytes cut)".
pub(super) const STDERR_LINE_MAX: usize = 4 * 1024;

/// How much is read from the pipe at once.
const READ_CHUNK: usize = 8 * 1024;

/// Logs every line of `stderr` under the child's `label` until EOF.
pub(super) async fn drain(stderr: impl AsyncRead + Unpin, label: String) {
    drain_with(stderr, |line| {
        info!(target: "mcp_reverse::child", slot = %label, "{line}");
    })
    .await;
    debug!(slot = %label, "the MCP server closed its stderr");
}

/// Reads `stderr` to EOF, handing each (capped, lossily decoded) line to `emit`.
async fn drain_with(mut stderr: impl AsyncRead + Unpin, mut emit: impl FnMut(&str)) {
    let mut buffer = vec![0; READ_CHUNK];
    let mut lines = CappedLines::default();
    loop {
        match stderr.read(&mut buffer).await {
            Ok(0) => break,
            Ok(n) => lines.push(&buffer[..n], &mut emit),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A pipe read fails only when the pipe itself is broken: nothing more will come.
            Err(_) => break,
        }
    }
    lines.finish(&mut emit);
}

/// Splits a byte stream into lines of at most [`STDERR_LINE_MAX`] bytes.
#[derive(Default)]
struct CappedLines {
    /// The kept start of the current line.
    line: Vec<u8>,
    /// Bytes of the current line beyond the cap, discarded.
    cut: usize,
}

impl CappedLines {
    /// Takes the next bytes; emits each line they complete.
    fn push(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(&str)) {
        while !bytes.is_empty() {
            let (part, rest, ended) = match bytes.iter().position(|&b| b == b'\n') {
                Some(end) => (&bytes[..end], &bytes[end + 1..], true),
                None => (bytes, &[][..], false),
            };
            let keep = part.len().min(STDERR_LINE_MAX - self.line.len());
            self.line.extend_from_slice(&part[..keep]);
            self.cut += part.len() - keep;
            if ended {
                self.emit(emit);
            }
            bytes = rest;
        }
    }

    /// EOF: emits the last line if it had no newline.
    fn finish(&mut self, emit: &mut impl FnMut(&str)) {
        if !self.line.is_empty() || self.cut > 0 {
            self.emit(emit);
        }
    }

    fn emit(&mut self, emit: &mut impl FnMut(&str)) {
        let kept = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        let mut text = String::from_utf8_lossy(kept).into_owned();
        if self.cut > 0 {
            text.push_str(&format!(" … ({} bytes cut)", self.cut));
        }
        if !text.trim().is_empty() {
            emit(&text);
        }
        self.line.clear();
        self.cut = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        drain_with(input, |line| lines.push(line.to_owned())).await;
        lines
    }

    #[tokio::test]
    async fn invalid_utf8_is_logged_lossily_and_reading_goes_on() {
        let lines = lines_of(b"ok\n\xff\xfe bad \xc3\x28\r\nafter\nno newline").await;
        assert_eq!(
            lines,
            [
                "ok",
                "\u{fffd}\u{fffd} bad \u{fffd}(",
                "after",
                "no newline"
            ]
        );
    }

    #[tokio::test]
    async fn an_over_long_line_is_cut_at_the_cap_and_the_rest_discarded() {
        let mut input = vec![b'x'; 1024 * 1024];
        input.extend_from_slice(b"\nnext\n");
        let lines = lines_of(&input).await;
        assert_eq!(lines.len(), 2, "{:?}", lines.iter().map(String::len));
        let cut = 1024 * 1024 - STDERR_LINE_MAX;
        assert_eq!(
            lines[0],
            format!("{} … ({cut} bytes cut)", "x".repeat(STDERR_LINE_MAX))
        );
        assert_eq!(lines[1], "next");
    }

    #[test]
    fn a_line_split_across_reads_is_capped_as_one() {
        let mut lines = CappedLines::default();
        let mut out = Vec::new();
        let mut emit = |l: &str| out.push(l.to_owned());
        lines.push(&vec![b'a'; STDERR_LINE_MAX - 1], &mut emit);
        lines.push(b"bcd", &mut emit);
        lines.push(b"e\n", &mut emit);
        lines.finish(&mut emit);
        let expected = format!("{}b … (3 bytes cut)", "a".repeat(STDERR_LINE_MAX - 1));
        assert_eq!(out, [expected]);
    }
}
