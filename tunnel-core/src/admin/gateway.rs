//! The gateway's answers on its admin socket: `sessions` and `disconnect`.

use super::protocol::{selector, Request, Response};
use super::sessions::Sessions;
use super::socket::{Handler, Peer};
use crate::authz::policy::IdentitySelector;
use tracing::warn;

/// What `disconnect --block-for` tells the operator.
pub const BLOCK_NOTE: &str = "the block is kept in memory only and ends at restart; to refuse this certificate for good, revoke it and publish a CRL (tunnel-server pki revoke)";

/// What `sessions` and `disconnect` say when their selector matches no live tunnel, so that a
/// mistyped selector is not taken for a success.
pub const NO_MATCH: &str = "no live tunnel matches this selector";

/// Serves the gateway's session registry.
pub struct GatewayAdmin {
    /// The registry of the running gateway.
    pub sessions: Sessions,
}

impl Handler for GatewayAdmin {
    fn handle(&self, req: Request, peer: &Peer) -> Response {
        match req {
            Request::Sessions { backend, identity } => {
                let backend = backend.map(|b| b.to_ascii_lowercase());
                let identity = match identity.map(|i| IdentitySelector::parse(&i)).transpose() {
                    Ok(i) => i,
                    Err(e) => return Response::error(format!("identity: {e}")),
                };
                let sessions = self.sessions.list(backend.as_deref(), identity.as_ref());
                let filtered = backend.is_some() || identity.is_some();
                Response {
                    note: (filtered && sessions.is_empty()).then(|| NO_MATCH.to_string()),
                    sessions: Some(sessions),
                    ..Response::ok()
                }
            }
            Request::Disconnect {
                id,
                identity,
                backend,
                serial,
                reason,
                block_for_secs,
            } => {
                let sel = match selector(id, identity, backend, serial) {
                    Ok(s) => s,
                    Err(e) => return Response::error(e),
                };
                let reason = reason.unwrap_or_else(|| "no reason given".into());
                let by = peer.describe();
                let block = block_for_secs.filter(|b| !b.duration().is_zero());
                let (n, until) = match self.sessions.disconnect(&sel, &by, &reason, block) {
                    Ok(done) => done,
                    Err(e) => return Response::error(e.to_string()),
                };
                warn!(
                    selector = ?sel, requested_by = %by, reason = %reason, disconnected = n,
                    blocked_until = until.unwrap_or(0),
                    "operator disconnect"
                );
                let note = match (n, until) {
                    (_, Some(_)) => Some(BLOCK_NOTE.to_string()),
                    (0, None) => Some(NO_MATCH.to_string()),
                    _ => None,
                };
                Response {
                    disconnected: Some(n),
                    blocked_until: until,
                    note,
                    ..Response::ok()
                }
            }
            Request::Status => Response::error(
                "status is a client agent command; the gateway answers sessions and disconnect",
            ),
        }
    }
}
