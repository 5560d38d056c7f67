//! Process signals: a future that completes on SIGTERM or SIGINT.

use std::future::Future;
use tokio::signal::unix::{signal, Signal, SignalKind};

fn install() -> (std::io::Result<Signal>, std::io::Result<Signal>) {
    (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    )
}

/// Completes when SIGTERM or SIGINT arrives. A second signal while draining exits at once.
///
/// Called inside a Tokio runtime, the handlers are installed by this call itself rather than
/// when the future is first polled: call it before announcing readiness, so that a SIGTERM
/// sent right after the "listening" line is a graceful shutdown, not the default (fatal)
/// action of the signal.
pub fn terminate() -> impl Future<Output = ()> {
    let early = tokio::runtime::Handle::try_current()
        .ok()
        .map(|_| install());
    async move {
        let (term, int) = early.unwrap_or_else(install);
        let mut term = match term {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install SIGTERM handler");
                return std::future::pending().await;
            }
        };
        let mut int = match int {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install SIGINT handler");
                return std::future::pending().await;
            }
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutting down: no new connections, draining open ones"
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            tracing::warn!("second signal: exiting at once");
            std::process::exit(0);
        });
    }
}
