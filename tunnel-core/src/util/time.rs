//! Wall-clock helpers shared by TLS, revocation, metrics and PKI: Unix time now, ASN.1 times
//! as Unix seconds, and the expiry dates an agent reports and warns about.

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::error::ErrorStack;
use openssl::x509::X509;
use std::time::Duration;
use tracing::warn;

/// How often a running agent re-checks expiry dates for warnings.
pub const EXPIRY_CHECK_PERIOD: Duration = Duration::from_secs(6 * 3600);

/// When to look at expiry dates again, for items (Unix expiry, warning lead): when the next
/// warning window opens or the next item expires, so that an 8-hour certificate's
/// 96-minute window is not slept through; at most [`EXPIRY_CHECK_PERIOD`], at least a second.
pub fn next_expiry_check(items: &[(i64, Duration)], now: i64) -> Duration {
    let period = EXPIRY_CHECK_PERIOD.as_secs() as i64;
    let next = items
        .iter()
        .flat_map(|(at, lead)| {
            let lead = i64::try_from(lead.as_secs()).unwrap_or(i64::MAX);
            // A second into the window: warn_expiry warns when less than `lead` is left.
            [at.saturating_sub(lead).saturating_add(1), *at]
        })
        .map(|t| t.saturating_sub(now))
        .filter(|d| *d > 0)
        .fold(period, i64::min);
    Duration::from_secs(next.max(1) as u64)
}

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
    for (which, at) in items {
        warn_expiry(which, *at, lead, None);
    }
}

/// Logs a warning when `which` expires (Unix time `at`) within `lead` of now, an error when
/// past; `renew` (e.g. "run `tunnel-client login`") says what to do about it.
pub fn warn_expiry(which: &str, at: i64, lead: Duration, renew: Option<&str>) {
    // From the config: a lead beyond i64 seconds warns about everything (a wrapping cast
    // made it negative and warned about nothing).
    let lead = i64::try_from(lead.as_secs()).unwrap_or(i64::MAX);
    let left = at - unix_now();
    let renew = renew.unwrap_or("");
    if left < 0 {
        tracing::error!(which = %which, expired_seconds_ago = -left, renew, "{which} has expired");
    } else if left < lead {
        warn!(
            which = %which,
            days_left = left / 86_400,
            seconds_left = left,
            renew,
            "{which} expires soon (expiry_warning)"
        );
    }
}

/// The warning lead when `expiry_warning` is not configured, for a certificate valid from
/// `not_before` to `not_after` (Unix seconds): its last fifth, at most `cap` (14 days). An
/// 8-hour sign-in certificate is thus warned about in its last 96 minutes, not from the start.
pub fn default_expiry_warning(not_before: i64, not_after: i64, cap: Duration) -> Duration {
    let lifetime = u64::try_from(not_after.saturating_sub(not_before)).unwrap_or(0);
    cap.min(Duration::from_secs(lifetime / 5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_check_is_when_a_window_opens_or_something_expires() {
        let h = 3600;
        let lead = Duration::from_secs(96 * 60);
        let year = (400 * 24 * h, Duration::from_secs(14 * 86_400));
        let cases: &[(&[(i64, Duration)], i64)] = &[
            (&[], 6 * h),
            // 7 h left of an 8 h certificate: its window opens in 7 h - 96 min.
            (&[(7 * h, lead)], 7 * h - 96 * 60 + 1),
            // 8 h left: the window opens after the period; the period comes first.
            (&[(8 * h, lead)], 6 * h),
            // Inside the window: the next event is the expiry itself.
            (&[(h, lead)], h),
            // Expired already: nothing ahead, the regular period.
            (&[(-5, lead)], 6 * h),
            // A far CA and a near certificate: the nearer wins.
            (&[year, (2 * h, lead)], 2 * h - 96 * 60 + 1),
            // Far away: capped at the period.
            (&[(30 * 24 * h, lead)], 6 * h),
            (&[(10, Duration::MAX)], 10),
        ];
        for (items, want) in cases {
            let want = Duration::from_secs(*want as u64);
            assert_eq!(next_expiry_check(items, 0), want, "{items:?}");
        }
    }

    #[test]
    fn the_default_warning_is_the_last_fifth_of_a_short_lifetime() {
        let day = 86_400;
        let cap = Duration::from_secs(14 * day as u64);
        let cases = [
            (8 * 3600, 96 * 60),   // an 8 h sign-in certificate: the last 96 minutes
            (10 * day, 2 * day),   // 10 days: the last 2
            (70 * day, 14 * day),  // 70 days: exactly the cap
            (365 * day, 14 * day), // a year: 14 days, as before
            (0, 0),                // nothing to warn ahead of
            (-5, 0),               // not_after before not_before: no panic, no lead
        ];
        for (lifetime, want) in cases {
            let got = default_expiry_warning(1_000, 1_000 + lifetime, cap);
            assert_eq!(got, Duration::from_secs(want as u64), "lifetime {lifetime}");
        }
    }
}
