//! PROXY protocol on gateway listeners, with a real HAProxy in front (`send-proxy-v2` and
//! `send-proxy`): the audit event names the real client; a peer outside
//! `proxy_protocol_from`, a connection without a header, and a silent one are refused.

use std::time::{Duration, Instant};
use tunnel_tests::haproxy::Haproxy;
use tunnel_tests::tls::{exchange, local_addr, TlsClient};
use tunnel_tests::*;

/// A gateway whose only listener expects PROXY headers from `from`.
fn proxy_gateway(pki: &Pki, echo: &Backend, from: &str) -> Gateway {
    Gateway::start_file(&pki.write(
        "server",
        "toml",
        &format!(
            "cert = \"server.crt\"\nkey = \"server.key\"\nclient_ca = \"ca.crt\"\nlog_format = \"json\"\n\
             handshake_timeout = \"2s\"\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\nproxy_protocol_from = [{from}]\n{}",
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
    // Silence: refused within handshake_timeout (2s), with a margin for a loaded machine.
    let start = Instant::now();
    let mut silent = backend::connect(gw.addr);
    let (_, _) = data::read_all(&mut silent);
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
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
