//! The command line of `tunnel-client`: every clap definition in one place, so that the binary
//! parses with it and `xtask` generates the man page and shell completions from it.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::sync::OnceLock;

/// Examples shown by `--help` and in the man page: (what it does, the command).
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "A one-off tunnel: local port 15432 reaches the gateway's \"postgres\" backend",
        "tunnel-client --server gateway.example.com:8443 --cert alice.crt --key alice.key \\\n    \
         --ca ca.crt --listen 127.0.0.1:15432 --backend postgres",
    ),
    (
        "Every tunnel of a configuration file",
        "tunnel-client --config /etc/tunnel/client.toml",
    ),
    (
        "psql through a tunnel that lasts as long as psql (after `tunnel-client login`)",
        "tunnel-client exec db -- psql -h {host} -p {port} -U app",
    ),
    (
        "Ask for the db-admin role for 2 hours; once a colleague approves, the running agent uses it",
        "tunnel-client request db-admin --for 2h --reason INC-4711 --wait",
    ),
    (
        "SSH through the gateway's \"ssh\" backend (in ~/.ssh/config)",
        "ProxyCommand tunnel-client stdio --config ~/.config/tunnel/client.toml --backend ssh",
    ),
];

/// Exit statuses of `tunnel-client` (sysexits.h numbers), for `--help` and the man page.
pub const EXIT_CODES: &[(i32, &str)] = tunnel_core::EXIT_CODES;

/// Environment variables the client agent reads, for the man page.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "TUNNEL_CLIENT_<KEY>",
        "overrides the configuration key KEY (e.g. TUNNEL_CLIENT_LOG_FORMAT=json)",
    ),
    (
        "RUST_LOG",
        "log filter (e.g. warn,tunnel_core=info); overrides log_level",
    ),
    ("NO_COLOR", "when set, logs and help carry no colour codes"),
];

/// Files the client agent uses in the Debian package's layout, for the man page.
pub const FILES: &[(&str, &str)] = &[
    (
        "/etc/tunnel/client.toml",
        "the configuration of tunnel-client.service",
    ),
    (
        "/etc/tunnel/client-NAME.toml",
        "the configuration of the instance tunnel-client@NAME.service",
    ),
];

/// `tunnel-client --version`: the crate version and the OpenSSL library linked at run time.
pub fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| tunnel_core::version_line(env!("CARGO_PKG_VERSION")))
}

fn after_help() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| tunnel_core::help_epilogue(EXAMPLES, EXIT_CODES))
}

/// The client agent's command line.
#[derive(Parser)]
#[command(
    name = "tunnel-client",
    version = version(),
    about = "mTLS client agent: wraps local TCP ports (or stdin/stdout) in mutual TLS to a tunnel gateway",
    after_help = after_help()
)]
pub struct Cli {
    /// Configuration file (TOML): the agent's; for `login`, the one it updates (default: the
    /// per-user config). Environment variables TUNNEL_CLIENT_<KEY> override keys.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// A one-off tunnel without a configuration file.
    #[command(flatten)]
    pub flags: FlagArgs,
    /// What to do; without one, run the tunnels.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The gateway and the credentials without a config file (the agent's and `stdio`'s).
#[derive(Args, Default)]
pub struct GatewayArgs {
    /// Gateway host:port (without a config file).
    #[arg(long)]
    pub server: Option<String>,
    /// Name to verify in the gateway's certificate (default: host of --server).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Client certificate (PEM).
    #[arg(long)]
    pub cert: Option<String>,
    /// Client private key (PEM).
    #[arg(long)]
    pub key: Option<String>,
    /// CA bundle (PEM) that issued the gateway's certificate.
    #[arg(long)]
    pub ca: Option<String>,
}

impl GatewayArgs {
    /// Whether any of them was given.
    pub fn any(&self) -> bool {
        self.server.is_some()
            || self.server_name.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.ca.is_some()
    }

    /// These over `other` (each flag given here wins).
    pub fn or(self, other: GatewayArgs) -> GatewayArgs {
        GatewayArgs {
            server: self.server.or(other.server),
            server_name: self.server_name.or(other.server_name),
            cert: self.cert.or(other.cert),
            key: self.key.or(other.key),
            ca: self.ca.or(other.ca),
        }
    }
}

/// The one-off tunnel's flags (the agent's, before any subcommand).
#[derive(Args, Default)]
pub struct FlagArgs {
    /// The gateway and credentials.
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Local address to listen on (one-off tunnel).
    #[arg(long)]
    pub listen: Option<String>,
    /// Backend name to reach (sent as SNI).
    #[arg(long)]
    pub backend: Option<String>,
}

impl FlagArgs {
    /// Whether any one-off flag was given.
    pub fn any(&self) -> bool {
        self.gateway.any() || self.listen.is_some() || self.backend.is_some()
    }
}

/// `stdio`'s flags: the gateway and credentials without a config file, and the backend.
#[derive(Args, Default)]
pub struct StdioArgs {
    /// The gateway and credentials.
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Backend name to reach (sent as SNI); required.
    #[arg(long)]
    pub backend: Option<String>,
}

impl StdioArgs {
    /// These flags over `top` (the same flags given before `stdio`).
    pub fn over(self, top: FlagArgs) -> FlagArgs {
        FlagArgs {
            gateway: self.gateway.or(top.gateway),
            listen: top.listen,
            backend: self.backend.or(top.backend),
        }
    }
}

/// The subcommands of `tunnel-client`.
#[derive(Subcommand)]
pub enum Command {
    /// Use stdin/stdout as the local side of one tunnel (for ssh -o ProxyCommand=...).
    Stdio(StdioArgs),
    /// Sign in with the identity provider and get a short-lived certificate from the signer.
    Login(LoginArgs),
    /// List the backends this identity may reach (asks the gateway's catalog).
    Ls,
    /// Open a tunnel to one backend of the catalog on a local port, and print the port.
    Open {
        /// Backend name (as `tunnel-client ls` shows it).
        name: String,
        /// Local address to listen on.
        #[arg(long = "listen", id = "open_listen", default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Run a command with a tunnel to one backend of the catalog on a free loopback port;
    /// the tunnel closes when the command exits.
    #[command(after_help = tunnel_core::agent::exec::EXIT_HELP)]
    Exec {
        /// Backend name (as `tunnel-client ls` shows it).
        #[arg(value_name = "BACKEND")]
        name: String,
        /// The command and its arguments; `{host}` and `{port}` in them become the tunnel's
        /// address, which is also in its environment as TUNNEL_HOST and TUNNEL_PORT.
        #[arg(
            value_name = "COMMAND",
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        command: Vec<String>,
    },
    /// Ask for a role for a while (just-in-time access); approvers are told, and with
    /// --wait the elevated certificate is installed once approved.
    Request(RequestArgs),
    /// List the pending access requests you may approve or deny.
    Requests,
    /// Approve an access request (by its id, as `tunnel-client requests` shows it).
    Approve {
        /// The request's id.
        id: String,
        /// Why (recorded with the decision).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Deny an access request.
    Deny {
        /// The request's id.
        id: String,
        /// Why (required; recorded with the decision).
        #[arg(long, required = true)]
        reason: String,
    },
    /// Show the running agent's tunnels, gateway, certificate expiry and last errors.
    Status {
        /// Admin socket (default: admin_socket of --config, else /run/tunnel-client/admin.sock).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Print the reply as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `tunnel-client login` (the signer's CA is the global `--ca`).
#[derive(Args)]
pub struct LoginArgs {
    /// The signer's URL, e.g. https://signer.example.com:9443 (default: the one of the
    /// last sign-in, remembered in the per-user config).
    #[arg(long)]
    pub signer: Option<String>,
    /// Use the device flow (sign in on another device); automatic without a display.
    #[arg(long)]
    pub device: bool,
    /// Print the sign-in URL instead of opening a browser.
    #[arg(long)]
    pub no_browser: bool,
    /// Requested certificate lifetime, e.g. 8h (the signer caps it at its max_lifetime).
    #[arg(long)]
    pub lifetime: Option<String>,
    /// CA bundle for the identity provider's HTTPS (default: the system's trust store).
    #[arg(long)]
    pub idp_ca: Option<PathBuf>,
    /// CA bundle (PEM) that issued the signer's HTTPS certificate (default: the one the
    /// first login remembered).
    #[arg(long)]
    pub ca: Option<String>,
}

/// Arguments of `tunnel-client request`.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["role", "list", "fetch"])))]
pub struct RequestArgs {
    /// The role to ask for (as the signer's [[role]] names it).
    pub role: Option<String>,
    /// How long, e.g. 2h (at most the role's max_duration).
    #[arg(long = "for", value_name = "DURATION", default_value = "1h")]
    pub duration: String,
    /// Why: a ticket or an incident (required by most roles).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Wait until the request is decided, then install the elevated certificate.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub timeout: String,
    /// List your requests and their states instead.
    #[arg(long)]
    pub list: bool,
    /// Install the elevated certificate of an approved request instead.
    #[arg(long, value_name = "ID")]
    pub fetch: Option<String>,
}

/// The clap `Command` of `tunnel-client` (for the man page and completions).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
