//! `tunnel-client`: the client agent. Thin: parse the command line, set up logging, load the
//! configuration (file or flags), and hand over to `tunnel-core`.
#![forbid(unsafe_code)]

mod catalog;
mod login;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tunnel_core::client::{self, ClientAgent};
use tunnel_core::config::{ClientConfig, ClientFlags};
use tunnel_core::metrics::Metrics;
use tunnel_core::{logging, privileges, reload, systemd, EXIT_CONFIG, EXIT_RUNTIME};

#[derive(Parser)]
#[command(
    name = "tunnel-client",
    version,
    about = "mTLS client agent: wraps local TCP ports (or stdin/stdout) in mutual TLS to a tunnel gateway"
)]
struct Cli {
    /// Configuration file (TOML). Environment variables TUNNEL_CLIENT_<KEY> override keys.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: FlagArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Default)]
struct FlagArgs {
    /// Gateway host:port (one-off tunnel without a config file).
    #[arg(long, global = true)]
    server: Option<String>,
    /// Name to verify in the gateway's certificate (default: host of --server).
    #[arg(long, global = true)]
    server_name: Option<String>,
    /// Client certificate (PEM).
    #[arg(long, global = true)]
    cert: Option<String>,
    /// Client private key (PEM).
    #[arg(long, global = true)]
    key: Option<String>,
    /// CA bundle that issued the gateway's certificate (PEM).
    #[arg(long, global = true)]
    ca: Option<String>,
    /// Local address to listen on (one-off tunnel).
    #[arg(long)]
    listen: Option<String>,
    /// Backend name to reach (sent as SNI).
    #[arg(long, global = true)]
    backend: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Use stdin/stdout as the local side of one tunnel (for ssh -o ProxyCommand=...).
    Stdio,
    /// Sign in with the identity provider and get a short-lived certificate from the signer.
    Login(login::LoginArgs),
    /// List the backends this identity may reach (asks the gateway's catalog).
    Ls,
    /// Open a tunnel to one backend of the catalog on a local port, and print the port.
    Open {
        /// Backend name (as `tunnel-client ls` shows it).
        name: String,
        /// Local address to listen on.
        #[arg(long = "listen", id = "open_listen", default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Show the running agent's tunnels, gateway, certificate expiry and last errors.
    Status {
        /// Admin socket (default: admin_socket of --config, else /run/tunnel-client/admin.sock).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Print the reply as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The agent's admin socket when neither `--socket` nor `--config` says otherwise.
const DEFAULT_SOCKET: &str = "/run/tunnel-client/admin.sock";

fn status(socket: Option<PathBuf>, config: Option<PathBuf>, json: bool) -> ExitCode {
    use tunnel_core::admin::cli;
    let from_config = |f: &std::path::Path| {
        tunnel_core::config::admin_socket_of(f, false).map_err(|e| e.to_string())
    };
    let out = cli::socket_path(
        socket.as_deref(),
        config.as_deref(),
        from_config,
        DEFAULT_SOCKET,
    )
    .and_then(|p| cli::run(&p, &tunnel_core::admin::Request::Status, json));
    match out {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", e.message);
            ExitCode::from(e.code as u8)
        }
    }
}

fn main() -> ExitCode {
    tunnel_core::panic::install();
    let mut cli = Cli::parse();
    let opened = match cli.command.take() {
        Some(Command::Login(args)) => return login::run(args, cli.config.as_deref(), cli.flags.ca),
        Some(Command::Ls) => return catalog::ls(cli.config.as_deref()),
        Some(Command::Status { socket, json }) => return status(socket, cli.config.clone(), json),
        Some(Command::Open { name, listen }) => {
            match catalog::open(cli.config.as_deref(), &name, &listen) {
                Ok(cfg) => Some(cfg),
                Err(code) => return code,
            }
        }
        other => {
            cli.command = other;
            None
        }
    };
    let announce = opened.is_some();
    let stdio = matches!(cli.command, Some(Command::Stdio));
    let f = cli.flags;
    let flags_given = f.server.is_some()
        || f.cert.is_some()
        || f.key.is_some()
        || f.ca.is_some()
        || f.listen.is_some();
    let cfg = match (opened, &cli.config, flags_given) {
        (Some(cfg), _, _) => Ok(cfg),
        (None, Some(_), true) => {
            eprintln!("tunnel-client: give either --config FILE or the one-off flags (--server --cert --key --ca --listen), not both");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
        (None, Some(path), false) => ClientConfig::load_with(path, stdio),
        (None, None, _) => ClientConfig::from_flags(
            ClientFlags {
                server: f.server,
                server_name: f.server_name,
                cert: f.cert,
                key: f.key,
                ca: f.ca,
                listen: f.listen,
                backend: f.backend.clone(),
            },
            stdio,
        ),
    };
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    // Logs go to stderr, so stdio mode keeps stdout for the tunnel.
    logging::init(cfg.log_format, cfg.log_level.as_deref());
    if stdio {
        let Some(backend) = f
            .backend
            .map(|b| b.trim().to_ascii_lowercase())
            .filter(|b| !b.is_empty())
        else {
            eprintln!("tunnel-client stdio: --backend NAME is required");
            return ExitCode::from(EXIT_CONFIG as u8);
        };
        return match runtime() {
            Ok(rt) => rt.block_on(run_stdio(cfg, backend)),
            Err(code) => code,
        };
    }
    let nofile = privileges::raise_nofile();
    privileges::check_fd_budget(cfg.max_connections, nofile);
    // Sockets passed by systemd must be taken before any thread starts.
    let activated = match systemd::take_activated() {
        Ok(a) => a,
        Err(e) => return fail(EXIT_RUNTIME, format!("socket activation: {e}")),
    };
    match runtime() {
        Ok(rt) => rt.block_on(run(cfg, activated, nofile, announce)),
        Err(code) => code,
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

async fn run_stdio(cfg: ClientConfig, backend: String) -> ExitCode {
    let agent = match ClientAgent::new(cfg, Arc::new(Metrics::new())) {
        Ok(a) => a,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let local = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    if agent.forward(local, &backend, std::future::pending()).await {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_RUNTIME as u8)
    }
}

async fn run(
    cfg: ClientConfig,
    activated: systemd::Activated,
    nofile: Option<u64>,
    announce: bool,
) -> ExitCode {
    let metrics = Arc::new(Metrics::new());
    let agent = match ClientAgent::new(cfg.clone(), metrics.clone()) {
        Ok(a) => a,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    privileges::check_key_mode(&cfg.key);
    if let Some(path) = &cfg.admin_socket {
        if let Err(e) = tunnel_core::admin::agent::serve(&agent, path) {
            return fail(EXIT_RUNTIME, format!("{}: {e}", cfg.file.display()));
        }
    }
    if activated.listeners.is_empty() {
        let listeners = match client::bind_all(&cfg).await {
            Ok(l) => l,
            Err(e) => return fail(EXIT_RUNTIME, format!("{}: {e}", cfg.file.display())),
        };
        for (l, t) in listeners.into_iter().zip(&cfg.tunnels) {
            agent.add_listener(l, &t.backend);
        }
    } else {
        // A socket named like a tunnel's backend serves that tunnel; others go in order.
        agent.service().set_socket_activated();
        let mut unnamed = cfg.tunnels.iter();
        for (name, l) in activated.listeners {
            let backend = match cfg.tunnels.iter().find(|t| t.backend == name) {
                Some(t) => t.backend.clone(),
                None => match unnamed.next() {
                    Some(t) => t.backend.clone(),
                    None => {
                        return fail(
                            EXIT_CONFIG,
                            format!(
                            "{}: systemd passed socket {name:?} but no [[tunnel]] is left for it",
                            cfg.file.display()
                        ),
                        )
                    }
                },
            };
            match tokio::net::TcpListener::from_std(l) {
                Ok(l) => agent.add_listener(l, &backend),
                Err(e) => return fail(EXIT_RUNTIME, format!("socket activation: {e}")),
            }
        }
    }
    let metrics_listener = match cfg.metrics {
        Some(a) => match tunnel_core::metrics::bind(a).await {
            Ok(l) => {
                // The bound address (with `metrics = "…:0"` the port the kernel chose).
                let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
                tracing::info!(metrics = %addr, "metrics listening");
                Some(l)
            }
            Err(e) => {
                return fail(
                    EXIT_RUNTIME,
                    format!("{}: metrics: {e}", cfg.file.display()),
                )
            }
        },
        None => None,
    };
    let control = match reload::start_service(
        metrics_listener,
        metrics,
        agent.service().watch_list(),
        cfg.reload_interval,
    ) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_RUNTIME, format!("cannot install signal handlers: {e}")),
    };
    // Serving from here on: /healthz answers 200 before the readiness lines are logged.
    agent
        .service()
        .metrics
        .set_health(tunnel_core::metrics::Health::Serving);
    for (addr, backend) in agent.tunnel_addrs() {
        tracing::info!(listen = %addr, backend = %backend, gateway = %cfg.server, "tunnel listening");
        if announce {
            println!("{backend}: listening on {addr}");
        }
    }
    tracing::info!(
        gateway = %cfg.server,
        server_name = %cfg.server_name,
        cert = %tunnel_core::identity::one_line_name(agent.snapshot().tls.cert.subject_name()),
        cert_expires = %agent.snapshot().tls.cert.not_after(),
        nofile = nofile.unwrap_or(0),
        "client agent started"
    );
    systemd::ready(&format!(
        "{} tunnel(s) to {}",
        cfg.tunnels.len(),
        cfg.server
    ));
    agent.run(control).await;
    ExitCode::SUCCESS
}
