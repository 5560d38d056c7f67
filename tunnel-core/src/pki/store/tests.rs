//! Unit tests of the CA directory: issue, revoke, CRL, list, locking, refusals.

use super::*;
use crate::pki::CertSpec;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{CrlStatus, X509Crl, X509StoreContext};
use std::os::unix::fs::PermissionsExt;

fn new_store() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::new(tmp.path().join("pki"));
    store.init(DEFAULT_CA_NAME, 30, KeyType::EcP256).unwrap();
    (tmp, store)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn cert(p: &Path) -> X509 {
    X509::from_pem(&std::fs::read(p).unwrap()).unwrap()
}

fn crl(store: &Store) -> X509Crl {
    X509Crl::from_pem(&std::fs::read(store.dir().join(CRL_FILE)).unwrap()).unwrap()
}

fn verifies(ca: &X509, leaf: &X509) -> bool {
    let mut sb = X509StoreBuilder::new().unwrap();
    sb.add_cert(ca.clone()).unwrap();
    let store = sb.build();
    let chain = openssl::stack::Stack::new().unwrap();
    let mut ctx = X509StoreContext::new().unwrap();
    ctx.init(&store, leaf, &chain, |c| c.verify_cert()).unwrap()
}

#[test]
fn init_writes_a_private_ca_and_refuses_to_overwrite_it() {
    let (_tmp, store) = new_store();
    let dir = store.dir();
    assert_eq!(mode(dir), 0o700);
    assert_eq!(mode(&dir.join(CA_KEY)), 0o600);
    assert_eq!(mode(&dir.join(CA_CERT)), 0o644);
    let ca_before = std::fs::read(dir.join(CA_KEY)).unwrap();
    let e = store.init("Other", 30, KeyType::EcP256).unwrap_err();
    assert_eq!(e.exit_code(), crate::EXIT_IOERR);
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(std::fs::read(dir.join(CA_KEY)).unwrap(), ca_before);
}

#[test]
fn issue_server_and_client_with_sans_and_ekus() {
    let (_tmp, store) = new_store();
    let ca = cert(&store.dir().join(CA_CERT));
    let mut req = IssueRequest::new(LeafKind::Server, "gw.example.com");
    req.dns = vec!["gw.example.com".into(), "alt.example.com".into()];
    req.ip = vec!["127.0.0.1".into()];
    let gw = store.issue(&req).unwrap();
    assert_eq!(mode(&gw.key), 0o600);
    let c = cert(&gw.cert);
    assert!(verifies(&ca, &c));
    let id = crate::authz::identity::Identity::from_cert(&c);
    assert_eq!(id.dns, vec!["gw.example.com", "alt.example.com"]);
    assert_eq!(id.ip.len(), 1);

    let ip = store
        .issue(&IssueRequest::new(LeafKind::Server, "10.1.2.3"))
        .unwrap();
    let id = crate::authz::identity::Identity::from_cert(&cert(&ip.cert));
    assert!(id.dns.is_empty());
    assert_eq!(id.ip.len(), 1);

    let mut req = IssueRequest::new(LeafKind::Client, "alice");
    req.ou = vec!["dba".into()];
    req.o = vec!["Example".into()];
    req.uri = vec!["spiffe://example.org/alice".into()];
    req.email = vec!["alice@example.org".into()];
    req.key_type = KeyType::Ed25519;
    let alice = store.issue(&req).unwrap();
    let c = cert(&alice.cert);
    assert!(verifies(&ca, &c));
    let id = crate::authz::identity::Identity::from_cert(&c);
    assert_eq!(id.cn, vec!["alice"]);
    assert_eq!(id.ou, vec!["dba"]);
    assert_eq!(id.uri, vec!["spiffe://example.org/alice"]);
    let text = String::from_utf8(c.to_text().unwrap()).unwrap();
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(!text.contains("TLS Web Server Authentication"), "{text}");

    // A second certificate under the same name is refused and leaves the first alone.
    let e = store
        .issue(&IssueRequest::new(LeafKind::Client, "alice"))
        .unwrap_err();
    assert!(e.to_string().contains("alice.crt: already exists"), "{e}");
    assert_eq!(
        cert(&alice.cert).serial_number().to_bn().unwrap(),
        c.serial_number().to_bn().unwrap()
    );
}

#[test]
fn unsafe_names_and_bad_values_are_usage_errors() {
    let (_tmp, store) = new_store();
    let bad = [
        (LeafKind::Client, "../evil"),
        (LeafKind::Client, "a/b"),
        (LeafKind::Server, ".."),
        (LeafKind::Client, "ca"),
        (LeafKind::Client, ""),
    ];
    for (kind, name) in bad {
        let e = store.issue(&IssueRequest::new(kind, name)).unwrap_err();
        assert_eq!(e.exit_code(), 64, "{name:?}: {e}");
    }
    let mut req = IssueRequest::new(LeafKind::Server, "gw");
    req.ip = vec!["not-an-ip".into()];
    assert_eq!(store.issue(&req).unwrap_err().exit_code(), 64);
    let mut req = IssueRequest::new(LeafKind::Client, "bob");
    req.days = 0;
    assert_eq!(store.issue(&req).unwrap_err().exit_code(), 64);
    // Nothing was written outside or inside the directory.
    let parent = store.dir().parent().unwrap();
    assert!(!parent.join("evil.crt").exists());
    assert!(Index::load(store.dir()).unwrap().certs.is_empty());
}

#[test]
fn commands_without_a_ca_say_how_to_make_one() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::new(tmp.path());
    let e = store
        .issue(&IssueRequest::new(LeafKind::Client, "alice"))
        .unwrap_err();
    assert_eq!(e.exit_code(), crate::EXIT_IOERR);
    assert!(e.to_string().contains("pki init"), "{e}");
    assert!(store.list().is_err());
    assert!(store.write_crl(7).is_err());
}

#[test]
fn revoke_by_serial_and_by_cert_file_rewrites_the_crl() {
    let (_tmp, store) = new_store();
    let a = store
        .issue(&IssueRequest::new(LeafKind::Client, "a"))
        .unwrap();
    let b = store
        .issue(&IssueRequest::new(LeafKind::Client, "b"))
        .unwrap();
    let c = store
        .issue(&IssueRequest::new(LeafKind::Client, "c"))
        .unwrap();
    // By serial, typed in lower case with colons as `openssl x509 -text` shows it.
    let colons: Vec<String> = a
        .serial
        .to_lowercase()
        .as_bytes()
        .chunks(2)
        .map(|p| String::from_utf8(p.to_vec()).unwrap())
        .collect();
    let r = store
        .revoke(&RevokeTarget::Serial(colons.join(":")), 7)
        .unwrap();
    assert_eq!(r.serial, a.serial);
    assert_eq!(r.already, None);
    assert_eq!(r.crl.revoked, 1);
    let r = store
        .revoke(&RevokeTarget::Cert(b.cert.clone()), 7)
        .unwrap();
    assert_eq!(r.serial, b.serial);
    assert_eq!(r.crl.revoked, 2);
    // Repeating is harmless.
    let r = store
        .revoke(&RevokeTarget::Cert(b.cert.clone()), 7)
        .unwrap();
    assert!(r.already.is_some());
    assert_eq!(r.crl.revoked, 2);

    let list = crl(&store);
    let ca = cert(&store.dir().join(CA_CERT));
    assert!(list.verify(&ca.public_key().unwrap()).unwrap());
    assert!(matches!(
        list.get_by_cert(&cert(&a.cert)),
        CrlStatus::Revoked(_)
    ));
    assert!(matches!(
        list.get_by_cert(&cert(&b.cert)),
        CrlStatus::Revoked(_)
    ));
    assert!(matches!(
        list.get_by_cert(&cert(&c.cert)),
        CrlStatus::NotRevoked
    ));

    // Unknown serial, malformed serial, certificate of another CA.
    let e = store
        .revoke(&RevokeTarget::Serial("01".into()), 7)
        .unwrap_err();
    assert_eq!(e.exit_code(), crate::EXIT_IOERR);
    assert!(e.to_string().contains("pki list"), "{e}");
    let e = store
        .revoke(&RevokeTarget::Serial("zz".into()), 7)
        .unwrap_err();
    assert_eq!(e.exit_code(), 64);
    let (_tmp2, other) = new_store();
    let foreign = other
        .issue(&IssueRequest::new(LeafKind::Client, "x"))
        .unwrap();
    let e = store
        .revoke(&RevokeTarget::Cert(foreign.cert.clone()), 7)
        .unwrap_err();
    assert!(e.to_string().contains("was not issued by the CA"), "{e}");
}

#[test]
fn revoking_a_cert_missing_from_the_index_records_it() {
    let (_tmp, store) = new_store();
    let a = store
        .issue(&IssueRequest::new(LeafKind::Client, "a"))
        .unwrap();
    std::fs::remove_file(store.dir().join(INDEX_FILE)).unwrap();
    store
        .revoke(&RevokeTarget::Cert(a.cert.clone()), 7)
        .unwrap();
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, Status::Revoked);
    assert_eq!(listed[0].entry.serial, a.serial);
}

#[test]
fn crl_of_an_empty_ca_is_valid_and_lists_nothing() {
    let (_tmp, store) = new_store();
    let w = store.write_crl(3).unwrap();
    assert_eq!(w.revoked, 0);
    assert_eq!(mode(&w.path), 0o644);
    assert!(crl(&store).get_revoked().is_none());
    assert_eq!(store.write_crl(0).unwrap_err().exit_code(), 64);
}

#[test]
fn list_shows_valid_revoked_and_expired() {
    let (_tmp, store) = new_store();
    for n in ["v", "r", "e"] {
        store
            .issue(&IssueRequest::new(LeafKind::Client, n))
            .unwrap();
    }
    store
        .revoke(&RevokeTarget::Cert(store.dir().join("r.crt")), 7)
        .unwrap();
    // Age the third certificate in the index rather than waiting a day.
    let mut index = Index::load(store.dir()).unwrap();
    index.certs[2].not_after = unix_now() - 10;
    index.save(store.dir()).unwrap();

    let listed = store.list().unwrap();
    let statuses: Vec<Status> = listed.iter().map(|l| l.status).collect();
    assert_eq!(statuses, [Status::Valid, Status::Revoked, Status::Expired]);
    let text = format_list(&listed);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("SERIAL"));
    // Aligned: every column starts at the same offset on every line.
    let col = |l: &str, what: &str| l.find(what).unwrap();
    let subject_col = col(lines[0], "SUBJECT");
    let status_col = col(lines[0], "STATUS");
    for (line, status) in lines[1..].iter().zip(["valid", "revoked", "expired"]) {
        assert_eq!(col(line, "CN="), subject_col, "{text}");
        assert_eq!(&line[status_col..], status, "{text}");
    }
}

#[test]
fn concurrent_issuance_loses_no_update() {
    let (_tmp, store) = new_store();
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..4)
                    .map(|i| {
                        store
                            .issue(&IssueRequest::new(LeafKind::Client, &format!("c{t}-{i}")))
                            .unwrap()
                            .serial
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut serials: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 24, "serials are not unique");
    let index = Index::load(store.dir()).unwrap();
    let mut in_index: Vec<String> = index.certs.iter().map(|e| e.serial.clone()).collect();
    in_index.sort();
    assert_eq!(in_index, serials, "the index lost an update");
    // Concurrent revocations are all recorded too.
    let threads: Vec<_> = serials
        .iter()
        .take(6)
        .cloned()
        .map(|s| {
            let store = store.clone();
            std::thread::spawn(move || store.revoke(&RevokeTarget::Serial(s), 7).unwrap())
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(crl(&store).get_revoked().unwrap().len(), 6);
}

#[test]
fn mismatched_ca_key_is_reported() {
    let (_tmp, store) = new_store();
    let other = crate::pki::new_ca("Other", 3).unwrap();
    let pem = other.key.private_key_to_pem_pkcs8().unwrap();
    std::fs::write(store.dir().join(CA_KEY), pem).unwrap();
    let e = store
        .issue(&IssueRequest::new(LeafKind::Client, "a"))
        .unwrap_err();
    assert!(e.to_string().contains("does not belong to"), "{e}");
}

#[test]
fn the_ca_itself_cannot_be_revoked() {
    let (_tmp, store) = new_store();
    let e = store
        .revoke(&RevokeTarget::Cert(store.dir().join(CA_CERT)), 7)
        .unwrap_err();
    assert!(e.to_string().contains("CA certificate itself"), "{e}");
    assert!(Index::load(store.dir()).unwrap().certs.is_empty());
}

#[test]
fn an_expired_ca_issues_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::new(tmp.path());
    // A CA whose validity ended yesterday.
    let mut ca = crate::pki::new_ca("Old", 1).unwrap();
    let mut spec = CertSpec::client("Old CA");
    spec.usage = crate::pki::Usage::Ca;
    spec.start_days = -10;
    spec.days = 9;
    ca = crate::pki::new_leaf(&ca, &spec).unwrap();
    crate::pki::write_issued(&ca, &tmp.path().join(CA_CERT), &tmp.path().join(CA_KEY)).unwrap();
    let e = store
        .issue(&IssueRequest::new(LeafKind::Client, "a"))
        .unwrap_err();
    assert!(e.to_string().contains("the CA expired"), "{e}");
}
