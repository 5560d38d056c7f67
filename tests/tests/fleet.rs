//! Fleet behaviour of one gateway: health for the load balancer while draining.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tunnel_tests::tls::{exchange, TlsClient};
use tunnel_tests::*;

/// Polls `/healthz` until it answers `code`; returns how long that took.
fn wait_health(maddr: SocketAddr, code: u16) -> Duration {
    let start = Instant::now();
    loop {
        if http::get(maddr, "/healthz").0 == code {
            return start.elapsed();
        }
        assert!(start.elapsed() < PROMPT, "/healthz never answered {code}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn healthz_fails_at_sigterm_while_new_connections_are_still_served_for_drain_delay() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let maddr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // Longer than the steps between SIGTERM and the late connection may take (PROMPT), so
    // that they cannot outlast it.
    let drain_delay = PROMPT;
    let mut gw = Gateway::start(
        &pki,
        &format!(
            "metrics = \"{maddr}\"\ndrain_delay = \"{}s\"\nshutdown_timeout = \"20s\"\n{}",
            drain_delay.as_secs(),
            backend_toml("data", echo.addr, "\"cn=alice\"")
        ),
    );
    assert_eq!(http::get(maddr, "/healthz"), (200, "ok\n".to_string()));
    let client = TlsClient::new(&pki.client("alice"), &pki.ca_crt);
    let mut open = client.connect(gw.addr, Some("data")).expect("handshake");
    std::io::Write::write_all(&mut open, b"ping").unwrap();
    let mut buf = [0u8; 4];
    std::io::Read::read_exact(&mut open, &mut buf).unwrap();

    let sent = Instant::now();
    gw.terminate();
    wait_health(maddr, 503);
    assert_eq!(http::get(maddr, "/healthz").1, "draining\n");
    // Out of rotation, but still serving: a new connection made during drain_delay works.
    let mut late = client.connect(gw.addr, Some("data")).expect("handshake");
    assert!(sent.elapsed() < drain_delay, "too slow to prove anything");
    assert_eq!(exchange(&mut late, b"late").0, b"late");
    // After drain_delay the listener closes; the open tunnel keeps flowing.
    gw.wait_for_message("draining open connections", drain_delay + PROMPT);
    assert!(sent.elapsed() >= drain_delay);
    let closing = Instant::now();
    while std::net::TcpStream::connect(gw.addr).is_ok() {
        assert!(
            closing.elapsed() < PROMPT,
            "still accepting after drain_delay"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(exchange(&mut open, b"bye").0, b"bye");
    assert!(gw.wait_exit(PROMPT).success());
}

#[test]
fn healthz_stays_ok_when_every_backend_is_down() {
    let pki = Pki::new();
    let maddr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dead = format!("127.0.0.1:{}", free_port());
    let gw = Gateway::start(
        &pki,
        &format!(
            "metrics = \"{maddr}\"\n{}",
            backend_toml("data", &dead, "\"cn=alice\"")
        ),
    );
    let client = TlsClient::new(&pki.client("alice"), &pki.ca_crt);
    let mut s = client.connect(gw.addr, Some("data")).expect("handshake");
    let peer = tls::local_addr(&s);
    assert!(exchange(&mut s, b"x").0.is_empty());
    assert_eq!(field(&gw.audit_for(peer), "result"), "backend_unreachable");
    // A backend outage is not the gateway's: taking every gateway out of rotation for it
    // would only add a second outage.
    assert_eq!(http::get(maddr, "/healthz"), (200, "ok\n".to_string()));
}

#[test]
fn a_gateway_that_cannot_load_its_certificate_never_answers_healthz() {
    let pki = Pki::new();
    // The metrics port is held by this test for the gateway's whole life. Probing /healthz
    // after the gateway has exited would prove nothing (nobody answers then); instead a
    // gateway that started its endpoint before loading the certificate would fail to bind
    // here and report that instead of the certificate.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let maddr = held.local_addr().unwrap();
    let cfg = pki.write(
        "server",
        "toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ncert = \"ca.crt\"\nkey = \"server.key\"\nclient_ca = \"ca.crt\"\n\
             metrics = \"{maddr}\"\nlog_format = \"json\"\n{}",
            backend_toml("data", "127.0.0.1:1", "\"cn=alice\"")
        ),
    );
    let out = run_server(&["--config", cfg.to_str().unwrap()], PROMPT);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("metrics") && !err.contains(&maddr.to_string()),
        "the endpoint was started before the certificate was checked: {err}"
    );
    assert!(err.contains("ca.crt"), "names the certificate: {err}");
    drop(held);
}

/// A session ticket key file with `keys` (hex lines, newest first), mode 0600.
fn ticket_key_file(pki: &Pki, keys: &[&str]) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = pki.write("tickets", "keys", &(keys.join("\n") + "\n"));
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// A fresh ticket key: 80 random bytes in hex, as `openssl rand -hex 80` writes it.
fn new_ticket_key() -> String {
    let mut b = [0u8; 80];
    openssl::rand::rand_bytes(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const OPEN_BANNER: &[u8] = b"open\n";

/// A gateway with backends "open" (cn=alice, cn=carol) and "closed" (cn=root) using `keys`.
fn ticket_gateway(pki: &Pki, keys: &std::path::Path, open: &Backend, closed: &Backend) -> Gateway {
    Gateway::start(
        pki,
        &format!(
            "session_ticket_keys = {}\n{}{}",
            pki::toml_str(keys),
            backend_toml("open", open.addr, "\"cn=alice\", \"cn=carol\""),
            backend_toml("closed", closed.addr, "\"cn=root\"")
        ),
    )
}

/// A full handshake to "open" on `gw`; returns the session once its ticket has arrived.
fn first_session(client: &TlsClient, gw: &Gateway) -> openssl::ssl::SslSession {
    let mut s = client.connect(gw.addr, Some("open")).expect("handshake");
    let mut banner = vec![0u8; OPEN_BANNER.len()];
    std::io::Read::read_exact(&mut s, &mut banner).expect("banner");
    assert!(!s.ssl().session_reused());
    let sess = s.ssl().session().expect("session").to_owned();
    let _ = exchange(&mut s, b"bye");
    sess
}

/// Offers `sess` to `gw` for `sni`: (whether it resumed, bytes received, audit result).
fn offer(
    client: &TlsClient,
    sess: &openssl::ssl::SslSession,
    gw: &Gateway,
    sni: &str,
) -> (bool, Vec<u8>, String) {
    let mut ssl = client.ssl(Some(sni));
    // SAFETY: `sess` comes from a connection made with `client`'s own SslContext.
    unsafe { ssl.set_session(sess).expect("set_session") };
    let mut s = tls::connect_ssl(ssl, gw.addr).expect("handshake");
    let reused = s.ssl().session_reused();
    let peer = tls::local_addr(&s);
    let got = exchange(&mut s, b"ping").0;
    let ev = gw.audit_for(peer);
    assert_eq!(process::boolean(&ev, "resumed"), reused, "{ev}");
    (reused, got, field(&ev, "result").to_string())
}

#[test]
fn a_session_resumes_on_another_gateway_with_the_same_ticket_keys_and_is_still_authorized() {
    let pki = Pki::new();
    let (open, closed) = (Backend::banner(OPEN_BANNER), Backend::banner(b"closed\n"));
    let key = new_ticket_key();
    let keys = ticket_key_file(&pki, &[&key]);
    let a = ticket_gateway(&pki, &keys, &open, &closed);
    let b = ticket_gateway(&pki, &keys, &open, &closed);
    let alice = TlsClient::new(&pki.client("alice"), &pki.ca_crt);
    let sess = first_session(&alice, &a);
    let want = [OPEN_BANNER, b"ping"].concat();
    assert_eq!(
        offer(&alice, &sess, &b, "open"),
        (true, want.clone(), "ok".into())
    );
    // Resumed on B under another name: authorized again, and refused.
    let (reused, got, result) = offer(&alice, &sess, &b, "closed");
    assert!(reused, "not resumed: the test proves nothing");
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(result, "denied");
    assert_eq!(closed.accepted(), 0);
    // A client of an intermediate CA (chain sent in the full handshake) resumes too.
    let (_, carol) = pki.via_intermediate("carol");
    let carol = TlsClient::new(&carol, &pki.ca_crt);
    let sess = first_session(&carol, &b);
    assert_eq!(offer(&carol, &sess, &a, "open"), (true, want, "ok".into()));
}

#[test]
fn ticket_keys_differ_or_rotate_a_session_falls_back_or_resumes() {
    let pki = Pki::new();
    let (open, closed) = (Backend::banner(OPEN_BANNER), Backend::banner(b"closed\n"));
    let (old, new) = (new_ticket_key(), new_ticket_key());
    let a = ticket_gateway(&pki, &ticket_key_file(&pki, &[&old]), &open, &closed);
    let other = ticket_gateway(&pki, &ticket_key_file(&pki, &[&new]), &open, &closed);
    let rotated = ticket_gateway(&pki, &ticket_key_file(&pki, &[&new, &old]), &open, &closed);
    let alice = TlsClient::new(&pki.client("alice"), &pki.ca_crt);
    let sess = first_session(&alice, &a);
    let want = [OPEN_BANNER, b"ping"].concat();
    // Unknown key: a full handshake, still served.
    assert_eq!(
        offer(&alice, &sess, &other, "open"),
        (false, want.clone(), "ok".into())
    );
    // The old key is still listed (second): the ticket opens.
    assert_eq!(
        offer(&alice, &sess, &rotated, "open"),
        (true, want, "ok".into())
    );
}

#[test]
fn a_ticket_key_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let keys = ticket_key_file(&pki, &[&new_ticket_key()]);
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o640)).unwrap();
    let cfg = pki.write(
        "server",
        "toml",
        &(Gateway::header()
            + &format!("session_ticket_keys = {}\n", pki::toml_str(&keys))
            + &backend_toml("open", "127.0.0.1:1", "\"cn=alice\"")),
    );
    let out = run_server(&["--config", cfg.to_str().unwrap()], PROMPT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("session_ticket_keys") && err.contains("chmod 600"),
        "{err}"
    );
}

/// An agent for "echo" with `server = [gateways...]`.
/// The failover agent's `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

fn failover_agent(pki: &Pki, alice: &pki::Creds, gateways: &[String]) -> Agent {
    let list = gateways
        .iter()
        .map(|g| format!("\"{g}\""))
        .collect::<Vec<_>>()
        .join(", ");
    Agent::start_spec(
        pki,
        &AgentSpec {
            server: format!("[{list}]"),
            server_name: pki::SERVER_NAME,
            creds: alice,
            ca: &pki.ca_crt,
            backends: &["echo"],
            // failover_timeout far above CONNECT_TIMEOUT + PROMPT: a recovery that waited
            // for it would fail the bound below.
            extra: &format!(
                "connect_timeout = \"{}s\"\nfailover_timeout = \"{}s\"",
                CONNECT_TIMEOUT.as_secs(),
                3 * PROMPT.as_secs()
            ),
        },
    )
}

/// One hash-checked round trip through the agent; panics when it fails.
fn through(agent: &Agent, seed: u64) {
    let msg = data::pattern_bytes(seed, 50_000);
    let (got, err) = backend::round_trip(&mut backend::connect(agent.addr()), &msg);
    assert_eq!(
        sha256_hex(&got),
        sha256_hex(&msg),
        "round trip {seed}: {err:?}"
    );
}

#[test]
fn the_agent_fails_over_to_the_next_gateway_and_recovers_promptly_when_one_dies() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let alice = pki.client("alice");
    let dead = format!("127.0.0.1:{}", free_port());
    let a = Gateway::start(&pki, &backend_toml("echo", echo.addr, "\"cn=alice\""));
    let b = Gateway::start(&pki, &backend_toml("echo", echo.addr, "\"cn=alice\""));
    // The first gateway listed is down: the second is used.
    let agent = failover_agent(
        &pki,
        &alice,
        &[dead, a.addr.to_string(), b.addr.to_string()],
    );
    through(&agent, 1);
    a.wait_for_audit(PROMPT, |e| field(e, "result") == "ok");
    agent.wait_for_message("connected after failing over", PROMPT);
    // Gateway A dies (SIGKILL, no drain): the next connection goes to B.
    let mut a = a;
    a.signal(nix::sys::signal::Signal::SIGKILL);
    a.wait_exit(PROMPT);
    let killed = Instant::now();
    through(&agent, 2);
    let recovered = killed.elapsed();
    b.wait_for_audit(PROMPT, |e| field(e, "result") == "ok");
    eprintln!("failover: first connection after the gateway died took {recovered:?}");
    // At worst one connect_timeout on the dead address, then B.
    assert!(recovered < CONNECT_TIMEOUT + PROMPT, "{recovered:?}");
    // The dead addresses are backing off: the next connections go straight to B.
    let failed_before = agent
        .events()
        .iter()
        .filter(|e| field(e, "message") == "gateway failed; trying the next")
        .count();
    for seed in 3..6 {
        through(&agent, seed);
    }
    let failed_after = agent
        .events()
        .iter()
        .filter(|e| field(e, "message") == "gateway failed; trying the next")
        .count();
    assert_eq!(
        failed_before, failed_after,
        "dead gateways tried during their backoff"
    );
}
