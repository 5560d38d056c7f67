//! The client agent: accepts plain TCP on local listeners (or uses stdin/stdout), opens an
//! mTLS connection to the gateway with the tunnel's backend as SNI, and copies bytes.

use crate::config::{ClientConfig, ConfigError};
use crate::listeners::{self, Limit};
use crate::metrics::{Health, Metrics};
use crate::proxy::{self, End};
use crate::reload::Control;
use crate::service::{Current, Service};
use crate::tls::ClientTls;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_openssl::SslStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

/// A verified mTLS connection to the gateway. After the handshake its records are sent in
/// batches (see [`proxy::Coalesce`]): written data leaves on flush or shutdown.
pub type GatewayStream = SslStream<proxy::Coalesce<TcpStream>>;

/// The backend a listener tunnels to; a reload may change it in place.
type BackendSlot = Arc<RwLock<Arc<str>>>;

/// One configuration in force: new connections take the current snapshot.
pub struct ClientSnapshot {
    /// The configuration.
    pub cfg: Arc<ClientConfig>,
    /// TLS built from it.
    pub tls: ClientTls,
}

impl ClientSnapshot {
    fn files(&self) -> Vec<std::path::PathBuf> {
        let c = &self.cfg;
        vec![c.file.clone(), c.cert.clone(), c.key.clone(), c.ca.clone()]
    }

    fn expiries(&self) -> Vec<(String, i64)> {
        let mut v = Vec::new();
        if let Some(t) = crate::tls::unix_time(self.tls.cert.not_after()) {
            v.push(("cert".to_string(), t));
        }
        if let Some(t) = self
            .tls
            .cas
            .iter()
            .filter_map(|c| crate::tls::unix_time(c.not_after()))
            .min()
        {
            v.push(("ca".to_string(), t));
        }
        v
    }

    /// Logs a warning when the own certificate or the CA expires within `expiry_warning`.
    pub fn warn_expiry(&self) {
        crate::metrics::warn_expiries(&self.expiries(), self.cfg.expiry_warning);
    }
}

/// A running client agent's shared state.
pub struct ClientAgent {
    current: Current<ClientSnapshot>,
    limit: Arc<Limit>,
    service: Service,
    /// Listening address, its stop token, and the backend it tunnels to (changeable by reload).
    listeners: Mutex<Vec<(SocketAddr, CancellationToken, BackendSlot)>>,
    failover: crate::failover::Failover,
    /// Counts and last errors for `tunnel-client status`.
    pub(crate) stats: crate::admin::agent::AgentStats,
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
    /// The own certificate has expired: the gateway would refuse it, so no tunnel is tried.
    #[error("certificate expired at {0}; run `tunnel-client login`")]
    CertificateExpired(String),
    /// Connect plus handshake took longer than `connect_timeout`.
    #[error("gateway {0} did not complete the TLS handshake within connect_timeout")]
    Timeout(String),
    /// Every gateway failed within `failover_timeout`.
    #[error("{0}")]
    Exhausted(crate::failover::Failed),
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
    pub fn new(cfg: ClientConfig, metrics: Arc<Metrics>) -> Result<Arc<ClientAgent>, ConfigError> {
        let tls = ClientTls::new(&cfg)?;
        let limit = Arc::new(Limit::new(cfg.max_connections));
        let snap = ClientSnapshot {
            cfg: Arc::new(cfg),
            tls,
        };
        metrics.set_expiries(snap.expiries());
        metrics.reload(true);
        snap.warn_expiry();
        let files = snap.files();
        Ok(Arc::new(ClientAgent {
            current: Current::new(snap),
            limit,
            service: Service::new(metrics, files),
            listeners: Mutex::new(Vec::new()),
            failover: Default::default(),
            stats: Default::default(),
        }))
    }

    /// The configuration in force.
    pub fn snapshot(&self) -> Arc<ClientSnapshot> {
        self.current.get()
    }

    /// The service core: metrics, watched files, socket activation.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Starts accepting on `listener`, tunnelling to `backend`.
    pub fn add_listener(self: &Arc<Self>, listener: TcpListener, backend: &str) {
        let Ok(addr) = listener.local_addr() else {
            return;
        };
        let stop = CancellationToken::new();
        let target: BackendSlot = Arc::new(RwLock::new(backend.into()));
        if let Ok(mut l) = self.listeners.lock() {
            l.push((addr, stop.clone(), target.clone()));
        }
        let agent = self.clone();
        tokio::spawn(listeners::accept_loop(
            listener,
            self.limit.clone(),
            stop,
            move |sock, peer, permit| {
                let Some(permit) = permit else {
                    debug!(%peer, "max_connections reached; refusing local connection");
                    agent.service.metrics.connection("", "overloaded");
                    drop(sock);
                    return;
                };
                let backend = target
                    .read()
                    .map(|b| b.clone())
                    .unwrap_or_else(|p| p.into_inner().clone());
                let a = agent.clone();
                let abort = agent.service.abort.clone();
                let span = tracing::info_span!("tunnel", %peer, backend = %backend);
                agent.service.tracker.spawn(
                    async move {
                        a.forward(sock, &backend, abort.cancelled_owned()).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            },
        ));
    }

    /// Each listening address and the backend it tunnels to.
    pub fn tunnel_addrs(&self) -> Vec<(SocketAddr, String)> {
        self.listeners
            .lock()
            .map(|l| {
                l.iter()
                    .map(|(a, _, b)| (*a, b.read().map(|b| b.to_string()).unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Re-reads the configuration file: new certificate, key and CA for new connections,
    /// tunnels added, removed or re-pointed. On failure the old configuration keeps serving.
    pub async fn reload(self: &Arc<Self>) -> Result<(), String> {
        let file = self.snapshot().cfg.file.clone();
        self.service.reload(&file, self.try_reload(&file)).await
    }

    async fn try_reload(self: &Arc<Self>, file: &std::path::Path) -> Result<(), String> {
        let cfg = ClientConfig::load(file).map_err(|e| e.to_string())?;
        let tls = ClientTls::new(&cfg).map_err(|e| e.to_string())?;
        let snap = ClientSnapshot {
            cfg: Arc::new(cfg),
            tls,
        };
        let activated = self.service.socket_activated();
        let current: Vec<SocketAddr> = self
            .listeners
            .lock()
            .map(|l| l.iter().map(|(a, _, _)| *a).collect())
            .unwrap_or_default();
        let mut new_listeners = Vec::new();
        if !activated {
            for t in &snap.cfg.tunnels {
                if !current.contains(&t.listen) && t.listen.port() != 0 {
                    let l = TcpListener::bind(t.listen).await.map_err(|e| {
                        format!(
                            "{}: tunnel listen: cannot listen on {}: {e}",
                            file.display(),
                            t.listen
                        )
                    })?;
                    new_listeners.push((l, t.backend.clone()));
                }
            }
        }
        self.limit.resize(snap.cfg.max_connections);
        self.service.metrics.set_expiries(snap.expiries());
        self.service.set_watched(snap.files());
        let tunnels = snap.cfg.tunnels.clone();
        snap.warn_expiry();
        self.current.set(Arc::new(snap));
        if !activated {
            if let Ok(mut ls) = self.listeners.lock() {
                ls.retain(|(addr, stop, target)| match tunnels.iter().find(|t| t.listen == *addr) {
                    Some(t) => {
                        if let Ok(mut b) = target.write() {
                            if **b != *t.backend {
                                info!(listen = %addr, backend = %t.backend, "tunnel now reaches another backend");
                                *b = t.backend.as_str().into();
                            }
                        }
                        true
                    }
                    None if tunnels.iter().any(|t| t.listen.port() == 0) => true,
                    None => {
                        info!(listen = %addr, "tunnel removed");
                        stop.cancel();
                        false
                    }
                });
            }
        }
        for (l, backend) in new_listeners {
            if let Ok(a) = l.local_addr() {
                info!(listen = %a, backend = %backend, "tunnel listening");
            }
            self.add_listener(l, &backend);
        }
        Ok(())
    }

    /// Runs until [`Control::Shutdown`], reloading on [`Control::Reload`], then drains.
    pub async fn run(self: Arc<Self>, control: mpsc::Receiver<Control>) {
        self.service.metrics.set_health(Health::Serving);
        crate::reload::control_loop(
            control,
            || async {
                let _ = self.reload().await;
            },
            || self.snapshot().warn_expiry(),
        )
        .await;
        self.drain().await;
    }

    /// Serves each tunnel on its listener (same order as the configured tunnels) until
    /// `shutdown` completes, then drains.
    pub async fn serve<F>(self: Arc<Self>, listeners: Vec<TcpListener>, shutdown: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let tunnels = self.snapshot().cfg.tunnels.clone();
        for (l, t) in listeners.into_iter().zip(tunnels) {
            self.add_listener(l, &t.backend);
        }
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(Control::Shutdown).await;
        });
        self.run(rx).await;
    }

    async fn drain(&self) {
        let stops = self
            .listeners
            .lock()
            .map(|l| l.iter().map(|(_, stop, _)| stop.clone()).collect())
            .unwrap_or_default();
        let grace = self.snapshot().cfg.shutdown_timeout;
        self.service.drain(stops, grace, "client agent").await;
    }

    /// Opens a verified mTLS connection for `backend` to the first gateway that works (see
    /// [`crate::failover`]).
    pub async fn dial(&self, backend: &str) -> Result<GatewayStream, DialError> {
        let snap = self.snapshot();
        if let Some(end) = crate::tls::unix_time(snap.tls.cert.not_after())
            .filter(|end| *end <= crate::pki::unix_now())
        {
            return Err(DialError::CertificateExpired(
                crate::pki::store::format_time(end),
            ));
        }
        let cfg = &snap.cfg;
        if cfg.servers.len() == 1 && cfg.servers[0].parse::<SocketAddr>().is_ok() {
            // One fixed address: nothing to fail over to.
            return self.dial_addr(&snap, cfg.servers[0].clone(), backend).await;
        }
        self.failover
            .connect(&cfg.servers, cfg.failover_timeout, |a| {
                self.dial_addr(&snap, a.to_string(), backend)
            })
            .await
            .map_err(DialError::Exhausted)
    }

    /// Opens a verified mTLS connection for `backend` to the gateway at `addr`.
    async fn dial_addr(
        &self,
        snap: &ClientSnapshot,
        addr: String,
        backend: &str,
    ) -> Result<GatewayStream, DialError> {
        let fut = async {
            let tcp = TcpStream::connect(&addr)
                .await
                .map_err(|e| DialError::Connect {
                    addr: addr.clone(),
                    source: e,
                })?;
            let _ = tcp.set_nodelay(true);
            let ssl = snap
                .tls
                .new_ssl(backend)
                .map_err(|e| DialError::Handshake {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            let mut s = SslStream::new(ssl, proxy::Coalesce::new(tcp)).map_err(|e| {
                DialError::Handshake {
                    addr: addr.clone(),
                    reason: e.to_string(),
                }
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
            s.get_mut().enable();
            Ok(s)
        };
        match tokio::time::timeout(snap.cfg.connect_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(DialError::Timeout(addr)),
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
        let _open = self.stats.open(backend);
        let remote = match self.dial(backend).await {
            Ok(r) => r,
            Err(e) => {
                self.stats.failed(backend, &e.to_string());
                // The local connection is dropped (closed) right away.
                // The reason may quote the gateway (alerts, names): escaped like any peer text.
                let e = crate::identity::printable(&e.to_string());
                warn!(error = %e, "gateway refused or unreachable; closing local connection");
                self.service
                    .metrics
                    .connection(backend, "gateway_unreachable");
                return false;
            }
        };
        self.service.metrics.handshake(started.elapsed());
        let _active = self.service.metrics.active_guard(backend);
        let meters = self.service.metrics.byte_counters(backend);
        let idle = self.snapshot().cfg.idle_timeout;
        let piped = proxy::pipe(local, remote, idle, cancel, Some(meters)).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let (up, down) = (piped.a_to_b, piped.b_to_a);
        let result = match &piped.end {
            End::Closed | End::Cancelled => "ok",
            End::Idle => "timeout",
            End::Error(e) if proxy::is_disconnect(e) => "ok",
            End::Error(_) => "error",
        };
        self.service.metrics.connection(backend, result);
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
                if !proxy::is_disconnect(&e) {
                    self.stats.failed(backend, &text);
                }
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
