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
    let mut gw = Gateway::start(
        &pki,
        &format!(
            "metrics = \"{maddr}\"\ndrain_delay = \"3s\"\nshutdown_timeout = \"20s\"\n{}",
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
    assert!(sent.elapsed() < Duration::from_secs(3), "too slow to prove anything");
    assert_eq!(exchange(&mut late, b"late").0, b"late");
    // After drain_delay the listener closes; the open tunnel keeps flowing.
    gw.wait_for_message("draining open connections", PROMPT);
    assert!(sent.elapsed() >= Duration::from_secs(3));
    let closing = Instant::now();
    while std::net::TcpStream::connect(gw.addr).is_ok() {
        assert!(closing.elapsed() < PROMPT, "still accepting after drain_delay");
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
    let maddr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
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
    assert_eq!(http::get(maddr, "/healthz").0, 0, "health answered");
}
