//! A TLS stream that gives its record buffers back whenever it has to wait for the peer.
//!
//! `SSL_MODE_RELEASE_BUFFERS` frees OpenSSL's read buffer (16.7 KiB) only on some paths: a
//! client agent's connection kept it after reading the gateway's session tickets, so every
//! idle tunnel held one (heaptrack of 2,000 idle tunnels: 16.6 KiB each, more than half of
//! the agent's memory per tunnel). [`Lean`] frees the buffers, when they hold nothing, each
//! time a read finds no data; a busy tunnel pays what `RELEASE_BUFFERS` already costs (the
//! buffer is allocated again for the next record).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_openssl::SslStream;

/// `inner`, whose idle connection holds no record buffer.
pub struct Lean<S>(pub SslStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Lean<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.0).poll_read(cx, buf);
        if r.is_pending() {
            super::ffi::free_idle_buffers(self.0.ssl());
        }
        r
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lean<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
