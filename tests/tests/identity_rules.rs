//! Identity ambiguity and over-broad rules: a client certificate with more than one subject
//! CN is refused unless `allow_multiple_cn = true`; `dns=*.example.org` matches exactly one
//! label; `tunnel-server check` warns about rules that match every client.

use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder};
use tunnel_core::pki::{self, CertSpec, Issued, KeyType};
use tunnel_tests::tls::{exchange, local_addr, TlsClient};
use tunnel_tests::*;

/// A client certificate signed by `pki`'s CA whose subject holds every CN of `cns`.
fn multi_cn(pki: &Pki, file: &str, cns: &[&str]) -> Creds {
    let ca = pki.ca();
    let key = pki::new_key(KeyType::EcP256).expect("key");
    let mut nb = X509NameBuilder::new().unwrap();
    nb.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Example")
        .unwrap();
    for cn in cns {
        nb.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    }
    let subject = nb.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&pki::random_serial().unwrap()).unwrap();
    b.set_subject_name(&subject).unwrap();
    b.set_issuer_name(ca.cert.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    let now = tunnel_core::util::time::unix_now();
    b.set_not_before(&Asn1Time::from_unix(now - 86_400).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + 86_400).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap())
        .unwrap();
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(Some(&ca.cert), None))
        .unwrap();
    b.append_extension(ski).unwrap();
    let aki = AuthorityKeyIdentifier::new()
        .keyid(false)
        .build(&b.x509v3_context(Some(&ca.cert), None))
        .unwrap();
    b.append_extension(aki).unwrap();
    b.sign(&ca.key, MessageDigest::sha256()).unwrap();
    let issued = Issued {
        cert: b.build(),
        key,
    };
    let cert = pki.dir().join(format!("{file}.crt"));
    let keyf = pki.dir().join(format!("{file}.key"));
    pki::write_issued(&issued, &cert, &keyf).expect("write");
    Creds {
        cert,
        key: keyf,
        issued,
    }
}

/// Connects as `creds` to backend `data`: (peer address, bytes echoed).
fn reach(pki: &Pki, gw: &Gateway, creds: &Creds) -> (std::net::SocketAddr, Vec<u8>) {
    let client = TlsClient::new(creds, &pki.ca_crt);
    match client.connect(gw.addr, Some("data")) {
        Ok(mut s) => {
            let peer = local_addr(&s);
            (peer, exchange(&mut s, b"hello").0)
        }
        Err(e) => panic!("client-side handshake failed: {e}"),
    }
}

#[test]
fn certificate_with_two_cns_is_refused_with_a_clear_reason() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let body = backend_toml("data", echo.addr, "\"cn=alice\", \"o=Example\"");
    let gw = Gateway::start(&pki, &body);
    // "mallory" smuggles "alice" in as a second CN: cn=alice would match it.
    let twin = multi_cn(&pki, "twin", &["mallory", "alice"]);
    let (peer, got) = reach(&pki, &gw, &twin);
    assert!(got.is_empty(), "a certificate with two CNs was tunnelled");
    let ev = gw.audit_for(peer);
    assert_eq!(field(&ev, "result"), "denied", "{ev}");
    let reason = field(&ev, "reason");
    assert!(
        reason.contains("2 subject common names") && reason.contains("allow_multiple_cn"),
        "unclear reason: {ev}"
    );
    assert_eq!(echo.accepted(), 0);
    // Positive control: one CN is served.
    let alice = pki.issue(
        "alice",
        &CertSpec {
            o: vec!["Example".into()],
            ..CertSpec::client("alice")
        },
    );
    let (peer, got) = reach(&pki, &gw, &alice);
    assert_eq!(got, b"hello");
    assert_eq!(field(&gw.audit_for(peer), "result"), "ok");
    // The opt-out: with allow_multiple_cn = true, the same certificate gets through.
    let lax = Gateway::start(&pki, &format!("allow_multiple_cn = true\n{body}"));
    let (peer, got) = reach(&pki, &lax, &twin);
    assert_eq!(got, b"hello");
    assert_eq!(field(&lax.audit_for(peer), "result"), "ok");
}

#[test]
fn dns_wildcard_matches_exactly_one_label() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(
        &pki,
        &backend_toml("data", echo.addr, "\"dns=*.example.org\""),
    );
    let with_dns = |file: &str, dns: &str| {
        pki.issue(
            file,
            &CertSpec {
                dns: vec![dns.into()],
                ..CertSpec::client(file)
            },
        )
    };
    for (file, dns) in [("deep", "a.b.example.org"), ("bare", "example.org")] {
        let (peer, got) = reach(&pki, &gw, &with_dns(file, dns));
        assert!(got.is_empty(), "{dns} matched dns=*.example.org");
        assert_eq!(field(&gw.audit_for(peer), "result"), "denied");
    }
    let (peer, got) = reach(&pki, &gw, &with_dns("one", "One.Example.org"));
    assert_eq!(got, b"hello");
    assert_eq!(field(&gw.audit_for(peer), "result"), "ok");
}

#[test]
fn check_warns_about_rules_that_match_everything() {
    let pki = Pki::new();
    let broad = Gateway::header()
        + "[groups]\nall = [\"uri=*\"]\n"
        + &backend_toml("a", "127.0.0.1:1", "\"cn=*\"")
        + &backend_toml("b", "127.0.0.1:2", "\"sha256=*\"")
        + &backend_toml("c", "127.0.0.1:3", "\"ip=0.0.0.0/0\", \"ip=::/0\"")
        + &backend_toml("d", "127.0.0.1:4", "{ ou = \"*\", o = \"**\" }")
        + &backend_toml("e", "127.0.0.1:5", "\"group=all\"");
    let path = pki.write("broad", "toml", &broad);
    let out = run_server(&["check", "--config", path.to_str().unwrap()], PROMPT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for rule in [
        "backend[0].allow[0]: cn=*",
        "backend[1].allow[0]: sha256=*",
        "backend[2].allow[0]: ip=0.0.0.0/0",
        "backend[2].allow[1]: ip=::/0",
        "backend[3].allow[0]: { o=**, ou=* }",
        "groups.all[0]: uri=*",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.contains("WARNING") && l.contains(rule))
            .unwrap_or_else(|| panic!("no warning for {rule}:\n{stdout}"));
        assert!(line.contains("\"any\""), "no suggestion of any: {line}");
    }
    // Narrow rules: no warning.
    let narrow = Gateway::header()
        + &backend_toml(
            "a",
            "127.0.0.1:1",
            "\"cn=alice\", \"ip=10.0.0.0/8\", \"any\"",
        );
    let path = pki.write("narrow", "toml", &narrow);
    let out = run_server(&["check", "--config", path.to_str().unwrap()], PROMPT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains("WARNING"), "{stdout}");
}
