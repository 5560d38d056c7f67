//! The command line of `tunnel-server`: every clap definition in one place, so that the binary
//! parses with it and `xtask` generates the man pages and shell completions from it.

use clap::{ArgGroup, Args, Parser, Subcommand};
use std::path::PathBuf;
use std::sync::OnceLock;
use tunnel_core::admin::protocol::{BlockFor, MAX_BLOCK_FOR, MAX_BLOCK_FOR_TEXT};
use tunnel_core::pki::store::{
    DEFAULT_CA_DAYS, DEFAULT_CA_NAME, DEFAULT_CERT_DAYS, DEFAULT_CRL_DAYS,
};
use tunnel_core::pki::KeyType;

/// Examples shown by `--help` and in the man page: (what it does, the command).
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "Bootstrap a CA, a gateway certificate and a client certificate",
        "tunnel-server pki init --dir /var/lib/tunnel/pki\n\
         tunnel-server pki issue --dir /var/lib/tunnel/pki --server gateway.example.com\n\
         tunnel-server pki issue --dir /var/lib/tunnel/pki --client alice --ou dba\n\
         tunnel-server pki crl --dir /var/lib/tunnel/pki",
    ),
    (
        "Validate a configuration and show which backends a certificate may reach",
        "tunnel-server check --config /etc/tunnel/server.toml --explain alice.crt",
    ),
    (
        "Run the gateway",
        "tunnel-server --config /etc/tunnel/server.toml",
    ),
    (
        "Try everything on loopback with a throwaway CA",
        "tunnel-server demo",
    ),
];

/// Exit statuses of `tunnel-server` (sysexits.h numbers), for `--help` and the man page.
pub const EXIT_CODES: &[(i32, &str)] = tunnel_core::EXIT_CODES;

/// Environment variables the gateway reads, for the man page.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "TUNNEL_SERVER_<KEY>",
        "overrides the configuration key KEY (e.g. TUNNEL_SERVER_LOG_FORMAT=json)",
    ),
    (
        "RUST_LOG",
        "log filter (e.g. warn,audit=info); overrides log_level",
    ),
    ("NO_COLOR", "when set, logs and help carry no colour codes"),
];

/// Files the gateway uses in the Debian package's layout, for the man page.
pub const FILES: &[(&str, &str)] = &[
    ("/etc/tunnel/server.toml", "the gateway's configuration"),
    (
        "/var/lib/tunnel/pki",
        "the built-in CA's directory (certificates, keys, index.json, crl.pem)",
    ),
    (
        "/usr/lib/systemd/system/tunnel-server.service",
        "the hardened unit (tunnel-server.socket for socket activation)",
    ),
];

/// `tunnel-server --version`: the crate version and the OpenSSL library linked at run time.
pub fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| tunnel_core::version_line(env!("CARGO_PKG_VERSION")))
}

fn after_help() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| tunnel_core::help_epilogue(EXAMPLES, EXIT_CODES))
}

/// The gateway's command line.
#[derive(Parser)]
#[command(
    name = "tunnel-server",
    version = version(),
    about = "mTLS gateway: verifies client certificates and forwards each client to the backends its identity may reach",
    after_help = after_help()
)]
pub struct Cli {
    /// Configuration file (TOML): the gateway's server.toml (for sessions and disconnect: to
    /// find its admin socket); for `signer`, signer.toml. Environment variables
    /// TUNNEL_SERVER_<KEY> (TUNNEL_SIGNER_<KEY> for the signer) override keys.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// What to do; without one, run the gateway.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands of `tunnel-server`.
#[derive(Subcommand)]
pub enum Command {
    /// Validate the configuration (exit 0 when it is usable) and print a summary.
    #[command(
        after_help = "Exit status: 0 usable, 64 not (with `file: key: what is wrong`). Safe in \
                      systemd's ExecStartPre=, as the packaged unit does."
    )]
    Check {
        /// Also list the backends this certificate (PEM) may reach and the rule for each.
        #[arg(long, value_name = "CERT")]
        explain: Option<PathBuf>,
    },
    /// Run a self-contained demo on loopback: CA, gateway, client agent, echo backend.
    Demo {
        /// Exit after the two demonstration connections (status 0 when both behaved).
        #[arg(long)]
        exit_after_checks: bool,
    },
    /// A small CA for bootstrapping: init, issue server/client certs, revoke, emit a CRL, list.
    Pki(PkiArgs),
    /// Run the sign-in signer: issues short-lived client certificates for OpenID Connect
    /// ID tokens (HTTPS API; see the README, "Sign-in with your identity provider"); with a
    /// command, work on its store (list, revoke, unblock, backup).
    Signer(SignerArgs),
    /// List live tunnels (asks the running gateway through its admin socket).
    Sessions(SessionsArgs),
    /// Close matching live tunnels at once (both TCP sides), optionally blocking the identity.
    Disconnect(DisconnectArgs),
}

/// Where the admin socket is.
#[derive(Args)]
pub struct SocketArg {
    /// Admin socket (default: admin_socket of --config, else /run/tunnel/admin.sock).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `sessions` arguments.
#[derive(Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    pub sock: SocketArg,
    /// Only tunnels to this backend.
    #[arg(long, value_name = "B")]
    pub backend: Option<String>,
    /// Only these identities: a rule as in `allow` (cn=alice, ou=contractors,
    /// email=*@example.com, uri=..., dns=..., sha256=...), or a glob (`*` wildcards) over the
    /// subject, a CN, a SAN or the fingerprint.
    #[arg(long, value_name = "SELECTOR")]
    pub identity: Option<String>,
}

/// `disconnect` arguments.
#[derive(Args)]
#[command(after_help = DISCONNECT_AFTER_HELP)]
#[command(group(ArgGroup::new("select").required(true).args(["id", "identity", "backend", "serial"])))]
pub struct DisconnectArgs {
    #[command(flatten)]
    pub sock: SocketArg,
    /// The tunnel with this id (see `sessions`).
    #[arg(long, value_name = "N")]
    pub id: Option<u64>,
    /// Tunnels of these identities: a rule as in `allow` (cn=alice, ou=contractors,
    /// email=*@example.com, uri=..., dns=..., sha256=...), or a glob (`*` wildcards) over the
    /// subject, a CN, a SAN or the fingerprint.
    #[arg(long, value_name = "SELECTOR")]
    pub identity: Option<String>,
    /// Every tunnel to this backend.
    #[arg(long, value_name = "B")]
    pub backend: Option<String>,
    /// Tunnels of the certificate with this serial number (hex).
    #[arg(long, value_name = "HEX")]
    pub serial: Option<String>,
    /// Why (recorded in the audit events).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Also refuse new connections of these identities for this long (in memory only; at
    /// most 366 days).
    #[arg(long, value_name = "DURATION", value_parser = block_for)]
    pub block_for: Option<BlockFor>,
}

const DISCONNECT_AFTER_HELP: &str = "\
Exit status: 0 tunnels were cut (or a --block-for block was set), 1 the selector matched no
live tunnel and nothing was done (so a mistyped selector is not taken for success; --json
also reports \"disconnected\": 0 with a note), 64 bad usage or an unknown selector kind,
69 the admin socket cannot be reached, 77 the socket refused the caller.";

const SIGNER_AFTER_HELP: &str = "\
Without a command, runs the signer. The commands open the store named by signer.toml's
`store` (the one the running signers use) and change it; the signers serve the new CRL at
/v1/crl from their next request.

Exit status: 0 done, 1 nothing matched (revoke, unblock), 64 bad usage or configuration,
69 the store cannot be opened or used.";

/// Arguments of `tunnel-server signer`.
#[derive(Args)]
#[command(after_help = SIGNER_AFTER_HELP)]
pub struct SignerArgs {
    /// A command on the signer's store; without one, run the signer.
    #[command(subcommand)]
    pub command: Option<SignerCommand>,
}

/// Which person or certificate.
#[derive(Args)]
#[command(group(ArgGroup::new("who").required(true).args(["email", "sub", "serial"])))]
pub struct SignerTarget {
    /// Every certificate of this email (case ignored), and the person with it.
    #[arg(long, value_name = "E")]
    pub email: Option<String>,
    /// Every certificate of this provider `sub`, and the person with it.
    #[arg(long, value_name = "S")]
    pub sub: Option<String>,
    /// The certificate with this serial (hex, as `signer list` or `openssl x509 -serial`
    /// prints it); blocks no one.
    #[arg(long, value_name = "HEX")]
    pub serial: Option<String>,
}

/// The subcommands of `tunnel-server signer`.
#[derive(Subcommand)]
pub enum SignerCommand {
    /// List the certificates the signers issued (unexpired ones unless --all).
    List {
        /// Only this email (case ignored).
        #[arg(long, value_name = "E")]
        email: Option<String>,
        /// Also expired certificates.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Offboard: revoke every matching unexpired certificate (it appears in /v1/crl at once)
    /// and, for --email or --sub, refuse that person new certificates until `unblock` (or
    /// for --block-for). Prints what it revoked.
    Revoke {
        #[command(flatten)]
        target: SignerTarget,
        /// Why (recorded in the store).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Refuse new certificates for this long only (e.g. 30d) instead of until unblock.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        block_for: Option<std::time::Duration>,
        /// Print the revoked certificates as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Let a blocked person sign in again.
    #[command(group(ArgGroup::new("who").required(true).args(["email", "sub"])))]
    Unblock {
        /// The email.
        #[arg(long, value_name = "E")]
        email: Option<String>,
        /// The provider `sub`.
        #[arg(long, value_name = "S")]
        sub: Option<String>,
    },
    /// Copy an SQLite store to FILE while the signers run (for PostgreSQL, use pg_dump).
    Backup {
        /// The new file.
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
}

const PKI_AFTER_HELP: &str = "\
Files in DIR: ca.crt, ca.key (0600), NAME.crt and NAME.key (0600) per certificate,
index.json (what was issued and revoked), crl.pem. Keys are ECDSA P-256 unless
--key-type says otherwise. Commands that change DIR lock it, so they may run concurrently.

Exit status: 0 done, 64 bad usage (unsafe name, malformed value), 74 a file of DIR cannot be
read, written or used (no CA, file exists, unreadable file), 1 other failure.";

/// Arguments of `tunnel-server pki`.
#[derive(Args)]
#[command(after_help = PKI_AFTER_HELP)]
pub struct PkiArgs {
    /// The pki command.
    #[command(subcommand)]
    pub command: PkiCommand,
}

/// The subcommands of `tunnel-server pki`.
#[derive(Subcommand)]
pub enum PkiCommand {
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

/// Arguments of `tunnel-server pki issue`.
#[derive(Args)]
#[command(group(ArgGroup::new("who").required(true).args(["server", "client"])))]
pub struct IssueArgs {
    /// The CA directory.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Server certificate (EKU serverAuth) for NAME, a DNS name or an IP address; NAME is the
    /// subject CN and a SAN.
    #[arg(long, value_name = "NAME")]
    pub server: Option<String>,
    /// Client certificate (EKU clientAuth) with subject CN.
    #[arg(long, value_name = "CN")]
    pub client: Option<String>,
    /// Another DNS name (SAN) of the server; repeatable.
    #[arg(long, value_name = "D", conflicts_with = "client")]
    pub dns: Vec<String>,
    /// Another IP address (SAN) of the server; repeatable.
    #[arg(long, value_name = "I", conflicts_with = "client")]
    pub ip: Vec<String>,
    /// Subject organizational unit of the client (policy rule `ou=`); repeatable.
    #[arg(long, value_name = "OU", conflicts_with = "server")]
    pub ou: Vec<String>,
    /// Subject organization of the client (policy rule `o=`); repeatable.
    #[arg(long, value_name = "O", conflicts_with = "server")]
    pub o: Vec<String>,
    /// URI SAN of the client, e.g. a SPIFFE ID (policy rule `uri=`); repeatable.
    #[arg(long, value_name = "U", conflicts_with = "server")]
    pub uri: Vec<String>,
    /// Email SAN of the client (policy rule `email=`); repeatable.
    #[arg(long, value_name = "E", conflicts_with = "server")]
    pub email: Vec<String>,
    /// Validity in days.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CERT_DAYS)]
    pub days: u32,
    /// Key algorithm: ecdsa-p256, rsa2048 or ed25519.
    #[arg(long, value_name = "TYPE", default_value = "ecdsa-p256", value_parser = key_type)]
    pub key_type: KeyType,
}

impl PkiCommand {
    /// The CA directory the command works on.
    pub fn dir(&self) -> &std::path::Path {
        match self {
            PkiCommand::Init { dir, .. }
            | PkiCommand::Revoke { dir, .. }
            | PkiCommand::Crl { dir, .. }
            | PkiCommand::List { dir } => dir,
            PkiCommand::Issue(a) => &a.dir,
        }
    }
}

/// `--block-for`: a duration such as `10m` or `30d`, at most [`MAX_BLOCK_FOR`] (a longer one
/// is a usage error before anything is sent). Under a second counts as one second.
fn block_for(s: &str) -> Result<BlockFor, String> {
    let too_long = || {
        format!(
            "longer than the maximum of {MAX_BLOCK_FOR_TEXT} ({}s); to refuse a certificate for good, revoke it",
            MAX_BLOCK_FOR.as_secs()
        )
    };
    let d = humantime::parse_duration(s).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => too_long(),
        e => e.to_string(),
    })?;
    BlockFor::new(d.max(std::time::Duration::from_secs(1))).map_err(|_| too_long())
}

fn key_type(s: &str) -> Result<KeyType, String> {
    s.parse()
}

/// The clap `Command` of `tunnel-server` (for man pages and completions).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
