//! Bad peers and limits: backend down, stalled and garbage handshakes, `max_connections`.
//! In each case the victim connection is closed promptly, the audit event says why, and the
//! gateway keeps serving legitimate clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tunnel_tests::backend::{connect, round_trip};
use tunnel_tests::tls::{exchange, local_addr, TlsClient};
use tunnel_tests::*;

/// Read timeout where a test measures when the gateway closes: longer than any bound it
/// asserts (timeout + PROMPT, generous for a loaded 2-core machine), so that "never closed"
/// cannot pass as "closed late".
const SLOW_CLOSE: Duration = Duration::from_secs(45);

fn assert_echo_works(addr: std::net::SocketAddr, msg: &[u8]) {
    let mut s = connect(addr);
    let (got, err) = round_trip(&mut s, msg);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, msg);
}

#[test]
fn backend_down_closes_the_local_connection_promptly() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let closed = closed_port();
    let dead = closed.addr.to_string();
    let gw = Gateway::start(
        &pki,
        &(backend_toml("dead", &dead, "\"any\"") + &backend_toml("echo", echo.addr, "\"any\"")),
    );
    let alice = pki.client("alice");
    let agent = Agent::start(&pki, gw.addr, &alice, &["dead", "echo"]);

    let mut s = connect(agent.listens[0]);
    let started = Instant::now();
    s.write_all(b"anyone there?").expect("write");
    let (got, _) = tunnel_tests::data::read_all(&mut s);
    assert!(got.is_empty(), "got {got:?}");
    assert!(
        started.elapsed() < PROMPT,
        "closed only after {:?}",
        started.elapsed()
    );
    let ev = gw.wait_for_audit(PROMPT, |e| field(e, "backend") == "dead");
    assert_eq!(field(&ev, "result"), "backend_unreachable", "{ev}");
    assert!(field(&ev, "reason").contains(&dead), "{ev}");
    // The gateway is fine.
    assert_echo_works(agent.listens[1], b"still here");
}

#[test]
fn silent_client_is_dropped_after_handshake_timeout() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(
        &pki,
        &format!(
            "handshake_timeout = \"1s\"\n{}",
            backend_toml("echo", echo.addr, "\"any\"")
        ),
    );
    let mut s = connect(gw.addr);
    // Longer than the bound below: a gateway that never drops us shows up as a read timeout.
    s.set_read_timeout(Some(SLOW_CLOSE)).unwrap();
    let peer = s.local_addr().unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    // EOF or reset, but not the read timeout.
    let r = s.read(&mut buf);
    let waited = started.elapsed();
    match r {
        Ok(0) => {}
        Ok(n) => panic!("gateway sent {n} bytes to a silent client"),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "silent client still connected after {waited:?}"
        ),
    }
    assert!(
        waited >= Duration::from_millis(900),
        "dropped too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(1) + PROMPT,
        "dropped only after {waited:?}"
    );
    let ev = gw.audit_for(peer);
    assert_eq!(field(&ev, "result"), "timeout", "{ev}");
    assert!(field(&ev, "reason").contains("handshake_timeout"), "{ev}");
    let mut gw = gw;
    assert_serves(&mut gw, &pki.client("alice"), &pki.ca_crt, Some("echo"));
}

#[test]
fn stalled_handshakes_do_not_block_legitimate_clients() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(
        &pki,
        &format!(
            "handshake_timeout = \"30s\"\n{}",
            backend_toml("echo", echo.addr, "\"any\"")
        ),
    );
    // 50 connections that never say anything, held open.
    let _stalled: Vec<TcpStream> = (0..50).map(|_| connect(gw.addr)).collect();
    let alice = pki.client("alice");
    let client = TlsClient::new(&alice, &pki.ca_crt);
    let started = Instant::now();
    let mut s = client.connect(gw.addr, Some("echo")).expect("handshake");
    let (got, err) = exchange(&mut s, b"through the crowd");
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, b"through the crowd");
    assert!(started.elapsed() < PROMPT);
}

#[test]
fn garbage_on_the_tls_port_fails_the_handshake_and_the_gateway_keeps_serving() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(&pki, &backend_toml("echo", echo.addr, "\"any\""));
    let garbage: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        // A TLS record header announcing a huge handshake message, then junk.
        &[
            0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00, 0xff, 0xfb, 0x03, 0x03, 0, 0, 0,
        ],
        &[0u8; 4096],
    ];
    for g in garbage {
        let mut s = connect(gw.addr);
        let peer = s.local_addr().unwrap();
        let _ = s.write_all(g);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        let ev = gw.audit_for(peer);
        assert_eq!(field(&ev, "result"), "handshake_failed", "{ev}");
    }
    let alice = pki.client("alice");
    let client = TlsClient::new(&alice, &pki.ca_crt);
    let mut s = client.connect(gw.addr, Some("echo")).expect("handshake");
    let peer = local_addr(&s);
    let (got, err) = exchange(&mut s, b"after the garbage");
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, b"after the garbage");
    assert_eq!(field(&gw.audit_for(peer), "result"), "ok");
    assert_eq!(echo.accepted(), 1);
}

#[test]
fn max_connections_refuses_the_extra_one_promptly_and_frees_slots() {
    const N: usize = 3;
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(
        &pki,
        &format!(
            "max_connections = {N}\n{}",
            backend_toml("echo", echo.addr, "\"any\"")
        ),
    );
    let alice = pki.client("alice");
    let agent = Agent::start(&pki, gw.addr, &alice, &["echo"]);

    // N tunnels, each proven established end to end.
    let mut open: Vec<TcpStream> = (0..N)
        .map(|i| {
            let mut s = connect(agent.addr());
            let msg = format!("tunnel {i}\n");
            s.write_all(msg.as_bytes()).unwrap();
            let mut back = vec![0u8; msg.len()];
            s.read_exact(&mut back)
                .expect("echo through an open tunnel");
            assert_eq!(back, msg.as_bytes());
            s
        })
        .collect();
    assert_eq!(echo.accepted(), N);

    // The N+1th is closed, not left hanging.
    let mut extra = connect(agent.addr());
    let started = Instant::now();
    let (got, _) = round_trip(&mut extra, b"one too many");
    assert!(got.is_empty(), "got {got:?}");
    assert!(
        started.elapsed() < PROMPT,
        "closed only after {:?}",
        started.elapsed()
    );
    let ev = gw.wait_for_audit(PROMPT, |e| field(e, "result") == "overloaded");
    assert!(field(&ev, "reason").contains("max_connections"), "{ev}");
    assert_eq!(echo.accepted(), N);

    // Close one tunnel; once the gateway has finished it, a new one gets through.
    let first = open.remove(0);
    first.shutdown(std::net::Shutdown::Write).unwrap();
    let mut first = first;
    let (rest, _) = tunnel_tests::data::read_all(&mut first);
    assert!(rest.is_empty());
    gw.wait_for_audit(PROMPT, |e| field(e, "result") == "ok");
    // The slot is released right after the audit line is written, so allow a few tries.
    let deadline = Instant::now() + PROMPT;
    loop {
        let mut s = connect(agent.addr());
        let (got, _) = round_trip(&mut s, b"a free slot");
        if got == b"a free slot" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new tunnel after one of {N} closed; got {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The others are unaffected.
    for (i, s) in open.iter_mut().enumerate() {
        let msg = format!("still {i}\n");
        s.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).expect("echo");
        assert_eq!(back, msg.as_bytes());
    }
}

#[test]
fn idle_tunnel_is_closed_after_idle_timeout() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(
        &pki,
        &format!(
            "idle_timeout = \"1s\"\n{}",
            backend_toml("echo", echo.addr, "\"any\"")
        ),
    );
    let alice = pki.client("alice");
    let agent = Agent::start(&pki, gw.addr, &alice, &["echo"]);
    let mut s = connect(agent.addr());
    s.write_all(b"then silence").unwrap();
    let mut back = [0u8; 12];
    s.read_exact(&mut back).unwrap();
    // Longer than the bound below: a tunnel that is never closed shows up as a read timeout.
    s.set_read_timeout(Some(SLOW_CLOSE)).unwrap();
    let started = Instant::now();
    let (rest, _) = tunnel_tests::data::read_all(&mut s);
    let waited = started.elapsed();
    assert!(rest.is_empty());
    assert!(
        waited >= Duration::from_millis(800),
        "closed after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(1) + PROMPT,
        "closed only after {waited:?}"
    );
    let ev = gw.wait_for_audit(PROMPT, |_| true);
    assert_eq!(field(&ev, "result"), "timeout", "{ev}");
    assert!(field(&ev, "reason").contains("idle_timeout"), "{ev}");
    assert_eq!(tunnel_tests::process::number(&ev, "bytes_up"), 12, "{ev}");
    // Positive control: a new tunnel works.
    assert_echo_works(agent.addr(), b"after the idle close");
}

#[test]
fn agent_max_connections_closes_the_extra_local_connection() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(&pki, &backend_toml("echo", echo.addr, "\"any\""));
    let alice = pki.client("alice");
    let agent = Agent::start_spec(
        &pki,
        &tunnel_tests::AgentSpec {
            server: gw.addr.to_string(),
            server_name: "localhost",
            creds: &alice,
            ca: &pki.ca_crt,
            backends: &["echo"],
            extra: "max_connections = 1",
        },
    );
    let mut first = connect(agent.addr());
    first.write_all(b"one\n").unwrap();
    let mut back = [0u8; 4];
    first.read_exact(&mut back).unwrap();
    let mut extra = connect(agent.addr());
    let started = Instant::now();
    let (got, _) = round_trip(&mut extra, b"two\n");
    assert!(got.is_empty(), "got {got:?}");
    assert!(started.elapsed() < PROMPT);
    assert_eq!(echo.accepted(), 1);
    // The first one is unaffected.
    let (got, err) = round_trip(&mut first, b"still one\n");
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, b"still one\n");
}

#[test]
fn gateway_down_closes_the_local_connection_promptly() {
    let pki = Pki::new();
    let alice = pki.client("alice");
    let nowhere = closed_port();
    let agent = Agent::start(&pki, nowhere.addr, &alice, &["echo"]);
    let mut s = connect(agent.addr());
    let started = Instant::now();
    let (got, _) = round_trip(&mut s, b"hello?");
    assert!(got.is_empty());
    assert!(started.elapsed() < PROMPT);
    let ev = agent.wait_for("the agent's error", PROMPT, |e| {
        field(e, "message").starts_with("gateway refused or unreachable")
    });
    assert!(
        field(&ev, "error").contains("cannot connect to gateway"),
        "{ev}"
    );
}

#[test]
fn sni_with_control_characters_is_refused_and_cannot_forge_log_lines() {
    let pki = Pki::new();
    let echo = Backend::echo();
    // A text-format log is where a newline would start a fake line.
    let config = pki.write(
        "server",
        "toml",
        &(Gateway::header().replace("log_format = \"json\"", "log_format = \"text\"")
            + "default_backend = \"data\"\n"
            + &backend_toml("data", echo.addr, "\"any\"")),
    );
    let mut cmd = tunnel_tests::process::command(&bins::server());
    cmd.arg("--config").arg(&config);
    let gw = Proc::spawn("tunnel-server", cmd);
    let ev = gw.wait_until("listening line", READY, |evs| {
        evs.iter()
            .find(|e| e.to_string().contains("gateway listening"))
            .cloned()
    });
    let text = ev.to_string();
    let port: u16 = text
        .split("listen=127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {text}"));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let alice = pki.client("alice");
    let client = tunnel_tests::tls::TlsClient::new(&alice, &pki.ca_crt);
    for evil in ["x\nFORGED result=\"ok\"", "data\u{7f}", "da ta"] {
        let r = client.connect(addr, Some(evil));
        if let Ok(mut s) = r {
            let (got, _) = tunnel_tests::tls::exchange(&mut s, b"nope");
            assert!(got.is_empty(), "{evil:?} reached a backend");
        }
    }
    gw.wait_until("three refusals", PROMPT, |evs| {
        (evs.iter()
            .filter(|e| e.to_string().contains("result=\\\"denied\\\""))
            .count()
            >= 3)
            .then_some(())
    });
    let log = gw.log_text();
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "forged line in:\n{log}"
    );
    assert!(
        log.contains("x\\\\x0aFORGED"),
        "escaped SNI expected in:\n{log}"
    );
    // Positive control: the gateway still serves a proper name.
    let mut s = client.connect(addr, Some("data")).expect("handshake");
    assert_eq!(tunnel_tests::tls::exchange(&mut s, b"fine").0, b"fine");
}

#[test]
fn a_flood_of_stalled_handshakes_does_not_lock_out_clients() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(
        &pki,
        &format!(
            "max_handshakes = 10\nmax_connections = 20\nhandshake_timeout = \"60s\"\n{}",
            backend_toml("data", echo.addr, "\"cn=alice\"")
        ),
    );
    // 40 connections that never speak TLS: past max_handshakes, and holding every one of the
    // max_connections slots.
    let stalled: Vec<std::net::TcpStream> = (0..40).map(|_| backend::connect(gw.addr)).collect();
    // Let them age past the eviction threshold (one second).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let alice = pki.client("alice");
    let client = tunnel_tests::tls::TlsClient::new(&alice, &pki.ca_crt);
    let started = std::time::Instant::now();
    let mut s = client
        .connect(gw.addr, Some("data"))
        .expect("handshake during the flood");
    assert_eq!(
        tunnel_tests::tls::exchange(&mut s, b"still served").0,
        b"still served"
    );
    assert!(started.elapsed() < PROMPT);
    let ev = gw.wait_for_audit(PROMPT, |e| field(e, "reason").contains("max_handshakes"));
    assert_eq!(field(&ev, "result"), "timeout");
    drop(stalled);
}
