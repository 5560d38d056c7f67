//! The client agent: accepts plain TCP on local listeners (or uses stdin/stdout), opens an
//! mTLS connection to the gateway with the tunnel's backend as SNI, and copies bytes.

use crate::config::{ClientConfig, ConfigError};
use crate::proxy::{self, End};
use crate::tls::ClientTls;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_openssl::SslStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

/// A running client agent's shared state.
pub struct ClientAgent {
    cfg: Arc<ClientConfig>,
    tls: ClientTls,
    limit: Arc<Semaphore>,
}

/// Why a connection to the gateway could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// TCP connect failed.
    #[error("cannot connect to gateway {addr}: {source}")]
    Connect {
        /// Gateway address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Connect plus handshake took longer than `connect_timeout`.
    #[error("gateway {0} did not complete the TLS handshake within connect_timeout")]
    Timeout(String),
    /// The TLS handshake failed (gateway certificate not trusted, alert from the gateway...).
    #[error("TLS handshake with gateway {addr} failed: {reason}")]
    Handshake {
        /// Gateway address.
        addr: String,
        /// What OpenSSL said.
        reason: String,
    },
}

impl ClientAgent {
    /// Loads the certificate, key and CA of `cfg`.
    pub fn new(cfg: ClientConfig) -> Result<Arc<ClientAgent>, ConfigError> {
        let tls = ClientTls::new(&cfg)?;
        let limit = Arc::new(Semaphore::new(cfg.max_connections));
        Ok(Arc::new(ClientAgent {
            cfg: Arc::new(cfg),
            tls,
            limit,
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Opens a verified mTLS connection to the gateway for `backend`.
    pub async fn dial(&self, backend: &str) -> Result<SslStream<TcpStream>, DialError> {
        let addr = self.cfg.server.clone();
        let fut = async {
            let tcp = TcpStream::connect(&addr)
                .await
                .map_err(|e| DialError::Connect {
                    addr: addr.clone(),
                    source: e,
                })?;
            let _ = tcp.set_nodelay(true);
            let ssl = self
                .tls
                .new_ssl(backend)
                .map_err(|e| DialError::Handshake {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            let mut s = SslStream::new(ssl, tcp).map_err(|e| DialError::Handshake {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
            if let Err(e) = Pin::new(&mut s).connect().await {
                let v = s.ssl().verify_result();
                let reason = if v.as_raw() != 0 {
                    format!(
                        "gateway certificate rejected: {} (check ca and server_name)",
                        v.error_string()
                    )
                } else {
                    match e.ssl_error() {
                        Some(st) => st.to_string(),
                        None => e.to_string(),
                    }
                };
                return Err(DialError::Handshake {
                    addr: addr.clone(),
                    reason,
                });
            }
            Ok(s)
        };
        match tokio::time::timeout(self.cfg.connect_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(DialError::Timeout(addr)),
        }
    }

    /// Serves each tunnel on its listener (same order as `cfg.tunnels`) until `shutdown`.
    pub async fn serve<F>(self: Arc<Self>, listeners: Vec<TcpListener>, shutdown: F)
    where
        F: Future<Output = ()>,
    {
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        for (l, t) in listeners.into_iter().zip(self.cfg.tunnels.clone()) {
            let agent = self.clone();
            let tracker2 = tracker.clone();
            let stop2 = stop.clone();
            let abort2 = abort.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = agent.accept_loop(l, t.backend, tracker2, abort2) => {}
                    _ = stop2.cancelled() => {}
                }
            });
        }
        shutdown.await;
        stop.cancel();
        tracker.close();
        let grace = self.cfg.shutdown_timeout;
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            warn!(
                open = tracker.len(),
                "shutdown_timeout reached; closing remaining connections"
            );
            abort.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        }
        info!("client agent stopped");
    }

    async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        backend: String,
        tracker: TaskTracker,
        abort: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(10);
        let backend: Arc<str> = backend.into();
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(x) => {
                    backoff = Duration::from_millis(10);
                    x
                }
                Err(e) => {
                    warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let Ok(permit) = self.limit.clone().try_acquire_owned() else {
                debug!(%peer, "max_connections reached; refusing local connection");
                drop(sock);
                continue;
            };
            let agent = self.clone();
            let backend = backend.clone();
            let abort = abort.clone();
            let span = tracing::info_span!("tunnel", %peer, backend = %backend);
            tracker.spawn(
                async move {
                    let _ = sock.set_nodelay(true);
                    agent.forward(sock, &backend, abort.cancelled_owned()).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }

    /// Tunnels one local stream to `backend`, logging how it went. Returns whether every byte
    /// was delivered and both sides closed normally.
    pub async fn forward<L, C>(&self, local: L, backend: &str, cancel: C) -> bool
    where
        L: AsyncRead + AsyncWrite + Unpin,
        C: Future<Output = ()>,
    {
        let started = Instant::now();
        let remote = match self.dial(backend).await {
            Ok(r) => r,
            Err(e) => {
                // The local connection is dropped (closed) right away.
                warn!(error = %e, "gateway refused or unreachable; closing local connection");
                return false;
            }
        };
        let piped = proxy::pipe(local, remote, self.cfg.idle_timeout, cancel).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let (up, down) = (piped.a_to_b, piped.b_to_a);
        match piped.end {
            End::Closed => {
                info!(
                    bytes_up = up,
                    bytes_down = down,
                    duration_ms,
                    "tunnel closed"
                );
                true
            }
            End::Idle => {
                info!(
                    bytes_up = up,
                    bytes_down = down,
                    duration_ms,
                    "tunnel closed after idle_timeout"
                );
                false
            }
            End::Cancelled => {
                info!(
                    bytes_up = up,
                    bytes_down = down,
                    duration_ms,
                    "tunnel closed at shutdown"
                );
                false
            }
            End::Error(e) => {
                let text = e.to_string();
                if text.contains("alert") {
                    warn!(bytes_up = up, bytes_down = down, error = %text,
                        "gateway refused the connection (TLS alert); see the gateway's audit log");
                } else if proxy::is_disconnect(&e) {
                    debug!(bytes_up = up, bytes_down = down, error = %text, "peer disconnected");
                } else {
                    warn!(bytes_up = up, bytes_down = down, error = %text, "tunnel failed");
                }
                false
            }
        }
    }
}

/// Binds the listener of every tunnel.
pub async fn bind_all(cfg: &ClientConfig) -> Result<Vec<TcpListener>, std::io::Error> {
    let mut out = Vec::new();
    for t in &cfg.tunnels {
        let l = TcpListener::bind(t.listen).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot listen on {} (tunnel to {}): {e}",
                    t.listen, t.backend
                ),
            )
        })?;
        out.push(l);
    }
    Ok(out)
}

/// The local addresses actually bound (useful with port 0).
pub fn local_addrs(listeners: &[TcpListener]) -> Vec<SocketAddr> {
    listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect()
}
