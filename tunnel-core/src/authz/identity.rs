//! Client identity: the attributes rules match on, extracted from a verified leaf certificate.

pub(crate) mod escape;

use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::x509::{X509NameRef, X509Ref};
use std::fmt;
use std::net::IpAddr;

/// What the gateway knows about a client after verifying its certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Subject in one line, most specific first (`CN=alice,OU=dba,O=Example`).
    pub subject: String,
    /// Subject common names.
    pub cn: Vec<String>,
    /// Subject organizations.
    pub o: Vec<String>,
    /// Subject organizational units.
    pub ou: Vec<String>,
    /// SAN DNS names.
    pub dns: Vec<String>,
    /// SAN URIs (e.g. SPIFFE IDs).
    pub uri: Vec<String>,
    /// SAN emails and subject emailAddress.
    pub email: Vec<String>,
    /// SAN IP addresses.
    pub ip: Vec<IpAddr>,
    /// Lower-case hex SHA-256 of the DER certificate.
    pub sha256: String,
    /// Serial number in upper-case hex.
    pub serial: String,
}

impl Identity {
    /// Extracts the identity of `cert`. The caller must have verified the certificate.
    pub fn from_cert(cert: &X509Ref) -> Identity {
        let name = cert.subject_name();
        let texts = |nid: Nid| -> Vec<String> {
            name.entries_by_nid(nid)
                .map(|e| asn1_text(e.data()))
                .collect()
        };
        let mut id = Identity {
            subject: one_line_name(name),
            cn: texts(Nid::COMMONNAME),
            o: texts(Nid::ORGANIZATIONNAME),
            ou: texts(Nid::ORGANIZATIONALUNITNAME),
            email: texts(Nid::PKCS9_EMAILADDRESS),
            ..Identity::default()
        };
        if let Some(sans) = cert.subject_alt_names() {
            for san in sans.iter() {
                if let Some(d) = san.dnsname() {
                    id.dns.push(d.to_string());
                } else if let Some(u) = san.uri() {
                    id.uri.push(u.to_string());
                } else if let Some(e) = san.email() {
                    id.email.push(e.to_string());
                } else if let Some(ip) = san.ipaddress() {
                    if let Some(ip) = ip_from_bytes(ip) {
                        id.ip.push(ip);
                    }
                }
            }
        }
        id.sha256 = cert
            .digest(MessageDigest::sha256())
            .map(|d| hex(&d))
            .unwrap_or_default();
        id.serial = cert
            .serial_number()
            .to_bn()
            .and_then(|b| b.to_hex_str().map(|s| s.to_string()))
            .unwrap_or_default();
        id
    }

    /// The SANs in one line, `DNS:a, URI:b, email:c, IP:d`, for logs and backends (PROXY TLV
    /// `0xE1`): each value escaped by [`escape::list_item`] (`,` as `\,`, `\` as `\\`,
    /// controls as `\xNN`), so that a name holding `", URI:..."` stays one item.
    pub fn sans(&self) -> String {
        let item = |kind: &str, v: &str| format!("{kind}:{}", escape::list_item(v));
        let mut parts: Vec<String> = Vec::new();
        parts.extend(self.dns.iter().map(|d| item("DNS", d)));
        parts.extend(self.uri.iter().map(|u| item("URI", u)));
        parts.extend(self.email.iter().map(|e| item("email", e)));
        parts.extend(self.ip.iter().map(|i| format!("IP:{i}")));
        parts.join(", ")
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.subject)?;
        let sans = self.sans();
        if !sans.is_empty() {
            write!(f, " [{sans}]")?;
        }
        Ok(())
    }
}

/// `CN=alice,OU=dba,O=Example`: entries in reverse order of the DER encoding, as RFC 4514 does.
pub fn one_line_name(name: &X509NameRef) -> String {
    let mut parts: Vec<String> = name
        .entries()
        .map(|e| {
            let key = e
                .object()
                .nid()
                .short_name()
                .map(str::to_string)
                .unwrap_or_else(|_| e.object().to_string());
            let val = escape_rdn(&asn1_text(e.data()));
            format!("{key}={val}")
        })
        .collect();
    parts.reverse();
    parts.join(",")
}

fn escape_rdn(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    printable(&out)
}

/// `s` with control characters written as `\xNN` and line/paragraph separators, bidi
/// controls and other format characters as `\u{NNNN}` (see [`escape::needs_escape`]), so
/// that a certificate or SNI value can neither forge nor visually reorder log lines, in
/// text or JSON logs. Idempotent: escaping escaped text changes nothing.
pub fn printable(s: &str) -> String {
    if !s.chars().any(escape::needs_escape) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if escape::needs_escape(c) {
            escape::push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// The text of an ASN.1 string (UTF-8 converted; invalid data shown as `?`).
pub fn asn1_text(s: &openssl::asn1::Asn1StringRef) -> String {
    s.to_string().unwrap_or_else(|_| "?".into())
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, CertSpec};

    #[test]
    fn extracts_every_attribute() {
        let ca = pki::new_ca("Test CA", 30).unwrap();
        let spec = CertSpec {
            cn: "alice".into(),
            o: vec!["Example".into()],
            ou: vec!["dba".into(), "ops".into()],
            dns: vec!["alice.example.org".into()],
            uri: vec!["spiffe://example.org/ns/prod/sa/alice".into()],
            email: vec!["alice@example.org".into()],
            ip: vec!["10.1.2.3".parse().unwrap(), "::1".parse().unwrap()],
            ..CertSpec::client("alice")
        };
        let leaf = pki::new_leaf(&ca, &spec).unwrap();
        let id = Identity::from_cert(&leaf.cert);
        let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
            ("cn", id.cn.clone(), vec!["alice"]),
            ("o", id.o.clone(), vec!["Example"]),
            ("ou", id.ou.clone(), vec!["dba", "ops"]),
            ("dns", id.dns.clone(), vec!["alice.example.org"]),
            (
                "uri",
                id.uri.clone(),
                vec!["spiffe://example.org/ns/prod/sa/alice"],
            ),
            ("email", id.email.clone(), vec!["alice@example.org"]),
            (
                "ip",
                id.ip.iter().map(|i| i.to_string()).collect(),
                vec!["10.1.2.3", "::1"],
            ),
        ];
        for (what, got, want) in cases {
            assert_eq!(got, want, "attribute {what}");
        }
        assert_eq!(id.subject, "CN=alice,OU=ops,OU=dba,O=Example");
        let der = leaf.cert.to_der().unwrap();
        let want = openssl::sha::sha256(&der);
        assert_eq!(id.sha256, hex(&want));
        assert_eq!(id.sha256.len(), 64);
        assert!(!id.serial.is_empty());
        assert!(id
            .to_string()
            .contains("URI:spiffe://example.org/ns/prod/sa/alice"));
    }

    /// Older CAs put the address in the subject (emailAddress, PKCS #9) rather than in a
    /// SAN; `email=` rules must see it too, before the SAN ones.
    #[test]
    fn subject_email_address_counts_as_an_email() {
        use openssl::x509::{X509Builder, X509NameBuilder};
        let key = pki::new_key(pki::KeyType::default()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, "bob").unwrap();
        name.append_entry_by_nid(Nid::PKCS9_EMAILADDRESS, "bob@example.org")
            .unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        let san = openssl::x509::extension::SubjectAlternativeName::new()
            .email("bob@mail.example.org")
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(san).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let id = Identity::from_cert(&b.build());
        assert_eq!(id.email, vec!["bob@example.org", "bob@mail.example.org"]);
        assert_eq!(id.cn, vec!["bob"]);
    }

    #[test]
    fn control_characters_cannot_forge_log_lines() {
        let ca = pki::new_ca("Test CA", 30).unwrap();
        let mut spec = CertSpec::client("evil\n2026-01-01 INFO audit: result=ok");
        spec.dns.push("a\rb".into());
        let leaf = pki::new_leaf(&ca, &spec).unwrap();
        let id = Identity::from_cert(&leaf.cert);
        assert_eq!(id.subject, "CN=evil\\x0a2026-01-01 INFO audit: result\\=ok");
        assert_eq!(id.sans(), "DNS:a\\x0db");
        // Matching still sees the raw value.
        assert_eq!(id.cn, vec!["evil\n2026-01-01 INFO audit: result=ok"]);
    }

    #[test]
    fn escapes_special_characters_in_subject() {
        let ca = pki::new_ca("Test CA", 30).unwrap();
        let leaf = pki::new_leaf(&ca, &CertSpec::client("a,b=c")).unwrap();
        let id = Identity::from_cert(&leaf.cert);
        assert_eq!(id.cn, vec!["a,b=c"]);
        assert_eq!(id.subject, "CN=a\\,b\\=c");
    }
}
