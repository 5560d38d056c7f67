//! Refusing CRL rollback: which of two CRLs of one issuer from one source stays in force.
//!
//! A CRL replayed from yesterday is still validly signed and, until its nextUpdate, current;
//! accepting it would lift every revocation made since. So a CRL in force is replaced only by
//! one that is later in the CA's sequence: a higher CRL Number (the cRLNumber extension,
//! RFC 5280 5.2.3, which a CA increases with every list), or, when either list has no number,
//! a later thisUpdate. An equal position with different content (a CA re-using a number, or
//! two unnumbered lists of the same second) keeps the list in force, and an expired list
//! never replaces a current one. Every refusal is logged with the source and both positions.

use crate::util::der::tlv;
use openssl::x509::X509CrlRef;
use std::cmp::Ordering;
use tracing::warn;

/// Where a CRL stands in its issuer's sequence, and what is needed to compare two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    /// The cRLNumber, unsigned big-endian without leading zeros; `None` when absent or
    /// malformed (negative, not an INTEGER).
    pub number: Option<Vec<u8>>,
    /// thisUpdate, unix time.
    pub this_update: Option<i64>,
    /// nextUpdate, unix time; `None` for a list without one (it never expires).
    pub next_update: Option<i64>,
    /// SHA-256 of the DER, to tell the same list from another at the same position.
    pub digest: [u8; 32],
}

/// What to do with a CRL offered in place of the one in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Later in the sequence: it replaces the one in force.
    Replace,
    /// The very same list.
    Same,
    /// It must not replace the one in force.
    Keep(CrlRefusal),
}

/// Why an offered CRL is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrlRefusal {
    /// Earlier in the sequence: a rollback.
    Older,
    /// Same number (or thisUpdate) but other content.
    SamePosition,
    /// Past its nextUpdate while the one in force is not.
    Expired,
}

impl Position {
    /// The position of `crl` (its cRLNumber read from the DER; rust-openssl has no getter).
    pub(crate) fn of(crl: &X509CrlRef) -> Position {
        let der = crl.to_der().unwrap_or_default();
        Position {
            number: super::validate::number(&der).and_then(|v| unsigned(&v)),
            this_update: crate::util::time::unix_time(crl.last_update()),
            next_update: crl.next_update().and_then(crate::util::time::unix_time),
            digest: openssl::sha::sha256(&der),
        }
    }

    fn expired(&self, now: i64) -> bool {
        self.next_update.is_some_and(|t| t < now)
    }
}

/// The magnitude of a DER INTEGER's contents; `None` when it is not one or is negative.
fn unsigned(value: &[u8]) -> Option<Vec<u8>> {
    let (tag, body, _) = tlv(value)?;
    if tag != 0x02 || !body.first().is_some_and(|b| b & 0x80 == 0) {
        return None;
    }
    let start = body.iter().position(|b| *b != 0).unwrap_or(body.len());
    Some(body[start..].to_vec())
}

/// Whether `offered` may replace `current` at unix time `now`.
pub(crate) fn judge(current: &Position, offered: &Position, now: i64) -> Verdict {
    if current.digest == offered.digest {
        return Verdict::Same;
    }
    if offered.expired(now) && !current.expired(now) {
        return Verdict::Keep(CrlRefusal::Expired);
    }
    let order = match (&current.number, &offered.number) {
        // Magnitudes without leading zeros: the longer is larger, else compare bytes.
        (Some(c), Some(o)) => (o.len(), o).cmp(&(c.len(), c)),
        _ => offered.this_update.cmp(&current.this_update),
    };
    match order {
        Ordering::Greater => Verdict::Replace,
        Ordering::Equal => Verdict::Keep(CrlRefusal::SamePosition),
        Ordering::Less => Verdict::Keep(CrlRefusal::Older),
    }
}

/// The positions of both lists as logged: CRL Numbers when both have one, else thisUpdates.
pub(crate) fn positions(current: &Position, offered: &Position) -> (String, String) {
    match (&current.number, &offered.number) {
        (Some(c), Some(o)) => (number_text(c), number_text(o)),
        _ => (
            time_text(current.this_update),
            time_text(offered.this_update),
        ),
    }
}

fn number_text(n: &[u8]) -> String {
    let dec = openssl::bn::BigNum::from_slice(n)
        .and_then(|b| b.to_dec_str().map(|s| s.to_string()))
        .unwrap_or_else(|_| "?".into());
    format!("CRL number {dec}")
}

fn time_text(t: Option<i64>) -> String {
    match t.and_then(|s| u64::try_from(s).ok()) {
        Some(s) => {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
            format!("thisUpdate {}", humantime::format_rfc3339_seconds(at))
        }
        None => "thisUpdate unreadable".into(),
    }
}

/// Logs why the list offered by `source` was refused and the one in force kept.
pub(crate) fn warn_refused(source: &str, current: &Position, offered: &Position, why: CrlRefusal) {
    let (current, offered) = positions(current, offered);
    let msg = match why {
        CrlRefusal::Older => {
            "refused a CRL older than the one in force (rollback); keeping the newer one"
        }
        CrlRefusal::SamePosition => {
            "refused a CRL at the same position as the one in force but with other content \
             (a CA must not re-use CRL numbers); keeping the one in force"
        }
        CrlRefusal::Expired => {
            "refused an expired CRL in place of a current one; keeping the current one"
        }
    };
    warn!(source, current, offered, "{msg}");
}

#[cfg(test)]
mod tests;
