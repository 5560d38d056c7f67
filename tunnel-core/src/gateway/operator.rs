//! The gateway's side of operator control, called from `conn.rs` at three points: admission
//! into the session registry (blocks and per-backend caps), the PROXY v2 header to the
//! backend, and the audit outcome of a tunnel an operator or certificate expiry cut.

use super::Gateway;
use crate::admin::gateway::GatewayAdmin;
use crate::admin::socket;
use crate::admin::{Access, Cut, Limits, SessionGuard, SessionInfo};
use crate::authz::identity::Identity;
use crate::config::{BackendConfig, ProxyProtocol, ServerConfig};
use crate::gateway::audit::{AuditRecord, Outcome};
use crate::gateway::refused::Refused;
use crate::proxy_protocol::outbound::{self as proxy_v2, ProxyInfo};
use openssl::ssl::SslRef;
use openssl::x509::X509Ref;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;

/// Enters an authorized tunnel into the registry, or says why it is refused: an operator
/// block (`denied`) or a per-backend cap (`overloaded`).
pub(super) fn admit(
    gw: &Gateway,
    rec: &AuditRecord,
    id: &Identity,
    cert: &X509Ref,
    backend: &BackendConfig,
) -> Result<SessionGuard, Refused> {
    let info = SessionInfo {
        peer: rec.peer,
        identity: id.clone(),
        backend: backend.name.clone(),
        resumed: rec.resumed,
        not_after: crate::util::time::unix_time(cert.not_after()),
    };
    let limits = Limits {
        backend: backend.max_connections,
        per_identity: backend.max_connections_per_identity,
    };
    gw.sessions.admit(info, limits).map_err(Refused::Admission)
}

/// Sends the PROXY v2 header when the backend wants one.
pub(super) async fn send_proxy_header<W: tokio::io::AsyncWrite + Unpin>(
    upstream: &mut W,
    backend: &BackendConfig,
    ssl: &SslRef,
    local: Option<std::net::SocketAddr>,
    rec: &AuditRecord,
    session: &SessionGuard,
) -> std::io::Result<()> {
    if backend.proxy_protocol != ProxyProtocol::V2 {
        return Ok(());
    }
    let Some(identity) = rec.identity.as_ref() else {
        return Err(std::io::ErrorKind::InvalidInput.into());
    };
    let info = ProxyInfo {
        source: rec.peer,
        destination: local.unwrap_or(rec.peer),
        sni: rec.sni.as_deref(),
        tls_version: ssl.version_str(),
        cipher: ssl.current_cipher().map(|c| c.name()).unwrap_or(""),
        resumed: rec.resumed,
        identity,
        tunnel_id: session.id(),
    };
    let header = proxy_v2::header(&info)?;
    upstream.write_all(&header).await
}

/// The outcome of a tunnel cut through the registry (`disconnect` or expiry), if it was.
pub(super) fn cut_outcome(session: &SessionGuard, rec: &mut AuditRecord) -> Option<Outcome> {
    match session.why()? {
        Cut::Disconnected { by, reason } => {
            rec.reason = format!("disconnected by {by}: {reason}");
            Some(Outcome::Disconnected)
        }
        Cut::Expired => {
            rec.reason = "client certificate expired while connected (disconnect_expired)".into();
            Some(Outcome::Expired)
        }
    }
}

/// A bound admin socket, waiting for [`Gateway::serve_admin`].
pub struct AdminBinding {
    listener: UnixListener,
    path: PathBuf,
    admin_gid: Option<u32>,
}

/// Binds `admin_socket` when configured (call before dropping privileges): mode 0660, owned
/// by `user` and by `admin_group` (else `group`, else the user's primary group).
pub fn bind_admin(cfg: &ServerConfig) -> Result<Option<AdminBinding>, String> {
    let Some(path) = cfg.admin_socket.clone() else {
        return Ok(None);
    };
    let file = cfg.file.display();
    let user = match cfg.user.as_deref() {
        Some(u) => nix::unistd::User::from_name(u)
            .ok()
            .flatten()
            .map(|u| (u.uid.as_raw(), u.gid.as_raw())),
        None => None,
    };
    let admin_gid = match cfg.admin_group.as_deref() {
        Some(g) => Some(socket::group_id(g).map_err(|e| format!("{file}: admin_group: {e}"))?),
        None => None,
    };
    let service_gid = match cfg.group.as_deref() {
        Some(g) => Some(socket::group_id(g).map_err(|e| format!("{file}: group: {e}"))?),
        None => user.map(|u| u.1),
    };
    let listener = socket::bind(&path, user.map(|u| u.0), admin_gid.or(service_gid))
        .map_err(|e| format!("{file}: admin_socket: {e}"))?;
    Ok(Some(AdminBinding {
        listener,
        path,
        admin_gid,
    }))
}

impl Gateway {
    /// Serves the admin socket (`sessions`, `disconnect`); call after dropping privileges, so
    /// that "the service user" is the one the process runs as.
    pub fn serve_admin(self: &Arc<Self>, b: AdminBinding) {
        let handler = Arc::new(GatewayAdmin {
            sessions: self.sessions.clone(),
        });
        let stop = tokio_util::sync::CancellationToken::new();
        let access = Access::current(b.admin_gid);
        tokio::spawn(socket::serve(b.listener, b.path, access, handler, stop));
    }

    /// The live-session registry.
    pub fn sessions(&self) -> &crate::admin::Sessions {
        &self.sessions
    }
}
