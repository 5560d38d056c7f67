//! The gateway's handshake callbacks: SNI routing (only names with a backend go on) and
//! the per-certificate verify callback (revocation of the chain, then authorization).
//! Their refusals are noted in the connection's [`super::HandshakeNotes`] for the audit.

use super::{notes_index, CrlSet};
use crate::authz::identity::Identity;
use crate::authz::policy::{Decision, Policy};
use crate::gateway::refused::{Alert, Refused};
use crate::util::time::unix_now;
use openssl::ssl::{NameType, SniError, SslAcceptorBuilder, SslAlert, SslRef};
use openssl::x509::{X509StoreContext, X509StoreContextRef, X509VerifyResult, X509};
use std::sync::Arc;

/// The SNI callback: only a name with a backend (or none, with `default_backend`) goes on;
/// anything else gets `unrecognized_name`.
pub(super) fn route_by_sni(b: &mut SslAcceptorBuilder, policy: Arc<Policy>) {
    let sni_policy = policy;
    b.set_servername_callback(move |ssl: &mut SslRef, alert: &mut SslAlert| {
        if super::catalog_alpn::is_request(ssl) {
            return Ok(());
        }
        // Only names a backend could have get further: this also keeps control
        // characters and invalid UTF-8 out of logs and routing.
        let raw = ssl.servername_raw(NameType::HOST_NAME);
        let sni = match raw {
            Some(r) if !crate::config::valid_backend_name_bytes(r) => Some(
                crate::authz::identity::printable(&String::from_utf8_lossy(r)),
            ),
            Some(r) => {
                let name = String::from_utf8_lossy(r).to_string();
                if sni_policy.target(Some(&name)).is_some() {
                    return Ok(());
                }
                Some(name)
            }
            None if sni_policy.target(None).is_some() => return Ok(()),
            None => None,
        };
        let refused = Refused::UnknownBackend { sni };
        if let Some(a) = refused.alert().and_then(Alert::ssl_alert) {
            *alert = a;
        }
        if let Some(n) = ssl.ex_data(notes_index()) {
            n.set(refused, None);
        }
        Err(SniError::ALERT_FATAL)
    });
}

/// OpenSSL's per-certificate verify callback: chain verification result, then (at the leaf,
/// once the chain is complete) revocation of the whole chain and authorization against the
/// SNI's backend. A refusal is noted for the audit and becomes the handshake's alert.
pub(super) fn verify_client(
    ok: bool,
    ctx: &mut X509StoreContextRef,
    policy: &Policy,
    crls: &CrlSet,
    crl_expired: crate::config::CrlExpired,
) -> bool {
    if !ok {
        return false;
    }
    // The whole chain is checked once, at the leaf (OpenSSL calls this callback from the
    // trust anchor down, so the chain is complete by then).
    if ctx.error_depth() != 0 {
        return true;
    }
    let Some(cert) = ctx.current_cert().map(|c| c.to_owned()) else {
        return false;
    };
    let ssl = X509StoreContext::ssl_idx()
        .ok()
        .and_then(|idx| ctx.ex_data(idx));
    let notes = ssl.and_then(|s| s.ex_data(notes_index())).cloned();
    let sni = ssl
        .and_then(|s| s.servername(NameType::HOST_NAME))
        .map(str::to_string);
    // A catalog request is authorized per backend in its answer, not here.
    let catalog = ssl.is_some_and(super::catalog_alpn::selected);
    let Some(refused) = client_refusal(
        ctx,
        &cert,
        sni.as_deref(),
        catalog,
        policy,
        crls,
        crl_expired,
    ) else {
        return true;
    };
    let identity = Identity::from_cert(&cert);
    ctx.set_error(match refused.alert() {
        Some(a) => a.verify_error(),
        None => X509VerifyResult::APPLICATION_VERIFICATION,
    });
    if let Some(n) = &notes {
        n.set(refused, Some(identity));
    }
    false
}

/// Why the client with leaf `cert` (the chain is in `ctx`) is refused, if it is: a revoked
/// or uncovered chain, or (unless it asks for the `catalog`) no rule of the backend its SNI
/// names.
fn client_refusal(
    ctx: &X509StoreContextRef,
    cert: &X509,
    sni: Option<&str>,
    catalog: bool,
    policy: &Policy,
    crls: &CrlSet,
    crl_expired: crate::config::CrlExpired,
) -> Option<Refused> {
    // Without CRLs there is nothing to look up: skip copying the chain.
    if !crls.is_empty() {
        let chain: Vec<X509> = ctx
            .chain()
            .map(|c| c.iter().map(|x| x.to_owned()).collect())
            .unwrap_or_default();
        let check = crls.check_chain(&chain, unix_now());
        if let Some(r) = Refused::from_crl(check, crl_expired) {
            return Some(r);
        }
    }
    if catalog {
        return None;
    }
    match policy.authorize(sni, &Identity::from_cert(cert)) {
        Decision::Allow { .. } => None,
        Decision::Deny { backend } => Some(Refused::Denied { backend }),
        Decision::Refused { backend, reason } => Some(Refused::Identity { backend, reason }),
        Decision::UnknownBackend { sni } => Some(Refused::UnknownBackend { sni }),
    }
}
