//! Hostile text from the peer (SNI, certificate subject) must not reach the gateway's log
//! raw: line/paragraph separators (U+2028/U+2029) and bidi controls would let a client forge
//! or visually reorder audit lines in viewers that honour them. Checked in text and JSON logs,
//! each followed by a good client that must still be served.

use std::net::SocketAddr;
use tunnel_core::pki::CertSpec;
use tunnel_tests::tls::{exchange, local_addr, TlsClient};
use tunnel_tests::*;

/// What a hostile client puts in its SNI: a fake audit line after a line separator, and bidi
/// overrides/isolates.
const EVIL_SNI: &[&str] = &[
    "x\u{2028}INFO audit: result=ok",
    "y\u{2029}result=ok",
    "z\u{202e}ko=tluser",
    "w\u{2066}i\u{2069}",
];

/// A CN with a line separator, a right-to-left override and a pop-isolate.
const EVIL_CN: &str = "mallory\u{2028}INFO audit: result=ok\u{202e}nimda\u{2069}";

/// Characters that must never appear raw in a log line.
const RAW: &[char] = &[
    '\u{2028}', '\u{2029}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}',
    '\u{2067}', '\u{2068}', '\u{2069}',
];

/// Starts a gateway with `log_format` and returns it with its TLS address (parsed from the
/// readiness line, which in text format is not JSON).
fn start(pki: &Pki, log_format: &str, body: &str) -> (Proc, SocketAddr) {
    let config = pki.write(
        "server",
        "toml",
        &(Gateway::header().replace(
            "log_format = \"json\"",
            &format!("log_format = \"{log_format}\""),
        ) + body),
    );
    let mut cmd = command(&bins::server());
    cmd.arg("--config").arg(&config);
    let gw = Proc::spawn("tunnel-server", cmd);
    let ev = gw.wait_until("gateway listening", READY, |evs| {
        evs.iter()
            .find(|e| e.to_string().contains("gateway listening"))
            .cloned()
    });
    // JSON: the listen field; text: the raw line, where listen= comes first.
    let line = match field(&ev, "listen") {
        "" => ev.to_string(),
        listen => listen.to_string(),
    };
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line}"));
    (gw, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Sends every hostile SNI (each refused: no such backend), then connects as the hostile CN
/// (allowed: `any`), then as a good client; returns the good client's peer address.
fn attack_then_serve(pki: &Pki, addr: SocketAddr) -> SocketAddr {
    let alice = pki.client("alice");
    let client = TlsClient::new(&alice, &pki.ca_crt);
    for sni in EVIL_SNI {
        if let Ok(mut s) = client.connect(addr, Some(sni)) {
            let (got, _) = exchange(&mut s, b"nope");
            assert!(got.is_empty(), "{sni:?} reached a backend");
        }
    }
    let evil = pki.issue(
        "evil",
        &CertSpec {
            ou: vec!["ops\u{2029}\u{202b}x".into()],
            ..CertSpec::client(EVIL_CN)
        },
    );
    let mut s = TlsClient::new(&evil, &pki.ca_crt)
        .connect(addr, Some("data"))
        .expect("the hostile CN is a valid certificate");
    assert_eq!(exchange(&mut s, b"evil").0, b"evil");
    let mut s = client.connect(addr, Some("data")).expect("good client");
    let peer = local_addr(&s);
    let (got, err) = exchange(&mut s, b"still served");
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, b"still served");
    peer
}

fn assert_no_raw_separator(log: &str) {
    for (i, line) in log.lines().enumerate() {
        if let Some(c) = line.chars().find(|c| RAW.contains(c)) {
            panic!(
                "log line {i} holds a raw U+{:04X}: {line:?}\nlog:\n{log}",
                c as u32
            );
        }
    }
}

#[test]
fn hostile_sni_and_subject_are_escaped_in_text_logs() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let (gw, addr) = start(&pki, "text", &backend_toml("data", echo.addr, "\"any\""));
    let peer = attack_then_serve(&pki, addr);
    let want_ok = format!("peer={peer}");
    gw.wait_until("the good client's audit line", PROMPT, |evs| {
        evs.iter()
            .map(|e| e.to_string())
            .find(|l| l.contains(&want_ok) && l.contains("result=\\\"ok\\\""))
    });
    let log = gw.log_text();
    assert_no_raw_separator(&log);
    // The escaped forms are in the audit lines: every hostile SNI (denied), each separator
    // or bidi control written as `\\u{…}` (the text format escapes the backslash again)...
    for sni in EVIL_SNI {
        let want: String = sni
            .chars()
            .map(|c| {
                if RAW.contains(&c) {
                    format!("\\\\u{{{:x}}}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect();
        assert!(log.contains(&want), "{want} not in the log:\n{log}");
    }
    // ... and the subject (ok).
    for want in [
        "CN=mallory\\u{2028}INFO audit: result\\=ok\\u{202e}nimda\\u{2069}",
        "OU=ops\\u{2029}\\u{202b}x",
    ] {
        assert!(log.contains(want), "{want} not in the log:\n{log}");
    }
    // No line of the log starts with the forged text.
    assert!(
        !log.lines().any(|l| l.starts_with("INFO audit")),
        "forged line in:\n{log}"
    );
    assert_eq!(
        echo.accepted(),
        2,
        "the hostile CN and alice reach the backend"
    );
}

#[test]
fn hostile_sni_and_subject_are_escaped_in_json_logs() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let (gw, addr) = start(&pki, "json", &backend_toml("data", echo.addr, "\"any\""));
    let peer = attack_then_serve(&pki, addr);
    let ok = gw.wait_for_audit(PROMPT, |e| field(e, "peer") == peer.to_string());
    assert_eq!(field(&ok, "result"), "ok", "{ok}");
    let audits = gw.wait_until("every audit line", PROMPT, |evs| {
        let a: Vec<_> = evs
            .iter()
            .filter(|e| process::is_audit(e))
            .cloned()
            .collect();
        (a.len() >= EVIL_SNI.len() + 2).then_some(a)
    });
    assert_no_raw_separator(&gw.log_text());
    let snis: Vec<&str> = audits.iter().map(|e| field(e, "sni")).collect();
    for want in [
        "x\\u{2028}INFO audit: result=ok",
        "y\\u{2029}result=ok",
        "z\\u{202e}ko=tluser",
        "w\\u{2066}i\\u{2069}",
    ] {
        assert!(snis.contains(&want), "sni {want:?} not among {snis:?}");
    }
    let evil = audits
        .iter()
        .find(|e| field(e, "subject").starts_with("CN=mallory"))
        .unwrap_or_else(|| panic!("no audit line of the hostile CN: {audits:?}"));
    assert_eq!(
        field(evil, "subject"),
        "CN=mallory\\u{2028}INFO audit: result\\=ok\\u{202e}nimda\\u{2069},OU=ops\\u{2029}\\u{202b}x"
    );
    assert_eq!(field(evil, "result"), "ok", "{evil}");
}
