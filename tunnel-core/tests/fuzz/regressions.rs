//! Inputs the property tests found, kept as plain tests so they run every time. A finding in
//! pure logic gets its test beside the code instead; those are listed here:
//!
//! - `policy::tests::a_default_backend_that_names_no_backend_is_an_unknown_backend`
//!   (from `policy::compile_and_authorize_never_panic_and_agree_with_explain`).

use std::collections::BTreeMap;
use tunnel_core::authz::identity::Identity;
use tunnel_core::authz::policy::{Decision, Policy};

/// The public-API form of the policy finding: whatever `default_backend` a caller passes,
/// a connection without SNI gets a decision, never a panic.
#[test]
fn authorize_without_sni_is_total() {
    for default in [None, Some("a"), Some("b"), Some("")] {
        let rules = vec![("b".to_string(), "backend[0].allow".to_string(), vec![])];
        let p = Policy::compile(&BTreeMap::new(), rules, default.map(str::to_string))
            .expect("compiles");
        let d = p.authorize(None, &Identity::default());
        let want = if default == Some("b") {
            Decision::Deny {
                backend: "b".into(),
            }
        } else {
            Decision::UnknownBackend { sni: None }
        };
        assert_eq!(d, want, "default {default:?}");
    }
}
