//! The gateway's configuration file (`tunnel-server --config server.toml`).

use super::operator;
use super::values::{
    count_or, duration_or, Bounded, ConnCount, CrlCoverage, CrlExpired, DurationOrZero,
    HumanDuration, LogFormat, LogLevel, MetricsAddr, TlsVersion,
};
use super::{
    check_readable, load_raw, load_raw_str, required_file, resolve_path, ConfigError, OneOrMany,
};
use crate::authz::policy::{Policy, RawRule};
use crate::revocation::ocsp::OcspMode;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod backends;
mod revocation;
use backends::backends;
pub use backends::valid_backend_name_bytes;
use revocation::{crl_sources, ocsp_responders, staple_source};

/// Prefix of environment variables that override server keys: `TUNNEL_SERVER_MAX_CONNECTIONS=100`,
/// `TUNNEL_SERVER_LISTEN=127.0.0.1:8443,[::1]:8443`. Nested keys use `__`.
pub const SERVER_ENV_PREFIX: &str = "TUNNEL_SERVER";

/// Default cap on concurrent connections.
pub(super) const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default number of pending handshakes beyond which stalled ones are evicted.
pub(super) const DEFAULT_MAX_HANDSHAKES: usize = 1024;
/// Default time a client has to finish its TLS handshake.
pub(super) const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time to establish the TCP connection to a backend.
pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a tunnel may carry no bytes in either direction before it is closed.
pub(super) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default grace period for open connections on SIGTERM.
pub(super) const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default poll period for file changes (besides filesystem notifications).
pub(super) const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// Default lead time for certificate and CRL expiry warnings.
pub const DEFAULT_EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);
/// Default maximum certificate chain depth accepted from clients.
pub(super) const DEFAULT_VERIFY_DEPTH: u32 = 4;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<OneOrMany>,
    cert: Option<String>,
    key: Option<String>,
    key_password_file: Option<String>,
    keystore: Option<String>,
    keystore_password_file: Option<String>,
    pkcs11_module: Option<String>,
    #[serde(default)]
    tls: crate::config::tls::RawTls,
    client_ca: Option<String>,
    #[serde(default)]
    crl: OneOrMany,
    #[serde(default)]
    crl_expired: CrlExpired,
    #[serde(default)]
    crl_check: CrlCoverage,
    crl_refresh: Option<HumanDuration>,
    state_dir: Option<String>,
    #[serde(default)]
    ocsp: OcspMode,
    ocsp_responder: Option<String>,
    #[serde(default)]
    ocsp_responder_allow: OneOrMany,
    ocsp_timeout: Option<HumanDuration>,
    ocsp_staple: Option<String>,
    revoke_established: Option<bool>,
    session_ticket_keys: Option<String>,
    expiry_warning: Option<HumanDuration>,
    default_backend: Option<String>,
    metrics: Option<MetricsAddr>,
    #[serde(default)]
    metrics_allow: OneOrMany,
    allow_multiple_cn: Option<bool>,
    max_connections: Option<ConnCount>,
    max_handshakes: Option<ConnCount>,
    handshake_timeout: Option<HumanDuration>,
    connect_timeout: Option<HumanDuration>,
    idle_timeout: Option<HumanDuration>,
    shutdown_timeout: Option<HumanDuration>,
    drain_delay: Option<DurationOrZero>,
    reload_interval: Option<HumanDuration>,
    user: Option<String>,
    group: Option<String>,
    #[serde(default)]
    log_format: LogFormat,
    log_level: Option<LogLevel>,
    #[serde(default)]
    tls_min_version: TlsVersion,
    verify_depth: Option<Bounded<1, 16>>,
    admin_socket: Option<String>,
    admin_group: Option<String>,
    disconnect_expired: Option<bool>,
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    backend: Vec<RawBackend>,
    #[serde(default)]
    listener: Vec<super::listener::RawListener>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    name: Option<String>,
    address: Option<String>,
    #[serde(default)]
    allow: Vec<RawRule>,
    #[serde(default)]
    proxy_protocol: super::operator::ProxyProtocol,
    max_connections: Option<i64>,
    max_connections_per_identity: Option<i64>,
}

/// Source of the gateway's OCSP staple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StapleSource {
    /// A DER OCSP response file, re-read on reload.
    File(PathBuf),
    /// Fetched from the responder in the certificate's AIA (or `ocsp_responder`) and
    /// refreshed before its nextUpdate.
    Fetch,
}

/// Default deadline for one OCSP query.
pub(super) const DEFAULT_OCSP_TIMEOUT: Duration = Duration::from_secs(5);

/// One backend the gateway forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// The SNI name clients send to reach it (lower case).
    pub name: String,
    /// `host:port` or `unix:/path` to dial.
    pub address: String,
    /// `address`, parsed.
    pub target: super::operator::BackendTarget,
    /// Whether to send a PROXY protocol header first.
    pub proxy_protocol: super::operator::ProxyProtocol,
    /// Cap on this backend's open tunnels.
    pub max_connections: Option<usize>,
    /// Cap on one identity's open tunnels to this backend.
    pub max_connections_per_identity: Option<usize>,
}

/// The validated gateway configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The file it was read from.
    pub file: PathBuf,
    /// Addresses to listen on.
    pub listen: Vec<SocketAddr>,
    /// Listeners that expect a PROXY protocol header, and from whom.
    pub proxy_listeners: Vec<super::listener::ProxyListener>,
    /// The gateway's certificate chain and private key (PEM, PKCS#12 or PKCS#11).
    pub keys: crate::config::keys::KeySource,
    /// TLS policy knobs (`[tls]`).
    pub tls: crate::config::tls::TlsPolicy,
    /// PEM bundle of CAs that issue client certificates.
    pub client_ca: PathBuf,
    /// PEM CRL files.
    pub crl: Vec<PathBuf>,
    /// `crl` entries that are URLs, each with the file in `state_dir` holding its last good
    /// copy (also listed in `crl`).
    pub crl_urls: Vec<(String, PathBuf)>,
    /// Longest wait between two fetches of a CRL URL (`None`: halfway to its nextUpdate,
    /// between a minute and six hours). Bounds how long a certificate revoked at the
    /// signer keeps working.
    pub crl_refresh: Option<Duration>,
    /// Where fetched CRLs are kept.
    pub state_dir: Option<PathBuf>,
    /// What to do when a CRL is past its nextUpdate.
    pub crl_expired: CrlExpired,
    /// Which chain certificates need a CRL of their issuer.
    pub crl_check: CrlCoverage,
    /// OCSP checking of client certificates.
    pub ocsp: OcspMode,
    /// OCSP responder URL overriding the certificates' AIA.
    pub ocsp_responder: Option<String>,
    /// Hosts an AIA OCSP URL may name (empty: any).
    pub ocsp_responder_allow: Vec<String>,
    /// Deadline for one OCSP query.
    pub ocsp_timeout: Duration,
    /// Where the gateway's own OCSP staple comes from.
    pub ocsp_staple: Option<StapleSource>,
    /// Shared session ticket keys: stateless tickets instead of the per-process cache.
    pub session_ticket_keys: Option<PathBuf>,
    /// Close open connections of a certificate that a reloaded CRL revokes.
    pub revoke_established: bool,
    /// Warn this long before the own certificate, a CA or a CRL expires.
    pub expiry_warning: Duration,
    /// Metrics listener address.
    pub metrics: Option<SocketAddr>,
    /// Networks allowed to reach the metrics endpoint (empty: everyone who can connect).
    pub metrics_allow: Vec<crate::util::cidr::Cidr>,
    /// Cap on concurrent connections.
    pub max_connections: usize,
    /// Pending handshakes beyond which the oldest stalled one is closed for a new one.
    pub max_handshakes: usize,
    /// Deadline for a client's TLS handshake.
    pub handshake_timeout: Duration,
    /// Deadline for dialling a backend.
    pub connect_timeout: Duration,
    /// Close a tunnel after this long without bytes.
    pub idle_timeout: Duration,
    /// Grace period for open connections at shutdown.
    pub shutdown_timeout: Duration,
    /// At shutdown, how long `/healthz` answers 503 while new connections are still
    /// accepted, so a load balancer takes the gateway out of rotation first (zero: none).
    pub drain_delay: Duration,
    /// How often files are checked for changes (besides notifications).
    pub reload_interval: Duration,
    /// User to switch to after binding.
    pub user: Option<String>,
    /// Group to switch to after binding.
    pub group: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Default log filter when `RUST_LOG` is unset.
    pub log_level: Option<String>,
    /// Lowest TLS version accepted.
    pub tls_min_version: TlsVersion,
    /// Maximum client chain depth.
    pub verify_depth: u32,
    /// Backends, in file order.
    pub backends: Vec<BackendConfig>,
    /// Authorization rules compiled from `[groups]` and every backend's `allow`.
    pub policy: Policy,
    /// The admin socket (`sessions`, `disconnect`), if any.
    pub admin_socket: Option<PathBuf>,
    /// Group allowed to use the admin socket (besides root and the service user).
    pub admin_group: Option<String>,
    /// Close a tunnel when its client certificate's notAfter passes.
    pub disconnect_expired: bool,
}

impl ServerConfig {
    /// Reads and validates `path`, with overrides from `TUNNEL_SERVER_*` environment variables.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let raw: RawServer = load_raw(path, SERVER_ENV_PREFIX)?;
        Self::validate(path, raw)
    }

    /// Parses and validates TOML text as if read from `path`, with the given environment
    /// overrides instead of the process environment.
    pub fn from_toml(
        path: &Path,
        text: &str,
        env: HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let raw: RawServer = load_raw_str(path, text, SERVER_ENV_PREFIX, Some(env))?;
        Self::validate(path, raw)
    }

    fn validate(file: &Path, mut raw: RawServer) -> Result<Self, ConfigError> {
        let checked = Checked::take_from(file, &mut raw)?;
        Ok(Self::with_defaults(file, raw, checked))
    }

    /// The configuration from the checked keys and the rest of `raw`, each unset knob
    /// taking its `DEFAULT_*`.
    fn with_defaults(file: &Path, raw: RawServer, c: Checked) -> Self {
        ServerConfig {
            file: file.to_path_buf(),
            listen: c.listen,
            proxy_listeners: c.proxy_listeners,
            keys: c.keys,
            tls: c.tls,
            client_ca: c.client_ca,
            crl: c.crl,
            crl_urls: c.crl_urls,
            crl_refresh: raw.crl_refresh.map(|d| d.0),
            state_dir: c.state_dir,
            crl_expired: raw.crl_expired,
            crl_check: raw.crl_check,
            ocsp: raw.ocsp,
            ocsp_responder: raw.ocsp_responder,
            ocsp_responder_allow: c.ocsp_responder_allow,
            ocsp_timeout: duration_or(raw.ocsp_timeout, DEFAULT_OCSP_TIMEOUT),
            ocsp_staple: c.ocsp_staple,
            session_ticket_keys: c.session_ticket_keys,
            revoke_established: raw.revoke_established.unwrap_or(false),
            expiry_warning: duration_or(raw.expiry_warning, DEFAULT_EXPIRY_WARNING),
            metrics: raw.metrics.map(|m| m.0),
            metrics_allow: c.metrics_allow,
            max_connections: count_or(raw.max_connections, DEFAULT_MAX_CONNECTIONS),
            max_handshakes: count_or(raw.max_handshakes, DEFAULT_MAX_HANDSHAKES),
            handshake_timeout: duration_or(raw.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT),
            connect_timeout: duration_or(raw.connect_timeout, DEFAULT_CONNECT_TIMEOUT),
            idle_timeout: duration_or(raw.idle_timeout, DEFAULT_IDLE_TIMEOUT),
            shutdown_timeout: duration_or(raw.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT),
            drain_delay: raw.drain_delay.map_or(Duration::ZERO, |d| d.0),
            reload_interval: duration_or(raw.reload_interval, DEFAULT_RELOAD_INTERVAL),
            user: raw.user,
            group: raw.group,
            log_format: raw.log_format,
            log_level: raw.log_level.map(|l| l.0),
            tls_min_version: raw.tls_min_version,
            verify_depth: count_or(raw.verify_depth, DEFAULT_VERIFY_DEPTH as usize) as u32,
            backends: c.backends,
            policy: c.policy,
            admin_socket: c.admin_socket,
            admin_group: c.admin_group,
            disconnect_expired: raw.disconnect_expired.unwrap_or(false),
        }
    }

    /// The backend named `name`.
    pub fn backend(&self, name: &str) -> Option<&BackendConfig> {
        self.backends.iter().find(|b| b.name == name)
    }
}

/// The keys that need more than a default: files, addresses, rules and cross-field
/// rules, checked in file order so the first error reported is the first in the file.
struct Checked {
    listen: Vec<SocketAddr>,
    proxy_listeners: Vec<super::listener::ProxyListener>,
    keys: crate::config::keys::KeySource,
    tls: crate::config::tls::TlsPolicy,
    client_ca: PathBuf,
    crl: Vec<PathBuf>,
    crl_urls: Vec<(String, PathBuf)>,
    state_dir: Option<PathBuf>,
    ocsp_responder_allow: Vec<String>,
    ocsp_staple: Option<StapleSource>,
    session_ticket_keys: Option<PathBuf>,
    metrics_allow: Vec<crate::util::cidr::Cidr>,
    backends: Vec<BackendConfig>,
    policy: Policy,
    admin_socket: Option<PathBuf>,
    admin_group: Option<String>,
}

impl Checked {
    /// Checks those keys, taking their values out of `raw` (the rest stays for
    /// [`ServerConfig::with_defaults`]).
    fn take_from(file: &Path, raw: &mut RawServer) -> Result<Checked, ConfigError> {
        let listeners = std::mem::take(&mut raw.listener);
        let (listen_extra, proxy_listeners) = super::listener::validate(file, listeners)?;
        let listen = listen_addrs(file, raw.listen.take(), listen_extra)?;
        let keys = crate::config::keys::RawKeys {
            cert: raw.cert.take(),
            key: raw.key.take(),
            key_password_file: raw.key_password_file.take(),
            keystore: raw.keystore.take(),
            keystore_password_file: raw.keystore_password_file.take(),
            pkcs11_module: raw.pkcs11_module.take(),
        }
        .validate(file)?;
        let tls = std::mem::take(&mut raw.tls).validate(file)?;
        let client_ca = required_file(file, "client_ca", raw.client_ca.take())?;
        let state_dir = raw
            .state_dir
            .as_deref()
            .map(|d| resolve_path(file, d.trim()));
        let crl_entries = std::mem::take(&mut raw.crl).into_vec();
        let (crl, crl_urls) = crl_sources(file, crl_entries, state_dir.as_deref())?;
        let session_ticket_keys =
            optional_file(file, "session_ticket_keys", raw.session_ticket_keys.take())?;
        let allow = std::mem::take(&mut raw.ocsp_responder_allow);
        let ocsp_responder_allow = ocsp_responders(file, raw.ocsp_responder.as_deref(), allow)?;
        let ocsp_staple = staple_source(file, raw.ocsp_staple.as_deref())?;
        let allow = std::mem::take(&mut raw.metrics_allow).into_vec();
        let metrics_allow = metrics_allow(file, allow, raw.metrics.is_some())?;
        super::check_run_as(file, raw.user.as_deref(), raw.group.as_deref())?;
        let (backends, policy) = backends(
            file,
            std::mem::take(&mut raw.backend),
            &raw.groups,
            raw.default_backend.take(),
        )?;
        Ok(Checked {
            listen,
            proxy_listeners,
            keys,
            tls,
            client_ca,
            crl,
            crl_urls,
            state_dir,
            ocsp_responder_allow,
            ocsp_staple,
            session_ticket_keys,
            metrics_allow,
            backends,
            policy: policy.allow_multiple_cn(raw.allow_multiple_cn.unwrap_or(false)),
            admin_socket: operator::admin_socket(
                file,
                raw.admin_socket.as_deref(),
                std::env::var("RUNTIME_DIRECTORY").ok().as_deref(),
            )?,
            admin_group: operator::admin_group(file, raw.admin_group.take())?,
        })
    }
}

/// An optional file key: resolved against the configuration's directory and readable.
fn optional_file(
    file: &Path,
    key: &str,
    value: Option<String>,
) -> Result<Option<PathBuf>, ConfigError> {
    value
        .map(|v| {
            let p = resolve_path(file, &v);
            check_readable(file, key, &p)?;
            Ok(p)
        })
        .transpose()
}

/// `metrics_allow`: CIDRs, only meaningful with `metrics`.
fn metrics_allow(
    file: &Path,
    entries: Vec<String>,
    metrics: bool,
) -> Result<Vec<crate::util::cidr::Cidr>, ConfigError> {
    let allow = crate::util::cidr::parse_list(file, "metrics_allow", &entries)?;
    if !allow.is_empty() && !metrics {
        return Err(ConfigError::new(
            file,
            "metrics_allow",
            "is set but metrics is not; set metrics = \"IP:port\" or remove metrics_allow",
        ));
    }
    Ok(allow)
}

/// The `listen` addresses: at least one, each an IP:port, none twice.
fn listen_addrs(
    file: &Path,
    raw: Option<OneOrMany>,
    extra: Vec<SocketAddr>,
) -> Result<Vec<SocketAddr>, ConfigError> {
    let err = |key: &str, msg: String| ConfigError::new(file, key, msg);
    let listen_raw = match raw {
        Some(l) => l.into_vec(),
        None if !extra.is_empty() => Vec::new(),
        None => {
            return Err(err(
                "listen",
                "missing; e.g. listen = \"0.0.0.0:8443\"".into(),
            ))
        }
    };
    if listen_raw.is_empty() && extra.is_empty() {
        return Err(err("listen", "needs at least one address".into()));
    }
    let mut listen = Vec::new();
    for (i, a) in listen_raw.iter().enumerate() {
        let key = format!("listen[{i}]");
        let addr: SocketAddr = a.trim().parse().map_err(|_| {
            let eg = "e.g. \"0.0.0.0:8443\" or \"[::]:8443\"";
            err(&key, format!("{a:?} is not an IP:port address, {eg}"))
        })?;
        if listen.contains(&addr) {
            return Err(err(&key, format!("{addr} is listed twice")));
        }
        listen.push(addr);
    }
    // `[[listener]]` addresses follow the plain ones.
    for (i, addr) in extra.into_iter().enumerate() {
        if listen.contains(&addr) && addr.port() != 0 {
            return Err(err(
                &format!("listener[{i}].address"),
                format!("{addr} is also in listen; list it once"),
            ));
        }
        listen.push(addr);
    }
    Ok(listen)
}

#[cfg(test)]
mod tests;
