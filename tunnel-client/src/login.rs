//! `tunnel-client login`: command-line side of the sign-in (the work is in
//! `tunnel_core::signin::login`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tunnel_client::cli::LoginArgs;
use tunnel_core::signin::login::{files, login, LoginOptions};
use tunnel_core::{EXIT_CONFIG, EXIT_RUNTIME};

/// Runs the login; `config` is `--config`.
pub fn run(args: LoginArgs, config: Option<&Path>) -> ExitCode {
    let Some(config) = files::default_config(config) else {
        eprintln!("tunnel-client login: neither --config, $XDG_CONFIG_HOME nor $HOME is set; give --config FILE");
        return ExitCode::from(EXIT_CONFIG as u8);
    };
    // Without --signer (and --ca), the last sign-in's, remembered in the per-user config.
    let remembered = files::remembered_signer(&config);
    let Some(signer) = args
        .signer
        .or_else(|| remembered.as_ref().map(|r| r.0.clone()))
    else {
        eprintln!("tunnel-client login: --signer URL is required (no earlier sign-in is remembered in {})", config.display());
        return ExitCode::from(EXIT_CONFIG as u8);
    };
    let Some(ca) = args
        .ca
        .map(PathBuf::from)
        .or_else(|| remembered.and_then(|r| r.1))
    else {
        eprintln!("tunnel-client login: --ca FILE (the CA that issued the signer's certificate) is required");
        return ExitCode::from(EXIT_CONFIG as u8);
    };
    let opts = LoginOptions {
        signer,
        ca,
        idp_ca: args.idp_ca,
        device: args.device,
        no_browser: args.no_browser,
        lifetime: args.lifetime,
        config,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME as u8);
        }
    };
    match rt.block_on(login(&opts)) {
        Ok(r) => {
            let until = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(r.not_after.max(0) as u64),
            );
            println!("Signed in: certificate {} valid until {until}", r.serial);
            if r.clamped {
                println!("  (the signer shortened the requested lifetime to its maximum)");
            }
            println!(
                "  certificate: {}\n  key: {}\n  config: {}",
                r.cert.display(),
                r.key.display(),
                r.config.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tunnel-client login: {e}");
            e.exit().into()
        }
    }
}
