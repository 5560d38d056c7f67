//! `tunnel-client`: the client agent. Thin: parse the command line, set up logging, load the
//! configuration (file or flags), and hand over to `tunnel-core`.
#![forbid(unsafe_code)]

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tunnel_core::client::{self, ClientAgent};
use tunnel_core::config::{ClientConfig, ClientFlags};
use tunnel_core::{logging, signals, EXIT_CONFIG, EXIT_RUNTIME};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdio = matches!(cli.command, Some(Command::Stdio));
    let f = cli.flags;
    let flags_given = f.server.is_some()
        || f.cert.is_some()
        || f.key.is_some()
        || f.ca.is_some()
        || f.listen.is_some();
    let cfg = match (&cli.config, flags_given) {
        (Some(_), true) => {
            eprintln!("tunnel-client: give either --config FILE or the one-off flags (--server --cert --key --ca --listen), not both");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
        (Some(path), false) => ClientConfig::load_with(path, stdio),
        (None, _) => ClientConfig::from_flags(
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
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME as u8);
        }
    };
    rt.block_on(async move {
        if stdio {
            let Some(backend) = f.backend.map(|b| b.trim().to_ascii_lowercase()).filter(|b| !b.is_empty()) else {
                eprintln!("tunnel-client stdio: --backend NAME is required");
                return ExitCode::from(EXIT_CONFIG as u8);
            };
            let agent = match ClientAgent::new(cfg) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_CONFIG as u8);
                }
            };
            let local = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
            let ok = agent.forward(local, &backend, std::future::pending()).await;
            return if ok { ExitCode::SUCCESS } else { ExitCode::from(EXIT_RUNTIME as u8) };
        }
        let agent = match ClientAgent::new(cfg.clone()) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(EXIT_CONFIG as u8);
            }
        };
        let listeners = match client::bind_all(&cfg).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{}: {e}", cfg.file.display());
                return ExitCode::from(EXIT_RUNTIME as u8);
            }
        };
        // Handle SIGTERM before saying we are ready (see signals::terminate).
        let shutdown = signals::terminate();
        for (addr, t) in client::local_addrs(&listeners).iter().zip(&cfg.tunnels) {
            tracing::info!(listen = %addr, backend = %t.backend, gateway = %cfg.server, "tunnel listening");
        }
        agent.serve(listeners, shutdown).await;
        ExitCode::SUCCESS
    })
}
