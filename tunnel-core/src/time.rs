//! Wall-clock helpers shared by TLS, revocation, metrics and PKI: Unix time now, ASN.1 times
//! as Unix seconds, and the expiry dates an agent reports and warns about.

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::error::ErrorStack;
use openssl::x509::X509;
use std::time::Duration;
use tracing::warn;

/// How often a running agent re-checks expiry dates for warnings.
pub const EXPIRY_CHECK_PERIOD: Duration = Duration::from_secs(6 * 3600);

/// Unix time now, in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An ASN.1 time as Unix seconds.
pub fn asn1_to_unix(t: &Asn1TimeRef) -> Result<i64, ErrorStack> {
    let epoch = Asn1Time::from_unix(0)?;
    let d = epoch.diff(t)?;
    Ok(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// An ASN.1 time as Unix seconds, `None` when OpenSSL cannot compare it.
pub fn unix_time(t: &Asn1TimeRef) -> Option<i64> {
    asn1_to_unix(t).ok()
}

/// What expires when, as (`which`, Unix time): the agent's own certificate (`cert`) and the
/// earliest of its trusted CAs (`ca`). The gateway adds its CRLs.
pub fn cert_expiries(own: &X509, cas: &[X509]) -> Vec<(String, i64)> {
    let mut v = Vec::new();
    if let Some(t) = unix_time(own.not_after()) {
        v.push(("cert".to_string(), t));
    }
    if let Some(t) = cas.iter().filter_map(|c| unix_time(c.not_after())).min() {
        v.push(("ca".to_string(), t));
    }
    v
}

/// Logs a warning for each (what, unix expiry) within `lead` of now, an error when past.
pub fn warn_expiries(items: &[(String, i64)], lead: Duration) {
    let now = unix_now();
    // From the config: a lead beyond i64 seconds warns about everything (a wrapping cast
    // made it negative and warned about nothing).
    let lead = i64::try_from(lead.as_secs()).unwrap_or(i64::MAX);
    for (which, at) in items {
        let left = at - now;
        if left < 0 {
            tracing::error!(which = %which, expired_seconds_ago = -left, "{which} has expired");
        } else if left < lead {
            warn!(which = %which, days_left = left / 86_400, "{which} expires soon (expiry_warning)");
        }
    }
}
