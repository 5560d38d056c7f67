//! One gateway connection, from TCP accept to its audit event, in named phases: handshake
//! (under a deadline, evictable), then after every handshake, full or resumed, check
//! revocation (CRL, OCSP) and authorize, dial the backend, relay. Each phase returns
//! `Result<_, Refused>`; [`Refused`] maps a refusal to the audit and the metrics.

use super::{Gateway, Snapshot};
use crate::admin::SessionGuard;
use crate::authz::identity::Identity;
use crate::authz::policy::Decision;
use crate::config::BackendConfig;
use crate::config::ServerConfig;
use crate::gateway::admission::Guard;
use crate::gateway::audit::{AuditRecord, Outcome};
use crate::gateway::refused::{Refused, RevokedBy};
use crate::gateway::upstream::{self, Upstream};
use crate::relay::{self, End};
use crate::revocation::ocsp::{OcspMode, Verdict as OcspVerdict};
use crate::tls::HandshakeNotes;
use openssl::error::ErrorStack;
use openssl::ssl::NameType;
use openssl::x509::X509;
use std::net::SocketAddr;

use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;
use tracing::{debug, warn};

/// A client's TLS connection; after the handshake the records of one write are gathered into
/// one send (downloads: a 64 KiB read from the backend leaves as one segment train, not four).
type ClientStream = SslStream<relay::Coalesce<TcpStream>>;

/// One connection, from TCP accept to the audit event.
pub(super) async fn handle(
    mut sock: TcpStream,
    peer: SocketAddr,
    listener: SocketAddr,
    snap: Arc<Snapshot>,
    gw: Arc<Gateway>,
) {
    let mut rec = AuditRecord::new(peer);
    let proxied = Box::pin(super::proxied::real_peer(&mut sock, peer, listener, &snap)).await;
    let result = match proxied {
        Ok(real) => {
            rec.peer = real;
            tunnel(sock, &snap, &mut rec, &gw).await
        }
        Err(refused) => {
            gw.service()
                .metrics
                .handshake_failure(refused.metric_label());
            Err(refused)
        }
    };
    let outcome = match result {
        Ok(ended) => ended,
        Err(refused) => {
            if let Some(b) = refused.backend() {
                rec.backend = Some(b.to_string());
            }
            rec.reason = refused.to_string();
            refused.outcome()
        }
    };
    gw.service()
        .metrics
        .connection(rec.backend.as_deref().unwrap_or(""), outcome.as_str());
    // Refusals before authentication are rate-limited per source; metrics count them all.
    gw.refused_log.finish(rec, outcome);
}

/// The phases in order: handshake, then (authorize, check revocation, dial) and relay. The
/// first refusal ends the connection; the relay's end is the outcome otherwise.
///
/// The setup phases run boxed: their state (TLS handshake, OCSP, dial, PROXY header) is
/// freed when they end, so that a connection's task keeps only the relay's small state
/// for as long as the tunnel lives (a 2.5 KiB task per idle tunnel instead of 10.6 KiB).
async fn tunnel(
    sock: TcpStream,
    snap: &Snapshot,
    rec: &mut AuditRecord,
    gw: &Gateway,
) -> Result<Outcome, Refused> {
    let mut tls = Box::pin(handshake(sock, snap, rec, gw)).await?;
    match Box::pin(establish(&tls, snap, rec, gw)).await {
        Ok(Next::Relay(tunnel)) => Ok(relay(tls, tunnel, rec, gw).await),
        Ok(Next::Catalog { current, id }) => {
            Ok(Box::pin(serve_catalog(&mut tls, &current.cfg, &id, rec)).await)
        }
        Err(refused) => {
            Box::pin(close_tls(&mut tls)).await;
            Err(refused)
        }
    }
}

/// The TLS handshake under `handshake_timeout`, evictable while `max_handshakes` are
/// pending. Refusals decided by the callbacks come back from the handshake notes.
async fn handshake(
    sock: TcpStream,
    snap: &Snapshot,
    rec: &mut AuditRecord,
    gw: &Gateway,
) -> Result<ClientStream, Refused> {
    let cfg = &snap.cfg;
    let setup = |e: ErrorStack| Refused::Setup(e.to_string());
    let (ssl, notes) = snap.tls.new_ssl().map_err(setup)?;
    let mut tls = SslStream::new(ssl, relay::Coalesce::new(sock)).map_err(setup)?;
    let started = std::time::Instant::now();
    let pending = gw.pending.start(cfg.max_handshakes);
    let hs = tokio::select! {
        r = tokio::time::timeout(cfg.handshake_timeout, std::pin::Pin::new(&mut tls).accept()) => Some(r),
        _ = pending.token.cancelled() => None,
    };
    drop(pending);
    let result = match hs {
        None => Err(Refused::Evicted {
            pending_for: started.elapsed(),
            max_handshakes: cfg.max_handshakes,
        }),
        Some(hs) => {
            // Raw, so that invalid UTF-8 is not mistaken for "no SNI"; printable, so that it
            // cannot forge log lines.
            rec.sni = tls
                .ssl()
                .servername_raw(NameType::HOST_NAME)
                .map(|r| crate::authz::identity::printable(&String::from_utf8_lossy(r)));
            match hs {
                Err(_) => Err(Refused::HandshakeTimeout(cfg.handshake_timeout)),
                Ok(Err(e)) => Err(handshake_refusal(&tls, &notes, &e, rec)),
                Ok(Ok(())) => Ok(()),
            }
        }
    };
    let metrics = &gw.service().metrics;
    if let Err(refused) = result {
        metrics.handshake_failure(refused.metric_label());
        return Err(refused);
    }
    metrics.handshake(started.elapsed());
    // From here on, the records of one write leave in one send (see relay::Coalesce).
    tls.get_mut().enable();
    rec.resumed = tls.ssl().session_reused();
    rec.group = crate::tls::negotiated_group(tls.ssl());
    rec.cipher = tls.ssl().current_cipher().map(|c| c.name().to_string());
    Ok(tls)
}

/// Why a handshake failed: the refusal a callback noted, else what OpenSSL said.
fn handshake_refusal(
    tls: &ClientStream,
    notes: &HandshakeNotes,
    e: &openssl::ssl::Error,
    rec: &mut AuditRecord,
) -> Refused {
    if let Some((refused, identity)) = notes.take() {
        rec.identity = identity;
        return refused;
    }
    let v = tls.ssl().verify_result();
    Refused::HandshakeFailed(if v.as_raw() != 0 {
        format!("client certificate rejected: {}", v.error_string())
    } else {
        handshake_error_text(e)
    })
}

/// A tunnel ready to relay: the backend dialled, under the snapshot that decided it.
struct Established {
    upstream: Upstream,
    /// The tunnel's entry in the live-session registry (operator cuts, caps, expiry).
    session: SessionGuard,
    backend: String,
    address: String,
    live: Guard<Vec<X509>>,
    current: Arc<Snapshot>,
}

/// What an admitted connection goes on to.
enum Next {
    /// A tunnel to the backend.
    Relay(Established),
    /// A catalog request (see [`crate::gateway::catalog`]), answered on the connection itself.
    Catalog {
        /// The snapshot that admitted it.
        current: Arc<Snapshot>,
        /// The client.
        id: Identity,
    },
}

/// After the handshake: check revocation, authorize (again, also for resumed sessions), all
/// under the configuration in force now; then dial.
async fn establish(
    tls: &ClientStream,
    snap: &Snapshot,
    rec: &mut AuditRecord,
    gw: &Gateway,
) -> Result<Next, Refused> {
    let cert = tls
        .ssl()
        .peer_certificate()
        .ok_or(Refused::NoClientCertificate)?;
    let id = Identity::from_cert(&cert);
    tracing::Span::current().record("identity", tracing::field::display(&id.subject));
    rec.identity = Some(id.clone());
    // Registered before the revocation checks, so that a reload with revoke_established
    // while this tunnel is being set up cannot miss it.
    let live = gw.live.register(client_chain(tls.ssl(), cert.clone()));
    // One snapshot decides everything from here: the one in force now, which may be newer
    // than the one this connection was accepted (and handshaken) under.
    let current = gw.snapshot();
    let chain = verified_chain(tls, &cert, snap, &current)?;
    live.set(chain.clone());
    check_ocsp(&current, &chain).await?;
    if crate::gateway::catalog::selected(tls.ssl()) {
        return Ok(Next::Catalog { current, id });
    }
    let backend = authorize(&current, &id, rec)?;
    let target = current
        .cfg
        .backend(&backend)
        .ok_or(Refused::BackendVanished)?;
    let address = target.address.clone();
    let session = super::operator::admit(gw, rec, &id, &cert, target)?;
    let mut upstream = dial(target, current.cfg.connect_timeout).await?;
    let local = tls.get_ref().get_ref().local_addr().ok();
    super::operator::send_proxy_header(&mut upstream, target, tls.ssl(), local, rec, &session)
        .await
        .map_err(|e| Refused::BackendUnreachable {
            address: address.clone(),
            error: format!("cannot send the PROXY header: {e}"),
        })?;
    if live.token.is_cancelled() {
        return Err(Refused::RevokedDuringSetup);
    }
    Ok(Next::Relay(Established {
        upstream,
        session,
        backend,
        address,
        live,
        current,
    }))
}

/// The backend this connection's SNI names, if the identity may reach it.
fn authorize(current: &Snapshot, id: &Identity, rec: &mut AuditRecord) -> Result<String, Refused> {
    match current.cfg.policy.authorize(rec.sni.as_deref(), id) {
        Decision::Allow { backend, rule } => {
            rec.reason = format!("allowed by {rule}");
            tracing::Span::current().record("backend", tracing::field::display(&backend));
            rec.backend = Some(backend.clone());
            Ok(backend)
        }
        Decision::Deny { backend } => Err(Refused::Denied { backend }),
        Decision::Refused { backend, reason } => Err(Refused::Identity { backend, reason }),
        Decision::UnknownBackend { sni } => Err(Refused::UnknownBackend { sni }),
    }
}

/// Connects to the backend (TCP or Unix socket) within `connect_timeout`.
async fn dial(backend: &BackendConfig, connect_timeout: Duration) -> Result<Upstream, Refused> {
    let address = &backend.address;
    match tokio::time::timeout(connect_timeout, upstream::connect(&backend.target)).await {
        Err(_) => Err(Refused::BackendTimeout(address.clone())),
        Ok(Err(e)) => Err(Refused::BackendUnreachable {
            address: address.clone(),
            error: e.to_string(),
        }),
        Ok(Ok(s)) => Ok(s),
    }
}

/// Copies both ways until either side closes, `idle_timeout`, shutdown or revocation of the
/// chain; returns how the tunnel ended.
async fn relay(tls: ClientStream, t: Established, rec: &mut AuditRecord, gw: &Gateway) -> Outcome {
    debug!(backend = %t.address, "tunnel established");
    let metrics = &gw.service().metrics;
    let _active = metrics.active_guard(&t.backend);
    let meters = metrics.byte_counters(&t.backend);
    let revoked = t.live.token.clone();
    let abort = gw.service().abort.clone();
    let cut = t.session.cut(t.current.cfg.disconnect_expired);
    let stop = async move {
        tokio::select! {
            _ = abort.cancelled() => {}
            _ = revoked.cancelled() => {}
            _ = cut => {}
        }
    };
    let idle = t.current.cfg.idle_timeout;
    let counters = t.session.counters();
    let piped = relay::pipe_counted(tls, t.upstream, idle, stop, Some(meters), counters).await;
    rec.bytes_up = piped.a_to_b;
    rec.bytes_down = piped.b_to_a;
    let (outcome, reason) = match piped.end {
        End::Closed => return Outcome::Ok,
        End::Idle => (
            Outcome::Timeout,
            format!("idle for idle_timeout ({idle:?})"),
        ),
        End::Cancelled if t.session.why().is_some() => {
            return super::operator::cut_outcome(&t.session, rec).unwrap_or(Outcome::Ok);
        }
        End::Cancelled if t.live.token.is_cancelled() => (
            Outcome::Revoked,
            "certificate revoked while connected (revoke_established)".into(),
        ),
        End::Cancelled => (
            Outcome::Ok,
            "closed at shutdown after shutdown_timeout".into(),
        ),
        End::Error(e) if relay::is_disconnect(&e) => {
            debug!(error = %e, "peer disconnected");
            (Outcome::Ok, format!("disconnected: {e}"))
        }
        End::Error(e) => (Outcome::Error, e.to_string()),
    };
    rec.reason = reason;
    outcome
}

/// The client's chain as verified under `current`, leaf first. A full handshake under the
/// snapshot still in force was verified (CRLs included) by the verify callback; a resumed
/// session, or a handshake under an older snapshot, is verified again under `current`.
fn verified_chain(
    tls: &ClientStream,
    cert: &X509,
    snap: &Snapshot,
    current: &Snapshot,
) -> Result<Vec<X509>, Refused> {
    let ssl = tls.ssl();
    if !ssl.session_reused() && std::ptr::eq(snap, current) {
        if let Some(c) = ssl.verified_chain().filter(|c| !c.is_empty()) {
            return Ok(c.iter().map(|x| x.to_owned()).collect());
        }
    }
    let mut sent: Vec<X509> = ssl
        .peer_cert_chain()
        .map(|c| c.iter().map(|x| x.to_owned()).collect())
        .unwrap_or_default();
    // A ticket sealed by another gateway of the fleet brings the intermediates along.
    sent.extend(crate::tls::resumed_intermediates(ssl));
    current
        .tls
        .reverify(cert, &sent, current.cfg.crl_expired)
        .map_err(|why| match ssl.session_reused() {
            true => Refused::Resumed(Box::new(why)),
            false => Refused::Reloaded(Box::new(why)),
        })
}

/// OCSP, when configured, for the verified `chain`: revoked is refused; with
/// `ocsp = "require"`, so is an unknown or unavailable status.
async fn check_ocsp(current: &Snapshot, chain: &[X509]) -> Result<(), Refused> {
    let Some(checker) = &current.ocsp else {
        return Ok(());
    };
    let require = current.cfg.ocsp == OcspMode::Require;
    match checker.check(chain).await {
        OcspVerdict::Good => Ok(()),
        OcspVerdict::Revoked => Err(Refused::Revoked(RevokedBy::Ocsp)),
        OcspVerdict::Unknown if require => Err(Refused::OcspUnknown),
        OcspVerdict::Unavailable(e) if require => Err(Refused::OcspUnavailable(e)),
        OcspVerdict::Unknown => {
            warn!("OCSP status unknown; allowed because ocsp = \"prefer\"");
            Ok(())
        }
        OcspVerdict::Unavailable(e) => {
            warn!(error = %e, "no OCSP answer; allowed because ocsp = \"prefer\"");
            Ok(())
        }
    }
}

/// The client's chain as verified, leaf first; for a resumed session (which keeps no verified
/// chain) the leaf and the certificates the client sent.
fn client_chain(ssl: &openssl::ssl::SslRef, leaf: X509) -> Vec<X509> {
    if let Some(c) = ssl.verified_chain().filter(|c| !c.is_empty()) {
        return c.iter().map(|x| x.to_owned()).collect();
    }
    let mut chain = vec![leaf];
    if let Some(sent) = ssl.peer_cert_chain() {
        chain.extend(sent.iter().map(|x| x.to_owned()));
    }
    chain.extend(crate::tls::resumed_intermediates(ssl));
    chain
}

/// Answers a catalog request (see [`crate::gateway::catalog`]) on a verified connection.
async fn serve_catalog(
    tls: &mut ClientStream,
    cfg: &ServerConfig,
    id: &Identity,
    rec: &mut AuditRecord,
) -> Outcome {
    rec.backend = Some(crate::gateway::catalog::SNI.to_string());
    match crate::gateway::catalog::serve(tls, cfg, id).await {
        Ok(n) => {
            rec.reason = format!("catalog: {n} backend(s) listed");
            Outcome::Ok
        }
        Err(e) => {
            rec.reason = format!("catalog: {e}");
            Outcome::Error
        }
    }
}

/// Sends close_notify (bounded in time) so the client sees an orderly close.
async fn close_tls(tls: &mut ClientStream) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
}

fn handshake_error_text(e: &openssl::ssl::Error) -> String {
    match e.ssl_error() {
        Some(stack) => format!("TLS: {stack}"),
        None => match e.io_error() {
            Some(io) => format!("I/O during handshake: {io}"),
            None => format!("TLS: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    /// Size of the future an async fn of five arguments returns, without calling it.
    fn future_size<A, B, C, D, E, F: Future>(_: fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn an_idle_tunnel_keeps_a_small_task() {
        // The task of every open tunnel is this future: what the setup phases need must stay
        // in their own (freed) boxes. 10.6 KiB before they were boxed.
        let size = future_size(handle);
        assert!(size <= 4096, "conn::handle's future is {size} bytes");
    }
}
