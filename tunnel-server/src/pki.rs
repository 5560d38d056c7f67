//! `tunnel-server pki`: the command line of the built-in CA. Thin: parse, call
//! `tunnel_core::pki::store`, print the outcome or the error, pick the exit code.

use std::process::ExitCode;
use tunnel_core::pki::store::{self, IssueRequest, LeafKind, RevokeTarget, Store};
use tunnel_server::cli::{PkiArgs, PkiCommand};

/// Runs one `pki` command and returns the process exit code.
pub fn run(args: PkiArgs) -> ExitCode {
    let (name, result) = match args.command {
        PkiCommand::Init {
            dir,
            name,
            days,
            key_type,
        } => (
            "init",
            Store::new(dir)
                .init(&name, days, key_type)
                .map(|c| c.to_string()),
        ),
        PkiCommand::Issue(a) => {
            let (kind, name) = match (a.server, a.client) {
                (Some(n), _) => (LeafKind::Server, n),
                (None, Some(n)) => (LeafKind::Client, n),
                // clap's required group rules this out.
                (None, None) => (LeafKind::Client, String::new()),
            };
            let req = IssueRequest {
                kind,
                name,
                dns: a.dns,
                ip: a.ip,
                o: a.o,
                ou: a.ou,
                uri: a.uri,
                email: a.email,
                days: a.days,
                key_type: a.key_type,
            };
            (
                "issue",
                Store::new(a.dir).issue(&req).map(|c| c.to_string()),
            )
        }
        PkiCommand::Revoke {
            dir,
            serial,
            cert,
            crl_days,
        } => {
            let target = match (serial, cert) {
                (Some(s), _) => RevokeTarget::Serial(s),
                (None, Some(c)) => RevokeTarget::Cert(c),
                (None, None) => RevokeTarget::Serial(String::new()),
            };
            (
                "revoke",
                Store::new(dir)
                    .revoke(&target, crl_days)
                    .map(|r| r.to_string()),
            )
        }
        PkiCommand::Crl { dir, days } => (
            "crl",
            Store::new(dir).write_crl(days).map(|w| w.to_string()),
        ),
        PkiCommand::List { dir } => (
            "list",
            Store::new(dir).list().map(|l| store::format_list(&l)),
        ),
    };
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tunnel-server pki {name}: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
