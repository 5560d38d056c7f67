//! Reload triggers: SIGHUP, SIGTERM/SIGINT and changes of the files a configuration reads.
//!
//! Changes are noticed through filesystem notifications (inotify, via `notify`) on the files'
//! directories, debounced, and also by a poll every `reload_interval` for filesystems
//! without notifications. Either way a reload is requested only when a file's fingerprint
//! (inode, size, modification time) really changed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// What the control loop of an agent is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Re-read the configuration and everything it points at.
    Reload(String),
    /// Stop accepting, drain, exit.
    Shutdown,
}

/// Quiet time after a file event before checking, so a cert and key written one after the
/// other are picked up together.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(500);

/// Forwards SIGHUP as [`Control::Reload`] and the first SIGTERM/SIGINT as
/// [`Control::Shutdown`]; a second SIGTERM/SIGINT exits the process at once.
pub(crate) fn spawn_signal_forwarder(tx: mpsc::Sender<Control>) -> std::io::Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let mut stopping = false;
        loop {
            let which = tokio::select! {
                _ = hup.recv() => "SIGHUP",
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if which == "SIGHUP" {
                info!("SIGHUP: reloading");
                let _ = tx.send(Control::Reload("SIGHUP".into())).await;
            } else if stopping {
                warn!(signal = which, "second signal: exiting at once");
                std::process::exit(0);
            } else {
                stopping = true;
                info!(
                    signal = which,
                    "shutting down: no new connections, draining open ones"
                );
                let _ = tx.send(Control::Shutdown).await;
            }
        }
    });
    Ok(())
}

type Fingerprint = Vec<Option<(u64, u64, u64, i64, i64)>>;

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

/// The set of files to watch; the agent replaces it after each successful reload.
pub(crate) type WatchList = Arc<Mutex<Vec<PathBuf>>>;

/// Watches the files in `list`, sending [`Control::Reload`] when one changes.
pub(crate) fn spawn_file_watcher(list: WatchList, poll: Duration, tx: mpsc::Sender<Control>) {
    let (ev_tx, mut ev_rx) = mpsc::channel::<()>(16);
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            let _ = ev_tx.try_send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            debug!(error = %e, "file notifications unavailable; polling only");
            None
        }
    };
    let current = move || crate::util::sync::lock(&list).clone();
    // Baseline and directory watches are taken here, not in the task: the caller announces
    // readiness right after, and a file changed from then on must not be missed (a task
    // scheduled late would take the changed file as its baseline and never reload).
    let mut watched_dirs: Vec<PathBuf> = Vec::new();
    let mut last = fingerprint(&current());
    watch_dirs(watcher.as_mut(), &mut watched_dirs, &current());
    tokio::spawn(async move {
        loop {
            // Keep the directory watches in step with the file list.
            watch_dirs(watcher.as_mut(), &mut watched_dirs, &current());
            tokio::select! {
                ev = ev_rx.recv() => {
                    if ev.is_none() {
                        // Watcher gone: fall back to polling.
                        tokio::time::sleep(poll).await;
                    } else {
                        tokio::time::sleep(DEBOUNCE).await;
                        while ev_rx.try_recv().is_ok() {}
                    }
                }
                _ = tokio::time::sleep(poll) => {}
            }
            let files = current();
            let now = fingerprint(&files);
            if now != last {
                if now.len() == last.len() {
                    last = now;
                    info!("a configuration, certificate, key or CRL file changed: reloading");
                    if tx
                        .send(Control::Reload("file changed".into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                } else {
                    // The list itself changed after a reload: new baseline, no reload.
                    last = now;
                }
            }
        }
    });
}

/// Watches the directory of every file in `files` not watched yet (adding it to `watched`).
fn watch_dirs(
    watcher: Option<&mut notify::RecommendedWatcher>,
    watched: &mut Vec<PathBuf>,
    files: &[PathBuf],
) {
    use notify::Watcher;
    let Some(w) = watcher else { return };
    for p in files {
        let dir = p.parent().map(|d| d.to_path_buf()).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        if !watched.contains(&dir) {
            match w.watch(&dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => watched.push(dir),
                Err(e) => debug!(dir = %dir.display(), error = %e, "cannot watch directory"),
            }
        }
    }
}

/// Everything a long-running agent needs around its work, started together: the metrics
/// endpoint (when `metrics_addr` is set; bound by the caller before dropping privileges),
/// signal handling, the file watcher and the systemd watchdog. Returns the control channel.
pub(crate) fn start_service(
    metrics_listener: Option<crate::metrics::Endpoint>,
    metrics: Arc<crate::metrics::Metrics>,
    watch: WatchList,
    reload_interval: Duration,
) -> std::io::Result<mpsc::Receiver<Control>> {
    let (tx, rx) = mpsc::channel(8);
    if let Some(l) = metrics_listener {
        tokio::spawn(crate::metrics::serve(l, metrics));
    }
    spawn_signal_forwarder(tx.clone())?;
    spawn_file_watcher(watch, reload_interval, tx);
    crate::service::systemd::spawn_watchdog();
    Ok(rx)
}

/// The control loop of an agent: reloads on [`Control::Reload`], re-checks expiry dates
/// when `next_check` says (a warning window opening, an expiry, at most every
/// [`crate::util::time::EXPIRY_CHECK_PERIOD`]), and returns on [`Control::Shutdown`] (or when
/// every sender is gone).
pub(crate) async fn control_loop<F, Fut, W, N>(
    mut control: mpsc::Receiver<Control>,
    mut reload: F,
    warn_expiry: W,
    next_check: N,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
    W: Fn(),
    N: Fn() -> Duration,
{
    loop {
        // Recomputed after every event: a reload may bring certificates with other dates.
        let check = tokio::time::sleep(next_check());
        tokio::select! {
            c = control.recv() => match c {
                Some(Control::Reload(why)) => {
                    debug!(trigger = %why, "reload requested");
                    reload().await;
                }
                Some(Control::Shutdown) | None => return,
            },
            _ = check => warn_expiry(),
        }
    }
}
