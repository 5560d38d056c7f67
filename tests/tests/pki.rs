//! Black-box tests of `tunnel-server pki`: every command of the real binary in a temporary
//! directory, checked with the openssl CLI and by the gateway itself (`check --explain` and a
//! live mTLS connection).

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use tunnel_tests::field;

/// Runs `tunnel-server ARGS`, returning its output.
fn server(args: &[&str]) -> Output {
    let out = Command::new(tunnel_tests::bins::server())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run tunnel-server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    out
}

/// Runs `tunnel-server pki ARGS --dir DIR` and checks the exit code.
fn pki(dir: &Path, args: &[&str], code: i32) -> Output {
    let mut full = vec!["pki"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--dir", dir.to_str().unwrap()]);
    let out = server(&full);
    assert_eq!(
        out.status.code(),
        Some(code),
        "tunnel-server {full:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the openssl CLI; fails clearly when it is not installed.
fn openssl(args: &[&str]) -> Output {
    match Command::new("openssl").args(args).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("the openssl command is missing: apt-get install openssl")
        }
        Err(e) => panic!("cannot run openssl: {e}"),
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A CA directory with a gateway certificate and clients alice (OU dba) and bob.
fn ca_with_certs() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    pki(
        &dir,
        &["init", "--name", "Test Tunnel CA", "--days", "30"],
        0,
    );
    pki(
        &dir,
        &[
            "issue",
            "--server",
            "gw.example.com",
            "--dns",
            "alt.example.com",
            "--ip",
            "127.0.0.1",
        ],
        0,
    );
    pki(&dir, &["issue", "--client", "alice", "--ou", "dba"], 0);
    pki(
        &dir,
        &["issue", "--client", "bob", "--key-type", "rsa2048"],
        0,
    );
    (tmp, dir)
}

fn serial_of(cert: &Path) -> String {
    let o = openssl(&["x509", "-in", s(cert), "-noout", "-serial"]);
    assert!(o.status.success());
    stdout(&o).trim().trim_start_matches("serial=").to_string()
}

#[test]
fn init_issue_verify_and_eku() {
    let (_tmp, dir) = ca_with_certs();
    assert_eq!(mode(&dir), 0o700);
    for key in ["ca.key", "gw.example.com.key", "alice.key", "bob.key"] {
        assert_eq!(mode(&dir.join(key)), 0o600, "{key}");
    }
    let ca = dir.join("ca.crt");
    for (name, eku) in [
        ("gw.example.com", "TLS Web Server Authentication"),
        ("alice", "TLS Web Client Authentication"),
        ("bob", "TLS Web Client Authentication"),
    ] {
        let crt = dir.join(format!("{name}.crt"));
        let v = openssl(&["verify", "-CAfile", s(&ca), s(&crt)]);
        assert!(v.status.success(), "{name}: {}{}", stdout(&v), stderr(&v));
        let x = openssl(&["x509", "-in", s(&crt), "-noout", "-ext", "extendedKeyUsage"]);
        let text = stdout(&x);
        assert!(text.contains(eku), "{name}: {text}");
        assert_eq!(text.matches("Authentication").count(), 1, "{name}: {text}");
    }
    let x = openssl(&[
        "x509",
        "-in",
        s(&dir.join("gw.example.com.crt")),
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    let san = stdout(&x);
    for want in [
        "DNS:gw.example.com",
        "DNS:alt.example.com",
        "IP Address:127.0.0.1",
    ] {
        assert!(san.contains(want), "{san}");
    }
    // The default key type is ECDSA P-256.
    let x = openssl(&["x509", "-in", s(&dir.join("alice.crt")), "-noout", "-text"]);
    assert!(stdout(&x).contains("prime256v1"), "{}", stdout(&x));

    // A second init refuses to replace the CA.
    let before = std::fs::read(dir.join("ca.key")).unwrap();
    let o = pki(&dir, &["init"], 74);
    assert!(stderr(&o).contains("ca.crt"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("refusing to overwrite"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(dir.join("ca.key")).unwrap(), before);
}

#[test]
fn revoke_crl_and_list() {
    let (_tmp, dir) = ca_with_certs();
    let ca = dir.join("ca.crt");
    let bob = dir.join("bob.crt");
    let gw = dir.join("gw.example.com.crt");
    let bob_serial = serial_of(&bob);
    let gw_serial = serial_of(&gw);

    // Revoking by file writes crl.pem in the same step.
    let o = pki(&dir, &["revoke", "--cert", s(&bob)], 0);
    assert!(stdout(&o).contains(&bob_serial), "{}", stdout(&o));
    let crl = dir.join("crl.pem");
    let text = stdout(&openssl(&["crl", "-in", s(&crl), "-noout", "-text"]));
    assert!(
        text.contains(&format!("Serial Number: {bob_serial}")),
        "{text}"
    );
    assert!(!text.contains(&gw_serial), "{text}");
    let v = openssl(&["crl", "-in", s(&crl), "-noout", "-CAfile", s(&ca)]);
    assert!(stderr(&v).contains("verify OK"), "{}", stderr(&v));
    let v = openssl(&[
        "verify",
        "-crl_check",
        "-CRLfile",
        s(&crl),
        "-CAfile",
        s(&ca),
        s(&bob),
    ]);
    assert!(!v.status.success(), "revoked bob still verifies");

    // By serial, in lower case with colons.
    let colons: Vec<String> = gw_serial
        .to_lowercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    pki(&dir, &["revoke", "--serial", &colons.join(":")], 0);
    let text = stdout(&openssl(&["crl", "-in", s(&crl), "-noout", "-text"]));
    assert!(
        text.contains(&gw_serial) && text.contains(&bob_serial),
        "{text}"
    );

    // crl re-emits the list with a new validity.
    std::fs::remove_file(&crl).unwrap();
    let o = pki(&dir, &["crl", "--days", "7"], 0);
    assert!(stdout(&o).contains("2 revoked"), "{}", stdout(&o));
    let text = stdout(&openssl(&["crl", "-in", s(&crl), "-noout", "-text"]));
    assert!(
        text.contains(&gw_serial) && text.contains(&bob_serial),
        "{text}"
    );

    let o = pki(&dir, &["list"], 0);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with("SERIAL") && lines[0].contains("NOT-AFTER"),
        "{out}"
    );
    let status_col = lines[0].find("STATUS").unwrap();
    for (line, (serial, status)) in lines[1..].iter().zip([
        (&gw_serial, "revoked"),
        (&serial_of(&dir.join("alice.crt")), "valid"),
        (&bob_serial, "revoked"),
    ]) {
        assert!(line.starts_with(serial.as_str()), "{out}");
        assert_eq!(&line[status_col..], status, "{out}");
    }
}

#[test]
fn usage_errors_exit_64_and_runtime_errors_exit_1() {
    let (tmp, dir) = ca_with_certs();
    for bad in ["../evil", "a/b", "..", ".hidden", "ca", "x y"] {
        let o = pki(&dir, &["issue", "--client", bad], 64);
        assert!(stderr(&o).contains("--client"), "{bad}: {}", stderr(&o));
        let o = pki(&dir, &["issue", "--server", bad], 64);
        assert!(stderr(&o).contains("--server"), "{bad}: {}", stderr(&o));
    }
    assert!(!tmp.path().join("evil.crt").exists());
    // Malformed values and command lines clap refuses.
    pki(&dir, &["revoke", "--serial", "not-hex"], 64);
    pki(&dir, &["issue", "--server", "gw2", "--ip", "300.1.1.1"], 64);
    pki(&dir, &["issue", "--client", "carol", "--days", "0"], 64);
    pki(
        &dir,
        &["issue", "--client", "carol", "--key-type", "dsa"],
        64,
    );
    pki(&dir, &["issue"], 64);
    pki(&dir, &["issue", "--client", "carol", "--dns", "x"], 64);
    pki(&dir, &["revoke"], 64);
    pki(&dir, &["revoke", "--serial", "01", "--cert", "x.crt"], 64);
    // Runtime failures name the file and say what to do.
    let o = pki(&dir, &["issue", "--client", "alice"], 74);
    assert!(
        stderr(&o).contains("alice.crt: already exists"),
        "{}",
        stderr(&o)
    );
    let o = pki(&dir, &["revoke", "--serial", "0123"], 74);
    assert!(stderr(&o).contains("index.json"), "{}", stderr(&o));
    assert!(stderr(&o).contains("pki list"), "{}", stderr(&o));
    let o = pki(
        &dir,
        &["revoke", "--cert", s(&tmp.path().join("none.crt"))],
        74,
    );
    assert!(stderr(&o).contains("none.crt"), "{}", stderr(&o));
    let empty = tmp.path().join("empty");
    for args in [
        &["issue", "--client", "alice"][..],
        &["revoke", "--serial", "01"],
        &["crl"],
        &["list"],
    ] {
        let o = pki(&empty, args, 74);
        assert!(stderr(&o).contains("pki init"), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn concurrent_processes_get_unique_serials_and_no_lost_update() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    pki(&dir, &["init"], 0);
    let children: Vec<(String, Child)> = (0..8)
        .map(|i| {
            let name = format!("client{i}");
            let child = Command::new(tunnel_tests::bins::server())
                .args(["pki", "issue", "--client", &name, "--dir", s(&dir)])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (name, child)
        })
        .collect();
    for (name, child) in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{name}: {}", stderr(&out));
    }
    let list = stdout(&pki(&dir, &["list"], 0));
    let mut serials: Vec<&str> = list
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(serials.len(), 8, "{list}");
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 8, "duplicate serials: {list}");
    for i in 0..8 {
        assert!(list.contains(&format!("CN=client{i} ")), "{list}");
    }
}

/// A gateway config using the generated certificates, backend `db` at `backend`, allowing
/// `ou=dba`, with the PKI's CRL.
fn write_config(dir: &Path, listen: &str, backend: &str) -> PathBuf {
    let cfg = dir.join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"listen = "{listen}"
cert = "gw.example.com.crt"
key = "gw.example.com.key"
client_ca = "ca.crt"
crl = ["crl.pem"]
log_format = "json"

[[backend]]
name = "db"
address = "{backend}"
allow = ["ou=dba"]
"#
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn check_explain_accepts_the_generated_certs() {
    let (_tmp, dir) = ca_with_certs();
    pki(&dir, &["revoke", "--cert", s(&dir.join("bob.crt"))], 0);
    let cfg = write_config(&dir, "127.0.0.1:8443", "127.0.0.1:5432");
    let o = server(&[
        "check",
        "--config",
        s(&cfg),
        "--explain",
        s(&dir.join("alice.crt")),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("may reach db"), "{out}");
    assert!(!out.contains("WARNING"), "{out}");
    let o = server(&[
        "check",
        "--config",
        s(&cfg),
        "--explain",
        s(&dir.join("bob.crt")),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("revoked"), "{}", stdout(&o));
}

/// Connects through the gateway to backend `db` as `who`; returns the client's local address
/// (the `peer` of the gateway's audit event) and what the echo backend sent back, or None
/// when the gateway refused.
fn echo_through(dir: &Path, addr: SocketAddr, who: &str) -> (SocketAddr, Option<Vec<u8>>) {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(dir.join("ca.crt")).unwrap();
    b.set_certificate_file(dir.join(format!("{who}.crt")), SslFiletype::PEM)
        .unwrap();
    b.set_private_key_file(dir.join(format!("{who}.key")), SslFiletype::PEM)
        .unwrap();
    b.set_verify(SslVerifyMode::PEER);
    let connector = b.build();
    let tcp = TcpStream::connect(addr).unwrap();
    let peer = tcp.local_addr().unwrap();
    tcp.set_read_timeout(Some(tunnel_tests::IO_TIMEOUT))
        .unwrap();
    let mut cfg = connector.configure().unwrap();
    // SNI selects the backend; the gateway's certificate is checked for its own name.
    cfg.set_verify_hostname(false);
    cfg.param_mut().set_host("gw.example.com").unwrap();
    let got = (|| {
        let mut tls = cfg.connect("db", tcp).ok()?;
        tls.write_all(b"hello through the tunnel").ok()?;
        let mut buf = vec![0u8; 64];
        let n = tls.read(&mut buf).ok()?;
        buf.truncate(n);
        Some(buf)
    })();
    (peer, got)
}

#[test]
fn gateway_serves_generated_certs_and_refuses_the_revoked_one() {
    let (_tmp, dir) = ca_with_certs();
    // carol and dave differ only in that dave is revoked, so refusing dave is the CRL's doing.
    pki(&dir, &["issue", "--client", "carol", "--ou", "dba"], 0);
    pki(&dir, &["issue", "--client", "dave", "--ou", "dba"], 0);
    pki(&dir, &["revoke", "--cert", s(&dir.join("dave.crt"))], 0);

    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in backend.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let cfg = write_config(&dir, "127.0.0.1:0", &backend_addr.to_string());
    let mut gw = tunnel_tests::Gateway::start_file(&cfg);
    let hello = Some(b"hello through the tunnel".to_vec());
    let served = |gw: &tunnel_tests::Gateway, who: &str| {
        let (peer, got) = echo_through(&dir, gw.addr, who);
        assert_eq!(got, hello, "{who} was not served");
        let ev = gw.audit_for(peer);
        assert_eq!(field(&ev, "result"), "ok", "{ev}");
        assert_eq!(field(&ev, "subject"), format!("CN={who},OU=dba"), "{ev}");
    };
    served(&gw, "alice");
    served(&gw, "carol");
    let (peer, got) = echo_through(&dir, gw.addr, "dave");
    assert_eq!(got, None, "revoked dave got through");
    let ev = gw.audit_for(peer);
    assert_eq!(field(&ev, "result"), "revoked", "{ev}");
    assert_eq!(field(&ev, "subject"), "CN=dave,OU=dba", "{ev}");
    // Positive control: the gateway still serves dave's twin after refusing dave.
    served(&gw, "carol");
    assert!(gw.running(), "the gateway exited");
}
