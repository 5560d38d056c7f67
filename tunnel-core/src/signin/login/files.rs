//! Where `tunnel-client login` puts the key and certificate: where the agent's config file
//! points (`cert`, `key`), or, with no config file yet, a per-user config under
//! `$XDG_CONFIG_HOME/tunnel/` (default `~/.config/tunnel/`) naming the gateway from the
//! login config. Keys are written 0600, every file through a temporary file and a rename, so
//! a running agent (which watches them) never reads half a file.

use super::LoginError;
use crate::config::{load_raw, resolve_path, CLIENT_ENV_PREFIX};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// File name of the per-user config.
pub const USER_CONFIG: &str = "client.toml";

/// The per-user config directory: `$XDG_CONFIG_HOME/tunnel` or `$HOME/.config/tunnel`.
pub fn user_config_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".config"),
    };
    Some(base.join("tunnel"))
}

/// The config file `login`, `ls` and `open` use: `--config`, else the per-user one.
pub fn default_config(explicit: Option<&Path>) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| user_config_dir().map(|d| d.join(USER_CONFIG)))
}

#[derive(Deserialize)]
struct Paths {
    cert: Option<String>,
    key: Option<String>,
}

#[derive(Deserialize)]
struct Remembered {
    signer: Option<String>,
    signer_ca: Option<String>,
}

/// The signer and its CA that the first login wrote into `config` (`signer`, `signer_ca`),
/// for a later `tunnel-client login` without `--signer` and `--ca`. `None` when the file
/// does not exist or names no signer.
pub fn remembered_signer(config: &Path) -> Option<(String, Option<PathBuf>)> {
    if !config.is_file() {
        return None;
    }
    let r: Remembered = load_raw(config, CLIENT_ENV_PREFIX).ok()?;
    let signer = r.signer.filter(|s| !s.trim().is_empty())?;
    Some((signer, r.signer_ca.map(|ca| resolve_path(config, &ca))))
}

/// Where to write: the `cert` and `key` an existing config names, else new files beside a
/// new config (`Some(config to create)`).
pub struct Targets {
    /// Certificate chain path.
    pub cert: PathBuf,
    /// Key path.
    pub key: PathBuf,
    /// A config file to create (none existed).
    pub new_config: Option<PathBuf>,
}

/// Decides the targets for `config` (existing or to be created).
pub fn targets(config: &Path) -> Result<Targets, LoginError> {
    if config.exists() {
        let p: Paths = load_raw(config, CLIENT_ENV_PREFIX)?;
        let (Some(cert), Some(key)) = (p.cert, p.key) else {
            return Err(LoginError::NoTargets(config.to_path_buf()));
        };
        return Ok(Targets {
            cert: resolve_path(config, &cert),
            key: resolve_path(config, &key),
            new_config: None,
        });
    }
    let dir = config.parent().unwrap_or(Path::new("."));
    Ok(Targets {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        new_config: Some(config.to_path_buf()),
    })
}

/// Writes `data` to `path` atomically with `mode`.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), LoginError> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let fail = |what, source| LoginError::Write {
        path: path.to_path_buf(),
        what,
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| fail("create a temporary file beside it", e))?;
    tmp.write_all(data).map_err(|e| fail("write", e))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| fail("set permissions", e))?;
    tmp.as_file().sync_all().map_err(|e| fail("sync", e))?;
    tmp.persist(path)
        .map_err(|e| fail("rename into place", e.error))?;
    Ok(())
}

/// Creates the per-user config directory (0700).
pub fn create_dir(dir: &Path) -> Result<(), LoginError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| LoginError::Write {
            path: dir.to_path_buf(),
            what: "create",
            source,
        })
}
