//! The gateway's connection to a backend: TCP (`host:port`) or a Unix stream socket
//! (`unix:/path`), behind one stream type so the copy loop does not care which.

use crate::config::BackendTarget;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A connected backend.
#[derive(Debug)]
pub(crate) enum Upstream {
    /// Over TCP.
    Tcp(TcpStream),
    /// Over a Unix stream socket.
    Unix(UnixStream),
}

/// Dials `target` (no timeout: the caller bounds it with `connect_timeout`).
pub(crate) async fn connect(target: &BackendTarget) -> io::Result<Upstream> {
    match target {
        BackendTarget::Tcp(a) => {
            let s = TcpStream::connect(a).await?;
            let _ = s.set_nodelay(true);
            Ok(Upstream::Tcp(s))
        }
        BackendTarget::Unix(p) => Ok(Upstream::Unix(UnixStream::connect(p).await?)),
    }
}

impl AsyncRead for Upstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Upstream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upstream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Upstream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Upstream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Upstream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn unix_backend_carries_bytes_and_half_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            s.write_all(&got).await.unwrap();
        });
        let mut up = connect(&BackendTarget::Unix(path)).await.unwrap();
        up.write_all(b"ping").await.unwrap();
        up.shutdown().await.unwrap();
        let mut back = Vec::new();
        up.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"ping");
        server.await.unwrap();
    }
}
