//! The signer's HTTP surface against an unauthenticated attacker (issue 20, items 5, 6, 7,
//! 12): framing tricks that smuggled a request past the checks, requests that left no audit
//! event, log forgery through request text, idle sockets starving logins, and replies that
//! named internal addresses. Every refusal is followed by a positive control.

use super::{fixture, Fixture};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tunnel_tests::oidc::{key_and_csr, Provider, SignerProc};
use tunnel_tests::process::field;
use tunnel_tests::{Pki, PROMPT};

/// A valid `POST /v1/certificates` body for alice (a fresh key and its token).
fn alice_body(fx: &Fixture) -> String {
    let (_, csr, nonce) = key_and_csr();
    let token = fx.provider.token("alice", "tunnel", &nonce);
    json!({ "csr": csr, "id_token": token }).to_string()
}

fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /v1/certificates HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{headers}Connection: close\r\n\r\n{body}").into_bytes()
}

fn issued_count(fx: &Fixture) -> usize {
    let audits = fx.signer.proc.audits();
    audits
        .iter()
        .filter(|e| field(e, "result") == "issued")
        .count()
}

#[test]
fn ambiguous_or_oversized_framing_is_refused_and_issues_nothing() {
    let fx = fixture("");
    let body = alice_body(&fx);
    let n = body.len();
    let big = format!("X-Pad: {}\r\n", "a".repeat(20 * 1024));
    let probes = [
        // Two lengths: the old parser took the last one and served the request.
        (format!("Content-Length: 1\r\nContent-Length: {n}\r\n"), 400),
        // A signed length: Rust's integer parser accepts "+N".
        (format!("Content-Length: +{n}\r\n"), 400),
        // A head over the 16 KiB limit that arrives complete.
        (format!("{big}Content-Length: {n}\r\n"), 431),
    ];
    for (headers, want) in &probes {
        let (status, text) = fx.signer.raw(&post(headers, &body));
        assert_eq!(status, *want, "{headers:.60}: {text}");
    }
    assert_eq!(issued_count(&fx), 0, "no probe may be issued");
    // Positive control: the same body, framed once and plainly, is issued (the refused
    // probes did not consume its token).
    let (status, text) = fx
        .signer
        .raw(&post(&format!("Content-Length: {n}\r\n"), &body));
    assert_eq!(status, 200, "{text}");
}

#[test]
fn every_certificate_request_ends_in_one_audit_event() {
    let fx = fixture("");
    let get = b"GET /v1/certificates HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    assert_eq!(fx.signer.raw(get).0, 405);
    fx.signer.refusal("method_not_allowed");
    let huge = "x".repeat(70 * 1024);
    let (status, _) = fx
        .signer
        .raw(&post(&format!("Content-Length: {}\r\n", huge.len()), &huge));
    assert_eq!(status, 413);
    fx.signer.refusal("too_large");
    let chunked = post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n");
    assert_eq!(fx.signer.raw(&chunked).0, 400);
    fx.signer.refusal("bad_request");
    fx.assert_issues("alice");
}

#[test]
fn request_text_cannot_forge_a_log_line_nor_come_back_in_the_reply() {
    let fx = fixture("log_format = \"text\"");
    let forged = "\n2026-12-06T00:00:00.000000Z  INFO audit: certificate issued result=\"issued\" email=ceo@example.com";
    let body = json!({ forged: 1, "\u{1b}[2Jcleared": 2 }).to_string();
    let (status, text) = fx
        .signer
        .raw(&post(&format!("Content-Length: {}\r\n", body.len()), &body));
    assert_eq!(status, 400, "{text}");
    assert!(
        !text.contains("ceo@example.com"),
        "request text echoed: {text}"
    );
    fx.signer.proc.wait_for_line("certificate refused", PROMPT);
    let log = fx.signer.proc.log_text();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("2026-12-06T00:00:00") || l.contains('\u{1b}'))
        .collect();
    assert!(
        bad.is_empty(),
        "forged or raw control text in the log: {bad:?}"
    );
    assert!(
        log.contains("\\x0a2026-12-06"),
        "the attempt is logged, escaped: {log}"
    );
    let (_, csr, nonce) = key_and_csr();
    let token = fx.provider.token("alice", "tunnel", &nonce);
    assert_eq!(fx.signer.request(&csr, &token, None).0, 200);
}

#[test]
fn idle_sockets_from_one_source_do_not_starve_a_login() {
    let fx = fixture("");
    let idle: Vec<TcpStream> = (0..600)
        .map(|_| TcpStream::connect(fx.signer.addr).expect("connect"))
        .collect();
    // The bound is below the signer's 5 s handshake and head deadlines: an answer within it
    // cannot come from idle sockets timing out, only from room made for the newcomer.
    let started = Instant::now();
    let get = b"GET /v1/login-config HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let (status, text) = fx.signer.raw(get);
    let took = started.elapsed();
    assert_eq!(status, 200, "{text}");
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    drop(idle);
    fx.assert_issues("alice");
}

#[test]
fn provider_unavailable_names_no_internal_address_on_the_wire() {
    let pki = Pki::new();
    let provider = Provider::start(pki.dir());
    let signer = SignerProc::start(&pki, &provider, "127.0.0.1:1", "");
    let (_, csr, nonce) = key_and_csr();
    let token = provider.token("alice", "tunnel", &nonce);
    let port = provider.issuer.rsplit(':').next().unwrap_or("").to_string();
    drop(provider);
    let (status, body) = signer.request(&csr, &token, None);
    assert_eq!(status, 503, "{body}");
    let wire = body.to_string();
    assert!(
        !wire.contains(&port) && !wire.contains("127.0.0.1"),
        "{wire}"
    );
    let ev: Value = signer.refusal("provider_unavailable");
    assert!(
        field(&ev, "detail").contains(&port),
        "the log keeps the detail: {ev}"
    );
}
