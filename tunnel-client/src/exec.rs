//! `tunnel-client exec BACKEND -- COMMAND`: command-line side (the work is in
//! `tunnel_core::agent::exec`).

use crate::catalog;
use std::path::Path;
use std::process::ExitCode;
use tunnel_core::{agent::exec, service::logging, service::start};

/// Opens the tunnel (after the catalog check, like `open`), runs `argv` beside it and exits
/// with its status.
pub fn run(config: Option<&Path>, name: &str, argv: Vec<String>) -> ExitCode {
    let cfg = match catalog::open("exec", config, name, "127.0.0.1:0") {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    // The command owns the terminal: the agent speaks only of what goes wrong, unless the
    // configuration (or RUST_LOG) asks for more.
    logging::init(
        cfg.log_format,
        Some(cfg.log_level.as_deref().unwrap_or("warn")),
    );
    let rt = match start::runtime() {
        Ok(rt) => rt,
        Err(e) => return e.report(),
    };
    match rt.block_on(exec::run(cfg, argv)) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.code() as u8)
        }
    }
}
