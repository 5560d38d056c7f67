//! Interoperability with standard TLS peers: `openssl s_client` and stunnel as clients of the
//! gateway (backend chosen by SNI), and stunnel as the TLS server our client agent talks to.
//! The peers are required: a missing one fails the test with the package to install.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tunnel_core::pki::CertSpec;
use tunnel_tests::backend::{connect, free_port, round_trip, wait_accepting};
use tunnel_tests::data::{hash_reader, pattern_bytes, pattern_hash, send_pattern, sha256_hex};
use tunnel_tests::process::{number, run_with_input, AgentSpec};
use tunnel_tests::*;

/// The first of `names` on PATH; fails (never skips) when none is installed.
fn require(names: &[&str], package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "{} not found on PATH: the interop tests need it; run `apt-get install {package}` (scripts/test installs it)",
        names.join(" or ")
    );
}

fn stunnel() -> PathBuf {
    require(&["stunnel4", "stunnel"], "stunnel4")
}

fn openssl() -> PathBuf {
    require(&["openssl"], "openssl")
}

/// A backend that reads exactly `expect` bytes, answers `sha256:<hex of them>\n` followed by
/// `answer` bytes of pattern `seed`, and closes.
fn hashing_backend(expect: u64, seed: u64, answer: u64) -> Backend {
    Backend::spawn(move |s| {
        let mut r = s.try_clone().expect("clone");
        let (n, h, _) = hash_reader(&mut (&mut r).take(expect));
        if n != expect {
            return;
        }
        let mut w = s;
        let head = format!("sha256:{h}\n");
        if std::io::Write::write_all(&mut w, head.as_bytes()).is_ok() {
            let _ = send_pattern(&mut w, seed, answer);
        }
        let _ = w.shutdown(std::net::Shutdown::Write);
    })
}

#[test]
fn openssl_s_client_reaches_a_backend_by_sni() {
    let openssl = openssl();
    let (up, down) = (150_000u64, 300_000u64);
    let pki = Pki::new();
    let backend = hashing_backend(up, 5, down);
    let decoy = Backend::banner(b"wrong backend\n");
    let gw = Gateway::start(
        &pki,
        &(backend_toml("decoy", decoy.addr, "\"any\"")
            + &backend_toml("hasher", backend.addr, "\"cn=alice\"")),
    );
    let alice = pki.client("alice");
    let mut cmd = Command::new(openssl);
    cmd.args(["s_client", "-quiet", "-nocommands", "-verify_return_error"])
        .args(["-connect", &gw.addr.to_string(), "-servername", "hasher"])
        .args(["-verify_hostname", "localhost"])
        .arg("-cert")
        .arg(&alice.cert)
        .arg("-key")
        .arg(&alice.key)
        .arg("-CAfile")
        .arg(&pki.ca_crt);
    let input = pattern_bytes(4, up as usize);
    let out = run_with_input(cmd, Some(input.clone()), Duration::from_secs(60));
    let stdout = out.stdout;
    let want_head = format!("sha256:{}\n", sha256_hex(&input));
    assert!(
        stdout.starts_with(want_head.as_bytes()),
        "s_client got {} bytes starting {:?}; stderr:\n{}",
        stdout.len(),
        String::from_utf8_lossy(&stdout[..stdout.len().min(80)]),
        String::from_utf8_lossy(&out.stderr)
    );
    let body = &stdout[want_head.len()..];
    assert_eq!(body.len() as u64, down);
    assert_eq!(sha256_hex(body), pattern_hash(5, down));
    let ev = gw.wait_for_audit(PROMPT, |e| field(e, "backend") == "hasher");
    assert_eq!(field(&ev, "result"), "ok", "{ev}");
    assert_eq!(field(&ev, "subject"), "CN=alice", "{ev}");
    assert_eq!(number(&ev, "bytes_up"), up, "{ev}");
    assert_eq!(
        number(&ev, "bytes_down"),
        down + want_head.len() as u64,
        "{ev}"
    );
    assert_eq!(decoy.accepted(), 0);
}

/// stunnel in the foreground with `services` (each a `[name]` section); returns the process.
fn start_stunnel(pki: &Pki, services: &str) -> Proc {
    let bin = stunnel();
    let conf = pki.write(
        "stunnel",
        "conf",
        &format!("foreground = yes\npid =\ndebug = info\n\n{services}"),
    );
    let mut cmd = Command::new(bin);
    cmd.arg(&conf);
    Proc::spawn("stunnel", cmd)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn stunnel_client_reaches_a_backend_through_the_gateway() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(&pki, &backend_toml("echo", echo.addr, "\"cn=alice\""));
    let alice = pki.client("alice");
    let port = free_port();
    let stunnel = start_stunnel(
        &pki,
        &format!(
            "[to-gateway]\nclient = yes\naccept = 127.0.0.1:{port}\nconnect = {}\nsni = echo\n\
             cert = {}\nkey = {}\nCAfile = {}\nverifyChain = yes\ncheckHost = localhost\n",
            gw.addr,
            path(&alice.cert),
            path(&alice.key),
            path(&pki.ca_crt)
        ),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_accepting(addr, READY, "stunnel");

    let len = 2 << 20;
    let mut s = connect(addr);
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let h = send_pattern(&mut w, 6, len);
        let _ = w.shutdown(std::net::Shutdown::Write);
        h
    });
    let (n, got, err) = hash_reader(&mut s);
    let sent = writer.join().unwrap().expect("send");
    assert!(
        err.is_none(),
        "{err:?}; stunnel log:\n{}",
        stunnel.log_text()
    );
    assert_eq!((n, got), (len, sent));
    let ev = gw.wait_for_audit(PROMPT, |e| {
        field(e, "result") == "ok" && number(e, "bytes_up") > 0
    });
    assert_eq!(field(&ev, "subject"), "CN=alice", "{ev}");
    assert_eq!(field(&ev, "sni"), "echo", "{ev}");
    assert_eq!(
        (number(&ev, "bytes_up"), number(&ev, "bytes_down")),
        (len, len)
    );
}

#[test]
fn client_agent_talks_to_stunnel_as_tls_server() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let mut spec = CertSpec::server("stunnel.test");
    spec.ip.clear();
    let server = pki.issue("stunnel-server", &spec);
    let port = free_port();
    let stunnel = start_stunnel(
        &pki,
        &format!(
            "[from-agent]\naccept = 127.0.0.1:{port}\nconnect = {}\ncert = {}\nkey = {}\n\
             CAfile = {}\nverifyChain = yes\nrequireCert = yes\n",
            echo.addr,
            path(&server.cert),
            path(&server.key),
            path(&pki.ca_crt)
        ),
    );
    let stunnel_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_accepting(stunnel_addr, READY, "stunnel");
    let probes = echo.accepted();

    let agent_for = |creds: &Creds| {
        Agent::start_spec(
            &pki,
            &AgentSpec {
                server: stunnel_addr.to_string(),
                server_name: "stunnel.test",
                creds,
                ca: &pki.ca_crt,
                backends: &["anything"],
                extra: "",
            },
        )
    };
    let alice = pki.client("alice");
    let agent = agent_for(&alice);
    let len = 2 << 20;
    let mut s = connect(agent.addr());
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let h = send_pattern(&mut w, 8, len);
        let _ = w.shutdown(std::net::Shutdown::Write);
        h
    });
    let (n, got, err) = hash_reader(&mut s);
    let sent = writer.join().unwrap().expect("send");
    assert!(
        err.is_none(),
        "{err:?}; stunnel log:\n{}",
        stunnel.log_text()
    );
    assert_eq!(
        (n, got),
        (len, sent),
        "stunnel log:\n{}",
        stunnel.log_text()
    );
    assert_eq!(echo.accepted(), probes + 1);

    // stunnel really checks the agent's certificate: one from another CA gets nowhere.
    let rogue_ca = Pki::named("Rogue CA");
    let rogue = rogue_ca.client("alice");
    let agent2 = agent_for(&rogue);
    let mut s: TcpStream = connect(agent2.addr());
    let (got, _) = round_trip(&mut s, b"let me in");
    assert!(got.is_empty(), "stunnel let a foreign certificate through");
    assert_eq!(echo.accepted(), probes + 1);
}
