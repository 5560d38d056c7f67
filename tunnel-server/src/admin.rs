//! `tunnel-server sessions` and `tunnel-server disconnect`: thin wrappers that send one
//! request to the running gateway's admin socket and print the reply.

use clap::{ArgGroup, Args};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tunnel_core::admin::cli::{self, CliError, DEFAULT_SERVER_SOCKET};
use tunnel_core::admin::Request;
use tunnel_core::config::admin_socket_of;

/// Where the admin socket is.
#[derive(Args)]
pub struct SocketArg {
    /// Admin socket (default: admin_socket of --config, else /run/tunnel/admin.sock).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print the reply as JSON.
    #[arg(long)]
    json: bool,
}

/// `sessions` arguments.
#[derive(Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    sock: SocketArg,
    /// Only tunnels to this backend.
    #[arg(long, value_name = "B")]
    backend: Option<String>,
    /// Only identities this pattern (`*` wildcards) matches: subject, CN, a SAN or fingerprint.
    #[arg(long, value_name = "PATTERN")]
    identity: Option<String>,
}

/// `disconnect` arguments.
#[derive(Args)]
#[command(group(ArgGroup::new("select").required(true).args(["id", "identity", "backend", "serial"])))]
pub struct DisconnectArgs {
    #[command(flatten)]
    sock: SocketArg,
    /// The tunnel with this id (see `sessions`).
    #[arg(long, value_name = "N")]
    id: Option<u64>,
    /// Tunnels whose identity this pattern matches.
    #[arg(long, value_name = "PATTERN")]
    identity: Option<String>,
    /// Every tunnel to this backend.
    #[arg(long, value_name = "B")]
    backend: Option<String>,
    /// Tunnels of the certificate with this serial number (hex).
    #[arg(long, value_name = "HEX")]
    serial: Option<String>,
    /// Why (recorded in the audit events).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Also refuse new connections of these identities for this long (in memory only).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    block_for: Option<std::time::Duration>,
}

/// Runs `sessions`.
pub fn sessions(a: SessionsArgs, config: Option<&Path>) -> ExitCode {
    let req = Request::Sessions {
        backend: a.backend,
        identity: a.identity,
    };
    send(&a.sock, config, &req)
}

/// Runs `disconnect`.
pub fn disconnect(a: DisconnectArgs, config: Option<&Path>) -> ExitCode {
    let req = Request::Disconnect {
        id: a.id,
        identity: a.identity,
        backend: a.backend,
        serial: a.serial,
        reason: a.reason,
        block_for_secs: a.block_for.map(|d| d.as_secs().max(1)),
    };
    send(&a.sock, config, &req)
}

fn send(sock: &SocketArg, config: Option<&Path>, req: &Request) -> ExitCode {
    let from_config = |f: &Path| admin_socket_of(f, true).map_err(|e| e.to_string());
    let out = cli::socket_path(
        sock.socket.as_deref(),
        config,
        from_config,
        DEFAULT_SERVER_SOCKET,
    )
    .and_then(|path| cli::run(&path, req, sock.json));
    match out {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(CliError { code, message }) => {
            eprintln!("{message}");
            ExitCode::from(code as u8)
        }
    }
}
