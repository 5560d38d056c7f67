//! The client agent's admin socket: `tunnel-client status` lists its tunnels, the gateway,
//! the certificate's notAfter, and the last error of each tunnel.

use super::protocol::{AgentStatus, Request, Response, TunnelStatus};
use super::socket::{self, Access, Handler, Peer};
use crate::agent::ClientAgent;
use std::path::Path;
use std::sync::{Arc, Weak};

struct AgentAdmin {
    agent: Weak<ClientAgent>,
}

impl Handler for AgentAdmin {
    fn handle(&self, req: Request, _peer: &Peer) -> Response {
        let Some(agent) = self.agent.upgrade() else {
            return Response::error("the agent is shutting down");
        };
        match req {
            Request::Status => status(&agent),
            _ => Response::error(
                "the client agent answers status; sessions and disconnect are gateway commands",
            ),
        }
    }
}

fn status(agent: &ClientAgent) -> Response {
    let snap = agent.snapshot();
    let cert = &snap.tls.cert;
    let tunnels = agent
        .tunnel_addrs()
        .into_iter()
        .map(|(listen, backend)| {
            let s = agent.stats.get(&backend);
            TunnelStatus {
                listen: listen.to_string(),
                active: s.active,
                total: s.total,
                last_error: s.last_error.as_ref().map(|e| e.0.clone()),
                last_error_at: s.last_error.as_ref().map(|e| e.1),
                backend,
            }
        })
        .collect();
    Response {
        agent: Some(AgentStatus {
            gateway: snap.cfg.server.clone(),
            subject: crate::authz::identity::one_line_name(cert.subject_name()),
            not_after: crate::util::time::unix_time(cert.not_after()),
            note: cert_note(&snap),
        }),
        tunnels: Some(tunnels),
        ..Response::ok()
    }
}

/// What `status` says about the own certificate: nothing while it is far from its end; when
/// it is within its warning window or expired, that, and for a sign-in certificate what to run.
fn cert_note(snap: &crate::agent::ClientSnapshot) -> Option<String> {
    let end = crate::util::time::unix_time(snap.tls.cert.not_after())?;
    let left = end - crate::util::time::unix_now();
    let lead = i64::try_from(snap.cert_warning().as_secs()).unwrap_or(i64::MAX);
    let state = if left < 0 {
        "the certificate has expired".to_string()
    } else if left < lead {
        let left = std::time::Duration::from_secs(left.unsigned_abs() / 60 * 60);
        format!(
            "the certificate expires in {}",
            humantime::format_duration(left)
        )
    } else {
        return None;
    };
    Some(match snap.renew_hint() {
        Some(hint) => format!("{state}: {hint}"),
        None => state,
    })
}

/// Binds the agent's admin socket at `path` and serves `status` on it.
pub(crate) fn serve(agent: &Arc<ClientAgent>, path: &Path) -> Result<(), String> {
    let listener = socket::bind(path, None, None).map_err(|e| format!("admin_socket: {e}"))?;
    let handler = Arc::new(AgentAdmin {
        agent: Arc::downgrade(agent),
    });
    tokio::spawn(socket::serve(
        listener,
        path.to_path_buf(),
        Access::current(None),
        handler,
        tokio_util::sync::CancellationToken::new(),
    ));
    Ok(())
}
