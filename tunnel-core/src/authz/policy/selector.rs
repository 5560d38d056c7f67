//! Operator selectors (`sessions --identity`, `disconnect --identity`): the `allow` rule
//! language (`cn=alice`, `ou=contractors`, `email=*@example.com`, `uri=…`, `dns=…`,
//! `sha256=…`, `o=…`, `ip=…`) evaluated by the same [`Matcher`] as authorization, or else a
//! glob over the subject line, CNs, SANs and fingerprint (the older form, kept because
//! scripts use it).

use super::{glob, Attr, Matcher, RuleError};
use crate::authz::identity::Identity;
use std::fmt;

/// Which identities an operator means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySelector {
    /// `kind=pattern` as in an `allow` rule.
    Rule(Matcher),
    /// `*` wildcards over the subject line, any CN, any SAN or the fingerprint.
    Glob(String),
}

impl IdentitySelector {
    /// Parses `s`. A rule kind in lower case before `=` makes it a rule (so a subject-line
    /// glob such as `CN=bob` stays a glob); a lower-case word before `=` that is no rule kind
    /// is refused rather than read as a glob that would silently match nothing.
    pub fn parse(s: &str) -> Result<IdentitySelector, RuleError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(RuleError::EmptySelector);
        }
        let Some((k, v)) = s.split_once('=') else {
            return Ok(IdentitySelector::Glob(s.to_string()));
        };
        let looks_like_kind = k.starts_with(|c: char| c.is_ascii_lowercase())
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !looks_like_kind {
            return Ok(IdentitySelector::Glob(s.to_string()));
        }
        match Attr::parse(k) {
            Some(attr) => Ok(IdentitySelector::Rule(Matcher::new(attr, v)?)),
            None if k == "group" => Err(RuleError::GroupSelector),
            None => Err(RuleError::UnknownSelectorAttribute {
                attr: k.to_string(),
                selector: s.to_string(),
            }),
        }
    }

    /// Whether `id` is one of the identities meant.
    pub fn matches(&self, id: &Identity) -> bool {
        match self {
            IdentitySelector::Rule(m) => m.matches(id),
            IdentitySelector::Glob(p) => glob_matches(p, id),
        }
    }
}

impl fmt::Display for IdentitySelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentitySelector::Rule(m) => write!(f, "{m}"),
            IdentitySelector::Glob(p) => f.write_str(p),
        }
    }
}

/// Whether `pattern` (`*` wildcards) matches the subject line, a CN, a SAN or the SHA-256
/// fingerprint of `id`.
fn glob_matches(pattern: &str, id: &Identity) -> bool {
    let ips: Vec<String> = id.ip.iter().map(|i| i.to_string()).collect();
    std::iter::once(&id.subject)
        .chain(&id.cn)
        .chain(&id.dns)
        .chain(&id.uri)
        .chain(&id.email)
        .chain(&ips)
        .chain(std::iter::once(&id.sha256))
        .any(|v| !v.is_empty() && glob(pattern, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity {
            subject: "CN=alice,OU=contractors,O=Example".into(),
            cn: vec!["alice".into()],
            o: vec!["Example".into()],
            ou: vec!["contractors".into()],
            dns: vec!["alice.example.org".into()],
            uri: vec!["spiffe://example.org/sa/alice".into()],
            email: vec!["Alice@Example.com".into()],
            sha256: "ab".repeat(32),
            ..Identity::default()
        }
    }

    #[test]
    fn selectors_match_like_allow_rules_and_globs() {
        let fp = "AB:".repeat(31) + "AB";
        let cases: &[(&str, bool)] = &[
            ("cn=alice", true),
            ("cn=bob", false),
            ("ou=contractors", true),
            ("ou=staff", false),
            ("o=Example", true),
            ("email=*@example.com", true),
            ("email=*@example.org", false),
            ("uri=spiffe://example.org/*", true),
            ("dns=*.example.org", true),
            ("dns=*.example.net", false),
            (&fp, true),
            // Globs as before: the subject line (upper-case keys), a CN, a SAN.
            ("CN=alice,*", true),
            ("CN=bob*", false),
            ("ali*", true),
            ("*@Example.com", true),
        ];
        for (s, want) in cases {
            let s = if s.starts_with("AB:") {
                format!("sha256={s}")
            } else {
                s.to_string()
            };
            let sel = IdentitySelector::parse(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(sel.matches(&alice()), *want, "{s} ({sel:?})");
        }
    }

    #[test]
    fn typos_and_unusable_selectors_are_refused() {
        for s in ["cm=alice", "group=dba", "sha256=abc", "", "  ", "ou="] {
            assert!(IdentitySelector::parse(s).is_err(), "{s:?} accepted");
        }
    }
}
