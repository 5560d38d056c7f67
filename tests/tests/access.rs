//! Just-in-time access end to end with the real provider: people sign in, ask for a role,
//! colleagues approve or deny with `tunnel-client`, the signer refuses what it must (each
//! refusal with its reason, then a positive control), notices reach a webhook, and an
//! approved grant opens `db` to bob's running agent until it ends — then the gateway cuts
//! his tunnel and refuses him again.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tunnel_tests::backend::{connect, round_trip};
use tunnel_tests::oidc::{login, Provider, SignerProc};
use tunnel_tests::process::{command, field, run_to_end, Proc};
use tunnel_tests::{backend_toml, bins, Backend, Gateway, Pki, PROMPT, READY};

/// The role: dev may ask for `dba` for up to 30 s, one lead approves, a reason is required.
const ROLE: &str = "[[role]]\nname = \"db-admin\"\ngrants = [\"dba\"]\nrequesters = [\"dev\"]\n\
                    approvers = [\"leads\"]\napprovals = 1\nmax_duration = \"30s\"\n\
                    require_reason = true\n";

struct World {
    pki: Pki,
    _provider: Provider,
    signer: SignerProc,
    gateway: Gateway,
    _echo: Backend,
    notices: mpsc::Receiver<Value>,
}

/// A webhook receiver on loopback: answers 200 to each POST and hands over its JSON body.
fn webhook() -> (String, mpsc::Receiver<Value>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", l.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let Ok(n) = s.read(&mut chunk) else {
                    break None;
                };
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                let Some(i) = text.find("\r\n\r\n") else {
                    continue;
                };
                let len: usize = text[..i]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= i + 4 + len {
                    break Some(buf[i + 4..i + 4 + len].to_vec());
                }
            };
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if let Some(b) = body.and_then(|b| serde_json::from_slice(&b).ok()) {
                let _ = tx.send(b);
            }
        }
    });
    (url, rx)
}

fn world() -> World {
    let pki = Pki::new();
    let provider = Provider::start(pki.dir());
    let users = SignerProc::new_user_ca(&pki);
    let echo = Backend::echo();
    let body = format!(
        "listen = \"127.0.0.1:0\"\ncert = \"server.crt\"\nkey = \"server.key\"\nclient_ca = {}\n\
         log_format = \"json\"\ndisconnect_expired = true\n{}{}",
        tunnel_tests::pki::toml_str(&users.join("ca.crt")),
        backend_toml("db", echo.addr, "\"ou=dba\""),
        backend_toml("web", echo.addr, "\"ou=dev\""),
    );
    let gateway = Gateway::start_file(&pki.write("gateway", "toml", &body));
    let (url, notices) = webhook();
    let signer = SignerProc::start_in(
        &pki,
        &provider,
        &gateway.addr.to_string(),
        &format!("notify_url = \"{url}\"\n{ROLE}"),
        users,
    );
    World {
        pki,
        _provider: provider,
        signer,
        gateway,
        _echo: echo,
        notices,
    }
}

/// Runs `tunnel-client ARGS` as the person whose per-user config is under `home`; returns
/// the exit code and stdout + stderr.
fn client(home: &Path, args: &[&str]) -> (i32, String) {
    let mut cmd = command(&bins::client());
    cmd.env("XDG_CONFIG_HOME", home).args(args);
    let out = run_to_end(cmd, READY);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Signs `account` in under a new home.
fn signed_in(w: &World, account: &str, lifetime: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    // `login` asserts the exit status (its last stdout lines may still be in transit).
    login(
        &w.pki,
        &w.signer,
        home.path(),
        account,
        &["--no-browser", "--lifetime", lifetime],
    );
    assert!(home.path().join("tunnel").join("cert.pem").is_file());
    home
}

/// The id that `tunnel-client request` printed.
fn id_in(out: &str) -> String {
    out.split("request ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no request id in: {out}"))
        .to_string()
}

/// Asserts a refusal: exit 1, the reason code in the message, and the signer's audit event.
fn refused(w: &World, (code, out): (i32, String), reason: &str) {
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("({reason})")), "{reason}: {out}");
    w.signer.proc.wait_for_audit(PROMPT, |e| {
        field(e, "event") == "access"
            && field(e, "action") == "refused"
            && field(e, "reason") == reason
    });
}

#[test]
fn refusals_each_with_its_reason_then_a_positive_control() {
    let w = world();
    let bob = signed_in(&w, "bob", "1h");
    let lena = signed_in(&w, "lena", "1h");
    let alice = signed_in(&w, "alice", "1h");
    let (b, l, a) = (bob.path(), lena.path(), alice.path());

    // Not signed in at all: a usage error, before any request.
    let nobody = tempfile::tempdir().unwrap();
    let (code, out) = client(nobody.path(), &["request", "db-admin", "--reason", "x"]);
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("sign in first"), "{out}");

    // A role the requester may not ask for (alice is dba, not dev), an unknown role.
    refused(
        &w,
        client(
            a,
            &["request", "db-admin", "--for", "10s", "--reason", "INC-1"],
        ),
        "not_a_requester",
    );
    refused(
        &w,
        client(b, &["request", "root", "--for", "10s", "--reason", "INC-1"]),
        "unknown_role",
    );
    // Longer than max_duration (30 s).
    refused(
        &w,
        client(
            b,
            &["request", "db-admin", "--for", "31s", "--reason", "INC-1"],
        ),
        "duration_too_long",
    );
    // No reason where the role requires one.
    refused(
        &w,
        client(b, &["request", "db-admin", "--for", "10s"]),
        "reason_required",
    );
    // Positive control: the same request, well formed.
    let (code, out) = client(
        b,
        &["request", "db-admin", "--for", "30s", "--reason", "INC-1"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("from: leads") && out.contains("tunnel-client approve"),
        "{out}"
    );
    let id = id_in(&out);
    let notice = w
        .notices
        .recv_timeout(PROMPT)
        .expect("the request is announced");
    assert_eq!(notice["event"], "requested", "{notice}");
    assert!(
        notice["text"]
            .as_str()
            .unwrap()
            .contains(&format!("tunnel-client approve {id}")),
        "{notice}"
    );

    // Self-approval: bob may not approve his own request (nor is he a lead).
    refused(&w, client(b, &["approve", &id]), "self_approval");
    // A non-approver: alice holds no approver group.
    refused(&w, client(a, &["approve", &id]), "not_an_approver");
    // An approver whose certificate has expired: lena signed in for 2 s.
    let short = signed_in(&w, "lena", "2s");
    std::thread::sleep(Duration::from_secs(3));
    refused(
        &w,
        client(short.path(), &["approve", &id]),
        "certificate_expired",
    );
    // An approver whose certificate was revoked.
    let revoked = signed_in(&w, "lena", "1h");
    let pem = std::fs::read(revoked.path().join("tunnel").join("cert.pem")).unwrap();
    let serial = openssl::x509::X509::from_pem(&pem)
        .unwrap()
        .serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string();
    let config = w.signer.config.to_str().unwrap();
    let out = tunnel_tests::process::run_server(
        &[
            "signer",
            "revoke",
            "--config",
            config,
            "--serial",
            &serial,
            "--reason",
            "laptop lost",
        ],
        READY,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    refused(
        &w,
        client(revoked.path(), &["approve", &id]),
        "certificate_revoked",
    );
    // Lena sees it among what she may decide; bob does not (his own).
    let (code, out) = client(l, &["requests"]);
    assert!(
        code == 0 && out.contains(&id) && out.contains("bob@example.com"),
        "{out}"
    );
    let (_, out) = client(b, &["requests"]);
    assert!(!out.contains(&id), "{out}");
    // Positive control: lena, with her current certificate, approves.
    let (code, out) = client(l, &["approve", &id, "--reason", "ok"]);
    assert!(code == 0 && out.contains("approved"), "{out}");
    // A decision on a decided request: final.
    refused(
        &w,
        client(l, &["deny", &id, "--reason", "changed my mind"]),
        "already_decided",
    );
    // A denial is recorded with its reason; the certificate of a denied request is refused.
    let (_, out) = client(
        b,
        &["request", "db-admin", "--for", "10s", "--reason", "INC-2"],
    );
    let denied = id_in(&out);
    let (code, out) = client(l, &["deny", &denied]);
    assert_ne!(code, 0, "deny needs --reason: {out}");
    let (code, out) = client(l, &["deny", &denied, "--reason", "not now"]);
    assert!(code == 0 && out.contains("denied"), "{out}");
    refused(
        &w,
        client(b, &["request", "--fetch", &denied]),
        "not_approved",
    );
    let (code, out) = client(b, &["request", "--list"]);
    assert!(
        code == 0 && out.contains(&format!("{denied}  denied")),
        "{out}"
    );
    // Positive control: the approved one is fetched, for the same key, with OU dba added.
    let (code, out) = client(b, &["request", "--fetch", &id]);
    assert!(code == 0 && out.contains("elevated certificate"), "{out}");
    let pem = std::fs::read(b.join("tunnel").join("cert.pem")).unwrap();
    let cert = openssl::x509::X509::from_pem(&pem).unwrap();
    let key = std::fs::read(b.join("tunnel").join("key.pem")).unwrap();
    let key = openssl::pkey::PKey::private_key_from_pem(&key).unwrap();
    assert!(cert.public_key().unwrap().public_eq(&key), "the same key");
    let ous: Vec<String> = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::ORGANIZATIONALUNITNAME)
        .map(|e| e.data().to_string().unwrap())
        .collect();
    assert_eq!(ous, vec!["dba".to_string(), "dev".to_string()]);
    let _ = &w.gateway;
}

/// Starts the agent on the per-user config that login wrote, with a tunnel to `db`.
fn agent(home: &Path) -> (Proc, SocketAddr) {
    let config: PathBuf = home.join("tunnel").join("client.toml");
    let mut text = std::fs::read_to_string(&config).expect("login wrote the per-user config");
    text += "log_format = \"json\"\n\n[[tunnel]]\nlisten = \"127.0.0.1:0\"\nbackend = \"db\"\n";
    std::fs::write(&config, text).expect("write config");
    let mut cmd = command(&bins::client());
    cmd.arg("--config").arg(&config);
    let proc = Proc::spawn("tunnel-client", cmd);
    let ev = proc.wait_for_message("tunnel listening", READY);
    let addr = field(&ev, "listen").parse().expect("listen");
    (proc, addr)
}

fn echoes(addr: SocketAddr) -> bool {
    let mut s = connect(addr);
    round_trip(&mut s, b"select 1;\n").0 == b"select 1;\n"
}

#[test]
fn bob_reaches_db_while_lena_approved_grant_lasts() {
    let w = world();
    let bob = signed_in(&w, "bob", "1h");
    let lena = signed_in(&w, "lena", "1h");
    let (_agent, db) = agent(bob.path());
    assert!(!echoes(db), "bob (dev) is refused on db");
    w.gateway.wait_for_audit(PROMPT, |e| {
        field(e, "result") == "denied" && field(e, "subject").contains("bob@example.com")
    });

    // bob asks and waits; lena approves; bob's request installs the elevated certificate.
    let mut cmd = command(&bins::client());
    cmd.env("XDG_CONFIG_HOME", bob.path()).args([
        "request",
        "db-admin",
        "--for",
        "30s",
        "--reason",
        "INC-4711",
        "--wait",
        "--timeout",
        "2m",
    ]);
    let mut waiting = Proc::spawn("tunnel-client request", cmd);
    let deadline = Instant::now() + READY;
    let id = loop {
        let out = String::from_utf8_lossy(&waiting.stdout()).into_owned();
        if out.contains("Waiting") {
            break id_in(&out);
        }
        assert!(
            Instant::now() < deadline && waiting.running(),
            "{out}\n{}",
            waiting.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (code, out) = client(
        lena.path(),
        &["approve", &id, "--reason", "INC-4711 is real"],
    );
    assert!(code == 0 && out.contains("Granted until"), "{out}");
    let status = waiting.wait_exit(PROMPT);
    assert!(status.success(), "{}", waiting.log_text());
    // Its stdout is read by another thread: wait for the line rather than race it.
    let deadline = Instant::now() + PROMPT;
    while !String::from_utf8_lossy(&waiting.stdout()).contains("Approved: elevated certificate") {
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&waiting.stdout())
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The running agent picks the certificate up: bytes reach db through the tunnel.
    let deadline = Instant::now() + PROMPT;
    while !echoes(db) {
        assert!(
            Instant::now() < deadline,
            "bob never reached db with the grant"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A live tunnel (kept open: no half-close), carrying bytes.
    let mut live = connect(db);
    live.write_all(b"live\n").unwrap();
    let mut echoed = [0u8; 5];
    live.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"live\n", "a live tunnel to db");

    // The grant ends: the gateway cuts the live tunnel (disconnect_expired) ...
    let ev = w.gateway.wait_for_audit(Duration::from_secs(60), |e| {
        field(e, "result") == "expired" && field(e, "subject").contains("bob@example.com")
    });
    assert_eq!(field(&ev, "backend"), "db", "{ev}");
    live.set_read_timeout(Some(PROMPT)).unwrap();
    let mut buf = [0u8; 16];
    let cut = matches!(live.read(&mut buf), Ok(0) | Err(_));
    assert!(cut, "the live tunnel is cut when the grant ends");
    // ... and refuses bob on db again: the expired grant's certificate no longer passes.
    assert!(!echoes(db), "bob is refused on db after the grant");
    // Signed in again (his normal certificate), he is refused on db by the rule.
    let again = signed_in(&w, "bob", "1h");
    let (_agent2, db2) = agent(again.path());
    assert!(!echoes(db2), "bob (dev) is refused on db once more");

    // The signer reports the ended grant on its own (it checks every 10 s).
    w.signer.proc.wait_for_audit(PROMPT, |e| {
        field(e, "event") == "access" && field(e, "action") == "expired" && field(e, "id") == id
    });

    // The audit trail: requested → approved → issued → expired, in order.
    let trail: Vec<Value> = w
        .signer
        .proc
        .audits()
        .into_iter()
        .filter(|e| field(e, "event") == "access" && field(e, "id") == id)
        .collect();
    println!("audit trail of request {id}:");
    for e in &trail {
        println!("  {e}");
    }
    let actions: Vec<&str> = trail.iter().map(|e| field(e, "action")).collect();
    assert_eq!(
        actions,
        vec!["requested", "approved", "issued", "expired"],
        "{trail:?}"
    );
    assert_eq!(field(&trail[0], "reason"), "INC-4711");
    assert_eq!(field(&trail[1], "approver"), "lena@example.com");
    // The webhook heard of it too (delivered in the background: waited for).
    let kinds: Vec<String> = (0..3)
        .map(|_| w.notices.recv_timeout(PROMPT).expect("a notice"))
        .map(|n| n["event"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(kinds, vec!["requested", "approved", "expired"], "{kinds:?}");
}
