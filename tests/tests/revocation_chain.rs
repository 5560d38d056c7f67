//! CRL checking along the whole client chain (root -> intermediate -> clients, `client_ca` =
//! the root): it fails closed when a CA of the chain has no CRL (audit `crl_missing`) unless
//! `crl_check` opts out; a CRL issued by the intermediate is accepted and applied; `check`
//! and the start-up log name each CA without a CRL. Also: a connection accepted before a
//! reload is decided entirely under the configuration in force after it.

use std::path::PathBuf;
use tunnel_core::pki::{self, make_crl, CertSpec, Issued};
use tunnel_tests::pki::toml_str;
use tunnel_tests::tls::{exchange, local_addr, TlsClient};
use tunnel_tests::*;

/// An intermediate CA under `pki`'s root, and clients it issued (chain files: leaf, then
/// the intermediate, as a client agent sends them).
struct Intermediate {
    ca: Issued,
}

impl Intermediate {
    fn new(pki: &Pki, name: &str) -> Intermediate {
        let spec = CertSpec {
            usage: pki::Usage::Ca,
            ..CertSpec::client(name)
        };
        Intermediate {
            ca: pki::new_leaf(pki.ca(), &spec).expect("intermediate"),
        }
    }

    fn client(&self, pki: &Pki, cn: &str) -> Creds {
        let issued = pki::new_leaf(&self.ca, &CertSpec::client(cn)).expect("issue");
        let cert = pki.unique_path(cn, "chain.pem");
        let key = pki.unique_path(cn, "key");
        let mut pem = issued.cert.to_pem().expect("PEM");
        pem.extend(self.ca.cert.to_pem().expect("PEM"));
        std::fs::write(&cert, pem).expect("write chain");
        pki::write_private(
            &key,
            &issued.key.private_key_to_pem_pkcs8().expect("key PEM"),
        )
        .expect("write key");
        Creds { cert, key, issued }
    }

    /// A CRL signed by this intermediate revoking `revoked`.
    fn crl(&self, pki: &Pki, revoked: &[&Creds]) -> PathBuf {
        write_crl(pki, &self.ca, revoked)
    }
}

fn write_crl(pki: &Pki, ca: &Issued, revoked: &[&Creds]) -> PathBuf {
    let certs: Vec<_> = revoked.iter().map(|c| &c.issued.cert).collect();
    let crl = make_crl(ca, &certs, -1, 7).expect("CRL");
    let path = pki.unique_path("crl", "pem");
    std::fs::write(&path, crl.to_pem().expect("PEM")).expect("write CRL");
    path
}

/// A gateway with `crl = crls`, `extra` top-level keys and a backend `echo` for everyone.
fn gateway(pki: &Pki, echo: &Backend, crls: &[&PathBuf], extra: &str) -> Gateway {
    let list: Vec<String> = crls.iter().map(|p| toml_str(p)).collect();
    Gateway::start(
        pki,
        &format!(
            "crl = [{}]\n{extra}\n{}",
            list.join(", "),
            backend_toml("echo", echo.addr, "\"any\"")
        ),
    )
}

/// Connects as `creds` and asserts the audit result `want`; `ok` means the message echoed,
/// anything else means nothing came back and the backend was not dialled.
fn expect(pki: &Pki, gw: &Gateway, echo: &Backend, creds: &Creds, want: &str) -> serde_json::Value {
    let before = echo.accepted();
    let mut s = TlsClient::new(creds, &pki.ca_crt)
        .connect(gw.addr, Some("echo"))
        .expect("the client's side of the handshake");
    let peer = local_addr(&s);
    let (got, _) = exchange(&mut s, b"hello");
    let ev = gw.audit_for(peer);
    assert_eq!(field(&ev, "result"), want, "{ev}");
    if want == "ok" {
        assert_eq!(got, b"hello");
        assert_eq!(echo.accepted(), before + 1);
    } else {
        assert!(got.is_empty(), "refused, yet got {got:?}");
        assert_eq!(echo.accepted(), before, "the backend was dialled");
    }
    ev
}

#[test]
fn client_of_a_ca_without_crl_is_refused_unless_crl_check_opts_out() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let inter = Intermediate::new(&pki, "Issuing CA One");
    let carol = inter.client(&pki, "carol");
    let alice = pki.client("alice");
    // The root's CRL only: the intermediate publishes none.
    let root_crl = write_crl(&pki, pki.ca(), &[]);

    let gw = gateway(&pki, &echo, &[&root_crl], "");
    let ev = expect(&pki, &gw, &echo, &carol, "crl_missing");
    assert!(field(&ev, "reason").contains("Issuing CA One"), "{ev}");
    assert_eq!(field(&ev, "subject"), "CN=carol", "{ev}");
    // Positive control: a client of the root (which has its CRL) is served.
    expect(&pki, &gw, &echo, &alice, "ok");

    // The opt-outs: only the client certificate's issuer needs a CRL ("leaf"), or none does
    // ("available").
    let leaf = gateway(&pki, &echo, &[&root_crl], "crl_check = \"leaf\"");
    expect(&pki, &leaf, &echo, &carol, "crl_missing");
    expect(&pki, &leaf, &echo, &alice, "ok");
    let available = gateway(&pki, &echo, &[&root_crl], "crl_check = \"available\"");
    expect(&pki, &available, &echo, &carol, "ok");
    // A missing CRL of the root (it issued the intermediate) with the intermediate's CRL
    // present: refused by default, served with "leaf".
    let inter_crl = inter.crl(&pki, &[]);
    let only_inter = gateway(&pki, &echo, &[&inter_crl], "");
    let ev = expect(&pki, &only_inter, &echo, &carol, "crl_missing");
    assert!(field(&ev, "reason").contains("Tunnel Test CA"), "{ev}");
    let leaf = gateway(&pki, &echo, &[&inter_crl], "crl_check = \"leaf\"");
    expect(&pki, &leaf, &echo, &carol, "ok");
}

#[test]
fn crl_of_an_intermediate_ca_revokes_its_client_and_serves_its_sibling() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let inter = Intermediate::new(&pki, "Issuing CA One");
    let carol = inter.client(&pki, "carol");
    let dave = inter.client(&pki, "dave");
    let alice = pki.client("alice");
    let root_crl = write_crl(&pki, pki.ca(), &[]);
    let inter_crl = inter.crl(&pki, &[&carol]);
    let gw = gateway(&pki, &echo, &[&root_crl, &inter_crl], "");
    let ev = expect(&pki, &gw, &echo, &carol, "revoked");
    assert_eq!(field(&ev, "subject"), "CN=carol", "{ev}");
    expect(&pki, &gw, &echo, &dave, "ok");
    expect(&pki, &gw, &echo, &alice, "ok");
}

#[test]
fn crl_claiming_an_intermediate_but_signed_by_another_key_refuses_its_clients() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let inter = Intermediate::new(&pki, "Issuing CA One");
    let carol = inter.client(&pki, "carol");
    // Same name, another key: it cannot vouch for the real intermediate's clients.
    let impostor = Intermediate::new(&pki, "Issuing CA One");
    let forged = impostor.crl(&pki, &[]);
    let root_crl = write_crl(&pki, pki.ca(), &[]);
    let gw = gateway(&pki, &echo, &[&root_crl, &forged], "");
    expect(&pki, &gw, &echo, &carol, "crl_missing");
    // Positive control: with the intermediate's genuine CRL beside the forged one, served.
    let genuine = inter.crl(&pki, &[]);
    let gw = gateway(&pki, &echo, &[&root_crl, &forged, &genuine], "");
    expect(&pki, &gw, &echo, &carol, "ok");
}

#[test]
fn check_and_start_up_name_each_ca_without_crl() {
    let pki = Pki::new();
    let other = Pki::named("Second Root CA");
    // client_ca holds two roots; only the first has a CRL.
    let bundle = pki.unique_path("cas", "pem");
    let mut pem = std::fs::read(&pki.ca_crt).unwrap();
    pem.extend(std::fs::read(&other.ca_crt).unwrap());
    std::fs::write(&bundle, pem).unwrap();
    let root_crl = write_crl(&pki, pki.ca(), &[]);
    let echo = Backend::echo();
    let body = format!(
        "crl = [{}]\n{}",
        toml_str(&root_crl),
        backend_toml("echo", echo.addr, "\"any\"")
    );
    let config = pki.write(
        "server",
        "toml",
        &(Gateway::header().replace(
            "client_ca = \"ca.crt\"",
            &format!("client_ca = {}", toml_str(&bundle)),
        ) + &body),
    );
    let out = run_server(&["check", "--config", config.to_str().unwrap()], READY);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let missing: Vec<&str> = stdout.lines().filter(|l| l.contains("no CRL")).collect();
    assert_eq!(missing.len(), 1, "{stdout}");
    assert!(missing[0].contains("CN=Second Root CA"), "{stdout}");

    let gw = Gateway::start_file(&config);
    let ev = gw.wait_for("a warning naming the CA without CRL", PROMPT, |e| {
        field(e, "level") == "WARN" && field(e, "ca") == "CN=Second Root CA"
    });
    assert!(field(&ev, "message").contains("no CRL"), "{ev}");
    // Positive control: the CA with its CRL still serves.
    let alice = pki.client("alice");
    expect(&pki, &gw, &echo, &alice, "ok");
}

/// A connection accepted (TCP) before a reload that withdraws alice's access finishes its
/// handshake afterwards: it is decided under the new rules, like revocation is.
#[test]
fn connection_accepted_before_a_reload_is_authorized_under_the_new_rules() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let alice = pki.client("alice");
    let bob = pki.client("bob");
    let gw = Gateway::start(
        &pki,
        &backend_toml("echo", echo.addr, "\"cn=alice\", \"cn=bob\""),
    );
    // Accepted now, handshake later.
    let early_alice = backend::connect(gw.addr);
    let early_bob = backend::connect(gw.addr);
    std::fs::write(
        &gw.config,
        Gateway::header() + &backend_toml("echo", echo.addr, "\"cn=bob\""),
    )
    .unwrap();
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    gw.wait_for_message("configuration reloaded", PROMPT);

    let handshake = |tcp: std::net::TcpStream, creds: &Creds| {
        let ssl = TlsClient::new(creds, &pki.ca_crt).ssl(Some("echo"));
        let mut s = ssl.connect(tcp).expect("client side of the handshake");
        let peer = local_addr(&s);
        let (got, _) = exchange(&mut s, b"late");
        (got, gw.audit_for(peer))
    };
    let (got, ev) = handshake(early_alice, &alice);
    assert!(
        got.is_empty(),
        "alice got {got:?} after her access was withdrawn"
    );
    assert_eq!(field(&ev, "result"), "denied", "{ev}");
    assert_eq!(echo.accepted(), 0);
    // Positive control: bob, also accepted before the reload, is served.
    let (got, ev) = handshake(early_bob, &bob);
    assert_eq!(got, b"late");
    assert_eq!(field(&ev, "result"), "ok", "{ev}");
}
