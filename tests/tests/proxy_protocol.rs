//! PROXY protocol on gateway listeners, with a real HAProxy in front (`send-proxy-v2` and
//! `send-proxy`): the audit event names the real client; a peer outside
//! `proxy_protocol_from`, a connection without a header, and a silent one are refused; a
//! flood of garbage headers is counted in full but logged only up to the per-source limit.

use std::io::{Read, Write};
use std::time::{Duration, Instant};
use tunnel_tests::haproxy::Haproxy;
use tunnel_tests::http::{get, metrics_addr, sample};
use tunnel_tests::tls::{exchange, local_addr, TlsClient};
use tunnel_tests::*;

/// The gateways' `handshake_timeout`, which also bounds the wait for the PROXY header.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// A gateway whose only listener expects PROXY headers from `from`.
fn proxy_gateway(pki: &Pki, echo: &Backend, from: &str) -> Gateway {
    Gateway::start_file(&pki.write(
        "server",
        "toml",
        &format!(
            "cert = \"server.crt\"\nkey = \"server.key\"\nclient_ca = \"ca.crt\"\nlog_format = \"json\"\n\
             metrics = \"127.0.0.1:0\"\nhandshake_timeout = \"{}s\"\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\nproxy_protocol_from = [{from}]\n{}",
            HANDSHAKE_TIMEOUT.as_secs(),
            backend_toml("echo", echo.addr, "\"cn=alice\"")
        ),
    ))
}

/// A hash-checked exchange through `addr`; returns the client's own address.
fn tunnel_via(client: &TlsClient, addr: std::net::SocketAddr, seed: u64) -> std::net::SocketAddr {
    let mut s = client.connect(addr, Some("echo")).expect("handshake");
    let me = local_addr(&s);
    let msg = data::pattern_bytes(seed, 200_000);
    let (got, _) = exchange(&mut s, &msg);
    assert_eq!(sha256_hex(&got), sha256_hex(&msg), "bytes lost or changed");
    me
}

#[test]
fn haproxy_send_proxy_v2_and_v1_give_the_audit_the_real_client_address() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = proxy_gateway(&pki, &echo, "\"127.0.0.1/32\"");
    let client = TlsClient::new(&pki.client("alice"), &pki.ca_crt);
    for (seed, send) in [(1, "send-proxy-v2"), (2, "send-proxy")] {
        let lb = Haproxy::start(pki.dir(), &format!("  server gw {} {send}\n", gw.addr));
        let me = tunnel_via(&client, lb.addr, seed);
        // The gateway only saw HAProxy's connection; the audit names the client's.
        let ev = gw.audit_for(me);
        assert_eq!(field(&ev, "result"), "ok", "{send}: {ev}");
        assert_eq!(process::number(&ev, "bytes_up"), 200_000, "{ev}");
    }
}

#[test]
fn no_header_a_stranger_or_silence_is_refused() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let client = TlsClient::new(&pki.client("alice"), &pki.ca_crt);
    // Straight to the PROXY listener from an allowed address, but without a header.
    let gw = proxy_gateway(&pki, &echo, "\"127.0.0.1/32\"");
    let got = client
        .connect(gw.addr, Some("echo"))
        .map(|mut s| exchange(&mut s, b"x").0)
        .unwrap_or_default();
    assert!(got.is_empty());
    let ev = gw.wait_for_audit(PROMPT, |e| field(e, "result") != "ok");
    assert_eq!(field(&ev, "result"), "handshake_failed", "{ev}");
    assert!(field(&ev, "reason").contains("no PROXY header"), "{ev}");
    // Silence: refused at handshake_timeout (HANDSHAKE_TIMEOUT in proxy_gateway), not
    // before it, and within it plus the harness's margin.
    let start = Instant::now();
    let mut silent = backend::connect(gw.addr);
    let (_, _) = data::read_all(&mut silent);
    let took = start.elapsed();
    assert!(
        took >= HANDSHAKE_TIMEOUT && took < HANDSHAKE_TIMEOUT + PROMPT,
        "{took:?}"
    );
    let ev = gw.wait_for_audit(PROMPT, |e| field(e, "result") == "timeout");
    assert!(field(&ev, "reason").contains("PROXY header"), "{ev}");
    // The positive control: the same gateway serves through HAProxy.
    let lb = Haproxy::start(
        pki.dir(),
        &format!("  server gw {} send-proxy-v2\n", gw.addr),
    );
    let me = tunnel_via(&client, lb.addr, 3);
    assert_eq!(field(&gw.audit_for(me), "result"), "ok");

    // A balancer outside proxy_protocol_from may not claim addresses, even through HAProxy.
    let other = proxy_gateway(&pki, &echo, "\"10.0.0.0/8\"");
    let lb = Haproxy::start(
        pki.dir(),
        &format!("  server gw {} send-proxy-v2\n", other.addr),
    );
    let got = client
        .connect(lb.addr, Some("echo"))
        .map(|mut s| exchange(&mut s, b"x").0)
        .unwrap_or_default();
    assert!(got.is_empty());
    let ev = other.wait_for_audit(PROMPT, |e| field(e, "result") == "denied");
    assert!(field(&ev, "reason").contains("proxy_protocol_from"), "{ev}");
    assert_eq!(
        echo.accepted(),
        1,
        "only the positive control reached the backend"
    );
}

/// Garbage headers sent in the flood.
const N: u64 = 60;
/// At most this many may be logged one by one (the documented limit is 10 lines per source
/// and 10 s period; the flood may straddle two periods).
const MAX_LOGGED: u64 = 20;
/// The documented period after which suppressed lines are reported.
const PERIOD: Duration = Duration::from_secs(10);

/// Garbage where a PROXY header should be: not a header, a v1 line with a bad address, a v2
/// header of version 3.
fn garbage(i: u64) -> Vec<u8> {
    match i % 3 {
        0 => b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        1 => b"PROXY TCP4 999.0.0.1 10.0.0.1 1 2\r\n".to_vec(),
        _ => {
            let mut v = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
            v.extend_from_slice(&[0x31, 0x11, 0, 12]);
            v.extend_from_slice(&[0; 12]);
            v
        }
    }
}

fn is_proxy_refusal(e: &serde_json::Value) -> bool {
    process::is_audit(e)
        && field(e, "result") == "handshake_failed"
        && field(e, "reason").contains("PROXY")
}

/// The value of `series` once it reaches `want` (or the last one seen, after `PROMPT`).
fn metric_reaching(addr: std::net::SocketAddr, series: &str, want: f64) -> (Option<f64>, String) {
    let deadline = Instant::now() + PROMPT;
    loop {
        let (_, body) = get(addr, "/metrics");
        let n = sample(&body, series);
        if n == Some(want) || Instant::now() > deadline {
            return (n, body);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_flood_of_garbage_proxy_headers_is_counted_but_rate_limited_in_the_log() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = proxy_gateway(&pki, &echo, "\"127.0.0.1/32\"");
    let maddr = metrics_addr(&gw);
    for i in 0..N {
        let mut s = backend::connect(gw.addr);
        let _ = s.write_all(&garbage(i));
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    // The metrics count every refusal, logged or not.
    for series in [
        "tunnel_handshake_failures_total{reason=\"proxy_protocol\"}",
        "tunnel_connections_total{backend=\"\",result=\"handshake_failed\"}",
    ] {
        let (n, body) = metric_reaching(maddr, series, N as f64);
        assert_eq!(n, Some(N as f64), "{series}\n{body}");
    }
    // Every refusal is either logged or reported as suppressed, within a period or two.
    let reports = gw.wait_refusals_accounted(N, 2 * PERIOD + PROMPT, is_proxy_refusal);
    let logged = gw.events().iter().filter(|e| is_proxy_refusal(e)).count() as u64;
    assert!(
        logged <= MAX_LOGGED,
        "{logged} of {N} refused PROXY headers were logged one by one"
    );
    for r in &reports {
        assert_eq!(field(r, "source"), "127.0.0.1", "{r}");
        assert!(field(r, "results").contains("handshake_failed="), "{r}");
    }
    // Positive control: a good PROXY client still tunnels, and its line is not suppressed.
    let client = TlsClient::new(&pki.client("alice"), &pki.ca_crt);
    let lb = Haproxy::start(
        pki.dir(),
        &format!("  server gw {} send-proxy-v2\n", gw.addr),
    );
    let me = tunnel_via(&client, lb.addr, 4);
    assert_eq!(field(&gw.audit_for(me), "result"), "ok");
}
