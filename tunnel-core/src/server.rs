//! The gateway: accepts TLS from client agents, verifies and authorizes each client for the
//! backend its SNI names, dials the backend and copies bytes both ways.
//!
//! The accept loop does no TLS work: every connection gets its own task, which runs the
//! handshake under `handshake_timeout`. Authorization is decided after every handshake, full
//! or resumed, from the verified peer certificate and this connection's SNI; the backend
//! dialled is always the one that was authorized.

use crate::audit::{AuditRecord, Outcome};
use crate::config::{ConfigError, ServerConfig};
use crate::identity::Identity;
use crate::policy::Decision;
use crate::proxy::{self, End};
use crate::tls::{Refusal, ServerTls};
use openssl::ssl::NameType;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_openssl::SslStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

/// One immutable configuration in force: new connections take the current snapshot.
pub struct Snapshot {
    /// The configuration.
    pub cfg: Arc<ServerConfig>,
    /// TLS built from it.
    pub tls: ServerTls,
}

impl Snapshot {
    /// Validates certificates and builds TLS for `cfg`.
    pub fn new(cfg: ServerConfig) -> Result<Snapshot, ConfigError> {
        let policy = Arc::new(cfg.policy.clone());
        let tls = ServerTls::new(&cfg, policy)?;
        Ok(Snapshot {
            cfg: Arc::new(cfg),
            tls,
        })
    }
}

/// A running gateway's shared state.
pub struct Gateway {
    current: RwLock<Arc<Snapshot>>,
    limit: Arc<Semaphore>,
    last_overload_log: AtomicU64,
}

impl Gateway {
    /// Builds a gateway for `cfg` (loads certificates, CA, CRLs).
    pub fn new(cfg: ServerConfig) -> Result<Arc<Gateway>, ConfigError> {
        let max = cfg.max_connections;
        let snap = Snapshot::new(cfg)?;
        Ok(Arc::new(Gateway {
            current: RwLock::new(Arc::new(snap)),
            limit: Arc::new(Semaphore::new(max)),
            last_overload_log: AtomicU64::new(0),
        }))
    }

    /// The configuration in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Replaces the configuration for new connections; established ones keep theirs.
    pub fn swap(&self, snap: Snapshot) {
        let snap = Arc::new(snap);
        match self.current.write() {
            Ok(mut g) => *g = snap,
            Err(p) => *p.into_inner() = snap,
        }
    }

    /// Serves `listeners` until `shutdown` completes, then stops accepting, lets open
    /// connections finish for up to `shutdown_timeout`, and closes the rest.
    pub async fn serve<F>(self: Arc<Self>, listeners: Vec<TcpListener>, shutdown: F)
    where
        F: Future<Output = ()>,
    {
        let tracker = TaskTracker::new();
        let stop_accepting = CancellationToken::new();
        let abort_conns = CancellationToken::new();
        for l in listeners {
            let gw = self.clone();
            let tracker2 = tracker.clone();
            let stop = stop_accepting.clone();
            let abort = abort_conns.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = gw.accept_loop(l, tracker2, abort) => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
        shutdown.await;
        stop_accepting.cancel();
        tracker.close();
        let grace = self.snapshot().cfg.shutdown_timeout;
        let open = tracker.len();
        if open > 0 {
            info!(open, grace = ?grace, "draining open connections");
        }
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            warn!(
                open = tracker.len(),
                "shutdown_timeout reached; closing remaining connections"
            );
            abort_conns.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        }
        info!("gateway stopped");
    }

    async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        tracker: TaskTracker,
        abort: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(10);
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(x) => {
                    backoff = Duration::from_millis(10);
                    x
                }
                Err(e) => {
                    // EMFILE and friends: wait rather than spin.
                    warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let permit = match self.limit.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    self.log_overload(peer);
                    drop(sock);
                    continue;
                }
            };
            let snap = self.snapshot();
            let abort = abort.clone();
            let span = tracing::info_span!("conn", %peer, identity = tracing::field::Empty, backend = tracing::field::Empty);
            tracker.spawn(
                async move {
                    handle(sock, peer, snap, abort).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }

    fn log_overload(&self, peer: SocketAddr) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if self.last_overload_log.swap(now, Ordering::Relaxed) != now {
            let mut rec = AuditRecord::new(peer);
            rec.reason = "max_connections reached; connection refused".into();
            rec.finish(Outcome::Overloaded);
        }
    }
}

/// One connection, from TCP accept to the audit event.
async fn handle(sock: TcpStream, peer: SocketAddr, snap: Arc<Snapshot>, abort: CancellationToken) {
    let mut rec = AuditRecord::new(peer);
    let outcome = tunnel(sock, &snap, &mut rec, abort).await;
    rec.finish(outcome);
}

async fn tunnel(
    sock: TcpStream,
    snap: &Snapshot,
    rec: &mut AuditRecord,
    abort: CancellationToken,
) -> Outcome {
    let cfg = &snap.cfg;
    let _ = sock.set_nodelay(true);
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
    let hs = tokio::time::timeout(cfg.handshake_timeout, Pin::new(&mut tls).accept()).await;
    rec.sni = tls
        .ssl()
        .servername(NameType::HOST_NAME)
        .map(str::to_string);
    match hs {
        Err(_) => {
            rec.reason = format!(
                "no TLS handshake within handshake_timeout ({:?})",
                cfg.handshake_timeout
            );
            return Outcome::Timeout;
        }
        Ok(Err(e)) => {
            return match notes.take() {
                Some(Refusal::UnknownBackend(sni)) => {
                    rec.reason = unknown_backend_reason(sni.as_deref());
                    Outcome::Denied
                }
                Some(Refusal::Revoked(id)) => {
                    rec.identity = Some(id);
                    rec.reason = "certificate revoked by CRL".into();
                    Outcome::Revoked
                }
                Some(Refusal::Denied { identity, backend }) => {
                    rec.reason = format!("no allow rule of backend {backend:?} matches");
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
            };
        }
        Ok(Ok(())) => {}
    }
    rec.resumed = tls.ssl().session_reused();

    // Authorization after every handshake, full or resumed.
    let Some(cert) = tls.ssl().peer_certificate() else {
        rec.reason = "no client certificate".into();
        return Outcome::HandshakeFailed;
    };
    let id = Identity::from_cert(&cert);
    tracing::Span::current().record("identity", tracing::field::display(&id.subject));
    rec.identity = Some(id);
    let id = rec.identity.as_ref().expect("just set");
    if snap.tls.crls.is_revoked(&cert) {
        rec.reason = "certificate revoked by CRL".into();
        close_tls(&mut tls).await;
        return Outcome::Revoked;
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

    let upstream =
        match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(&backend.address)).await
        {
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
    let _ = upstream.set_nodelay(true);
    debug!(backend = %backend.address, "tunnel established");

    let piped = proxy::pipe(tls, upstream, cfg.idle_timeout, abort.cancelled_owned()).await;
    rec.bytes_up = piped.a_to_b;
    rec.bytes_down = piped.b_to_a;
    match piped.end {
        End::Closed => Outcome::Ok,
        End::Idle => {
            rec.reason = format!("idle for idle_timeout ({:?})", cfg.idle_timeout);
            Outcome::Timeout
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

fn unknown_backend_reason(sni: Option<&str>) -> String {
    match sni {
        Some(s) => format!("no backend named {s:?}"),
        None => "no SNI sent and no default_backend configured".into(),
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

/// Binds every `listen` address of `cfg`.
pub async fn bind_all(cfg: &ServerConfig) -> Result<Vec<TcpListener>, std::io::Error> {
    let mut out = Vec::new();
    for addr in &cfg.listen {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        out.push(l);
    }
    Ok(out)
}
