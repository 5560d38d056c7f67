//! The signer's request body against a model (issue 20 item 14): any bytes are parsed
//! without a panic, and a JSON body is accepted exactly when the model says so, with the
//! lifetime the model computes (never from the code under test).

use super::*;
use proptest::prelude::*;
use serde_json::json;
use std::time::Duration;

const DEFAULT: Duration = Duration::from_secs(8 * 3600);
const MAX: Duration = Duration::from_secs(12 * 3600);

/// A lifetime as the test writes it, and the seconds it means (`None`: must be refused).
fn lifetime_value() -> impl Strategy<Value = (Value, Option<u64>)> {
    let unit = prop_oneof![Just(("s", 1u64)), Just(("m", 60)), Just(("h", 3600))];
    prop_oneof![
        Just((Value::Null, Some(DEFAULT.as_secs()))),
        (1u64..=200_000).prop_map(|n| (json!(n), Some(n))),
        Just((json!(0), None)),
        (-100_000i64..0).prop_map(|n| (json!(n), None)),
        Just((json!(1.5), None)),
        Just((json!(u64::MAX), Some(u64::MAX))),
        (1u64..=500, unit).prop_map(|(n, (u, k))| (json!(format!("{n}{u}")), Some(n * k))),
        Just((json!("0s"), None)),
        Just((json!("500000000000y"), Some(u64::MAX))),
        "[a-z ]{0,8}".prop_map(|s| (json!(format!("x{s}")), None)),
        Just((json!(true), None)),
        Just((json!([1]), None)),
        Just((json!({"h": 1}), None)),
    ]
}

/// A field value of any JSON type, and whether it is a string.
fn any_value() -> impl Strategy<Value = (Value, bool)> {
    prop_oneof![
        "[ -~]{0,12}".prop_map(|s| (json!(s), true)),
        any::<i64>().prop_map(|n| (json!(n), false)),
        Just((Value::Null, false)),
        Just((json!([]), false)),
    ]
}

proptest! {
    #[test]
    fn any_bytes_are_parsed_without_a_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = serde_json::from_slice::<CertificateRequest>(&body);
    }

    #[test]
    fn a_body_is_accepted_exactly_as_the_model_says(
        csr in proptest::option::of(any_value()),
        token in proptest::option::of(any_value()),
        life in proptest::option::of(lifetime_value()),
        extra in proptest::option::of("[a-z_]{1,10}"),
    ) {
        let mut body = serde_json::Map::new();
        if let Some((v, _)) = &csr { body.insert("csr".into(), v.clone()); }
        if let Some((v, _)) = &token { body.insert("id_token".into(), v.clone()); }
        if let Some((v, _)) = &life { body.insert("lifetime".into(), v.clone()); }
        let unknown = extra.as_deref().filter(|k| !["csr", "id_token", "lifetime"].contains(k));
        if let Some(k) = unknown { body.insert(k.to_string(), json!(1)); }
        let bytes = Value::Object(body).to_string().into_bytes();

        let fields_ok = matches!(csr, Some((_, true))) && matches!(token, Some((_, true))) && unknown.is_none();
        let want_secs = match &life { None => Some(DEFAULT.as_secs()), Some((_, s)) => *s };
        let got = serde_json::from_slice::<CertificateRequest>(&bytes)
            .map_err(|e| Refusal::BadRequest(e.to_string()))
            .and_then(|r| lifetime(r.lifetime.as_ref(), DEFAULT, MAX));
        match (fields_ok, want_secs) {
            (true, Some(secs)) => {
                let want = (secs.min(MAX.as_secs()) as i64, secs > MAX.as_secs());
                prop_assert_eq!(got, Ok(want));
            }
            _ => prop_assert!(matches!(got, Err(Refusal::BadRequest(_))), "{:?}", got),
        }
    }
}
