//! Write coalescing under TLS. OpenSSL hands every record (at most 16 KiB of data) to the
//! socket as a write of its own; gathering a writer's records until it flushes turns a
//! 64 KiB write into one send and one TCP segment to process at each end instead of four.
//!
//! Only for data written after the handshake ([`Coalesce::enable`]): OpenSSL flushes its
//! handshake flights itself, and a flush that has to wait is not something it expects then.
//! Buffered bytes go out when the writer flushes or shuts down, or when the buffer is full;
//! [`crate::relay::pipe`] flushes whenever the side it reads from has nothing more.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes held before they are sent: four full TLS records.
pub(crate) const COALESCE_LIMIT: usize = 4 * (16 * 1024 + 256);

thread_local! {
    /// A drained buffer kept for the next writer on this thread: a tunnel's buffer lives
    /// from its first write to its flush, so one per thread serves them all without an
    /// allocation per flush.
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// A buffer for a writer: this thread's spare, or a new one.
fn take_spare() -> Vec<u8> {
    let v = SPARE.with(Cell::take);
    if v.capacity() == 0 {
        Vec::with_capacity(COALESCE_LIMIT)
    } else {
        v
    }
}

/// Keeps a drained buffer for the next writer (one per thread; others are freed).
fn give_spare(mut v: Vec<u8>) {
    v.clear();
    SPARE.with(|s| {
        let kept = s.take();
        s.set(if kept.capacity() == 0 { v } else { kept });
    });
}

/// A stream whose writes are gathered (once enabled) until flushed; reads pass through. The
/// buffer is held only while it holds bytes (then it goes back to the thread's spare), so an
/// idle connection holds none.
#[derive(Debug)]
pub struct Coalesce<S> {
    inner: S,
    enabled: bool,
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    pos: usize,
}

impl<S> Coalesce<S> {
    /// Wraps `inner`, passing writes straight through until [`Coalesce::enable`].
    pub fn new(inner: S) -> Coalesce<S> {
        Coalesce {
            inner,
            enabled: false,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// Starts gathering writes (call after the TLS handshake).
    pub fn enable(&mut self) {
        self.enabled = true;
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Writes out everything buffered, then frees the buffer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pos < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pos += n;
        }
        if self.buf.capacity() > 0 {
            give_spare(std::mem::take(&mut self.buf));
        }
        self.pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.enabled {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        if this.buf.len() + data.len() > COALESCE_LIMIT {
            ready!(this.poll_drain(cx))?;
            if data.len() >= COALESCE_LIMIT {
                return Pin::new(&mut this.inner).poll_write(cx, data);
            }
        }
        if this.buf.capacity() == 0 {
            this.buf = take_spare();
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn gathers_until_flush_and_loses_nothing() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut c = Coalesce::new(near);
        c.write_all(b"handshake").await.unwrap();
        let mut got = vec![0u8; 9];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"handshake", "passes through before enable");
        c.enable();
        c.write_all(b"abc").await.unwrap();
        c.write_all(b"def").await.unwrap();
        let mut one = [0u8; 1];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), far.read(&mut one)).await;
        assert!(early.is_err(), "nothing sent before flush");
        c.flush().await.unwrap();
        let mut got = vec![0u8; 6];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"abcdef");
        // Flushed: the connection holds no buffer; the thread keeps it for the next writer.
        assert_eq!(c.buf.capacity(), 0);
        let spare = SPARE.with(|s| {
            let v = s.take();
            let cap = v.capacity();
            s.set(v);
            cap
        });
        assert_eq!(spare, COALESCE_LIMIT);
        // More than the limit in pieces: everything arrives, in order.
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(16_413) {
            c.write_all(chunk).await.unwrap();
        }
        c.shutdown().await.unwrap();
        let mut rest = Vec::new();
        far.read_to_end(&mut rest).await.unwrap();
        assert!(rest == data);
    }
}
