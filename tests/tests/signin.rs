//! Sign-in end to end, as a person would: `tunnel-client login` against the signer and a
//! real OpenID Provider (the test drives the provider's login and consent pages over HTTP
//! like a browser), then the agent with the new certificate through the gateway.

use std::net::SocketAddr;
use std::path::Path;
use tunnel_tests::backend::connect;
use tunnel_tests::oidc::{agent, echoes, login, Provider, SignerProc};
use tunnel_tests::process::{command, field, Proc};
use tunnel_tests::{backend_toml, bins, Backend, Gateway, Pki, PROMPT, READY};

/// A gateway that trusts the user CA: `db` for OU dba, `web` for OU dev.
struct World {
    pki: Pki,
    _provider: Provider,
    signer: SignerProc,
    gateway: Gateway,
    _echo: Backend,
}

fn world(signer_extra: &str) -> World {
    let pki = Pki::new();
    let provider = Provider::start(pki.dir());
    let users = SignerProc::new_user_ca(&pki);
    let echo = Backend::echo();
    let body = format!(
        "listen = \"127.0.0.1:0\"\ncert = \"server.crt\"\nkey = \"server.key\"\nclient_ca = {}\nlog_format = \"json\"\n{}{}",
        tunnel_tests::pki::toml_str(&users.join("ca.crt")),
        backend_toml("db", echo.addr, "\"ou=dba\""),
        backend_toml("web", echo.addr, "\"ou=dev\""),
    );
    let gateway = Gateway::start_file(&pki.write("gateway", "toml", &body));
    let signer = SignerProc::start_in(
        &pki,
        &provider,
        &gateway.addr.to_string(),
        signer_extra,
        users,
    );
    World {
        pki,
        _provider: provider,
        signer,
        gateway,
        _echo: echo,
    }
}

#[test]
fn alice_reaches_db_and_bob_only_web_after_signing_in() {
    let w = world("");
    let alice = tempfile::tempdir().unwrap();
    let out = login(
        &w.pki,
        &w.signer,
        alice.path(),
        "alice",
        &["--no-browser", "--lifetime", "1h"],
    );
    assert!(out.contains("Signed in"), "{out}");
    let key = alice.path().join("tunnel").join("key.pem");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the key is private");
    let (_a, addrs) = agent(alice.path(), &["db"]);
    assert!(echoes(addrs[0]), "alice reaches db");
    let ev = w
        .gateway
        .wait_for_audit(PROMPT, |e| field(e, "result") == "ok");
    assert!(field(&ev, "subject").contains("alice@example.com"), "{ev}");
    let ev = w
        .signer
        .proc
        .wait_for_audit(PROMPT, |e| field(e, "result") == "issued");
    assert_eq!(
        ev["key_bound"],
        serde_json::Value::Bool(true),
        "the code flow binds the key: {ev}"
    );

    let bob = tempfile::tempdir().unwrap();
    login(&w.pki, &w.signer, bob.path(), "bob", &["--no-browser"]);
    let (_b, addrs) = agent(bob.path(), &["db", "web"]);
    assert!(!echoes(addrs[0]), "bob is refused on db");
    let ev = w
        .gateway
        .wait_for_audit(PROMPT, |e| field(e, "result") == "denied");
    assert!(field(&ev, "subject").contains("bob@example.com"), "{ev}");
    assert!(echoes(addrs[1]), "bob reaches web");
}

#[test]
fn the_device_flow_signs_in_without_a_browser_on_the_machine() {
    // oidc-provider, like RFC 8628, carries no nonce through the device flow: the signer
    // refuses such unbound tokens unless told otherwise.
    let w = world("");
    let bob = tempfile::tempdir().unwrap();
    let (ok, out) =
        tunnel_tests::oidc::try_login(&w.pki, &w.signer, bob.path(), "bob", &["--device"]);
    assert!(!ok && out.contains("nonce_mismatch"), "{out}");
    w.signer.refusal("nonce_mismatch");

    let w = world("require_nonce = false");
    let bob = tempfile::tempdir().unwrap();
    let out = login(&w.pki, &w.signer, bob.path(), "bob", &["--device"]);
    assert!(out.contains("enter the code"), "{out}");
    let (_b, addrs) = agent(bob.path(), &["web"]);
    assert!(echoes(addrs[0]), "bob reaches web");
    let ev = w.signer.proc.wait_for_audit(PROMPT, |e| {
        field(e, "result") == "issued" && field(e, "email") == "bob@example.com"
    });
    assert_eq!(ev["key_bound"], serde_json::Value::Bool(false), "{ev}");
}

#[test]
fn an_expired_certificate_is_refused_by_the_gateway_and_explained_by_the_agent() {
    let w = world("");
    let alice = tempfile::tempdir().unwrap();
    login(
        &w.pki,
        &w.signer,
        alice.path(),
        "alice",
        // Long enough that login and the agent's start (each allowed PROMPT) cannot use it
        // up before the tunnel is shown working.
        &["--no-browser", "--lifetime", "30s"],
    );
    let (agent, addrs) = agent(alice.path(), &["db"]);
    agent.wait_for("an expiry warning", PROMPT, |e| {
        field(e, "message").contains("cert expires soon")
    });
    let cert_path = alice.path().join("tunnel").join("cert.pem");
    let cert = openssl::x509::X509::from_pem(&std::fs::read(&cert_path).unwrap()).unwrap();
    let end = tunnel_core::util::time::asn1_to_unix(cert.not_after()).unwrap();
    // Before expiry the same certificate works: the refusal below is the expiry's doing.
    assert!(echoes(addrs[0]), "the tunnel works before expiry");
    assert!(
        tunnel_core::util::time::unix_now() < end,
        "setup outlasted the certificate: the check above proves nothing"
    );
    while tunnel_core::util::time::unix_now() <= end {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(!echoes(addrs[0]), "no tunnel after expiry");
    let ev = agent.wait_for("the expiry explained", PROMPT, |e| {
        field(e, "error").contains("certificate expired at")
    });
    assert!(
        field(&ev, "error").contains("run `tunnel-client login`"),
        "{ev}"
    );
    // The gateway itself refuses the expired certificate.
    let key = openssl::pkey::PKey::private_key_from_pem(
        &std::fs::read(alice.path().join("tunnel").join("key.pem")).unwrap(),
    )
    .unwrap();
    let creds = tunnel_tests::Creds {
        cert: cert_path,
        key: alice.path().join("tunnel").join("key.pem"),
        issued: tunnel_core::pki::Issued { cert, key },
    };
    let client = tunnel_tests::tls::TlsClient::new(&creds, &w.pki.ca_crt);
    // Our own TCP connection, so that the audit event is found by its peer address.
    let tcp = connect(w.gateway.addr);
    let peer = tcp.local_addr().unwrap();
    let refused = match client.ssl(Some("db")).connect(tcp) {
        Err(_) => true,
        Ok(mut s) => tunnel_tests::tls::exchange(&mut s, b"x").0.is_empty(),
    };
    assert!(refused, "the gateway refuses an expired certificate");
    let ev = w.gateway.audit_for(peer);
    assert_eq!(field(&ev, "result"), "handshake_failed", "{ev}");
    assert!(
        field(&ev, "reason").contains("certificate has expired"),
        "refused for expiry: {ev}"
    );
}

fn client_in(home: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = command(&bins::client());
    cmd.env("XDG_CONFIG_HOME", home).args(args);
    cmd
}

#[test]
fn the_catalog_lists_exactly_what_each_person_may_reach_and_open_uses_it() {
    let w = world("");
    let alice = tempfile::tempdir().unwrap();
    login(&w.pki, &w.signer, alice.path(), "alice", &["--no-browser"]);
    let out = tunnel_tests::process::run_to_end(client_in(alice.path(), &["ls"]), PROMPT);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{text}");
    assert!(
        rows[0].starts_with("db ") && rows[0].contains("ou=dba"),
        "{text}"
    );
    w.gateway.wait_for_audit(PROMPT, |e| {
        field(e, "backend") == "tunnel-catalog.invalid" && field(e, "result") == "ok"
    });

    let bob = tempfile::tempdir().unwrap();
    login(&w.pki, &w.signer, bob.path(), "bob", &["--no-browser"]);
    let out = tunnel_tests::process::run_to_end(client_in(bob.path(), &["ls"]), PROMPT);
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert!(rows.len() == 1 && rows[0].starts_with("web "), "{text}");

    // open: a backend outside the catalog is refused; one in it gets a local port.
    let out = tunnel_tests::process::run_to_end(client_in(bob.path(), &["open", "db"]), PROMPT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "bob may not open db: {err}");
    assert!(
        err.contains("\"db\" is not among the backends you may reach"),
        "refused by the catalog, not by some other failure: {err}"
    );
    let open = Proc::spawn(
        "tunnel-client open",
        client_in(bob.path(), &["open", "web"]),
    );
    let deadline = std::time::Instant::now() + READY;
    let addr = loop {
        let out = String::from_utf8_lossy(&open.stdout()).into_owned();
        if let Some(a) = out
            .lines()
            .find_map(|l| l.strip_prefix("web: listening on "))
            .and_then(|a| a.trim().parse::<SocketAddr>().ok())
        {
            break a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "open printed no port: {out}\n{}",
            open.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(echoes(addr), "bob reaches web through open");
}

#[test]
fn the_catalog_name_without_the_catalog_protocol_reaches_nothing() {
    let w = world("");
    let alice = tempfile::tempdir().unwrap();
    login(&w.pki, &w.signer, alice.path(), "alice", &["--no-browser"]);
    let dir = alice.path().join("tunnel");
    let cert =
        openssl::x509::X509::from_pem(&std::fs::read(dir.join("cert.pem")).unwrap()).unwrap();
    let key =
        openssl::pkey::PKey::private_key_from_pem(&std::fs::read(dir.join("key.pem")).unwrap())
            .unwrap();
    let creds = tunnel_tests::Creds {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        issued: tunnel_core::pki::Issued { cert, key },
    };
    let client = tunnel_tests::tls::TlsClient::new(&creds, &w.pki.ca_crt);
    let refused = match client.connect(w.gateway.addr, Some(tunnel_core::gateway::catalog::SNI)) {
        Err(_) => true,
        Ok(mut s) => tunnel_tests::tls::exchange(&mut s, b"x").0.is_empty(),
    };
    assert!(refused);
    w.gateway
        .wait_for_audit(PROMPT, |e| field(e, "result") == "denied");
    // Positive control: the same certificate gets the catalog through the agent.
    let out = tunnel_tests::process::run_to_end(client_in(alice.path(), &["ls"]), PROMPT);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("db "));
}

/// Issue 20 item 9: any local user can reach the login's loopback redirect listener. A
/// forged `error` callback without this login's state, and a connection that never sends a
/// byte, must neither end nor block the login; the browser's real redirect completes it.
#[test]
fn a_local_user_cannot_abort_or_block_the_login_redirect() {
    use std::io::{Read, Write};
    let w = world("");
    let home = tempfile::tempdir().unwrap();
    let mut held = Vec::new();
    let mut forged_status = String::new();
    let (ok, out) = tunnel_tests::oidc::try_login_with(
        &w.pki,
        &w.signer,
        home.path(),
        "alice",
        &["--no-browser"],
        |url| {
            let redirect = url
                .split("redirect_uri=")
                .nth(1)
                .and_then(|r| r.split('&').next())
                .unwrap_or_else(|| panic!("no redirect_uri in {url}"));
            let redirect = redirect.replace("%3A", ":").replace("%2F", "/");
            let authority = redirect
                .trim_start_matches("http://")
                .split('/')
                .next()
                .expect("authority")
                .to_string();
            // A silent connection first: served one at a time, it blocked the real redirect.
            held.push(std::net::TcpStream::connect(&authority).expect("connect"));
            let mut s = std::net::TcpStream::connect(&authority).expect("connect");
            s.write_all(b"GET /callback?error=access_denied HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("write");
            let mut resp = String::new();
            let _ = s.read_to_string(&mut resp);
            forged_status = resp.lines().next().unwrap_or("").to_string();
        },
    );
    assert!(forged_status.starts_with("HTTP/1.1 400"), "{forged_status}");
    assert!(ok, "the login must survive the forged callback: {out}");
    assert!(
        out.contains("state is not this login's"),
        "the ignored callback is logged: {out}"
    );
    let (agent, addrs) = agent(home.path(), &["db"]);
    assert!(echoes(addrs[0]), "alice's new certificate works");
    drop(agent);
    drop(held);
}

/// Issue 25 item 5: the first login remembers the signer and its CA in the per-user config,
/// so signing in again the next morning is `tunnel-client login` alone; without an earlier
/// sign-in, `--signer` is asked for by name.
#[test]
fn a_second_login_needs_no_signer_flags() {
    let w = world("");
    let home = tempfile::tempdir().unwrap();
    let mut alone = command(&bins::client());
    alone
        .env("XDG_CONFIG_HOME", home.path())
        .args(["login", "--no-browser"]);
    let out = tunnel_tests::process::run_to_end(alone, READY);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("--signer URL is required"), "{err}");

    login(&w.pki, &w.signer, home.path(), "alice", &["--no-browser"]);
    let cert = home.path().join("tunnel").join("cert.pem");
    let first = std::fs::read(&cert).unwrap();
    let (ok, out) =
        tunnel_tests::oidc::drive_login(home.path(), "alice", &["--no-browser"], |_| {});
    assert!(ok, "the remembered signer was not used: {out}");
    assert_ne!(std::fs::read(&cert).unwrap(), first, "a new certificate");
    let (agent, addrs) = agent(home.path(), &["db"]);
    assert!(echoes(addrs[0]), "the renewed certificate works");
    drop(agent);
}
