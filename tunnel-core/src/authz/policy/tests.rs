use super::*;

fn id() -> Identity {
    Identity {
        subject: "CN=alice,OU=dba,O=Example".into(),
        cn: vec!["alice".into()],
        o: vec!["Example".into()],
        ou: vec!["dba".into(), "ops".into()],
        dns: vec!["Alice.Example.org".into()],
        uri: vec!["spiffe://example.org/ns/prod/sa/alice".into()],
        email: vec!["Alice@Example.org".into()],
        ip: vec!["10.1.2.3".parse().unwrap(), "fd00::5".parse().unwrap()],
        sha256: "ab".repeat(32),
        serial: "01".into(),
    }
}

fn text(s: &str) -> RawRule {
    RawRule::Text(s.into())
}

fn policy(groups: &[(&str, &[&str])], allow: Vec<RawRule>) -> Result<Policy, (String, RuleError)> {
    let groups: BTreeMap<String, Vec<String>> = groups
        .iter()
        .map(|(n, m)| (n.to_string(), m.iter().map(|s| s.to_string()).collect()))
        .collect();
    Policy::compile(
        &groups,
        vec![("db".into(), "backend[0].allow".into(), allow)],
        None,
    )
}

#[test]
fn every_rule_kind_allows_and_denies() {
    let sha = "ab".repeat(32);
    let sha_colons = "AB:".repeat(31) + "AB";
    let cases: Vec<(String, bool)> = vec![
        ("any".into(), true),
        ("cn=alice".into(), true),
        ("cn=bob".into(), false),
        ("cn=ali*".into(), true),
        ("cn=Alice".into(), false), // subject attributes are case-sensitive
        ("o=Example".into(), true),
        ("o=Other".into(), false),
        ("ou=ops".into(), true),
        ("ou=web".into(), false),
        ("dns=alice.example.org".into(), true), // DNS is case-insensitive
        ("dns=*.example.org".into(), true),
        ("dns=*.example.com".into(), false),
        ("uri=spiffe://example.org/ns/prod/sa/*".into(), true),
        ("uri=spiffe://example.org/ns/dev/*".into(), false),
        ("email=alice@example.org".into(), true),
        ("email=bob@example.org".into(), false),
        ("ip=10.1.2.3".into(), true),
        ("ip=10.0.0.0/8".into(), true),
        ("ip=192.168.0.0/16".into(), false),
        ("ip=fd00::/8".into(), true),
        ("ip=10.1.2.*".into(), true),
        ("ip=10.9.9.9".into(), false),
        (format!("sha256={sha}"), true),
        (format!("sha256={sha_colons}"), true),
        (format!("sha256={}", "cd".repeat(32)), false),
        ("group=dba".into(), true),
        ("group=web".into(), false),
    ];
    for (rule, want) in cases {
        let p = policy(
            &[("dba", &["cn=carol", "ou=dba"]), ("web", &["ou=web"])],
            vec![text(&rule)],
        )
        .unwrap_or_else(|e| panic!("{rule}: {e:?}"));
        let got = matches!(p.authorize(Some("db"), &id()), Decision::Allow { .. });
        assert_eq!(got, want, "rule {rule}");
    }
}

#[test]
fn table_rules_need_every_attribute() {
    let table = |pairs: &[(&str, &str)]| {
        RawRule::Table(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    let cases = vec![
        (table(&[("ou", "dba"), ("o", "Example")]), true),
        (table(&[("ou", "dba"), ("o", "Other")]), false),
        (
            table(&[("cn", "alice"), ("uri", "spiffe://example.org/*")]),
            true,
        ),
        (table(&[("cn", "alice"), ("group", "web")]), false),
    ];
    for (rule, want) in cases {
        let p = policy(&[("web", &["ou=web"])], vec![rule.clone()]).unwrap();
        let got = matches!(p.authorize(Some("db"), &id()), Decision::Allow { .. });
        assert_eq!(got, want, "rule {rule:?}");
    }
}

#[test]
fn deny_by_default_and_first_matching_rule_reported() {
    let p = policy(&[], vec![text("cn=bob"), text("ou=dba"), text("any")]).unwrap();
    assert_eq!(
        p.authorize(Some("DB"), &id()),
        Decision::Allow {
            backend: "db".into(),
            rule: "ou=dba".into()
        }
    );
    assert_eq!(
        p.authorize(Some("other"), &id()),
        Decision::UnknownBackend {
            sni: Some("other".into())
        }
    );
    assert_eq!(
        p.authorize(None, &id()),
        Decision::UnknownBackend { sni: None }
    );
    let p = policy(&[], vec![text("cn=bob")]).unwrap();
    assert_eq!(
        p.authorize(Some("db"), &id()),
        Decision::Deny {
            backend: "db".into()
        }
    );
    assert!(p.explain(&id()).is_empty());
}

#[test]
fn default_backend_serves_connections_without_sni() {
    let p = Policy::compile(
        &BTreeMap::new(),
        vec![("web".into(), "backend[0].allow".into(), vec![text("any")])],
        Some("web".into()),
    )
    .unwrap();
    assert!(
        matches!(p.authorize(None, &id()), Decision::Allow { backend, .. } if backend == "web")
    );
}

#[test]
fn bad_rules_are_refused_with_their_key() {
    type Groups<'a> = &'a [(&'a str, &'a [&'a str])];
    let cases: Vec<(Vec<RawRule>, Groups, &str, &str)> = vec![
        (
            vec![text("cx=alice")],
            &[],
            "backend[0].allow[0]",
            "unknown attribute",
        ),
        (
            vec![text("alice")],
            &[],
            "backend[0].allow[0]",
            "is not a rule",
        ),
        (
            vec![text("cn=")],
            &[],
            "backend[0].allow[0]",
            "needs a value",
        ),
        (
            vec![text("any"), text("group=nope")],
            &[],
            "backend[0].allow[1]",
            "not defined",
        ),
        (
            vec![text("sha256=abc")],
            &[],
            "backend[0].allow[0]",
            "not a SHA-256",
        ),
        (
            vec![text("ip=10.0.0.0/33")],
            &[],
            "backend[0].allow[0]",
            "prefix length",
        ),
        (
            vec![text("ip=nonsense")],
            &[],
            "backend[0].allow[0]",
            "not an IP",
        ),
        (
            vec![RawRule::Table(BTreeMap::new())],
            &[],
            "backend[0].allow[0]",
            "empty table",
        ),
        (
            vec![text("any")],
            &[("g", &["group=h"])],
            "groups.g[0]",
            "cannot contain",
        ),
        (vec![text("any")], &[("g", &[])], "groups.g", "empty group"),
    ];
    for (rules, groups, key, msg) in cases {
        let e = policy(groups, rules.clone()).expect_err(&format!("{rules:?} should be refused"));
        assert_eq!(e.0, key, "{rules:?}");
        assert!(e.1.to_string().contains(msg), "{rules:?}: {}", e.1);
    }
}

#[test]
fn glob_matches_like_shell_star() {
    let cases = [
        ("*", "", true),
        ("*", "abc", true),
        ("a*c", "abc", true),
        ("a*c", "abcd", false),
        ("*.example.org", "x.y.example.org", true),
        ("a*b*c", "aXbYc", true),
        ("a*b*c", "aXcYb", false),
        ("abc", "abc", true),
        ("abc", "ab", false),
    ];
    for (p, t, want) in cases {
        assert_eq!(glob(p, t), want, "{p} vs {t}");
    }
}

/// Found by the property test `compile_and_authorize_never_panic_and_agree_with_explain`
/// (tests/fuzz/policy.rs): a policy compiled with a `default_backend` that names no backend
/// panicked in `authorize` for a connection without SNI. Config validation refuses such a
/// default, so only the library API reached it; it is now an unknown backend.
#[test]
fn a_default_backend_that_names_no_backend_is_an_unknown_backend() {
    let p = Policy::compile(&BTreeMap::new(), vec![], Some("a".into())).expect("compiles");
    assert_eq!(p.target(None), None);
    assert_eq!(
        p.authorize(None, &Identity::default()),
        Decision::UnknownBackend { sni: None }
    );
}
