//! Process privileges: raise the descriptor limit, drop root after binding, and warn about
//! risky key file modes.

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::unistd::{Gid, Group, Uid, User};
use std::path::Path;
use tracing::{info, warn};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit. Each tunnel
/// costs two descriptors, so the default soft limit of 1024 would cap a gateway near 500.
pub fn raise_nofile() -> Option<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => return Some(hard),
            Err(e) => warn!(error = %e, soft, hard, "cannot raise the open-files limit"),
        }
    }
    Some(soft)
}

/// Warns when `max_connections` tunnels (two descriptors each) cannot fit in the descriptor
/// limit: the symptom would otherwise be "Too many open files" while dialling.
pub fn check_fd_budget(max_connections: usize, nofile: Option<u64>) {
    if let Some(limit) = nofile {
        let need = 2 * max_connections as u64 + 64;
        if need > limit {
            warn!(
                max_connections,
                open_files_limit = limit,
                "max_connections needs about {need} descriptors but the limit is {limit}: raise LimitNOFILE / ulimit -n, or lower max_connections"
            );
        }
    }
}

/// Why privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// `user`/`group` was configured but the process is not root.
    #[error("{key} = {name:?} is set but the process is not running as root (uid {uid}); start it as root so it can bind and then switch, or remove {key}")]
    NotRoot {
        /// `user` or `group`.
        key: &'static str,
        /// The configured name.
        name: String,
        /// Our uid.
        uid: u32,
    },
    /// The user or group does not exist.
    #[error("{key} = {name:?}: no such {key} on this system")]
    Unknown {
        /// `user` or `group`.
        key: &'static str,
        /// The configured name.
        name: String,
    },
    /// A system call failed.
    #[error("cannot switch to {what}: {source}")]
    Sys {
        /// What we tried.
        what: String,
        /// The error.
        source: nix::Error,
    },
}

/// Switches to `user` (and `group`, default: the user's primary group) after the listeners are
/// bound and the keys read: supplementary groups first, then gid, then uid. Without `user` and
/// `group`, warns when running as root.
pub fn drop_privileges(user: Option<&str>, group: Option<&str>) -> Result<(), PrivilegeError> {
    let euid = Uid::effective();
    if user.is_none() && group.is_none() {
        if euid.is_root() {
            warn!("running as root without `user`: set user = \"...\" to drop privileges after binding");
        }
        return Ok(());
    }
    if !euid.is_root() {
        let (key, name) = match user {
            Some(u) => ("user", u),
            None => ("group", group.unwrap_or_default()),
        };
        return Err(PrivilegeError::NotRoot {
            key,
            name: name.to_string(),
            uid: euid.as_raw(),
        });
    }
    let u =
        match user {
            Some(name) => Some(User::from_name(name).ok().flatten().ok_or_else(|| {
                PrivilegeError::Unknown {
                    key: "user",
                    name: name.to_string(),
                }
            })?),
            None => None,
        };
    let gid: Gid = match group {
        Some(name) => {
            Group::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| PrivilegeError::Unknown {
                    key: "group",
                    name: name.to_string(),
                })?
                .gid
        }
        None => u.as_ref().map(|u| u.gid).unwrap_or_else(Gid::effective),
    };
    let sys = |what: String| move |source| PrivilegeError::Sys { what, source };
    match &u {
        Some(u) => {
            let cname =
                std::ffi::CString::new(u.name.clone()).map_err(|_| PrivilegeError::Unknown {
                    key: "user",
                    name: u.name.clone(),
                })?;
            nix::unistd::initgroups(&cname, gid).map_err(sys(format!("groups of {}", u.name)))?;
        }
        None => nix::unistd::setgroups(&[gid]).map_err(sys(format!("group {gid}")))?,
    }
    nix::unistd::setgid(gid).map_err(sys(format!("gid {gid}")))?;
    if let Some(u) = &u {
        nix::unistd::setuid(u.uid).map_err(sys(format!("uid {}", u.uid)))?;
        // Paranoia: getting root back must now be impossible.
        if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
            return Err(PrivilegeError::Sys {
                what: "a non-root user (root could be regained)".into(),
                source: nix::Error::EPERM,
            });
        }
    }
    info!(
        uid = Uid::effective().as_raw(),
        gid = Gid::effective().as_raw(),
        "dropped privileges"
    );
    Ok(())
}

/// Warns when a private key file can be read by group or others.
pub fn check_key_mode(key: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(key) {
        let mode = m.permissions().mode();
        if mode & 0o077 != 0 {
            warn!(
                key = %key.display(),
                mode = format!("{:o}", mode & 0o777),
                "private key is readable by group or others; run chmod 600 on it"
            );
        }
    }
}
