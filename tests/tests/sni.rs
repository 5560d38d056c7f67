//! Backend selection by SNI: a known name reaches its backend (case-insensitively), an unknown
//! name is refused, and a connection without SNI reaches `default_backend` or is refused.

use tunnel_tests::tls::{exchange, local_addr, TlsClient};
use tunnel_tests::*;

struct Fixture {
    pki: Pki,
    alice: Creds,
    one: Backend,
    two: Backend,
}

fn fixture() -> Fixture {
    let pki = Pki::new();
    let alice = pki.client("alice");
    Fixture {
        pki,
        alice,
        one: Backend::banner(b"one\n"),
        two: Backend::banner(b"two\n"),
    }
}

impl Fixture {
    fn gateway(&self, top: &str) -> Gateway {
        Gateway::start(
            &self.pki,
            &format!(
                "{top}\n{}{}",
                backend_toml("one", self.one.addr, "\"any\""),
                backend_toml("two", self.two.addr, "\"any\"")
            ),
        )
    }

    /// Connects with `sni`; returns the bytes received and the audit event.
    fn attempt(&self, gw: &Gateway, sni: Option<&str>) -> (Vec<u8>, serde_json::Value) {
        let client = TlsClient::new(&self.alice, &self.pki.ca_crt);
        match client.connect(gw.addr, sni) {
            Ok(mut s) => {
                let peer = local_addr(&s);
                let (got, _) = exchange(&mut s, b"hi\n");
                (got, gw.audit_for(peer))
            }
            // The SNI callback refuses during the handshake, before the client finishes.
            Err(_) => (
                Vec::new(),
                gw.wait_for_audit(PROMPT, |e| field(e, "result") != "ok"),
            ),
        }
    }
}

#[test]
fn sni_selects_the_backend_case_insensitively() {
    let f = fixture();
    let gw = f.gateway("");
    let (got, ev) = f.attempt(&gw, Some("two"));
    assert_eq!(got, b"two\nhi\n");
    assert_eq!(field(&ev, "backend"), "two", "{ev}");
    let (got, ev) = f.attempt(&gw, Some("ONE"));
    assert_eq!(got, b"one\nhi\n");
    assert_eq!(field(&ev, "backend"), "one", "{ev}");
}

#[test]
fn unknown_sni_is_refused() {
    let f = fixture();
    let gw = f.gateway("default_backend = \"one\"");
    let (got, ev) = f.attempt(&gw, Some("three"));
    assert!(got.is_empty(), "got {got:?}");
    assert_eq!(field(&ev, "result"), "denied", "{ev}");
    assert_eq!(field(&ev, "sni"), "three", "{ev}");
    assert!(field(&ev, "reason").contains("no backend named"), "{ev}");
    assert_eq!((f.one.accepted(), f.two.accepted()), (0, 0));
    let mut gw = gw;
    assert_serves(&mut gw, &f.alice, &f.pki.ca_crt, Some("one"));
}

#[test]
fn no_sni_goes_to_default_backend() {
    let f = fixture();
    let gw = f.gateway("default_backend = \"two\"");
    let (got, ev) = f.attempt(&gw, None);
    assert_eq!(got, b"two\nhi\n");
    assert_eq!(field(&ev, "result"), "ok", "{ev}");
    assert_eq!(field(&ev, "backend"), "two", "{ev}");
    assert_eq!(field(&ev, "sni"), "", "{ev}");
}

#[test]
fn no_sni_without_default_backend_is_refused() {
    let f = fixture();
    let gw = f.gateway("");
    let (got, ev) = f.attempt(&gw, None);
    assert!(got.is_empty(), "got {got:?}");
    assert_eq!(field(&ev, "result"), "denied", "{ev}");
    assert!(field(&ev, "reason").contains("no SNI"), "{ev}");
    assert_eq!((f.one.accepted(), f.two.accepted()), (0, 0));
    let mut gw = gw;
    assert_serves(&mut gw, &f.alice, &f.pki.ca_crt, Some("two"));
}
