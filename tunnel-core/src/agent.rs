//! The client agent: accepts plain TCP on local listeners (or uses stdin/stdout), opens an
//! mTLS connection to the gateway with the tunnel's backend as SNI, and copies bytes.

mod stats;

pub mod exec;
pub(crate) mod failover;

use crate::config::{ClientConfig, ConfigError, DEFAULT_EXPIRY_WARNING};
use crate::metrics::Metrics;
use crate::relay::{self, End};
use crate::service::lifecycle::{self, Agent, BindError, Lifecycle, ReloadError, Settings};
use crate::service::reload::Control;
use crate::service::Service;
use crate::tls::ClientTls;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_openssl::SslStream;
use tracing::{debug, info, warn, Instrument};

/// A verified mTLS connection to the gateway. After the handshake its records are sent in
/// batches (see [`relay::Coalesce`]): written data leaves on flush or shutdown.
pub type GatewayStream = SslStream<relay::Coalesce<TcpStream>>;

/// One configuration in force: new connections take the current snapshot.
pub struct ClientSnapshot {
    /// The configuration.
    pub cfg: Arc<ClientConfig>,
    /// TLS built from it.
    pub tls: ClientTls,
}

impl Settings for ClientSnapshot {
    type Route = Arc<str>;

    fn file(&self) -> &Path {
        &self.cfg.file
    }

    fn listeners(&self) -> Vec<(SocketAddr, Arc<str>)> {
        let t = &self.cfg.tunnels;
        t.iter()
            .map(|t| (t.listen, t.backend.as_str().into()))
            .collect()
    }

    fn listen_key(&self, addr: SocketAddr) -> String {
        match self.cfg.tunnels.iter().position(|t| t.listen == addr) {
            Some(i) => format!("tunnel[{i}].listen"),
            None => "tunnel".into(),
        }
    }

    fn files(&self) -> Vec<PathBuf> {
        let c = &self.cfg;
        let mut v = vec![c.file.clone(), c.ca.clone()];
        v.extend(c.keys.files());
        v
    }

    /// Own certificate and earliest CA.
    fn expiries(&self) -> Vec<(String, i64)> {
        crate::util::time::cert_expiries(&self.tls.cert, &self.tls.cas)
    }

    fn expiry_warning(&self) -> Duration {
        self.cfg.expiry_warning.unwrap_or(DEFAULT_EXPIRY_WARNING)
    }

    /// As the default, but with the lead for the own certificate scaled to its lifetime
    /// (unless `expiry_warning` is set), and for a sign-in certificate what to run.
    fn warn_expiry(&self) {
        for (which, at) in self.expiries() {
            let renew = (which == "cert").then(|| self.renew_hint()).flatten();
            crate::util::time::warn_expiry(&which, at, self.lead_for(&which), renew);
        }
    }

    fn lead_for(&self, which: &str) -> Duration {
        match which {
            "cert" => self.cert_warning(),
            _ => self.expiry_warning(),
        }
    }

    fn max_connections(&self) -> usize {
        self.cfg.max_connections
    }

    fn shutdown_timeout(&self) -> Duration {
        self.cfg.shutdown_timeout
    }
}

impl ClientSnapshot {
    /// How long before its end the own certificate is warned about.
    pub fn cert_warning(&self) -> Duration {
        if let Some(d) = self.cfg.expiry_warning {
            return d;
        }
        let cert = &self.tls.cert;
        match (
            crate::util::time::unix_time(cert.not_before()),
            crate::util::time::unix_time(cert.not_after()),
        ) {
            (Some(from), Some(to)) => {
                crate::util::time::default_expiry_warning(from, to, DEFAULT_EXPIRY_WARNING)
            }
            _ => DEFAULT_EXPIRY_WARNING,
        }
    }

    /// What renews the own certificate, when it came from a sign-in (`signer` is set).
    pub fn renew_hint(&self) -> Option<&'static str> {
        self.cfg.signer.as_ref().map(|_| RENEW_HINT)
    }
}

/// What renews a sign-in certificate.
pub const RENEW_HINT: &str = "run `tunnel-client login` for a new certificate";

/// A running client agent's shared state.
pub struct ClientAgent {
    lifecycle: Lifecycle<ClientSnapshot>,
    /// Which gateway of `server` to try first, and which failed recently.
    failover: crate::agent::failover::Failover,
    /// Counts and last errors for `tunnel-client status`.
    pub(crate) stats: stats::AgentStats,
}

/// Why a connection to the gateway could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// TCP connect failed.
    #[error("cannot connect to gateway {addr}: {source}")]
    Connect {
        /// Gateway address.
        addr: String,
        /// Why the connect failed (refused, unreachable, DNS...).
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
    Exhausted(crate::agent::failover::Failed),
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
        let snap = ClientSnapshot {
            cfg: Arc::new(cfg),
            tls,
        };
        Ok(Arc::new(ClientAgent {
            lifecycle: Lifecycle::new(snap, metrics),
            failover: Default::default(),
            stats: Default::default(),
        }))
    }

    /// The configuration in force.
    pub fn snapshot(&self) -> Arc<ClientSnapshot> {
        self.lifecycle.snapshot()
    }

    /// The service core: metrics, watched files, socket activation.
    pub fn service(&self) -> &Service {
        self.lifecycle.service()
    }

    /// Starts accepting on `listener`, tunnelling to `backend`.
    pub fn add_listener(self: &Arc<Self>, listener: TcpListener, backend: &str) {
        lifecycle::add_listener(self, listener, backend.into());
    }

    /// Each listening address and the backend it tunnels to.
    pub fn tunnel_addrs(&self) -> Vec<(SocketAddr, String)> {
        let l = self.lifecycle.listeners();
        l.into_iter().map(|(a, b)| (a, b.to_string())).collect()
    }

    /// Re-reads the configuration file: new certificate, key and CA for new connections,
    /// tunnels added, removed or re-pointed. On failure the old configuration keeps serving.
    pub async fn reload(self: &Arc<Self>) -> Result<(), ReloadError> {
        lifecycle::reload(self).await
    }

    /// Runs until [`Control::Shutdown`], reloading on [`Control::Reload`], then drains.
    pub async fn run(self: Arc<Self>, control: mpsc::Receiver<Control>) {
        lifecycle::run(self, control).await;
    }

    /// Serves each tunnel on its listener (same order as the configured tunnels) until
    /// `shutdown` completes, then drains.
    pub async fn serve<F>(self: Arc<Self>, listeners: Vec<TcpListener>, shutdown: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let routes = self.snapshot().listeners().into_iter().map(|(_, r)| r);
        let listeners = listeners.into_iter().zip(routes).collect();
        lifecycle::serve(self, listeners, shutdown).await;
    }

    /// Opens a verified mTLS connection for `backend` to the first gateway that works (see
    /// [`crate::agent::failover`]).
    pub async fn dial(&self, backend: &str) -> Result<GatewayStream, DialError> {
        let snap = self.snapshot();
        if let Some(end) = crate::util::time::unix_time(snap.tls.cert.not_after())
            .filter(|end| *end <= crate::util::time::unix_now())
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
            let mut s = SslStream::new(ssl, relay::Coalesce::new(tcp)).map_err(|e| {
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
                let e = crate::authz::identity::printable(&e.to_string());
                warn!(error = %e, "gateway refused or unreachable; closing local connection");
                self.service()
                    .metrics
                    .connection(backend, "gateway_unreachable");
                return false;
            }
        };
        self.service().metrics.handshake(started.elapsed());
        let _active = self.service().metrics.active_guard(backend);
        let meters = self.service().metrics.byte_counters(backend);
        let idle = self.snapshot().cfg.idle_timeout;
        let remote = crate::tls::Lean(remote);
        let piped = relay::pipe(local, remote, idle, cancel, Some(meters)).await;
        let result = match &piped.end {
            End::Closed | End::Cancelled => "ok",
            End::Idle => "timeout",
            End::Error(e) if relay::is_disconnect(e) => "ok",
            End::Error(_) => "error",
        };
        self.service().metrics.connection(backend, result);
        if let End::Error(e) = &piped.end {
            if !relay::is_disconnect(e) {
                self.stats.failed(backend, &e.to_string());
            }
        }
        log_end(piped, started)
    }
}

/// Logs how a tunnel ended; returns whether every byte was delivered and both sides closed
/// normally.
fn log_end(piped: relay::Piped, started: Instant) -> bool {
    let duration_ms = started.elapsed().as_millis() as u64;
    let (up, down) = (piped.a_to_b, piped.b_to_a);
    let closed = |how: &str| info!(bytes_up = up, bytes_down = down, duration_ms, "{how}");
    match piped.end {
        End::Closed => {
            closed("tunnel closed");
            return true;
        }
        End::Idle => closed("tunnel closed after idle_timeout"),
        End::Cancelled => closed("tunnel closed at shutdown"),
        End::Error(e) => match crate::gateway::refused::received_alert(&e) {
            // The gateway decides after the handshake (TLS 1.3 verifies the client certificate
            // then): its refusal arrives as an alert on the first read.
            Some(alert) => warn!(bytes_up = up, bytes_down = down, alert, error = %e,
                "gateway refused the connection (TLS alert); see the gateway's audit log"),
            None if relay::is_disconnect(&e) => {
                debug!(bytes_up = up, bytes_down = down, error = %e, "peer disconnected")
            }
            None => warn!(bytes_up = up, bytes_down = down, error = %e, "tunnel failed"),
        },
    }
    false
}

impl Agent for ClientAgent {
    type Settings = ClientSnapshot;
    const NAME: &'static str = "client agent";

    fn lifecycle(&self) -> &Lifecycle<ClientSnapshot> {
        &self.lifecycle
    }

    async fn load(&self, file: &Path) -> Result<ClientSnapshot, ReloadError> {
        let cfg = ClientConfig::load(file)?;
        let tls = ClientTls::new(&cfg)?;
        Ok(ClientSnapshot {
            cfg: Arc::new(cfg),
            tls,
        })
    }

    fn connection(
        self: &Arc<Self>,
        sock: TcpStream,
        peer: SocketAddr,
        _local: SocketAddr,
        slot: Option<OwnedSemaphorePermit>,
        backend: Arc<str>,
    ) {
        let Some(slot) = slot else {
            debug!(%peer, "max_connections reached; refusing local connection");
            self.service().metrics.connection("", "overloaded");
            return;
        };
        let a = self.clone();
        let abort = self.service().abort.clone();
        let span = tracing::info_span!("tunnel", %peer, backend = %backend);
        self.service().tracker.spawn(
            async move {
                a.forward(sock, &backend, abort.cancelled_owned()).await;
                drop(slot);
            }
            .instrument(span),
        );
    }
}

/// Binds the listener of every tunnel.
pub async fn bind_all(cfg: &ClientConfig) -> Result<Vec<TcpListener>, BindError> {
    let mut out = Vec::new();
    for (i, t) in cfg.tunnels.iter().enumerate() {
        out.push(
            TcpListener::bind(t.listen)
                .await
                .map_err(|source| BindError {
                    file: cfg.file.clone(),
                    key: format!("tunnel[{i}].listen"),
                    addr: t.listen,
                    source,
                })?,
        );
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
