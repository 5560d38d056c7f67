//! The client agent's configuration file (`tunnel-client --config client.toml`).

use super::server::DEFAULT_RELOAD_INTERVAL;
use super::values::{
    count_or, duration_or, ConnCount, HumanDuration, LogFormat, LogLevel, MetricsAddr, TlsVersion,
};
use super::{load_raw, load_raw_str, required_file, ConfigError};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Prefix of environment variables that override client keys, e.g. `TUNNEL_CLIENT_SERVER`.
pub const CLIENT_ENV_PREFIX: &str = "TUNNEL_CLIENT";

/// Default time to connect to the gateway and finish the handshake.
pub(super) const DEFAULT_CLIENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default idle timeout of a tunnelled connection.
pub(super) const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default grace period for open connections at shutdown.
pub(super) const DEFAULT_CLIENT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on concurrent local connections.
pub(super) const DEFAULT_CLIENT_MAX_CONNECTIONS: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    server: Option<super::OneOrMany>,
    failover_timeout: Option<HumanDuration>,
    server_name: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    key_password_file: Option<String>,
    keystore: Option<String>,
    keystore_password_file: Option<String>,
    pkcs11_module: Option<String>,
    #[serde(default)]
    tls: crate::config::tls::RawTls,
    ca: Option<String>,
    connect_timeout: Option<HumanDuration>,
    idle_timeout: Option<HumanDuration>,
    shutdown_timeout: Option<HumanDuration>,
    reload_interval: Option<HumanDuration>,
    expiry_warning: Option<HumanDuration>,
    signer: Option<String>,
    /// The signer's CA (read by `tunnel-client login` only; see `login::files`).
    #[allow(dead_code)]
    signer_ca: Option<String>,
    require_staple: Option<bool>,
    metrics: Option<MetricsAddr>,
    max_connections: Option<ConnCount>,
    #[serde(default)]
    log_format: LogFormat,
    log_level: Option<LogLevel>,
    #[serde(default)]
    tls_min_version: TlsVersion,
    admin_socket: Option<String>,
    #[serde(default)]
    tunnel: Vec<RawTunnel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    listen: Option<String>,
    backend: Option<String>,
}

/// One local listener and the backend it reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    /// Local address to accept plain TCP on.
    pub listen: SocketAddr,
    /// Backend name sent to the gateway as SNI.
    pub backend: String,
}

/// The validated client agent configuration.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The file it was read from (or `<command line>`).
    pub file: PathBuf,
    /// The first gateway `host:port` (as named in logs).
    pub server: String,
    /// Every gateway `host:port`, tried in order (see [`crate::agent::failover`]).
    pub servers: Vec<String>,
    /// Bound on the time one connection spends trying gateways.
    pub failover_timeout: Duration,
    /// Name verified in the gateway's certificate.
    pub server_name: String,
    /// Client certificate chain and private key (PEM, PKCS#12 or PKCS#11).
    pub keys: crate::config::keys::KeySource,
    /// TLS policy knobs (`[tls]`).
    pub tls: crate::config::tls::TlsPolicy,
    /// CA bundle that issued the gateway's certificate.
    pub ca: PathBuf,
    /// Deadline for TCP connect plus TLS handshake to the gateway.
    pub connect_timeout: Duration,
    /// Close a tunnel after this long without bytes.
    pub idle_timeout: Duration,
    /// Grace period for open connections at shutdown.
    pub shutdown_timeout: Duration,
    /// How often files are checked for changes (besides notifications).
    pub reload_interval: Duration,
    /// Warn this long before the own certificate or the CA expires; `None` (not configured):
    /// 14 days, and for the own certificate at most the last fifth of its lifetime (see
    /// [`crate::util::time::default_expiry_warning`]).
    pub expiry_warning: Option<Duration>,
    /// The signer `tunnel-client login` uses when `--signer` is not given (written by the
    /// first login into the per-user config); its presence marks the certificate as a
    /// sign-in certificate, renewed with `tunnel-client login`.
    pub signer: Option<String>,
    /// Refuse a gateway that does not staple a good OCSP response.
    pub require_staple: bool,
    /// Metrics listener address.
    pub metrics: Option<std::net::SocketAddr>,
    /// Cap on concurrent local connections.
    pub max_connections: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Default log filter when `RUST_LOG` is unset.
    pub log_level: Option<String>,
    /// Lowest TLS version offered.
    pub tls_min_version: TlsVersion,
    /// The tunnels.
    pub tunnels: Vec<TunnelConfig>,
    /// The agent's admin socket (`tunnel-client status`), if any.
    pub admin_socket: Option<PathBuf>,
}

/// Settings given on the command line instead of in a file (one-off tunnels and `stdio`).
#[derive(Debug, Clone, Default)]
pub struct ClientFlags {
    /// Gateway `host:port`.
    pub server: Option<String>,
    /// Name verified in the gateway's certificate.
    pub server_name: Option<String>,
    /// Client certificate.
    pub cert: Option<String>,
    /// Client key.
    pub key: Option<String>,
    /// CA bundle.
    pub ca: Option<String>,
    /// Local listen address (one-off tunnel).
    pub listen: Option<String>,
    /// Backend name (one-off tunnel or stdio).
    pub backend: Option<String>,
}

impl ClientConfig {
    /// Reads and validates `path`, with overrides from `TUNNEL_CLIENT_*` environment variables.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, false)
    }

    /// Like [`ClientConfig::load`]; with `stdio`, a file without `[[tunnel]]` is accepted
    /// (`tunnel-client stdio` needs only the gateway and the credentials).
    pub fn load_with(path: &Path, stdio: bool) -> Result<Self, ConfigError> {
        let raw: RawClient = load_raw(path, CLIENT_ENV_PREFIX)?;
        Self::validate(path, raw, stdio)
    }

    /// Parses and validates TOML text as if read from `path`.
    pub fn from_toml(
        path: &Path,
        text: &str,
        env: HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let raw: RawClient = load_raw_str(path, text, CLIENT_ENV_PREFIX, Some(env))?;
        Self::validate(path, raw, false)
    }

    /// Builds a configuration from command-line flags alone. With `stdio`, no `listen` is
    /// needed and no tunnel is created.
    pub fn from_flags(flags: ClientFlags, stdio: bool) -> Result<Self, ConfigError> {
        let file = Path::new("<command line>");
        let mut tunnel = Vec::new();
        if !stdio {
            tunnel.push(RawTunnel {
                listen: flags.listen,
                backend: flags.backend,
            });
        }
        let raw = RawClient {
            server: flags.server.map(super::OneOrMany::One),
            failover_timeout: None,
            server_name: flags.server_name,
            cert: flags.cert,
            key: flags.key,
            key_password_file: None,
            keystore: None,
            keystore_password_file: None,
            pkcs11_module: None,
            tls: Default::default(),
            ca: flags.ca,
            connect_timeout: None,
            idle_timeout: None,
            shutdown_timeout: None,
            reload_interval: None,
            expiry_warning: None,
            signer: None,
            signer_ca: None,
            require_staple: None,
            metrics: None,
            max_connections: None,
            log_format: LogFormat::default(),
            log_level: None,
            tls_min_version: TlsVersion::default(),
            admin_socket: Some("off".into()),
            tunnel,
        };
        Self::validate(file, raw, stdio)
    }

    fn validate(file: &Path, raw: RawClient, stdio: bool) -> Result<Self, ConfigError> {
        let servers = crate::agent::failover::validate_servers(
            file,
            raw.server
                .map(super::OneOrMany::into_vec)
                .unwrap_or_default(),
        )?;
        let server = servers[0].clone();
        let failover_timeout = duration_or(
            raw.failover_timeout,
            crate::agent::failover::DEFAULT_FAILOVER_TIMEOUT,
        );
        let server_name = server_name(file, raw.server_name, &server)?;
        let keys = crate::config::keys::RawKeys {
            cert: raw.cert,
            key: raw.key,
            key_password_file: raw.key_password_file,
            keystore: raw.keystore,
            keystore_password_file: raw.keystore_password_file,
            pkcs11_module: raw.pkcs11_module,
        }
        .validate(file)?;
        let tls = raw.tls.validate(file)?;
        let ca = required_file(file, "ca", raw.ca)?;
        Ok(ClientConfig {
            file: file.to_path_buf(),
            server,
            servers,
            failover_timeout,
            server_name,
            keys,
            tls,
            ca,
            connect_timeout: duration_or(raw.connect_timeout, DEFAULT_CLIENT_CONNECT_TIMEOUT),
            idle_timeout: duration_or(raw.idle_timeout, DEFAULT_CLIENT_IDLE_TIMEOUT),
            shutdown_timeout: duration_or(raw.shutdown_timeout, DEFAULT_CLIENT_SHUTDOWN_TIMEOUT),
            reload_interval: duration_or(raw.reload_interval, DEFAULT_RELOAD_INTERVAL),
            expiry_warning: raw.expiry_warning.map(|d| d.0),
            signer: raw.signer.filter(|s| !s.trim().is_empty()),
            require_staple: raw.require_staple.unwrap_or(false),
            metrics: raw.metrics.map(|m| m.0),
            max_connections: count_or(raw.max_connections, DEFAULT_CLIENT_MAX_CONNECTIONS),
            log_format: raw.log_format,
            log_level: raw.log_level.map(|l| l.0),
            tls_min_version: raw.tls_min_version,
            tunnels: tunnels(file, raw.tunnel, stdio)?,
            admin_socket: super::operator::admin_socket(
                file,
                raw.admin_socket.as_deref(),
                std::env::var("RUNTIME_DIRECTORY").ok().as_deref(),
            )?,
        })
    }
}

/// `server_name` (default: the host of the first `server`): the name the gateway's
/// certificate is verified against.
fn server_name(file: &Path, raw: Option<String>, server: &str) -> Result<String, ConfigError> {
    match raw {
        Some(n) if !n.trim().is_empty() => Ok(n.trim().to_string()),
        Some(_) => Err(ConfigError::new(file, "server_name", "is empty")),
        None => Ok(host_of(server).to_string()),
    }
}

/// The tunnels: at least one (unless `stdio`: `tunnel-client exec` needs none), each a
/// local IP:port (used once, but port 0 any number of times) and a valid backend name.
fn tunnels(
    file: &Path,
    raw: Vec<RawTunnel>,
    stdio: bool,
) -> Result<Vec<TunnelConfig>, ConfigError> {
    if raw.is_empty() && !stdio {
        return Err(ConfigError::new(
            file,
            "tunnel",
            "no [[tunnel]] is configured; add one with listen and backend",
        ));
    }
    let err = |key: &str, msg: String| ConfigError::new(file, key, msg);
    let mut tunnels: Vec<TunnelConfig> = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let key = format!("tunnel[{i}].listen");
        let listen_s = t
            .listen
            .ok_or_else(|| err(&key, "missing; e.g. \"127.0.0.1:15432\"".into()))?;
        let listen: SocketAddr = listen_s
            .trim()
            .parse()
            .map_err(|_| err(&key, format!("{listen_s:?} is not an IP:port address")))?;
        if tunnels
            .iter()
            .any(|x| x.listen == listen && listen.port() != 0)
        {
            return Err(err(&key, format!("{listen} is used by another tunnel")));
        }
        let key = format!("tunnel[{i}].backend");
        let backend = t
            .backend
            .map(|b| b.trim().to_ascii_lowercase())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| err(&key, "missing; the backend name the gateway knows".into()))?;
        if !super::valid_backend_name_bytes(backend.as_bytes()) {
            return Err(err(
                &key,
                format!(
                    "{backend:?} is not a valid backend (SNI) name: letters, digits, '-', '.', '_'"
                ),
            ));
        }
        tunnels.push(TunnelConfig { listen, backend });
    }
    Ok(tunnels)
}

/// The host part of `host:port` (without IPv6 brackets).
fn host_of(server: &str) -> &str {
    let host = server.rsplit_once(':').map(|(h, _)| h).unwrap_or(server);
    host.trim_start_matches('[').trim_end_matches(']')
}
