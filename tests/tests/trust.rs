//! Certificate trust in both directions: clients from another CA, expired, not yet valid or
//! revoked are refused by the gateway; the client agent refuses a gateway it cannot verify.

use tunnel_core::pki::CertSpec;
use tunnel_tests::backend::{connect, round_trip};
use tunnel_tests::pki::toml_str;
use tunnel_tests::process::AgentSpec;
use tunnel_tests::tls::{exchange, local_addr, TlsClient};
use tunnel_tests::*;

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
    assert!(
        reason.contains("issuer") || reason.contains("certificate"),
        "reason: {reason}"
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
    assert!(reason.contains("expired"), "reason: {reason}");
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
    assert!(reason.contains("not yet valid"), "reason: {reason}");
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
    assert!(reason.contains("revoked"), "reason: {reason}");
    assert_allowed(&pki, &gw, &bob);
}

/// Starts an agent for `echo` with the given gateway name and CA, sends a line through it, and
/// checks that the local connection is closed with nothing received and the agent says why.
fn assert_agent_refuses_gateway(pki: &Pki, gw: &Gateway, server_name: &str, ca: &std::path::Path) {
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
    assert!(
        field(&ev, "error").contains("gateway certificate rejected"),
        "{ev}"
    );
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
    let gw = Gateway::start_file(&rogue.write("server", "toml", &text));
    assert_agent_refuses_gateway(&pki, &gw, "localhost", &pki.ca_crt);
    assert_eq!(echo.accepted(), 0);
}

#[test]
fn agent_refuses_gateway_with_wrong_name() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = echo_gateway(&pki, &echo, "");
    assert_agent_refuses_gateway(&pki, &gw, "gateway.example.net", &pki.ca_crt);
    assert_eq!(echo.accepted(), 0);
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
