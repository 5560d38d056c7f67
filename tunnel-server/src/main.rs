//! `tunnel-server`: the gateway. Thin: parse the command line, set up logging, load the
//! configuration, and hand over to `tunnel-core`.
#![forbid(unsafe_code)]

mod admin;
mod pki;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tunnel_core::config::{LogFormat, ServerConfig};
use tunnel_core::metrics::Metrics;
use tunnel_core::server::{self, Gateway};
use tunnel_core::{logging, privileges, reload, signals, systemd, EXIT_CONFIG, EXIT_RUNTIME};

#[derive(Parser)]
#[command(
    name = "tunnel-server",
    version,
    about = "mTLS gateway: verifies client certificates and forwards each client to the backends its identity may reach"
)]
struct Cli {
    /// Configuration file (TOML). Environment variables TUNNEL_SERVER_<KEY> override keys.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration (exit 0 when it is usable) and print a summary.
    Check {
        /// Also list the backends this certificate (PEM) may reach and the rule for each.
        #[arg(long, value_name = "CERT")]
        explain: Option<PathBuf>,
    },
    /// Run a self-contained demo on loopback: CA, gateway, client agent, echo backend.
    Demo {
        /// Exit after the two demonstration connections (status 0 when both behaved).
        #[arg(long)]
        exit_after_checks: bool,
    },
    /// A small CA for bootstrapping: init, issue server/client certs, revoke, emit a CRL, list.
    Pki(pki::PkiArgs),
    /// Run the sign-in signer: issues short-lived client certificates for OpenID Connect
    /// ID tokens (HTTPS API; see the README, "Sign-in with your identity provider").
    Signer,
    /// List live tunnels (asks the running gateway through its admin socket).
    Sessions(admin::SessionsArgs),
    /// Close matching live tunnels at once (both TCP sides), optionally blocking the identity.
    Disconnect(admin::DisconnectArgs),
}

fn main() -> ExitCode {
    tunnel_core::panic::install();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match cli.command {
        Some(Command::Pki(args)) => pki::run(args),
        Some(Command::Signer) => run_signer(cli.config),
        Some(Command::Sessions(args)) => admin::sessions(args, cli.config.as_deref()),
        Some(Command::Disconnect(args)) => admin::disconnect(args, cli.config.as_deref()),
        Some(Command::Check { explain }) => {
            let Some(path) = cli.config else {
                eprintln!("tunnel-server check: --config FILE is required");
                return ExitCode::from(EXIT_CONFIG as u8);
            };
            match tunnel_core::check::check(&path, explain.as_deref()) {
                Ok(summary) => {
                    print!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(EXIT_CONFIG as u8)
                }
            }
        }
        Some(Command::Demo { exit_after_checks }) => {
            logging::init(LogFormat::Text, Some("info"));
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            match rt.block_on(tunnel_core::demo::run(
                exit_after_checks,
                signals::terminate(),
            )) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    eprintln!("demo: a demonstration connection did not behave as expected");
                    ExitCode::from(EXIT_RUNTIME as u8)
                }
                Err(e) => {
                    eprintln!("demo failed: {e}");
                    ExitCode::from(EXIT_RUNTIME as u8)
                }
            }
        }
        None => {
            let Some(path) = cli.config else {
                eprintln!("tunnel-server: --config FILE is required (or try `tunnel-server demo`)");
                return ExitCode::from(EXIT_CONFIG as u8);
            };
            run(path)
        }
    }
}

/// Prints a command-line error (or --help/--version) and exits 64 for bad usage, as the
/// rest of the program does, instead of clap's default 2.
fn usage_error(e: clap::Error) -> ExitCode {
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(EXIT_CONFIG as u8)
    } else {
        ExitCode::SUCCESS
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::from(EXIT_RUNTIME as u8)
        })
}

fn fail(code: i32, msg: impl std::fmt::Display) -> ExitCode {
    tracing::error!("{msg}");
    eprintln!("{msg}");
    ExitCode::from(code as u8)
}

fn run(path: PathBuf) -> ExitCode {
    let cfg = match ServerConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    logging::init(cfg.log_format, cfg.log_level.as_deref());
    let nofile = privileges::raise_nofile();
    privileges::check_fd_budget(cfg.max_connections, nofile);
    // Sockets passed by systemd must be taken before any thread starts.
    let activated = match systemd::take_activated() {
        Ok(a) => a,
        Err(e) => return fail(EXIT_RUNTIME, format!("socket activation: {e}")),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let metrics = Arc::new(Metrics::new());
        // CRLs given as URLs: fetched (or their last good copy kept) before they are loaded.
        if let Err(e) = tunnel_core::crl_fetch::prime(&cfg).await {
            return fail(EXIT_CONFIG, e);
        }
        let gateway = match Gateway::new(cfg.clone(), metrics.clone()) {
            Ok(g) => g,
            Err(e) => return fail(EXIT_CONFIG, e),
        };
        privileges::check_key_mode_for(&cfg.key, cfg.user.as_deref(), cfg.group.as_deref());
        let listeners = if activated.listeners.is_empty() {
            match server::bind_all(&cfg).await {
                Ok(l) => l,
                Err(e) => return fail(EXIT_RUNTIME, format!("{}: listen: {e}", path.display())),
            }
        } else {
            gateway.service().set_socket_activated();
            let mut v = Vec::new();
            for (name, l) in activated.listeners {
                match tokio::net::TcpListener::from_std(l) {
                    Ok(l) => {
                        tracing::info!(name = %name, "using socket passed by systemd");
                        v.push(l);
                    }
                    Err(e) => return fail(EXIT_RUNTIME, format!("socket activation: {e}")),
                }
            }
            v
        };
        let metrics_listener = match cfg.metrics {
            Some(a) => match tunnel_core::metrics::bind(a).await {
                Ok(l) => Some(l.allow(cfg.metrics_allow.clone())),
                Err(e) => return fail(EXIT_RUNTIME, format!("{}: metrics: {e}", path.display())),
            },
            None => None,
        };
        // The bound address (with `metrics = "…:0"` the port the kernel chose).
        let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
        let admin_socket = match server::bind_admin(&cfg) {
            Ok(a) => a,
            Err(e) => return fail(EXIT_RUNTIME, e),
        };
        // Everything privileged is done: listeners bound, keys read.
        if let Err(e) = privileges::drop_privileges(cfg.user.as_deref(), cfg.group.as_deref()) {
            return fail(EXIT_CONFIG, format!("{}: {e}", path.display()));
        }
        if let Some(a) = admin_socket {
            gateway.serve_admin(a);
        }
        for l in listeners {
            gateway.add_listener(l);
        }
        let control = match reload::start_service(
            metrics_listener,
            metrics,
            gateway.service().watch_list(),
            cfg.reload_interval,
        ) {
            Ok(c) => c,
            Err(e) => return fail(EXIT_RUNTIME, format!("cannot install signal handlers: {e}")),
        };
        // Serving from here on: /healthz answers 200 before the readiness line is logged.
        gateway
            .service()
            .metrics
            .set_health(tunnel_core::metrics::Health::Serving);
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
        tracing::info!(
            listen = %addrs.join(","),
            backends = %backends.join(","),
            cert = %tunnel_core::identity::one_line_name(snap.tls.cert.subject_name()),
            cert_expires = %snap.tls.cert.not_after(),
            crls = snap.tls.crls.len(),
            metrics = %metrics_addr.map(|m| m.to_string()).unwrap_or_default(),
            nofile = nofile.unwrap_or(0),
            "gateway listening"
        );
        systemd::ready(&format!("serving on {}", addrs.join(", ")));
        gateway.run(control).await;
        ExitCode::SUCCESS
    })
}

fn run_signer(path: Option<PathBuf>) -> ExitCode {
    let Some(path) = path else {
        eprintln!("tunnel-server signer: --config signer.toml is required");
        return ExitCode::from(EXIT_CONFIG as u8);
    };
    let cfg = match tunnel_core::signer::SignerConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    logging::init(cfg.log_format, cfg.log_level.as_deref());
    match runtime() {
        Ok(rt) => ExitCode::from(rt.block_on(tunnel_core::signer::run_file(cfg)) as u8),
        Err(code) => code,
    }
}
