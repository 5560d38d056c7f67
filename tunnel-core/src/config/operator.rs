//! Config keys of operator control (issue 11): the admin socket, expiry cuts, and per-backend
//! options (`proxy_protocol`, `max_connections`, `max_connections_per_identity`, `unix:`
//! addresses). Parsed here so that `config/server.rs` only calls in.

use super::{resolve_path, ConfigError};
use std::path::{Path, PathBuf};

/// Socket name used under systemd's `RuntimeDirectory` when `admin_socket` is not set.
pub const ADMIN_SOCKET_NAME: &str = "admin.sock";

/// What a backend connection starts with before the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// Nothing: the backend sees the gateway as the peer.
    #[default]
    Off,
    /// A PROXY protocol v2 header with the client address and identity TLVs.
    V2,
}

/// Where a backend listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendTarget {
    /// `host:port` (TCP).
    Tcp(String),
    /// `unix:/path` (a Unix stream socket on the gateway's host).
    Unix(PathBuf),
}

impl std::fmt::Display for BackendTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendTarget::Tcp(a) => f.write_str(a),
            BackendTarget::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Parses a backend `address`: `host:port`, `[v6]:port` or `unix:/absolute/path`.
pub(crate) fn parse_target(file: &Path, key: &str, a: &str) -> Result<BackendTarget, ConfigError> {
    if let Some(p) = a.strip_prefix("unix:") {
        let path = PathBuf::from(p);
        if !path.is_absolute() {
            return Err(ConfigError::new(
                file,
                key,
                format!("{a:?}: a Unix socket path must be absolute, e.g. \"unix:/run/postgresql/.s.PGSQL.5432\""),
            ));
        }
        // sun_path holds 108 bytes including the terminating NUL.
        if p.len() > 107 {
            return Err(ConfigError::new(
                file,
                key,
                format!("{a:?}: the socket path is longer than 107 bytes; use a shorter path"),
            ));
        }
        return Ok(BackendTarget::Unix(path));
    }
    if super::values::valid_host_port(a) {
        return Ok(BackendTarget::Tcp(a.to_string()));
    }
    Err(ConfigError::new(
        file,
        key,
        format!("{a:?} is not host:port or unix:/path, e.g. \"10.0.0.5:5432\", \"db.internal:5432\" or \"unix:/run/postgresql/.s.PGSQL.5432\""),
    ))
}

/// Parses an optional connection cap (1..=1000000).
pub(crate) fn parse_cap(
    file: &Path,
    key: &str,
    v: Option<i64>,
) -> Result<Option<usize>, ConfigError> {
    match v {
        None => Ok(None),
        Some(n) if (1..=1_000_000).contains(&n) => Ok(Some(n as usize)),
        Some(n) => Err(ConfigError::new(
            file,
            key,
            format!("{n} is out of range 1..=1000000; remove the key for no limit"),
        )),
    }
}

/// The admin socket path: `admin_socket` when set ("off" disables it), else
/// `$RUNTIME_DIRECTORY/admin.sock` when systemd gives a runtime directory, else none.
pub(crate) fn admin_socket(
    file: &Path,
    v: Option<&str>,
    runtime_dir: Option<&str>,
) -> Result<Option<PathBuf>, ConfigError> {
    match v.map(str::trim) {
        Some("off") => Ok(None),
        Some("") => Err(ConfigError::new(
            file,
            "admin_socket",
            "is empty; give a path such as \"/run/tunnel/admin.sock\" or \"off\"",
        )),
        Some(p) => Ok(Some(resolve_path(file, p))),
        // systemd may pass several directories separated by ':'; the first is ours.
        None => Ok(runtime_dir
            .and_then(|d| d.split(':').next())
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(ADMIN_SOCKET_NAME))),
    }
}

/// The `admin_socket` of a gateway (`server = true`) or agent configuration file, without
/// validating the rest: the admin commands need only this key, and an operator in
/// `admin_group` may not be able to read the keys and certificates the file names.
pub fn admin_socket_of(path: &Path, server: bool) -> Result<Option<PathBuf>, ConfigError> {
    #[derive(serde::Deserialize)]
    struct Only {
        admin_socket: Option<String>,
    }
    let prefix = if server {
        super::SERVER_ENV_PREFIX
    } else {
        super::CLIENT_ENV_PREFIX
    };
    let raw: Only = super::load_raw(path, prefix)?;
    admin_socket(path, raw.admin_socket.as_deref(), None)
}

/// Checks `admin_group`: a non-empty name.
pub(crate) fn admin_group(file: &Path, v: Option<String>) -> Result<Option<String>, ConfigError> {
    match v {
        Some(g) if g.trim().is_empty() => Err(ConfigError::new(
            file,
            "admin_group",
            "is empty; name a system group or remove the key",
        )),
        other => Ok(other.map(|g| g.trim().to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let f = Path::new("s.toml");
        let ok = [
            ("10.0.0.5:5432", BackendTarget::Tcp("10.0.0.5:5432".into())),
            ("db:5432", BackendTarget::Tcp("db:5432".into())),
            (
                "unix:/run/x.sock",
                BackendTarget::Unix("/run/x.sock".into()),
            ),
        ];
        for (a, want) in ok {
            assert_eq!(parse_target(f, "k", a).unwrap(), want, "{a}");
        }
        for bad in [
            "unix:relative.sock",
            "unix:",
            "db",
            "db:0",
            &format!("unix:/{}", "a".repeat(120)),
        ] {
            let e = parse_target(f, "backend[0].address", bad).unwrap_err();
            assert_eq!(e.key, "backend[0].address", "{bad}");
        }
    }

    #[test]
    fn admin_socket_defaults() {
        let f = Path::new("/etc/t/s.toml");
        assert_eq!(admin_socket(f, None, None).unwrap(), None);
        assert_eq!(
            admin_socket(f, None, Some("/run/tunnel")).unwrap(),
            Some(PathBuf::from("/run/tunnel/admin.sock"))
        );
        assert_eq!(
            admin_socket(f, Some("off"), Some("/run/tunnel")).unwrap(),
            None
        );
        assert_eq!(
            admin_socket(f, Some("a.sock"), None).unwrap(),
            Some(PathBuf::from("/etc/t/a.sock"))
        );
        assert!(admin_socket(f, Some(" "), None).is_err());
    }

    #[test]
    fn caps() {
        let f = Path::new("s.toml");
        assert_eq!(parse_cap(f, "k", Some(3)).unwrap(), Some(3));
        assert!(parse_cap(f, "k", Some(0)).is_err());
    }
}
