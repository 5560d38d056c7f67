//! A flood of failed handshakes from one address must not flood the log: after a burst, the
//! gateway stops writing one WARN audit line per failure for that source and later says how
//! many it left out; the metrics still count every one of them, and the gateway keeps serving.

use std::io::{Read, Write};
use std::time::{Duration, Instant};
use tunnel_tests::http::{get, metrics_addr, sample};
use tunnel_tests::tls::{exchange, local_addr, TlsClient};
use tunnel_tests::*;

/// Failed handshakes sent in the burst.
const N: u64 = 60;
/// At most this many of them may be logged one by one (the documented burst is 10 per
/// source and period; the burst may straddle two periods).
const MAX_LOGGED: u64 = 20;
/// The documented period after which suppressed lines are reported.
const PERIOD: Duration = Duration::from_secs(10);

fn garbage_handshake(addr: std::net::SocketAddr) {
    let mut s = backend::connect(addr);
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}

fn is_failed(e: &serde_json::Value) -> bool {
    process::is_audit(e) && field(e, "result") == "handshake_failed"
}

#[test]
fn a_burst_of_failed_handshakes_from_one_address_is_rate_limited() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(
        &pki,
        &format!(
            "metrics = \"127.0.0.1:0\"\n{}",
            backend_toml("data", echo.addr, "\"any\"")
        ),
    );
    let maddr = metrics_addr(&gw);
    for _ in 0..N {
        garbage_handshake(gw.addr);
    }
    // The metrics count every failure, logged or not.
    let deadline = Instant::now() + PROMPT;
    let body = loop {
        let (_, body) = get(maddr, "/metrics");
        let n = sample(
            &body,
            "tunnel_handshake_failures_total{reason=\"handshake_failed\"}",
        );
        if n == Some(N as f64) || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        sample(
            &body,
            "tunnel_handshake_failures_total{reason=\"handshake_failed\"}"
        ),
        Some(N as f64),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "tunnel_connections_total{backend=\"\",result=\"handshake_failed\"}"
        ),
        Some(N as f64),
        "{body}"
    );
    // A line reports the suppressed ones, within a period or two.
    let summaries = gw.wait_refusals_accounted(N, 2 * PERIOD + PROMPT, is_failed);
    let logged = gw.events().iter().filter(|e| is_failed(e)).count() as u64;
    assert!(
        logged <= MAX_LOGGED,
        "{logged} of {N} failed handshakes were logged one by one"
    );
    eprintln!(
        "{N} failed handshakes: {logged} audit lines, {} report line(s)",
        summaries.len()
    );
    for r in &summaries {
        assert_eq!(field(r, "source"), "127.0.0.1", "{r}");
        assert!(field(r, "results").contains("handshake_failed="), "{r}");
        assert_eq!(field(r, "level"), "WARN", "{r}");
    }
    // Still serving, and a good client's line is not suppressed.
    let alice = pki.client("alice");
    let mut s = TlsClient::new(&alice, &pki.ca_crt)
        .connect(gw.addr, Some("data"))
        .expect("handshake after the flood");
    let peer = local_addr(&s);
    assert_eq!(exchange(&mut s, b"after the flood").0, b"after the flood");
    assert_eq!(field(&gw.audit_for(peer), "result"), "ok");
}
