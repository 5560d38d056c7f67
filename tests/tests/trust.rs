//! Certificate trust in both directions: clients from another CA, expired, not yet valid or
//! revoked are refused by the gateway; the client agent refuses a gateway it cannot verify.

use tunnel_core::pki::CertSpec;
use tunnel_tests::backend::{connect, round_trip};
use tunnel_tests::pki::toml_str;
use tunnel_tests::process::AgentSpec;
use tunnel_tests::tls::{exchange, local_addr, TlsClient};
use tunnel_tests::*;

/// OpenSSL's text for X509_V_ERR_INVALID_PURPOSE (wording differs between versions).
const PURPOSE: [&str; 2] = [
    "unsuitable certificate purpose",
    "unsupported certificate purpose",
];

/// Connects to `gw` as `creds` with SNI `echo`; returns the audit event and what came back.
fn attempt(pki: &Pki, gw: &Gateway, creds: &Creds) -> (serde_json::Value, Vec<u8>) {
    let client = TlsClient::new(creds, &pki.ca_crt);
    let mut s = client
        .connect(gw.addr, Some("echo"))
        .expect("with TLS 1.3 the client finishes its side of the handshake");
    let peer = local_addr(&s);
    let (got, _) = exchange(&mut s, b"ping");
    (gw.audit_for(peer), got)
}

/// Checks that `creds` get nothing through and the audit says `result`; returns the reason.
fn assert_refused(pki: &Pki, gw: &Gateway, echo: &Backend, creds: &Creds, result: &str) -> String {
    let before = echo.accepted();
    let (ev, got) = attempt(pki, gw, creds);
    assert!(got.is_empty(), "refused client got {got:?}");
    assert_eq!(field(&ev, "result"), result, "{ev}");
    assert_eq!(echo.accepted(), before, "the backend was dialled");
    let cn = tunnel_core::tls::common_name(&creds.issued.cert);
    if result != "handshake_failed" {
        // Verified far enough to know who it was.
        assert_eq!(field(&ev, "subject"), format!("CN={cn}"), "{ev}");
    }
    field(&ev, "reason").to_string()
}

fn assert_allowed(pki: &Pki, gw: &Gateway, creds: &Creds) {
    let (ev, got) = attempt(pki, gw, creds);
    assert_eq!(got, b"ping");
    assert_eq!(field(&ev, "result"), "ok", "{ev}");
}

fn echo_gateway(pki: &Pki, echo: &Backend, top: &str) -> Gateway {
    Gateway::start(
        pki,
        &format!("{top}\n{}", backend_toml("echo", echo.addr, "\"any\"")),
    )
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = echo_gateway(&pki, &echo, "");
    let rogue = Pki::named("Rogue CA");
    // Same CN as a legitimate client: only the issuer differs.
    let fake = rogue.client("alice");
    let reason = assert_refused(&pki, &gw, &echo, &fake, "handshake_failed");
    assert_eq!(
        reason,
        "client certificate rejected: unable to get local issuer certificate"
    );
    assert_allowed(&pki, &gw, &pki.client("alice"));
}

#[test]
fn expired_client_certificate_is_refused() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = echo_gateway(&pki, &echo, "");
    let old = pki.issue(
        "old",
        &CertSpec {
            start_days: -30,
            days: 10,
            ..CertSpec::client("old")
        },
    );
    let reason = assert_refused(&pki, &gw, &echo, &old, "handshake_failed");
    assert_eq!(
        reason,
        "client certificate rejected: certificate has expired"
    );
    assert_allowed(&pki, &gw, &pki.client("fresh"));
}

#[test]
fn not_yet_valid_client_certificate_is_refused() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = echo_gateway(&pki, &echo, "");
    let early = pki.issue(
        "early",
        &CertSpec {
            start_days: 5,
            days: 30,
            ..CertSpec::client("early")
        },
    );
    let reason = assert_refused(&pki, &gw, &echo, &early, "handshake_failed");
    assert_eq!(
        reason,
        "client certificate rejected: certificate is not yet valid"
    );
    assert_allowed(&pki, &gw, &pki.client("punctual"));
}

#[test]
fn revoked_client_certificate_is_refused_and_others_pass() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let alice = pki.client("alice");
    let bob = pki.client("bob");
    let crl = pki.crl(&[&alice]);
    let gw = echo_gateway(&pki, &echo, &format!("crl = [{}]", toml_str(&crl)));
    let reason = assert_refused(&pki, &gw, &echo, &alice, "revoked");
    assert_eq!(reason, "certificate revoked by CRL");
    assert_allowed(&pki, &gw, &bob);
}

/// Starts an agent for `echo` with the given gateway name and CA, sends a line through it, and
/// checks that the local connection is closed with nothing received and that the agent names
/// OpenSSL's `cause` (hostname mismatch, unknown issuer and wrong purpose must be told apart).
fn assert_agent_refuses_gateway(
    pki: &Pki,
    gw: &Gateway,
    server_name: &str,
    ca: &std::path::Path,
    cause: &str,
) {
    let alice = pki.client("alice");
    let agent = Agent::start_spec(
        pki,
        &AgentSpec {
            server: gw.addr.to_string(),
            server_name,
            creds: &alice,
            ca,
            backends: &["echo"],
            extra: "",
        },
    );
    let mut s = connect(agent.addr());
    let (got, _) = round_trip(&mut s, b"secret");
    assert!(got.is_empty(), "got {got:?} through an unverified gateway");
    let ev = agent.wait_for("the agent's refusal", PROMPT, |e| {
        field(e, "message").starts_with("gateway refused or unreachable")
    });
    let causes: &[&str] = if cause == PURPOSE[0] {
        &PURPOSE
    } else {
        &[cause]
    };
    let ok = causes.iter().any(|c| {
        field(&ev, "error").ends_with(&format!(
            "gateway certificate rejected: {c} (check ca and server_name)"
        ))
    });
    assert!(ok, "want {cause:?} in {ev}");
    // The gateway saw the agent abort the handshake.
    let audit = gw.wait_for_audit(PROMPT, |_| true);
    assert_eq!(field(&audit, "result"), "handshake_failed", "{audit}");
}

#[test]
fn agent_refuses_gateway_certificate_from_untrusted_ca() {
    let pki = Pki::new();
    let echo = Backend::echo();
    // The gateway trusts our clients but presents a certificate from another CA.
    let rogue = Pki::named("Rogue CA");
    let body = format!(
        "client_ca = {}\n{}",
        toml_str(&pki.ca_crt),
        backend_toml("echo", echo.addr, "\"any\"")
    );
    let text = Gateway::header().replace("client_ca = \"ca.crt\"\n", "") + &body;
    let mut gw = Gateway::start_file(&rogue.write("server", "toml", &text));
    assert_agent_refuses_gateway(
        &pki,
        &gw,
        "localhost",
        &pki.ca_crt,
        "unable to get local issuer certificate",
    );
    assert_eq!(echo.accepted(), 0);
    // Positive control: a client that trusts the rogue CA is served.
    assert_serves(&mut gw, &pki.client("bob"), &rogue.ca_crt, Some("echo"));
}

#[test]
fn agent_refuses_gateway_with_wrong_name() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let mut gw = echo_gateway(&pki, &echo, "");
    assert_agent_refuses_gateway(
        &pki,
        &gw,
        "gateway.example.net",
        &pki.ca_crt,
        "hostname mismatch",
    );
    assert_eq!(echo.accepted(), 0);
    assert_serves(&mut gw, &pki.client("bob"), &pki.ca_crt, Some("echo"));
}

#[test]
fn agent_verifies_gateway_by_ip_address_name() {
    // The gateway certificate also carries IP 127.0.0.1; server_name may be that IP.
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = echo_gateway(&pki, &echo, "");
    let alice = pki.client("alice");
    let agent = Agent::start_spec(
        &pki,
        &AgentSpec {
            server: gw.addr.to_string(),
            server_name: "127.0.0.1",
            creds: &alice,
            ca: &pki.ca_crt,
            backends: &["echo"],
            extra: "",
        },
    );
    let mut s = connect(agent.addr());
    let (got, err) = round_trip(&mut s, b"by ip");
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, b"by ip");
}

#[test]
fn tls12_clients_only_when_configured() {
    use openssl::ssl::SslVersion;
    let pki = Pki::new();
    let echo = Backend::echo();
    let alice = pki.client("alice");
    let tls12 = TlsClient::with_max_version(&alice, &pki.ca_crt, Some(SslVersion::TLS1_2));

    let gw = echo_gateway(&pki, &echo, "");
    assert!(
        tls12.connect(gw.addr, Some("echo")).is_err(),
        "a TLS 1.2 client got through a TLS 1.3-only gateway"
    );
    let ev = gw.wait_for_audit(PROMPT, |_| true);
    assert_eq!(field(&ev, "result"), "handshake_failed", "{ev}");
    assert_eq!(echo.accepted(), 0);
    let mut gw = gw;
    assert_serves(&mut gw, &alice, &pki.ca_crt, Some("echo"));

    let gw = echo_gateway(&pki, &echo, "tls_min_version = \"1.2\"");
    let mut s = tls12
        .connect(gw.addr, Some("echo"))
        .expect("TLS 1.2 allowed");
    assert_eq!(s.ssl().version_str(), "TLSv1.2");
    let peer = local_addr(&s);
    let (got, _) = exchange(&mut s, b"old client");
    assert_eq!(got, b"old client");
    assert_eq!(field(&gw.audit_for(peer), "result"), "ok");
}

#[test]
fn client_chain_through_an_intermediate_ca_is_accepted() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(&pki, &backend_toml("echo", echo.addr, "\"cn=carol\""));
    let (_, carol) = pki.via_intermediate("carol");
    // Through the client agent, which sends its whole chain.
    let agent = Agent::start(&pki, gw.addr, &carol, &["echo"]);
    let mut s = connect(agent.addr());
    let (got, err) = round_trip(&mut s, b"via intermediate");
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, b"via intermediate");
    let ev = gw.wait_for_audit(PROMPT, |_| true);
    assert_eq!(field(&ev, "result"), "ok", "{ev}");
    assert_eq!(field(&ev, "subject"), "CN=carol", "{ev}");
}

#[test]
fn revoked_intermediate_ca_revokes_its_clients() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let (inter, carol) = pki.via_intermediate("carol");
    let crl = pki.crl(&[&inter]);
    let gw = echo_gateway(&pki, &echo, &format!("crl = [{}]", toml_str(&crl)));
    let reason = assert_refused(&pki, &gw, &echo, &carol, "revoked");
    assert_eq!(reason, "certificate revoked by CRL");
    assert_allowed(&pki, &gw, &pki.client("dave"));
}

#[test]
fn server_certificate_is_not_accepted_as_a_client_certificate() {
    // Same CA, but extendedKeyUsage says serverAuth only.
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = echo_gateway(&pki, &echo, "");
    let server_as_client = pki.issue("srv", &CertSpec::server("alice"));
    let reason = assert_refused(&pki, &gw, &echo, &server_as_client, "handshake_failed");
    // X509_V_ERR_INVALID_PURPOSE; OpenSSL words it "unsuitable" or "unsupported".
    assert!(
        PURPOSE
            .iter()
            .any(|p| reason == format!("client certificate rejected: {p}")),
        "reason: {reason}"
    );
    assert_allowed(&pki, &gw, &pki.client("alice"));
}

#[test]
fn agent_refuses_a_gateway_presenting_a_client_certificate() {
    let pki = Pki::new();
    let echo = Backend::echo();
    // Right CA and name, but extendedKeyUsage says clientAuth only.
    let wrong = pki.issue(
        "gw-client-eku",
        &CertSpec {
            dns: vec!["localhost".into()],
            ..CertSpec::client("localhost")
        },
    );
    let text = Gateway::header()
        .replace("\"server.crt\"", &toml_str(&wrong.cert))
        .replace("\"server.key\"", &toml_str(&wrong.key))
        + &backend_toml("echo", echo.addr, "\"any\"");
    let gw = Gateway::start_file(&pki.write("server", "toml", &text));
    assert_agent_refuses_gateway(&pki, &gw, "localhost", &pki.ca_crt, PURPOSE[0]);
    assert_eq!(echo.accepted(), 0);
    // Positive control: the gateway itself still serves a client that skips verifying it.
    let bob = pki.client("bob");
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).unwrap();
    b.set_certificate_chain_file(&bob.cert).unwrap();
    b.set_private_key_file(&bob.key, openssl::ssl::SslFiletype::PEM)
        .unwrap();
    b.set_verify(openssl::ssl::SslVerifyMode::NONE);
    let ssl = b.build().configure().unwrap().into_ssl("echo").unwrap();
    let mut s = tunnel_tests::tls::connect_ssl(ssl, gw.addr).expect("handshake");
    let peer = local_addr(&s);
    let (got, _) = exchange(&mut s, b"ping");
    assert_eq!(got, b"ping");
    assert_eq!(field(&gw.audit_for(peer), "result"), "ok");
}

#[test]
fn server_name_defaults_to_the_host_of_server() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = echo_gateway(&pki, &echo, "");
    let alice = pki.client("alice");
    // No server_name: the gateway is verified as "localhost", the host part of `server`.
    let toml = format!(
        "server = \"localhost:{}\"\ncert = {}\nkey = {}\nca = {}\nlog_format = \"json\"\n\n\
         [[tunnel]]\nlisten = \"127.0.0.1:0\"\nbackend = \"echo\"\n",
        gw.addr.port(),
        toml_str(&alice.cert),
        toml_str(&alice.key),
        toml_str(&pki.ca_crt)
    );
    let cfg = pki.write("client", "toml", &toml);
    let mut cmd = command(&bins::client());
    cmd.arg("--config").arg(&cfg);
    let agent = Proc::spawn("tunnel-client", cmd);
    let ev = agent.wait_for_message("tunnel listening", READY);
    let addr: std::net::SocketAddr = field(&ev, "listen").parse().unwrap();
    let mut s = connect(addr);
    let (got, err) = round_trip(&mut s, b"by default name");
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, b"by default name", "agent log:\n{}", agent.log_text());
}

#[test]
fn check_explain_accepts_a_chain_file_through_an_intermediate() {
    let pki = Pki::new();
    let config = pki.write(
        "server",
        "toml",
        &(Gateway::header() + &backend_toml("echo", "127.0.0.1:9", "\"cn=carol\"")),
    );
    let (_, carol) = pki.via_intermediate("carol");
    let out = run_server(
        &[
            "check",
            "--config",
            config.to_str().unwrap(),
            "--explain",
            carol.cert.to_str().unwrap(),
        ],
        PROMPT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("may reach echo: allowed by cn=carol"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("WARNING"),
        "the chain file verifies: {stdout}"
    );
}
