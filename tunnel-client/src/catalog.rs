//! `tunnel-client ls` and `tunnel-client open`: the gateway's catalog of the backends this
//! identity may reach (`tunnel_core::gateway::catalog`), and a tunnel to one of them.

use std::path::Path;
use std::process::ExitCode;
use tunnel_core::config::{ClientConfig, TunnelConfig};
use tunnel_core::signin::login::files::default_config;
use tunnel_core::tls::ClientTls;
use tunnel_core::{gateway::catalog, EXIT_CONFIG, EXIT_RUNTIME};

fn load(config: Option<&Path>) -> Result<ClientConfig, ExitCode> {
    let Some(path) = default_config(config) else {
        eprintln!("tunnel-client: give --config FILE (or run `tunnel-client login` first)");
        return Err(ExitCode::from(EXIT_CONFIG as u8));
    };
    ClientConfig::load_with(&path, true).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_CONFIG as u8)
    })
}

fn fetch(cfg: &ClientConfig) -> Result<catalog::Catalog, ExitCode> {
    let fail = |msg: String| {
        eprintln!("tunnel-client: {msg}");
        ExitCode::from(EXIT_RUNTIME as u8)
    };
    let tls = ClientTls::new(cfg).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_CONFIG as u8)
    })?;
    if let Some(end) = tunnel_core::util::time::unix_time(tls.cert.not_after())
        .filter(|end| *end <= tunnel_core::util::time::unix_now())
    {
        let at = tunnel_core::pki::store::format_time(end);
        return Err(fail(format!(
            "certificate expired at {at}; run `tunnel-client login`"
        )));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(catalog::fetch(&tls, &cfg.server)).map_err(fail)
}

/// `tunnel-client ls`: prints the backends this identity may reach.
pub fn ls(config: Option<&Path>) -> ExitCode {
    let result = load(config).and_then(|cfg| fetch(&cfg));
    match result {
        Ok(c) => {
            print!("{}", catalog::format(&c));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `tunnel-client open NAME` (and `exec`, named by `cmd` in messages): the configuration for
/// one tunnel to `name` on `listen`, after checking that the catalog lists it.
pub fn open(
    cmd: &str,
    config: Option<&Path>,
    name: &str,
    listen: &str,
) -> Result<ClientConfig, ExitCode> {
    let mut cfg = load(config)?;
    let Ok(listen) = listen.parse() else {
        eprintln!(
            "tunnel-client {cmd}: --listen {listen:?} is not an address like 127.0.0.1:15432"
        );
        return Err(ExitCode::from(EXIT_CONFIG as u8));
    };
    let c = fetch(&cfg)?;
    if !c.backends.iter().any(|b| b.name == name) {
        eprintln!("tunnel-client {cmd}: {name:?} is not among the backends you may reach; `tunnel-client ls` lists them");
        return Err(ExitCode::from(EXIT_RUNTIME as u8));
    }
    cfg.tunnels = vec![TunnelConfig {
        listen,
        backend: name.to_string(),
    }];
    Ok(cfg)
}
