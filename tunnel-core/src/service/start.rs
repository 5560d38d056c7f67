//! Starting an agent as a process, once its configuration is loaded: the listeners (bound
//! here or passed by systemd), the metrics endpoint, dropping privileges, signal handling,
//! readiness. What `tunnel-server` and `tunnel-client` would otherwise each repeat.

use crate::agent::{self, ClientAgent};
use crate::config::{ClientConfig, ServerConfig};
use crate::exit::{Exit, StartError};
use crate::gateway::{self, Gateway};
use crate::metrics::{Endpoint, Health, Metrics};
use crate::service::reload::Control;
use crate::service::systemd::{self, Activated};
use crate::service::Service;
use crate::{authz::identity, service::privileges, service::reload};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::info;

/// The multi-threaded Tokio runtime the agents run on.
pub fn runtime() -> Result<tokio::runtime::Runtime, StartError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError::runtime("cannot start the async runtime", e))
}

/// Raises the descriptor limit and warns when it cannot hold `max_connections`; then takes
/// the sockets systemd passed (before any thread starts, as socket activation requires).
pub fn prepare(max_connections: usize) -> Result<(Option<u64>, Activated), StartError> {
    let nofile = privileges::raise_nofile();
    privileges::check_fd_budget(max_connections, nofile);
    let activated =
        systemd::take_activated().map_err(|e| StartError::runtime("socket activation", e))?;
    Ok((nofile, activated))
}

/// Runs the gateway for `cfg` until SIGTERM/SIGINT and its drain.
pub async fn gateway(
    cfg: ServerConfig,
    activated: Activated,
    nofile: Option<u64>,
) -> Result<Exit, StartError> {
    let metrics = Arc::new(Metrics::new());
    // CRLs given as URLs: fetched (or their last good copy kept) before they are loaded.
    crate::revocation::crl_fetch::prime(&cfg)
        .await
        .map_err(StartError::Fetch)?;
    let gateway = Gateway::new(cfg.clone(), metrics.clone())?;
    for f in cfg.keys.secret_files() {
        privileges::check_key_mode_for(&f, cfg.user.as_deref(), cfg.group.as_deref());
    }
    let listeners = if activated.listeners.is_empty() {
        gateway::bind_all(&cfg).await?
    } else {
        gateway.service().set_socket_activated();
        let passed = from_systemd(activated)?;
        passed.into_iter().map(|(_, l)| l).collect()
    };
    let metrics_listener = bind_metrics(cfg.metrics, &cfg.file)
        .await?
        .map(|ep| ep.allow(cfg.metrics_allow.clone()));
    // The bound address (with `metrics = "…:0"` the port the kernel chose).
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let admin_socket = gateway::bind_admin(&cfg).map_err(StartError::Runtime)?;
    // Everything privileged is done: listeners bound, keys read.
    privileges::drop_privileges(cfg.user.as_deref(), cfg.group.as_deref())
        .map_err(|e| StartError::Usage(format!("{}: {e}", cfg.file.display())))?;
    if let Some(a) = admin_socket {
        gateway.serve_admin(a);
    }
    for l in listeners {
        gateway.add_listener(l);
    }
    let control = go_live(gateway.service(), metrics_listener, cfg.reload_interval)?;
    log_listening(&gateway, &cfg, metrics_addr, nofile);
    gateway.run(control).await;
    Ok(Exit::Success)
}

/// The start line: where the gateway listens, its backends and certificate; then tells
/// systemd it is ready.
fn log_listening(
    gateway: &Gateway,
    cfg: &ServerConfig,
    metrics_addr: Option<SocketAddr>,
    nofile: Option<u64>,
) {
    let snap = gateway.snapshot();
    let addrs: Vec<String> = gateway
        .listen_addrs()
        .iter()
        .map(|a| a.to_string())
        .collect();
    let backends: Vec<String> = cfg
        .backends
        .iter()
        .map(|b| format!("{}={}", b.name, b.address))
        .collect();
    info!(
        listen = %addrs.join(","),
        backends = %backends.join(","),
        cert = %identity::one_line_name(snap.tls.cert.subject_name()),
        cert_expires = %snap.tls.cert.not_after(),
        crls = snap.tls.crls.len(),
        metrics = %metrics_addr.map(|m| m.to_string()).unwrap_or_default(),
        nofile = nofile.unwrap_or(0),
        "gateway listening"
    );
    systemd::ready(&format!("serving on {}", addrs.join(", ")));
}

/// Runs the client agent for `cfg` until SIGTERM/SIGINT and its drain. With `announce`,
/// each tunnel's listening address is also printed on stdout (`tunnel-client open`).
pub async fn client_agent(
    cfg: ClientConfig,
    activated: Activated,
    nofile: Option<u64>,
    announce: bool,
) -> Result<Exit, StartError> {
    let metrics = Arc::new(Metrics::new());
    let agent = ClientAgent::new(cfg.clone(), metrics.clone())?;
    for f in cfg.keys.secret_files() {
        privileges::check_key_mode(&f);
    }
    if let Some(path) = &cfg.admin_socket {
        crate::admin::agent::serve(&agent, path)
            .map_err(|e| StartError::Runtime(format!("{}: {e}", cfg.file.display())))?;
    }
    if activated.listeners.is_empty() {
        let listeners = agent::bind_all(&cfg).await?;
        for (l, t) in listeners.into_iter().zip(&cfg.tunnels) {
            agent.add_listener(l, &t.backend);
        }
    } else {
        agent.service().set_socket_activated();
        for (backend, l) in assign_passed(&cfg, from_systemd(activated)?)? {
            agent.add_listener(l, &backend);
        }
    }
    let metrics_listener = bind_metrics(cfg.metrics, &cfg.file).await?;
    if let Some(addr) = metrics_listener.as_ref().and_then(|l| l.local_addr().ok()) {
        // The bound address (with `metrics = "…:0"` the port the kernel chose).
        info!(metrics = %addr, "metrics listening");
    }
    let control = go_live(agent.service(), metrics_listener, cfg.reload_interval)?;
    for (addr, backend) in agent.tunnel_addrs() {
        info!(listen = %addr, backend = %backend, gateway = %cfg.server, "tunnel listening");
        if announce {
            println!("{backend}: listening on {addr}");
        }
    }
    let snap = agent.snapshot();
    info!(
        gateway = %cfg.server,
        server_name = %cfg.server_name,
        cert = %identity::one_line_name(snap.tls.cert.subject_name()),
        cert_expires = %snap.tls.cert.not_after(),
        nofile = nofile.unwrap_or(0),
        "client agent started"
    );
    let n = cfg.tunnels.len();
    systemd::ready(&format!("{n} tunnel(s) to {}", cfg.server));
    agent.run(control).await;
    Ok(Exit::Success)
}

/// `tunnel-client stdio`: one tunnel to `backend` with stdin/stdout as the local side.
/// Fails (exit 1) when the tunnel did not end cleanly.
pub async fn client_stdio(cfg: ClientConfig, backend: String) -> Result<Exit, StartError> {
    let agent = ClientAgent::new(cfg, Arc::new(Metrics::new()))?;
    let local = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    match agent.forward(local, &backend, std::future::pending()).await {
        true => Ok(Exit::Success),
        false => Ok(Exit::Failure),
    }
}

/// Turns the sockets systemd passed into Tokio listeners, with their names.
fn from_systemd(activated: Activated) -> Result<Vec<(String, TcpListener)>, StartError> {
    let mut out = Vec::new();
    for (name, l) in activated.listeners {
        let l =
            TcpListener::from_std(l).map_err(|e| StartError::runtime("socket activation", e))?;
        info!(name = %name, "using socket passed by systemd");
        out.push((name, l));
    }
    Ok(out)
}

/// Which tunnel each passed socket serves: a socket named like a tunnel's backend serves that
/// tunnel; the others go to the tunnels in order.
fn assign_passed(
    cfg: &ClientConfig,
    passed: Vec<(String, TcpListener)>,
) -> Result<Vec<(String, TcpListener)>, StartError> {
    let mut unnamed = cfg.tunnels.iter();
    let mut out = Vec::new();
    for (name, l) in passed {
        let tunnel = match cfg.tunnels.iter().find(|t| t.backend == name) {
            Some(t) => t,
            None => unnamed.next().ok_or_else(|| {
                StartError::Usage(format!(
                    "{}: systemd passed socket {name:?} but no [[tunnel]] is left for it",
                    cfg.file.display()
                ))
            })?,
        };
        out.push((tunnel.backend.clone(), l));
    }
    Ok(out)
}

/// Binds the metrics endpoint when `metrics` is set (before privileges are dropped).
async fn bind_metrics(
    metrics: Option<SocketAddr>,
    file: &Path,
) -> Result<Option<Endpoint>, StartError> {
    let Some(a) = metrics else { return Ok(None) };
    let ep = crate::metrics::bind(a)
        .await
        .map_err(|e| StartError::Unavailable(format!("{}: metrics: {e}", file.display())))?;
    Ok(Some(ep))
}

/// Starts the metrics endpoint, signal handling, the file watcher and the watchdog, and
/// reports the agent serving (so `/healthz` answers 200 before the readiness lines).
fn go_live(
    service: &Service,
    metrics_listener: Option<Endpoint>,
    reload_interval: Duration,
) -> Result<mpsc::Receiver<Control>, StartError> {
    let control = reload::start_service(
        metrics_listener,
        service.metrics.clone(),
        service.watch_list(),
        reload_interval,
    )
    .map_err(|e| StartError::runtime("cannot install signal handlers", e))?;
    service.metrics.set_health(Health::Serving);
    Ok(control)
}
