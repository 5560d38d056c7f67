//! The admin socket's request parsing: arbitrary JSON and mutated valid requests never panic
//! (neither parsing nor the gateway's handler), and `block_for_secs` agrees with the
//! documented maximum of 366 days: above it the request is refused naming the maximum,
//! within it the request carries exactly the seconds sent.

use super::common::{config, edits, mutate};
use proptest::prelude::*;
use serde_json::Value;
use std::time::Duration;
use tunnel_core::admin::gateway::GatewayAdmin;
use tunnel_core::admin::protocol::{parse_request, request_line, Request};
use tunnel_core::admin::{Handler, Peer, Sessions};

/// The documented maximum (README "Live sessions"), written out here rather than taken from
/// the code under test.
const MAX_SECS: u64 = 366 * 86_400;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "(v|cmd|id|identity|backend|serial|reason|block_for_secs|sessions|disconnect|status|\\PC{0,8})"
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                "(v|cmd|id|identity|backend|serial|reason|block_for_secs|x)",
                inner,
                0..7
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Valid request lines of every command.
fn valid_lines() -> Vec<String> {
    [
        r#"{"v":1,"cmd":"sessions","backend":"db","identity":"alice*"}"#,
        r#"{"v":1,"cmd":"disconnect","id":7,"reason":"left","block_for_secs":600}"#,
        r#"{"v":1,"cmd":"disconnect","identity":"bob","block_for_secs":31622400}"#,
        r#"{"v":1,"cmd":"disconnect","serial":"0a:1b"}"#,
        r#"{"v":1,"cmd":"status"}"#,
    ]
    .map(String::from)
    .to_vec()
}

/// Parses `line` and, when it is a request, has a gateway with no tunnels answer it.
fn parse_and_handle(line: &str) {
    if let Ok(req) = parse_request(line) {
        let gw = GatewayAdmin {
            sessions: Sessions::default(),
        };
        let peer = Peer {
            uid: 0,
            gid: 0,
            pid: None,
        };
        let _ = gw.handle(req, &peer);
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn arbitrary_json_never_panics(v in json_value()) {
        parse_and_handle(&v.to_string());
        // The same with the version a real request carries.
        if let Value::Object(mut m) = v {
            m.insert("v".into(), 1.into());
            parse_and_handle(&Value::Object(m).to_string());
        }
    }

    #[test]
    fn mutated_requests_never_panic(i in 0usize..5, e in edits(6)) {
        let lines = valid_lines();
        let bytes = mutate(lines[i % lines.len()].as_bytes(), &e);
        parse_and_handle(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn block_for_secs_is_refused_above_the_maximum_and_kept_exactly_within(
        secs in prop_oneof![
            2 => 0..=MAX_SECS,
            1 => MAX_SECS - 3..=MAX_SECS + 3,
            2 => MAX_SECS + 1..=u64::MAX,
            1 => Just(u64::MAX),
        ],
        by_identity in any::<bool>(),
    ) {
        let select = if by_identity { r#""identity":"x*""# } else { r#""id":3"# };
        let line = format!(r#"{{"v":1,"cmd":"disconnect",{select},"block_for_secs":{secs}}}"#);
        match parse_request(&line) {
            Ok(Request::Disconnect { block_for_secs: Some(b), .. }) => {
                prop_assert!(secs <= MAX_SECS, "{secs} s accepted");
                prop_assert_eq!(u64::from(b), secs);
                prop_assert_eq!(b.duration(), Duration::from_secs(secs));
                // And it survives the trip the CLI makes.
                let req = parse_request(&line).unwrap();
                prop_assert_eq!(parse_request(&request_line(&req)), Ok(req));
            }
            Ok(other) => prop_assert!(false, "{line} parsed as {other:?}"),
            Err(e) => {
                prop_assert!(secs > MAX_SECS, "{secs} s refused: {e}");
                prop_assert!(e.contains("block_for_secs") && e.contains("366 days"), "{e}");
            }
        }
    }
}
