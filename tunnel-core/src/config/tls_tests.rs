use super::*;
use std::path::Path;

fn raw(toml: &str) -> RawTls {
    #[derive(Deserialize)]
    struct W {
        tls: RawTls,
    }
    let w: W = serde_json::from_value(serde_json::to_value(toml_like(toml)).expect("json"))
        .expect("parse");
    w.tls
}

/// Tiny test helper: `key=a,b` lines into the `[tls]` table (lists only, plus booleans).
fn toml_like(s: &str) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for line in s.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) = line.split_once('=').expect("key=value");
        let v = match v {
            "true" => serde_json::Value::Bool(true),
            "false" => serde_json::Value::Bool(false),
            _ => serde_json::Value::Array(
                v.split(',')
                    .map(|x| serde_json::Value::String(x.into()))
                    .collect(),
            ),
        };
        m.insert(k.trim().into(), v);
    }
    serde_json::json!({ "tls": m })
}

fn check(s: &str) -> Result<TlsPolicy, ConfigError> {
    raw(s).validate(Path::new("t.toml"))
}

#[test]
fn defaults_change_nothing() {
    assert_eq!(check("").unwrap(), TlsPolicy::default());
    assert!(TlsPolicy::default().session_resumption);
}

#[test]
fn supported_values_are_accepted() {
    let p = check(
        "tls13_ciphersuites=TLS_AES_256_GCM_SHA384,TLS_CHACHA20_POLY1305_SHA256\n\
         tls12_ciphers=ECDHE-ECDSA-AES256-GCM-SHA384,!aNULL\n\
         groups=X25519,P-256\n\
         signature_algorithms=ecdsa_secp256r1_sha256,rsa_pss_rsae_sha256,ed25519\n\
         session_resumption=false",
    )
    .unwrap();
    assert_eq!(p.groups, ["X25519", "P-256"]);
    assert!(!p.session_resumption);
}

#[test]
fn unsupported_values_are_named() {
    let cases = [
        (
            "tls13_ciphersuites=TLS_AES_256_GCM_SHA384,TLS_FOO_SHA256",
            "tls.tls13_ciphersuites",
            "\"TLS_FOO_SHA256\"",
        ),
        // A TLS 1.2 suite is not a TLS 1.3 one.
        (
            "tls13_ciphersuites=ECDHE-RSA-AES128-GCM-SHA256",
            "tls.tls13_ciphersuites",
            "\"ECDHE-RSA-AES128-GCM-SHA256\"",
        ),
        (
            "tls12_ciphers=ECDHE-RSA-AES128-GCM-SHA256,NOPE-CIPHER",
            "tls.tls12_ciphers",
            "\"NOPE-CIPHER\"",
        ),
        (
            "tls12_ciphers=!aNULL",
            "tls.tls12_ciphers",
            "selects no cipher",
        ),
        (
            "groups=X25519,brainpool1024,P-999",
            "tls.groups",
            "\"brainpool1024\", \"P-999\" are",
        ),
        (
            "signature_algorithms=ed25519,rsa_sha999",
            "tls.signature_algorithms",
            "\"rsa_sha999\"",
        ),
        ("groups=X25519:P-256", "tls.groups[0]", "is not a name"),
        ("groups=X25519\u{0}", "tls.groups[0]", "is not a name"),
    ];
    for (input, key, needle) in cases {
        let e = check(input).expect_err(input);
        assert_eq!(e.key, key, "{input}: {e}");
        assert!(e.message.contains(needle), "{input}: {e}");
    }
}

#[cfg(not(feature = "vendored-openssl"))]
#[test]
fn post_quantum_group_names_the_build_that_has_it() {
    // Debian 12's OpenSSL 3.0: the default build links it.
    assert!(openssl::version::number() < 0x3050_0000);
    let e = check("groups=X25519MLKEM768,X25519").unwrap_err();
    assert_eq!(e.key, "tls.groups");
    assert!(e.message.contains("\"X25519MLKEM768\""), "{e}");
    assert!(e.message.contains("vendored-openssl"), "{e}");
}

#[cfg(feature = "vendored-openssl")]
#[test]
fn vendored_build_has_post_quantum_groups() {
    assert!(
        openssl::version::number() >= 0x3050_0000,
        "{}",
        openssl::version::version()
    );
    let p = check("groups=X25519MLKEM768,X25519").unwrap();
    assert_eq!(p.groups, ["X25519MLKEM768", "X25519"]);
}
