//! Table tests of the policy's identity checks: several CNs refused unless allowed, rules
//! that match everything reported for `check`, RFC 6125 `dns=` patterns refused at compile.

use super::*;

fn compile(groups: &[(&str, &[&str])], allow: &[&str]) -> Result<Policy, (String, RuleError)> {
    let groups: BTreeMap<String, Vec<String>> = groups
        .iter()
        .map(|(n, m)| (n.to_string(), m.iter().map(|s| s.to_string()).collect()))
        .collect();
    let rules = allow.iter().map(|r| RawRule::Text(r.to_string())).collect();
    Policy::compile(
        &groups,
        vec![("db".into(), "backend[0].allow".into(), rules)],
        None,
    )
}

fn with_cns(cns: &[&str]) -> Identity {
    Identity {
        cn: cns.iter().map(|s| s.to_string()).collect(),
        o: vec!["Example".into()],
        ..Identity::default()
    }
}

#[test]
fn several_cns_are_refused_unless_allowed() {
    let p = compile(&[], &["cn=alice", "o=Example", "any"]).unwrap();
    // (CNs, allow_multiple_cn, refused)
    let cases: &[(&[&str], bool, bool)] = &[
        (&["alice"], false, false),
        (&[], false, false),
        (&["mallory", "alice"], false, true),
        (&["alice", "alice"], false, true),
        (&["mallory", "alice"], true, false),
    ];
    for (cns, allow, refused) in cases {
        let p = p.clone().allow_multiple_cn(*allow);
        let d = p.authorize(Some("db"), &with_cns(cns));
        match d {
            Decision::Refused { backend, reason } => {
                assert!(*refused, "{cns:?} (allow {allow}) refused: {reason}");
                assert_eq!(backend, "db");
                assert!(reason.contains(&format!("{} subject common names", cns.len())));
                assert!(reason.contains("allow_multiple_cn"), "{reason}");
                assert!(p.explain(&with_cns(cns)).is_empty());
            }
            Decision::Allow { .. } => assert!(!refused, "{cns:?} (allow {allow}) let through"),
            other => panic!("{cns:?}: {other:?}"),
        }
    }
    // Unknown backends stay unknown (no hint that the identity was looked at).
    assert!(matches!(
        p.authorize(Some("nope"), &with_cns(&["a", "b"])),
        Decision::UnknownBackend { .. }
    ));
}

#[test]
fn rules_that_match_everything_are_reported_with_their_key() {
    let p = compile(
        &[("all", &["uri=*", "cn=alice"])],
        &[
            "cn=*",
            "sha256=*",
            "ip=0.0.0.0/0",
            "ip=::/0",
            "ip=*",
            "o=**",
            "cn=a*",
            "ip=10.0.0.0/8",
            "any",
            "group=all",
        ],
    )
    .unwrap();
    let got: Vec<(&str, &str)> = p
        .broad_rules()
        .iter()
        .map(|(k, r)| (k.as_str(), r.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("groups.all[0]", "uri=*"),
            ("backend[0].allow[0]", "cn=*"),
            ("backend[0].allow[1]", "sha256=*"),
            ("backend[0].allow[2]", "ip=0.0.0.0/0"),
            ("backend[0].allow[3]", "ip=::/0"),
            ("backend[0].allow[4]", "ip=*"),
            ("backend[0].allow[5]", "o=**"),
        ]
    );
}

#[test]
fn dns_patterns_follow_rfc_6125_at_compile_time() {
    for ok in [
        "dns=*.example.org",
        "dns=db.example.org",
        "dns=DB.Example.org.",
    ] {
        assert!(compile(&[], &[ok]).is_ok(), "{ok}");
    }
    for bad in [
        "dns=*",
        "dns=a*.example.org",
        "dns=*.*.example.org",
        "dns=.example.org",
    ] {
        let (key, msg) = compile(&[], &[bad]).expect_err(bad);
        assert_eq!(key, "backend[0].allow[0]", "{bad}");
        assert!(msg.to_string().contains("dns="), "{bad}: {msg}");
    }
}
