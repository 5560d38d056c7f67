//! `/v1/access/…`: request a role, list one's requests and the ones one may decide, approve,
//! deny, and fetch the elevated certificate. Each call is authenticated by the caller's
//! certificate ([`super::authenticate`]) and ends in one audit event (`target: "audit"`,
//! `event = "access"`, `action` one of requested, approved, denied, expired, issued,
//! refused), with who, what, why and until when.

use super::wire::{DecisionBody, DecisionView, NewAccessRequest, RequestList, RequestView};
use super::{authenticate, check_decision, check_issue, check_request, AccessRefusal, Caller};
use crate::authz::identity::{printable, Identity};
use crate::http::serve::{reply, Reply, Request};
use crate::signin::signer::wire::{CertificateResponse, ErrorBody};
use crate::signin::signer::Signer;
use crate::signin::store::requests::{
    AccessRequest, Decided, NewRequest, Verdict, Which, PENDING_TTL_SECS,
};
use crate::signin::store::{NewIssuance, Recorded};
use crate::util::time::unix_now;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How often a serial is drawn again when the index already holds it.
const SERIAL_TRIES: usize = 8;

/// Answers a request under `/v1/access/`.
pub(crate) async fn handle(signer: &Signer, req: Request) -> Reply {
    let now = unix_now();
    sweep(&signer.access, now).await;
    let mut who = String::new();
    match route(signer, &req, now, &mut who).await {
        Ok(r) => r,
        Err(r) => {
            tracing::warn!(
                target: "audit", event = "access", action = "refused", peer = %req.peer,
                reason = r.code(), who = %printable(&who),
                path = %printable(req.path()), detail = %printable(&r.to_string()),
                "access refused"
            );
            json(
                r.status(),
                &ErrorBody {
                    error: r.code().to_string(),
                    error_description: r.to_string(),
                },
            )
        }
    }
}

fn json(status: u16, body: &impl Serialize) -> Reply {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    reply(status, "application/json", text)
}

fn body<T: DeserializeOwned + Default>(req: &Request, empty_ok: bool) -> Result<T, AccessRefusal> {
    let b = req
        .body
        .as_ref()
        .map_err(|e| AccessRefusal::BadRequest(e.to_string()))?;
    if b.is_empty() && empty_ok {
        return Ok(T::default());
    }
    serde_json::from_slice(b).map_err(|e| AccessRefusal::BadRequest(e.to_string()))
}

async fn route(
    signer: &Signer,
    req: &Request,
    now: i64,
    who: &mut String,
) -> Result<Reply, AccessRefusal> {
    let method = req.head.method.as_str();
    let rest = req
        .path()
        .strip_prefix("/v1/access/")
        .unwrap_or_default()
        .to_string();
    let parts: Vec<&str> = rest.split('/').collect();
    let caller = authenticate(signer, req.peer_cert.as_ref(), now).await?;
    *who = caller.email.clone();
    match (method, parts.as_slice()) {
        ("POST", ["requests"]) => create(signer, req, &caller, now).await,
        ("GET", ["requests"]) => mine(signer, &caller).await,
        ("GET", ["pending"]) => pending(signer, &caller).await,
        ("GET", ["requests", id]) => one(signer, &caller, id).await,
        ("POST", ["requests", id, "approve"]) => {
            decide(signer, req, &caller, id, Verdict::Approve, now).await
        }
        ("POST", ["requests", id, "deny"]) => {
            decide(signer, req, &caller, id, Verdict::Deny, now).await
        }
        ("POST", ["requests", id, "certificate"]) => issue(signer, &caller, id, now).await,
        (_, ["requests"] | ["pending"] | ["requests", _] | ["requests", _, _]) => {
            Err(AccessRefusal::MethodNotAllowed)
        }
        _ => Err(AccessRefusal::BadRequest(
            "the API is /v1/access/requests[/ID[/approve|deny|certificate]] and /v1/access/pending"
                .into(),
        )),
    }
}

/// `GET /v1/access/requests`: the caller's own requests.
async fn mine(signer: &Signer, caller: &Caller) -> Result<Reply, AccessRefusal> {
    let mine = store(signer)
        .await?
        .access_requests(&Which::Mine(caller.email.clone()))
        .await
        .map_err(internal)?;
    Ok(json(200, &list(signer, &mine)))
}

/// `GET /v1/access/pending`: pending requests the caller may decide (never their own).
async fn pending(signer: &Signer, caller: &Caller) -> Result<Reply, AccessRefusal> {
    let roles: Vec<String> = signer
        .cfg
        .roles
        .iter()
        .filter(|r| r.may_approve(&caller.ous))
        .map(|r| r.name.clone())
        .collect();
    let pending = store(signer)
        .await?
        .access_requests(&Which::Pending(roles))
        .await
        .map_err(internal)?;
    let theirs: Vec<AccessRequest> = pending
        .into_iter()
        .filter(|r| !r.requester.eq_ignore_ascii_case(&caller.email))
        .collect();
    Ok(json(200, &list(signer, &theirs)))
}

/// `GET /v1/access/requests/ID`: for its requester and for those who may decide it.
async fn one(signer: &Signer, caller: &Caller, id: &str) -> Result<Reply, AccessRefusal> {
    let r = load(signer, id).await?;
    let role = signer.cfg.roles.iter().find(|x| x.name == r.role);
    if !r.requester.eq_ignore_ascii_case(&caller.email)
        && !role.is_some_and(|x| x.may_approve(&caller.ous))
    {
        return Err(AccessRefusal::NotYours(r.id, caller.email.clone()));
    }
    Ok(json(200, &view(signer, &r)))
}

async fn store(
    signer: &Signer,
) -> Result<&std::sync::Arc<crate::signin::store::Store>, AccessRefusal> {
    signer.access.store().await.map_err(internal)
}

fn internal(e: impl std::fmt::Display) -> AccessRefusal {
    AccessRefusal::Internal(e.to_string())
}

async fn load(signer: &Signer, id: &str) -> Result<AccessRequest, AccessRefusal> {
    store(signer)
        .await?
        .access_request(id)
        .await
        .map_err(internal)?
        .ok_or_else(|| AccessRefusal::NoRequest(printable(id)))
}

fn view(signer: &Signer, r: &AccessRequest) -> RequestView {
    let role = signer.cfg.roles.iter().find(|x| x.name == r.role);
    RequestView {
        id: r.id.clone(),
        requester: r.requester.clone(),
        role: r.role.clone(),
        duration: r.duration,
        reason: r.reason.clone(),
        state: r.state.as_str().into(),
        created_at: r.created_at,
        approvals: r.approvals(),
        approvals_needed: role.map_or(1, |x| x.approvals),
        approver_groups: role.map(|x| x.approvers.clone()).unwrap_or_default(),
        decisions: r
            .decisions
            .iter()
            .map(|d| DecisionView {
                approver: d.approver.clone(),
                verdict: d.verdict.as_str().into(),
                reason: d.reason.clone(),
                at: d.at,
            })
            .collect(),
        grant_ends_at: r.grant.as_ref().map(|g| g.ends_at),
    }
}

fn list(signer: &Signer, rs: &[AccessRequest]) -> RequestList {
    RequestList {
        requests: rs.iter().map(|r| view(signer, r)).collect(),
    }
}

/// A duration like `"2h"` or `"90s"`, in seconds, greater than zero.
fn duration_secs(s: &str) -> Result<i64, AccessRefusal> {
    let bad =
        || AccessRefusal::BadRequest(format!("duration {:?} is not like \"2h\"", printable(s)));
    match humantime::parse_duration(s.trim()) {
        Ok(d) if !d.is_zero() => Ok(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        Err(humantime::DurationError::NumberOverflow) => Ok(i64::MAX),
        _ => Err(bad()),
    }
}

async fn create(
    signer: &Signer,
    req: &Request,
    caller: &Caller,
    now: i64,
) -> Result<Reply, AccessRefusal> {
    let b: NewAccessRequest = body(req, false)?;
    let duration = duration_secs(&b.duration)?;
    let role = check_request(&signer.cfg.roles, caller, &b.role, duration, &b.reason)?;
    let r = store(signer)
        .await?
        .create_request(&NewRequest {
            requester: caller.email.clone(),
            role: role.name.clone(),
            duration,
            reason: b.reason.trim().to_string(),
            key_sha256: caller.key_sha256.clone(),
            created_at: now,
        })
        .await
        .map_err(internal)?;
    tracing::info!(
        target: "audit", event = "access", action = "requested", id = %r.id,
        requester = %printable(&r.requester), role = %r.role, duration_s = r.duration,
        reason = %printable(&r.reason), approvers = %role.approvers.join(","),
        "access requested"
    );
    signer.access.notifier.requested(&r, role);
    Ok(json(201, &view(signer, &r)))
}

async fn decide(
    signer: &Signer,
    req: &Request,
    caller: &Caller,
    id: &str,
    verdict: Verdict,
    now: i64,
) -> Result<Reply, AccessRefusal> {
    let b: DecisionBody = body(req, true)?;
    if verdict == Verdict::Deny && b.reason.trim().is_empty() {
        return Err(AccessRefusal::DenyReasonRequired);
    }
    let r = load(signer, id).await?;
    let role = signer.cfg.roles.iter().find(|x| x.name == r.role);
    check_decision(role, caller, &r)?;
    let needed = role.map_or(1, |x| x.approvals);
    let reason = b.reason.trim();
    let decided = store(signer)
        .await?
        .decide(&r.id, &caller.email, verdict, reason, needed, now)
        .await
        .map_err(internal)?;
    let after = match decided {
        Decided::NotFound => return Err(AccessRefusal::NoRequest(r.id)),
        Decided::Final(state) => return Err(AccessRefusal::AlreadyDecided(r.id, state.as_str())),
        Decided::AlreadyDecided => {
            return Err(AccessRefusal::AlreadyDecidedByYou(
                caller.email.clone(),
                r.id,
            ))
        }
        Decided::Recorded(a) | Decided::Approved(a) | Decided::Denied(a) => a,
    };
    let action = match verdict {
        Verdict::Approve => "approved",
        Verdict::Deny => "denied",
    };
    tracing::info!(
        target: "audit", event = "access", action, id = %after.id,
        requester = %printable(&after.requester), role = %after.role,
        approver = %caller.email, reason = %printable(reason),
        approvals = after.approvals(), approvals_needed = needed, state = after.state.as_str(),
        until = after.grant.as_ref().map_or(0, |g| g.ends_at),
        "access {action}"
    );
    signer
        .access
        .notifier
        .decided(&after, &caller.email, action, reason);
    Ok(json(200, &view(signer, &after)))
}

async fn issue(
    signer: &Signer,
    caller: &Caller,
    id: &str,
    now: i64,
) -> Result<Reply, AccessRefusal> {
    let r = load(signer, id).await?;
    let not_after = check_issue(caller, &r, now)?;
    let role = signer
        .cfg
        .roles
        .iter()
        .find(|x| x.name == r.role)
        .ok_or_else(|| AccessRefusal::UnknownRole(r.role.clone()))?
        .clone();
    let (cert, serial) = record_elevated(signer, caller, &role, &r, now, not_after).await?;
    store(signer)
        .await?
        .record_grant_issuance(&r.id, &serial)
        .await
        .map_err(internal)?;
    tracing::info!(
        target: "audit", event = "access", action = "issued", id = %r.id,
        requester = %caller.email, role = %r.role, serial = %serial,
        previous_serial = %caller.serial, until = not_after,
        grant_ends_at = r.grant.as_ref().map_or(0, |g| g.ends_at),
        "elevated certificate issued"
    );
    let mut chain = String::from_utf8_lossy(&cert.to_pem().map_err(internal)?).into_owned();
    chain += &signer.ca_pem;
    Ok(json(
        200,
        &CertificateResponse {
            certificate: chain,
            serial,
            not_after,
            lifetime_clamped: r.grant.as_ref().is_some_and(|g| not_after < g.ends_at),
        },
    ))
}

/// Builds the elevated certificate and records it in the store like a sign-in's (a serial
/// already taken is drawn again).
async fn record_elevated(
    signer: &Signer,
    caller: &Caller,
    role: &crate::signin::signer::config::roles::Role,
    r: &AccessRequest,
    now: i64,
    not_after: i64,
) -> Result<(openssl::x509::X509, String), AccessRefusal> {
    for _ in 0..SERIAL_TRIES {
        let (s, c, role) = (signer.clone(), caller.clone(), role.clone());
        let cert = tokio::task::spawn_blocking(move || {
            super::build_elevated(&s, &c, &role, now, not_after)
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        let serial = cert
            .serial_number()
            .to_bn()
            .and_then(|b| b.to_hex_str().map(|h| h.to_string()))
            .map_err(internal)?;
        let id = Identity::from_cert(&cert);
        let new = NewIssuance {
            serial: serial.clone(),
            email: caller.email.clone(),
            sub: super::sub_of(&caller.uris),
            groups: id.ou,
            key_sha256: caller.key_sha256.clone(),
            not_before: now - crate::signin::signer::mint::BACKDATE_SECS,
            not_after,
            issued_by: format!("{} (access request {})", signer.minter.instance, r.id),
            token: super::grant_token(&r.id, &serial),
        };
        match signer
            .store()
            .record_issuance(&new)
            .await
            .map_err(internal)?
        {
            Recorded::Stored => return Ok((cert, serial)),
            Recorded::SerialTaken | Recorded::TokenUsed => continue,
        }
    }
    Err(AccessRefusal::Internal(
        "every serial drawn is already in the store".into(),
    ))
}

/// Expires what is due at `now` (pending requests after [`PENDING_TTL_SECS`], ended
/// grants), with one audit event each. A failure here is logged; the call goes on.
pub(crate) async fn sweep(access: &super::Access, now: i64) {
    let Ok(store) = access.store().await else {
        return;
    };
    match store.expire_access(now, PENDING_TTL_SECS).await {
        Ok(e) => {
            for r in &e.requests {
                tracing::info!(
                    target: "audit", event = "access", action = "expired", id = %r.id,
                    requester = %printable(&r.requester), role = %r.role, what = "request",
                    reason = "not decided in time", "access request expired"
                );
                access.notifier.expired(r, "request");
            }
            for r in &e.grants {
                tracing::info!(
                    target: "audit", event = "access", action = "expired", id = %r.id,
                    requester = %printable(&r.requester), role = %r.role, what = "grant",
                    until = r.grant.as_ref().map_or(0, |g| g.ends_at), "access grant ended"
                );
                access.notifier.expired(r, "grant");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot expire access requests"),
    }
}
