//! `tunnel-server pki`: the command line of the built-in CA. Thin: parse, call
//! `tunnel_core::pki::store`, print the outcome or the error, pick the exit code.

use clap::{ArgGroup, Args, Subcommand};
use std::path::PathBuf;
use tunnel_core::pki::store::{
    self, IssueRequest, LeafKind, RevokeTarget, Store, DEFAULT_CA_DAYS, DEFAULT_CA_NAME,
    DEFAULT_CERT_DAYS, DEFAULT_CRL_DAYS,
};
use tunnel_core::pki::KeyType;
use tunnel_core::{Exit, StartError};

const AFTER_HELP: &str = "\
Files in DIR: ca.crt, ca.key (0600), NAME.crt and NAME.key (0600) per certificate,
index.json (what was issued and revoked), crl.pem. Keys are ECDSA P-256 unless
--key-type says otherwise. Commands that change DIR lock it, so they may run concurrently.

Exit status: 0 done, 64 bad usage (unsafe name, malformed value), 1 failure (no CA, file
exists, unreadable file).";

/// Arguments of `tunnel-server pki`.
#[derive(Args)]
#[command(after_help = AFTER_HELP)]
pub struct PkiArgs {
    #[command(subcommand)]
    command: PkiCommand,
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create a CA: DIR/ca.crt and DIR/ca.key (mode 0600). Refuses to overwrite an existing CA.
    Init {
        /// The CA directory (created with mode 0700 if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The CA's subject common name.
        #[arg(long, default_value = DEFAULT_CA_NAME)]
        name: String,
        /// Validity in days.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_CA_DAYS)]
        days: u32,
        /// Key algorithm: ecdsa-p256, rsa2048 or ed25519.
        #[arg(long, value_name = "TYPE", default_value = "ecdsa-p256", value_parser = key_type)]
        key_type: KeyType,
    },
    /// Issue a server certificate (--server) or a client certificate (--client): DIR/NAME.crt
    /// and DIR/NAME.key (mode 0600).
    Issue(IssueArgs),
    /// Revoke a certificate and rewrite DIR/crl.pem, so the revocation takes effect with this
    /// one command once the gateway re-reads its CRL (it watches the file; SIGHUP also works).
    #[command(group(ArgGroup::new("which").required(true).args(["serial", "cert"])))]
    Revoke {
        /// The CA directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Serial number in hex, as `pki list` or `openssl x509 -noout -serial` shows it.
        #[arg(long, value_name = "HEX")]
        serial: Option<String>,
        /// The certificate file (PEM).
        #[arg(long, value_name = "FILE")]
        cert: Option<PathBuf>,
        /// Validity of the rewritten CRL in days.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_CRL_DAYS)]
        crl_days: u32,
    },
    /// Write DIR/crl.pem listing every revoked certificate. Run it again before the CRL's
    /// next update (e.g. from a timer).
    Crl {
        /// The CA directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Validity of the CRL in days.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_CRL_DAYS)]
        days: u32,
    },
    /// List issued certificates: serial, subject, not-after, status (valid/revoked/expired).
    List {
        /// The CA directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Args)]
#[command(group(ArgGroup::new("who").required(true).args(["server", "client"])))]
struct IssueArgs {
    /// The CA directory.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Server certificate (EKU serverAuth) for NAME, a DNS name or an IP address; NAME is the
    /// subject CN and a SAN.
    #[arg(long, value_name = "NAME")]
    server: Option<String>,
    /// Client certificate (EKU clientAuth) with subject CN.
    #[arg(long, value_name = "CN")]
    client: Option<String>,
    /// Another DNS name (SAN) of the server; repeatable.
    #[arg(long, value_name = "D", conflicts_with = "client")]
    dns: Vec<String>,
    /// Another IP address (SAN) of the server; repeatable.
    #[arg(long, value_name = "I", conflicts_with = "client")]
    ip: Vec<String>,
    /// Subject organizational unit of the client (policy rule `ou=`); repeatable.
    #[arg(long, value_name = "OU", conflicts_with = "server")]
    ou: Vec<String>,
    /// Subject organization of the client (policy rule `o=`); repeatable.
    #[arg(long, value_name = "O", conflicts_with = "server")]
    o: Vec<String>,
    /// URI SAN of the client, e.g. a SPIFFE ID (policy rule `uri=`); repeatable.
    #[arg(long, value_name = "U", conflicts_with = "server")]
    uri: Vec<String>,
    /// Email SAN of the client (policy rule `email=`); repeatable.
    #[arg(long, value_name = "E", conflicts_with = "server")]
    email: Vec<String>,
    /// Validity in days.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CERT_DAYS)]
    days: u32,
    /// Key algorithm: ecdsa-p256, rsa2048 or ed25519.
    #[arg(long, value_name = "TYPE", default_value = "ecdsa-p256", value_parser = key_type)]
    key_type: KeyType,
}

impl PkiCommand {
    fn dir(&self) -> &std::path::Path {
        match self {
            PkiCommand::Init { dir, .. }
            | PkiCommand::Revoke { dir, .. }
            | PkiCommand::Crl { dir, .. }
            | PkiCommand::List { dir } => dir,
            PkiCommand::Issue(a) => &a.dir,
        }
    }
}

fn key_type(s: &str) -> Result<KeyType, String> {
    s.parse()
}

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
