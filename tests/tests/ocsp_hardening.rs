//! OCSP as an attacker sees it, against a real `openssl ocsp` responder: a revoked client
//! that appends a forged "issuer" to its chain (the CA's public key under the CA's name in
//! another case) must not turn the responder's answer into `unknown` or a failure that
//! `ocsp = "prefer"` lets through, nor leave a cached non-answer that lets its next, plain
//! connection in.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::extension::BasicConstraints;
use openssl::x509::{X509Builder, X509NameBuilder};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use tunnel_tests::ocsp::{openssl_bin, Responder, Status};
use tunnel_tests::process::{is_audit, run_with_input};
use tunnel_tests::tls::{exchange, local_addr, TlsClient};
use tunnel_tests::*;

/// A certificate named like the fixture's CA ("tunnel  test ca": other case, other spacing,
/// equal to OpenSSL's loose name comparison) that carries the CA's real public key, so it
/// "verifies" every client certificate; signed by a key of the attacker's.
fn forged_issuer(pki: &Pki) -> PathBuf {
    let mut nb = X509NameBuilder::new().unwrap();
    nb.append_entry_by_nid(Nid::COMMONNAME, "tunnel  test ca")
        .unwrap();
    let name = nb.build();
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let attacker = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&pki.ca().cert.public_key().unwrap()).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.sign(&attacker, MessageDigest::sha256()).unwrap();
    let path = pki.unique_path("forged-issuer", "pem");
    std::fs::write(&path, b.build().to_pem().unwrap()).unwrap();
    path
}

/// `openssl s_client` as `creds`, sending `chain` after its certificate when given; returns
/// what came back (the gateway closes a refused connection, which ends s_client).
fn s_client(pki: &Pki, gw: &Gateway, creds: &Creds, chain: Option<&PathBuf>) -> Vec<u8> {
    let mut cmd = Command::new(openssl_bin());
    cmd.args(["s_client", "-quiet", "-nocommands"])
        .args(["-connect", &gw.addr.to_string(), "-servername", "echo"])
        .arg("-cert")
        .arg(&creds.cert)
        .arg("-key")
        .arg(&creds.key)
        .arg("-CAfile")
        .arg(&pki.ca_crt);
    if let Some(c) = chain {
        cmd.arg("-cert_chain").arg(c);
    }
    run_with_input(cmd, Some(b"let me in".to_vec()), Duration::from_secs(30)).stdout
}

/// Waits for the `n`-th (from 1) audit event of subject `CN=cn`.
fn nth_audit_of(gw: &Gateway, cn: &str, n: usize) -> serde_json::Value {
    let subject = format!("CN={cn}");
    gw.wait_until("the audit event", PROMPT, |evs| {
        evs.iter()
            .filter(|e| is_audit(e) && field(e, "subject") == subject)
            .nth(n - 1)
            .cloned()
    })
}

#[test]
fn forged_issuer_in_the_chain_does_not_let_a_revoked_client_in() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let revoked = pki.client("revoked");
    let good = pki.client("good");
    let responder = Responder::start(&pki, &[(&revoked, Status::Revoked), (&good, Status::Valid)]);
    let forged = forged_issuer(&pki);
    for mode in ["prefer", "require"] {
        let base = echo.accepted();
        let gw = Gateway::start(
            &pki,
            &format!(
                "ocsp = \"{mode}\"\nocsp_responder = \"{}\"\n{}",
                responder.url(),
                backend_toml("echo", echo.addr, "\"any\"")
            ),
        );
        let got = s_client(&pki, &gw, &revoked, Some(&forged));
        assert!(got.is_empty(), "{mode}: forged chain got {got:?}");
        let ev = nth_audit_of(&gw, "revoked", 1);
        assert_eq!(
            field(&ev, "result"),
            "revoked",
            "{mode}, forged chain: {ev}"
        );
        // The next connection, without the forgery, finds no cached non-answer.
        let got = s_client(&pki, &gw, &revoked, None);
        assert!(got.is_empty(), "{mode}: got {got:?}");
        let ev = nth_audit_of(&gw, "revoked", 2);
        assert_eq!(field(&ev, "result"), "revoked", "{mode}, plain chain: {ev}");
        assert_eq!(
            echo.accepted(),
            base,
            "{mode}: a revoked client reached the backend"
        );
        // Positive control: a good client is served.
        let mut s = TlsClient::new(&good, &pki.ca_crt)
            .connect(gw.addr, Some("echo"))
            .expect("handshake");
        let peer = local_addr(&s);
        assert_eq!(exchange(&mut s, b"good").0, b"good");
        assert_eq!(field(&gw.audit_for(peer), "result"), "ok");
        assert_eq!(echo.accepted(), base + 1);
    }
}

/// A gate the OCSP queries wait at until the test opens it.
#[derive(Clone, Default)]
struct Gate(std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    fn wait(&self) {
        let (open, cv) = &*self.0;
        let guard = open.lock().unwrap();
        let _open = cv.wait_while(guard, |o| !*o).unwrap();
    }

    fn open(&self) {
        let (open, cv) = &*self.0;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
}

/// A loopback proxy in front of `responder` that counts the OCSP queries reaching it and
/// holds each one at `gate` until the test opens it.
fn counting_proxy(responder: std::net::SocketAddr, gate: Gate) -> Backend {
    Backend::spawn(move |client| {
        gate.wait();
        let Ok(upstream) = std::net::TcpStream::connect(responder) else {
            return;
        };
        let (Ok(mut c_read), Ok(mut u_write)) = (client.try_clone(), upstream.try_clone()) else {
            return;
        };
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut c_read, &mut u_write);
        });
        let (mut u_read, mut c_write) = (upstream, client);
        let _ = std::io::copy(&mut u_read, &mut c_write);
        let _ = c_write.shutdown(std::net::Shutdown::Both);
    })
}

/// Concurrent connections of one certificate wait on one OCSP query: the query is held
/// until the gateway has completed all their TLS handshakes (its handshake histogram counts
/// them; each then waits for the OCSP answer, `require`), so the answer cache alone cannot
/// explain a single query.
#[test]
fn concurrent_new_clients_share_one_ocsp_query() {
    const CLIENTS: usize = 8;
    let pki = Pki::new();
    let echo = Backend::echo();
    let alice = pki.client("alice");
    let bob = pki.client("bob");
    let responder = Responder::start(&pki, &[(&alice, Status::Valid), (&bob, Status::Valid)]);
    let gate = Gate::default();
    let proxy = counting_proxy(responder.addr, gate.clone());
    let gw = Gateway::start(
        &pki,
        &format!(
            "metrics = \"127.0.0.1:0\"\nocsp = \"require\"\nocsp_responder = \"http://{}\"\n{}",
            proxy.addr,
            backend_toml("echo", echo.addr, "\"any\"")
        ),
    );
    let maddr = http::metrics_addr(&gw);
    let start = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (start, alice, ca) = (start.clone(), alice.clone(), pki.ca_crt.clone());
            let addr = gw.addr;
            std::thread::spawn(move || {
                let client = TlsClient::new(&alice, &ca);
                start.wait();
                let mut s = client.connect(addr, Some("echo")).expect("handshake");
                let msg = format!("client {i}");
                let (got, _) = exchange(&mut s, msg.as_bytes());
                assert_eq!(got, msg.as_bytes(), "client {i}");
            })
        })
        .collect();
    // All handshakes done on the gateway's side (each connection goes straight on to the
    // OCSP check) and the query held at the gate: only then is it answered.
    admin::wait_until("all handshakes done and the query held", PROMPT, || {
        let body = http::get(maddr, "/metrics").1;
        let done = http::sample(&body, "tunnel_handshake_duration_seconds_count");
        done == Some(CLIENTS as f64) && proxy.accepted() >= 1
    });
    gate.open();
    for t in threads {
        t.join().expect("client thread");
    }
    // Each audit line is written when its tunnel closes, possibly after the client is done.
    gw.wait_until("an ok audit line per client", PROMPT, |evs| {
        let oks = evs
            .iter()
            .filter(|e| field(e, "subject") == "CN=alice" && field(e, "result") == "ok")
            .count();
        (oks == CLIENTS).then_some(())
    });
    assert_eq!(
        proxy.accepted(),
        1,
        "{CLIENTS} concurrent connections of one certificate made {} OCSP queries",
        proxy.accepted()
    );
    // Another certificate gets its own query; alice's answer is now cached.
    for creds in [&bob, &alice] {
        let mut s = TlsClient::new(creds, &pki.ca_crt)
            .connect(gw.addr, Some("echo"))
            .expect("handshake");
        let peer = local_addr(&s);
        assert_eq!(exchange(&mut s, b"again").0, b"again");
        assert_eq!(field(&gw.audit_for(peer), "result"), "ok");
    }
    assert_eq!(proxy.accepted(), 2);
}

/// An HTTP server that answers every OCSP query with `der`, recorded earlier.
fn replaying_responder(der: Vec<u8>) -> Backend {
    use std::io::{Read, Write};
    Backend::spawn(move |mut s| {
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        // Read the whole request (head and Content-Length body) before answering.
        loop {
            let Ok(n) = s.read(&mut buf) else { return };
            if n == 0 {
                return;
            }
            req.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if req.len() >= end + 4 + len {
                    break;
                }
            }
        }
        let head = format!(
            "HTTP/1.0 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: {}\r\n\r\n",
            der.len()
        );
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(&der);
    })
}

#[test]
fn replayed_response_with_another_nonce_is_refused() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let alice = pki.client("alice");
    let responder = Responder::start(&pki, &[(&alice, Status::Valid)]);
    // A genuine "good" answer about alice, to a query with openssl's own nonce.
    let recorded = tunnel_tests::ocsp::fetch_der(&pki, &alice, &responder.url());
    let replayer = replaying_responder(recorded);
    let gw = Gateway::start(
        &pki,
        &format!(
            "ocsp = \"require\"\nocsp_responder = \"http://{}\"\n{}",
            replayer.addr,
            backend_toml("echo", echo.addr, "\"any\"")
        ),
    );
    let mut s = TlsClient::new(&alice, &pki.ca_crt)
        .connect(gw.addr, Some("echo"))
        .expect("handshake");
    let peer = local_addr(&s);
    let (got, _) = exchange(&mut s, b"replayed");
    assert!(got.is_empty(), "got {got:?} on a replayed OCSP answer");
    let ev = gw.audit_for(peer);
    assert_eq!(field(&ev, "result"), "denied", "{ev}");
    assert!(field(&ev, "reason").contains("nonce"), "{ev}");
    assert_eq!(replayer.accepted(), 1);
    assert_eq!(echo.accepted(), 0);
    // Positive control: the live responder echoes the gateway's nonce and is believed.
    let gw = Gateway::start(
        &pki,
        &format!(
            "ocsp = \"require\"\nocsp_responder = \"{}\"\n{}",
            responder.url(),
            backend_toml("echo", echo.addr, "\"any\"")
        ),
    );
    let mut s = TlsClient::new(&alice, &pki.ca_crt)
        .connect(gw.addr, Some("echo"))
        .expect("handshake");
    let peer = local_addr(&s);
    assert_eq!(exchange(&mut s, b"live").0, b"live");
    assert_eq!(field(&gw.audit_for(peer), "result"), "ok");
}
