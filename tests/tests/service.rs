//! Running as a service: systemd notify messages (READY, RELOADING + MONOTONIC_USEC,
//! STOPPING, STATUS, WATCHDOG) captured on a test NOTIFY_SOCKET, socket activation through
//! systemd's own `systemd-socket-activate`, Prometheus metrics and /healthz, privilege drop.

use nix::sys::signal::Signal;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};
use tunnel_tests::process::{command, Proc};
use tunnel_tests::tls::{exchange, local_addr, TlsClient};
use tunnel_tests::*;

/// Collects sd_notify datagrams sent to a socket in the test's temp dir.
struct NotifySocket {
    sock: UnixDatagram,
    path: std::path::PathBuf,
    seen: Vec<String>,
}

impl NotifySocket {
    fn new(pki: &Pki) -> NotifySocket {
        let path = pki.unique_path("notify", "sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        NotifySocket {
            sock,
            path,
            seen: Vec::new(),
        }
    }

    /// Waits for a message containing every one of `parts`; returns it.
    fn wait_for(&mut self, parts: &[&str]) -> String {
        self.wait_for_from(0, parts)
    }

    /// Like [`NotifySocket::wait_for`], among messages received after the first `from`.
    fn wait_for_from(&mut self, from: usize, parts: &[&str]) -> String {
        let deadline = Instant::now() + PROMPT;
        let mut start = from;
        loop {
            if let Some(m) = self.seen[start..]
                .iter()
                .find(|m| parts.iter().all(|p| m.contains(p)))
            {
                return m.clone();
            }
            start = self.seen.len();
            assert!(
                Instant::now() < deadline,
                "no notify message with {parts:?}; got {:?}",
                self.seen
            );
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.sock.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).to_string());
            }
        }
    }
}

/// A client agent config for alice with one tunnel to "data" through `gateway`.
fn agent_config(pki: &Pki, gateway: SocketAddr) -> std::path::PathBuf {
    let alice = pki.client("alice");
    pki.write(
        "client",
        "toml",
        &client_toml(&AgentSpec {
            server: gateway.to_string(),
            server_name: pki::SERVER_NAME,
            creds: &alice,
            ca: &pki.ca_crt,
            backends: &["data"],
            extra: "",
        }),
    )
}

fn gateway_cmd(config: &std::path::Path) -> std::process::Command {
    let mut cmd = command(&bins::server());
    cmd.arg("--config").arg(config);
    cmd
}

#[test]
fn gateway_speaks_the_sd_notify_protocol() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let config = pki.write(
        "server",
        "toml",
        &(Gateway::header() + &backend_toml("data", echo.addr, "\"any\"")),
    );
    let mut notify = NotifySocket::new(&pki);
    let mut cmd = gateway_cmd(&config);
    cmd.env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "200000");
    let mut gw = Proc::spawn("tunnel-server", cmd);
    gw.wait_for_message("gateway listening", READY);

    let ready = notify.wait_for(&["READY=1", "STATUS="]);
    assert!(ready.contains("serving on 127.0.0.1:"), "{ready}");
    // Pings keep coming, not just one.
    for _ in 0..3 {
        let n = notify.seen.len();
        notify.wait_for_from(n, &["WATCHDOG=1"]);
    }

    let n = notify.seen.len();
    gw.signal(Signal::SIGHUP);
    let reloading = notify.wait_for_from(n, &["RELOADING=1"]);
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {reloading:?}"))
        .parse()
        .unwrap();
    assert!(usec > 0);
    notify.wait_for(&["READY=1", "reloaded"]);

    let n = notify.seen.len();
    gw.terminate();
    notify.wait_for_from(n, &["STOPPING=1"]);
    assert!(gw.wait_exit(PROMPT).success());
}

#[test]
fn client_agent_reports_ready_with_its_tunnels() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(&pki, &backend_toml("data", echo.addr, "\"any\""));
    let config = agent_config(&pki, gw.addr);
    let mut notify = NotifySocket::new(&pki);
    let mut cmd = command(&bins::client());
    cmd.arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify.path);
    let mut agent = Proc::spawn("tunnel-client", cmd);
    let m = notify.wait_for(&["READY=1"]);
    assert!(m.contains(&format!("1 tunnel(s) to {}", gw.addr)), "{m}");
    agent.terminate();
    notify.wait_for(&["STOPPING=1"]);
    assert!(agent.wait_exit(PROMPT).success());
}

/// `systemd-socket-activate` (from Debian's systemd package) binds, then starts the program
/// with the socket as fd 3 when the first connection arrives.
fn socket_activate(
    name: &str,
    fdname: &str,
    port: u16,
    program: &std::path::Path,
    config: &std::path::Path,
) -> Proc {
    let tool = "systemd-socket-activate";
    let found = std::process::Command::new(tool).arg("--version").output();
    assert!(
        found.map(|o| o.status.success()).unwrap_or(false),
        "{tool} is missing: apt-get install systemd"
    );
    let mut cmd = std::process::Command::new(tool);
    cmd.arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg(format!("--fdname={fdname}"))
        .arg("-E")
        .arg("RUST_LOG=info")
        .arg(program)
        .arg("--config")
        .arg(config);
    let p = Proc::spawn(name, cmd);
    p.wait_until("socket bound", READY, |evs| {
        evs.iter()
            .any(|e| {
                e.to_string()
                    .contains(&format!("Listening on 127.0.0.1:{port}"))
            })
            .then_some(())
    });
    p
}

#[test]
fn gateway_serves_a_socket_passed_by_systemd() {
    let pki = Pki::new();
    let echo = Backend::echo();
    // `listen` names a port nobody uses: the passed socket must be served instead.
    let unused = closed_port();
    let config = pki.write(
        "server",
        "toml",
        &(Gateway::header().replace("127.0.0.1:0", &unused.addr.to_string())
            + &backend_toml("data", echo.addr, "\"cn=alice\"")),
    );
    let port = free_port();
    let gw = socket_activate(
        "socket-activated gateway",
        "gateway",
        port,
        &bins::server(),
        &config,
    );
    let alice = pki.client("alice");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = TlsClient::new(&alice, &pki.ca_crt);
    let mut s = client
        .connect(addr, Some("data"))
        .expect("handshake on the passed socket");
    let peer = local_addr(&s);
    assert_eq!(exchange(&mut s, b"activated").0, b"activated");
    gw.wait_for_message("using socket passed by systemd", PROMPT);
    let ev = gw.wait_for_audit(PROMPT, |e| field(e, "peer") == peer.to_string());
    assert_eq!(field(&ev, "result"), "ok");
    assert!(
        TcpStream::connect(unused.addr).is_err(),
        "`listen` must be ignored"
    );
}

#[test]
fn client_agent_serves_a_socket_passed_by_systemd() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(&pki, &backend_toml("data", echo.addr, "\"cn=alice\""));
    let config = agent_config(&pki, gw.addr);
    let port = free_port();
    let _agent = socket_activate(
        "socket-activated agent",
        "data",
        port,
        &bins::client(),
        &config,
    );
    let mut s = backend::connect(format!("127.0.0.1:{port}").parse().unwrap());
    let (got, err) = backend::round_trip(&mut s, b"through the passed socket");
    assert_eq!(got, b"through the passed socket", "{err:?}");
    let ev = gw.wait_for_audit(PROMPT, |e| field(e, "backend") == "data");
    assert_eq!(field(&ev, "result"), "ok");
}

/// GET `path` from the metrics endpoint: (status code, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("metrics endpoint");
    s.set_read_timeout(Some(PROMPT)).unwrap();
    // Ask for OpenMetrics as Prometheus does (without it /metrics answers in the classic format).
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// The value of the sample `name{labels}` in OpenMetrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

fn wait_for_sample(addr: SocketAddr, series: &str, want: f64) -> String {
    let deadline = Instant::now() + PROMPT;
    loop {
        let (_, body) = http_get(addr, "/metrics");
        if sample(&body, series) == Some(want) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {want}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_count_the_traffic_sent() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(
        &pki,
        &format!(
            "metrics = \"127.0.0.1:0\"\nshutdown_timeout = \"20s\"\n{}",
            backend_toml("data", echo.addr, "\"cn=alice\"")
        ),
    );
    let maddr = gw.metrics_addr();
    assert_eq!(http_get(maddr, "/healthz"), (200, "ok\n".to_string()));

    let alice = pki.client("alice");
    let bob = pki.client("bob");
    let client = TlsClient::new(&alice, &pki.ca_crt);
    let mut total = 0u64;
    for n in [1000usize, 2000, 3000] {
        let msg = data::pattern_bytes(n as u64, n);
        let mut s = client.connect(gw.addr, Some("data")).expect("handshake");
        assert_eq!(exchange(&mut s, &msg).0, msg);
        total += n as u64;
    }
    let mut s = TlsClient::new(&bob, &pki.ca_crt)
        .connect(gw.addr, Some("data"))
        .expect("TCP");
    assert!(exchange(&mut s, b"no").0.is_empty());

    let body = wait_for_sample(
        maddr,
        "tunnel_connections_total{backend=\"data\",result=\"ok\"}",
        3.0,
    );
    let body = if sample(
        &body,
        "tunnel_connections_total{backend=\"data\",result=\"denied\"}",
    ) == Some(1.0)
    {
        body
    } else {
        wait_for_sample(
            maddr,
            "tunnel_connections_total{backend=\"data\",result=\"denied\"}",
            1.0,
        )
    };
    let t = total as f64;
    assert_eq!(
        sample(
            &body,
            "tunnel_bytes_total{backend=\"data\",direction=\"up\"}"
        ),
        Some(t),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "tunnel_bytes_total{backend=\"data\",direction=\"down\"}"
        ),
        Some(t),
        "{body}"
    );
    assert_eq!(
        sample(&body, "tunnel_active_connections{backend=\"data\"}"),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "tunnel_handshake_duration_seconds_count"),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "tunnel_handshake_failures_total{reason=\"denied\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "tunnel_reloads_total{result=\"success\"}"),
        Some(1.0),
        "{body}"
    );
    let cert_left =
        sample(&body, "tunnel_certificate_expiry_seconds{which=\"cert\"}").expect("cert expiry");
    assert!(
        cert_left > 300.0 * 86_400.0,
        "the test certificate is valid for a year: {cert_left}"
    );
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );

    // An open tunnel is active; while draining /healthz says 503.
    let mut open = client.connect(gw.addr, Some("data")).expect("handshake");
    open.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    open.read_exact(&mut buf).unwrap();
    wait_for_sample(maddr, "tunnel_active_connections{backend=\"data\"}", 1.0);
    gw.terminate();
    let deadline = Instant::now() + PROMPT;
    loop {
        let (code, body) = http_get(maddr, "/healthz");
        if code == 503 {
            assert_eq!(body, "draining\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never turned 503 while draining"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(exchange(&mut open, b"bye").0, b"bye");
}

#[test]
fn client_agent_exports_metrics_too() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(&pki, &backend_toml("data", echo.addr, "\"cn=alice\""));
    let alice = pki.client("alice");
    let extra = "metrics = \"127.0.0.1:0\"".to_string();
    let agent = Agent::start_spec(
        &pki,
        &AgentSpec {
            server: gw.addr.to_string(),
            server_name: pki::SERVER_NAME,
            creds: &alice,
            ca: &pki.ca_crt,
            backends: &["data"],
            extra: &extra,
        },
    );
    let maddr = agent.metrics_addr();
    let (got, _) = backend::round_trip(&mut backend::connect(agent.addr()), b"12345");
    assert_eq!(got, b"12345");
    let body = wait_for_sample(
        maddr,
        "tunnel_connections_total{backend=\"data\",result=\"ok\"}",
        1.0,
    );
    assert_eq!(
        sample(
            &body,
            "tunnel_bytes_total{backend=\"data\",direction=\"up\"}"
        ),
        Some(5.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "tunnel_bytes_total{backend=\"data\",direction=\"down\"}"
        ),
        Some(5.0),
        "{body}"
    );
    assert_eq!(http_get(maddr, "/healthz").0, 200);
}

#[test]
fn privileges_are_dropped_after_binding_or_refused_without_root() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let body = format!(
        "user = \"nobody\"\n{}",
        backend_toml("data", echo.addr, "\"cn=alice\"")
    );
    if nix::unistd::Uid::effective().is_root() {
        let gw = Gateway::start(&pki, &body);
        let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).unwrap();
        let nobody = nix::unistd::User::from_name("nobody")
            .unwrap()
            .expect("user nobody");
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        let uids: Vec<u32> = uid_line
            .split_whitespace()
            .skip(1)
            .map(|u| u.parse().unwrap())
            .collect();
        assert_eq!(uids, vec![nobody.uid.as_raw(); 4], "{uid_line}");
        let gid_line = status.lines().find(|l| l.starts_with("Gid:")).unwrap();
        let gids: Vec<u32> = gid_line
            .split_whitespace()
            .skip(1)
            .map(|g| g.parse().unwrap())
            .collect();
        assert_eq!(gids, vec![nobody.gid.as_raw(); 4], "{gid_line}");
        let groups = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
        assert!(
            !groups.split_whitespace().skip(1).any(|g| g == "0"),
            "root group kept: {groups}"
        );
        gw.wait_for_message("dropped privileges", PROMPT);
        // Still serving after the switch.
        let alice = pki.client("alice");
        let mut s = TlsClient::new(&alice, &pki.ca_crt)
            .connect(gw.addr, Some("data"))
            .expect("handshake");
        assert_eq!(exchange(&mut s, b"as nobody").0, b"as nobody");
    } else {
        let config = pki.write("server", "toml", &(Gateway::header() + &body));
        let out = run_server(&["--config", config.to_str().unwrap()], PROMPT);
        assert_eq!(out.status.code(), Some(64));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not running as root"), "{err}");
    }
}

#[test]
fn a_world_readable_key_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let echo = Backend::echo();
    std::fs::set_permissions(&pki.server.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let gw = Gateway::start(&pki, &backend_toml("data", echo.addr, "\"any\""));
    let ev = gw.wait_for_message(
        "private key is more open than the service needs; chmod 600 it, or 640 with the group the service runs as (e.g. 0640 root:tunnel)",
        PROMPT,
    );
    assert_eq!(field(&ev, "mode"), "644");
}

#[test]
fn expiry_warnings_name_what_expires() {
    let pki = Pki::new();
    let echo = Backend::echo();
    // The test certificate lives a year and the CA 30 days: both within 400 days.
    let gw = Gateway::start(
        &pki,
        &format!(
            "expiry_warning = \"400d\"\n{}",
            backend_toml("data", echo.addr, "\"any\"")
        ),
    );
    let warned = |which: &str| {
        gw.wait_for("expiry warning", PROMPT, |e| {
            field(e, "message").contains("expires soon") && field(e, "which") == which
        })
    };
    assert!(process::number(&warned("cert"), "days_left") >= 300);
    assert!(process::number(&warned("ca"), "days_left") <= 30);
    // The default lead time (14 days) stays quiet for them.
    let quiet = Gateway::start(&pki, &backend_toml("data", echo.addr, "\"any\""));
    assert!(
        !quiet
            .events()
            .iter()
            .any(|e| field(e, "message").contains("expires soon")),
        "no warning expected with the default expiry_warning"
    );
}

#[test]
fn a_second_signal_exits_at_once_and_the_descriptor_limit_is_raised() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let mut gw = Gateway::start(
        &pki,
        &format!(
            "shutdown_timeout = \"1h\"\n{}",
            backend_toml("data", echo.addr, "\"any\"")
        ),
    );
    // Soft RLIMIT_NOFILE raised to the hard limit.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", gw.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(nums[0], nums[1], "soft limit not raised: {line}");

    // An open tunnel would hold the drain for an hour; the second SIGTERM ends it.
    let alice = pki.client("alice");
    let mut open = TlsClient::new(&alice, &pki.ca_crt)
        .connect(gw.addr, Some("data"))
        .expect("handshake");
    open.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    open.read_exact(&mut buf).unwrap();
    gw.terminate();
    gw.wait_for_message("draining open connections", PROMPT);
    let started = Instant::now();
    gw.terminate();
    assert!(gw.wait_exit(PROMPT).success());
    assert!(started.elapsed() < PROMPT);
}
