//! `tunnel-server`: the gateway. Thin: parse the command line, set up logging, load the
//! configuration, and hand over to `tunnel-core`.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tunnel_core::config::{LogFormat, ServerConfig};
use tunnel_core::server::{self, Gateway};
use tunnel_core::{logging, signals, EXIT_CONFIG, EXIT_RUNTIME};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
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

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::from(EXIT_RUNTIME as u8)
        })
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
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let gateway = match Gateway::new(cfg.clone()) {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("{e}");
                return ExitCode::from(EXIT_CONFIG as u8);
            }
        };
        let listeners = match server::bind_all(&cfg).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("{}: {e}", path.display());
                return ExitCode::from(EXIT_RUNTIME as u8);
            }
        };
        // Handle SIGTERM before saying we are ready (see signals::terminate).
        let shutdown = signals::terminate();
        let snap = gateway.snapshot();
        let addrs: Vec<String> = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
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
            "gateway listening"
        );
        gateway.serve(listeners, shutdown).await;
        ExitCode::SUCCESS
    })
}
