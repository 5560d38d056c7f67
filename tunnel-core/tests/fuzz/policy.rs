//! Rule compilation and matching: arbitrary rules compile or fail with a key, matching never
//! panics, and the results agree with reference definitions (glob, CIDR, `any`, explain) and
//! with a reference authorizer written here for `any`/`cn`/`o`/`ou` rules.

use super::common::config;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::net::IpAddr;
use tunnel_core::authz::identity::Identity;
use tunnel_core::authz::policy::{glob, Decision, Policy, RawRule};

/// Reference glob: `*` matches any run of characters, by plain recursion (small inputs only).
fn glob_ref(p: &[char], t: &[char]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some(('*', rest)) => (0..=t.len()).any(|i| glob_ref(rest, &t[i..])),
        Some((c, rest)) => t.first() == Some(c) && glob_ref(rest, &t[1..]),
    }
}

fn rule_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "(cn|o|ou|dns|uri|email|group|x| cn |CN|DNS)=[*a-zA-Z0-9.@/:\\- ]{0,16}",
        2 => "ip=([0-9]{1,3}\\.){0,3}[0-9*]{0,3}(/[0-9]{0,3})?",
        1 => "ip=[0-9a-f:*]{0,12}(/[0-9]{0,3})?",
        1 => "sha256=[0-9a-fA-F:*]{0,70}",
        1 => Just("any".to_string()),
        1 => "\\PC{0,20}",
    ]
}

fn raw_rule() -> impl Strategy<Value = RawRule> {
    prop_oneof![
        4 => rule_text().prop_map(RawRule::Text),
        1 => prop::collection::btree_map(
            "(cn|o|ou|dns|uri|email|ip|group|x)",
            "[*a-z0-9./:]{0,10}",
            0..3,
        )
        .prop_map(RawRule::Table),
    ]
}

fn identity() -> impl Strategy<Value = Identity> {
    let vals = || prop::collection::vec("[a-zA-Z0-9.@/:*\\- ]{0,12}|\\PC{0,8}", 0..3);
    (
        vals(),
        vals(),
        vals(),
        vals(),
        vals(),
        vals(),
        prop::collection::vec(any::<IpAddr>(), 0..3),
        "[0-9a-f]{64}",
    )
        .prop_map(|(cn, o, ou, dns, uri, email, ip, sha256)| Identity {
            subject: String::new(),
            cn,
            o,
            ou,
            dns,
            uri,
            email,
            ip,
            sha256,
            serial: "01".into(),
        })
}

type Backends = Vec<(String, Vec<RawRule>)>;

fn backends() -> impl Strategy<Value = Backends> {
    prop::collection::vec(
        ("[a-z]{1,6}", prop::collection::vec(raw_rule(), 0..4)),
        0..4,
    )
}

fn groups() -> impl Strategy<Value = BTreeMap<String, Vec<String>>> {
    prop::collection::btree_map("[a-z]{1,4}", prop::collection::vec(rule_text(), 0..3), 0..3)
}

fn compile(
    groups: &BTreeMap<String, Vec<String>>,
    backends: &Backends,
    default: Option<String>,
) -> Result<Policy, (String, tunnel_core::authz::policy::RuleError)> {
    let rules = backends
        .iter()
        .enumerate()
        .map(|(i, (b, r))| (b.clone(), format!("backend[{i}].allow"), r.clone()))
        .collect();
    Policy::compile(groups, rules, default)
}

fn one(rule: &str) -> Option<Policy> {
    compile(
        &BTreeMap::new(),
        &vec![("b".into(), vec![RawRule::Text(rule.into())])],
        None,
    )
    .ok()
}

proptest! {
    // About one generated policy in seven compiles: room for the rejected ones, so that
    // `compile_and_authorize…` still judges its full count of compiled cases.
    #![proptest_config(proptest::test_runner::Config { max_global_rejects: 1_000_000, ..config(128) })]

    #[test]
    fn glob_agrees_with_the_reference(p in "[ab*]{0,8}", t in "[ab]{0,10}") {
        let pc: Vec<char> = p.chars().collect();
        let tc: Vec<char> = t.chars().collect();
        prop_assert_eq!(glob(&p, &t), glob_ref(&pc, &tc), "pattern {:?} text {:?}", p, t);
    }

    #[test]
    fn glob_of_arbitrary_text_never_panics(p in "\\PC{0,16}", t in "\\PC{0,32}") {
        let _ = glob(&p, &t);
        prop_assert!(glob("*", &t));
        prop_assert!(p.contains('*') || glob(&p, &p));
    }

    #[test]
    fn compile_and_authorize_never_panic_and_agree_with_explain(
        g in groups(),
        b in backends(),
        default in prop::option::of("[a-z]{1,6}"),
        id in identity(),
        sni in prop::option::of("[a-zA-Z]{1,6}|\\PC{0,10}"),
    ) {
        let policy = compile(&g, &b, default);
        prop_assume!(policy.is_ok(), "the generated rules do not compile");
        let policy = policy.unwrap();
        if std::env::var_os("FUZZ_COUNT").is_some() {
            eprintln!("MEANINGFUL compiled");
        }
        let explained = policy.explain(&id);
        match policy.authorize(sni.as_deref(), &id) {
            Decision::Allow { backend, rule } => {
                prop_assert_eq!(policy.target(sni.as_deref()), Some(backend.clone()));
                // The first backend of that name is the one explain reports.
                let first = explained.iter().find(|(n, _)| *n == backend);
                prop_assert_eq!(first.map(|(_, r)| r.clone()), Some(rule));
            }
            Decision::Deny { backend } => {
                prop_assert_eq!(policy.target(sni.as_deref()), Some(backend.clone()));
                prop_assert!(!explained.iter().any(|(n, _)| *n == backend) || b.iter().filter(|(n, _)| *n == backend).count() > 1);
            }
            Decision::Refused { backend, reason } => {
                prop_assert_eq!(policy.target(sni.as_deref()), Some(backend));
                prop_assert_eq!(policy.identity_problem(&id), Some(reason));
            }
            Decision::UnknownBackend { sni: s } => {
                prop_assert_eq!(policy.target(sni.as_deref()), None);
                prop_assert_eq!(s, sni);
            }
        }
    }

    #[test]
    fn compile_errors_name_a_key(g in groups(), b in backends()) {
        if let Err((key, msg)) = compile(&g, &b, None) {
            prop_assert!(key.starts_with("groups.") || key.starts_with("backend["), "key {key:?}: {msg}");
            prop_assert!(!msg.to_string().is_empty());
        }
    }

    #[test]
    fn any_allows_every_identity(id in identity(), sni in "[a-z]{1,6}") {
        let p = compile(&BTreeMap::new(), &vec![(sni.clone(), vec![RawRule::Text("any".into())])], None).unwrap();
        // `any` allows every identity, except one refused outright (several CNs, unless
        // allow_multiple_cn): that refusal comes before any rule.
        match p.authorize(Some(&sni.to_ascii_uppercase()), &id) {
            Decision::Allow { .. } => prop_assert!(id.cn.len() <= 1),
            Decision::Refused { .. } => prop_assert!(id.cn.len() > 1),
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
    }

    #[test]
    fn cidr_agrees_with_the_reference(net in any::<[u8; 4]>(), len in 0u8..=32, ip in any::<[u8; 4]>()) {
        let rule = format!("ip={}/{len}", std::net::Ipv4Addr::from(net));
        let p = one(&rule).expect("a valid CIDR compiles");
        let id = Identity { ip: vec![IpAddr::from(ip)], ..Identity::default() };
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        let want = u32::from_be_bytes(ip) & mask == u32::from_be_bytes(net) & mask;
        let got = matches!(p.authorize(Some("b"), &id), Decision::Allow { .. });
        prop_assert_eq!(got, want, "{} vs {:?}", rule, ip);
    }

    #[test]
    fn a_rule_printed_in_a_decision_compiles_to_the_same_rule(
        kind in "(cn|o|ou|dns|uri|email)",
        value in "[a-zA-Z0-9.@/:\\-]{1,16}",
    ) {
        let rule = format!("{kind}={value}");
        // dns= patterns must be DNS names (RFC 6125); other kinds take any value.
        let Some(p) = one(&rule) else {
            prop_assert_eq!(kind.as_str(), "dns", "{} does not compile", rule);
            return Ok(());
        };
        let mut id = Identity::default();
        let v = value.clone();
        match kind.as_str() {
            "cn" => id.cn.push(v),
            "o" => id.o.push(v),
            "ou" => id.ou.push(v),
            "dns" => id.dns.push(v),
            "uri" => id.uri.push(v),
            _ => id.email.push(v),
        }
        let Decision::Allow { rule: printed, .. } = p.authorize(Some("b"), &id) else {
            return Err(TestCaseError::fail(format!("{rule} does not match its own value")));
        };
        let again = one(&printed).expect("the printed rule compiles");
        let Decision::Allow { rule: printed2, .. } = again.authorize(Some("b"), &id) else {
            return Err(TestCaseError::fail(format!("{printed} (printed from {rule}) no longer matches")));
        };
        prop_assert_eq!(printed, printed2);
    }
}

/// A rule the model understands: `any`, or `cn=`/`o=`/`ou=` with a glob.
fn model_rule() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        1 => Just(("any".to_string(), String::new())),
        4 => ("(cn|o|ou)", "[ab*]{1,3}"),
    ]
}

/// The model's decision: unknown backend, refused (several CNs), allowed or denied.
#[derive(Debug, PartialEq)]
enum Want {
    Unknown,
    Refused,
    Allow,
    Deny,
}

/// The reference authorizer: the SNI (ASCII case ignored) names a backend; an identity with
/// several CNs is refused before any rule; otherwise a rule allows when `any`, or when one
/// of the identity's values of its kind matches its glob.
fn model(backends: &BTreeMap<String, Vec<(String, String)>>, sni: &str, id: &Identity) -> Want {
    let Some(rules) = backends.get(&sni.to_ascii_lowercase()) else {
        return Want::Unknown;
    };
    if id.cn.len() > 1 {
        return Want::Refused;
    }
    let matches = |kind: &str, pat: &str| {
        let values = match kind {
            "cn" => &id.cn,
            "o" => &id.o,
            _ => &id.ou,
        };
        let p: Vec<char> = pat.chars().collect();
        values
            .iter()
            .any(|v| glob_ref(&p, &v.chars().collect::<Vec<_>>()))
    };
    if rules.iter().any(|(k, p)| k == "any" || matches(k, p)) {
        Want::Allow
    } else {
        Want::Deny
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Rules valid by construction, decisions compared with the reference authorizer above.
    #[test]
    fn authorize_agrees_with_the_reference_authorizer(
        backends in prop::collection::btree_map("[a-c]{1,2}", prop::collection::vec(model_rule(), 0..4), 1..4),
        cn in prop::collection::vec("[ab]{0,3}", 0..3),
        o in prop::collection::vec("[ab]{0,3}", 0..3),
        ou in prop::collection::vec("[ab]{0,3}", 0..3),
        sni in "[a-cA-C]{1,2}",
    ) {
        let raw: Backends = backends
            .iter()
            .map(|(name, rules)| {
                let rules = rules
                    .iter()
                    .map(|(k, p)| RawRule::Text(if k == "any" { k.clone() } else { format!("{k}={p}") }))
                    .collect();
                (name.clone(), rules)
            })
            .collect();
        let policy = compile(&BTreeMap::new(), &raw, None)
            .map_err(|e| TestCaseError::fail(format!("valid rules refused: {e:?}")))?;
        let id = Identity { cn, o, ou, ..Identity::default() };
        let got = match policy.authorize(Some(&sni), &id) {
            Decision::UnknownBackend { .. } => Want::Unknown,
            Decision::Refused { .. } => Want::Refused,
            Decision::Allow { .. } => Want::Allow,
            Decision::Deny { .. } => Want::Deny,
        };
        prop_assert_eq!(got, model(&backends, &sni, &id), "{:?} sni {} id {:?}", backends, sni, id);
    }
}
