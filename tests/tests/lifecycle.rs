//! Process lifecycle: SIGTERM drains open connections and exits 0, for the gateway and the
//! client agent; the demo runs its checks and exits 0.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};
use tunnel_tests::backend::connect;
use tunnel_tests::process::{number, run_to_end};
use tunnel_tests::*;

fn echo_line(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("write");
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).expect("echo");
    assert_eq!(back, msg);
}

/// Polls until nothing accepts connections on `addr` any more.
fn wait_refusing(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + PROMPT;
    loop {
        match TcpStream::connect(addr) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "{addr} still accepts after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn gateway_sigterm_drains_the_open_connection_then_exits_0() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let mut gw = Gateway::start(
        &pki,
        &format!(
            "shutdown_timeout = \"60s\"\n{}",
            backend_toml("echo", echo.addr, "\"any\"")
        ),
    );
    let alice = pki.client("alice");
    let agent = Agent::start(&pki, gw.addr, &alice, &["echo"]);
    let mut s = connect(agent.addr());
    echo_line(&mut s, b"before\n");

    gw.terminate();
    let ev = gw.wait_for_message("draining open connections", PROMPT);
    assert_eq!(number(&ev, "open"), 1, "{ev}");
    wait_refusing(gw.addr);
    assert!(gw.running(), "exited with a connection still open");

    // The open tunnel still carries bytes both ways, then closes normally.
    echo_line(&mut s, b"during shutdown\n");
    s.shutdown(Shutdown::Write).unwrap();
    let (rest, err) = tunnel_tests::data::read_all(&mut s);
    assert!(rest.is_empty() && err.is_none(), "{rest:?} {err:?}");

    // Well before shutdown_timeout.
    let status = gw.wait_exit(PROMPT);
    assert_eq!(status.code(), Some(0), "{status:?}");
    // (A probe of wait_refusing that slipped in has no backend.)
    let audit = gw.wait_for_audit(PROMPT, |e| field(e, "backend") == "echo");
    assert_eq!(field(&audit, "result"), "ok", "{audit}");
    assert_eq!(number(&audit, "bytes_up"), 23, "{audit}");
    assert_eq!(number(&audit, "bytes_down"), 23, "{audit}");
}

#[test]
fn gateway_sigterm_closes_stragglers_after_shutdown_timeout_and_exits_0() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let mut gw = Gateway::start(
        &pki,
        &format!(
            "shutdown_timeout = \"1s\"\n{}",
            backend_toml("echo", echo.addr, "\"any\"")
        ),
    );
    let alice = pki.client("alice");
    let agent = Agent::start(&pki, gw.addr, &alice, &["echo"]);
    let mut s = connect(agent.addr());
    echo_line(&mut s, b"idle after this\n");

    let sent = Instant::now();
    gw.terminate();
    let status = gw.wait_exit(PROMPT);
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        sent.elapsed() >= Duration::from_millis(900),
        "did not wait for shutdown_timeout"
    );
    // The local side sees the tunnel closed.
    let (rest, _) = tunnel_tests::data::read_all(&mut s);
    assert!(rest.is_empty());
    let audit = gw.wait_for_audit(PROMPT, |e| field(e, "backend") == "echo");
    assert!(field(&audit, "reason").contains("shutdown"), "{audit}");
}

#[test]
fn gateway_sigterm_right_after_readiness_exits_0() {
    let pki = Pki::new();
    let mut gw = Gateway::start(&pki, &backend_toml("echo", "127.0.0.1:9", "\"any\""));
    gw.terminate();
    let status = gw.wait_exit(PROMPT);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn agent_sigterm_drains_and_exits_0() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(&pki, &backend_toml("echo", echo.addr, "\"any\""));
    let alice = pki.client("alice");
    let mut agent = Agent::start(&pki, gw.addr, &alice, &["echo"]);
    let mut s = connect(agent.addr());
    echo_line(&mut s, b"hello\n");
    agent.terminate();
    wait_refusing(agent.addr());
    echo_line(&mut s, b"still flowing\n");
    s.shutdown(Shutdown::Write).unwrap();
    let _ = tunnel_tests::data::read_all(&mut s);
    let status = agent.wait_exit(PROMPT);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn demo_runs_its_checks_and_exits_0() {
    let mut cmd = command(&bins::server());
    cmd.args(["demo", "--exit-after-checks"]);
    let out = run_to_end(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[ok] allowed connection"), "{stdout}");
    assert!(stdout.contains("[ok] denied connection"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn agent_sigterm_right_after_readiness_exits_0() {
    let pki = Pki::new();
    let alice = pki.client("alice");
    // No gateway is needed to listen; port 9 (discard) is never dialled here.
    let mut agent = Agent::start(&pki, "127.0.0.1:9".parse().unwrap(), &alice, &["echo"]);
    agent.terminate();
    let status = agent.wait_exit(PROMPT);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn gateway_sigint_is_a_graceful_stop_too() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let mut gw = Gateway::start(&pki, &backend_toml("echo", echo.addr, "\"any\""));
    gw.signal(nix::sys::signal::Signal::SIGINT);
    let status = gw.wait_exit(PROMPT);
    assert_eq!(status.code(), Some(0), "{status:?}");
    gw.wait_for_message("gateway stopped", PROMPT);
}
