//! Accepting connections, shared by the gateway and the client agent: an accept loop that
//! never does TLS work, backs off on errors such as EMFILE, and hands each connection over
//! with its slot under `max_connections` ([`crate::gateway::admission::Limit`]).

use crate::gateway::admission::Limit;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Accepts on `listener` until `stop` is cancelled. Each connection is handed to `on_conn`
/// with its slot, or with `None` when the limit is reached (the caller closes it at once).
pub(crate) async fn accept_loop<F>(
    listener: TcpListener,
    limit: Arc<Limit>,
    stop: CancellationToken,
    mut on_conn: F,
) where
    F: FnMut(TcpStream, SocketAddr, Option<OwnedSemaphorePermit>),
{
    accept_until(&listener, &stop, |sock, peer| {
        on_conn(sock, peer, limit.try_acquire())
    })
    .await
}

/// A listener the one accept loop serves: TCP (gateway, agent, HTTP servers) or a Unix
/// stream socket (the admin socket).
pub(crate) trait Accept {
    /// An accepted connection.
    type Stream;
    /// Its peer address.
    type Peer;
    /// `accept`, as a poll.
    fn poll_accept(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<(Self::Stream, Self::Peer)>>;
    /// Set-up of each accepted connection before it is handed over.
    fn prepare(_stream: &Self::Stream) {}
}

impl Accept for TcpListener {
    type Stream = TcpStream;
    type Peer = SocketAddr;
    fn poll_accept(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<(TcpStream, SocketAddr)>> {
        TcpListener::poll_accept(self, cx)
    }
    fn prepare(stream: &TcpStream) {
        let _ = stream.set_nodelay(true);
    }
}

impl Accept for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    type Peer = tokio::net::unix::SocketAddr;
    fn poll_accept(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<(Self::Stream, Self::Peer)>> {
        tokio::net::UnixListener::poll_accept(self, cx)
    }
}

/// The one accept loop of the crate (gateway, agent, HTTP servers, admin socket): accepts on
/// `listener` until `stop` is cancelled, sets `TCP_NODELAY` on TCP, hands each connection to
/// `on_conn`, and backs off on errors such as EMFILE instead of spinning.
pub(crate) async fn accept_until<L, F>(listener: &L, stop: &CancellationToken, mut on_conn: F)
where
    L: Accept,
    F: FnMut(L::Stream, L::Peer),
{
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            r = std::future::poll_fn(|cx| listener.poll_accept(cx)) => r,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((sock, peer)) => {
                backoff = Duration::from_millis(10);
                L::prepare(&sock);
                on_conn(sock, peer);
            }
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS...: wait rather than spin.
                warn!(error = %e, "accept failed; backing off");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
