//! Revocation by CRL over a gateway's life: a CRL rewritten in place (temporary file, then
//! rename, or `tunnel-server pki revoke`) is picked up without a signal; the newly revoked
//! client (or every client of a revoked intermediate CA) is refused on its next connection,
//! even with a TLS session from before, while open tunnels keep flowing unless
//! `revoke_established = true` cuts them; others are unaffected. A forged or truncated CRL is
//! refused and the previous one stays in force. A CRL past its nextUpdate refuses
//! (`crl_expired = "deny"`, the default) or only warns (`"warn"`).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use tunnel_core::pki::make_crl;
use tunnel_tests::backend::{connect, round_trip};
use tunnel_tests::data::{pattern_bytes, sha256_hex};
use tunnel_tests::pki::toml_str;
use tunnel_tests::process::count_reloads;
use tunnel_tests::process::{is_audit, number};
use tunnel_tests::tls::{exchange, local_addr, TlsClient};
use tunnel_tests::*;

/// Bytes per echo round of a long-lived stream.
const ROUND: usize = 32 * 1024;

/// Publishes a CRL of `pki`'s CA revoking `revoked` at `path` the way a CRL publisher
/// should: written to a temporary file in the same directory, then renamed over the old one,
/// so the gateway never reads half a file.
fn publish_crl(pki: &Pki, path: &Path, revoked: &[&Creds]) {
    let certs: Vec<_> = revoked.iter().map(|c| &c.issued.cert).collect();
    let crl = make_crl(pki.ca(), &certs, -1, 7).expect("CRL");
    let tmp = pki.unique_path("crl-next", "tmp");
    std::fs::write(&tmp, crl.to_pem().expect("PEM")).expect("write CRL");
    std::fs::rename(&tmp, path).expect("rename CRL into place");
}

/// Rewrites the CRL at `path` to revoke `revoked` and waits until the gateway has reloaded
/// (from the file change alone: no signal is sent).
fn revoke_and_wait(gw: &Gateway, pki: &Pki, path: &Path, revoked: &[&Creds]) {
    let before = count_reloads(&gw.events());
    publish_crl(pki, path, revoked);
    gw.wait_until(
        "configuration reloaded after the CRL changed",
        PROMPT,
        |evs| (count_reloads(evs) > before).then_some(()),
    );
}

/// A gateway in `pki`'s directory with `crl = ["crl.pem"]` (revoking nothing yet), polling
/// its files every second besides inotify, `top` as more top-level keys, and one backend
/// `echo` that every verified client may reach.
fn crl_gateway(pki: &Pki, echo: &Backend, top: &str) -> (Gateway, PathBuf) {
    let crl = pki.dir().join("crl.pem");
    publish_crl(pki, &crl, &[]);
    let gw = Gateway::start(
        pki,
        &format!(
            "crl = [\"crl.pem\"]\nreload_interval = \"1s\"\n{top}\n{}",
            backend_toml("echo", echo.addr, "\"any\"")
        ),
    );
    (gw, crl)
}

/// A long-lived connection through a client agent to an echo backend: every round sends a
/// new chunk of a known pattern and checks that exactly it comes back.
struct EchoStream {
    s: TcpStream,
    seed: u64,
    rounds: u64,
}

impl EchoStream {
    fn open(addr: SocketAddr, seed: u64) -> EchoStream {
        EchoStream {
            s: connect(addr),
            seed,
            rounds: 0,
        }
    }

    /// Bytes sent (and echoed) so far.
    fn bytes(&self) -> u64 {
        self.rounds * ROUND as u64
    }

    /// One chunk there and back, compared by SHA-256.
    fn round(&mut self) {
        let chunk = pattern_bytes(self.seed * 1000 + self.rounds, ROUND);
        self.s.write_all(&chunk).expect("write to the tunnel");
        let mut back = vec![0u8; ROUND];
        self.s
            .read_exact(&mut back)
            .unwrap_or_else(|e| panic!("echo of round {} (seed {}): {e}", self.rounds, self.seed));
        assert_eq!(
            sha256_hex(&back),
            sha256_hex(&chunk),
            "round {} of stream {} came back changed",
            self.rounds,
            self.seed
        );
        self.rounds += 1;
    }

    /// Half-closes and expects a clean EOF with nothing more; returns the bytes moved.
    fn finish(mut self) -> u64 {
        self.s.shutdown(Shutdown::Write).expect("half-close");
        let (rest, err) = data::read_all(&mut self.s);
        assert!(err.is_none(), "stream {} ended with {err:?}", self.seed);
        assert!(
            rest.is_empty(),
            "stream {}: {} stray bytes",
            self.seed,
            rest.len()
        );
        self.bytes()
    }

    /// Expects the tunnel to be closed by the other side (EOF or reset, not a read timeout)
    /// without any byte that was not sent.
    fn expect_cut(mut self) {
        let mut buf = [0u8; 1024];
        match self.s.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("stream {}: {n} unexpected bytes", self.seed),
            Err(e) => assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "stream {} was not closed within {PROMPT:?}",
                self.seed
            ),
        }
    }
}

/// The first audit event of the client with common name `cn`.
fn first_audit_of(gw: &Gateway, cn: &str) -> serde_json::Value {
    let subject = format!("CN={cn}");
    gw.wait_for_audit(PROMPT, |e| field(e, "subject") == subject)
}

/// The audit event of `cn`'s tunnel that carried `bytes` bytes up.
fn audit_of_stream(gw: &Gateway, cn: &str, bytes: u64) -> serde_json::Value {
    let subject = format!("CN={cn}");
    gw.wait_for_audit(PROMPT, |e| {
        field(e, "subject") == subject && e.get("bytes_up").and_then(|v| v.as_u64()) == Some(bytes)
    })
}

/// A new connection through `agent` gets nothing through.
fn assert_agent_gets_nothing(agent: &Agent) {
    let mut s = connect(agent.addr());
    let (got, _) = round_trip(&mut s, b"let me in");
    assert!(got.is_empty(), "a revoked client got {got:?} back");
}

/// A new connection through `agent` echoes.
fn assert_agent_echoes(agent: &Agent, msg: &[u8]) {
    let mut s = connect(agent.addr());
    let (got, err) = round_trip(&mut s, msg);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, msg);
}

#[test]
fn rewritten_crl_refuses_new_connections_and_keeps_established_tunnels() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let alice = pki.client("alice");
    let bob = pki.client("bob");
    let (gw, crl) = crl_gateway(&pki, &echo, "");
    let alice_agent = Agent::start(&pki, gw.addr, &alice, &["echo"]);
    let bob_agent = Agent::start(&pki, gw.addr, &bob, &["echo"]);
    let mut a = EchoStream::open(alice_agent.addr(), 1);
    let mut b = EchoStream::open(bob_agent.addr(), 2);
    a.round();
    b.round();
    assert_eq!(echo.accepted(), 2);

    revoke_and_wait(&gw, &pki, &crl, &[&alice]);

    // Alice's next connection is refused during the handshake: the backend is not dialled.
    assert_agent_gets_nothing(&alice_agent);
    let ev = first_audit_of(&gw, "alice");
    assert_eq!(field(&ev, "result"), "revoked", "{ev}");
    assert!(field(&ev, "reason").contains("revoked"), "{ev}");
    assert_eq!(echo.accepted(), 2, "a revoked client reached the backend");
    // Bob is not affected.
    assert_agent_echoes(&bob_agent, b"bob after the new CRL");

    // The tunnels opened before the reload keep flowing and end normally.
    for _ in 0..3 {
        a.round();
        b.round();
    }
    let (a_bytes, b_bytes) = (a.finish(), b.finish());
    for (cn, bytes) in [("alice", a_bytes), ("bob", b_bytes)] {
        let ev = audit_of_stream(&gw, cn, bytes);
        assert_eq!(field(&ev, "result"), "ok", "{ev}");
        assert_eq!(number(&ev, "bytes_down"), bytes, "{ev}");
    }
}

#[test]
fn revoke_established_closes_open_tunnels_of_newly_revoked_certificates() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let alice = pki.client("alice");
    let bob = pki.client("bob");
    let (gw, crl) = crl_gateway(&pki, &echo, "revoke_established = true");
    let alice_agent = Agent::start(&pki, gw.addr, &alice, &["echo"]);
    let bob_agent = Agent::start(&pki, gw.addr, &bob, &["echo"]);
    let mut a = EchoStream::open(alice_agent.addr(), 3);
    let mut b = EchoStream::open(bob_agent.addr(), 4);
    a.round();
    a.round();
    b.round();
    let a_bytes = a.bytes();

    revoke_and_wait(&gw, &pki, &crl, &[&alice]);

    a.expect_cut();
    let ev = first_audit_of(&gw, "alice");
    assert_eq!(field(&ev, "result"), "revoked", "{ev}");
    assert!(field(&ev, "reason").contains("revoke_established"), "{ev}");
    assert_eq!(number(&ev, "bytes_up"), a_bytes, "{ev}");
    let cut = gw.wait_for_message(
        "closed open connections of certificates revoked by the new CRL",
        PROMPT,
    );
    assert_eq!(number(&cut, "connections"), 1, "{cut}");

    // Alice cannot come back; bob's open tunnel and new connections are untouched.
    assert_agent_gets_nothing(&alice_agent);
    for _ in 0..3 {
        b.round();
    }
    assert_agent_echoes(&bob_agent, b"bob keeps going");
    let b_bytes = b.finish();
    let ev = audit_of_stream(&gw, "bob", b_bytes);
    assert_eq!(field(&ev, "result"), "ok", "{ev}");
    let alice_results: Vec<String> = gw
        .audits()
        .iter()
        .filter(|e| field(e, "subject") == "CN=alice")
        .map(|e| field(e, "result").to_string())
        .collect();
    assert!(
        alice_results.iter().all(|r| r == "revoked"),
        "alice: {alice_results:?}"
    );
}

/// Connects to `gw` as `creds` with SNI `echo` and sends `msg`; returns what came back and the
/// audit event.
fn attempt(pki: &Pki, gw: &Gateway, creds: &Creds, msg: &[u8]) -> (Vec<u8>, serde_json::Value) {
    let client = TlsClient::new(creds, &pki.ca_crt);
    let mut s = client
        .connect(gw.addr, Some("echo"))
        .expect("with TLS 1.3 the client finishes its side of the handshake");
    let peer = local_addr(&s);
    let (got, _) = exchange(&mut s, msg);
    (got, gw.audit_for(peer))
}

#[test]
fn expired_crl_denies_by_default_and_only_warns_when_configured() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let alice = pki.client("alice");
    let mallory = pki.client("mallory");
    // Issued ten days ago, nextUpdate nine days ago; it still lists mallory.
    let crl = make_crl(pki.ca(), &[&mallory.issued.cert], -10, 1).expect("CRL");
    let crl_path = pki.unique_path("crl-expired", "pem");
    std::fs::write(&crl_path, crl.to_pem().unwrap()).unwrap();
    let top = format!("crl = [{}]\n", toml_str(&crl_path));

    let deny = Gateway::start(
        &pki,
        &format!("{top}{}", backend_toml("echo", echo.addr, "\"any\"")),
    );
    let (got, ev) = attempt(&pki, &deny, &alice, b"stale list");
    assert!(got.is_empty(), "got {got:?} past an expired CRL");
    assert_eq!(field(&ev, "result"), "crl_expired", "{ev}");
    assert_eq!(field(&ev, "subject"), "CN=alice", "{ev}");
    assert!(field(&ev, "reason").contains("nextUpdate"), "{ev}");
    assert_eq!(echo.accepted(), 0);

    let warn = Gateway::start(
        &pki,
        &format!(
            "{top}crl_expired = \"warn\"\nmetrics = \"127.0.0.1:0\"\n{}",
            backend_toml("echo", echo.addr, "\"any\"")
        ),
    );
    let metrics = warn.metrics_addr();
    let (got, ev) = attempt(&pki, &warn, &alice, b"stale but tolerated");
    assert_eq!(got, b"stale but tolerated");
    assert_eq!(field(&ev, "result"), "ok", "{ev}");
    // "warn" keeps using the list: what it revokes stays revoked.
    let (got, ev) = attempt(&pki, &warn, &mallory, b"still revoked");
    assert!(got.is_empty(), "got {got:?}");
    assert_eq!(field(&ev, "result"), "revoked", "{ev}");
    assert_eq!(echo.accepted(), 1);
    // Both say so at start, and the metric shows the time left as negative.
    for gw in [&deny, &warn] {
        gw.wait_for("an error about the expired CRL", PROMPT, |e| {
            field(e, "level") == "ERROR" && field(e, "which") == "crl"
        });
    }
    let left = crl_seconds_left(metrics);
    assert!(
        (-10 * 86_400..=-9 * 86_400).contains(&left),
        "certificate_expiry_seconds{{which=\"crl\"}} = {left}, want about -9 days"
    );
    // Neither gateway logged a connection as ok that it should have refused.
    assert!(deny.audits().iter().all(|e| field(e, "result") != "ok"));
    assert!(warn
        .audits()
        .iter()
        .filter(|e| is_audit(e) && field(e, "result") == "ok")
        .all(|e| field(e, "subject") == "CN=alice"));
}

#[test]
fn revoke_established_also_cuts_clients_of_a_revoked_intermediate_ca() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let (inter, carol) = pki.via_intermediate("carol");
    let dave = pki.client("dave");
    // Revocation at the root's level only: the intermediate publishes no CRL.
    let (gw, crl) = crl_gateway(
        &pki,
        &echo,
        "revoke_established = true\ncrl_check = \"available\"",
    );
    let carol_agent = Agent::start(&pki, gw.addr, &carol, &["echo"]);
    let dave_agent = Agent::start(&pki, gw.addr, &dave, &["echo"]);
    let mut c = EchoStream::open(carol_agent.addr(), 5);
    let mut d = EchoStream::open(dave_agent.addr(), 6);
    c.round();
    d.round();

    // The intermediate is revoked: every certificate it issued is, for new connections and
    // for open tunnels alike.
    revoke_and_wait(&gw, &pki, &crl, &[&inter]);
    assert_agent_gets_nothing(&carol_agent);
    c.expect_cut();
    let results: Vec<String> = gw.wait_until("carol's two audit events", PROMPT, |evs| {
        let v: Vec<String> = evs
            .iter()
            .filter(|e| is_audit(e) && field(e, "subject") == "CN=carol")
            .map(|e| field(e, "result").to_string())
            .collect();
        (v.len() >= 2).then_some(v)
    });
    assert_eq!(results, ["revoked", "revoked"], "carol");
    d.round();
    let d_bytes = d.finish();
    assert_eq!(
        field(&audit_of_stream(&gw, "dave", d_bytes), "result"),
        "ok"
    );
}

#[test]
fn forged_or_broken_crl_is_refused_and_the_previous_list_stays_in_force() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let alice = pki.client("alice");
    let bob = pki.client("bob");
    let (gw, crl) = crl_gateway(&pki, &echo, "");
    revoke_and_wait(&gw, &pki, &crl, &[&alice]);

    // Same CA name, another key: an empty CRL that would lift alice's revocation.
    let rogue = Pki::named("Tunnel Test CA");
    let forged = make_crl(rogue.ca(), &[], -1, 7).unwrap().to_pem().unwrap();
    let truncated = {
        let good = make_crl(pki.ca(), &[], -1, 7).unwrap().to_pem().unwrap();
        good[..good.len() / 2].to_vec()
    };
    for (what, pem) in [("forged", forged), ("truncated", truncated)] {
        let before = gw.events().len();
        let tmp = pki.unique_path("crl-bad", "tmp");
        std::fs::write(&tmp, pem).unwrap();
        std::fs::rename(&tmp, &crl).unwrap();
        let ev = gw.wait_until("reload refused", PROMPT, |evs| {
            evs[before..]
                .iter()
                .find(|e| field(e, "message").contains("reload refused"))
                .cloned()
        });
        assert!(field(&ev, "error").contains("crl"), "{what}: {ev}");
        let (got, ev) = attempt(&pki, &gw, &alice, b"unrevoke me");
        assert!(got.is_empty(), "{what} CRL: alice got {got:?}");
        assert_eq!(field(&ev, "result"), "revoked", "{what}: {ev}");
        let (got, ev) = attempt(&pki, &gw, &bob, b"bob");
        assert_eq!(got, b"bob", "{what}");
        assert_eq!(field(&ev, "result"), "ok", "{what}: {ev}");
    }
}

/// A full handshake of `client` with SNI `echo`; returns the session (with its TLS 1.3 ticket,
/// which arrives after the handshake: the echo is read first).
/// A session of `client`, from a resumed connection: the gateway has then verified the chain
/// again and remembers that verification (tls/reverified.rs) for the revocation to defeat.
fn session_of(gw: &Gateway, client: &TlsClient) -> openssl::ssl::SslSession {
    let mut s = client.connect(gw.addr, Some("echo")).expect("handshake");
    let peer = local_addr(&s);
    let (got, _) = exchange(&mut s, b"before");
    assert_eq!(got, b"before");
    assert_eq!(field(&gw.audit_for(peer), "result"), "ok");
    let first = s.ssl().session().expect("session").to_owned();
    let mut ssl = client.ssl(Some("echo"));
    // SAFETY: the session comes from a connection of the same SslContext (`client`).
    unsafe { ssl.set_session(&first).expect("set_session") };
    let mut s = tls::connect_ssl(ssl, gw.addr).expect("resumed handshake");
    assert!(s.ssl().session_reused(), "the test must really resume");
    let peer = local_addr(&s);
    let (got, _) = exchange(&mut s, b"before");
    assert_eq!(got, b"before");
    assert_eq!(field(&gw.audit_for(peer), "result"), "ok");
    s.ssl().session().expect("session").to_owned()
}

/// A TLS session from before a CRL change must not carry a now revoked client (or a client
/// of a now revoked CA) back in, whether the gateway resumes it (then only the checks after
/// the handshake stand in the way) or falls back to a full handshake.
#[test]
fn session_from_before_the_revocation_does_not_let_the_client_back_in() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let alice = pki.client("alice");
    let (inter, carol) = pki.via_intermediate("carol");
    // Revocation at the root's level only: the intermediate publishes no CRL.
    let (gw, crl) = crl_gateway(&pki, &echo, "crl_check = \"available\"");
    let clients = [
        ("alice", TlsClient::new(&alice, &pki.ca_crt)),
        ("carol", TlsClient::new(&carol, &pki.ca_crt)),
    ];
    let sessions: Vec<_> = clients.iter().map(|(_, c)| session_of(&gw, c)).collect();
    assert_eq!(echo.accepted(), 4);

    // Alice herself, and the CA that issued carol's certificate.
    revoke_and_wait(&gw, &pki, &crl, &[&alice, &inter]);
    for ((cn, client), sess) in clients.iter().zip(&sessions) {
        let mut ssl = client.ssl(Some("echo"));
        // SAFETY: the session comes from a connection of the same SslContext (`client`).
        unsafe { ssl.set_session(sess).expect("set_session") };
        let mut s = tls::connect_ssl(ssl, gw.addr).expect("the client's side of the handshake");
        let peer = local_addr(&s);
        let (got, _) = exchange(&mut s, b"after");
        assert!(
            got.is_empty(),
            "{cn} came back with an old session: {got:?}"
        );
        let ev = gw.audit_for(peer);
        assert_eq!(field(&ev, "result"), "revoked", "{cn}: {ev}");
        assert_eq!(field(&ev, "subject"), format!("CN={cn}"), "{ev}");
    }
    assert_eq!(echo.accepted(), 4, "a revoked client reached the backend");
    // Positive control: a client that is not revoked is still served.
    let mut gw = gw;
    assert_serves(&mut gw, &pki.client("dave"), &pki.ca_crt, Some("echo"));
}

/// Runs `tunnel-server pki ARGS --dir DIR` and expects success.
fn pki_cmd(dir: &Path, args: &[&str]) {
    let mut full = vec!["pki"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--dir", dir.to_str().expect("UTF-8 path")]);
    let out = run_server(&full, READY);
    assert!(
        out.status.success(),
        "tunnel-server {full:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `DIR/NAME.crt` and `DIR/NAME.key` as made by `tunnel-server pki issue`.
fn creds_in(dir: &Path, name: &str) -> Creds {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let issued = tunnel_core::pki::Issued {
        cert: openssl::x509::X509::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
        key: openssl::pkey::PKey::private_key_from_pem(&std::fs::read(&key).unwrap()).unwrap(),
    };
    Creds { cert, key, issued }
}

#[test]
fn pki_revoke_takes_effect_on_a_running_gateway() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    pki_cmd(&dir, &["init", "--name", "Ops CA", "--days", "30"]);
    pki_cmd(
        &dir,
        &["issue", "--server", "localhost", "--ip", "127.0.0.1"],
    );
    pki_cmd(&dir, &["issue", "--client", "alice"]);
    pki_cmd(&dir, &["issue", "--client", "bob"]);
    pki_cmd(&dir, &["crl"]);
    let echo = Backend::echo();
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        Gateway::header().replace("server.", "localhost.")
            + "crl = [\"crl.pem\"]\n"
            + &backend_toml("echo", echo.addr, "\"any\""),
    )
    .unwrap();
    let gw = Gateway::start_file(&config);
    let ca = dir.join("ca.crt");
    let (alice, bob) = (creds_in(&dir, "alice"), creds_in(&dir, "bob"));
    let try_as = |creds: &Creds, msg: &[u8]| {
        let mut s = TlsClient::new(creds, &ca)
            .connect(gw.addr, Some("echo"))
            .expect("handshake");
        let peer = local_addr(&s);
        let (got, _) = exchange(&mut s, msg);
        (got, gw.audit_for(peer))
    };
    assert_eq!(try_as(&alice, b"before").0, b"before");

    // One command, no signal: the gateway notices the rewritten crl.pem.
    let before = count_reloads(&gw.events());
    pki_cmd(
        &dir,
        &["revoke", "--cert", dir.join("alice.crt").to_str().unwrap()],
    );
    gw.wait_until("configuration reloaded after pki revoke", PROMPT, |evs| {
        (count_reloads(evs) > before).then_some(())
    });
    let (got, ev) = try_as(&alice, b"after");
    assert!(got.is_empty(), "revoked alice got {got:?}");
    assert_eq!(field(&ev, "result"), "revoked", "{ev}");
    let (got, ev) = try_as(&bob, b"bob");
    assert_eq!(got, b"bob");
    assert_eq!(field(&ev, "result"), "ok", "{ev}");
}

/// `tunnel_certificate_expiry_seconds{which="crl"}` from the metrics endpoint at `addr`.
fn crl_seconds_left(addr: SocketAddr) -> i64 {
    backend::wait_accepting(addr, PROMPT, "the metrics endpoint");
    let mut s = connect(addr);
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (body, _) = data::read_all(&mut s);
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find(|l| l.starts_with("tunnel_certificate_expiry_seconds{which=\"crl\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as i64)
        .unwrap_or_else(|| panic!("no CRL expiry metric in:\n{text}"))
}
