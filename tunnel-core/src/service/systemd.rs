//! systemd integration: `sd_notify` state messages (READY, RELOADING with MONOTONIC_USEC,
//! STOPPING, STATUS, WATCHDOG) through the `sd-notify` crate, and socket activation
//! (`LISTEN_FDS` / `LISTEN_FDNAMES`) through `listenfd`. Without systemd every call is a no-op.

use sd_notify::NotifyState;
use std::time::Duration;
use tracing::{debug, warn};

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "sd_notify failed");
    }
}

/// READY=1 with a status line.
pub(crate) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// RELOADING=1 with MONOTONIC_USEC (required by systemd >= 253 for Type=notify-reload).
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(m) => send(&[
            NotifyState::Reloading,
            m,
            NotifyState::Status("reloading configuration"),
        ]),
        Err(_) => send(&[
            NotifyState::Reloading,
            NotifyState::Status("reloading configuration"),
        ]),
    }
}

/// STOPPING=1 with a status line.
pub(crate) fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// When `WATCHDOG_USEC` is set for this process, pings the watchdog at half the interval
/// from a task of the async runtime (so a wedged runtime stops the pings).
pub(crate) fn spawn_watchdog() {
    if let Some(interval) = sd_notify::watchdog_enabled() {
        let period = (interval / 2).max(Duration::from_millis(50));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                send(&[NotifyState::Watchdog]);
            }
        });
    }
}

/// Listening sockets passed by systemd, with their names (`FileDescriptorName=`; systemd's
/// default name is the socket unit's name).
#[derive(Debug, Default)]
pub struct Activated {
    /// (name, listener) in `LISTEN_FDS` order.
    pub listeners: Vec<(String, std::net::TcpListener)>,
}

/// Takes the sockets systemd passed. Call it before starting threads. Sockets that are not
/// TCP listeners are an error naming the fd.
pub(crate) fn take_activated() -> std::io::Result<Activated> {
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|s| s.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    let mut fds = listenfd::ListenFd::from_env();
    let mut out = Activated::default();
    for i in 0..fds.len() {
        match fds.take_tcp_listener(i)? {
            Some(l) => {
                l.set_nonblocking(true)?;
                let name = names.get(i).cloned().unwrap_or_else(|| "unknown".into());
                out.listeners.push((name, l));
            }
            None => warn!(fd = 3 + i, "passed file descriptor already taken; ignored"),
        }
    }
    Ok(out)
}
