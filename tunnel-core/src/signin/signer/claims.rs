//! Checks of an ID token's claims, after its signature verified: issuer, audience, times,
//! the nonce that binds it to the CSR's key, email, domain and groups. Pure functions of the
//! claims, the configuration and the time, so every rule is table-tested here.

mod email;

use super::config::SignerConfig;
use super::refusal::Refusal;
use serde_json::Value;

/// What a verified token says about the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Person {
    /// Verified email (as the provider wrote it).
    pub email: String,
    /// The provider's subject id.
    pub sub: String,
    /// Every group the provider listed.
    pub groups: Vec<String>,
    /// OU values of the mapped groups, sorted, without duplicates.
    pub ous: Vec<String>,
    /// The token's `exp`.
    pub exp: i64,
    /// Whether the token carried the nonce of the CSR's key (false only when it had none
    /// and `require_nonce` is off).
    pub key_bound: bool,
}

/// Checks every claim; `nonce` is the one computed from the CSR's key.
pub(crate) fn check(
    cfg: &SignerConfig,
    c: &Value,
    nonce: &str,
    now: i64,
) -> Result<Person, Refusal> {
    let s = |k: &str| c.get(k).and_then(Value::as_str);
    let iss = s("iss").unwrap_or("");
    if iss != cfg.issuer {
        return Err(Refusal::Issuer(iss.to_string()));
    }
    check_audience(cfg, c)?;
    let exp = check_times(cfg, c, now)?;
    let key_bound = match s("nonce") {
        Some(n) if n == nonce => true,
        None if !cfg.require_nonce => false,
        _ => return Err(Refusal::Nonce),
    };
    let email = s("email")
        .filter(|e| !e.is_empty())
        .ok_or(Refusal::NoEmail)?;
    // Before anything else reads it: the email becomes the certificate's CN and SAN, and
    // backends parse those (split on commas, read as C strings).
    if !email::is_plain_address(email) {
        return Err(Refusal::BadEmail(email.to_string()));
    }
    let verified = matches!(c.get("email_verified"), Some(Value::Bool(true)))
        || s("email_verified") == Some("true");
    if cfg.require_email_verified && !verified {
        return Err(Refusal::EmailUnverified(email.to_string()));
    }
    let domain = match email.rsplit_once('@') {
        Some((_, d)) => d.to_ascii_lowercase(),
        None => return Err(Refusal::EmailDomain(email.to_string())),
    };
    if !cfg.allowed_email_domains.contains(&domain) {
        return Err(Refusal::EmailDomain(email.to_string()));
    }
    let groups = groups_of(c.get(&cfg.groups_claim));
    if !cfg.required_groups.is_empty() && !groups.iter().any(|g| cfg.required_groups.contains(g)) {
        return Err(Refusal::MissingGroup(email.to_string()));
    }
    let mut ous: Vec<String> = groups
        .iter()
        .filter_map(|g| cfg.group_map.get(g).cloned())
        .collect();
    ous.sort();
    ous.dedup();
    Ok(Person {
        email: email.to_string(),
        sub: s("sub").unwrap_or("").to_string(),
        groups,
        ous,
        exp,
        key_bound,
    })
}

fn check_audience(cfg: &SignerConfig, c: &Value) -> Result<(), Refusal> {
    let auds: Vec<&str> = match c.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !auds.contains(&cfg.client_id.as_str()) {
        return Err(Refusal::Audience(format!("aud {auds:?}")));
    }
    let azp = c.get("azp").and_then(Value::as_str);
    if (auds.len() > 1 || azp.is_some()) && azp != Some(cfg.client_id.as_str()) {
        return Err(Refusal::Audience(format!("azp {azp:?}")));
    }
    Ok(())
}

/// Checks `exp`, `iat` and `nbf`; returns `exp`. The numbers are the token's (any i64):
/// every sum and difference with them is checked, so that an extreme value is refused
/// instead of panicking or wrapping around into "fresh" (`now - i64::MIN`).
fn check_times(cfg: &SignerConfig, c: &Value, now: i64) -> Result<i64, Refusal> {
    let n = |k: &str| c.get(k).and_then(Value::as_i64);
    let time = |why: String| Refusal::TokenTime(why);
    let skew = secs(cfg.clock_skew);
    let exp = n("exp").ok_or_else(|| time("no exp".into()))?;
    let exp_late = exp
        .checked_add(skew)
        .ok_or_else(|| time(format!("exp {exp} out of range")))?;
    if exp_late <= now {
        return Err(Refusal::Expired(exp));
    }
    // From the clock and the configuration: saturating is exact enough there.
    let latest = now.saturating_add(skew);
    let iat = n("iat").ok_or_else(|| time("no iat".into()))?;
    if iat > latest {
        return Err(time(format!("issued in the future ({iat})")));
    }
    let age = now
        .checked_sub(iat)
        .ok_or_else(|| time(format!("iat {iat} out of range")))?;
    if age > secs(cfg.max_token_age).saturating_add(skew) {
        return Err(time(format!("issued at {iat}, older than max_token_age")));
    }
    if n("nbf").is_some_and(|nbf| nbf > latest) {
        return Err(time("not valid yet (nbf)".into()));
    }
    Ok(exp)
}

/// A configured duration in whole seconds as i64 (saturating: no duration wraps negative).
fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn groups_of(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => vec![],
    }
}

#[cfg(test)]
#[path = "claims_tests.rs"]
mod tests;
