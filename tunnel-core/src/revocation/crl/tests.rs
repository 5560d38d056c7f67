//! Table-driven checks of CRL validation and chain coverage with CRLs made by the openssl
//! crate at test time.

use super::*;
use crate::pki::{self, CertSpec, Issued, Usage};
use openssl::asn1::{Asn1Object, Asn1OctetString};
use openssl::x509::X509Extension;

fn ext(oid: &str, critical: bool, der: &[u8]) -> X509Extension {
    let obj = Asn1Object::from_str(oid).unwrap();
    let value = Asn1OctetString::new_from_bytes(der).unwrap();
    X509Extension::new_from_der(&obj, critical, &value).unwrap()
}

fn write(dir: &Path, name: &str, crls: &[&X509Crl]) -> std::path::PathBuf {
    let path = dir.join(name);
    let pem: Vec<u8> = crls.iter().flat_map(|c| c.to_pem().unwrap()).collect();
    std::fs::write(&path, pem).unwrap();
    path
}

fn load(crls: &[&X509Crl], cas: &[X509], coverage: CrlCoverage) -> Result<CrlSet, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "crl.pem", crls);
    CrlSet::load(Path::new("server.toml"), &[path], cas, coverage, None)
}

fn intermediate(root: &Issued, name: &str) -> Issued {
    let spec = CertSpec {
        usage: Usage::Ca,
        ..CertSpec::client(name)
    };
    pki::new_leaf(root, &spec).unwrap()
}

fn client(ca: &Issued, cn: &str) -> X509 {
    pki::new_leaf(ca, &CertSpec::client(cn)).unwrap().cert
}

fn crl(ca: &Issued, revoked: &[&X509]) -> X509Crl {
    pki::make_crl(ca, revoked, -1, 7).unwrap()
}

#[test]
fn crls_limiting_their_scope_or_from_the_future_are_refused() {
    let root = pki::new_ca("Root CA", 30).unwrap();
    let cas = [root.cert.clone()];
    // IssuingDistributionPoint { onlyContainsCACerts [2] TRUE }
    let idp = ext("2.5.29.28", true, &[0x30, 0x03, 0x82, 0x01, 0xff]);
    let delta = ext("2.5.29.27", true, &[0x02, 0x01, 0x01]);
    let unknown_critical = ext("1.3.6.1.4.1.99999.1", true, &[0x05, 0x00]);
    let unknown = ext("1.3.6.1.4.1.99999.2", false, &[0x05, 0x00]);
    let cases: Vec<(&str, X509Crl, Option<&str>)> = vec![
        ("plain", crl(&root, &[]), None),
        (
            "issuing distribution point",
            pki::make_crl_with(&root, &[], -1, 7, vec![idp]).unwrap(),
            Some("issuing distribution point"),
        ),
        (
            "delta CRL",
            pki::make_crl_with(&root, &[], -1, 7, vec![delta]).unwrap(),
            Some("delta CRL"),
        ),
        (
            "unknown critical extension",
            pki::make_crl_with(&root, &[], -1, 7, vec![unknown_critical]).unwrap(),
            Some("unhandled critical extension 1.3.6.1.4.1.99999.1"),
        ),
        (
            "unknown non-critical extension",
            pki::make_crl_with(&root, &[], -1, 7, vec![unknown]).unwrap(),
            None,
        ),
        (
            "thisUpdate tomorrow",
            pki::make_crl(&root, &[], 1, 7).unwrap(),
            Some("thisUpdate in the future"),
        ),
    ];
    for (what, c, want) in cases {
        match (load(&[&c], &cas, CrlCoverage::Chain), want) {
            (Ok(_), None) => {}
            (Err(e), Some(w)) => {
                let e = e.to_string();
                assert!(e.contains(w), "{what}: {e}");
                assert!(e.contains("crl[0]"), "{what}: {e}");
            }
            (Ok(_), Some(w)) => panic!("{what}: loaded, want an error with {w:?}"),
            (Err(e), None) => panic!("{what}: {e}"),
        }
    }
}

#[test]
fn issuer_without_crl_sign_is_refused() {
    // A CA whose key usage allows certificate signing only.
    let key = pki::new_key(pki::KeyType::EcP256).unwrap();
    let mut nb = openssl::x509::X509NameBuilder::new().unwrap();
    nb.append_entry_by_nid(openssl::nid::Nid::COMMONNAME, "No CRL Sign CA")
        .unwrap();
    let name = nb.build();
    let mut b = openssl::x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let serial = openssl::bn::BigNum::from_u32(7).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(9).unwrap())
        .unwrap();
    b.append_extension(
        openssl::x509::extension::BasicConstraints::new()
            .critical()
            .ca()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.append_extension(
        openssl::x509::extension::KeyUsage::new()
            .critical()
            .key_cert_sign()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.sign(&key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    let ca = Issued {
        cert: b.build(),
        key,
    };
    let e = load(
        &[&crl(&ca, &[])],
        std::slice::from_ref(&ca.cert),
        CrlCoverage::Chain,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("cRLSign"), "{e}");
    // As an intermediate (not in client_ca), its CRL loads but never counts: fail closed.
    let root = pki::new_ca("Root CA", 30).unwrap();
    let set = load(
        &[&crl(&root, &[]), &crl(&ca, &[])],
        std::slice::from_ref(&root.cert),
        CrlCoverage::Chain,
    )
    .unwrap();
    // Built by hand: OpenSSL derives no authority key identifier from this CA.
    let mut b = openssl::x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(ca.cert.subject_name()).unwrap();
    let leaf_key = pki::new_key(pki::KeyType::EcP256).unwrap();
    b.set_pubkey(&leaf_key).unwrap();
    b.sign(&ca.key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    let leaf = b.build();
    assert_eq!(
        set.check_chain(&[leaf, ca.cert.clone()], crate::util::time::unix_now()),
        CrlCheck::Missing("CN=No CRL Sign CA".into())
    );
}

#[test]
fn chain_coverage_with_an_intermediate_ca() {
    let root = pki::new_ca("Root CA", 30).unwrap();
    let inter = intermediate(&root, "Issuing CA");
    let carol = client(&inter, "carol");
    let dave = client(&inter, "dave");
    let alice = client(&root, "alice");
    let cas = [root.cert.clone()];
    let now = crate::util::time::unix_now();
    let chain = |leaf: &X509| vec![leaf.clone(), inter.cert.clone(), root.cert.clone()];
    let root_crl = crl(&root, &[]);
    let inter_crl = crl(&inter, &[&carol]);
    let missing_inter = CrlCheck::Missing("CN=Issuing CA".into());
    let missing_root = CrlCheck::Missing("CN=Root CA".into());
    type Case<'a> = (&'a str, Vec<&'a X509Crl>, CrlCoverage, Vec<X509>, CrlCheck);
    let cases: Vec<Case> = vec![
        (
            "both, revoked",
            vec![&root_crl, &inter_crl],
            CrlCoverage::Chain,
            chain(&carol),
            CrlCheck::Revoked,
        ),
        (
            "both, sibling",
            vec![&root_crl, &inter_crl],
            CrlCoverage::Chain,
            chain(&dave),
            CrlCheck::Good,
        ),
        (
            "both, root client",
            vec![&root_crl, &inter_crl],
            CrlCoverage::Chain,
            vec![alice.clone(), root.cert.clone()],
            CrlCheck::Good,
        ),
        (
            "root only",
            vec![&root_crl],
            CrlCoverage::Chain,
            chain(&dave),
            missing_inter.clone(),
        ),
        (
            "root only, leaf",
            vec![&root_crl],
            CrlCoverage::Leaf,
            chain(&dave),
            missing_inter,
        ),
        (
            "root only, available",
            vec![&root_crl],
            CrlCoverage::Available,
            chain(&dave),
            CrlCheck::Good,
        ),
        (
            "intermediate only",
            vec![&inter_crl],
            CrlCoverage::Chain,
            chain(&dave),
            missing_root,
        ),
        (
            "intermediate only, leaf",
            vec![&inter_crl],
            CrlCoverage::Leaf,
            chain(&dave),
            CrlCheck::Good,
        ),
        (
            "intermediate only, leaf, revoked",
            vec![&inter_crl],
            CrlCoverage::Leaf,
            chain(&carol),
            CrlCheck::Revoked,
        ),
    ];
    for (what, crls, coverage, chain, want) in cases {
        let set = load(&crls, &cas, coverage).unwrap();
        assert_eq!(set.check_chain(&chain, now), want, "{what}");
    }
}

#[test]
fn two_cas_sharing_a_name_are_told_apart_by_key() {
    // Key rollover: the old and the new CA have the same name.
    let old = pki::new_ca("Rollover CA", 30).unwrap();
    let new = pki::new_ca("Rollover CA", 30).unwrap();
    let leaf = client(&new, "alice");
    let cas = [old.cert.clone(), new.cert.clone()];
    let now = crate::util::time::unix_now();
    let chain = vec![leaf.clone(), new.cert.clone()];
    // The old CA's list (even one naming the same serial) says nothing about the new CA's
    // certificates: they still need the new CA's own list.
    let old_crl = crl(&old, &[&leaf]);
    let set = load(&[&old_crl], &cas, CrlCoverage::Chain).unwrap();
    assert_eq!(
        set.check_chain(&chain, now),
        CrlCheck::Missing("CN=Rollover CA".into())
    );
    let new_crl = crl(&new, &[]);
    let set = load(&[&old_crl, &new_crl], &cas, CrlCoverage::Chain).unwrap();
    assert_eq!(set.check_chain(&chain, now), CrlCheck::Good);
    assert_eq!(set.cas_without_crl(&cas), Vec::<String>::new());
    // A CRL naming a CA of client_ca signed by a key of no such CA is refused at load.
    let rogue = pki::new_ca("Rollover CA", 30).unwrap();
    let e = load(&[&crl(&rogue, &[])], &cas, CrlCoverage::Chain)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not signed by the CA of that name"), "{e}");
}

#[test]
fn a_reload_keeps_the_newer_list_of_each_ca_from_the_same_file() {
    let root = pki::new_ca("Root CA", 30).unwrap();
    let rolled = pki::new_ca("Root CA", 30).unwrap();
    let mallory = client(&root, "mallory");
    let cas = [root.cert.clone(), rolled.cert.clone()];
    let now = crate::util::time::unix_now();
    let chain = vec![mallory.clone(), root.cert.clone()];
    let older = crl(&root, &[]);
    let mut newer = crl(&root, &[&mallory]);
    // make_crl numbers its lists by the millisecond: issue until the number moves on.
    while rollback::Position::of(&newer).number == rollback::Position::of(&older).number {
        newer = crl(&root, &[&mallory]);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = Path::new("server.toml");
    let reload = |crls: &[&X509Crl], previous: Option<&CrlSet>| {
        let path = write(dir.path(), "crl.pem", crls);
        CrlSet::load(file, &[path], &cas, CrlCoverage::Available, previous).unwrap()
    };
    let first = reload(&[&newer], None);
    assert_eq!(first.check_chain(&chain, now), CrlCheck::Revoked);
    // The older list written back: the newer one stays in force.
    let second = reload(&[&older], Some(&first));
    assert_eq!(second.check_chain(&chain, now), CrlCheck::Revoked);
    // ... also on the reload after that.
    let third = reload(&[&older], Some(&second));
    assert_eq!(third.check_chain(&chain, now), CrlCheck::Revoked);
    // Another file is another source: its list is taken as it is.
    let other = write(dir.path(), "other.pem", &[&older]);
    let set = CrlSet::load(file, &[other], &cas, CrlCoverage::Available, Some(&first)).unwrap();
    assert_eq!(set.check_chain(&chain, now), CrlCheck::Good);
    // A list of another CA of the same name (key rollover) is not compared with it.
    let rolled_crl = crl(&rolled, &[]);
    let set = reload(&[&rolled_crl], Some(&first));
    assert_eq!(set.len(), 1);
    assert_eq!(set.check_chain(&chain, now), CrlCheck::Good);
}

/// Found by the fuzz stage: a byte after the END marker, on its line. OpenSSL refuses such a
/// block; the loader must not accept what OpenSSL does not read.
#[test]
fn garbage_on_the_end_line_is_refused_as_openssl_refuses_it() {
    let ca = pki::new_ca("Test CA", 30).unwrap();
    let pem = crl(&ca, &[]).to_pem().unwrap();
    let body = pem
        .strip_suffix(b"\n")
        .expect("PEM ends with a newline")
        .to_vec();
    let parses = |bytes: &[u8]| super::parse_crls(bytes).is_ok();
    let mut bad = body.clone();
    bad.push(0x7f);
    assert!(
        X509Crl::from_pem(&bad).is_err(),
        "OpenSSL itself refuses it"
    );
    assert!(!parses(&bad), "accepted a block OpenSSL refuses");
    let mut bad_line = bad.clone();
    bad_line.extend_from_slice(b"\n");
    assert!(!parses(&bad_line));
    // Positive controls: with or without the final newline, CRLF, and text after it.
    assert!(parses(&pem));
    assert!(parses(&body));
    let crlf = String::from_utf8(pem.clone())
        .unwrap()
        .replace('\n', "\r\n");
    assert!(parses(crlf.as_bytes()));
    let mut trailing = pem.clone();
    trailing.extend_from_slice(b"comment after the block\n");
    assert!(parses(&trailing));
}
