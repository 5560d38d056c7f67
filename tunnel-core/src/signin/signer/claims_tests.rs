use super::*;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

fn cfg() -> SignerConfig {
    SignerConfig {
        file: PathBuf::from("signer.toml"),
        listen: "127.0.0.1:0".parse().unwrap(),
        cert: PathBuf::new(),
        key: PathBuf::new(),
        ca_cert: PathBuf::new(),
        ca_key: PathBuf::new(),
        state_dir: PathBuf::new(),
        store: crate::signin::store::Location::default_in(&PathBuf::new()),
        store_password_file: None,
        crl_lifetime: crate::signin::signer::config::DEFAULT_CRL_LIFETIME,
        issuer: "https://idp.example.com".into(),
        issuer_ca: None,
        client_id: "tunnel".into(),
        scopes: vec!["openid".into()],
        allowed_email_domains: vec!["example.com".into()],
        require_email_verified: true,
        require_nonce: true,
        groups_claim: "groups".into(),
        group_map: [
            ("dba".to_string(), "dba".to_string()),
            ("g-123".into(), "web".into()),
        ]
        .into_iter()
        .collect(),
        required_groups: vec!["dba".into(), "dev".into()],
        default_lifetime: Duration::from_secs(3600),
        max_lifetime: Duration::from_secs(7200),
        clock_skew: Duration::from_secs(60),
        max_token_age: Duration::from_secs(600),
        gateway: "gw:8443".into(),
        gateway_server_name: None,
        gateway_ca: None,
        log_format: Default::default(),
        log_level: None,
        roles: vec![],
        role_warnings: vec![],
        notify_url: None,
    }
}

const NOW: i64 = 1_000_000;

fn good() -> Value {
    json!({"iss":"https://idp.example.com","aud":"tunnel","exp":NOW+300,"iat":NOW-10,
           "nonce":"N","sub":"u1","email":"Alice@Example.COM","email_verified":true,
           "groups":["dba","g-123","other","dba"]})
}

#[test]
fn accepts_a_good_token_and_maps_groups() {
    let p = check(&cfg(), &good(), "N", NOW).unwrap();
    assert_eq!(p.email, "Alice@Example.COM");
    assert_eq!(p.ous, vec!["dba".to_string(), "web".to_string()]);
    assert_eq!((p.sub.as_str(), p.exp), ("u1", NOW + 300));
}

#[test]
fn refuses_each_bad_claim() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("iss", json!("https://evil"), "wrong_issuer"),
        ("aud", json!("other"), "wrong_audience"),
        ("aud", json!(["other", "x"]), "wrong_audience"),
        ("azp", json!("other"), "wrong_audience"),
        ("exp", json!(NOW - 61), "token_expired"),
        ("exp", Value::Null, "token_time"),
        ("iat", json!(NOW + 120), "token_time"),
        ("iat", json!(NOW - 700), "token_time"),
        ("nbf", json!(NOW + 120), "token_time"),
        ("nonce", json!("M"), "nonce_mismatch"),
        ("nonce", Value::Null, "nonce_mismatch"),
        ("email", Value::Null, "no_email"),
        ("email_verified", json!(false), "email_unverified"),
        ("email_verified", Value::Null, "email_unverified"),
        ("email", json!("alice@example.org"), "email_domain"),
        ("email", json!("alice@sub.example.com"), "email_domain"),
        ("email", json!("@example.com"), "bad_email"),
        ("groups", json!(["other"]), "missing_group"),
        ("groups", Value::Null, "missing_group"),
    ];
    for (key, value, code) in cases {
        let mut c = good();
        c[key] = value.clone();
        let err = check(&cfg(), &c, "N", NOW).unwrap_err();
        assert_eq!(err.code(), code, "{key} = {value}");
    }
}

#[test]
fn several_audiences_need_azp_and_leeway_applies() {
    let mut c = good();
    c["aud"] = json!(["tunnel", "other"]);
    assert_eq!(
        check(&cfg(), &c, "N", NOW).unwrap_err().code(),
        "wrong_audience"
    );
    c["azp"] = json!("tunnel");
    assert!(check(&cfg(), &c, "N", NOW).is_ok());
    let mut c = good();
    c["exp"] = json!(NOW - 30);
    assert!(check(&cfg(), &c, "N", NOW).is_ok(), "within the clock skew");
    let mut cf = cfg();
    cf.require_email_verified = false;
    cf.required_groups.clear();
    let mut c = good();
    c["email_verified"] = json!(false);
    c["groups"] = json!("solo");
    let p = check(&cf, &c, "N", NOW).unwrap();
    assert_eq!((p.groups, p.ous), (vec!["solo".to_string()], vec![]));
}

#[test]
fn a_missing_nonce_passes_only_when_not_required() {
    let mut cf = cfg();
    cf.require_nonce = false;
    let mut c = good();
    c.as_object_mut().unwrap().remove("nonce");
    assert!(!check(&cf, &c, "N", NOW).unwrap().key_bound);
    assert!(check(&cf, &good(), "N", NOW).unwrap().key_bound);
    c["nonce"] = json!("M");
    assert_eq!(
        check(&cf, &c, "N", NOW).unwrap_err().code(),
        "nonce_mismatch"
    );
}

/// Token times at the ends of i64: the arithmetic must neither panic (debug) nor wrap into
/// acceptance (release: `now - i64::MIN` wraps to a negative age). Expectations by hand.
#[test]
fn extreme_token_times_are_refused_not_overflowed() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("exp", json!(i64::MAX), "token_time"),
        ("exp", json!(i64::MAX - 59), "token_time"),
        ("exp", json!(i64::MIN), "token_expired"),
        ("iat", json!(i64::MIN), "token_time"),
        ("iat", json!(i64::MIN + 1), "token_time"),
        ("iat", json!(i64::MAX), "token_time"),
        ("nbf", json!(i64::MAX), "token_time"),
        ("exp", json!(u64::MAX), "token_time"),
        ("iat", json!(1e300), "token_time"),
    ];
    for (key, value, code) in cases {
        let mut c = good();
        c[key] = value.clone();
        let got = std::panic::catch_unwind(|| check(&cfg(), &c, "N", NOW).map_err(|e| e.code()));
        assert_eq!(got.ok(), Some(Err(code)), "{key} = {value}");
    }
    // Still accepted: a far but representable exp, and an nbf at the far past.
    for (key, value) in [("exp", json!(i64::MAX - 60)), ("nbf", json!(i64::MIN))] {
        let mut c = good();
        c[key] = value.clone();
        assert!(check(&cfg(), &c, "N", NOW).is_ok(), "{key} = {value}");
    }
}

/// Only a plain `local@domain` may become a certificate's CN and SAN: anything a backend
/// could split (commas, NUL for C strings) or misread is refused as `bad_email`.
#[test]
fn refuses_emails_that_are_not_plain_addresses() {
    let bad = [
        "x, URI:https://idp#admin, email:ceo@example.com@example.com",
        "victim@corp.com\u{0}@example.com",
        "a,b@example.com",
        "a b@example.com",
        "a\tb@example.com",
        "a\nb@example.com",
        "<a>@example.com",
        "\"a\"@example.com",
        "a(b)@example.com",
        "a;b@example.com",
        "a\\b@example.com",
        "a@b@example.com",
        "@example.com",
        "alice@",
        "alice@example.com.",
        "alice@.example.com",
        "alice@exa_mple.com",
        "alice@-example.com",
        "alice@example..com",
        ".alice@example.com",
        "al..ice@example.com",
        "alice\u{202e}@example.com",
        "alice:x@example.com",
    ];
    for email in bad {
        let mut c = good();
        c["email"] = json!(email);
        let got = check(&cfg(), &c, "N", NOW).map_err(|e| e.code());
        assert_eq!(got.err(), Some("bad_email"), "{email:?}");
    }
    for email in [
        "alice@example.com",
        "Alice.B+tag@EXAMPLE.com",
        "o'brien@example.com",
        "a_b-c=d@example.com",
    ] {
        let mut c = good();
        c["email"] = json!(email);
        assert!(check(&cfg(), &c, "N", NOW).is_ok(), "{email:?}");
    }
}
