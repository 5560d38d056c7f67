//! The signer's configuration file (`tunnel-server signer --config signer.toml`).

use crate::config::values::{duration_or, DurationOrZero, HumanDuration, LogLevel};
use crate::config::{check_readable, load_raw, resolve_path, ConfigError, LogFormat};
use crate::http::Url;
use crate::signin::store::Location;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) mod roles;

/// Prefix of environment variables that override signer keys.
pub(crate) const SIGNER_ENV_PREFIX: &str = "TUNNEL_SIGNER";
/// Default certificate lifetime when the client asks for none.
pub(crate) const DEFAULT_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Default longest certificate lifetime.
pub(crate) const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Longest `max_lifetime` accepted (certificate end times stay far from any overflow).
pub(crate) const LONGEST_LIFETIME: Duration = Duration::from_secs(366 * 86_400);
/// Default tolerance for clock differences with the provider.
pub(crate) const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Default oldest ID token (by `iat`) accepted.
pub(crate) const DEFAULT_MAX_TOKEN_AGE: Duration = Duration::from_secs(600);
/// Default scopes requested by clients.
pub(crate) const DEFAULT_SCOPES: &[&str] = &["openid", "email", "groups"];
/// Default claim that lists the user's groups.
pub(crate) const DEFAULT_GROUPS_CLAIM: &str = "groups";
/// Default validity of the CRL served at `/v1/crl` (its nextUpdate is this far ahead).
pub(crate) const DEFAULT_CRL_LIFETIME: Duration = Duration::from_secs(3600);
/// Shortest `crl_lifetime` accepted: gateways refetch halfway, so shorter would have them
/// fetch more often than every half minute.
pub(crate) const SHORTEST_CRL_LIFETIME: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigner {
    listen: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    ca_cert: Option<String>,
    ca_key: Option<String>,
    state_dir: Option<String>,
    store: Option<String>,
    store_password_file: Option<String>,
    crl_lifetime: Option<HumanDuration>,
    issuer: Option<String>,
    issuer_ca: Option<String>,
    client_id: Option<String>,
    scopes: Option<Vec<String>>,
    #[serde(default)]
    allowed_email_domains: Vec<String>,
    require_email_verified: Option<bool>,
    require_nonce: Option<bool>,
    groups_claim: Option<String>,
    #[serde(default)]
    group_map: BTreeMap<String, String>,
    #[serde(default)]
    required_groups: Vec<String>,
    default_lifetime: Option<HumanDuration>,
    max_lifetime: Option<HumanDuration>,
    clock_skew: Option<DurationOrZero>,
    max_token_age: Option<HumanDuration>,
    gateway: Option<String>,
    gateway_server_name: Option<String>,
    gateway_ca: Option<String>,
    #[serde(default)]
    log_format: LogFormat,
    log_level: Option<LogLevel>,
    #[serde(default)]
    role: Vec<roles::RawRole>,
    notify_url: Option<String>,
}

/// A validated signer configuration.
#[derive(Debug, Clone)]
pub struct SignerConfig {
    /// The file it was read from.
    pub file: PathBuf,
    /// HTTPS listen address.
    pub listen: SocketAddr,
    /// The signer's own HTTPS certificate chain (PEM).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The user CA's certificate; its directory holds the pki index.
    pub ca_cert: PathBuf,
    /// The user CA's key.
    pub ca_key: PathBuf,
    /// Where the signer keeps its state: the default SQLite store (`signer.db`). Default:
    /// the directory of `ca_cert`.
    pub state_dir: PathBuf,
    /// The store: issued certificates, used tokens, revocations, blocks, the CRL number.
    /// Default `sqlite:STATE_DIR/signer.db`.
    pub store: Location,
    /// The file holding the PostgreSQL user's password (one line).
    pub store_password_file: Option<PathBuf>,
    /// How long each CRL served at `/v1/crl` is valid (nextUpdate - thisUpdate).
    pub crl_lifetime: Duration,
    /// The OpenID provider's issuer URL, compared exactly with `iss`.
    pub issuer: String,
    /// CA bundle for the provider's HTTPS (system trust when absent).
    pub issuer_ca: Option<PathBuf>,
    /// This application's client id at the provider.
    pub client_id: String,
    /// Scopes clients request.
    pub scopes: Vec<String>,
    /// Email domains (lower case) that may get certificates.
    pub allowed_email_domains: Vec<String>,
    /// Refuse tokens whose `email_verified` is not true.
    pub require_email_verified: bool,
    /// Refuse tokens without a `nonce` (default true). Turning it off admits providers that
    /// drop the nonce in the device flow; a token with a wrong nonce is always refused.
    pub require_nonce: bool,
    /// The claim that lists groups.
    pub groups_claim: String,
    /// Provider group → OU value; other groups are dropped.
    pub group_map: BTreeMap<String, String>,
    /// The user must be in at least one of these provider groups (none: no requirement).
    pub required_groups: Vec<String>,
    /// Lifetime when the client asks for none.
    pub default_lifetime: Duration,
    /// Longest lifetime issued.
    pub max_lifetime: Duration,
    /// Clock tolerance for `exp`, `iat`, `nbf`.
    pub clock_skew: Duration,
    /// Oldest token accepted, by `iat`.
    pub max_token_age: Duration,
    /// The gateway address given to clients.
    pub gateway: String,
    /// The name clients verify in the gateway's certificate (default: the gateway's host).
    pub gateway_server_name: Option<String>,
    /// CA bundle clients use for the gateway (PEM), handed out in the login config.
    pub gateway_ca: Option<PathBuf>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: Option<String>,
    /// Just-in-time access: the `[[role]]` tables.
    pub roles: Vec<roles::Role>,
    /// What `[[role]]` names that no sign-in produces (logged at start).
    pub role_warnings: Vec<String>,
    /// Where to announce requests and decisions (a webhook).
    pub notify_url: Option<String>,
}

impl SignerConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<SignerConfig, ConfigError> {
        let raw: RawSigner = load_raw(path, SIGNER_ENV_PREFIX)?;
        validate(path, raw)
    }
}

fn required(file: &Path, key: &str, v: Option<String>, fix: &str) -> Result<String, ConfigError> {
    match v {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => Err(ConfigError::new(file, key, format!("is required; {fix}"))),
    }
}

fn file_key(file: &Path, key: &str, v: Option<String>, fix: &str) -> Result<PathBuf, ConfigError> {
    let p = resolve_path(file, &required(file, key, v, fix)?);
    check_readable(file, key, &p)?;
    Ok(p)
}

fn validate(f: &Path, raw: RawSigner) -> Result<SignerConfig, ConfigError> {
    let listen = listen_addr(f, raw.listen)?;
    let (issuer, issuer_ca, client_id) = provider(f, raw.issuer, raw.issuer_ca, raw.client_id)?;
    let allowed_email_domains = email_domains(f, &raw.allowed_email_domains)?;
    let (default_lifetime, max_lifetime) = lifetimes(f, raw.default_lifetime, raw.max_lifetime)?;
    let gateway = required(
        f,
        "gateway",
        raw.gateway,
        "the gateway's host:port for clients",
    )?;
    let scopes = scopes(f, raw.scopes)?;
    let cert = file_key(f, "cert", raw.cert, "the signer's HTTPS certificate (PEM)")?;
    let key = file_key(f, "key", raw.key, "the signer's HTTPS key (PEM)")?;
    let (ca_cert, ca_key) = ca_files(f, raw.ca_cert, raw.ca_key)?;
    let state_dir = state_dir(f, raw.state_dir, &ca_cert)?;
    let (store, store_password_file) = store(f, raw.store, raw.store_password_file, &state_dir)?;
    let crl_lifetime = crl_lifetime(f, raw.crl_lifetime)?;
    let (roles, role_warnings) = roles::validate(f, raw.role, &raw.group_map, max_lifetime)?;
    let notify_url = roles::notify_url(f, raw.notify_url)?;
    Ok(SignerConfig {
        file: f.to_path_buf(),
        listen,
        cert,
        key,
        ca_cert,
        ca_key,
        state_dir,
        store,
        store_password_file,
        crl_lifetime,
        issuer,
        issuer_ca,
        client_id,
        scopes,
        allowed_email_domains,
        require_email_verified: raw.require_email_verified.unwrap_or(true),
        require_nonce: raw.require_nonce.unwrap_or(true),
        groups_claim: raw
            .groups_claim
            .unwrap_or_else(|| DEFAULT_GROUPS_CLAIM.to_string()),
        group_map: raw.group_map,
        required_groups: raw.required_groups,
        default_lifetime,
        max_lifetime,
        clock_skew: raw.clock_skew.map_or(DEFAULT_CLOCK_SKEW, |d| d.0),
        max_token_age: duration_or(raw.max_token_age, DEFAULT_MAX_TOKEN_AGE),
        gateway,
        gateway_server_name: raw.gateway_server_name,
        gateway_ca: optional_file(f, "gateway_ca", raw.gateway_ca)?,
        log_format: raw.log_format,
        log_level: raw.log_level.map(|l| l.0),
        roles,
        role_warnings,
        notify_url,
    })
}

/// An optional file key, resolved against the directory of `f` and readable.
fn optional_file(f: &Path, key: &str, v: Option<String>) -> Result<Option<PathBuf>, ConfigError> {
    v.map(|v| file_key(f, key, Some(v), "")).transpose()
}

/// The provider: `issuer` (an https URL), `issuer_ca` (optional CA bundle) and `client_id`.
fn provider(
    f: &Path,
    issuer: Option<String>,
    issuer_ca: Option<String>,
    client_id: Option<String>,
) -> Result<(String, Option<PathBuf>, String), ConfigError> {
    Ok((
        issuer_url(f, issuer)?,
        optional_file(f, "issuer_ca", issuer_ca)?,
        required(
            f,
            "client_id",
            client_id,
            "the client id registered at the provider",
        )?,
    ))
}

/// `listen`: the signer's HTTPS address.
fn listen_addr(f: &Path, raw: Option<String>) -> Result<SocketAddr, ConfigError> {
    let listen = required(f, "listen", raw, "e.g. listen = \"0.0.0.0:9443\"")?;
    listen.parse().map_err(|_| {
        ConfigError::new(
            f,
            "listen",
            format!("{listen:?} is not an address like 0.0.0.0:9443"),
        )
    })
}

/// `issuer`: the provider's URL, https (plain http only on loopback, for tests).
fn issuer_url(f: &Path, raw: Option<String>) -> Result<String, ConfigError> {
    let issuer = required(f, "issuer", raw, "the provider's issuer URL")?;
    match Url::parse(&issuer) {
        Ok(u) if u.tls || u.is_loopback() => Ok(issuer),
        Ok(_) => Err(ConfigError::new(f, "issuer", "must be an https:// URL")),
        Err(e) => Err(ConfigError::new(f, "issuer", e.to_string())),
    }
}

/// `scopes` (default [`DEFAULT_SCOPES`]): must ask for `openid`.
fn scopes(f: &Path, raw: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    let scopes = raw.unwrap_or_else(|| DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect());
    if !scopes.iter().any(|s| s == "openid") {
        return Err(ConfigError::new(f, "scopes", "must include \"openid\""));
    }
    Ok(scopes)
}

/// `ca_cert` and `ca_key`: the user CA the signer issues with.
fn ca_files(
    f: &Path,
    ca_cert: Option<String>,
    ca_key: Option<String>,
) -> Result<(PathBuf, PathBuf), ConfigError> {
    let ca_cert = file_key(
        f,
        "ca_cert",
        ca_cert,
        "the user CA (tunnel-server pki init)",
    )?;
    let ca_key = file_key(f, "ca_key", ca_key, "the user CA's key")?;
    Ok((ca_cert, ca_key))
}

/// `state_dir` (default: the directory of `ca_cert`): an existing directory that group and
/// others cannot write to, since whoever can replace its `replay.log` can make used tokens
/// usable again. Whether the signer may write there is found when it opens the record.
fn state_dir(f: &Path, raw: Option<String>, ca_cert: &Path) -> Result<PathBuf, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let key = "state_dir";
    let dir = match raw {
        Some(v) => resolve_path(
            f,
            &required(
                f,
                key,
                Some(v),
                "name a directory, or remove the key to use ca_cert's directory",
            )?,
        ),
        None => match ca_cert.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        },
    };
    let meta = std::fs::metadata(&dir).map_err(|e| {
        ConfigError::new(
            f,
            key,
            format!(
                "cannot use {}: {e}; create it for the signer's user (install -d -m 0700 -o \
                 tunnel-signer {})",
                dir.display(),
                dir.display()
            ),
        )
    })?;
    if !meta.is_dir() {
        return Err(ConfigError::new(
            f,
            key,
            format!("{} is not a directory; name a directory", dir.display()),
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(ConfigError::new(
            f,
            key,
            format!(
                "{} is writable by group or others, who could make used tokens usable again; \
                 chmod go-w {}",
                dir.display(),
                dir.display()
            ),
        ));
    }
    Ok(dir)
}

/// `store` (default `sqlite:STATE_DIR/signer.db`; a relative SQLite path is relative to
/// the file) and `store_password_file` (PostgreSQL only, readable).
fn store(
    f: &Path,
    raw: Option<String>,
    password_file: Option<String>,
    state_dir: &Path,
) -> Result<(Location, Option<PathBuf>), ConfigError> {
    let location = match raw.as_deref().map(str::trim) {
        None => Location::default_in(state_dir),
        Some(s) => match Location::parse(s) {
            Ok(Location::Sqlite(p)) => Location::Sqlite(resolve_path(f, &p.to_string_lossy())),
            Ok(pg) => pg,
            Err(crate::signin::store::StoreError::Config { problem, .. }) => {
                return Err(ConfigError::new(f, "store", problem))
            }
            Err(e) => return Err(ConfigError::new(f, "store", e.to_string())),
        },
    };
    if let Location::Postgres(url) = &location {
        if url::Url::parse(url).is_ok_and(|u| u.password().is_some()) {
            return Err(ConfigError::new(
                f,
                "store",
                "the URL holds a password; remove it from the URL and put it in store_password_file",
            ));
        }
    }
    let password_file = match (password_file, &location) {
        (None, _) => None,
        (Some(_), Location::Sqlite(_)) => {
            return Err(ConfigError::new(
                f,
                "store_password_file",
                "is for a postgresql:// store; remove it",
            ))
        }
        (Some(p), Location::Postgres(_)) => Some(file_key(
            f,
            "store_password_file",
            Some(p),
            "a file holding the database password",
        )?),
    };
    Ok((location, password_file))
}

/// `crl_lifetime` (default [`DEFAULT_CRL_LIFETIME`]), at least [`SHORTEST_CRL_LIFETIME`].
fn crl_lifetime(f: &Path, raw: Option<HumanDuration>) -> Result<Duration, ConfigError> {
    let d = duration_or(raw, DEFAULT_CRL_LIFETIME);
    if d < SHORTEST_CRL_LIFETIME {
        return Err(ConfigError::new(
            f,
            "crl_lifetime",
            "is shorter than 1m; gateways refetch halfway to nextUpdate, so write at least \"1m\"",
        ));
    }
    if d > LONGEST_LIFETIME {
        return Err(ConfigError::new(
            f,
            "crl_lifetime",
            "is longer than 366 days; a revocation would reach gateways only that late; write e.g. \"1h\"",
        ));
    }
    Ok(d)
}

/// `allowed_email_domains`: lower case, without a leading `@`; at least one.
fn email_domains(f: &Path, raw: &[String]) -> Result<Vec<String>, ConfigError> {
    let domains: Vec<String> = raw
        .iter()
        .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
        .collect();
    if domains.is_empty() || domains.iter().any(String::is_empty) {
        return Err(ConfigError::new(
            f,
            "allowed_email_domains",
            "must list the email domains that may sign in, e.g. [\"example.com\"]",
        ));
    }
    Ok(domains)
}

/// `default_lifetime` and `max_lifetime`, the first no longer than the second.
fn lifetimes(
    f: &Path,
    default: Option<HumanDuration>,
    max: Option<HumanDuration>,
) -> Result<(Duration, Duration), ConfigError> {
    let default_lifetime = duration_or(default, DEFAULT_LIFETIME);
    let max_lifetime = duration_or(max, DEFAULT_MAX_LIFETIME);
    if max_lifetime > LONGEST_LIFETIME {
        return Err(ConfigError::new(
            f,
            "max_lifetime",
            "is longer than 366 days: sign-in certificates are meant to be short-lived; for long-lived machine certificates use `tunnel-server pki issue`".to_string(),
        ));
    }
    if default_lifetime > max_lifetime {
        return Err(ConfigError::new(
            f,
            "default_lifetime",
            format!(
                "is longer than max_lifetime ({}); shorten it",
                humantime::format_duration(max_lifetime)
            ),
        ));
    }
    Ok((default_lifetime, max_lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "listen = \"127.0.0.1:0\"\nissuer = \"https://idp.example.com\"\n\
        client_id = \"tunnel\"\nallowed_email_domains = [\"example.com\"]\ngateway = \"gw:8443\"\n";

    fn error_of(extra: &str, drop: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signer.toml");
        let text: String = BASE
            .lines()
            .filter(|l| drop.is_empty() || !l.starts_with(drop))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&path, text + extra).unwrap();
        SignerConfig::load(&path).unwrap_err().to_string()
    }

    #[test]
    fn names_the_key_and_the_fix() {
        let cases = [
            (
                "",
                "allowed_email_domains",
                "allowed_email_domains: must list",
            ),
            ("", "issuer", "issuer: is required"),
            ("issuer2 = 1\n", "", "unknown field"),
            ("", "gateway", "gateway: is required"),
            (
                "default_lifetime = \"13h\"\n",
                "",
                "default_lifetime: is longer than max_lifetime",
            ),
            (
                "scopes = [\"email\"]\n",
                "",
                "scopes: must include \"openid\"",
            ),
            (
                "max_lifetime = \"500000000000y\"\n",
                "",
                "max_lifetime: is longer than 366 days",
            ),
            (
                "max_lifetime = \"367d\"\n",
                "",
                "max_lifetime: is longer than 366 days",
            ),
            (
                "max_lifetime = \"soon\"\n",
                "",
                "max_lifetime: \"soon\" is not a duration",
            ),
            (
                "clock_skew = \"a bit\"\n",
                "",
                "clock_skew: \"a bit\" is not a duration",
            ),
            (
                "max_token_age = \"0s\"\n",
                "",
                "max_token_age: must be greater than zero",
            ),
            (
                "log_format = \"xml\"\n",
                "",
                "log_format: \"xml\" is not a log format",
            ),
            (
                "log_level = \"loud\"\n",
                "",
                "log_level: \"loud\" is not a log filter",
            ),
            // Every file key is checked once the rest is valid.
            ("", "", "cert: is required"),
        ];
        for (extra, drop, want) in cases {
            let e = error_of(extra, drop);
            assert!(
                e.contains("signer.toml: ") && e.contains(want),
                "{want}: {e}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signer.toml");
        std::fs::write(&path, BASE.replace("https://idp", "http://idp")).unwrap();
        let e = SignerConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("issuer: must be an https:// URL"), "{e}");
    }

    #[test]
    fn state_dir_defaults_to_the_user_cas_directory_and_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        std::fs::create_dir(&users).unwrap();
        std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o700)).unwrap();
        for f in ["cert.pem", "key.pem", "users/ca.crt", "users/ca.key"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let files = "cert = \"cert.pem\"\nkey = \"key.pem\"\nca_cert = \"users/ca.crt\"\n\
                     ca_key = \"users/ca.key\"\n";
        let path = dir.path().join("signer.toml");
        let load = |extra: &str| {
            std::fs::write(&path, format!("{BASE}{files}{extra}")).unwrap();
            SignerConfig::load(&path).map_err(|e| e.to_string())
        };
        let cfg = load("").unwrap();
        assert_eq!(cfg.state_dir, users);
        assert_eq!(cfg.store, Location::Sqlite(users.join("signer.db")));
        assert_eq!(cfg.crl_lifetime, DEFAULT_CRL_LIFETIME);
        let cfg = load("store = \"sqlite:db/s.db\"\ncrl_lifetime = \"5m\"\n").unwrap();
        assert_eq!(cfg.store, Location::Sqlite(dir.path().join("db/s.db")));
        assert_eq!(cfg.crl_lifetime, Duration::from_secs(300));
        let pg = "store = \"postgresql://signer@db:5432/signer?sslmode=verify-full\"\n";
        let cfg = load(&format!("{pg}store_password_file = \"key.pem\"\n")).unwrap();
        assert!(matches!(cfg.store, Location::Postgres(_)));
        assert_eq!(cfg.store_password_file, Some(dir.path().join("key.pem")));
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert_eq!(load("state_dir = \"state\"\n").unwrap().state_dir, state);
        let cases = [
            ("state_dir = \"nowhere\"\n", "state_dir: cannot use "),
            ("state_dir = \"nowhere\"\n", "install -d -m 0700"),
            ("state_dir = \"cert.pem\"\n", "state_dir: "),
            ("state_dir = \"cert.pem\"\n", "cert.pem is not a directory"),
            (
                "state_dir = \" \"\n",
                "state_dir: is required; name a directory",
            ),
        ];
        let store_cases = [
            (
                "store = \"mysql://db/x\"\n",
                "store: not a store: write sqlite:PATH",
            ),
            ("store = \"sqlite:\"\n", "store: no file after `sqlite:`"),
            (
                "store = \"postgresql://u:pw@db/x\"\n",
                "store: the URL holds a password; remove it",
            ),
            (
                "store_password_file = \"key.pem\"\n",
                "store_password_file: is for a postgresql:// store; remove it",
            ),
            (
                "store = \"postgresql://u@db/x\"\nstore_password_file = \"nope\"\n",
                "store_password_file: ",
            ),
            (
                "crl_lifetime = \"10s\"\n",
                "crl_lifetime: is shorter than 1m",
            ),
            (
                "crl_lifetime = \"400d\"\n",
                "crl_lifetime: is longer than 366 days",
            ),
        ];
        for (extra, want) in cases.into_iter().chain(store_cases) {
            let e = load(extra).unwrap_err();
            assert!(
                e.contains("signer.toml: ") && e.contains(want),
                "{want}: {e}"
            );
        }
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o770)).unwrap();
        let e = load("state_dir = \"state\"\n").unwrap_err();
        assert!(
            e.contains("state_dir: ")
                && e.contains("writable by group or others")
                && e.contains("chmod go-w"),
            "{e}"
        );
    }
}
