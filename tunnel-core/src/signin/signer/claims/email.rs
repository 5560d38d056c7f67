//! Which `email` claims may become a certificate's name. The signer writes the email as the
//! CN and as an rfc822Name SAN, and backends read those (PROXY TLVs, logs) with parsers that
//! split on commas or stop at NUL; a provider that lets users edit their email (or an
//! unverified one, with `require_email_verified = false`) must not get such text into a
//! certificate. So only a plain addr-spec passes: `local@domain`, ASCII, with a dot-atom
//! local part (RFC 5322 `atext` and single inner dots) and a domain of LDH labels.

/// The longest local part (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL: usize = 64;
/// The longest domain name (RFC 1035, in text form without the final dot).
const MAX_DOMAIN: usize = 253;
/// The longest label (RFC 1035).
const MAX_LABEL: usize = 63;

/// Whether `email` is `local@domain` with exactly one `@`, a dot-atom local part and an LDH
/// domain: no whitespace, controls, NUL, commas, angle brackets, double quotes,
/// parentheses, semicolons, colons or backslashes anywhere.
pub(super) fn is_plain_address(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => is_dot_atom(local) && is_ldh_domain(domain),
        None => false,
    }
}

/// RFC 5322 `dot-atom-text`: runs of `atext` joined by single dots.
fn is_dot_atom(local: &str) -> bool {
    local.len() <= MAX_LOCAL
        && local
            .split('.')
            .all(|run| !run.is_empty() && run.bytes().all(is_atext))
}

/// RFC 5322 `atext`: letters, digits and ``!#$%&'*+-/=?^_`{|}~`` (a single quote is in
/// real addresses, `o'brien@...`, and splits nothing).
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// Dot-separated labels of letters, digits and inner hyphens (no final dot, no `@`).
fn is_ldh_domain(domain: &str) -> bool {
    domain.len() <= MAX_DOMAIN
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}
