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

pub(crate) mod admission;
pub(crate) mod audit;
pub mod catalog;
pub mod check;
pub(crate) mod fleet;
pub mod refused;
pub(crate) mod upstream;

use crate::config::{ConfigError, ServerConfig, StapleSource};
use crate::gateway::admission::{LiveConns, Overload, PendingHandshakes};
use crate::metrics::Metrics;
use crate::revocation::ocsp::staple::StapleTarget;
use crate::revocation::ocsp::{OcspChecker, OcspMode, Staple};
use crate::service::lifecycle::{self, Agent, BindError, Lifecycle, ReloadError, Settings};
use crate::service::reload::Control;
use crate::service::Service;
use crate::tls::ServerTls;
pub use operator::{bind_admin, AdminBinding};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tracing::{warn, Instrument};

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
    /// gateway serves (it outlives reloads). On reload, `previous` is the snapshot in force:
    /// its CRLs are what a CRL file re-read now must not roll back.
    pub fn new(
        cfg: ServerConfig,
        staple: Arc<Staple>,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, ConfigError> {
        let policy = Arc::new(cfg.policy.clone());
        let crls = previous.map(|p| &*p.tls.crls);
        let tls = ServerTls::new(&cfg, policy, staple, crls)?;
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

    /// What the OCSP staple refresher needs from this configuration.
    pub fn staple_target(&self) -> StapleTarget {
        let tls = &self.tls;
        StapleTarget {
            fetch: self.cfg.ocsp_staple == Some(StapleSource::Fetch),
            cert: tls.cert.clone(),
            issuers: tls.chain.iter().chain(tls.cas.iter()).cloned().collect(),
            responder: self.cfg.ocsp_responder.clone(),
            timeout: self.cfg.ocsp_timeout,
        }
    }

    /// Every file this configuration reads (for change detection).
    pub fn files(&self) -> Vec<PathBuf> {
        let c = &self.cfg;
        let mut v = vec![c.file.clone(), c.client_ca.clone()];
        v.extend(c.keys.files());
        v.extend(c.crl.iter().cloned());
        v.extend(c.session_ticket_keys.iter().cloned());
        if let Some(StapleSource::File(p)) = &c.ocsp_staple {
            v.push(p.clone());
        }
        v
    }
}

/// What a gateway listener serves: every backend, chosen by the client's SNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BySni;

impl std::fmt::Display for BySni {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("backend chosen by SNI")
    }
}

impl Settings for Snapshot {
    type Route = BySni;

    fn file(&self) -> &Path {
        &self.cfg.file
    }

    fn listeners(&self) -> Vec<(SocketAddr, BySni)> {
        self.cfg.listen.iter().map(|a| (*a, BySni)).collect()
    }

    fn listen_key(&self, _addr: SocketAddr) -> String {
        "listen".into()
    }

    fn files(&self) -> Vec<PathBuf> {
        Snapshot::files(self)
    }

    /// Own certificate, earliest CA, earliest CRL nextUpdate.
    fn expiries(&self) -> Vec<(String, i64)> {
        let mut v = crate::util::time::cert_expiries(&self.tls.cert, &self.tls.cas);
        if let Some(t) = self.tls.crls.earliest_next_update() {
            v.push(("crl".to_string(), t));
        }
        v
    }

    fn expiry_warning(&self) -> Duration {
        self.cfg.expiry_warning
    }

    fn max_connections(&self) -> usize {
        self.cfg.max_connections
    }

    fn shutdown_timeout(&self) -> Duration {
        self.cfg.shutdown_timeout
    }

    fn drain_delay(&self) -> Duration {
        self.cfg.drain_delay
    }

    /// Also warns for each CA without a CRL.
    fn warn_expiry(&self) {
        crate::util::time::warn_expiries(&self.expiries(), self.cfg.expiry_warning);
        self.tls.crls.warn_missing(&self.tls.cas);
    }
}

/// A running gateway's shared state.
pub struct Gateway {
    lifecycle: Lifecycle<Snapshot>,
    overload: Overload,
    live: LiveConns,
    pending: PendingHandshakes,
    staple: Arc<Staple>,
    /// Budget of audit lines for connections refused before a client proved an identity.
    refused_log: Arc<crate::gateway::audit::flood::FloodLimit>,
    sessions: crate::admin::Sessions,
}

impl Gateway {
    /// Builds a gateway for `cfg` (loads certificates, CA, CRLs).
    pub fn new(cfg: ServerConfig, metrics: Arc<Metrics>) -> Result<Arc<Gateway>, ConfigError> {
        let staple = Arc::new(Staple::default());
        let snap = Snapshot::new(cfg, staple.clone(), None)?;
        Ok(Arc::new(Gateway {
            lifecycle: Lifecycle::new(snap, metrics),
            overload: Overload::default(),
            live: LiveConns::default(),
            pending: PendingHandshakes::default(),
            staple,
            refused_log: Arc::default(),
            sessions: Default::default(),
        }))
    }

    /// The configuration in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.lifecycle.snapshot()
    }

    /// The service core: metrics, watched files, socket activation.
    pub fn service(&self) -> &Service {
        self.lifecycle.service()
    }

    /// Starts accepting on `listener`.
    pub fn add_listener(self: &Arc<Self>, listener: TcpListener) {
        lifecycle::add_listener(self, listener, BySni);
    }

    /// Addresses currently accepted on.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.lifecycle
            .listeners()
            .into_iter()
            .map(|(a, _)| a)
            .collect()
    }

    /// Re-reads the configuration file and everything it points at. On success new
    /// connections use it (open ones keep theirs) and listeners follow `listen`; on failure
    /// the old configuration keeps serving and the error is returned.
    pub async fn reload(self: &Arc<Self>) -> Result<(), ReloadError> {
        lifecycle::reload(self).await
    }

    /// Runs until [`Control::Shutdown`]: reloads on [`Control::Reload`]; then stops accepting,
    /// lets open connections finish for up to `shutdown_timeout`, and closes the rest.
    pub async fn run(self: Arc<Self>, control: mpsc::Receiver<Control>) {
        lifecycle::run(self, control).await;
    }

    /// Serves `listeners` until `shutdown` completes, then drains (for embedding and tests).
    pub async fn serve<F>(self: Arc<Self>, listeners: Vec<TcpListener>, shutdown: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let listeners = listeners.into_iter().map(|l| (l, BySni)).collect();
        lifecycle::serve(self, listeners, shutdown).await;
    }

    /// A connection over `max_connections`: if stalled handshakes hold slots, close the
    /// oldest and take its slot once it is free; otherwise refuse at once.
    fn over_limit(
        self: &Arc<Self>,
        sock: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        span: tracing::Span,
    ) {
        if !self.pending.evict_stalled() {
            self.refuse_overloaded(peer);
            return;
        }
        let gw = self.clone();
        self.service().tracker.spawn(
            async move {
                match gw
                    .lifecycle
                    .limit()
                    .acquire_within(Duration::from_secs(1))
                    .await
                {
                    Some(slot) => {
                        let snap = gw.snapshot();
                        conn::handle(sock, peer, local, snap, gw.clone()).await;
                        drop(slot);
                    }
                    None => gw.refuse_overloaded(peer),
                }
            }
            .instrument(span),
        );
    }

    fn refuse_overloaded(&self, peer: SocketAddr) {
        self.overload.refuse(&self.service().metrics, peer);
    }
}

impl Agent for Gateway {
    type Settings = Snapshot;
    const NAME: &'static str = "gateway";

    fn lifecycle(&self) -> &Lifecycle<Snapshot> {
        &self.lifecycle
    }

    async fn load(&self, file: &Path) -> Result<Snapshot, ReloadError> {
        let cfg = ServerConfig::load(file)?;
        crate::revocation::crl_fetch::prime(&cfg)
            .await
            .map_err(ReloadError::Fetch)?;
        let current = self.snapshot();
        Ok(Snapshot::new(cfg, self.staple.clone(), Some(&current))?)
    }

    fn connection(
        self: &Arc<Self>,
        sock: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        slot: Option<OwnedSemaphorePermit>,
        _route: BySni,
    ) {
        let span = tracing::info_span!("conn", %peer, identity = tracing::field::Empty, backend = tracing::field::Empty);
        let Some(slot) = slot else {
            return self.over_limit(sock, peer, local, span);
        };
        let snap = self.snapshot();
        let gw = self.clone();
        self.service().tracker.spawn(
            async move {
                conn::handle(sock, peer, local, snap, gw).await;
                drop(slot);
            }
            .instrument(span),
        );
    }

    fn committed(&self, snap: &Arc<Snapshot>) {
        // A new certificate or staple setting wants a new staple now.
        self.staple.wake.notify_one();
        if snap.cfg.revoke_established {
            let cut = self
                .live
                .cut_revoked(|chain| snap.tls.crls.is_revoked(chain));
            if cut > 0 {
                warn!(
                    connections = cut,
                    "closed open connections of certificates revoked by the new CRL"
                );
            }
        }
    }

    fn started(self: &Arc<Self>) {
        let gw = Arc::downgrade(self);
        let target = move || gw.upgrade().map(|g| g.snapshot().staple_target());
        tokio::spawn(crate::revocation::ocsp::staple::refresh(
            self.staple.clone(),
            target,
        ));
        let weak = Arc::downgrade(self);
        tokio::spawn(crate::revocation::crl_fetch::keep_fresh(move || {
            weak.upgrade().map(|g| g.snapshot().cfg.clone())
        }));
        tokio::spawn(crate::gateway::audit::flood::run(Arc::downgrade(
            &self.refused_log,
        )));
    }
}

/// Binds every `listen` address of `cfg`.
pub async fn bind_all(cfg: &ServerConfig) -> Result<Vec<TcpListener>, BindError> {
    let mut out = Vec::new();
    for addr in &cfg.listen {
        out.push(TcpListener::bind(addr).await.map_err(|source| BindError {
            file: cfg.file.clone(),
            key: "listen".into(),
            addr: *addr,
            source,
        })?);
    }
    Ok(out)
}
