//! The gateway side of PROXY protocol listeners: learn the real client address before the
//! TLS handshake, or refuse the connection. A refusal is a [`Refused`] like any other, so it
//! is audited, counted and rate-limited per source on the same path.

use super::Snapshot;
use crate::config::ProxyListener;
use crate::gateway::refused::Refused;
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// The address the connection from `peer` on `listener` really comes from: `peer` itself on
/// a plain listener, the address in the PROXY header on a PROXY listener.
pub(super) async fn real_peer(
    sock: &mut TcpStream,
    peer: SocketAddr,
    listener: SocketAddr,
    snap: &Snapshot,
) -> Result<SocketAddr, Refused> {
    let Some(pl) = ProxyListener::find(&snap.cfg.proxy_listeners, listener) else {
        return Ok(peer);
    };
    let real =
        crate::proxy_protocol::inbound::receive(sock, peer, &pl.from, snap.cfg.handshake_timeout)
            .await
            .map_err(Refused::ProxyHeader)?;
    tracing::Span::current().record("peer", tracing::field::display(real));
    tracing::debug!(balancer = %peer, client = %real, "PROXY header received");
    Ok(real)
}
