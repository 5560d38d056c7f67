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
        ("email", json!("@example.com"), "email_domain"),
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
