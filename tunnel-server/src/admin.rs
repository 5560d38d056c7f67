//! `tunnel-server sessions` and `tunnel-server disconnect`: thin wrappers that send one
//! request to the running gateway's admin socket and print the reply.

use std::path::Path;
use std::process::ExitCode;
use tunnel_core::admin::cli::{self, CliError, DEFAULT_SERVER_SOCKET};
use tunnel_core::admin::Request;
use tunnel_core::config::admin_socket_of;
use tunnel_server::cli::{DisconnectArgs, SessionsArgs, SocketArg};

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
