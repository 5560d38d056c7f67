//! `tunnel-client`: the client agent. Thin: parse the command line, set up logging, load the
//! configuration (file or flags), and hand over to `tunnel-core`.
#![forbid(unsafe_code)]

mod catalog;
mod exec;
mod login;
mod request;

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use tunnel_client::cli::{Cli, Command, FlagArgs};
use tunnel_core::config::{ClientConfig, ClientFlags};
use tunnel_core::{service::logging, service::start, Exit, StartError, EXIT_CONFIG};

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
        Ok(r) => {
            print!("{}", r.text);
            ExitCode::from(r.code as u8)
        }
        Err(e) => {
            eprintln!("{}", e.message);
            ExitCode::from(e.code as u8)
        }
    }
}

fn main() -> ExitCode {
    tunnel_core::service::panic::install();
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Bad usage exits 64 like a bad configuration, not clap's 2; --help/--version exit 0.
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_CONFIG as u8 } else { 0 });
        }
    };
    if cli.command.is_none() && cli.config.is_none() && !cli.flags.any() {
        return first_steps();
    }
    let opened = match cli.command.take() {
        Some(Command::Login(mut args)) => {
            args.ca = args.ca.or(cli.flags.gateway.ca);
            return login::run(args, cli.config.as_deref());
        }
        Some(Command::Stdio(args)) => {
            cli.flags = args.over(std::mem::take(&mut cli.flags));
            cli.command = Some(Command::Stdio(Default::default()));
            None
        }
        Some(Command::Ls) => return catalog::ls(cli.config.as_deref()),
        Some(Command::Request(args)) => return request::request(args, cli.config.as_deref()),
        Some(Command::Requests) => return request::pending(cli.config.as_deref()),
        Some(Command::Approve { id, reason }) => {
            return request::decide(cli.config.as_deref(), &id, true, &reason)
        }
        Some(Command::Deny { id, reason }) => {
            return request::decide(cli.config.as_deref(), &id, false, &reason)
        }
        Some(Command::Exec { name, command }) => {
            return exec::run(cli.config.as_deref(), &name, command)
        }
        Some(Command::Status { socket, json }) => return status(socket, cli.config.clone(), json),
        Some(Command::Open { name, listen }) => {
            match catalog::open("open", cli.config.as_deref(), &name, &listen) {
                Ok(cfg) => Some(cfg),
                Err(code) => return code,
            }
        }
        other => {
            cli.command = other;
            None
        }
    };
    match run(cli, opened) {
        Ok(exit) => exit.into(),
        Err(e) => e.report(),
    }
}

/// `tunnel-client` alone: what to do next, instead of a usage error about a missing key.
fn first_steps() -> ExitCode {
    let user = tunnel_core::signin::login::files::default_config(None).filter(|p| p.is_file());
    let text = match user {
        Some(path) => format!(
            "tunnel-client: you are signed in (per-user config {}). Next:\n\
             \x20 tunnel-client ls                       the backends you may reach\n\
             \x20 tunnel-client open NAME                a local port for one of them\n\
             \x20 tunnel-client exec NAME -- CMD {{port}}  run a command through a tunnel\n\
             \x20 tunnel-client --config {}     run the agent with [[tunnel]] tables you add\n",
            path.display(),
            path.display()
        ),
        None => "tunnel-client: nothing to run yet. Next, one of:\n\
                 \x20 tunnel-client login --signer https://SIGNER:9443 --ca SIGNER-CA.pem   sign in\n\
                 \x20 tunnel-client --config client.toml                               run the agent\n\
                 \x20 tunnel-client --server HOST:PORT --cert C --key K --ca CA --listen 127.0.0.1:PORT --backend NAME\n\
                 \x20 tunnel-client --help                                             everything else\n"
            .to_string(),
    };
    eprint!("{text}");
    ExitCode::from(EXIT_CONFIG as u8)
}

/// Runs the agent (or stdio mode); `opened` is the configuration `open` built, whose
/// listening addresses are then printed for the caller.
fn run(cli: Cli, opened: Option<ClientConfig>) -> Result<Exit, StartError> {
    let announce = opened.is_some();
    let stdio = matches!(cli.command, Some(Command::Stdio(_)));
    let backend = cli.flags.backend.clone();
    let cfg = match opened {
        Some(cfg) => cfg,
        None => load(cli.config, cli.flags, stdio)?,
    };
    // Logs go to stderr, so stdio mode keeps stdout for the tunnel.
    logging::init(cfg.log_format, cfg.log_level.as_deref());
    if stdio {
        let backend = backend
            .map(|b| b.trim().to_ascii_lowercase())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| {
                StartError::Usage("tunnel-client stdio: --backend NAME is required".into())
            })?;
        return start::runtime()?.block_on(start::client_stdio(cfg, backend));
    }
    let (nofile, activated) = start::prepare(cfg.max_connections)?;
    let agent = start::client_agent(cfg, activated, nofile, announce);
    start::runtime()?.block_on(agent)
}

/// The configuration from `--config FILE` or from the one-off flags (not both).
fn load(config: Option<PathBuf>, f: FlagArgs, stdio: bool) -> Result<ClientConfig, StartError> {
    let flags_given = f.gateway.server.is_some()
        || f.gateway.cert.is_some()
        || f.gateway.key.is_some()
        || f.gateway.ca.is_some()
        || f.listen.is_some();
    let cfg = match (config, flags_given) {
        (Some(_), true) => return Err(StartError::Usage("tunnel-client: give either --config FILE or the one-off flags (--server --cert --key --ca --listen), not both".into())),
        (Some(path), false) => ClientConfig::load_with(&path, stdio),
        (None, _) => ClientConfig::from_flags(
            ClientFlags {
                server: f.gateway.server,
                server_name: f.gateway.server_name,
                cert: f.gateway.cert,
                key: f.gateway.key,
                ca: f.gateway.ca,
                listen: f.listen,
                backend: f.backend,
            },
            stdio,
        ),
    };
    Ok(cfg?)
}
