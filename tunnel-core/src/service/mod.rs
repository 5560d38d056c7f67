//! What the gateway and the client agent share as long-running services: the configuration
//! snapshot that reloads swap, the reload bookkeeping (systemd, metrics, logs), draining at
//! shutdown ([`Service`]), and the one lifecycle built on them ([`lifecycle`]): listeners,
//! bind-then-commit reloads ([`reconcile`]), the control loop.

pub(crate) mod lifecycle;
pub(crate) mod listeners;
pub mod logging;
pub mod panic;
pub(crate) mod privileges;
pub(crate) mod reconcile;
pub(crate) mod reload;
pub mod signals;
pub mod start;
pub(crate) mod systemd;

pub use lifecycle::{Agent, BindError, Lifecycle, ReloadError, Settings};

use crate::metrics::{Health, Metrics};
use crate::service::reload::WatchList;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// An immutable value that a reload replaces; readers take the one in force.
#[derive(Debug)]
pub struct Current<T>(RwLock<Arc<T>>);

impl<T> Current<T> {
    /// Starts with `value`.
    pub fn new(value: T) -> Current<T> {
        Current(RwLock::new(Arc::new(value)))
    }

    /// The value in force.
    pub fn get(&self) -> Arc<T> {
        crate::util::sync::read(&self.0).clone()
    }

    /// Replaces the value for later readers; holders of the old one keep it.
    pub fn set(&self, value: Arc<T>) {
        *crate::util::sync::write(&self.0) = value;
    }
}

/// Connection tasks, metrics, watched files and the abort switch of one agent.
pub struct Service {
    /// The agent's metrics.
    pub metrics: Arc<Metrics>,
    /// Every connection task.
    pub tracker: TaskTracker,
    /// Cancelled when `shutdown_timeout` runs out: cuts the remaining tunnels.
    pub abort: CancellationToken,
    watch: WatchList,
    socket_activated: AtomicBool,
}

impl Service {
    /// A service reporting to `metrics`, watching `files` for changes.
    pub fn new(metrics: Arc<Metrics>, files: Vec<PathBuf>) -> Service {
        Service {
            metrics,
            tracker: TaskTracker::new(),
            abort: CancellationToken::new(),
            watch: Arc::new(Mutex::new(files)),
            socket_activated: AtomicBool::new(false),
        }
    }

    /// The files to watch for changes (for [`crate::service::reload::start_service`]).
    pub fn watch_list(&self) -> WatchList {
        self.watch.clone()
    }

    /// Replaces the watched files after a reload.
    pub fn set_watched(&self, files: Vec<PathBuf>) {
        *crate::util::sync::lock(&self.watch) = files;
    }

    /// Marks the listeners as passed by systemd: the addresses in the file are then not
    /// bound or closed on reload (the socket units own them).
    pub fn set_socket_activated(&self) {
        self.socket_activated.store(true, Ordering::Relaxed);
    }

    /// Whether the listeners came from systemd.
    pub fn socket_activated(&self) -> bool {
        self.socket_activated.load(Ordering::Relaxed)
    }

    /// Runs one reload of `file`: tells systemd, counts it, logs the outcome.
    pub async fn reload(
        &self,
        file: &Path,
        attempt: impl Future<Output = Result<(), ReloadError>>,
    ) -> Result<(), ReloadError> {
        crate::service::systemd::reloading();
        let result = attempt.await;
        match &result {
            Ok(()) => {
                self.metrics.reload(true);
                info!(config = %file.display(), "configuration reloaded");
                crate::service::systemd::ready("serving (configuration reloaded)");
            }
            Err(e) => {
                self.metrics.reload(false);
                error!(config = %file.display(), error = %e, "reload refused; the previous configuration keeps serving");
                crate::service::systemd::ready(&format!("serving; last reload failed: {e}"));
            }
        }
        result
    }

    /// Stops the listeners (`stops`), lets open connections finish for up to `grace`, then
    /// cuts the rest.
    pub async fn drain(&self, stops: Vec<CancellationToken>, grace: Duration, what: &str) {
        self.metrics.set_health(Health::Draining);
        crate::service::systemd::stopping("draining connections");
        for stop in stops {
            stop.cancel();
        }
        self.tracker.close();
        let open = self.tracker.len();
        if open > 0 {
            info!(open, grace = ?grace, "draining open connections");
        }
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                open = self.tracker.len(),
                "shutdown_timeout reached; closing remaining connections"
            );
            self.abort.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
        }
        info!("{what} stopped");
    }
}
