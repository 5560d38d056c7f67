use super::*;
use crate::config::keys::RawKeys;
use crate::pki::{self, CertSpec};
use openssl::symm::Cipher;

struct Fx {
    dir: tempfile::TempDir,
    ca: pki::Issued,
    leaf: pki::Issued,
}

impl Fx {
    fn new() -> Fx {
        let ca = pki::new_ca("CA", 10).unwrap();
        let leaf = pki::new_leaf(&ca, &CertSpec::server("gw")).unwrap();
        Fx {
            dir: tempfile::tempdir().unwrap(),
            ca,
            leaf,
        }
    }
    fn write(&self, name: &str, data: &[u8]) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        p.to_string_lossy().into_owned()
    }
    fn file(&self) -> PathBuf {
        self.dir.path().join("agent.toml")
    }
    fn load(&self, raw: RawKeys) -> Result<Credentials, ConfigError> {
        raw.validate(&self.file())?.load(&self.file())
    }
    fn p12(&self, pass: &str) -> String {
        let mut ca = openssl::stack::Stack::new().unwrap();
        ca.push(self.ca.cert.clone()).unwrap();
        let der = openssl::pkcs12::Pkcs12::builder()
            .name("gw")
            .pkey(&self.leaf.key)
            .cert(&self.leaf.cert)
            .ca(ca)
            .build2(pass)
            .unwrap()
            .to_der()
            .unwrap();
        self.write("gw.p12", &der)
    }
}

#[test]
fn encrypted_pem_key_opens_with_its_password_only() {
    let f = Fx::new();
    let cert = f.write("gw.crt", &f.leaf.cert.to_pem().unwrap());
    let enc = f
        .leaf
        .key
        .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), b"s3cret")
        .unwrap();
    let key = f.write("gw.key", &enc);
    let good = f.write("pass", b"s3cret\n");
    let bad = f.write("wrong", b"nope\n");
    let raw = |pw: Option<&String>| RawKeys {
        cert: Some(cert.clone()),
        key: Some(key.clone()),
        key_password_file: pw.cloned(),
        ..Default::default()
    };
    // Refusals first: wrong password, no password.
    let e = f
        .load(raw(Some(&bad)))
        .err()
        .expect("wrong password refused");
    assert_eq!(e.key, "key_password_file", "{e}");
    assert!(
        e.message.contains("wrong password") && e.message.contains("wrong"),
        "{e}"
    );
    let e = f.load(raw(None)).err().expect("no password refused");
    assert_eq!(e.key, "key", "{e}");
    assert!(e.message.contains("key_password_file"), "{e}");
    // Positive control.
    let c = f.load(raw(Some(&good))).unwrap();
    assert!(c.key.public_eq(&f.leaf.key));
}

#[test]
fn pkcs12_keystore_gives_key_cert_and_chain() {
    let f = Fx::new();
    let ks = f.p12("p12pass");
    let good = f.write("pass", b"p12pass");
    let bad = f.write("wrong", b"other");
    let raw = |pw: Option<&String>| RawKeys {
        keystore: Some(ks.clone()),
        keystore_password_file: pw.cloned(),
        ..Default::default()
    };
    let e = f
        .load(raw(Some(&bad)))
        .err()
        .expect("wrong password refused");
    assert_eq!(e.key, "keystore_password_file", "{e}");
    assert!(
        e.message.contains("gw.p12") && e.message.contains("wrong password"),
        "{e}"
    );
    let e = f.load(raw(None)).err().expect("missing password refused");
    assert_eq!(e.key, "keystore", "{e}");
    let not_p12 = f.write("x.p12", b"garbage");
    let e = f
        .load(RawKeys {
            keystore: Some(not_p12),
            ..Default::default()
        })
        .err()
        .expect("garbage refused");
    assert!(e.message.contains("not a PKCS#12"), "{e}");
    let c = f.load(raw(Some(&good))).unwrap();
    assert!(c.key.public_eq(&f.leaf.key));
    assert_eq!(c.leaf.to_der().unwrap(), f.leaf.cert.to_der().unwrap());
    assert_eq!(c.chain.len(), 1);
}

#[test]
fn conflicting_or_misplaced_keys_are_refused() {
    let f = Fx::new();
    let cert = f.write("gw.crt", &f.leaf.cert.to_pem().unwrap());
    let ks = f.p12("x");
    let cases = [
        (
            RawKeys {
                cert: Some(cert.clone()),
                keystore: Some(ks.clone()),
                ..Default::default()
            },
            "keystore",
        ),
        (
            RawKeys {
                keystore_password_file: Some(cert.clone()),
                cert: Some(cert.clone()),
                key: Some(cert.clone()),
                ..Default::default()
            },
            "keystore_password_file",
        ),
        (
            RawKeys {
                cert: Some(cert.clone()),
                key: Some(cert.clone()),
                pkcs11_module: Some(cert.clone()),
                ..Default::default()
            },
            "pkcs11_module",
        ),
        (RawKeys::default(), "cert"),
        (
            // The PIN given twice: in the URI and in a file.
            RawKeys {
                cert: Some(cert.clone()),
                key: Some("pkcs11:token=t;object=k?pin-value=1".into()),
                key_password_file: Some(cert.clone()),
                ..Default::default()
            },
            "key_password_file",
        ),
    ];
    for (raw, key) in cases {
        let e = raw.validate(&f.file()).unwrap_err();
        assert_eq!(e.key, key, "{e}");
    }
}

#[test]
fn pkcs11_uri_is_redacted_in_messages() {
    assert_eq!(
        redact_uri("pkcs11:token=t;object=k;pin-value=1234"),
        "pkcs11:token=t;object=k;pin-value=***"
    );
    let src = KeySource::Pkcs11 {
        cert: "c".into(),
        uri: "pkcs11:token=t?pin-value=99".into(),
        module: None,
        pin_file: None,
    };
    assert!(!format!("{src:?}").contains("99"));
}
