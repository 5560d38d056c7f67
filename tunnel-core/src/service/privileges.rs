//! Process privileges: raise the descriptor limit, drop root after binding, and warn about
//! risky key file modes.

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::unistd::{Gid, Group, Uid, User};
use std::path::Path;
use tracing::{info, warn};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit. Each tunnel
/// costs two descriptors, so the default soft limit of 1024 would cap a gateway near 500.
pub(crate) fn raise_nofile() -> Option<u64> {
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
pub(crate) fn check_fd_budget(max_connections: usize, nofile: Option<u64>) {
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
pub(crate) enum PrivilegeError {
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
pub(crate) fn drop_privileges(
    user: Option<&str>,
    group: Option<&str>,
) -> Result<(), PrivilegeError> {
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
    let (u, gid) = look_up(user, group)?;
    switch_to(u.as_ref(), gid)?;
    info!(
        uid = Uid::effective().as_raw(),
        gid = Gid::effective().as_raw(),
        "dropped privileges"
    );
    Ok(())
}

/// The user named `user` and the gid to take: `group`'s, else the user's primary group,
/// else the current one. Looked up before switching anything, so a typo changes nothing.
fn look_up(user: Option<&str>, group: Option<&str>) -> Result<(Option<User>, Gid), PrivilegeError> {
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
    Ok((u, gid))
}

/// Supplementary groups, then gid, then uid (after setuid the others could no longer be
/// changed); then checks that root cannot be regained.
fn switch_to(u: Option<&User>, gid: Gid) -> Result<(), PrivilegeError> {
    let sys = |what: String| move |source| PrivilegeError::Sys { what, source };
    match u {
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
    if let Some(u) = u {
        nix::unistd::setuid(u.uid).map_err(sys(format!("uid {}", u.uid)))?;
        // Paranoia: getting root back must now be impossible.
        if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
            return Err(PrivilegeError::Sys {
                what: "a non-root user (root could be regained)".into(),
                source: nix::Error::EPERM,
            });
        }
    }
    Ok(())
}

/// Warns when a private key file is more open than it should be, for a process running
/// with its own group (the client agent, or a gateway without `user`/`group`).
pub(crate) fn check_key_mode(key: &Path) {
    check_key_mode_for(key, None, None);
}

/// Warns when a private key file is more open than it should be for a service that runs as
/// `user`/`group` (after dropping privileges): owner access and read access for the
/// service's own group are fine (`0600`, or `0640 root:tunnel` when the service runs with
/// group `tunnel`); access for others, group write, or group read for another group are not.
pub(crate) fn check_key_mode_for(key: &Path, user: Option<&str>, group: Option<&str>) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(m) = std::fs::metadata(key) else {
        return;
    };
    let mode = m.permissions().mode() & 0o777;
    if let Some(problem) = key_mode_problem(mode, m.gid(), service_gid(user, group)) {
        warn!(
            key = %key.display(),
            mode = format!("{mode:o}"),
            problem = %problem,
            "private key is more open than the service needs; chmod 600 it, or 640 with the group the service runs as (e.g. 0640 root:tunnel)"
        );
    }
}

/// The group the service will run as: `group`, else `user`'s primary group, else ours.
fn service_gid(user: Option<&str>, group: Option<&str>) -> u32 {
    if let Some(g) = group.and_then(|g| Group::from_name(g).ok().flatten()) {
        return g.gid.as_raw();
    }
    if let Some(u) = user.and_then(|u| User::from_name(u).ok().flatten()) {
        return u.gid.as_raw();
    }
    Gid::effective().as_raw()
}

/// What is wrong with a key file of `mode` owned by group `file_gid` for a service running
/// with group `service_gid`, if anything.
pub(crate) fn key_mode_problem(mode: u32, file_gid: u32, service_gid: u32) -> Option<String> {
    if mode & 0o007 != 0 {
        Some("is accessible to others".into())
    } else if mode & 0o020 != 0 {
        Some("is writable by its group".into())
    } else if mode & 0o040 != 0 && file_gid != service_gid {
        Some(format!(
            "is readable by group {file_gid}, which the service does not run as (gid {service_gid})"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::key_mode_problem;

    #[test]
    fn key_modes() {
        // (mode, file gid, service gid, acceptable)
        let cases = [
            (0o600, 0, 0, true),
            (0o400, 0, 0, true),
            (0o640, 50, 50, true),
            (0o440, 50, 50, true),
            (0o640, 0, 50, false),
            (0o660, 50, 50, false),
            (0o644, 50, 50, false),
            (0o604, 0, 0, false),
            (0o602, 0, 0, false),
            (0o620, 0, 0, false),
            (0o666, 0, 0, false),
        ];
        for (mode, fg, sg, ok) in cases {
            assert_eq!(
                key_mode_problem(mode, fg, sg).is_none(),
                ok,
                "mode {mode:o}, file group {fg}, service group {sg}"
            );
        }
    }
}
