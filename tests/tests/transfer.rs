//! Bytes through client agent + gateway: bulk both ways at once, half-close in each
//! direction, and the agent's stdio and one-off (flags only) modes. Every transfer is checked
//! by SHA-256 at both ends and against the gateway's audit byte counts.

use std::net::{Shutdown, SocketAddr};
use tunnel_tests::backend::connect;
use tunnel_tests::data::{hash_reader, pattern_hash, send_pattern};
use tunnel_tests::process::{boolean, number};
use tunnel_tests::*;

const MIB: u64 = 1 << 20;

fn assert_ok_audit(gw: &Gateway, backend: &str, up: u64, down: u64) {
    let ev = gw.wait_for_audit(PROMPT, |e| field(e, "backend") == backend);
    assert_eq!(field(&ev, "result"), "ok", "{ev}");
    assert_eq!(field(&ev, "subject"), "CN=alice", "{ev}");
    assert_eq!(field(&ev, "sni"), backend, "{ev}");
    assert_eq!(number(&ev, "bytes_up"), up, "bytes_up in {ev}");
    assert_eq!(number(&ev, "bytes_down"), down, "bytes_down in {ev}");
    assert!(!boolean(&ev, "resumed"), "{ev}");
}

#[test]
fn sixty_four_mib_each_way_at_once_arrive_intact() {
    const LEN: u64 = 64 * MIB;
    let pki = Pki::new();
    let (backend, reports) = Backend::source_sink(2, LEN);
    let gw = Gateway::start(&pki, &backend_toml("bulk", backend.addr, "\"cn=alice\""));
    let alice = pki.client("alice");
    let agent = Agent::start(&pki, gw.addr, &alice, &["bulk"]);

    let mut s = connect(agent.addr());
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let h = send_pattern(&mut w, 1, LEN);
        let _ = w.shutdown(Shutdown::Write);
        h
    });
    let (down_len, down_hash, down_err) = hash_reader(&mut s);
    let up_hash = writer.join().unwrap().expect("sending 64 MiB up");
    let t = reports.recv_timeout(PROMPT).expect("backend report");

    assert!(down_err.is_none(), "client read error: {down_err:?}");
    assert_eq!(t.error, None, "backend error");
    assert_eq!(t.received, LEN, "bytes the backend received");
    assert_eq!(t.received_sha256, up_hash, "upstream bytes differ");
    assert_eq!(up_hash, pattern_hash(1, LEN));
    assert_eq!(down_len, LEN, "bytes the client received");
    assert_eq!(down_hash, t.sent_sha256, "downstream bytes differ");
    assert_eq!(down_hash, pattern_hash(2, LEN));
    assert_ok_audit(&gw, "bulk", LEN, LEN);
}

#[test]
fn client_half_close_still_gets_the_whole_response() {
    // The backend answers only after it sees EOF: the client's FIN must cross both hops
    // while the way back stays open.
    let (up, down) = (MIB + 7, 4 * MIB + 3);
    let pki = Pki::new();
    let (backend, reports) = Backend::respond_after_eof(11, down);
    let gw = Gateway::start(&pki, &backend_toml("answer", backend.addr, "\"any\""));
    let alice = pki.client("alice");
    let agent = Agent::start(&pki, gw.addr, &alice, &["answer"]);

    let mut s = connect(agent.addr());
    let sent = send_pattern(&mut s, 10, up).expect("send");
    s.shutdown(Shutdown::Write).expect("half-close");
    let (n, got, err) = hash_reader(&mut s);
    assert!(err.is_none(), "read error after half-close: {err:?}");
    let t = reports.recv_timeout(PROMPT).expect("backend report");
    assert_eq!(t.error, None);
    assert_eq!((t.received, &t.received_sha256), (up, &sent));
    assert_eq!((n, &got), (down, &pattern_hash(11, down)));
    assert_ok_audit(&gw, "answer", up, down);
}

#[test]
fn backend_half_close_lets_the_client_keep_sending() {
    // The backend sends everything and closes its side first; the client reads to EOF and
    // only then sends its own data, which must still reach the backend.
    let (down, up) = (MIB + 5, 2 * MIB + 1);
    let pki = Pki::new();
    let (backend, reports) = Backend::source_sink(21, down);
    let gw = Gateway::start(&pki, &backend_toml("talker", backend.addr, "\"any\""));
    let alice = pki.client("alice");
    let agent = Agent::start(&pki, gw.addr, &alice, &["talker"]);

    let mut s = connect(agent.addr());
    let (n, got, err) = hash_reader(&mut s);
    assert!(err.is_none(), "read error: {err:?}");
    assert_eq!((n, &got), (down, &pattern_hash(21, down)));
    let sent = send_pattern(&mut s, 20, up).expect("sending after the backend's EOF");
    s.shutdown(Shutdown::Write).expect("half-close");
    let t = reports.recv_timeout(PROMPT).expect("backend report");
    assert_eq!(t.error, None);
    assert_eq!((t.received, &t.received_sha256), (up, &sent));
    assert_ok_audit(&gw, "talker", up, down);
}

/// Pipes `len` bytes of pattern `seed` through `tunnel-client stdio ARGS` to an echo backend
/// and checks what comes back and the exit code.
fn stdio_round_trip(args: &[std::ffi::OsString], seed: u64, len: u64) {
    let mut cmd = command(&bins::client());
    cmd.args(args);
    let (mut proc, mut stdin, mut stdout) = Proc::spawn_stdio("tunnel-client stdio", cmd);
    let writer = std::thread::spawn(move || {
        let h = send_pattern(&mut stdin, seed, len);
        drop(stdin); // EOF on the agent's stdin
        h
    });
    let (n, got, err) = hash_reader(&mut stdout);
    let sent = writer.join().unwrap().expect("writing stdin");
    assert!(err.is_none(), "{err:?}");
    assert_eq!(n, len, "bytes back on stdout; log:\n{}", proc.log_text());
    assert_eq!(got, sent, "bytes back on stdout differ");
    let status = proc.wait_exit(PROMPT);
    assert_eq!(status.code(), Some(0), "log:\n{}", proc.log_text());
}

fn echo_gateway(pki: &Pki, echo: &Backend) -> Gateway {
    Gateway::start(pki, &backend_toml("echo", echo.addr, "\"cn=alice\""))
}

#[test]
fn stdio_mode_with_config_file_pipes_stdin_to_stdout() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = echo_gateway(&pki, &echo);
    let alice = pki.client("alice");
    // A file without [[tunnel]] is fine for stdio.
    let cfg = pki.write(
        "stdio",
        "toml",
        &client_toml(&AgentSpec {
            server: gw.addr.to_string(),
            server_name: "localhost",
            creds: &alice,
            ca: &pki.ca_crt,
            backends: &[],
            extra: "",
        }),
    );
    let args = [
        "stdio".into(),
        "--backend".into(),
        "echo".into(),
        "--config".into(),
        cfg.into_os_string(),
    ];
    stdio_round_trip(&args, 30, 3 * MIB + 17);
    assert_ok_audit(&gw, "echo", 3 * MIB + 17, 3 * MIB + 17);
}

#[test]
fn stdio_mode_with_flags_only() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = echo_gateway(&pki, &echo);
    let alice = pki.client("alice");
    let args: Vec<std::ffi::OsString> = vec![
        "stdio".into(),
        "--backend".into(),
        "echo".into(),
        "--server".into(),
        gw.addr.to_string().into(),
        "--server-name".into(),
        "localhost".into(),
        "--cert".into(),
        alice.cert.clone().into(),
        "--key".into(),
        alice.key.clone().into(),
        "--ca".into(),
        pki.ca_crt.clone().into(),
    ];
    stdio_round_trip(&args, 31, 100_003);
    assert_ok_audit(&gw, "echo", 100_003, 100_003);
}

#[test]
fn one_off_tunnel_from_flags() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = echo_gateway(&pki, &echo);
    let alice = pki.client("alice");
    let mut cmd = command(&bins::client());
    cmd.args([
        "--server",
        &gw.addr.to_string(),
        "--server-name",
        "localhost",
    ])
    .arg("--cert")
    .arg(&alice.cert)
    .arg("--key")
    .arg(&alice.key)
    .arg("--ca")
    .arg(&pki.ca_crt)
    .args(["--listen", "127.0.0.1:0", "--backend", "echo"]);
    let agent = Proc::spawn("tunnel-client (flags)", cmd);
    // Without a file there is no log_format key: the readiness line is text.
    let addr: SocketAddr = agent.wait_until("tunnel listening", READY, |evs| {
        evs.iter().find_map(|e| {
            let line = field(e, "raw");
            if !line.contains("tunnel listening") {
                return None;
            }
            line.split_whitespace()
                .find_map(|w| w.strip_prefix("listen="))
                .and_then(|a| a.parse().ok())
        })
    });
    let mut s = connect(addr);
    let sent = send_pattern(&mut s, 40, 300_000).expect("send");
    s.shutdown(Shutdown::Write).expect("half-close");
    let (n, got, err) = hash_reader(&mut s);
    assert!(err.is_none(), "{err:?}");
    assert_eq!((n, got), (300_000, sent));
    assert_ok_audit(&gw, "echo", 300_000, 300_000);
}

#[test]
fn many_connections_at_once_stay_separate() {
    // Eight tunnels through one agent, each with its own byte stream.
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = echo_gateway(&pki, &echo);
    let alice = pki.client("alice");
    let agent = Agent::start(&pki, gw.addr, &alice, &["echo"]);
    let addr = agent.addr();
    let handles: Vec<_> = (0..8u64)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                let mut w = s.try_clone().expect("clone");
                let len = 200_000 + i * 1000;
                let writer = std::thread::spawn(move || {
                    let h = send_pattern(&mut w, 100 + i, len);
                    let _ = w.shutdown(Shutdown::Write);
                    h
                });
                let (n, got, err) = hash_reader(&mut s);
                let sent = writer.join().unwrap().expect("send");
                assert!(err.is_none(), "{err:?}");
                assert_eq!((n, got), (len, sent), "stream {i}");
            })
        })
        .collect();
    for h in handles {
        h.join().expect("stream thread");
    }
    gw.wait_until("8 audit events", PROMPT, |evs| {
        let oks = evs
            .iter()
            .filter(|e| field(e, "target") == "audit" && field(e, "result") == "ok")
            .count();
        (oks == 8).then_some(())
    });
    assert_eq!(echo.accepted(), 8);
}

#[test]
fn stdio_mode_exits_non_zero_when_the_gateway_refuses() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(&pki, &backend_toml("echo", echo.addr, "\"cn=root\""));
    let bob = pki.client("bob");
    let mut cmd = command(&bins::client());
    cmd.args([
        "stdio",
        "--backend",
        "echo",
        "--server",
        &gw.addr.to_string(),
    ])
    .args(["--server-name", "localhost"])
    .arg("--cert")
    .arg(&bob.cert)
    .arg("--key")
    .arg(&bob.key)
    .arg("--ca")
    .arg(&pki.ca_crt);
    let (mut proc, mut stdin, mut stdout) = Proc::spawn_stdio("tunnel-client stdio", cmd);
    let _ = std::io::Write::write_all(&mut stdin, b"let me in");
    drop(stdin);
    let (n, _, _) = hash_reader(&mut stdout);
    assert_eq!(n, 0, "a refused tunnel wrote to stdout");
    let status = proc.wait_exit(PROMPT);
    assert_eq!(status.code(), Some(1), "log:\n{}", proc.log_text());
    let ev = gw.wait_for_audit(PROMPT, |_| true);
    assert_eq!(field(&ev, "result"), "denied", "{ev}");
    assert_eq!(
        field(&ev, "reason"),
        "no allow rule of backend \"echo\" matches",
        "{ev}"
    );
    assert_eq!(echo.accepted(), 0);
    // Positive control: the gateway still serves the client the rule allows.
    let mut gw = gw;
    assert_serves(&mut gw, &pki.client("root"), &pki.ca_crt, Some("echo"));
}
