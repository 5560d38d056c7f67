//! The metrics endpoint under hostile conditions: idle connections must not starve `/healthz`
//! (a load balancer would pull a healthy gateway), `metrics_allow` refuses other addresses,
//! and a non-loopback address is warned about.

use std::io::Read;
use std::net::TcpStream;
use std::time::Instant;
use tunnel_core::metrics::{MAX_OPEN, READ_TIMEOUT};
use tunnel_tests::http::{get, metrics_addr};
use tunnel_tests::tls::{exchange, TlsClient};
use tunnel_tests::*;

/// More idle connections than the endpoint serves at once.
const IDLE: usize = 100;

fn gateway(pki: &Pki, echo: &Backend, extra: &str) -> Gateway {
    Gateway::start(
        pki,
        &format!("{extra}\n{}", backend_toml("data", echo.addr, "\"any\"")),
    )
}

fn assert_serves(pki: &Pki, gw: &Gateway) {
    let alice = pki.client("alice");
    let mut s = TlsClient::new(&alice, &pki.ca_crt)
        .connect(gw.addr, Some("data"))
        .expect("handshake");
    assert_eq!(exchange(&mut s, b"served").0, b"served");
}

#[test]
fn idle_connections_do_not_starve_healthz() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = gateway(&pki, &echo, "metrics = \"127.0.0.1:0\"");
    let maddr = metrics_addr(&gw);
    assert_eq!(get(maddr, "/healthz").0, 200);
    // No idle connection can be released by the endpoint's read timeout before this.
    let opened = Instant::now();
    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|_| TcpStream::connect(maddr).expect("connect"))
        .collect();
    // The endpoint has admitted them all once it closed the oldest to make room for the
    // newest: wait for that close (EOF on the oldest evicted one), not for a time.
    let evicted = &idle[IDLE - MAX_OPEN - 1];
    evicted.set_read_timeout(Some(PROMPT)).unwrap();
    assert_eq!(
        (&*evicted)
            .read(&mut [0u8; 1])
            .expect("closed to make room"),
        0,
        "the endpoint closes the oldest idle connection"
    );
    for i in 0..3 {
        let started = Instant::now();
        let (code, body) = get(maddr, "/healthz");
        let took = started.elapsed();
        assert_eq!(
            (code, body.as_str()),
            (200, "ok\n"),
            "health check {i} with {IDLE} idle connections open"
        );
        eprintln!("health check {i} with {IDLE} idle connections: {took:?}");
        // Answered while the idle connections still hold their slots: a check that waited
        // for a slot would be answered only once their read timeout freed one.
        assert!(
            opened.elapsed() < READ_TIMEOUT,
            "health check {i} took {took:?}, answered only after the idle connections' read timeout"
        );
    }
    assert!(get(maddr, "/metrics")
        .1
        .contains("tunnel_reloads_total{result=\"success\"} 1"));
    drop(idle);
    assert_serves(&pki, &gw);
}

#[test]
fn metrics_allow_refuses_other_addresses() {
    let pki = Pki::new();
    let echo = Backend::echo();
    // 127.0.0.1 (where the test connects from) is not in metrics_allow: refused.
    let gw = gateway(
        &pki,
        &echo,
        "metrics = \"127.0.0.1:0\"\nmetrics_allow = [\"10.0.0.0/8\", \"::1/128\"]",
    );
    let maddr = metrics_addr(&gw);
    for path in ["/healthz", "/metrics"] {
        let (code, body) = get(maddr, path);
        assert_eq!(code, 0, "{path} answered {code} to 127.0.0.1: {body}");
    }
    gw.wait_for("the refusal's log line", PROMPT, |e| {
        field(e, "message").contains("metrics_allow") && field(e, "peer").starts_with("127.0.0.1:")
    });
    assert_serves(&pki, &gw);
    // Positive control: the same endpoint with 127.0.0.0/8 allowed answers.
    let open = gateway(
        &pki,
        &echo,
        "metrics = \"127.0.0.1:0\"\nmetrics_allow = [\"10.0.0.0/8\", \"127.0.0.0/8\"]",
    );
    let maddr = metrics_addr(&open);
    assert_eq!(get(maddr, "/healthz"), (200, "ok\n".to_string()));
    let (code, body) = get(maddr, "/metrics");
    assert_eq!(code, 200);
    assert!(
        body.contains("tunnel_reloads_total{result=\"success\"} 1"),
        "{body}"
    );
}

#[test]
fn metrics_allow_with_a_malformed_cidr_is_a_config_error() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let path = pki.write(
        "server",
        "toml",
        &(Gateway::header()
            + "metrics = \"127.0.0.1:0\"\nmetrics_allow = [\"10.0.0.0/33\"]\n"
            + &backend_toml("data", echo.addr, "\"any\"")),
    );
    let out = run_server(&["check", "--config", path.to_str().unwrap()], PROMPT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("metrics_allow[0]"), "{err}");
}

#[test]
fn non_loopback_metrics_address_logs_a_warning() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = gateway(&pki, &echo, "metrics = \"0.0.0.0:0\"");
    let ev = gw.wait_for("the exposure warning", PROMPT, |e| {
        field(e, "level") == "WARN" && field(e, "message").contains("not a loopback address")
    });
    assert!(field(&ev, "message").contains("metrics_allow"), "{ev}");
    // Loopback: no such warning.
    let quiet = gateway(&pki, &echo, "metrics = \"127.0.0.1:0\"");
    let maddr = metrics_addr(&quiet);
    assert_eq!(get(maddr, "/healthz").0, 200);
    assert!(
        !quiet
            .events()
            .iter()
            .any(|e| field(e, "message").contains("not a loopback address")),
        "{}",
        quiet.log_text()
    );
    assert_serves(&pki, &gw);
}
