//! TLS policy knobs (`[tls]`) on both agents: groups, TLS 1.3 suites, TLS 1.2 ciphers and
//! signature algorithms are applied (the gateway's audit event names the negotiated group and
//! cipher; `openssl s_client` reports the gateway's signature), disjoint policies refuse the handshake,
//! `session_resumption = false` makes every handshake full, and `check` names unsupported values.

use std::net::TcpStream;
use tunnel_tests::backend::round_trip;
use tunnel_tests::process::{boolean, field};
use tunnel_tests::*;

fn echo_through(agent: &Agent) -> std::net::SocketAddr {
    let mut s = TcpStream::connect(agent.addr()).expect("connect to agent");
    let (got, err) = round_trip(&mut s, b"policy bytes");
    assert_eq!(got, b"policy bytes", "echo through the tunnel ({err:?})");
    s.local_addr().expect("local addr")
}

fn agent_with(pki: &Pki, gw: &Gateway, creds: &Creds, extra: &str) -> Agent {
    Agent::start_spec(
        pki,
        &AgentSpec {
            server: gw.addr.to_string(),
            server_name: pki::SERVER_NAME,
            creds,
            ca: &pki.ca_crt,
            backends: &["echo"],
            extra,
        },
    )
}

#[test]
fn group_and_suite_apply_and_disjoint_groups_refuse() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let alice = pki.client("alice");
    let gw = Gateway::start(
        &pki,
        &format!(
            "[tls]\ngroups = [\"P-384\", \"P-256\"]\ntls13_ciphersuites = [\"TLS_CHACHA20_POLY1305_SHA256\"]\nsignature_algorithms = [\"ecdsa_secp256r1_sha256\"]\n{}",
            backend_toml("echo", backend.addr, "\"cn=alice\"")
        ),
    );
    // Refusal first: the agent offers only X25519, the gateway only NIST curves.
    let x25519 = agent_with(&pki, &gw, &alice, "[tls]\ngroups = [\"X25519\"]\n");
    let mut s = TcpStream::connect(x25519.addr()).expect("connect");
    let (got, _) = round_trip(&mut s, b"must not pass");
    assert!(got.is_empty(), "no common group, yet bytes came back");
    let ev = gw.proc.wait_for_audit(PROMPT, |_| true);
    assert_eq!(field(&ev, "result"), "handshake_failed", "{ev}");
    assert_eq!(backend.accepted(), 0);
    drop(x25519);

    // No common TLS 1.3 suite: refused too.
    let aes256 = agent_with(
        &pki,
        &gw,
        &alice,
        "[tls]\ntls13_ciphersuites = [\"TLS_AES_256_GCM_SHA384\"]\n",
    );
    let mut s = TcpStream::connect(aes256.addr()).expect("connect");
    let (got, _) = round_trip(&mut s, b"must not pass");
    assert!(got.is_empty(), "no common suite, yet bytes came back");
    let failed = gw.proc.wait_until("a second refusal", PROMPT, |evs| {
        evs.iter()
            .filter(|e| field(e, "result") == "handshake_failed")
            .nth(1)
            .cloned()
    });
    assert_eq!(field(&failed, "cipher"), "", "{failed}");
    assert_eq!(backend.accepted(), 0);
    drop(aes256);

    // Positive control: P-384 is common and preferred; the agent prefers AES-128, but the
    // gateway allows only ChaCha20, which is what is negotiated.
    let agent = agent_with(
        &pki,
        &gw,
        &alice,
        "[tls]\ngroups = [\"X25519\", \"P-384\"]\ntls13_ciphersuites = [\"TLS_AES_128_GCM_SHA256\", \"TLS_CHACHA20_POLY1305_SHA256\"]\n",
    );
    let _ = echo_through(&agent);
    let ev = gw
        .proc
        .wait_for_audit(PROMPT, |e| field(e, "result") == "ok");
    assert_eq!(field(&ev, "group"), "secp384r1", "{ev}");
    assert_eq!(field(&ev, "cipher"), "TLS_CHACHA20_POLY1305_SHA256", "{ev}");
}

/// A gateway that also accepts TLS 1.2, with `tls` settings.
fn tls12_gateway(pki: &Pki, backend: &Backend, tls: &str) -> Gateway {
    Gateway::start(
        pki,
        &format!(
            "tls_min_version = \"1.2\"\n[tls]\n{tls}\n{}",
            backend_toml("echo", backend.addr, "\"any\"")
        ),
    )
}

/// A TLS 1.2 connection from this test (not from our agent) offering `ciphers` in that
/// order: the peer address the gateway's audit event names, and whether bytes echoed.
fn tls12_client(pki: &Pki, gw: &Gateway, ciphers: &str) -> (std::net::SocketAddr, bool) {
    use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVersion};
    let creds = pki.client("dave");
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
    b.set_cipher_list(ciphers).unwrap();
    b.set_certificate_chain_file(&creds.cert).unwrap();
    b.set_private_key_file(&creds.key, SslFiletype::PEM)
        .unwrap();
    b.set_ca_file(&pki.ca_crt).unwrap();
    let mut cfg = b.build().configure().unwrap();
    // The SNI names the backend; the gateway's certificate is checked for SERVER_NAME.
    cfg.set_use_server_name_indication(false);
    let mut ssl = cfg.into_ssl(pki::SERVER_NAME).unwrap();
    ssl.set_hostname("echo").unwrap();
    let tcp = backend::connect(gw.addr);
    let peer = tcp.local_addr().unwrap();
    let echoed = match ssl.connect(tcp) {
        Ok(mut s) => tls::exchange(&mut s, b"tls12").0 == b"tls12",
        Err(_) => false,
    };
    (peer, echoed)
}

#[test]
fn tls12_ciphers_apply_and_disjoint_ciphers_refuse() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let gw = tls12_gateway(
        &pki,
        &backend,
        "tls12_ciphers = [\"ECDHE-ECDSA-AES256-GCM-SHA384\"]",
    );
    // The client prefers AES-128; the gateway allows only AES-256.
    let (peer, ok) = tls12_client(
        &pki,
        &gw,
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
    );
    assert!(ok, "a common TLS 1.2 cipher");
    let ev = gw.audit_for(peer);
    assert_eq!(field(&ev, "result"), "ok", "{ev}");
    assert_eq!(
        field(&ev, "cipher"),
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "{ev}"
    );
    // Disjoint: refused.
    let (peer, ok) = tls12_client(&pki, &gw, "ECDHE-ECDSA-AES128-GCM-SHA256");
    assert!(!ok, "no common TLS 1.2 cipher, yet bytes came back");
    let ev = gw.audit_for(peer);
    assert_eq!(field(&ev, "result"), "handshake_failed", "{ev}");
}

/// `openssl s_client` over TLS 1.2 offering `sigalgs`: its report of the gateway's
/// signature ("Peer signing digest: …"), or None when the handshake failed.
fn peer_signing_digest(pki: &Pki, gw: &Gateway, sigalgs: &str) -> Option<String> {
    let creds = pki.client("erin");
    let mut cmd = std::process::Command::new(tunnel_tests::ocsp::openssl_bin());
    cmd.args(["s_client", "-tls1_2", "-sigalgs", sigalgs])
        .args(["-connect", &gw.addr.to_string(), "-servername", "echo"])
        .arg("-cert")
        .arg(&creds.cert)
        .arg("-key")
        .arg(&creds.key)
        .arg("-CAfile")
        .arg(&pki.ca_crt);
    let out = process::run_with_input(cmd, Some(Vec::new()), PROMPT);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Peer signing digest: "))
        .map(str::to_string)
}

#[test]
fn signature_algorithms_decide_the_gateways_signature_and_disjoint_ones_refuse() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let sha256 = tls12_gateway(
        &pki,
        &backend,
        "signature_algorithms = [\"ecdsa_secp256r1_sha256\"]",
    );
    let both = tls12_gateway(
        &pki,
        &backend,
        "signature_algorithms = [\"ecdsa_secp384r1_sha384\", \"ecdsa_secp256r1_sha256\"]",
    );
    // The client accepts both. OpenSSL signs with SHA-256 by default (as the broken build
    // that ignored the setting did): SHA-384 shows the gateway's list in force, and with
    // SHA-256 alone allowed it stays SHA-256.
    let accept = "ECDSA+SHA384:ECDSA+SHA256";
    assert_eq!(
        peer_signing_digest(&pki, &both, accept).as_deref(),
        Some("SHA384"),
        "the gateway's first signature algorithm is used"
    );
    assert_eq!(
        peer_signing_digest(&pki, &sha256, accept).as_deref(),
        Some("SHA256")
    );
    // Disjoint: the gateway may not sign with what the client accepts.
    assert_eq!(peer_signing_digest(&pki, &sha256, "ECDSA+SHA384"), None);
    let ev = sha256
        .proc
        .wait_for_audit(PROMPT, |e| field(e, "result") == "handshake_failed");
    assert!(field(&ev, "cipher").is_empty(), "{ev}");
}

/// Without `groups`, OpenSSL's default list decides: X25519 first with OpenSSL 3.0 (the system
/// build), the X25519MLKEM768 hybrid first with OpenSSL 3.5 and later (the vendored build).
#[test]
fn default_group_is_openssls_first_and_named_in_the_audit_event() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let gw = Gateway::start(&pki, &backend_toml("echo", backend.addr, "\"any\""));
    let agent = Agent::start(&pki, gw.addr, &pki.client("bob"), &["echo"]);
    let _ = echo_through(&agent);
    let ev = gw
        .proc
        .wait_for_audit(PROMPT, |e| field(e, "result") == "ok");
    let expected = if cfg!(feature = "vendored-openssl") {
        "X25519MLKEM768"
    } else {
        "x25519"
    };
    assert_eq!(field(&ev, "group"), expected, "{ev}");
}

/// Three connections in a row; returns how many the gateway saw resumed.
fn resumed_count(pki: &Pki, gw_tls: &str, agent_tls: &str) -> usize {
    let backend = Backend::echo();
    let gw = Gateway::start(
        pki,
        &format!("{gw_tls}{}", backend_toml("echo", backend.addr, "\"any\"")),
    );
    let agent = agent_with(pki, &gw, &pki.client("carol"), agent_tls);
    for _ in 0..3 {
        let _ = echo_through(&agent);
    }
    let evs = gw.proc.wait_until("3 audit events", PROMPT, |evs| {
        let a: Vec<_> = evs
            .iter()
            .filter(|e| process::is_audit(e))
            .cloned()
            .collect();
        (a.len() >= 3).then_some(a)
    });
    evs.iter().filter(|e| boolean(e, "resumed")).count()
}

#[test]
fn session_resumption_false_on_either_agent_makes_every_handshake_full() {
    let pki = Pki::new();
    assert_eq!(
        resumed_count(&pki, "[tls]\nsession_resumption = false\n", ""),
        0
    );
    assert_eq!(
        resumed_count(&pki, "", "[tls]\nsession_resumption = false\n"),
        0
    );
    // Positive control: by default the later connections resume.
    assert!(resumed_count(&pki, "", "") >= 1);
}

fn check_output(pki: &Pki, tls: &str) -> (i32, String) {
    let cfg = pki.write(
        "check",
        "toml",
        &format!(
            "{}{tls}{}",
            Gateway::header(),
            backend_toml("echo", "127.0.0.1:9", "\"any\"")
        ),
    );
    let out = run_server(&["check", "--config", cfg.to_str().expect("utf-8")], READY);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn check_names_values_the_linked_openssl_does_not_support() {
    let pki = Pki::new();
    let cases = [
        (
            "groups = [\"X25519\", \"P-999\"]",
            "tls.groups",
            "\"P-999\"",
        ),
        (
            "tls13_ciphersuites = [\"TLS_AES_512_GCM\"]",
            "tls.tls13_ciphersuites",
            "\"TLS_AES_512_GCM\"",
        ),
        (
            "tls12_ciphers = [\"NOT-A-CIPHER\"]",
            "tls.tls12_ciphers",
            "\"NOT-A-CIPHER\"",
        ),
        (
            "signature_algorithms = [\"rsa_pkcs1_md5\"]",
            "tls.signature_algorithms",
            "\"rsa_pkcs1_md5\"",
        ),
        ("grups = [\"X25519\"]", "tls", "grups"),
    ];
    for (line, key, name) in cases {
        let (code, text) = check_output(&pki, &format!("[tls]\n{line}\n"));
        assert_eq!(code, 64, "{line}: {text}");
        assert!(text.contains(key) && text.contains(name), "{line}: {text}");
    }
    let (code, text) = check_output(
        &pki,
        "[tls]\ngroups = [\"X25519\", \"P-256\"]\ntls12_ciphers = [\"ECDHE-ECDSA-AES128-GCM-SHA256\"]\n",
    );
    assert_eq!(code, 0, "positive control: {text}");
}

#[test]
fn client_agent_refuses_unsupported_values_at_start() {
    let pki = Pki::new();
    let creds = pki.client("dave");
    let spec = AgentSpec {
        server: "127.0.0.1:9".into(),
        server_name: pki::SERVER_NAME,
        creds: &creds,
        ca: &pki.ca_crt,
        backends: &["echo"],
        extra: "[tls]\nsignature_algorithms = [\"ed25519\", \"dsa_sha999\"]\n",
    };
    let cfg = pki.write("client", "toml", &client_toml(&spec));
    let mut cmd = command(&bins::client());
    cmd.arg("--config").arg(&cfg);
    let out = process::run_to_end(cmd, READY);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("tls.signature_algorithms") && err.contains("\"dsa_sha999\""),
        "{err}"
    );
}
