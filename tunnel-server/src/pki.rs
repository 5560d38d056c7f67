//! `tunnel-server pki`: the command line of the built-in CA. Thin: call
//! `tunnel_core::pki::store`, print the outcome or the error, pick the exit code (the clap
//! definitions are in `tunnel_server::cli`).

use tunnel_core::pki::store::{self, IssueRequest, LeafKind, RevokeTarget, Store};
use tunnel_core::{Exit, StartError};
use tunnel_server::cli::{PkiArgs, PkiCommand};

/// Runs one `pki` command, printing its result.
pub fn run(args: PkiArgs) -> Result<Exit, StartError> {
    // Report what is tightened; refusals come from the command itself.
    if let Ok(notes) = Store::new(args.command.dir()).secure() {
        for n in notes {
            eprintln!("tunnel-server pki: {n}");
        }
    }
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
    let out = result.map_err(|source| StartError::Pki {
        command: name,
        source,
    })?;
    print!("{out}");
    Ok(Exit::Success)
}
