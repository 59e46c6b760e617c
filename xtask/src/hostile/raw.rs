//! Raw HTTP/1.1 on loopback for the hostile scenario: sockets bound to a chosen source address
//! (each attack comes from its own 127.0.0.x, so per-address caps are measured per attacker),
//! requests written byte by byte as an attacker would, statuses tallied.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Longest wait for one whole exchange (a multi-MiB body included).
const EXCHANGE_DEADLINE: Duration = Duration::from_secs(20);

/// Opens a TCP connection to `dst` from `src` (any port).
pub(super) async fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> Result<TcpStream, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::new(IpAddr::V4(src), 0))
        .map_err(|e| format!("bind {src}: {e}"))?;
    let stream = socket
        .connect(dst)
        .await
        .map_err(|e| format!("connect {dst} from {src}: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// One HTTP/1.1 request with `Content-Length` and `Connection: close` (the answer ends at EOF).
pub(super) fn request(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// An answer: its status and (when read) the start of its body.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) body: String,
}

/// Sends `request` from `src` and reads the answer: its head, and the body too when
/// `read_body` (else the connection is dropped once the head is in). Writing and reading run
/// at once, so an early answer (413 before the body is read) is seen even if the write fails.
pub(super) async fn exchange(
    src: Ipv4Addr,
    dst: SocketAddr,
    request: &[u8],
    read_body: bool,
) -> Result<Answer, String> {
    let stream = connect_from(src, dst).await?;
    let work = async move {
        let (mut r, mut w) = stream.into_split();
        let write = async move {
            let result = w.write_all(request).await;
            // Keep the write half open until the read is done: dropping it would half-close.
            (result, w)
        };
        let read = async move {
            let mut buf = Vec::with_capacity(4096);
            let mut chunk = [0u8; 16 * 1024];
            let mut head_end = None;
            loop {
                match r.read(&mut chunk).await {
                    Ok(0) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if buf.is_empty() => return Err(format!("read: {e}")),
                    Err(_) => break,
                }
                if head_end.is_none() {
                    head_end = find(&buf, b"\r\n\r\n");
                    if head_end.is_some() && !read_body {
                        break;
                    }
                }
                if buf.len() > 1 << 20 {
                    break;
                }
            }
            let status = parse_status(&buf).ok_or_else(|| {
                format!(
                    "no HTTP status in {:?}",
                    String::from_utf8_lossy(&buf[..buf.len().min(120)])
                )
            })?;
            let body = head_end
                .map(|h| {
                    String::from_utf8_lossy(&buf[h + 4..])
                        .chars()
                        .take(300)
                        .collect()
                })
                .unwrap_or_default();
            Ok(Answer { status, body })
        };
        let ((written, _w), answer) = tokio::join!(write, read);
        match (answer, written) {
            (Ok(a), _) => Ok(a),
            (Err(e), Err(w)) => Err(format!("{e} (write: {w})")),
            (Err(e), Ok(())) => Err(e),
        }
    };
    tokio::time::timeout(EXCHANGE_DEADLINE, work)
        .await
        .map_err(|_| format!("no answer within {EXCHANGE_DEADLINE:?}"))?
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The status of `HTTP/1.x NNN ...`.
fn parse_status(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    words.next().filter(|v| v.starts_with("HTTP/1."))?;
    words.next()?.parse().ok()
}

/// What happened to one slow-header connection.
#[derive(Clone, Copy, Debug)]
pub(super) enum Slow {
    /// Could not even connect (or write the head's start).
    Failed,
    /// The proxy closed it: when the head's start was written, and when EOF (or a reset) came,
    /// both since the scenario's epoch.
    Closed { sent: Duration, closed: Duration },
    /// Still open when we stopped waiting.
    Open { sent: Duration },
}

/// The start of a request head that never ends.
pub(super) const SLOW_HEAD: &[u8] = b"POST /message HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

/// Writes [`SLOW_HEAD`] on a connected stream and waits (up to `wait`) for the proxy to close it.
pub(super) async fn slow_head(mut stream: TcpStream, epoch: Instant, wait: Duration) -> Slow {
    if stream.write_all(SLOW_HEAD).await.is_err() {
        // Already closed by the proxy: refused at once.
        let at = epoch.elapsed();
        return Slow::Closed {
            sent: at,
            closed: at,
        };
    }
    let sent = epoch.elapsed();
    let mut chunk = [0u8; 1024];
    let read_to_eof = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // a 408 or similar before the close: keep reading
            }
        }
    };
    match tokio::time::timeout(wait, read_to_eof).await {
        Ok(()) => Slow::Closed {
            sent,
            closed: epoch.elapsed(),
        },
        Err(_) => Slow::Open { sent },
    }
}

/// Statuses (or errors) seen by one attack, by kind.
#[derive(Debug, Default, Clone)]
pub(super) struct Tally(pub(super) BTreeMap<String, usize>);

impl Tally {
    /// Counts one outcome.
    pub(super) fn add(&mut self, outcome: &Result<Answer, String>) {
        let key = match outcome {
            Ok(a) => a.status.to_string(),
            Err(e) => format!("error({})", e.split(':').next().unwrap_or(e)),
        };
        *self.0.entry(key).or_default() += 1;
    }

    /// How many answers had `status`.
    pub(super) fn count(&self, status: u16) -> usize {
        self.0.get(&status.to_string()).copied().unwrap_or(0)
    }

    /// All outcomes counted.
    pub(super) fn total(&self) -> usize {
        self.0.values().sum()
    }

    /// Whether every outcome was `status`.
    pub(super) fn all(&self, status: u16) -> bool {
        self.total() > 0 && self.count(status) == self.total()
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return write!(f, "none");
        }
        let parts: Vec<String> = self.0.iter().map(|(k, n)| format!("{k} x{n}")).collect();
        write!(f, "{}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status() {
        assert_eq!(parse_status(b"HTTP/1.1 403 Forbidden\r\n"), Some(403));
        assert_eq!(parse_status(b"garbage"), None);
    }

    #[test]
    fn builds_a_request() {
        let r = request("POST", "/x", "h:1", &[("A", "b")], b"{}");
        assert_eq!(
            r,
            b"POST /x HTTP/1.1\r\nHost: h:1\r\nA: b\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
    }
}
