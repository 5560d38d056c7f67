//! The one lifecycle of the gateway and the client agent: the listener registry, accepting,
//! reloads that bind new addresses before committing, the control loop, and draining.
//!
//! What differs between the two is a parameter: the configuration snapshot ([`Settings`]),
//! and what happens to an accepted connection ([`Agent::connection`]).

use super::reconcile::{reconcile, Plan};
use super::{Current, Service};
use crate::config::ConfigError;
use crate::gateway::admission::Limit;
use crate::metrics::{Health, Metrics};
use crate::service::reload::Control;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// A configuration snapshot as the lifecycle sees it.
pub trait Settings: Send + Sync + 'static {
    /// What one listener serves (the client agent: the backend it tunnels to).
    type Route: Clone + PartialEq + fmt::Display + Send + Sync + 'static;
    /// The configuration file.
    fn file(&self) -> &Path;
    /// The addresses to listen on, as configured, with their routes.
    fn listeners(&self) -> Vec<(SocketAddr, Self::Route)>;
    /// The configuration key naming `addr`, for errors.
    fn listen_key(&self, addr: SocketAddr) -> String;
    /// Every file the configuration reads (for change detection).
    fn files(&self) -> Vec<PathBuf>;
    /// What expires when (`which`, Unix time), for metrics and warnings.
    fn expiries(&self) -> Vec<(String, i64)>;
    /// Warn this long before something of [`Settings::expiries`] expires.
    fn expiry_warning(&self) -> Duration;
    /// Cap on concurrent connections.
    fn max_connections(&self) -> usize;
    /// Grace period for open connections at shutdown.
    fn shutdown_timeout(&self) -> Duration;
    /// How long to keep accepting, with `/healthz` failing, before the listeners close at
    /// shutdown (so a load balancer stops sending clients first).
    fn drain_delay(&self) -> Duration {
        Duration::ZERO
    }

    /// Logs a warning for whatever expires within `expiry_warning` (an error when expired).
    fn warn_expiry(&self) {
        crate::util::time::warn_expiries(&self.expiries(), self.expiry_warning());
    }

    /// The warning lead for the item `which` of [`Settings::expiries`].
    fn lead_for(&self, _which: &str) -> Duration {
        self.expiry_warning()
    }

    /// When to check expiry dates again ([`crate::util::time::next_expiry_check`]).
    fn next_expiry_check(&self) -> Duration {
        let items: Vec<(i64, Duration)> = self
            .expiries()
            .into_iter()
            .map(|(which, at)| (at, self.lead_for(&which)))
            .collect();
        crate::util::time::next_expiry_check(&items, crate::util::time::unix_now())
    }
}

/// A long-running agent: the gateway or the client agent.
pub trait Agent: Send + Sync + Sized + 'static {
    /// Its configuration snapshot.
    type Settings: Settings;
    /// Its name in logs ("gateway stopped").
    const NAME: &'static str;
    /// Its lifecycle state.
    fn lifecycle(&self) -> &Lifecycle<Self::Settings>;
    /// Reads `file` and builds a snapshot from it (fetching what it names), without
    /// committing anything.
    fn load(&self, file: &Path)
        -> impl Future<Output = Result<Self::Settings, ReloadError>> + Send;
    /// Handles one connection accepted on `local` from `peer`, with its slot under
    /// `max_connections` (`None` when the limit is reached).
    fn connection(
        self: &Arc<Self>,
        sock: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        slot: Option<OwnedSemaphorePermit>,
        route: <Self::Settings as Settings>::Route,
    );
    /// Called after a reload committed `snap` (new connections use it from now on).
    fn committed(&self, _snap: &Arc<Self::Settings>) {}
    /// Called once when the agent starts serving.
    fn started(self: &Arc<Self>) {}
}

/// Why a reload was refused; the previous configuration keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A new listen address cannot be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Something the configuration names cannot be fetched (a CRL URL with no copy kept).
    #[error(transparent)]
    Fetch(#[from] crate::revocation::crl_fetch::FetchError),
}

/// A listen address that cannot be bound.
#[derive(Debug, thiserror::Error)]
#[error("{}: {key}: cannot listen on {addr}: {source}", file.display())]
pub struct BindError {
    /// The configuration file.
    pub file: PathBuf,
    /// The key naming the address.
    pub key: String,
    /// The address that could not be bound.
    pub addr: SocketAddr,
    /// What the operating system said (address in use, permission denied...).
    pub source: std::io::Error,
}

/// One open listener.
struct Listener<R> {
    addr: SocketAddr,
    stop: CancellationToken,
    route: Arc<RwLock<R>>,
}

/// The state every agent keeps around its connections: the snapshot in force, the
/// connection limit, the service core and the open listeners.
pub struct Lifecycle<S: Settings> {
    current: Current<S>,
    limit: Arc<Limit>,
    service: Service,
    listeners: Mutex<Vec<Listener<S::Route>>>,
}

impl<S: Settings> Lifecycle<S> {
    /// Starts with `snap` in force, reporting to `metrics`.
    pub fn new(snap: S, metrics: Arc<Metrics>) -> Lifecycle<S> {
        metrics.set_expiries(snap.expiries());
        metrics.set_max_connections(snap.max_connections());
        metrics.reload(true);
        snap.warn_expiry();
        let files = snap.files();
        Lifecycle {
            limit: Arc::new(Limit::new(snap.max_connections())),
            current: Current::new(snap),
            service: Service::new(metrics, files),
            listeners: Mutex::new(Vec::new()),
        }
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<S> {
        self.current.get()
    }

    /// The service core: metrics, connection tasks, watched files, socket activation.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The connection limit.
    pub fn limit(&self) -> &Arc<Limit> {
        &self.limit
    }

    /// Each open listener's address and route.
    pub fn listeners(&self) -> Vec<(SocketAddr, S::Route)> {
        crate::util::sync::lock(&self.listeners)
            .iter()
            .map(|l| (l.addr, crate::util::sync::read(&l.route).clone()))
            .collect()
    }

    /// Commits `snap`: limit, metrics, watched files, then the snapshot itself.
    fn commit(&self, snap: S) -> Arc<S> {
        self.limit.resize(snap.max_connections());
        self.service
            .metrics
            .set_max_connections(snap.max_connections());
        self.service.metrics.set_expiries(snap.expiries());
        self.service.set_watched(snap.files());
        let snap = Arc::new(snap);
        snap.warn_expiry();
        self.current.set(snap.clone());
        snap
    }

    /// Closes the listeners `plan` stops and re-points the ones it reroutes.
    fn apply(&self, plan: &Plan<S::Route>) {
        let mut ls = crate::util::sync::lock(&self.listeners);
        ls.retain(|l| {
            if !plan.to_stop.contains(&l.addr) {
                return true;
            }
            info!(listen = %l.addr, "no longer listening (removed from the configuration)");
            l.stop.cancel();
            false
        });
        for (addr, route) in &plan.to_reroute {
            if let Some(l) = ls.iter().find(|l| l.addr == *addr) {
                info!(listen = %addr, route = %route, "listener now reaches another backend");
                *crate::util::sync::write(&l.route) = route.clone();
            }
        }
    }

    fn stop_tokens(&self) -> Vec<CancellationToken> {
        crate::util::sync::lock(&self.listeners)
            .iter()
            .map(|l| l.stop.clone())
            .collect()
    }
}

/// Starts accepting on `listener`; each connection goes to [`Agent::connection`] with the
/// listener's current route.
pub(crate) fn add_listener<A: Agent>(
    agent: &Arc<A>,
    listener: TcpListener,
    route: <A::Settings as Settings>::Route,
) {
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    let lc = agent.lifecycle();
    let stop = CancellationToken::new();
    let route = Arc::new(RwLock::new(route));
    crate::util::sync::lock(&lc.listeners).push(Listener {
        addr,
        stop: stop.clone(),
        route: route.clone(),
    });
    let a = agent.clone();
    tokio::spawn(crate::service::listeners::accept_loop(
        listener,
        lc.limit.clone(),
        stop,
        move |sock, peer, slot| {
            let r = crate::util::sync::read(&route).clone();
            a.connection(sock, peer, addr, slot, r);
        },
    ));
}

/// Binds `addr`, an address of `snap`.
async fn bind<S: Settings>(snap: &S, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError {
        file: snap.file().to_path_buf(),
        key: snap.listen_key(addr),
        addr,
        source,
    })
}

/// Re-reads the configuration file and everything it points at. On success new connections
/// use it (open ones keep theirs) and the listeners follow it; on failure the old
/// configuration keeps serving and the error is returned (and logged).
pub(crate) async fn reload<A: Agent>(agent: &Arc<A>) -> Result<(), ReloadError> {
    let lc = agent.lifecycle();
    let file = lc.snapshot().file().to_path_buf();
    lc.service.reload(&file, try_reload(agent, &file)).await
}

async fn try_reload<A: Agent>(agent: &Arc<A>, file: &Path) -> Result<(), ReloadError> {
    let lc = agent.lifecycle();
    let snap = agent.load(file).await?;
    // Listeners passed by systemd belong to their socket units: the file's addresses are
    // neither bound nor closed.
    let plan = match lc.service.socket_activated() {
        true => Plan::default(),
        false => reconcile(&lc.listeners(), &snap.listeners()),
    };
    // Bind before committing, so that a bind failure leaves everything as it was.
    let mut bound = Vec::new();
    for (addr, route) in &plan.to_bind {
        bound.push((bind(&snap, *addr).await?, route.clone()));
    }
    let snap = lc.commit(snap);
    agent.committed(&snap);
    lc.apply(&plan);
    for (l, route) in bound {
        if let Ok(a) = l.local_addr() {
            info!(listen = %a, route = %route, "listening on new address");
        }
        add_listener(agent, l, route);
    }
    Ok(())
}

/// Runs until [`Control::Shutdown`]: reloads on [`Control::Reload`], re-checks expiry dates;
/// then stops accepting, lets open connections finish for up to `shutdown_timeout`, and
/// closes the rest.
pub(crate) async fn run<A: Agent>(agent: Arc<A>, control: mpsc::Receiver<Control>) {
    let lc = agent.lifecycle();
    lc.service.metrics.set_health(Health::Serving);
    agent.started();
    crate::service::reload::control_loop(
        control,
        || async {
            let _ = reload(&agent).await;
        },
        || lc.snapshot().warn_expiry(),
        || lc.snapshot().next_expiry_check(),
    )
    .await;
    crate::gateway::fleet::drain_delay(&lc.service.metrics, lc.snapshot().drain_delay()).await;
    let grace = lc.snapshot().shutdown_timeout();
    lc.service.drain(lc.stop_tokens(), grace, A::NAME).await;
}

/// Serves `listeners` (each with its route) until `shutdown` completes, then drains (for
/// embedding and tests).
pub(crate) async fn serve<A, F>(
    agent: Arc<A>,
    listeners: Vec<(TcpListener, <A::Settings as Settings>::Route)>,
    shutdown: F,
) where
    A: Agent,
    F: Future<Output = ()> + Send + 'static,
{
    for (l, route) in listeners {
        add_listener(&agent, l, route);
    }
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(Control::Shutdown).await;
    });
    run(agent, rx).await;
}
