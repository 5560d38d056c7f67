//! The PIN in an RFC 7512 `pkcs11:` key URI (`pin-value`, in the path after `;` or in the
//! query after `?`/`&`). It is a secret, so it is taken out of the URI before the URI goes
//! anywhere: the libp11 engine prints the URI it was given when the key is not found, and
//! messages show the URI. The engine gets the PIN separately (its `PIN` control command).
//!
//! `pin-source` names where the engine reads the PIN (a file), not the PIN itself: it stays.

/// The attribute holding the PIN.
const PIN_VALUE: &str = "pin-value";
/// The scheme every key URI starts with (checked when the configuration is read).
const SCHEME: &str = "pkcs11:";

/// A key URI with its PIN taken out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct KeyUri {
    /// The URI without any `pin-value`: what the engine and messages get.
    pub without_pin: String,
    /// The `pin-value`, percent-decoded.
    pub pin: Option<Vec<u8>>,
}

/// Splits the PIN off `uri`; an error when it holds `pin-value` more than once.
pub(crate) fn split_pin(uri: &str) -> Result<KeyUri, String> {
    let mut pins = Vec::new();
    let without_pin = rewrite(uri, |attr| match value_of_pin(attr) {
        Some(v) => {
            pins.push(percent_encoding::percent_decode_str(v).collect::<Vec<u8>>());
            None
        }
        None => Some(attr.to_string()),
    });
    if pins.len() > 1 {
        return Err(format!(
            "the key URI {} has {} pin-value attributes; give the PIN once",
            redact(uri),
            pins.len()
        ));
    }
    Ok(KeyUri {
        without_pin,
        pin: pins.pop(),
    })
}

/// `uri` with the value of every `pin-value` replaced by `***`, for messages and logs.
pub(crate) fn redact(uri: &str) -> String {
    rewrite(uri, |attr| match value_of_pin(attr) {
        Some(_) => Some(format!(
            "{}=***",
            attr.split('=').next().unwrap_or(PIN_VALUE)
        )),
        None => Some(attr.to_string()),
    })
}

/// The value when `attr` (`name=value`) is a `pin-value` (name compared case-insensitively,
/// so that no spelling of it slips through).
fn value_of_pin(attr: &str) -> Option<&str> {
    let (name, value) = attr.split_once('=')?;
    name.trim().eq_ignore_ascii_case(PIN_VALUE).then_some(value)
}

/// `uri` with each attribute of its path (`;`-separated) and query (`&`-separated, after the
/// first `?`) replaced by what `f` returns (`None` drops it); separators are kept.
fn rewrite(uri: &str, mut f: impl FnMut(&str) -> Option<String>) -> String {
    let (scheme, body) = match uri.get(..SCHEME.len()) {
        Some(s) if s.eq_ignore_ascii_case(SCHEME) => uri.split_at(SCHEME.len()),
        _ => ("", uri),
    };
    let (path, query) = match body.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (body, None),
    };
    let path: Vec<String> = path.split(';').filter_map(&mut f).collect();
    let mut out = format!("{scheme}{}", path.join(";"));
    if let Some(query) = query {
        let query: Vec<String> = query.split('&').filter_map(&mut f).collect();
        if !query.is_empty() {
            out.push('?');
            out.push_str(&query.join("&"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_is_taken_out_wherever_it_is_written() {
        let cases: &[(&str, &str, Option<&[u8]>)] = &[
            ("pkcs11:token=t;object=k", "pkcs11:token=t;object=k", None),
            (
                "pkcs11:token=t;object=k;pin-value=SECRET1234",
                "pkcs11:token=t;object=k",
                Some(b"SECRET1234"),
            ),
            (
                "pkcs11:pin-value=12%2534;token=t",
                "pkcs11:token=t",
                Some(b"12%34"),
            ),
            (
                "pkcs11:token=t?pin-value=a+b",
                "pkcs11:token=t",
                Some(b"a+b"),
            ),
            (
                "pkcs11:token=t?module-name=m&PIN-VALUE=x&pin-source=file:/p",
                "pkcs11:token=t?module-name=m&pin-source=file:/p",
                Some(b"x"),
            ),
        ];
        for (uri, without, pin) in cases {
            let got = split_pin(uri).unwrap();
            assert_eq!(got.without_pin, *without, "{uri}");
            assert_eq!(got.pin.as_deref(), *pin, "{uri}");
        }
        let twice = split_pin("pkcs11:token=t;pin-value=a?pin-value=b").unwrap_err();
        assert!(!twice.contains("=a") && !twice.contains("=b"), "{twice}");
    }

    #[test]
    fn redaction_keeps_the_uri_and_hides_every_pin() {
        let cases = [
            (
                "pkcs11:token=t;object=k;pin-value=1234",
                "pkcs11:token=t;object=k;pin-value=***",
            ),
            (
                "pkcs11:token=t?module-name=m&pin-value=1234",
                "pkcs11:token=t?module-name=m&pin-value=***",
            ),
            ("pkcs11:Pin-Value=1234", "pkcs11:Pin-Value=***"),
            ("pkcs11:token=t", "pkcs11:token=t"),
        ];
        for (uri, want) in cases {
            assert_eq!(redact(uri), want, "{uri}");
        }
    }
}
