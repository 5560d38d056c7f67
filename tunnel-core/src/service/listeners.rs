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

/// The one accept loop of the crate (gateway, agent, HTTP servers): accepts on `listener`
/// until `stop` is cancelled, sets `TCP_NODELAY`, hands each connection to `on_conn`, and
/// backs off on errors such as EMFILE instead of spinning.
pub(crate) async fn accept_until<F>(
    listener: &TcpListener,
    stop: &CancellationToken,
    mut on_conn: F,
) where
    F: FnMut(TcpStream, SocketAddr),
{
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((sock, peer)) => {
                backoff = Duration::from_millis(10);
                let _ = sock.set_nodelay(true);
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
