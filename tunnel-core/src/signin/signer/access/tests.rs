//! The access checks, refusals first, each followed by its positive control.

use super::*;
use crate::signin::store::requests::{Decision, Grant, Verdict};
use std::time::Duration;

const NOW: i64 = 1_800_000_000;

fn role(require_reason: bool) -> Role {
    Role {
        name: "db-admin".into(),
        grants: vec!["dba".into()],
        requesters: vec!["dev".into()],
        approvers: vec!["leads".into()],
        approvals: 1,
        max_duration: Duration::from_secs(3600),
        require_reason,
    }
}

fn caller(email: &str, ous: &[&str]) -> Caller {
    let key = crate::pki::new_key(crate::pki::KeyType::EcP256).unwrap();
    let public = PKey::public_key_from_der(&key.public_key_to_der().unwrap()).unwrap();
    Caller {
        email: email.into(),
        ous: ous.iter().map(|s| s.to_string()).collect(),
        uris: vec![],
        serial: "0A".into(),
        not_after: NOW + 8 * 3600,
        key_sha256: crate::signin::store::key_sha256(&public).unwrap(),
        key: public,
    }
}

fn request(by: &Caller, state: RequestState) -> AccessRequest {
    AccessRequest {
        id: "abc".into(),
        requester: by.email.clone(),
        role: "db-admin".into(),
        duration: 600,
        reason: "INC-4711".into(),
        key_sha256: by.key_sha256.clone(),
        created_at: NOW,
        state,
        decided_at: None,
        decisions: vec![],
        grant: None,
    }
}

#[test]
fn a_role_the_requester_may_not_ask_for_is_refused() {
    let roles = [role(true)];
    let ops = caller("olga@example.com", &["ops"]);
    let e = check_request(&roles, &ops, "db-admin", 600, "INC-1").unwrap_err();
    assert_eq!(e.code(), "not_a_requester");
    let e = check_request(&roles, &ops, "root", 600, "INC-1").unwrap_err();
    assert_eq!((e.code(), e.status()), ("unknown_role", 404));
    // Control: a dev may; and a role without requesters is open to anyone signed in.
    let bob = caller("bob@example.com", &["dev"]);
    assert!(check_request(&roles, &bob, "db-admin", 600, "INC-1").is_ok());
    let open = [Role {
        requesters: vec![],
        ..role(true)
    }];
    assert!(check_request(&open, &ops, "db-admin", 600, "INC-1").is_ok());
}

#[test]
fn a_duration_above_max_duration_is_refused() {
    let roles = [role(true)];
    let bob = caller("bob@example.com", &["dev"]);
    let e = check_request(&roles, &bob, "db-admin", 3601, "INC-1").unwrap_err();
    assert_eq!((e.code(), e.status()), ("duration_too_long", 400));
    assert!(check_request(&roles, &bob, "db-admin", 3600, "INC-1").is_ok());
}

#[test]
fn a_request_without_a_required_reason_is_refused() {
    let bob = caller("bob@example.com", &["dev"]);
    for blank in ["", "  "] {
        let e = check_request(&[role(true)], &bob, "db-admin", 600, blank).unwrap_err();
        assert_eq!(e.code(), "reason_required");
    }
    assert!(check_request(&[role(false)], &bob, "db-admin", 600, "").is_ok());
}

#[test]
fn self_approval_is_refused_even_for_an_approver() {
    let r = role(true);
    let both = caller("bob@example.com", &["dev", "leads"]);
    let req = request(&both, RequestState::Pending);
    let mut same = both.clone();
    same.email = "BOB@example.com".into();
    assert_eq!(
        check_decision(Some(&r), &same, &req).unwrap_err().code(),
        "self_approval"
    );
    let carol = caller("carol@example.com", &["leads"]);
    assert!(check_decision(Some(&r), &carol, &req).is_ok());
}

#[test]
fn a_decision_by_a_non_approver_is_refused() {
    let r = role(true);
    let bob = caller("bob@example.com", &["dev"]);
    let req = request(&bob, RequestState::Pending);
    let dan = caller("dan@example.com", &["dev", "dba"]);
    assert_eq!(
        check_decision(Some(&r), &dan, &req).unwrap_err().code(),
        "not_an_approver"
    );
    let carol = caller("carol@example.com", &["leads"]);
    assert_eq!(
        check_decision(None, &carol, &req).unwrap_err().code(),
        "not_an_approver"
    );
    assert!(check_decision(Some(&r), &carol, &req).is_ok());
}

#[test]
fn a_decision_on_a_decided_request_is_refused() {
    let r = role(true);
    let bob = caller("bob@example.com", &["dev"]);
    let carol = caller("carol@example.com", &["leads"]);
    for state in [
        RequestState::Approved,
        RequestState::Denied,
        RequestState::Expired,
    ] {
        let e = check_decision(Some(&r), &carol, &request(&bob, state)).unwrap_err();
        assert_eq!((e.code(), e.status()), ("already_decided", 409));
    }
    assert!(check_decision(Some(&r), &carol, &request(&bob, RequestState::Pending)).is_ok());
}

#[test]
fn the_elevated_certificate_is_for_the_approved_requester_key_until_the_earlier_end() {
    let bob = caller("bob@example.com", &["dev"]);
    let mut req = request(&bob, RequestState::Pending);
    assert_eq!(
        check_issue(&bob, &req, NOW).unwrap_err().code(),
        "not_approved"
    );
    req.state = RequestState::Approved;
    req.decisions = vec![Decision {
        approver: "carol@example.com".into(),
        verdict: Verdict::Approve,
        reason: String::new(),
        at: NOW,
    }];
    req.grant = Some(Grant {
        starts_at: NOW,
        ends_at: NOW + 600,
        serial: None,
    });
    let carol = caller("carol@example.com", &["leads"]);
    assert_eq!(
        check_issue(&carol, &req, NOW).unwrap_err().code(),
        "not_your_request"
    );
    let other_key = caller("bob@example.com", &["dev"]);
    assert_eq!(
        check_issue(&other_key, &req, NOW).unwrap_err().code(),
        "key_mismatch"
    );
    assert_eq!(
        check_issue(&bob, &req, NOW + 600).unwrap_err().code(),
        "grant_ended"
    );
    assert_eq!(check_issue(&bob, &req, NOW + 10), Ok(NOW + 600));
    let mut short = bob.clone();
    short.not_after = NOW + 60;
    assert_eq!(
        check_issue(&short, &req, NOW + 10),
        Ok(NOW + 60),
        "never past the sign-in"
    );
}

/// A user CA and a certificate from it (or from another CA), valid until `not_after`.
fn peer(not_after: i64, from_the_user_ca: bool, ca: &crate::pki::Issued) -> PeerCert {
    use crate::pki::{CertSpec, SignedBy};
    let key = crate::pki::new_key(crate::pki::KeyType::EcP256).unwrap();
    let mut spec = CertSpec::client("bob@example.com");
    spec.email = vec!["bob@example.com".into()];
    spec.ou = vec!["dev".into()];
    let other = crate::pki::Issued {
        cert: ca.cert.clone(),
        key: crate::pki::new_key(crate::pki::KeyType::EcP256).unwrap(),
    };
    let by = if from_the_user_ca { ca } else { &other };
    let cert =
        crate::pki::build(&key, &spec, (not_after - 7200, not_after), SignedBy::Ca(by)).unwrap();
    // What OpenSSL's chain check says, as the handshake records it.
    let mut store = openssl::x509::store::X509StoreBuilder::new().unwrap();
    store.add_cert(ca.cert.clone()).unwrap();
    let store = store.build();
    let mut ctx = openssl::x509::X509StoreContext::new().unwrap();
    let chain = openssl::stack::Stack::new().unwrap();
    let verify = ctx
        .init(&store, &cert, &chain, |c| {
            c.verify_cert()?;
            Ok(c.error())
        })
        .unwrap();
    PeerCert { cert, verify }
}

#[test]
fn callers_need_a_current_certificate_from_the_user_ca() {
    let ca = crate::pki::new_ca("Test User CA", 1).unwrap();
    let now = crate::util::time::unix_now();
    assert_eq!(caller_of(None, now).unwrap_err().code(), "no_certificate");
    let expired = peer(now - 60, true, &ca);
    assert_eq!(
        caller_of(Some(&expired), now).unwrap_err().code(),
        "certificate_expired"
    );
    let foreign = peer(now + 3600, false, &ca);
    assert_eq!(
        caller_of(Some(&foreign), now).unwrap_err().code(),
        "certificate_invalid"
    );
    let good = peer(now + 3600, true, &ca);
    let c = caller_of(Some(&good), now).unwrap();
    assert_eq!(
        (c.email.as_str(), c.ous.clone()),
        ("bob@example.com", vec!["dev".to_string()])
    );
}
