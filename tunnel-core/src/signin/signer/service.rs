//! The signer as a service, like the gateway: bind, announce readiness to systemd (and feed
//! its watchdog), serve; SIGHUP (or `systemctl reload`) re-reads signer.toml, the user CA,
//! the HTTPS certificate and the provider's trust, and a broken new configuration is
//! refused, logged, and the one in force keeps serving; SIGTERM/SIGINT stops accepting and
//! lets the requests in progress finish (up to [`super::SHUTDOWN_GRACE`]).

use super::{api, Signer, SignerConfig, LIMITS, SHUTDOWN_GRACE};
use crate::exit::{Exit, StartError};
use crate::http::serve::{Request, Server, TlsSource};
use crate::service::reload::Control;
use crate::service::Current;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Loads the signer, binds, logs `signer listening`, and serves until SIGTERM/SIGINT.
pub async fn run_file(cfg: SignerConfig) -> Result<Exit, StartError> {
    let listen = cfg.listen;
    let file = cfg.file.clone();
    let store = super::state::open(&cfg).await.map_err(|e| {
        if e.is_config() {
            StartError::Usage(e.to_string())
        } else {
            StartError::Unavailable(e.to_string())
        }
    })?;
    info!(store = store.name(), "signer store open");
    let signer = Signer::new(cfg, store).map_err(StartError::Usage)?;
    let listener = TcpListener::bind(listen).await.map_err(|e| {
        StartError::Unavailable(format!(
            "{}: listen: cannot bind {listen}: {e}",
            file.display()
        ))
    })?;
    let (tx, control) = mpsc::channel(4);
    crate::service::reload::spawn_signal_forwarder(tx)
        .map_err(|e| StartError::runtime("cannot install signal handlers", e))?;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    info!(listen = %addr, issuer = %signer.cfg.issuer, client_id = %signer.cfg.client_id, "signer listening");
    crate::service::systemd::ready(&format!("signing on {addr}"));
    crate::service::systemd::spawn_watchdog();
    serve(Arc::new(Current::new(signer)), listener, control).await;
    Ok(Exit::Success)
}

/// Serves the signer in force in `current` until `control` says to shut down; reloads on
/// [`Control::Reload`].
pub(super) async fn serve(
    current: Arc<Current<Signer>>,
    listener: TcpListener,
    mut control: mpsc::Receiver<Control>,
) {
    let stop = CancellationToken::new();
    let tls: TlsSource = {
        let current = current.clone();
        Arc::new(move || current.get().acceptor())
    };
    let handler = {
        let current = current.clone();
        move |req: Request| {
            let signer = current.get();
            async move { api::handle(&signer, req).await }
        }
    };
    let server = Server::new(listener, Some(tls), LIMITS);
    let controller = async {
        while let Some(c) = control.recv().await {
            match c {
                Control::Reload(why) => reload(&current, &why),
                Control::Shutdown => break,
            }
        }
        crate::service::systemd::stopping("draining sign-in requests");
        stop.cancel();
    };
    tokio::join!(
        controller,
        server.run(Arc::new(handler), stop.clone(), SHUTDOWN_GRACE)
    );
    info!("signer stopped");
}

/// Re-reads everything; keeps the signer in force when anything is wrong.
fn reload(current: &Current<Signer>, why: &str) {
    crate::service::systemd::reloading();
    let old = current.get();
    let outcome = SignerConfig::load(&old.cfg.file)
        .map_err(|e| e.to_string())
        .and_then(|cfg| {
            if cfg.listen != old.cfg.listen {
                warn!(listen = %cfg.listen, "listen changed: restart the signer to apply it");
            }
            // The store stays open; pointing the signer at another one takes a restart.
            if cfg.store != old.cfg.store || cfg.store_password_file != old.cfg.store_password_file
            {
                warn!(store = %cfg.store, "store changed: restart the signer to apply it");
            }
            Signer::new(cfg, old.store().clone())
        });
    match outcome {
        Ok(new) => {
            current.set(Arc::new(new));
            info!(trigger = why, "signer configuration reloaded");
        }
        Err(e) => {
            error!(trigger = why, error = %e, "reload refused; the configuration in force keeps serving")
        }
    }
    crate::service::systemd::ready("signing");
}
