//! Unit tests of the certificate builders.

use super::*;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509StoreContext;

fn verifies(ca: &Issued, leaf: &X509) -> bool {
    let mut sb = X509StoreBuilder::new().unwrap();
    sb.add_cert(ca.cert.clone()).unwrap();
    let store = sb.build();
    let chain = openssl::stack::Stack::new().unwrap();
    let mut ctx = X509StoreContext::new().unwrap();
    ctx.init(&store, leaf, &chain, |c| c.verify_cert()).unwrap()
}

#[test]
fn issued_certs_verify_for_every_key_type() {
    for kt in [KeyType::EcP256, KeyType::Rsa2048, KeyType::Ed25519] {
        let ca = new_ca_with("CA", 10, kt).unwrap();
        let mut spec = CertSpec::server("gw.example");
        spec.key_type = kt;
        let leaf = new_leaf(&ca, &spec).unwrap();
        assert!(verifies(&ca, &leaf.cert), "{kt:?}");
        let other = new_ca("Other", 10).unwrap();
        assert!(
            !verifies(&other, &leaf.cert),
            "{kt:?} verified under the wrong CA"
        );
    }
}

#[test]
fn crl_lists_revoked_serial_only() {
    let ca = new_ca("CA", 10).unwrap();
    let a = new_leaf(&ca, &CertSpec::client("a")).unwrap();
    let b = new_leaf(&ca, &CertSpec::client("b")).unwrap();
    let crl = make_crl(&ca, &[&a.cert], 0, 7).unwrap();
    assert!(crl.verify(&ca.key).unwrap());
    assert!(matches!(
        crl.get_by_cert(&a.cert),
        openssl::x509::CrlStatus::Revoked(_)
    ));
    assert!(matches!(
        crl.get_by_cert(&b.cert),
        openssl::x509::CrlStatus::NotRevoked
    ));
}

#[test]
fn private_files_are_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("CA", 10).unwrap();
    write_issued(&ca, &dir.path().join("ca.crt"), &dir.path().join("ca.key")).unwrap();
    let mode = std::fs::metadata(dir.path().join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
