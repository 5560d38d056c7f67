//! `tunnel-server sessions` and `tunnel-server disconnect`: thin wrappers that send one
//! request to the running gateway's admin socket and print the reply.

use std::path::Path;
use std::process::ExitCode;
use tunnel_core::admin::cli::{self, CliError, DEFAULT_SERVER_SOCKET};
use tunnel_core::admin::Request;
use tunnel_core::authz::policy::IdentitySelector;
use tunnel_core::config::admin_socket_of;
use tunnel_server::cli::{DisconnectArgs, SessionsArgs, SocketArg};

/// Checks `--identity` here too, so a mistyped selector is a usage error (64) before the
/// socket is asked (the gateway checks it again: the socket has other clients).
fn check_identity(identity: Option<&str>) -> Result<(), ExitCode> {
    match identity.map(IdentitySelector::parse) {
        Some(Err(e)) => {
            eprintln!("--identity: {e}");
            Err(ExitCode::from(tunnel_core::EXIT_CONFIG as u8))
        }
        _ => Ok(()),
    }
}

/// Runs `sessions`.
pub fn sessions(a: SessionsArgs, config: Option<&Path>) -> ExitCode {
    if let Err(code) = check_identity(a.identity.as_deref()) {
        return code;
    }
    let req = Request::Sessions {
        backend: a.backend,
        identity: a.identity,
    };
    send(&a.sock, config, &req)
}

/// Runs `disconnect`.
pub fn disconnect(a: DisconnectArgs, config: Option<&Path>) -> ExitCode {
    if let Err(code) = check_identity(a.identity.as_deref()) {
        return code;
    }
    let req = Request::Disconnect {
        id: a.id,
        identity: a.identity,
        backend: a.backend,
        serial: a.serial,
        reason: a.reason,
        block_for_secs: a.block_for,
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
        Ok(r) => {
            print!("{}", r.text);
            ExitCode::from(r.code as u8)
        }
        Err(CliError { code, message }) => {
            eprintln!("{message}");
            ExitCode::from(code as u8)
        }
    }
}
