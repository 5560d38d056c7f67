//! The gateway: accepts TLS from client agents, verifies and authorizes each client for the
//! backend its SNI names, dials the backend and copies bytes both ways.
//!
//! The accept loop does no TLS work: every connection gets its own task, which runs the
//! handshake under `handshake_timeout`. Authorization is decided after every handshake, full
//! or resumed, from the verified peer certificate and this connection's SNI; the backend
//! dialled is always the one that was authorized.

mod conn;
mod operator;
mod proxied;

pub use operator::{bind_admin, AdminBinding};

use crate::audit::{AuditRecord, Outcome};
use crate::config::{ConfigError, ServerConfig, StapleSource};
use crate::listeners::{self, Limit};
use crate::metrics::{Health, Metrics};
use crate::ocsp::{OcspChecker, OcspMode, Staple};
use crate::reload::Control;
use crate::service::{Current, Service};
use crate::tls::ServerTls;
use openssl::x509::X509;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

/// One immutable configuration in force: new connections take the current snapshot.
pub struct Snapshot {
    /// The configuration.
    pub cfg: Arc<ServerConfig>,
    /// TLS built from it.
    pub tls: ServerTls,
    /// OCSP checking of client certificates, when `ocsp` is not "off".
    pub ocsp: Option<OcspChecker>,
}

impl Snapshot {
    /// Validates certificates and builds TLS for `cfg`; `staple` holds the OCSP staple the
    /// gateway serves (it outlives reloads).
    pub fn new(cfg: ServerConfig, staple: Arc<Staple>) -> Result<Snapshot, ConfigError> {
        let policy = Arc::new(cfg.policy.clone());
        let tls = ServerTls::new(&cfg, policy, staple)?;
        let ocsp = match cfg.ocsp {
            OcspMode::Off => None,
            _ => Some(
                OcspChecker::new(
                    tls.cas.clone(),
                    cfg.ocsp_responder.clone(),
                    cfg.ocsp_timeout,
                )
                .map_err(|e| ConfigError::new(&cfg.file, "ocsp", format!("OpenSSL: {e}")))?
                .with_allow(cfg.ocsp_responder_allow.clone()),
            ),
        };
        Ok(Snapshot {
            cfg: Arc::new(cfg),
            tls,
            ocsp,
        })
    }

    /// Every file this configuration reads (for change detection).
    pub fn files(&self) -> Vec<std::path::PathBuf> {
        let c = &self.cfg;
        let mut v = vec![
            c.file.clone(),
            c.cert.clone(),
            c.key.clone(),
            c.client_ca.clone(),
        ];
        v.extend(c.crl.iter().cloned());
        v.extend(c.session_ticket_keys.iter().cloned());
        if let Some(StapleSource::File(p)) = &c.ocsp_staple {
            v.push(p.clone());
        }
        v
    }

    /// Logs a warning for the own certificate, a CA or a CRL that expires within
    /// `expiry_warning` (an error when already expired), and for each CA without a CRL.
    pub fn warn_expiry(&self) {
        crate::metrics::warn_expiries(&self.expiries(), self.cfg.expiry_warning);
        self.tls.crls.warn_missing(&self.tls.cas);
    }

    /// Expiry times for the metrics: own certificate, earliest CA, earliest CRL nextUpdate.
    pub fn expiries(&self) -> Vec<(String, i64)> {
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
        if let Some(t) = self.tls.crls.earliest_next_update() {
            v.push(("crl".to_string(), t));
        }
        v
    }
}

/// A running gateway's shared state.
pub struct Gateway {
    current: Current<Snapshot>,
    limit: Arc<Limit>,
    service: Service,
    listeners: Mutex<Vec<(SocketAddr, CancellationToken)>>,
    last_overload_log: AtomicU64,
    live: LiveConns,
    pending: PendingHandshakes,
    staple: Arc<Staple>,
    /// Budget of audit lines for connections refused before a client proved an identity.
    refused_log: Arc<crate::audit::flood::FloodLimit>,
    sessions: crate::admin::Sessions,
}

/// Handshakes in progress, oldest first, so that a flood of stalled handshakes cannot keep
/// legitimate clients out: beyond `max_handshakes`, the oldest handshakes pending for longer
/// than [`STALLED`] are closed to make room.
#[derive(Default)]
pub(crate) struct PendingHandshakes {
    next: AtomicU64,
    map: Arc<Mutex<std::collections::BTreeMap<u64, (std::time::Instant, CancellationToken)>>>,
}

/// A handshake pending this long is fair game for eviction under pressure; real clients
/// finish in milliseconds.
pub(crate) const STALLED: Duration = Duration::from_secs(1);

/// One pending handshake; removed from the set when dropped.
pub(crate) struct PendingEntry {
    id: u64,
    /// Cancelled when this handshake is evicted.
    pub(crate) token: CancellationToken,
    map: Arc<Mutex<std::collections::BTreeMap<u64, (std::time::Instant, CancellationToken)>>>,
}

impl PendingHandshakes {
    pub(crate) fn start(&self, cap: usize) -> PendingEntry {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        if let Ok(mut m) = self.map.lock() {
            while m.len() >= cap {
                let Some((&oldest, (since, _))) = m.iter().next() else {
                    break;
                };
                if since.elapsed() < STALLED {
                    break;
                }
                if let Some((_, t)) = m.remove(&oldest) {
                    t.cancel();
                }
            }
            m.insert(id, (std::time::Instant::now(), token.clone()));
        }
        PendingEntry {
            id,
            token,
            map: self.map.clone(),
        }
    }
}

impl PendingHandshakes {
    /// Closes the oldest handshake if it has been pending longer than [`STALLED`]; returns
    /// whether one was closed.
    pub(crate) fn evict_stalled(&self) -> bool {
        let Ok(mut m) = self.map.lock() else {
            return false;
        };
        let Some((&oldest, (since, _))) = m.iter().next() else {
            return false;
        };
        if since.elapsed() < STALLED {
            return false;
        }
        if let Some((_, t)) = m.remove(&oldest) {
            t.cancel();
        }
        true
    }
}

impl Drop for PendingEntry {
    fn drop(&mut self) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&self.id);
        }
    }
}

/// Open tunnels and their clients' verified chains (leaf first), so a reload can close those
/// its CRLs revoke: the client certificate or a CA that issued it.
#[derive(Default)]
struct LiveConns {
    next: AtomicU64,
    map: LiveMap,
}

/// Tunnel id -> (client chain, what cancels the tunnel).
type LiveMap = Arc<Mutex<HashMap<u64, (Vec<X509>, CancellationToken)>>>;

/// Removes its tunnel from [`LiveConns`] when dropped.
struct LiveEntry {
    id: u64,
    token: CancellationToken,
    map: LiveMap,
}

impl LiveConns {
    fn register(&self, chain: Vec<X509>) -> LiveEntry {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        if let Ok(mut m) = self.map.lock() {
            m.insert(id, (chain, token.clone()));
        }
        LiveEntry {
            id,
            token,
            map: self.map.clone(),
        }
    }

    /// Cancels every open tunnel with a certificate in its chain that `crls` revokes; returns
    /// how many.
    fn cut_revoked(&self, crls: &crate::tls::CrlSet) -> usize {
        let Ok(m) = self.map.lock() else { return 0 };
        let mut n = 0;
        for (chain, token) in m.values() {
            if crls.is_revoked(chain) && !token.is_cancelled() {
                token.cancel();
                n += 1;
            }
        }
        n
    }
}

impl LiveEntry {
    /// Replaces the registered chain with the one verified after the handshake.
    fn set_chain(&self, chain: Vec<X509>) {
        if let Ok(mut m) = self.map.lock() {
            if let Some(e) = m.get_mut(&self.id) {
                e.0 = chain;
            }
        }
    }
}

impl Drop for LiveEntry {
    fn drop(&mut self) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&self.id);
        }
    }
}

impl Gateway {
    /// Builds a gateway for `cfg` (loads certificates, CA, CRLs).
    pub fn new(cfg: ServerConfig, metrics: Arc<Metrics>) -> Result<Arc<Gateway>, ConfigError> {
        let max = cfg.max_connections;
        let staple = Arc::new(Staple::default());
        let snap = Snapshot::new(cfg, staple.clone())?;
        metrics.set_expiries(snap.expiries());
        metrics.reload(true);
        snap.warn_expiry();
        let files = snap.files();
        Ok(Arc::new(Gateway {
            current: Current::new(snap),
            limit: Arc::new(Limit::new(max)),
            service: Service::new(metrics, files),
            listeners: Mutex::new(Vec::new()),
            last_overload_log: AtomicU64::new(0),
            live: LiveConns::default(),
            pending: PendingHandshakes::default(),
            staple,
            refused_log: Arc::default(),
            sessions: Default::default(),
        }))
    }

    /// The configuration in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.get()
    }

    /// The service core: metrics, watched files, socket activation.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Starts accepting on `listener`.
    pub fn add_listener(self: &Arc<Self>, listener: TcpListener) {
        let Ok(addr) = listener.local_addr() else {
            return;
        };
        let stop = CancellationToken::new();
        if let Ok(mut l) = self.listeners.lock() {
            l.push((addr, stop.clone()));
        }
        let gw = self.clone();
        tokio::spawn(listeners::accept_loop(
            listener,
            self.limit.clone(),
            stop,
            move |sock, peer, permit| {
                let gw2 = gw.clone();
                let span = tracing::info_span!("conn", %peer, identity = tracing::field::Empty, backend = tracing::field::Empty);
                let Some(permit) = permit else {
                    // Full. If stalled handshakes hold slots, close the oldest and take its
                    // slot once it is free; otherwise refuse at once.
                    if !gw.pending.evict_stalled() {
                        gw.refuse_overloaded(peer);
                        drop(sock);
                        return;
                    }
                    gw.service.tracker.spawn(
                        async move {
                            match gw2.limit.acquire_within(Duration::from_secs(1)).await {
                                Some(permit) => {
                                    let snap = gw2.snapshot();
                                    conn::handle(sock, peer, addr, snap, gw2.clone()).await;
                                    drop(permit);
                                }
                                None => gw2.refuse_overloaded(peer),
                            }
                        }
                        .instrument(span),
                    );
                    return;
                };
                let snap = gw.snapshot();
                gw.service.tracker.spawn(
                    async move {
                        conn::handle(sock, peer, addr, snap, gw2).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            },
        ));
    }

    /// Addresses currently accepted on.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .lock()
            .map(|l| l.iter().map(|(a, _)| *a).collect())
            .unwrap_or_default()
    }

    /// Re-reads the configuration file and everything it points at. On success new
    /// connections use it (open ones keep theirs) and listeners follow `listen`; on failure
    /// the old configuration keeps serving and the error is returned.
    pub async fn reload(self: &Arc<Self>) -> Result<(), String> {
        let file = self.snapshot().cfg.file.clone();
        self.service.reload(&file, self.try_reload(&file)).await
    }

    async fn try_reload(self: &Arc<Self>, file: &std::path::Path) -> Result<(), String> {
        let cfg = ServerConfig::load(file).map_err(|e| e.to_string())?;
        crate::crl_fetch::prime(&cfg).await?;
        let snap = Snapshot::new(cfg, self.staple.clone()).map_err(|e| e.to_string())?;
        // Bind new addresses before committing, so a bind failure leaves everything as it was.
        let mut new_listeners = Vec::new();
        let current = self.listen_addrs();
        let activated = self.service.socket_activated();
        if !activated {
            for addr in &snap.cfg.listen {
                if !current.contains(addr) && addr.port() != 0 {
                    let l = TcpListener::bind(addr).await.map_err(|e| {
                        format!("{}: listen: cannot listen on {addr}: {e}", file.display())
                    })?;
                    new_listeners.push(l);
                }
            }
        }
        self.limit.resize(snap.cfg.max_connections);
        self.service.metrics.set_expiries(snap.expiries());
        self.service.set_watched(snap.files());
        let wanted = snap.cfg.listen.clone();
        let revoke_established = snap.cfg.revoke_established;
        let snap = Arc::new(snap);
        snap.warn_expiry();
        self.current.set(snap.clone());
        // A new certificate or staple setting wants a new staple now.
        self.staple.wake.notify_one();
        if revoke_established {
            let cut = self.live.cut_revoked(&snap.tls.crls);
            if cut > 0 {
                warn!(
                    connections = cut,
                    "closed open connections of certificates revoked by the new CRL"
                );
            }
        }
        for l in new_listeners {
            if let Ok(a) = l.local_addr() {
                info!(listen = %a, "listening on new address");
            }
            self.add_listener(l);
        }
        if !activated {
            if let Ok(mut ls) = self.listeners.lock() {
                ls.retain(|(addr, stop)| {
                    let keep = wanted.contains(addr)
                        || wanted.iter().any(|w| w.port() == 0 && w.ip() == addr.ip());
                    if !keep {
                        info!(listen = %addr, "no longer listening (removed from listen)");
                        stop.cancel();
                    }
                    keep
                });
            }
        }
        Ok(())
    }

    /// Runs until [`Control::Shutdown`]: reloads on [`Control::Reload`]; then stops accepting,
    /// lets open connections finish for up to `shutdown_timeout`, and closes the rest.
    pub async fn run(self: Arc<Self>, control: mpsc::Receiver<Control>) {
        self.service.metrics.set_health(Health::Serving);
        tokio::spawn(refresh_staple(Arc::downgrade(&self)));
        let weak = Arc::downgrade(&self);
        tokio::spawn(crate::crl_fetch::keep_fresh(move || {
            weak.upgrade().map(|g| g.snapshot().cfg.clone())
        }));
        tokio::spawn(crate::audit::flood::run(Arc::downgrade(&self.refused_log)));
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

    /// Serves `listeners` until `shutdown` completes, then drains (for embedding and tests).
    pub async fn serve<F>(self: Arc<Self>, listeners: Vec<TcpListener>, shutdown: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        for l in listeners {
            self.add_listener(l);
        }
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(Control::Shutdown).await;
        });
        self.run(rx).await;
    }

    async fn drain(&self) {
        crate::fleet::drain_delay(&self.service.metrics, self.snapshot().cfg.drain_delay).await;
        let stops = self
            .listeners
            .lock()
            .map(|l| l.iter().map(|(_, stop)| stop.clone()).collect())
            .unwrap_or_default();
        let grace = self.snapshot().cfg.shutdown_timeout;
        self.service.drain(stops, grace, "gateway").await;
    }

    fn refuse_overloaded(&self, peer: SocketAddr) {
        self.service
            .metrics
            .connection("", Outcome::Overloaded.as_str());
        let now = crate::metrics::unix_now() as u64;
        // One audit line per second at most: a flood must not flood the log.
        if self.last_overload_log.swap(now, Ordering::Relaxed) != now {
            let mut rec = AuditRecord::new(peer);
            rec.reason = "max_connections reached; connection refused (further refusals this second not logged)".into();
            rec.finish(Outcome::Overloaded);
        }
    }
}

/// Keeps the gateway's OCSP staple fresh while `ocsp_staple = "fetch"`: fetch, then again
/// halfway to its nextUpdate (at most hourly), retrying every minute after a failure, and at
/// once after a reload that changed the certificate or the setting. Ends with the gateway.
async fn refresh_staple(gw: std::sync::Weak<Gateway>) {
    loop {
        let Some(g) = gw.upgrade() else { return };
        let snap = g.snapshot();
        let staple = g.staple.clone();
        drop(g);
        let cert = snap.tls.cert.clone();
        let fp = crate::ocsp::cert_fingerprint(&cert);
        let wait = if snap.cfg.ocsp_staple != Some(StapleSource::Fetch) {
            Duration::from_secs(3600)
        } else {
            let issuer =
                crate::ocsp::find_issuer(&cert, snap.tls.chain.iter().chain(snap.tls.cas.iter()));
            let url = crate::ocsp::responder_of(&cert).or_else(|| snap.cfg.ocsp_responder.clone());
            match (issuer, url) {
                (Some(issuer), Some(url)) => {
                    match crate::ocsp::fetch_staple(&cert, &issuer, &url, snap.cfg.ocsp_timeout)
                        .await
                    {
                        Ok((der, next)) => {
                            staple.set(fp, der);
                            let now = crate::metrics::unix_now();
                            let half = next.map(|n| (n - now) / 2).unwrap_or(3600).clamp(60, 3600);
                            info!(responder = %url, refresh_in_secs = half, "OCSP staple refreshed");
                            Duration::from_secs(half as u64)
                        }
                        Err(e) => {
                            warn!(error = %e, "cannot fetch an OCSP staple; retrying in 60s");
                            Duration::from_secs(60)
                        }
                    }
                }
                _ => {
                    warn!("ocsp_staple = \"fetch\" needs the issuer (in cert or client_ca) and a responder (AIA or ocsp_responder)");
                    Duration::from_secs(300)
                }
            }
        };
        drop(snap);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = staple.wake.notified() => {}
        }
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
