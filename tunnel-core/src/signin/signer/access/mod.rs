//! Just-in-time access: a person asks for a `[[role]]` with a reason, colleagues in the
//! role's approver groups approve or deny, and the approved requester gets a certificate for
//! the key they already hold with the role's OUs added, ending when the grant does (and never
//! after the sign-in it elevates). The gateways need no change: a grant is one more OU.
//!
//! Every call is authenticated by the caller's current certificate (mutual TLS against the
//! user CA; the signer asks for one but does not require it, so sign-in keeps working
//! without): the requester is its email, the groups are its OUs. [`super::config::roles`] reads the
//! `[[role]]` tables; [`api`] is the HTTP surface; [`notify`] the webhook; [`wire`] the JSON
//! contract with `tunnel-client`; the state is in the signer's store
//! ([`crate::signin::store::requests`]).

pub(crate) mod api;
pub(crate) mod notify;
pub mod wire;

use super::config::roles::Role;
use super::Signer;
use crate::authz::identity::Identity;
use crate::http::serve::PeerCert;
use crate::signin::store::requests::{AccessRequest, RequestState};
use crate::signin::store::{Selector, Store, StoreError};
use crate::util::time::asn1_to_unix;
use openssl::pkey::{PKey, Public};
use openssl::ssl::{SslAcceptorBuilder, SslVerifyMode};
use openssl::x509::{X509Name, X509VerifyResult, X509};
use std::path::Path;
use std::sync::Arc;

/// How often pending requests and grants are checked for expiry in the background.
pub(crate) const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// OpenSSL's `X509_V_ERR_CERT_HAS_EXPIRED`.
const CERT_HAS_EXPIRED: i32 = 10;

/// The record of an elevated certificate stands in for the ID token a sign-in records
/// (each issuance names one, uniquely): a hash of the request and the serial.
pub(crate) fn grant_token(request_id: &str, serial: &str) -> crate::signin::store::ReplayKey {
    openssl::sha::sha256(format!("tunnel access grant {request_id} {serial}").as_bytes())
}

/// The provider's `sub` from the stable subject URI (`ISSUER#SUB`, percent-encoded).
pub(crate) fn sub_of(uris: &[String]) -> String {
    let Some(enc) = uris.iter().find_map(|u| u.split_once('#').map(|(_, s)| s)) else {
        return String::new();
    };
    let b = enc.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Makes the signer's HTTPS ask for (never require) a client certificate from the user CA
/// `ca`: OpenSSL checks the proof of the key and records its verdict on the chain, and the
/// handshake goes on whatever it is, so sign-in without a certificate keeps working; the
/// access endpoints refuse what did not verify.
pub(crate) fn request_client_cert(
    b: &mut SslAcceptorBuilder,
    ca: &Path,
) -> Result<(), openssl::error::ErrorStack> {
    b.set_ca_file(ca)?;
    b.set_client_ca_list(X509Name::load_client_ca_file(ca)?);
    b.set_session_id_context(b"tunnel-signer")?;
    b.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    Ok(())
}

/// The signer's access state: its store and the notifier.
pub(crate) struct Access {
    store: Arc<Store>,
    notifier: notify::Notifier,
}

impl Access {
    /// For a signer keeping its state in `store`, announcing at `notify_url`.
    pub(crate) fn new(store: Arc<Store>, notify_url: Option<String>) -> Access {
        Access {
            store,
            notifier: notify::Notifier::new(notify_url),
        }
    }

    /// Expires what is due every [`SWEEP_EVERY`] while this `Access` is in force (a reload
    /// makes a new one and the old task ends), so that pending requests and grants expire,
    /// with their audit events and notices, even when nobody calls the API. Does nothing
    /// outside a Tokio runtime (unit tests that build a signer).
    pub(crate) fn start_sweeper(this: &Arc<Access>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(this);
        rt.spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let Some(access) = weak.upgrade() else {
                    return;
                };
                api::sweep(&access, crate::util::time::unix_now()).await;
            }
        });
    }

    async fn store(&self) -> Result<&Arc<Store>, StoreError> {
        Ok(&self.store)
    }
}

/// Why an access call was refused: one variant per check, each with its reason code (the
/// audit event's and the reply's `error`) and status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AccessRefusal {
    /// No client certificate in the handshake.
    #[error("no client certificate: sign in first (tunnel-client login)")]
    NoCertificate,
    /// The certificate has expired.
    #[error("the client certificate has expired")]
    CertificateExpired,
    /// The certificate does not chain to the user CA.
    #[error("the client certificate does not verify against the user CA: {0}")]
    CertificateInvalid(String),
    /// The certificate was revoked.
    #[error("the client certificate {0} is revoked")]
    CertificateRevoked(String),
    /// The certificate names no email.
    #[error("the client certificate names no person")]
    NoIdentity,
    /// No such role.
    #[error("no role {0:?}")]
    UnknownRole(String),
    /// The requester is in none of the role's requester groups.
    #[error("{0} may not request role {1}")]
    NotRequester(String, String),
    /// More than the role's `max_duration`.
    #[error("{0} s asked, the role allows at most {1} s")]
    DurationTooLong(i64, i64),
    /// The role requires a reason and none was given.
    #[error("role {0} requires a reason")]
    ReasonRequired(String),
    /// A denial needs a reason.
    #[error("a denial needs a reason")]
    DenyReasonRequired,
    /// No such request.
    #[error("no request {0}")]
    NoRequest(String),
    /// The requester decided their own request.
    #[error("{0} may not decide their own request")]
    SelfApproval(String),
    /// The caller holds none of the role's approver groups in this certificate.
    #[error("{0} holds none of the approver groups of role {1}")]
    NotApprover(String, String),
    /// The request was decided (or expired) before.
    #[error("request {0} is already {1}")]
    AlreadyDecided(String, &'static str),
    /// This approver decided the request before.
    #[error("{0} has already decided request {1}")]
    AlreadyDecidedByYou(String, String),
    /// Someone else's request.
    #[error("request {0} is not {1}'s")]
    NotYours(String, String),
    /// Not approved (yet).
    #[error("request {0} is {1}, not approved")]
    NotApproved(String, &'static str),
    /// The grant has ended.
    #[error("the grant of request {0} has ended")]
    GrantEnded(String),
    /// The caller's key is not the one the request was made with.
    #[error("the certificate's key is not the one request {0} was made with")]
    KeyMismatch(String),
    /// The body or the path is not what the API expects.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Wrong method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The store or the CA failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AccessRefusal {
    /// Reason code for audit events and the API's `error` field.
    pub(crate) fn code(&self) -> &'static str {
        use AccessRefusal::*;
        match self {
            NoCertificate => "no_certificate",
            CertificateExpired => "certificate_expired",
            CertificateInvalid(_) => "certificate_invalid",
            CertificateRevoked(_) => "certificate_revoked",
            NoIdentity => "no_identity",
            UnknownRole(_) => "unknown_role",
            NotRequester(..) => "not_a_requester",
            DurationTooLong(..) => "duration_too_long",
            ReasonRequired(_) => "reason_required",
            DenyReasonRequired => "reason_required",
            NoRequest(_) => "no_such_request",
            SelfApproval(_) => "self_approval",
            NotApprover(..) => "not_an_approver",
            AlreadyDecided(..) => "already_decided",
            AlreadyDecidedByYou(..) => "already_decided_by_you",
            NotYours(..) => "not_your_request",
            NotApproved(..) => "not_approved",
            GrantEnded(_) => "grant_ended",
            KeyMismatch(_) => "key_mismatch",
            BadRequest(_) => "bad_request",
            MethodNotAllowed => "method_not_allowed",
            Internal(_) => "internal",
        }
    }

    /// HTTP status answered.
    pub(crate) fn status(&self) -> u16 {
        use AccessRefusal::*;
        match self {
            NoCertificate
            | CertificateExpired
            | CertificateInvalid(_)
            | CertificateRevoked(_)
            | NoIdentity => 401,
            UnknownRole(_) | NoRequest(_) => 404,
            NotRequester(..) | SelfApproval(_) | NotApprover(..) | NotYours(..)
            | KeyMismatch(_) => 403,
            DurationTooLong(..) | ReasonRequired(_) | DenyReasonRequired | BadRequest(_) => 400,
            AlreadyDecided(..) | AlreadyDecidedByYou(..) | NotApproved(..) => 409,
            GrantEnded(_) => 410,
            MethodNotAllowed => 405,
            Internal(_) => 500,
        }
    }
}

/// Who is calling, from their verified current certificate.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The certificate's email SAN (else its CN), lower-case.
    pub email: String,
    /// Its OUs: the person's mapped groups (and any role granted).
    pub ous: Vec<String>,
    /// Its URI SANs (the stable subject id).
    pub uris: Vec<String>,
    /// Its serial (upper-case hex).
    pub serial: String,
    /// Its end of validity (Unix seconds).
    pub not_after: i64,
    /// Its public key.
    pub key: PKey<Public>,
    /// SHA-256 of the key's SPKI, lower-case hex.
    pub key_sha256: String,
}

/// The caller of one request, checked offline: a certificate was presented, it has not
/// expired at `now`, and it chains to the user CA. Revocation is checked by
/// [`authenticate`].
pub(crate) fn caller_of(peer: Option<&PeerCert>, now: i64) -> Result<Caller, AccessRefusal> {
    let peer = peer.ok_or(AccessRefusal::NoCertificate)?;
    let cert = &peer.cert;
    let internal = |e: openssl::error::ErrorStack| AccessRefusal::Internal(e.to_string());
    let not_after = asn1_to_unix(cert.not_after()).map_err(internal)?;
    if not_after <= now || peer.verify.as_raw() == CERT_HAS_EXPIRED {
        return Err(AccessRefusal::CertificateExpired);
    }
    if peer.verify != X509VerifyResult::OK {
        return Err(AccessRefusal::CertificateInvalid(
            peer.verify.error_string().to_string(),
        ));
    }
    let id = Identity::from_cert(cert);
    let email = id
        .email
        .first()
        .or(id.cn.first())
        .filter(|e| e.contains('@'))
        .ok_or(AccessRefusal::NoIdentity)?
        .to_ascii_lowercase();
    let key = cert.public_key().map_err(internal)?;
    let key_sha256 = crate::signin::store::key_sha256(&key).map_err(internal)?;
    Ok(Caller {
        email,
        ous: id.ou,
        uris: id.uri,
        serial: id.serial,
        not_after,
        key,
        key_sha256,
    })
}

/// [`caller_of`], then revocation: the signer's store (`tunnel-server signer revoke`).
pub(crate) async fn authenticate(
    signer: &Signer,
    peer: Option<&PeerCert>,
    now: i64,
) -> Result<Caller, AccessRefusal> {
    let caller = caller_of(peer, now)?;
    let revoked = signer
        .access
        .store()
        .await
        .map_err(internal_store)?
        .list(Some(&Selector::Serial(caller.serial.clone())), false, now)
        .await
        .map_err(internal_store)?
        .iter()
        .any(|i| i.revoked_at.is_some());
    if revoked {
        return Err(AccessRefusal::CertificateRevoked(caller.serial));
    }
    Ok(caller)
}

fn internal_store(e: StoreError) -> AccessRefusal {
    AccessRefusal::Internal(e.to_string())
}

/// Checks a new request: the role exists, the caller may ask for it, the duration is within
/// `max_duration`, a reason is given when required. Returns the role.
pub(crate) fn check_request<'a>(
    roles: &'a [Role],
    caller: &Caller,
    role: &str,
    duration: i64,
    reason: &str,
) -> Result<&'a Role, AccessRefusal> {
    let r = roles
        .iter()
        .find(|r| r.name == role)
        .ok_or_else(|| AccessRefusal::UnknownRole(role.to_string()))?;
    if !r.may_request(&caller.ous) {
        return Err(AccessRefusal::NotRequester(
            caller.email.clone(),
            r.name.clone(),
        ));
    }
    let max = r.max_duration.as_secs() as i64;
    if duration > max {
        return Err(AccessRefusal::DurationTooLong(duration, max));
    }
    if r.require_reason && reason.trim().is_empty() {
        return Err(AccessRefusal::ReasonRequired(r.name.clone()));
    }
    Ok(r)
}

/// Checks a decision by `caller` on `req` before it is recorded (the store keeps it final
/// and counts each approver once): not one's own request, an approver group held in the
/// current certificate, the request still pending.
pub(crate) fn check_decision(
    role: Option<&Role>,
    caller: &Caller,
    req: &AccessRequest,
) -> Result<(), AccessRefusal> {
    if req.requester.eq_ignore_ascii_case(&caller.email) {
        return Err(AccessRefusal::SelfApproval(caller.email.clone()));
    }
    // A role removed from the config since: nobody may decide it any more.
    if !role.is_some_and(|r| r.may_approve(&caller.ous)) {
        return Err(AccessRefusal::NotApprover(
            caller.email.clone(),
            req.role.clone(),
        ));
    }
    if req.state != RequestState::Pending {
        return Err(AccessRefusal::AlreadyDecided(
            req.id.clone(),
            req.state.as_str(),
        ));
    }
    Ok(())
}

/// Checks that `caller` may fetch the elevated certificate of `req` at `now`, and returns
/// its end: the grant's end, never after the caller's current certificate.
pub(crate) fn check_issue(
    caller: &Caller,
    req: &AccessRequest,
    now: i64,
) -> Result<i64, AccessRefusal> {
    if !req.requester.eq_ignore_ascii_case(&caller.email) {
        return Err(AccessRefusal::NotYours(
            req.id.clone(),
            caller.email.clone(),
        ));
    }
    let grant = match (&req.state, &req.grant) {
        (RequestState::Approved, Some(g)) => g,
        (state, _) => return Err(AccessRefusal::NotApproved(req.id.clone(), state.as_str())),
    };
    if grant.ends_at <= now {
        return Err(AccessRefusal::GrantEnded(req.id.clone()));
    }
    if caller.key_sha256 != req.key_sha256 {
        return Err(AccessRefusal::KeyMismatch(req.id.clone()));
    }
    Ok(grant.ends_at.min(caller.not_after))
}

/// The elevated certificate for `caller`'s key: their names, their OUs plus the role's,
/// from (backdated) now until `not_after`.
pub(crate) fn build_elevated(
    signer: &Signer,
    caller: &Caller,
    role: &Role,
    now: i64,
    not_after: i64,
) -> Result<X509, openssl::error::ErrorStack> {
    let mut spec = crate::pki::CertSpec::client(&caller.email);
    let mut ous = caller.ous.clone();
    ous.extend(role.grants.iter().cloned());
    ous.sort();
    ous.dedup();
    spec.ou = ous;
    spec.email = vec![caller.email.clone()];
    spec.uri = caller.uris.clone();
    crate::pki::build(
        &caller.key,
        &spec,
        (now - super::mint::BACKDATE_SECS, not_after),
        crate::pki::SignedBy::Ca(&signer.minter.ca),
    )
}

#[cfg(test)]
mod tests;
