//! The gateway side of PROXY protocol listeners: learn the real client address before the
//! TLS handshake, or refuse (audited and counted) the connection.

use super::{Gateway, Snapshot};
use crate::audit::AuditRecord;
use crate::config::ProxyListener;
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// The address the connection from `peer` on `listener` really comes from: `peer` itself on
/// a plain listener, the address in the PROXY header on a PROXY listener. `None` when the
/// connection was refused (its audit event is written).
pub(super) async fn real_peer(
    sock: &mut TcpStream,
    peer: SocketAddr,
    listener: SocketAddr,
    snap: &Snapshot,
    gw: &Gateway,
) -> Option<SocketAddr> {
    let Some(pl) = ProxyListener::find(&snap.cfg.proxy_listeners, listener) else {
        return Some(peer);
    };
    match crate::proxy_protocol_in::receive(sock, peer, &pl.from, snap.cfg.handshake_timeout).await
    {
        Ok(real) => {
            tracing::Span::current().record("peer", tracing::field::display(real));
            tracing::debug!(balancer = %peer, client = %real, "PROXY header received");
            Some(real)
        }
        Err(refused) => {
            gw.service()
                .metrics
                .connection("", refused.outcome.as_str());
            gw.service().metrics.handshake_failure("proxy_protocol");
            let mut rec = AuditRecord::new(peer);
            rec.reason = refused.reason;
            rec.finish(refused.outcome);
            None
        }
    }
}
