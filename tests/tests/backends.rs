//! Backend options: a PROXY protocol v2 header with the verified identity (parsed here byte
//! by byte, and accepted by a real HAProxy), a backend on a Unix socket (a real Redis), and
//! per-backend and per-identity connection caps (`overloaded`); and real backends reached by
//! their own clients through `tunnel-client exec` (redis-cli, psql against a throwaway
//! PostgreSQL cluster), with the command's exit status and Ctrl-C passed through.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::mpsc::channel;
use tunnel_core::pki::CertSpec;
use tunnel_tests::admin::{sessions, tunnel_works, wait_until, EchoTunnel};
use tunnel_tests::backend::{free_port, wait_accepting};
use tunnel_tests::process::number;
use tunnel_tests::tls::TlsClient;
use tunnel_tests::{backend_toml, field, Backend, Gateway, Pki, Proc, PROMPT};

/// The gateway config line for the admin socket `admin.sock` in the PKI directory.
const ADMIN: &str = "admin_socket = \"admin.sock\"\n";

/// The id `tunnel-server sessions` shows for the open tunnel from `local` (the id a PROXY v2
/// header must carry as PP2_TYPE_UNIQUE_ID): an oracle outside the header writer.
fn tunnel_id(pki: &Pki, local: SocketAddr) -> String {
    let all = sessions(&pki.dir().join("admin.sock"), &[]);
    let s = all
        .iter()
        .find(|s| field(s, "peer") == local.to_string())
        .unwrap_or_else(|| panic!("no session from {local}: {all:?}"));
    number(s, "id").to_string()
}

/// A parsed PROXY v2 header.
#[derive(Debug, Default)]
struct Header {
    command: u8,
    family: u8,
    source: Option<SocketAddr>,
    destination: Option<SocketAddr>,
    tlvs: Vec<(u8, Vec<u8>)>,
}

/// Reads one PROXY v2 header from `s`, one field at a time as a backend would.
fn read_header(s: &mut impl Read) -> std::io::Result<Header> {
    let mut sig = [0u8; 12];
    s.read_exact(&mut sig)?;
    assert_eq!(&sig, b"\r\n\r\n\0\r\nQUIT\n", "PROXY v2 signature");
    let mut fixed = [0u8; 4];
    s.read_exact(&mut fixed)?;
    assert_eq!(fixed[0] >> 4, 2, "version 2");
    let len = u16::from_be_bytes([fixed[2], fixed[3]]) as usize;
    let mut rest = vec![0u8; len];
    s.read_exact(&mut rest)?;
    let mut h = Header {
        command: fixed[0] & 0x0F,
        family: fixed[1],
        ..Header::default()
    };
    let addr_len = match fixed[1] {
        0x11 => {
            let ip = |b: &[u8]| std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
            h.source = Some(SocketAddr::new(ip(&rest[0..4]).into(), port(&rest[8..10])));
            h.destination = Some(SocketAddr::new(ip(&rest[4..8]).into(), port(&rest[10..12])));
            12
        }
        other => panic!("expected TCP over IPv4 (0x11), got {other:#x}"),
    };
    h.tlvs = tlvs(&rest[addr_len..]);
    Ok(h)
}

fn tlvs(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 3 {
        let len = u16::from_be_bytes([b[1], b[2]]) as usize;
        assert!(b.len() >= 3 + len, "TLV {:#x} overruns the header", b[0]);
        out.push((b[0], b[3..3 + len].to_vec()));
        b = &b[3 + len..];
    }
    assert!(b.is_empty(), "trailing bytes after the TLVs");
    out
}

fn tlv(h: &[(u8, Vec<u8>)], kind: u8) -> &[u8] {
    &h.iter()
        .find(|t| t.0 == kind)
        .unwrap_or_else(|| panic!("no TLV {kind:#x} in {h:?}"))
        .1
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).expect("UTF-8 TLV")
}

/// A peer program this test needs; fails with what to install when missing.
fn require(program: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{program} is not installed: apt-get install {package} (scripts/test does)"
    );
}

#[test]
fn proxy_v2_header_carries_address_and_identity() {
    let pki = Pki::new();
    let (tx, rx) = channel();
    let backend = Backend::spawn(move |mut s: TcpStream| {
        let h = read_header(&mut s);
        let ok = h.is_ok();
        let _ = tx.send(h.map_err(|e| e.to_string()));
        if ok {
            // Then the client's bytes, untouched.
            let mut r = s.try_clone().expect("clone");
            let _ = std::io::copy(&mut r, &mut s);
            let _ = s.shutdown(Shutdown::Write);
        }
    });
    let plain = Backend::banner(b"no header here\n");
    let body = format!(
        "{ADMIN}{}proxy_protocol = \"v2\"\n{}",
        backend_toml("pp", backend.addr, "\"any\""),
        backend_toml("plain", plain.addr, "\"any\"")
    );
    let gw = Gateway::start(&pki, &body);
    let mut spec = CertSpec::client("alice");
    spec.ou.push("dba".into());
    spec.dns.push("alice.example".into());
    let alice = pki.issue("alice", &spec);
    let client = TlsClient::new(&alice, &pki.ca_crt);
    let mut tls = client.connect(gw.addr, Some("pp")).expect("TLS");
    let local = tunnel_tests::tls::local_addr(&tls);
    tls.write_all(b"hello backend").unwrap();
    let mut back = [0u8; 13];
    tls.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello backend");
    let h = rx
        .recv_timeout(PROMPT)
        .expect("backend saw a connection")
        .expect("header");
    assert_eq!(h.command, 1, "PROXY command");
    assert_eq!(h.family, 0x11);
    assert_eq!(h.source, Some(local), "client address");
    assert_eq!(h.destination, Some(gw.addr), "gateway address");
    let t = &h.tlvs;
    assert_eq!(text(tlv(t, 0x02)), "pp", "PP2_TYPE_AUTHORITY = SNI");
    assert_eq!(
        text(tlv(t, 0x05)),
        tunnel_id(&pki, local),
        "unique id is the tunnel id `sessions` shows"
    );
    let ssl = tlv(t, 0x20);
    assert_eq!(
        ssl[0],
        0x01 | 0x02 | 0x04,
        "PP2_CLIENT_SSL | CERT_CONN | CERT_SESS"
    );
    assert_eq!(&ssl[1..5], &[0, 0, 0, 0], "verify = 0 (verified)");
    let sub = tlvs(&ssl[5..]);
    assert_eq!(text(tlv(&sub, 0x21)), "TLSv1.3");
    assert_eq!(text(tlv(&sub, 0x22)), "alice");
    assert!(text(tlv(&sub, 0x23)).starts_with("TLS_"), "{sub:?}");
    assert_eq!(text(tlv(t, 0xE0)), "CN=alice,OU=dba");
    assert_eq!(text(tlv(t, 0xE1)), "DNS:alice.example");
    assert_eq!(text(tlv(t, 0xE2)), alice.sha256());
    assert_eq!(
        text(tlv(t, 0xE3)),
        tunnel_tests::pki::serial_hex(&alice.issued.cert)
    );
    drop(tls);
    assert_eq!(field(&gw.audit_for(local), "result"), "ok");
    // A backend without proxy_protocol gets the client's bytes first, no header.
    let mut tls = client.connect(gw.addr, Some("plain")).expect("TLS");
    let mut b = [0u8; 15];
    tls.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"no header here\n");
    tls.write_all(b"x").unwrap();
    tls.read_exact(&mut b[..1]).unwrap();
    assert_eq!(b[0], b'x');
}

#[test]
fn haproxy_accepts_the_header_and_logs_the_client() {
    require("haproxy", "haproxy");
    let pki = Pki::new();
    let echo = Backend::echo();
    let port = free_port();
    let cfg = pki.write(
        "haproxy",
        "cfg",
        &format!(
            "global\n  log stdout format raw local0 info\n\
             defaults\n  mode tcp\n  log global\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend pp\n  bind 127.0.0.1:{port} accept-proxy\n\
               log-format \"client=%ci:%cp authority=%[fc_pp_authority] id=%[fc_pp_unique_id] bytes=%B\"\n\
               default_backend echo\n\
             backend echo\n  server e {}\n",
            echo.addr
        ),
    );
    let mut cmd = Command::new("haproxy");
    cmd.args(["-db", "-f"]).arg(&cfg);
    let haproxy = Proc::spawn("haproxy", cmd);
    wait_accepting(
        format!("127.0.0.1:{port}").parse().unwrap(),
        PROMPT,
        "haproxy",
    );
    let body = format!(
        "{ADMIN}{}proxy_protocol = \"v2\"\n",
        backend_toml("legacy", format!("127.0.0.1:{port}"), "\"any\"")
    );
    let gw = Gateway::start(&pki, &body);
    let alice = pki.client("alice");
    let mut t = EchoTunnel::open(&pki, &alice, gw.addr, "legacy", 9);
    t.round_trip(300_000)
        .expect("bytes through the gateway and HAProxy");
    let local = t.local;
    let tunnel = tunnel_id(&pki, local);
    drop(t);
    let want = format!("client={local} authority=legacy");
    let stdout = || String::from_utf8_lossy(&haproxy.stdout()).into_owned();
    wait_until("HAProxy's log line", PROMPT, || stdout().contains(&want));
    let out = stdout();
    let line = out.lines().find(|l| l.contains(&want)).unwrap_or_default();
    let id = line
        .split(" id=")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or("");
    assert_eq!(
        id, tunnel,
        "PP2_TYPE_UNIQUE_ID (tunnel id) in HAProxy's log: {line}"
    );
}

#[test]
fn unix_socket_backend_reaches_real_redis() {
    require("redis-server", "redis-server");
    let pki = Pki::new();
    let sock = pki.dir().join("redis.sock");
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        "0",
        "--save",
        "",
        "--appendonly",
        "no",
        "--unixsocketperm",
        "700",
    ])
    .arg("--unixsocket")
    .arg(&sock)
    .arg("--dir")
    .arg(pki.dir());
    let _redis = Proc::spawn("redis-server", cmd);
    wait_until("redis on its Unix socket", PROMPT, || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let body = backend_toml("cache", format!("unix:{}", sock.display()), "\"cn=alice\"");
    let gw = Gateway::start(&pki, &body);
    let alice = pki.client("alice");
    let client = TlsClient::new(&alice, &pki.ca_crt);
    let mut tls = client.connect(gw.addr, Some("cache")).expect("TLS");
    tls.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut pong = [0u8; 7];
    tls.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    let value = tunnel_tests::data::pattern_bytes(5, 100_000);
    let value: Vec<u8> = value.iter().map(|b| b'a' + b % 26).collect();
    let mut cmd = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n", value.len()).into_bytes();
    cmd.extend_from_slice(&value);
    cmd.extend_from_slice(b"\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    tls.write_all(&cmd).unwrap();
    let want = [
        b"+OK\r\n".to_vec(),
        format!("${}\r\n", value.len()).into_bytes(),
        value,
        b"\r\n".to_vec(),
    ]
    .concat();
    let mut got = vec![0u8; want.len()];
    tls.read_exact(&mut got).unwrap();
    assert!(
        got == want,
        "Redis answered something else through the Unix socket"
    );
    let local = tunnel_tests::tls::local_addr(&tls);
    drop(tls);
    let ev = gw.audit_for(local);
    assert_eq!(field(&ev, "result"), "ok", "{ev}");
    // A missing socket is an unreachable backend, audited as such.
    let gone = pki.dir().join("nothing.sock");
    let gw2 = Gateway::start(
        &pki,
        &backend_toml("cache", format!("unix:{}", gone.display()), "\"any\""),
    );
    let (ok, local) = tunnel_works(&pki, &alice, gw2.addr, "cache");
    assert!(!ok);
    assert_eq!(
        field(&gw2.audit_for(local), "result"),
        "backend_unreachable"
    );
}

#[test]
fn per_backend_and_per_identity_caps() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let body = format!(
        "{}max_connections = 3\nmax_connections_per_identity = 2\n{}",
        backend_toml("db", echo.addr, "\"any\""),
        backend_toml("web", echo.addr, "\"any\"")
    );
    let gw = Gateway::start(&pki, &body);
    let (alice, bob, carol) = (pki.client("alice"), pki.client("bob"), pki.client("carol"));
    let a1 = EchoTunnel::open(&pki, &alice, gw.addr, "db", 1);
    let mut a2 = EchoTunnel::open(&pki, &alice, gw.addr, "db", 2);
    let refused = |creds, what: &str| {
        let (ok, local) = tunnel_works(&pki, creds, gw.addr, "db");
        assert!(!ok, "{what} got a tunnel");
        let ev = gw.audit_for(local);
        assert_eq!(field(&ev, "result"), "overloaded", "{ev}");
        field(&ev, "reason").to_string()
    };
    let why = refused(&alice, "alice's third tunnel");
    assert!(why.contains("max_connections_per_identity (2)"), "{why}");
    let mut b1 = EchoTunnel::open(&pki, &bob, gw.addr, "db", 3);
    let why = refused(&carol, "a fourth tunnel to db");
    assert!(why.contains("max_connections (3)"), "{why}");
    // Another backend has its own (no) cap.
    assert!(tunnel_works(&pki, &carol, gw.addr, "web").0);
    drop(a1);
    wait_until("a slot to free up", PROMPT, || {
        tunnel_works(&pki, &carol, gw.addr, "db").0
    });
    a2.round_trip(100_000).unwrap();
    b1.round_trip(100_000).unwrap();
}

#[test]
fn bad_operator_keys_name_the_key_and_exit_64() {
    let pki = Pki::new();
    let cases = [
        ("address = \"unix:relative.sock\"", "backend[0].address", ""),
        (
            "address = \"127.0.0.1:1\"\nproxy_protocol = \"v1\"",
            "backend[0].proxy_protocol",
            "",
        ),
        (
            "address = \"127.0.0.1:1\"\nmax_connections = 0",
            "backend[0].max_connections",
            "",
        ),
        (
            "address = \"127.0.0.1:1\"\nmax_connections_per_identity = -1",
            "backend[0].max_connections_per_identity",
            "",
        ),
        (
            "address = \"127.0.0.1:1\"",
            "admin_socket",
            "admin_socket = \"\"\n",
        ),
        (
            "address = \"127.0.0.1:1\"",
            "admin_group",
            "admin_group = \" \"\n",
        ),
    ];
    for (backend, key, top) in cases {
        let text = format!(
            "{}{top}\n[[backend]]\nname = \"db\"\n{backend}\nallow = [\"any\"]\n",
            Gateway::header()
        );
        let path = pki.write("bad", "toml", &text);
        let out = tunnel_tests::run_server(&["check", "--config", path.to_str().unwrap()], PROMPT);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{key}: {err}");
        assert!(err.contains(&format!(": {key}: ")), "{key}: {err}");
    }
    // And the good ones pass.
    let text = format!(
        "{}admin_socket = \"off\"\ndisconnect_expired = true\n\n[[backend]]\nname = \"db\"\naddress = \"unix:/run/db.sock\"\nproxy_protocol = \"v2\"\nmax_connections = 5\nmax_connections_per_identity = 1\nallow = [\"any\"]\n",
        Gateway::header()
    );
    let path = pki.write("good", "toml", &text);
    let out = tunnel_tests::run_server(&["check", "--config", path.to_str().unwrap()], PROMPT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A gateway in front of `backends` (name, address; alice may reach each) and a client
/// configuration for alice without tunnels, as `exec` uses it; returns the config file.
fn exec_setup(pki: &Pki, backends: &[(&str, String)]) -> (Gateway, std::path::PathBuf) {
    let body: String = backends
        .iter()
        .map(|(name, addr)| backend_toml(name, addr, "\"cn=alice\""))
        .collect();
    let gw = Gateway::start(pki, &body);
    let alice = pki.client("alice");
    let toml = tunnel_tests::client_toml(&tunnel_tests::AgentSpec {
        server: gw.addr.to_string(),
        server_name: tunnel_tests::pki::SERVER_NAME,
        creds: &alice,
        ca: &pki.ca_crt,
        backends: &[],
        extra: "",
    });
    let config = pki.write("exec-client", "toml", &toml);
    (gw, config)
}

/// `tunnel-client --config CONFIG exec ARGS`, as a command.
fn exec_cmd(config: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = tunnel_tests::command(&tunnel_tests::bins::client());
    cmd.arg("--config").arg(config).arg("exec").args(args);
    cmd
}

fn exec(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    tunnel_tests::process::run_to_end(exec_cmd(config, args), PROMPT)
}

/// A Redis server on a free loopback port.
fn redis_on_tcp(pki: &Pki) -> (Proc, SocketAddr) {
    require("redis-server", "redis-server");
    require("redis-cli", "redis-tools");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--port", &addr.port().to_string()])
        .arg("--dir")
        .arg(pki.dir());
    let redis = Proc::spawn("redis-server", cmd);
    wait_accepting(addr, PROMPT, "redis-server");
    (redis, addr)
}

/// `exec` runs the real redis-cli against a tunnel on a free loopback port, with `{host}` /
/// `{port}` in its arguments and TUNNEL_HOST / TUNNEL_PORT in its environment; it exits with
/// the command's status (3 from a failing command, 127 for a missing one), refuses a backend
/// outside the catalog before running anything, and closes the tunnel when the command ends.
#[test]
fn exec_runs_redis_cli_through_a_tunnel_and_exits_with_its_status() {
    let pki = Pki::new();
    let (_redis, raddr) = redis_on_tcp(&pki);
    let (gw, config) = exec_setup(&pki, &[("cache", raddr.to_string())]);
    let out = exec(
        &config,
        &[
            "cache",
            "--",
            "redis-cli",
            "-h",
            "{host}",
            "-p",
            "{port}",
            "PING",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PONG");
    // The bytes went through the gateway: its audit event for this tunnel says ok.
    gw.wait_for_audit(PROMPT, |e| {
        field(e, "backend") == "cache" && field(e, "result") == "ok"
    });

    // The environment: SET through one tunnel, GET through the next, and the port printed.
    let value = format!("v{}", std::process::id());
    let script = format!(
        "redis-cli -h \"$TUNNEL_HOST\" -p \"$TUNNEL_PORT\" SET k {value} >/dev/null && \
         redis-cli -h \"$TUNNEL_HOST\" -p \"$TUNNEL_PORT\" GET k && echo \"$TUNNEL_PORT\""
    );
    let out = exec(&config, &["cache", "--", "sh", "-c", &script]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&value.as_str()), "{text}");
    let port: u16 = lines[1].parse().expect("TUNNEL_PORT is a port");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the tunnel still listens after the command exited"
    );

    // The command's own failure is the exit status.
    let out = exec(
        &config,
        &[
            "cache",
            "--",
            "sh",
            "-c",
            "redis-cli -h {host} -p {port} PING >/dev/null; exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let out = exec(&config, &["cache", "--", "no-such-command-here"]);
    assert_eq!(out.status.code(), Some(127), "{out:?}");

    // A backend outside the catalog: refused before the command runs.
    let marker = pki.dir().join("ran");
    let touch = format!("touch {}", marker.display());
    let out = exec(&config, &["nope", "--", "sh", "-c", &touch]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not among the backends"));
    assert!(
        !marker.exists(),
        "the command ran although the backend was refused"
    );
    // Positive control: the same command for a backend of the catalog runs.
    let out = exec(&config, &["cache", "--", "sh", "-c", &touch]);
    assert!(out.status.success() && marker.exists(), "{out:?}");
}

/// Ctrl-C reaches the command and the agent exits with the command's status: SIGINT sent to
/// the agent alone (a script's `kill -INT`) is passed on; SIGINT to the whole process group
/// (what a terminal's Ctrl-C does) does not stop the agent before the command.
#[test]
fn exec_passes_ctrl_c_to_the_command() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::os::unix::process::CommandExt;
    let pki = Pki::new();
    let echo = Backend::echo();
    let (_gw, config) = exec_setup(&pki, &[("echo", echo.addr.to_string())]);
    // The trap answers SIGINT with 42; the loop keeps the shell waiting in short steps.
    let script = "trap 'exit 42' INT; echo ready; while :; do sleep 0.1; done";
    for to_group in [false, true] {
        let mut cmd = exec_cmd(&config, &["echo", "--", "sh", "-c", script]);
        cmd.process_group(0);
        let mut p = Proc::spawn("tunnel-client exec", cmd);
        wait_until("the command to start", PROMPT, || {
            String::from_utf8_lossy(&p.stdout()).contains("ready")
        });
        let target = if to_group { -p.pid() } else { p.pid() };
        kill(Pid::from_raw(target), Signal::SIGINT).expect("kill(2)");
        let status = p.wait_exit(PROMPT);
        assert_eq!(
            status.code(),
            Some(42),
            "to_group={to_group}: {}",
            p.log_text()
        );
    }
}

/// The PostgreSQL binaries' directory: on PATH, else Debian's /usr/lib/postgresql/N/bin.
fn postgres_bin() -> std::path::PathBuf {
    let on_path = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(p) = on_path {
        return std::path::Path::new(&p)
            .parent()
            .expect("dir")
            .to_path_buf();
    }
    let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: apt-get install postgresql (scripts/test does)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().expect("no initdb under /usr/lib/postgresql")
}

/// `cmd` as user nobody when we are root (PostgreSQL refuses to run as root).
fn unprivileged(program: std::path::PathBuf) -> Command {
    if nix::unistd::Uid::effective().is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A throwaway PostgreSQL cluster (user `app`, trust auth) on a free loopback port.
fn postgres(dir: &std::path::Path) -> (Proc, SocketAddr) {
    require("psql", "postgresql-client");
    let bin = postgres_bin();
    if nix::unistd::Uid::effective().is_root() {
        std::os::unix::fs::chown(dir, Some(65534), Some(65534)).expect("chown to nobody");
    }
    let data = dir.join("data");
    let mut init = unprivileged(bin.join("initdb"));
    init.arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "app", "--no-sync"]);
    let out = tunnel_tests::process::run_to_end(init, PROMPT * 2);
    assert!(out.status.success(), "initdb: {out:?}");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut run = unprivileged(bin.join("postgres"));
    run.arg("-D").arg(&data).arg("-k").arg(dir);
    run.args([
        "-h",
        "127.0.0.1",
        "-p",
        &addr.port().to_string(),
        "-c",
        "fsync=off",
    ]);
    let pg = Proc::spawn("postgres", run);
    wait_accepting(addr, PROMPT, "postgres");
    (pg, addr)
}

/// `exec` runs the real psql: a query's answer comes back through the tunnel, and psql's own
/// statuses come through unchanged (1 for an SQL error, 2 for a failed connection).
#[test]
fn exec_runs_psql_through_a_tunnel_and_exits_with_its_status() {
    let pki = Pki::new();
    let pgdir = tempfile::tempdir().unwrap();
    let (_pg, addr) = postgres(pgdir.path());
    let (_gw, config) = exec_setup(&pki, &[("db", addr.to_string())]);
    let psql = |db: &str, sql: &str| {
        let args = [
            "db", "--", "psql", "-h", "{host}", "-p", "{port}", "-U", "app", "-d", db,
        ];
        let mut all = args.to_vec();
        all.extend(["-At", "-c", sql]);
        exec(&config, &all)
    };
    let out = psql("postgres", "SELECT 6*7");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    let out = psql("postgres", "SELECT 1/0");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("division by zero"));
    let out = psql("no_such_db", "SELECT 1");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_db"));
}
