//! Byte copying between the two sides of a tunnel: both directions at once, half-close (FIN
//! or TLS close_notify) propagated, bytes counted as they move (so counts survive an abort),
//! and an idle timeout.
//!
//! An idle tunnel holds no copy buffer: each direction reads into a per-thread buffer and
//! writes straight on; only bytes the writer cannot take yet are kept, in a buffer owned by
//! that direction until they are written.

use prometheus_client::metrics::counter::Counter;
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

mod coalesce;
mod on_wake;
pub(crate) use coalesce::{Coalesce, COALESCE_LIMIT};
use on_wake::OnWake;

/// Size of the per-thread read buffer: four full TLS records, so that a busy tunnel moves
/// data in 64 KiB writes (fewer system calls and TCP segments per byte).
pub(crate) const COPY_BUFFER: usize = 64 * 1024;

thread_local! {
    /// The buffer every tunnel polled on this thread reads into. Nothing stays in it between
    /// polls: what the writer does not take at once is copied to the direction's own buffer.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; COPY_BUFFER]);
}

/// One direction of a tunnel: reader to writer, then the writer shut down at EOF.
#[derive(Default)]
struct Direction {
    /// Bytes read but not yet written (only while the writer pushes back), and how many of
    /// them are written.
    pending: Option<(Box<[u8]>, usize)>,
    eof: bool,
    need_flush: bool,
    done: bool,
}

impl Direction {
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut r: Pin<&mut R>,
        mut w: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            // Bytes left over from an earlier read go first.
            if let Some((buf, pos)) = &mut self.pending {
                while *pos < buf.len() {
                    let n = ready!(w.as_mut().poll_write(cx, &buf[*pos..]))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    *pos += n;
                    self.need_flush = true;
                }
                self.pending = None;
            }
            if self.eof {
                if self.need_flush {
                    ready!(w.as_mut().poll_flush(cx))?;
                    self.need_flush = false;
                }
                ready!(w.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let read = SCRATCH.with(|cell| match cell.try_borrow_mut() {
                Ok(mut scratch) => self.forward(cx, r.as_mut(), w.as_mut(), &mut scratch),
                // Only if a stream's own poll ran another tunnel on this thread.
                Err(_) => self.forward(cx, r.as_mut(), w.as_mut(), &mut vec![0; COPY_BUFFER]),
            });
            if read.is_pending() {
                if self.need_flush {
                    ready!(w.as_mut().poll_flush(cx))?;
                    self.need_flush = false;
                }
                return Poll::Pending;
            }
            ready!(read)?;
        }
    }

    /// Reads into `scratch` and writes what was read; keeps what the writer refused.
    /// Pending only when the reader had nothing at all.
    fn forward<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: Pin<&mut R>,
        mut w: Pin<&mut W>,
        scratch: &mut [u8],
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        // Read until the buffer is full or the reader has nothing more right now, so that
        // the writer gets one large write rather than one per TLS record.
        let mut r = r;
        let mut n = 0;
        while n < scratch.len() {
            let mut rb = ReadBuf::new(&mut scratch[n..]);
            match r.as_mut().poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    self.eof = true;
                    break;
                }
                Poll::Ready(Ok(())) => n += rb.filled().len(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if n == 0 => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        if n == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut off = 0;
        while off < n {
            match w.as_mut().poll_write(cx, &scratch[off..n]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(k)) => {
                    off += k;
                    self.need_flush = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // The writer will wake us; the rest is written from `pending` then. A TLS
                // writer retried with the same bytes from another address is fine
                // (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER, set by the openssl crate).
                Poll::Pending => break,
            }
        }
        if off < n {
            self.pending = Some((scratch[off..n].into(), 0));
        }
        Poll::Ready(Ok(()))
    }
}

/// Copies both ways between `a` and `b` until both directions have reached EOF (each
/// writer shut down after its reader's EOF) or either side fails.
struct CopyBoth<'a, A: ?Sized, B: ?Sized> {
    a: &'a mut A,
    b: &'a mut B,
    a_to_b: Direction,
    b_to_a: Direction,
}

impl<A, B> Future for CopyBoth<'_, A, B>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.a_to_b.done {
            let r = this
                .a_to_b
                .poll_copy(cx, Pin::new(&mut *this.a), Pin::new(&mut *this.b));
            if let Poll::Ready(Err(e)) = r {
                return Poll::Ready(Err(e));
            }
        }
        if !this.b_to_a.done {
            let r = this
                .b_to_a
                .poll_copy(cx, Pin::new(&mut *this.b), Pin::new(&mut *this.a));
            if let Poll::Ready(Err(e)) = r {
                return Poll::Ready(Err(e));
            }
        }
        if this.a_to_b.done && this.b_to_a.done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

/// Byte counters and last-activity time shared by both directions of one tunnel.
#[derive(Debug)]
pub struct Counters {
    start: Instant,
    /// Bytes read from side A (and written to B).
    pub a_to_b: AtomicU64,
    /// Bytes read from side B (and written to A).
    pub b_to_a: AtomicU64,
    last_ms: AtomicU64,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters::new()
    }
}

impl Counters {
    /// Zero counts, active now.
    pub fn new() -> Counters {
        Counters {
            start: Instant::now(),
            a_to_b: AtomicU64::new(0),
            b_to_a: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long no byte has moved in either direction.
    pub fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A stream that counts the bytes read from it into one counter.
struct Metered<'a, S> {
    inner: S,
    counters: &'a Counters,
    read_counter: &'a AtomicU64,
    meter: Option<Counter>,
}

impl<'a, S> Metered<'a, S> {
    /// `inner`, counting what is read from it into `read_counter` (and `meter`) and
    /// marking `counters` active. A plain struct on the stack: the relay stays
    /// allocation-free.
    fn new(
        inner: S,
        counters: &'a Counters,
        read_counter: &'a AtomicU64,
        meter: Option<Counter>,
    ) -> Self {
        Metered {
            inner,
            counters,
            read_counter,
            meter,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let n = (buf.filled().len() - before) as u64;
            if n > 0 {
                self.read_counter.fetch_add(n, Ordering::Relaxed);
                self.counters.touch();
                if let Some(m) = &self.meter {
                    m.inc_by(n);
                }
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How a tunnel ended.
#[derive(Debug)]
pub(crate) enum End {
    /// Both sides finished (EOF each way).
    Closed,
    /// No byte moved for the idle timeout.
    Idle,
    /// Cut short by shutdown.
    Cancelled,
    /// An I/O error on either side (reset, TLS error, ...).
    Error(io::Error),
}

/// The result of [`pipe`].
#[derive(Debug)]
pub(crate) struct Piped {
    /// Bytes from A to B.
    pub a_to_b: u64,
    /// Bytes from B to A.
    pub b_to_a: u64,
    /// Why it ended.
    pub end: End,
}

/// Copies between `a` and `b` until both directions reach EOF, an error occurs, nothing moves
/// for `idle`, or `cancel` completes. `meters` (A→B, B→A), when given, are bumped as bytes
/// move so that metrics show long-lived tunnels too.
pub(crate) async fn pipe<A, B, C>(
    a: A,
    b: B,
    idle: Duration,
    cancel: C,
    meters: Option<(Counter, Counter)>,
) -> Piped
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
    C: std::future::Future<Output = ()>,
{
    pipe_counted(a, b, idle, cancel, meters, Arc::new(Counters::new())).await
}

/// [`pipe`] counting into `counters`, which others may read while the tunnel lives (the
/// admin socket's session list).
pub(crate) async fn pipe_counted<A, B, C>(
    a: A,
    b: B,
    idle: Duration,
    cancel: C,
    meters: Option<(Counter, Counter)>,
    counters: Arc<Counters>,
) -> Piped
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
    C: std::future::Future<Output = ()>,
{
    let (meter_ab, meter_ba) = meters.unzip();
    let mut ma = Metered::new(a, &counters, &counters.a_to_b, meter_ab);
    let mut mb = Metered::new(b, &counters, &counters.b_to_a, meter_ba);
    let idle_watch = async {
        loop {
            let quiet = counters.idle_for();
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    // The watchers are polled only when one of them woke, not for every record moved.
    let mut watch = OnWake::new(async {
        tokio::select! {
            _ = idle_watch => End::Idle,
            _ = cancel => End::Cancelled,
        }
    });
    let mut copy = CopyBoth {
        a: &mut ma,
        b: &mut mb,
        a_to_b: Direction::default(),
        b_to_a: Direction::default(),
    };
    let end = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = Pin::new(&mut copy).poll(cx) {
            return Poll::Ready(match r {
                Ok(()) => End::Closed,
                Err(e) => End::Error(e),
            });
        }
        Pin::new(&mut watch).poll(cx)
    })
    .await;
    Piped {
        a_to_b: counters.a_to_b.load(Ordering::Relaxed),
        b_to_a: counters.b_to_a.load(Ordering::Relaxed),
        end,
    }
}

/// Whether an I/O error is an ordinary disconnect (logged at debug, not warn).
pub(crate) fn is_disconnect(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected
    )
}

#[cfg(test)]
mod tests;
