//! `dns=` patterns as RFC 6125 (section 6.4.3) matches names: a pattern is a DNS name, or
//! `*.` followed by one, where `*` stands for exactly one whole, non-empty left-most label.
//! `*.example.org` matches `a.example.org`, but neither `a.b.example.org` nor
//! `example.org` nor `.example.org`. Comparison ignores ASCII case and one trailing dot.

/// Checks a (lower-cased) `dns=` pattern; the error says what to write instead.
pub(super) fn check_pattern(p: &str) -> Result<(), super::RuleError> {
    let rest = p.strip_prefix("*.").unwrap_or(p);
    if rest.contains('*') || rest.is_empty() {
        return Err(super::RuleError::DnsWildcard(p.to_string()));
    }
    if labels_ok(rest.strip_suffix('.').unwrap_or(rest)) {
        Ok(())
    } else {
        Err(super::RuleError::DnsEmptyLabel(p.to_string()))
    }
}

/// Whether the SAN DNS name `name` matches the checked, lower-cased pattern `p`.
pub(super) fn matches(p: &str, name: &str) -> bool {
    let p = p.strip_suffix('.').unwrap_or(p);
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    // A presented name is matched only when it is a plain name (no wildcard of its own).
    if name.contains('*') || !labels_ok(&name) {
        return false;
    }
    match p.strip_prefix("*.") {
        Some(rest) => name
            .split_once('.')
            .is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
        None => name == p,
    }
}

fn labels_ok(name: &str) -> bool {
    !name.is_empty() && name.split('.').all(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_exactly_one_label() {
        let cases: &[(&str, &str, bool)] = &[
            ("*.example.org", "a.example.org", true),
            ("*.example.org", "A.Example.ORG", true),
            ("*.example.org", "a.example.org.", true),
            ("*.example.org", "xn--bcher-kva.example.org", true),
            ("*.example.org", "a.b.example.org", false),
            ("*.example.org", "example.org", false),
            ("*.example.org", ".example.org", false),
            ("*.example.org", "aexample.org", false),
            ("*.example.org", "a.example.org.evil.com", false),
            ("*.example.org", "a.example.com", false),
            ("*.example.org", "*.example.org", false),
            ("*.example.org", "a..example.org", false),
            ("*.example.org", "", false),
            ("example.org", "example.org", true),
            ("example.org", "EXAMPLE.org.", true),
            ("example.org", "a.example.org", false),
            ("db.example.org", "db.example.org", true),
            ("db.example.org", "db.example.org.evil", false),
            ("example.org.", "example.org", true),
        ];
        for (p, name, want) in cases {
            assert!(check_pattern(p).is_ok(), "{p} should be a valid pattern");
            assert_eq!(matches(p, name), *want, "dns={p} against {name:?}");
        }
    }

    #[test]
    fn wildcards_elsewhere_and_empty_labels_are_refused() {
        for p in [
            "*",
            "*.",
            "**.example.org",
            "a*.example.org",
            "*a.example.org",
            "a.*.example.org",
            "*.*.example.org",
            "example.*",
            ".example.org",
            "example..org",
            "*..example.org",
        ] {
            let e = check_pattern(p).expect_err(p);
            assert!(e.to_string().contains("dns="), "{p}: {e}");
        }
    }
}
