//! One gateway connection, from TCP accept to its audit event: handshake under a deadline,
//! revocation (CRL, OCSP) and authorization after every handshake, backend dial, copy.

use super::{Gateway, Snapshot};
use crate::audit::{AuditRecord, Outcome};
use crate::config::ServerConfig;
use crate::identity::Identity;
use crate::ocsp::{OcspMode, Verdict as OcspVerdict};
use crate::policy::Decision;
use crate::proxy::{self, End};
use crate::tls::{CrlCheck, Refusal};
use crate::upstream;
use openssl::ssl::NameType;
use openssl::x509::X509;
use std::net::SocketAddr;

use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;
use tracing::{debug, warn};

/// One connection, from TCP accept to the audit event.
pub(super) async fn handle(
    mut sock: TcpStream,
    peer: SocketAddr,
    listener: SocketAddr,
    snap: Arc<Snapshot>,
    gw: Arc<Gateway>,
) {
    let Some(peer) = super::proxied::real_peer(&mut sock, peer, listener, &snap, &gw).await else {
        return;
    };
    let mut rec = AuditRecord::new(peer);
    let outcome = tunnel(sock, &snap, &mut rec, &gw).await;
    gw.service
        .metrics
        .connection(rec.backend.as_deref().unwrap_or(""), outcome.as_str());
    // Refusals before authentication are rate-limited per source; metrics count them all.
    gw.refused_log.finish(rec, outcome);
}

async fn tunnel(sock: TcpStream, snap: &Snapshot, rec: &mut AuditRecord, gw: &Gateway) -> Outcome {
    let metrics = &gw.service.metrics;
    let cfg = &snap.cfg;
    let (ssl, notes) = match snap.tls.new_ssl() {
        Ok(x) => x,
        Err(e) => {
            rec.reason = format!("OpenSSL: {e}");
            return Outcome::Error;
        }
    };
    let mut tls = match SslStream::new(ssl, sock) {
        Ok(s) => s,
        Err(e) => {
            rec.reason = format!("OpenSSL: {e}");
            return Outcome::Error;
        }
    };
    let hs_start = std::time::Instant::now();
    let pending = gw.pending.start(cfg.max_handshakes);
    let hs = tokio::select! {
        r = tokio::time::timeout(cfg.handshake_timeout, std::pin::Pin::new(&mut tls).accept()) => r,
        _ = pending.token.cancelled() => {
            rec.reason = format!(
                "handshake still pending after {:?} while max_handshakes ({}) were pending: closed to make room (handshake flood?)",
                hs_start.elapsed(),
                cfg.max_handshakes
            );
            metrics.handshake_failure("evicted");
            return Outcome::Timeout;
        }
    };
    drop(pending);
    // Raw, so that invalid UTF-8 is not mistaken for "no SNI"; printable, so that it cannot
    // forge log lines.
    rec.sni = tls
        .ssl()
        .servername_raw(NameType::HOST_NAME)
        .map(|r| crate::identity::printable(&String::from_utf8_lossy(r)));
    if let Some(failed) = handshake_outcome(hs, &tls, &notes, rec, cfg) {
        metrics.handshake_failure(match failed {
            Outcome::Timeout => "timeout",
            Outcome::Revoked => "revoked",
            Outcome::CrlExpired => "crl_expired",
            Outcome::CrlMissing => "crl_missing",
            Outcome::Denied if rec.backend.is_none() => "unknown_backend",
            Outcome::Denied => "denied",
            _ => "handshake_failed",
        });
        return failed;
    }
    metrics.handshake(hs_start.elapsed());
    rec.resumed = tls.ssl().session_reused();
    finish_tunnel(tls, snap, rec, gw).await
}

/// The outcome of a failed handshake, or `None` when it succeeded.
fn handshake_outcome(
    hs: Result<Result<(), openssl::ssl::Error>, tokio::time::error::Elapsed>,
    tls: &SslStream<TcpStream>,
    notes: &crate::tls::HandshakeNotes,
    rec: &mut AuditRecord,
    cfg: &ServerConfig,
) -> Option<Outcome> {
    let e = match hs {
        Ok(Ok(())) => return None,
        Err(_) => {
            rec.reason = format!(
                "no TLS handshake within handshake_timeout ({:?})",
                cfg.handshake_timeout
            );
            return Some(Outcome::Timeout);
        }
        Ok(Err(e)) => e,
    };
    Some(match notes.take() {
        Some(Refusal::UnknownBackend(sni)) => {
            rec.reason = unknown_backend_reason(sni.as_deref());
            Outcome::Denied
        }
        Some(Refusal::Revoked(id)) => {
            rec.identity = Some(id);
            rec.reason = "certificate revoked by CRL".into();
            Outcome::Revoked
        }
        Some(Refusal::CrlExpired(id)) => {
            rec.identity = Some(id);
            rec.reason = "the CRL of the client's CA is past its nextUpdate (crl_expired = \"deny\"); publish a fresh CRL".into();
            Outcome::CrlExpired
        }
        Some(Refusal::CrlMissing { identity, ca }) => {
            rec.identity = Some(identity);
            rec.reason = crate::tls::crl_refusal_text(&CrlCheck::Missing(ca));
            Outcome::CrlMissing
        }
        Some(Refusal::Denied { identity, backend }) => {
            rec.reason = format!("no allow rule of backend {backend:?} matches");
            rec.identity = Some(identity);
            rec.backend = Some(backend);
            Outcome::Denied
        }
        Some(Refusal::Refused {
            identity,
            backend,
            reason,
        }) => {
            rec.reason = reason;
            rec.identity = Some(identity);
            rec.backend = Some(backend);
            Outcome::Denied
        }
        None => {
            let v = tls.ssl().verify_result();
            rec.reason = if v.as_raw() != 0 {
                format!("client certificate rejected: {}", v.error_string())
            } else {
                handshake_error_text(&e)
            };
            Outcome::HandshakeFailed
        }
    })
}

/// After the handshake: revocation and authorization (again, also for resumed sessions),
/// all under the configuration in force now; then dial and copy.
async fn finish_tunnel(
    mut tls: SslStream<TcpStream>,
    snap: &Snapshot,
    rec: &mut AuditRecord,
    gw: &Gateway,
) -> Outcome {
    let metrics = &gw.service.metrics;
    let Some(cert) = tls.ssl().peer_certificate() else {
        rec.reason = "no client certificate".into();
        return Outcome::HandshakeFailed;
    };
    let id = Identity::from_cert(&cert);
    tracing::Span::current().record("identity", tracing::field::display(&id.subject));
    rec.identity = Some(id.clone());
    let id = &id;
    // Registered before the revocation checks, so that a reload with revoke_established
    // while this tunnel is being set up cannot miss it.
    let live = gw.live.register(client_chain(tls.ssl(), cert.clone()));
    // One snapshot decides everything from here: the one in force now, which may be newer
    // than the one this connection was accepted (and handshaken) under.
    let current = gw.snapshot();
    let cfg = &current.cfg;
    let chain = match verified_chain(&tls, &cert, snap, &current) {
        Ok(c) => c,
        Err((check, why)) => {
            rec.reason = why;
            close_tls(&mut tls).await;
            return match check {
                CrlCheck::Revoked => Outcome::Revoked,
                CrlCheck::Expired(_) => Outcome::CrlExpired,
                CrlCheck::Missing(_) => Outcome::CrlMissing,
                CrlCheck::Good => Outcome::HandshakeFailed,
            };
        }
    };
    live.set_chain(chain.clone());
    if let Some(checker) = &current.ocsp {
        if let Some((why, outcome)) = ocsp_refusal(checker, &chain, cfg.ocsp).await {
            rec.reason = why;
            close_tls(&mut tls).await;
            return outcome;
        }
    }
    if crate::catalog::selected(tls.ssl()) {
        return serve_catalog(&mut tls, cfg, id, rec).await;
    }
    let backend_name = match cfg.policy.authorize(rec.sni.as_deref(), id) {
        Decision::Allow { backend, rule } => {
            rec.reason = format!("allowed by {rule}");
            backend
        }
        Decision::Deny { backend } => {
            rec.reason = format!("no allow rule of backend {backend:?} matches");
            rec.backend = Some(backend);
            close_tls(&mut tls).await;
            return Outcome::Denied;
        }
        Decision::Refused { backend, reason } => {
            rec.reason = reason;
            rec.backend = Some(backend);
            close_tls(&mut tls).await;
            return Outcome::Denied;
        }
        Decision::UnknownBackend { sni } => {
            rec.reason = unknown_backend_reason(sni.as_deref());
            close_tls(&mut tls).await;
            return Outcome::Denied;
        }
    };
    tracing::Span::current().record("backend", tracing::field::display(&backend_name));
    rec.backend = Some(backend_name.clone());
    let Some(backend) = cfg.backend(&backend_name) else {
        rec.reason = "backend vanished from configuration".into();
        return Outcome::Error;
    };

    let session = match super::operator::admit(gw, rec, id, &cert, backend) {
        Ok(s) => s,
        Err(outcome) => {
            close_tls(&mut tls).await;
            return outcome;
        }
    };
    let mut upstream =
        match tokio::time::timeout(cfg.connect_timeout, upstream::connect(&backend.target)).await {
            Err(_) => {
                rec.reason = format!(
                    "connecting to {} took longer than connect_timeout",
                    backend.address
                );
                close_tls(&mut tls).await;
                return Outcome::Timeout;
            }
            Ok(Err(e)) => {
                rec.reason = format!("{}: {e}", backend.address);
                close_tls(&mut tls).await;
                return Outcome::BackendUnreachable;
            }
            Ok(Ok(s)) => s,
        };
    let local = tls.get_ref().local_addr().ok();
    let sent =
        super::operator::send_proxy_header(&mut upstream, backend, tls.ssl(), local, rec, &session);
    if let Err(e) = sent.await {
        rec.reason = format!("{}: cannot send the PROXY header: {e}", backend.address);
        close_tls(&mut tls).await;
        return Outcome::BackendUnreachable;
    }
    if live.token.is_cancelled() {
        rec.reason =
            "certificate revoked while the tunnel was being set up (revoke_established)".into();
        close_tls(&mut tls).await;
        return Outcome::Revoked;
    }
    debug!(backend = %backend.address, "tunnel established");

    let _active = metrics.active_guard(&backend_name);
    let meters = metrics.byte_counters(&backend_name);
    let revoked = live.token.clone();
    let abort = gw.service.abort.clone();
    let cut = session.cut(cfg.disconnect_expired);
    let stop = async move {
        tokio::select! {
            _ = abort.cancelled() => {}
            _ = revoked.cancelled() => {}
            _ = cut => {}
        }
    };
    let counters = session.counters();
    let piped = proxy::pipe_counted(
        tls,
        upstream,
        cfg.idle_timeout,
        stop,
        Some(meters),
        counters,
    )
    .await;
    rec.bytes_up = piped.a_to_b;
    rec.bytes_down = piped.b_to_a;
    match piped.end {
        End::Closed => Outcome::Ok,
        End::Idle => {
            rec.reason = format!("idle for idle_timeout ({:?})", cfg.idle_timeout);
            Outcome::Timeout
        }
        End::Cancelled if session.why().is_some() => {
            super::operator::cut_outcome(&session, rec).unwrap_or(Outcome::Ok)
        }
        End::Cancelled if live.token.is_cancelled() => {
            rec.reason = "certificate revoked while connected (revoke_established)".into();
            Outcome::Revoked
        }
        End::Cancelled => {
            rec.reason = "closed at shutdown after shutdown_timeout".into();
            Outcome::Ok
        }
        End::Error(e) => {
            if proxy::is_disconnect(&e) {
                debug!(error = %e, "peer disconnected");
                rec.reason = format!("disconnected: {e}");
                Outcome::Ok
            } else {
                rec.reason = e.to_string();
                Outcome::Error
            }
        }
    }
}

/// The client's chain as verified under `current`, leaf first. A full handshake under the
/// snapshot still in force was verified (CRLs included) by the verify callback; a resumed
/// session, or a handshake under an older snapshot, is verified again under `current`.
fn verified_chain(
    tls: &SslStream<TcpStream>,
    cert: &X509,
    snap: &Snapshot,
    current: &Snapshot,
) -> Result<Vec<X509>, (CrlCheck, String)> {
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
        .map_err(|(check, why)| {
            let prefix = if ssl.session_reused() {
                "resumed session refused"
            } else {
                "refused under the reloaded configuration"
            };
            (check, format!("{prefix}: {why}"))
        })
}

/// Why OCSP refuses the verified `chain` under `mode`, if it does.
async fn ocsp_refusal(
    checker: &crate::ocsp::OcspChecker,
    chain: &[X509],
    mode: OcspMode,
) -> Option<(String, Outcome)> {
    let require = mode == OcspMode::Require;
    match checker.check(chain).await {
        OcspVerdict::Good => None,
        OcspVerdict::Revoked => Some(("certificate revoked (OCSP)".to_string(), Outcome::Revoked)),
        OcspVerdict::Unknown if require => Some((
            "OCSP responder does not know this certificate (ocsp = \"require\")".to_string(),
            Outcome::Denied,
        )),
        OcspVerdict::Unavailable(e) if require => Some((
            format!("no OCSP answer and ocsp = \"require\": {e}"),
            Outcome::Denied,
        )),
        OcspVerdict::Unknown => {
            warn!("OCSP status unknown; allowed because ocsp = \"prefer\"");
            None
        }
        OcspVerdict::Unavailable(e) => {
            warn!(error = %e, "no OCSP answer; allowed because ocsp = \"prefer\"");
            None
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

fn unknown_backend_reason(sni: Option<&str>) -> String {
    match sni {
        Some(s) => format!("no backend named {s:?}"),
        None => "no SNI sent and no default_backend configured".into(),
    }
}

/// Answers a catalog request (see [`crate::catalog`]) on a verified connection.
async fn serve_catalog(
    tls: &mut SslStream<TcpStream>,
    cfg: &ServerConfig,
    id: &Identity,
    rec: &mut AuditRecord,
) -> Outcome {
    rec.backend = Some(crate::catalog::SNI.to_string());
    match crate::catalog::serve(tls, cfg, id).await {
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
async fn close_tls(tls: &mut SslStream<TcpStream>) {
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
