//! `tunnel-server`: the gateway. Thin: parse the command line, set up logging, load the
//! configuration, and hand over to `tunnel-core`.
#![forbid(unsafe_code)]

mod admin;
mod pki;

use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tunnel_core::config::{LogFormat, ServerConfig};
use tunnel_core::{service::logging, service::signals, service::start, Exit, StartError};
use tunnel_server::cli::{Cli, Command};

fn main() -> ExitCode {
    tunnel_core::service::panic::install();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e).into(),
    };
    // The admin clients answer with their own exit status.
    let cli = match cli.command {
        Some(Command::Sessions(args)) => return admin::sessions(args, cli.config.as_deref()),
        Some(Command::Disconnect(args)) => return admin::disconnect(args, cli.config.as_deref()),
        _ => cli,
    };
    match dispatch(cli) {
        Ok(exit) => exit.into(),
        Err(e) => e.report(),
    }
}

fn dispatch(cli: Cli) -> Result<Exit, StartError> {
    match cli.command {
        Some(Command::Pki(args)) => pki::run(args),
        Some(Command::Signer(args)) => match args.command {
            None => run_signer(cli.config),
            Some(c) => signer_command(c, cli.config),
        },
        Some(Command::Sessions(_)) | Some(Command::Disconnect(_)) => Ok(Exit::Usage),
        Some(Command::Check { explain }) => {
            let path = cli.config.ok_or_else(|| {
                StartError::Usage("tunnel-server check: --config FILE is required".into())
            })?;
            print!(
                "{}",
                tunnel_core::gateway::check::check(&path, explain.as_deref())?
            );
            Ok(Exit::Success)
        }
        Some(Command::Demo { exit_after_checks }) => demo(exit_after_checks),
        None => {
            let path = cli.config.ok_or_else(|| {
                StartError::Usage(
                    "tunnel-server: --config FILE is required (or try `tunnel-server demo`)".into(),
                )
            })?;
            run(&path)
        }
    }
}

/// Prints a command-line error (or --help/--version) and exits 64 for bad usage, as the
/// rest of the program does, instead of clap's default 2.
fn usage_error(e: clap::Error) -> Exit {
    let _ = e.print();
    if e.use_stderr() {
        Exit::Usage
    } else {
        Exit::Success
    }
}

fn demo(exit_after_checks: bool) -> Result<Exit, StartError> {
    logging::init(LogFormat::Text, Some("info"));
    let demo = tunnel_core::demo::run(exit_after_checks, signals::terminate());
    match start::runtime()?.block_on(demo) {
        Ok(true) => Ok(Exit::Success),
        Ok(false) => Err(StartError::Runtime(
            "demo: a demonstration connection did not behave as expected".into(),
        )),
        Err(e) => Err(StartError::runtime("demo failed", e)),
    }
}

fn run(path: &Path) -> Result<Exit, StartError> {
    let cfg = ServerConfig::load(path)?;
    logging::init(cfg.log_format, cfg.log_level.as_deref());
    let (nofile, activated) = start::prepare(cfg.max_connections)?;
    start::runtime()?.block_on(start::gateway(cfg, activated, nofile))
}

fn run_signer(path: Option<PathBuf>) -> Result<Exit, StartError> {
    let path = path.ok_or_else(|| {
        StartError::Usage("tunnel-server signer: --config signer.toml is required".into())
    })?;
    let cfg = tunnel_core::signin::signer::SignerConfig::load(&path)?;
    logging::init(cfg.log_format, cfg.log_level.as_deref());
    start::runtime()?.block_on(tunnel_core::signin::signer::run_file(cfg))
}

fn signer_command(
    c: tunnel_server::cli::SignerCommand,
    path: Option<PathBuf>,
) -> Result<Exit, StartError> {
    use tunnel_core::signin::signer::commands::{self, Target};
    use tunnel_server::cli::SignerCommand;
    let path = path.ok_or_else(|| {
        StartError::Usage("tunnel-server signer: --config signer.toml is required".into())
    })?;
    logging::init(LogFormat::Text, Some("warn"));
    let rt = start::runtime()?;
    match c {
        SignerCommand::List { email, all, json } => {
            rt.block_on(commands::list(&path, email, all, json))
        }
        SignerCommand::Revoke {
            target,
            reason,
            block_for,
            json,
        } => {
            let target = match (target.email, target.sub, target.serial) {
                (Some(e), _, _) => Target::Email(e),
                (_, Some(s), _) => Target::Sub(s),
                (_, _, Some(h)) => Target::Serial(h),
                // clap's required group rules this out.
                _ => return Ok(Exit::Usage),
            };
            rt.block_on(commands::revoke(&path, target, reason, block_for, json))
        }
        SignerCommand::Unblock { email, sub } => {
            let target = match (email, sub) {
                (Some(e), _) => Target::Email(e),
                (_, Some(s)) => Target::Sub(s),
                _ => return Ok(Exit::Usage),
            };
            rt.block_on(commands::unblock(&path, target))
        }
        SignerCommand::Backup { to } => rt.block_on(commands::backup(&path, &to)),
    }
}
