//! TLS 1.3 session resumption must not bypass authorization: a session obtained for a backend
//! the client may reach, resumed with the SNI of a backend it may not reach, is denied (the
//! gateway decides after every handshake, full or resumed). Resuming on the same, allowed name
//! works.

use openssl::ssl::{SslSession, SslVersion};
use std::io::Read;
use tunnel_tests::process::boolean;
use tunnel_tests::tls::{connect_ssl, exchange, local_addr, TlsClient};
use tunnel_tests::*;

const ALLOWED_BANNER: &[u8] = b"allowed backend\n";
const FORBIDDEN_BANNER: &[u8] = b"forbidden backend\n";

struct Fixture {
    _pki: Pki,
    gw: Gateway,
    client: TlsClient,
    allowed: Backend,
    forbidden: Backend,
}

fn fixture() -> Fixture {
    let pki = Pki::new();
    let allowed = Backend::banner(ALLOWED_BANNER);
    let forbidden = Backend::banner(FORBIDDEN_BANNER);
    let gw = Gateway::start(
        &pki,
        &(backend_toml("allowed", allowed.addr, "\"cn=alice\"")
            + &backend_toml("forbidden", forbidden.addr, "\"cn=root\"")),
    );
    let alice = pki.client("alice");
    let client = TlsClient::new(&alice, &pki.ca_crt);
    Fixture {
        _pki: pki,
        gw,
        client,
        allowed,
        forbidden,
    }
}

impl Fixture {
    /// A full handshake on "allowed"; reads the banner so the session tickets (sent after the
    /// handshake) have arrived, and returns the resumable session.
    fn session(&self) -> SslSession {
        let mut s = self
            .client
            .connect(self.gw.addr, Some("allowed"))
            .expect("handshake");
        let mut banner = vec![0u8; ALLOWED_BANNER.len()];
        s.read_exact(&mut banner).expect("banner");
        assert_eq!(banner, ALLOWED_BANNER);
        assert!(!s.ssl().session_reused());
        let sess = s.ssl().session().expect("session").to_owned();
        let peer = local_addr(&s);
        let (got, _) = exchange(&mut s, b"bye");
        assert_eq!(got, b"bye");
        let ev = self.gw.audit_for(peer);
        assert_eq!(field(&ev, "result"), "ok", "{ev}");
        assert!(!boolean(&ev, "resumed"), "{ev}");
        sess
    }

    /// Resumes `sess` with SNI `sni`; returns the bytes received, whether the session was
    /// really resumed, and the audit event.
    fn resume(&self, sess: &SslSession, sni: &str) -> (Vec<u8>, bool, serde_json::Value) {
        let mut ssl = self.client.ssl(Some(sni));
        // SAFETY: the session comes from a connection made with the same SslContext
        // (self.client's connector), which is what set_session requires.
        unsafe { ssl.set_session(sess).expect("set_session") };
        let mut s = connect_ssl(ssl, self.gw.addr).expect("resumed handshake");
        let reused = s.ssl().session_reused();
        let peer = local_addr(&s);
        let (got, _) = exchange(&mut s, b"ping\n");
        (got, reused, self.gw.audit_for(peer))
    }
}

#[test]
fn resumed_session_cannot_reach_a_backend_the_identity_may_not() {
    let f = fixture();
    let sess = f.session();
    let (got, reused, ev) = f.resume(&sess, "forbidden");
    assert!(
        reused,
        "the session was not resumed, so this test proves nothing"
    );
    assert!(
        got.is_empty(),
        "resumed session reached the forbidden backend: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(field(&ev, "result"), "denied", "{ev}");
    assert_eq!(
        field(&ev, "reason"),
        "no allow rule of backend \"forbidden\" matches",
        "{ev}"
    );
    assert_eq!(field(&ev, "backend"), "forbidden", "{ev}");
    assert_eq!(field(&ev, "subject"), "CN=alice", "{ev}");
    assert!(boolean(&ev, "resumed"), "{ev}");
    assert_eq!(
        f.forbidden.accepted(),
        0,
        "the forbidden backend was dialled"
    );
    // Positive control: the same session still resumes where it is allowed.
    let (got, reused, ev) = f.resume(&sess, "allowed");
    assert!(reused, "the session was not resumed");
    assert_eq!(got, [ALLOWED_BANNER, b"ping\n"].concat());
    assert_eq!(field(&ev, "result"), "ok", "{ev}");
}

#[test]
fn resumed_session_on_the_same_allowed_name_works() {
    let f = fixture();
    let sess = f.session();
    let (got, reused, ev) = f.resume(&sess, "allowed");
    assert!(reused, "the session was not resumed");
    assert_eq!(got, [ALLOWED_BANNER, b"ping\n"].concat());
    assert_eq!(field(&ev, "result"), "ok", "{ev}");
    assert!(boolean(&ev, "resumed"), "{ev}");
    assert_eq!(field(&ev, "subject"), "CN=alice", "{ev}");
    assert_eq!(f.allowed.accepted(), 2);
}

/// With TLS 1.2 allowed, a TLS 1.2 session must not carry a client to the backend of its
/// first handshake when it now asks for another one (in TLS 1.2 the SNI belongs to the
/// session, and OpenSSL reports the session's name on resumption).
#[test]
fn tls12_session_never_routes_to_the_backend_of_its_first_handshake() {
    let pki = Pki::new();
    let first = Backend::banner(b"first\n");
    let second = Backend::banner(b"second\n");
    let forbidden = Backend::banner(FORBIDDEN_BANNER);
    let mut gw = Gateway::start(
        &pki,
        &("tls_min_version = \"1.2\"\n".to_string()
            + &backend_toml("first", first.addr, "\"cn=alice\"")
            + &backend_toml("second", second.addr, "\"cn=alice\"")
            + &backend_toml("forbidden", forbidden.addr, "\"cn=root\"")),
    );
    let alice = pki.client("alice");
    let client = TlsClient::with_max_version(&alice, &pki.ca_crt, Some(SslVersion::TLS1_2));
    let mut s = connect_ssl(client.ssl(Some("first")), gw.addr).expect("handshake");
    assert_eq!(s.ssl().version_str(), "TLSv1.2");
    let (got, _) = exchange(&mut s, b"1");
    assert_eq!(got, b"first\n1");
    let sess = s.ssl().session().expect("session").to_owned();

    for (sni, want) in [("second", &b"second\n2"[..]), ("forbidden", &b""[..])] {
        let mut ssl = client.ssl(Some(sni));
        // SAFETY: the session comes from a connection of the same SslContext (`client`).
        unsafe { ssl.set_session(&sess).expect("set_session") };
        let (got, peer) = match connect_ssl(ssl, gw.addr) {
            Ok(mut s) => {
                let peer = local_addr(&s);
                (exchange(&mut s, b"2").0, Some(peer))
            }
            // TLS 1.2 verifies the client certificate inside the handshake.
            Err(_) => (Vec::new(), None),
        };
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "asked for {sni:?}"
        );
        let ev = match peer {
            Some(p) => gw.audit_for(p),
            None => gw.wait_for_audit(PROMPT, |e| field(e, "backend") == sni),
        };
        assert_eq!(field(&ev, "backend"), sni, "{ev}");
        assert_eq!(field(&ev, "sni"), sni, "{ev}");
        let (result, reason) = if want.is_empty() {
            ("denied", "no allow rule of backend \"forbidden\" matches")
        } else {
            ("ok", "allowed by cn=alice")
        };
        assert_eq!(field(&ev, "result"), result, "{ev}");
        assert_eq!(field(&ev, "reason"), reason, "{ev}");
        assert_eq!(field(&ev, "subject"), "CN=alice", "{ev}");
    }
    assert_eq!(forbidden.accepted(), 0);
    // Positive control: the gateway still serves after the refusal.
    assert_serves(&mut gw, &alice, &pki.ca_crt, Some("first"));
}

/// A client certificate valid for `secs` more seconds (the fixture's PKI works in days).
fn short_lived(pki: &Pki, cn: &str, secs: i64) -> Creds {
    use openssl::asn1::Asn1Time;
    use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage};
    use openssl::x509::{X509Builder, X509NameBuilder};
    let key = tunnel_core::pki::new_key(Default::default()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(openssl::nid::Nid::COMMONNAME, cn)
        .unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&tunnel_core::pki::random_serial().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(pki.ca().cert.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    b.set_not_before(&Asn1Time::from_unix(now - 60).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + secs).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().build().unwrap())
        .unwrap();
    b.append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap())
        .unwrap();
    b.sign(&pki.ca().key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    let issued = tunnel_core::pki::Issued {
        cert: b.build(),
        key,
    };
    let cert = pki.unique_path(cn, "crt");
    let keyp = pki.unique_path(cn, "key");
    tunnel_core::pki::write_issued(&issued, &cert, &keyp).unwrap();
    Creds {
        cert,
        key: keyp,
        issued,
    }
}

#[test]
fn a_session_cannot_outlive_its_certificate() {
    let mut f = fixture();
    // The fixture's CA signs the short-lived certificate.
    let creds = short_lived(&f._pki, "alice", 4);
    let client = TlsClient::new(&creds, &f._pki.ca_crt);
    let mut s = client
        .connect(f.gw.addr, Some("allowed"))
        .expect("handshake");
    let mut banner = vec![0u8; ALLOWED_BANNER.len()];
    s.read_exact(&mut banner).expect("banner");
    let sess = s.ssl().session().expect("session").to_owned();
    let _ = exchange(&mut s, b"bye");
    // Resume once while the certificate is valid: the gateway verifies the chain again and
    // remembers that verification (tls/reverified.rs), which must not outlive the certificate.
    let mut ssl = client.ssl(Some("allowed"));
    // SAFETY: the session comes from a connection made with this client's SslContext.
    unsafe { ssl.set_session(&sess).expect("set_session") };
    let mut s = connect_ssl(ssl, f.gw.addr).expect("resumed handshake");
    assert!(s.ssl().session_reused(), "the test must really resume");
    let mut banner = vec![0u8; ALLOWED_BANNER.len()];
    s.read_exact(&mut banner)
        .expect("banner of the resumed session");
    assert_eq!(banner, ALLOWED_BANNER);
    let sess = s.ssl().session().expect("session").to_owned();
    let _ = exchange(&mut s, b"bye");
    // Let the certificate expire: this test is about time passing.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let mut ssl = client.ssl(Some("allowed"));
    // SAFETY: the session comes from a connection made with this client's SslContext.
    unsafe { ssl.set_session(&sess).expect("set_session") };
    let mut s = connect_ssl(ssl, f.gw.addr).expect("resumed handshake");
    assert!(s.ssl().session_reused(), "the test must really resume");
    let peer = local_addr(&s);
    let (got, _) = exchange(&mut s, b"ping\n");
    assert!(
        !got.starts_with(ALLOWED_BANNER),
        "expired certificate reached the backend: {got:?}"
    );
    let ev = f.gw.audit_for(peer);
    assert_eq!(field(&ev, "result"), "handshake_failed", "{ev}");
    assert!(boolean(&ev, "resumed"), "{ev}");
    assert_eq!(
        field(&ev, "reason"),
        "resumed session refused: client certificate no longer valid: certificate has expired",
        "{ev}"
    );
    // Positive control: a client with a valid certificate is still served.
    let fresh = f._pki.client("alice");
    assert_serves(&mut f.gw, &fresh, &f._pki.ca_crt, Some("allowed"));
}
