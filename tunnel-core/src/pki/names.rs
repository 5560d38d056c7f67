//! Validation of what an operator types into `tunnel-server pki`: names that become file
//! names in the CA directory, subject attributes, SAN values, serial numbers and days.

use super::PkiError;
use std::net::IpAddr;

/// Longest subject attribute (RFC 5280 upper bound for CN, O and OU).
const MAX_ATTR_CHARS: usize = 64;
/// Longest SAN value we accept.
const MAX_SAN_CHARS: usize = 253;
/// Most days a certificate, CA or CRL may be valid (100 years).
pub(super) const MAX_DAYS: u32 = 36_500;
/// File stems that belong to the CA directory itself.
const RESERVED_STEMS: &[&str] = &["ca", "crl", "index"];

/// Checks that `name` (given with `flag`) can be used as the stem of `NAME.crt`/`NAME.key`
/// inside the CA directory: letters, digits and `. - _ @ + :` only, not starting with `.`
/// or `-`, no `..`, and not a name the directory uses for itself.
pub(crate) fn check_file_stem(flag: &str, name: &str) -> Result<(), PkiError> {
    let fix = "use letters, digits and . - _ @ + : only (for other subject names, issue under a \
               simple name and put the rest in --o/--ou/--uri/--email)";
    if name.is_empty() {
        return Err(PkiError::usage(format!("{flag}: the name is empty")));
    }
    if name.len() > 200 {
        return Err(PkiError::usage(format!(
            "{flag} {name:?}: too long for a file name (at most 200 characters)"
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@' | '+' | ':')))
    {
        return Err(PkiError::usage(format!(
            "{flag} {name:?}: {bad:?} is not allowed in a name that becomes a file name; {fix}"
        )));
    }
    if name.starts_with('.') || name.starts_with('-') || name.contains("..") {
        return Err(PkiError::usage(format!(
            "{flag} {name:?}: a name must not start with '.' or '-' nor contain \"..\"; {fix}"
        )));
    }
    if RESERVED_STEMS.contains(&name) {
        return Err(PkiError::usage(format!(
            "{flag} {name:?}: this name is reserved for the CA directory's own files \
             (ca.crt, ca.key, crl.pem, index.json); choose another"
        )));
    }
    Ok(())
}

/// Checks a subject attribute (CN, O, OU, the CA's name): non-empty, at most 64 characters,
/// no control characters.
pub(crate) fn check_attr(flag: &str, value: &str) -> Result<(), PkiError> {
    if value.trim().is_empty() {
        return Err(PkiError::usage(format!("{flag}: the value is empty")));
    }
    if value.chars().count() > MAX_ATTR_CHARS {
        return Err(PkiError::usage(format!(
            "{flag} {value:?}: at most {MAX_ATTR_CHARS} characters are allowed in a subject attribute"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(PkiError::usage(format!(
            "{flag} {value:?}: control characters are not allowed"
        )));
    }
    Ok(())
}

/// Checks a SAN value (DNS name, URI, email): non-empty, no whitespace, commas or control
/// characters.
pub(crate) fn check_san(flag: &str, value: &str) -> Result<(), PkiError> {
    if value.is_empty() {
        return Err(PkiError::usage(format!("{flag}: the value is empty")));
    }
    if value.len() > MAX_SAN_CHARS {
        return Err(PkiError::usage(format!(
            "{flag} {value:?}: at most {MAX_SAN_CHARS} characters"
        )));
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ',')
    {
        return Err(PkiError::usage(format!(
            "{flag} {value:?}: whitespace, commas and control characters are not allowed; give \
             one value per {flag}"
        )));
    }
    Ok(())
}

/// Parses an IP address SAN.
pub(crate) fn parse_ip(flag: &str, value: &str) -> Result<IpAddr, PkiError> {
    value.parse().map_err(|_| {
        PkiError::usage(format!(
            "{flag} {value:?}: not an IP address (e.g. 10.0.0.5 or fd00::5)"
        ))
    })
}

/// Checks a number of days of validity.
pub(crate) fn check_days(flag: &str, days: u32) -> Result<(), PkiError> {
    if days == 0 || days > MAX_DAYS {
        return Err(PkiError::usage(format!(
            "{flag} {days}: give a number of days from 1 to {MAX_DAYS}"
        )));
    }
    Ok(())
}

/// The canonical form of a serial number typed by an operator: upper-case hex as OpenSSL
/// prints it (`openssl x509 -serial`), accepting lower case, a `0x` prefix and the `:`
/// separators of `openssl x509 -text`.
pub fn normalize_serial(input: &str) -> Result<String, PkiError> {
    let trimmed = input.trim();
    let hex: String = trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
        .unwrap_or(trimmed)
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(PkiError::usage(format!(
            "--serial {input:?}: not a hexadecimal serial number (as shown by `tunnel-server pki \
             list` or `openssl x509 -noout -serial`)"
        )));
    }
    let bn = openssl::bn::BigNum::from_hex_str(&hex)
        .map_err(PkiError::crypto(format!("parsing serial {input:?}")))?;
    serial_of_bn(&bn)
}

/// The canonical hex form of a certificate's serial number.
pub(crate) fn serial_of(cert: &openssl::x509::X509Ref) -> Result<String, PkiError> {
    let bn = cert
        .serial_number()
        .to_bn()
        .map_err(PkiError::crypto("reading a serial number"))?;
    serial_of_bn(&bn)
}

fn serial_of_bn(bn: &openssl::bn::BigNumRef) -> Result<String, PkiError> {
    Ok(bn
        .to_hex_str()
        .map_err(PkiError::crypto("formatting a serial number"))?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_stems() {
        for ok in [
            "alice",
            "gw.example.com",
            "10.0.0.1",
            "::1",
            "bob@example.org",
            "svc_1+x",
            "a.b-c",
        ] {
            assert!(check_file_stem("--client", ok).is_ok(), "{ok:?} refused");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/etc/passwd",
            "a..b",
            ".hidden",
            "-rf",
            "ca",
            "crl",
            "index",
            "a b",
            "x\n",
            "x\0",
            "a\\b",
            "*.example.com",
            "é",
        ] {
            let e = check_file_stem("--client", bad).unwrap_err();
            assert!(matches!(e, PkiError::Usage(_)), "{bad:?}: {e}");
            assert_eq!(e.exit_code(), 64);
            assert!(e.to_string().starts_with("--client"), "{e}");
        }
        assert!(check_file_stem("--server", &"a".repeat(201)).is_err());
    }

    #[test]
    fn attributes_and_sans() {
        assert!(check_attr("--o", "Example, Inc.").is_ok());
        assert!(check_attr("--o", "").is_err());
        assert!(check_attr("--o", " ").is_err());
        assert!(check_attr("--ou", "a\tb").is_err());
        assert!(check_attr("--name", &"x".repeat(65)).is_err());
        assert!(check_attr("--name", &"x".repeat(64)).is_ok());
        assert!(check_san("--dns", "*.example.com").is_ok());
        assert!(check_san("--uri", "spiffe://example.org/ns/a").is_ok());
        assert!(check_san("--dns", "a,b").is_err());
        assert!(check_san("--dns", "a b").is_err());
        assert!(check_san("--email", "").is_err());
        assert!(parse_ip("--ip", "fd00::5").is_ok());
        assert!(parse_ip("--ip", "10.0.0").is_err());
        assert!(check_days("--days", 0).is_err());
        assert!(check_days("--days", MAX_DAYS + 1).is_err());
        assert!(check_days("--days", 1).is_ok());
    }

    #[test]
    fn serials() {
        let cases = [
            ("0a1b", "0A1B"),
            ("A1B", "0A1B"),
            ("0x0A:1B", "0A1B"),
            (" 7f:FF ", "7FFF"),
            ("000001", "01"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_serial(input).unwrap(), want, "{input:?}");
        }
        for bad in ["", "0x", "xyz", "-1", "12 34", "1g"] {
            assert!(
                matches!(normalize_serial(bad), Err(PkiError::Usage(_))),
                "{bad:?}"
            );
        }
    }
}
