//! What one connection is doing, watched: requests in flight, the start of a request head
//! that has not finished, and when the connection last went idle; the IO wrapper and the body
//! wrappers that feed it, and the deadline they imply.
//!
//! hyper's own `header_read_timeout` starts when an HTTP/1 connection becomes idle, so it
//! would also be the keep-alive limit; the proxy wants the two apart (a short limit on a head
//! that has started, a longer one on a quiet kept-alive connection), and the same idle rule
//! for HTTP/2, where hyper has none. A connection with a request in flight (a held poll, an
//! SSE stream) has no deadline at all: only its request's own deadlines apply.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// No head has started (the value of `head_started` between requests).
const NONE: u64 = u64::MAX;

/// The first bytes of an HTTP/2 connection with prior knowledge (`PRI * HTTP/2.0`).
const H2_PREFACE_START: &[u8] = b"PRI ";

/// Why a connection's deadline passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// A request head started and did not finish within the header timeout.
    Header,
    /// No request for the idle timeout.
    Idle,
}

/// One connection's state, shared by its IO, its requests and its watchdog.
#[derive(Debug)]
pub(crate) struct Watch {
    /// When the connection was accepted; the times below are milliseconds since then.
    start: Instant,
    /// Requests whose response has not been written to its end.
    in_flight: AtomicUsize,
    /// When the connection last had no request in flight.
    idle_since: AtomicU64,
    /// When the first byte of a request head arrived while idle ([`NONE`] if none did).
    head_started: AtomicU64,
    /// The connection speaks HTTP/2, whose idle connections carry frames (pings, window
    /// updates) that are not request heads.
    http2: AtomicBool,
}

impl Watch {
    /// A connection accepted now, idle.
    pub(crate) fn new(http2: bool) -> Arc<Self> {
        Arc::new(Watch {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NONE),
            http2: AtomicBool::new(http2),
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Bytes arrived: if nothing is in flight they start a request head.
    fn on_read(&self, first: &[u8], first_read: bool) {
        if first_read && first.starts_with(H2_PREFACE_START) {
            self.http2.store(true, Ordering::Relaxed);
        }
        if self.in_flight.load(Ordering::Acquire) == 0
            && !self.http2.load(Ordering::Relaxed)
            && self.head_started.load(Ordering::Relaxed) == NONE
        {
            self.head_started.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// A request's head is complete and it is being served; the guard ends it when dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NONE, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// When the watchdog looks next, and what it closes for if the connection is in the
    /// same state then: a head's or an idle connection's deadline, or (a request in flight)
    /// no reason, only a look.
    ///
    /// No request start or end wakes the watchdog (that would cost a task wake-up per
    /// request): it looks at least every `header` instead, which still finds a head that
    /// started since its last look before that head's own deadline, so every deadline is
    /// kept exactly.
    pub(crate) fn next_look(&self, header: Duration, idle: Duration) -> (Instant, Option<Expiry>) {
        let now = Instant::now();
        let soon = now + header;
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return (soon, None);
        }
        let at = |ms: u64, d: Duration| self.start + Duration::from_millis(ms) + d;
        let (deadline, why) = match self.head_started.load(Ordering::Relaxed) {
            NONE => (
                at(self.idle_since.load(Ordering::Relaxed), idle),
                Expiry::Idle,
            ),
            ms => {
                let header_at = at(ms, header);
                let idle_at = at(self.idle_since.load(Ordering::Relaxed), idle);
                if header_at < idle_at {
                    (header_at, Expiry::Header)
                } else {
                    (idle_at, Expiry::Idle)
                }
            }
        };
        if deadline <= soon {
            (deadline, Some(why))
        } else {
            (soon, None)
        }
    }
}

impl Watch {
    /// Nothing is in flight and a head started over `header` ago.
    pub(crate) fn head_overdue(&self, header: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && match self.head_started.load(Ordering::Relaxed) {
                NONE => false,
                ms => self.start.elapsed() >= Duration::from_millis(ms) + header,
            }
    }

    /// Nothing is in flight, and nothing was for `idle`.
    pub(crate) fn idle_overdue(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self.start.elapsed()
                >= Duration::from_millis(self.idle_since.load(Ordering::Relaxed)) + idle
    }
}

/// A request in flight on its connection; dropping it (with the response body, once written
/// or abandoned) lets the connection go idle.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Watch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let w = &self.0;
        if w.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            w.idle_since.store(w.now_ms(), Ordering::Relaxed);
        }
    }
}

/// A connection's IO, reporting the bytes it reads to its [`Watch`].
pub(crate) struct WatchedIo<T> {
    inner: T,
    watch: Arc<Watch>,
    read_any: bool,
}

impl<T> WatchedIo<T> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: T, watch: Arc<Watch>) -> Self {
        WatchedIo {
            inner,
            watch,
            read_any: false,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let first_read = !self.read_any;
            self.read_any = true;
            self.watch.on_read(&buf.filled()[before..], first_read);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The error a request body gives when its sender stalls.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled: no bytes for {0:?}")]
pub(crate) struct BodyStalled(pub(crate) Duration);

/// A request body that fails when no bytes arrive for `timeout` while it is being read, and
/// tells its [`ReadToEnd`] once it has been read to its end.
pub(crate) struct StallGuardedBody<B> {
    inner: B,
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    read: ReadToEnd,
}

/// Whether a request's body was read to its end (a body-less request's at once).
#[derive(Clone, Default)]
pub(crate) struct ReadToEnd(Arc<AtomicBool>);

impl ReadToEnd {
    /// Whether the body was read to its end.
    pub(crate) fn done(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl<B: HttpBody> StallGuardedBody<B> {
    /// Wraps `inner`; `read` learns when it has been read to its end.
    pub(crate) fn new(inner: B, timeout: Duration, read: ReadToEnd) -> Self {
        read.0.store(inner.is_end_stream(), Ordering::Relaxed);
        StallGuardedBody {
            inner,
            timeout,
            timer: None,
            read,
        }
    }
}

impl<B> HttpBody for StallGuardedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                // Progress: the next wait starts its own timeout (reset lazily).
                self.timer = None;
                if frame.is_none() || self.inner.is_end_stream() {
                    self.read.0.store(true, Ordering::Relaxed);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyStalled(timeout).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request in flight until hyper drops it (written or
/// abandoned).
pub(crate) struct HeldBody {
    inner: Body,
    _in_flight: InFlight,
}

impl HeldBody {
    /// Wraps `inner`, holding `in_flight` for its life.
    pub(crate) fn new(inner: Body, in_flight: InFlight) -> Self {
        HeldBody {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl HttpBody for HeldBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn an_idle_connection_expires_after_the_idle_timeout() {
        let w = Watch::new(false);
        // Looks every header timeout until the idle deadline is within one.
        assert_eq!(w.next_look(HEADER, IDLE).1, None);
        let (at, why) = w.next_look(HEADER, HEADER / 2);
        assert_eq!(why, Some(Expiry::Idle));
        assert_eq!(at, w.start + HEADER / 2);
        assert!(!w.idle_overdue(HEADER / 2));
        assert!(w.idle_overdue(Duration::ZERO));
    }

    #[test]
    fn a_started_head_expires_after_the_header_timeout() {
        let w = Watch::new(false);
        w.on_read(b"POST /mess", true);
        assert_eq!(w.next_look(HEADER, IDLE).1, Some(Expiry::Header));
        assert!(!w.head_overdue(HEADER));
        assert!(w.head_overdue(Duration::ZERO));
    }

    #[test]
    fn a_request_in_flight_has_no_deadline_and_its_end_restarts_idle() {
        let w = Watch::new(false);
        w.on_read(b"GET /poll", true);
        let guard = w.begin();
        assert_eq!(
            w.next_look(HEADER, HEADER).1,
            None,
            "a held poll is never cut"
        );
        assert!(!w.idle_overdue(Duration::ZERO) && !w.head_overdue(Duration::ZERO));
        // Bytes while a request is in flight start no head (HTTP/2 streams, pipelining).
        w.on_read(b"more", false);
        drop(guard);
        assert_eq!(w.next_look(HEADER, HEADER).1, Some(Expiry::Idle));
    }

    #[test]
    fn http2_frames_while_idle_start_no_head() {
        let w = Watch::new(false);
        w.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", true);
        assert_eq!(w.next_look(HEADER, HEADER).1, Some(Expiry::Idle));
        assert!(!w.head_overdue(Duration::ZERO));
    }
}
