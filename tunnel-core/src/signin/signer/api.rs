//! The signer's HTTP API: `GET /v1/login-config` and `POST /v1/certificates`, each request
//! answered with JSON, and `GET /v1/crl` (the user CA's CRL, DER or PEM by `Accept`), every request to `/v1/certificates` (whatever its method, size or
//! body) ending in one audit event. Peer-controlled text (the token's claims, serde's error
//! text, which quotes field names) reaches the log only through [`printable`], and error
//! replies carry a fixed description per reason, never request text.

use super::claims;
use super::mint::{csr_key, mint, Issuance};
use super::refusal::Refusal;
use super::wire::{CertificateRequest, CertificateResponse, ErrorBody, LoginConfig};
use super::Signer;
use crate::authz::identity::printable;
use crate::http::serve::{reply, BodyError, Reply, Request};
use crate::signin::oidc::jws::{Jws, ALLOWED_ALGS};
use crate::signin::oidc::nonce_for_key;
use crate::util::time::unix_now;
use serde::Serialize;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Instant;

/// Largest request body accepted (a CSR and an ID token fit in a few KiB).
pub(crate) const MAX_REQUEST_BODY: usize = 64 * 1024;

/// Answers one request.
pub(crate) async fn handle(signer: &Signer, req: Request) -> Reply {
    match (req.head.method.as_str(), req.path()) {
        ("GET", "/v1/login-config") => json_reply(200, &login_config(signer)),
        (_, "/v1/certificates") => certificates(signer, req).await,
        ("GET", "/v1/crl") => crl(signer, &req).await,
        (_, p) if p.starts_with("/v1/access/") => super::access::api::handle(signer, req).await,
        (_, "/v1/login-config" | "/v1/crl") => {
            json_reply(405, &error_body("method_not_allowed", "GET only"))
        }
        _ => json_reply(
            404,
            &error_body(
                "not_found",
                "the API is /v1/login-config, /v1/certificates and /v1/crl",
            ),
        ),
    }
}

/// The user CA's CRL: PEM when `Accept` names PEM (`application/x-pem-file`), else DER
/// (`application/pkix-crl`, what CRL distribution points serve).
async fn crl(signer: &Signer, req: &Request) -> Reply {
    let pem = req
        .header("accept")
        .is_some_and(|a| a.to_ascii_lowercase().contains("pem"));
    match super::crl::current(&signer.minter.ca, signer.store(), signer.cfg.crl_lifetime).await {
        Ok(c) if pem => reply(200, "application/x-pem-file", c.pem),
        Ok(c) => reply(200, "application/pkix-crl", c.der),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the CRL");
            json_reply(
                503,
                &error_body(
                    "crl_unavailable",
                    "the CRL cannot be built now; see the signer's log",
                ),
            )
        }
    }
}

fn json_reply(status: u16, body: &impl Serialize) -> Reply {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    reply(status, "application/json", text)
}

fn error_body(code: &str, description: &str) -> ErrorBody {
    ErrorBody {
        error: code.to_string(),
        error_description: description.to_string(),
    }
}

fn login_config(signer: &Signer) -> LoginConfig {
    let c = &signer.cfg;
    LoginConfig {
        issuer: c.issuer.clone(),
        client_id: c.client_id.clone(),
        scopes: c.scopes.clone(),
        flows: vec!["authorization_code".into(), "device_code".into()],
        max_lifetime: c.max_lifetime.as_secs(),
        default_lifetime: c.default_lifetime.as_secs(),
        gateway: c.gateway.clone(),
        gateway_server_name: c.gateway_server_name.clone(),
        gateway_ca: signer.gateway_ca_pem.as_deref().map(str::to_string),
        id_token_algorithms: ALLOWED_ALGS.iter().map(|a| a.to_string()).collect(),
    }
}

async fn certificates(signer: &Signer, req: Request) -> Reply {
    let started = Instant::now();
    let mut who = String::new();
    let outcome = match (req.head.method.as_str(), req.body) {
        ("POST", Ok(body)) => certify(signer, &body, &mut who).await,
        ("POST", Err(BodyError::TooLarge(_))) => Err(Refusal::TooLarge(MAX_REQUEST_BODY)),
        ("POST", Err(e)) => Err(Refusal::BadRequest(e.to_string())),
        (_, _) => Err(Refusal::MethodNotAllowed),
    };
    let ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok((issuance, person, clamped)) => {
            audit_issued(req.peer, &issuance, &person, clamped, ms);
            let mut chain =
                String::from_utf8_lossy(&issuance.cert.to_pem().unwrap_or_default()).into_owned();
            chain += &signer.ca_pem;
            json_reply(
                200,
                &CertificateResponse {
                    certificate: chain,
                    serial: issuance.serial,
                    not_after: issuance.not_after,
                    lifetime_clamped: clamped,
                },
            )
        }
        Err(r) => {
            tracing::warn!(
                target: "audit", peer = %req.peer, result = "refused", reason = r.code(),
                email = %printable(&who), detail = %printable(&r.to_string()), duration_ms = ms,
                "certificate refused"
            );
            json_reply(r.status(), &error_body(r.code(), r.public_description()))
        }
    }
}

fn audit_issued(
    peer: SocketAddr,
    issuance: &Issuance,
    person: &claims::Person,
    clamped: bool,
    ms: u64,
) {
    tracing::info!(
        target: "audit", peer = %peer, result = "issued", email = %printable(&person.email),
        sub = %printable(&person.sub), groups = %printable(&person.ous.join(",")),
        serial = %issuance.serial, not_after = issuance.not_after, clamped,
        key_bound = person.key_bound, duration_ms = ms, "certificate issued"
    );
}

/// The request body and the lifetime to issue for it, and whether that was clamped.
fn parse(
    body: &[u8],
    cfg: &super::SignerConfig,
) -> Result<(CertificateRequest, i64, bool), Refusal> {
    let req: CertificateRequest =
        serde_json::from_slice(body).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let (lifetime, clamped) = lifetime(
        req.lifetime.as_ref(),
        cfg.default_lifetime,
        cfg.max_lifetime,
    )?;
    Ok((req, lifetime, clamped))
}

/// The lifetime to issue for a requested one (seconds, or a duration like "8h"; absent:
/// `default`), at most `max`, and whether it was clamped. Any number or duration, however
/// large, is clamped rather than overflowed.
fn lifetime(
    requested: Option<&Value>,
    default: std::time::Duration,
    max: std::time::Duration,
) -> Result<(i64, bool), Refusal> {
    let secs = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
    let max = secs(max.as_secs());
    let want = match requested {
        None | Some(Value::Null) => secs(default.as_secs()),
        Some(Value::Number(n)) => n.as_u64().filter(|s| *s > 0).map(secs).ok_or_else(|| {
            Refusal::BadRequest("lifetime must be a positive number of seconds".into())
        })?,
        Some(Value::String(s)) => match humantime::parse_duration(s) {
            Ok(d) => Some(secs(d.as_secs())),
            Err(humantime::DurationError::NumberOverflow) => Some(i64::MAX),
            Err(_) => None,
        }
        .filter(|s| *s > 0)
        .ok_or_else(|| {
            Refusal::BadRequest(format!("lifetime {s:?} is not a duration like \"8h\""))
        })?,
        Some(_) => {
            return Err(Refusal::BadRequest(
                "lifetime must be a string or a number".into(),
            ))
        }
    };
    Ok((want.min(max), want > max))
}

/// Every check, then issuance. `who` receives the email as soon as a verified token names it.
async fn certify(
    signer: &Signer,
    body: &[u8],
    who: &mut String,
) -> Result<(Issuance, claims::Person, bool), Refusal> {
    let (req, lifetime, clamped) = parse(body, &signer.cfg)?;
    let key = csr_key(&req.csr)?;
    let jws = Jws::parse(&req.id_token).map_err(|e| Refusal::Signature(e.to_string()))?;
    let keys = signer
        .keys
        .keys_for(jws.kid.as_deref())
        .await
        .map_err(Refusal::ProviderUnavailable)?;
    jws.verify(&keys)
        .map_err(|e| Refusal::Signature(e.to_string()))?;
    if let Some(e) = jws.payload.get("email").and_then(Value::as_str) {
        *who = e.to_string();
    }
    let nonce = nonce_for_key(&key).map_err(|e| Refusal::Internal(e.to_string()))?;
    let now = unix_now();
    let person = claims::check(&signer.cfg, &jws.payload, &nonce, now)?;
    let store = signer.store();
    if store
        .is_blocked(&person.email, &person.sub, now)
        .await
        .map_err(|e| Refusal::Internal(e.to_string()))?
    {
        return Err(Refusal::Blocked(person.email));
    }
    // Keyed on what the provider signed, not on the token's text (see jws::replay_key), and
    // committed to the store (shared by every signer on it) before anything is issued.
    // Remembered until the token can no longer pass the checks: its exp, or max_token_age
    // after an iat that is at most clock_skew ahead of now, whichever comes first (a
    // far-future exp must not keep the record for ever).
    let skew = signer.cfg.clock_skew.as_secs() as i64;
    let by_age = now.saturating_add(signer.cfg.max_token_age.as_secs() as i64 + 2 * skew);
    let forget = person.exp.saturating_add(skew).min(by_age);
    let replay_key = jws.replay_key();
    let first = store
        .first_use(&replay_key, forget, now)
        .await
        .map_err(|e| Refusal::Internal(e.to_string()))?;
    if !first {
        return Err(Refusal::Replayed);
    }
    let issuance = mint(&signer.minter, &person, &key, replay_key, lifetime).await?;
    Ok((issuance, person, clamped))
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
