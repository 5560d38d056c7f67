//! The admin socket itself: a Unix stream socket, mode 0660, owned by the service user and
//! the admin group; every connection's peer credentials (SO_PEERCRED) are checked before a
//! line is read: root, the service user, or a member of the service or admin group.

use super::protocol::{self, Request, Response, MAX_LINE};
use nix::unistd::{Gid, Group, Uid, User};
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// An admin connection that sends no request for this long is closed.
const IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Mode of the socket file: owner and group may connect, others may not.
pub(crate) const SOCKET_MODE: u32 = 0o660;

/// Who asked, from SO_PEERCRED.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Process id, when the kernel gives it.
    pub pid: Option<i32>,
}

impl Peer {
    /// `alice (uid 1000)`, for audit events.
    pub fn describe(&self) -> String {
        let name = User::from_uid(Uid::from_raw(self.uid))
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| "?".into());
        format!("{name} (uid {})", self.uid)
    }
}

/// Answers requests; implemented by the gateway and by the client agent.
pub trait Handler: Send + Sync + 'static {
    /// The reply to `req` from `peer`.
    fn handle(&self, req: Request, peer: &Peer) -> Response;
}

/// Who may use the socket besides root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// The service's own user.
    pub uid: u32,
    /// The service's own group.
    pub gid: u32,
    /// The configured admin group.
    pub admin_gid: Option<u32>,
}

impl Access {
    /// The process's effective ids plus the admin group.
    pub fn current(admin_gid: Option<u32>) -> Access {
        Access {
            uid: Uid::effective().as_raw(),
            gid: Gid::effective().as_raw(),
            admin_gid,
        }
    }

    /// Whether a peer with `uid`, primary `gid` and supplementary `groups` may use the socket.
    pub fn allows(&self, uid: u32, gid: u32, groups: &[u32]) -> bool {
        let group_ok = |g: u32| g == self.gid || Some(g) == self.admin_gid;
        uid == 0 || uid == self.uid || group_ok(gid) || groups.iter().any(|g| group_ok(*g))
    }
}

/// The supplementary groups of `uid` from the user database (SO_PEERCRED gives only the
/// primary group).
fn groups_of(uid: u32) -> Vec<u32> {
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return Vec::new();
    };
    let Ok(name) = CString::new(user.name) else {
        return Vec::new();
    };
    nix::unistd::getgrouplist(&name, user.gid)
        .map(|v| v.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default()
}

/// Looks up a group name.
pub(crate) fn group_id(name: &str) -> Result<u32, String> {
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!(
            "no group named {name:?}; create it or change admin_group"
        )),
        Err(e) => Err(format!("cannot look up group {name:?}: {e}")),
    }
}

/// Binds the socket at `path` (removing a stale one left by a crash, refusing one that still
/// answers), sets mode 0660 and, when given, its owner and group.
pub(crate) fn bind(
    path: &Path,
    owner: Option<u32>,
    group: Option<u32>,
) -> Result<UnixListener, String> {
    let shown = path.display();
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(format!(
            "{shown}: another process is serving this admin socket; stop it or choose another admin_socket"
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            std::fs::remove_file(path)
                .map_err(|e| format!("{shown}: cannot remove the stale socket: {e}"))?;
        }
        Ok(_) => {
            return Err(format!(
                "{shown}: exists and is not a socket; remove it or choose another admin_socket"
            ))
        }
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("{}: cannot create the directory: {e}", dir.display()))?;
    }
    let l = UnixListener::bind(path).map_err(|e| format!("{shown}: cannot bind: {e}"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(|e| format!("{shown}: cannot set mode 0660: {e}"))?;
    if owner.is_some() || group.is_some() {
        nix::unistd::chown(path, owner.map(Uid::from_raw), group.map(Gid::from_raw))
            .map_err(|e| format!("{shown}: cannot set owner/group: {e}"))?;
    }
    Ok(l)
}

/// Serves `listener` until `stop`; removes the socket file at the end.
pub(crate) async fn serve(
    listener: UnixListener,
    path: PathBuf,
    access: Access,
    handler: Arc<dyn Handler>,
    stop: CancellationToken,
) {
    info!(admin_socket = %path.display(), "admin socket listening");
    // Removes the socket file when serving ends, also when the runtime drops this task at exit.
    let _remove = RemoveOnDrop(path);
    crate::service::listeners::accept_until(&listener, &stop, |sock, _| {
        let h = handler.clone();
        tokio::spawn(async move { session(sock, access, h).await });
    })
    .await;
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn session(sock: UnixStream, access: Access, handler: Arc<dyn Handler>) {
    let (r, mut w) = sock.into_split();
    let cred = match r.as_ref().peer_cred() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "admin socket: no peer credentials; closed");
            return;
        }
    };
    let peer = Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
    };
    if !access.allows(peer.uid, peer.gid, &groups_of(peer.uid)) {
        warn!(
            uid = peer.uid,
            gid = peer.gid,
            pid = peer.pid.unwrap_or(0),
            "admin socket: refused a peer that is neither root, the service user nor in the service or admin group"
        );
        let refusal = Response::error(format!(
            "permission denied: {} is not root, the service user, or in the service or admin group",
            peer.describe()
        ));
        let _ = write_line(&mut w, &refusal).await;
        return;
    }
    let mut lines = BufReader::new(r.take(MAX_LINE as u64 * 64)).lines();
    loop {
        let line = match tokio::time::timeout(IDLE, lines.next_line()).await {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                debug!(error = %e, "admin socket: read failed");
                return;
            }
            Err(_) => {
                debug!("admin socket: idle client closed");
                return;
            }
        };
        let reply = if line.len() > MAX_LINE {
            Response::error(format!("request longer than {MAX_LINE} bytes"))
        } else {
            match protocol::parse_request(&line) {
                Ok(req) => handler.handle(req, &peer),
                Err(e) => Response::error(e),
            }
        };
        if write_line(&mut w, &reply).await.is_err() {
            return;
        }
    }
}

async fn write_line(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    reply: &Response,
) -> std::io::Result<()> {
    let mut text = serde_json::to_string(reply).unwrap_or_default();
    text.push('\n');
    w.write_all(text.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_table() {
        let a = Access {
            uid: 990,
            gid: 990,
            admin_gid: Some(50),
        };
        let cases = [
            (0, 0, vec![], true),        // root
            (990, 1, vec![], true),      // service user
            (1000, 990, vec![], true),   // service group
            (1000, 100, vec![50], true), // admin group, supplementary
            (1000, 50, vec![], true),    // admin group, primary
            (65534, 65534, vec![], false),
            (1000, 100, vec![7, 8], false),
        ];
        for (uid, gid, groups, want) in cases {
            assert_eq!(a.allows(uid, gid, &groups), want, "uid {uid} gid {gid}");
        }
    }
}
