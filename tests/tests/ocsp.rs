//! OCSP against a real responder (`openssl ocsp`): client certificates checked with
//! `ocsp = "prefer"` and `"require"` (good, revoked, unknown, responder down or silent), and
//! the gateway's own status stapled (`ocsp_staple = "fetch"` or a DER file) for client agents
//! with `require_staple = true`.

use openssl::hash::MessageDigest;
use openssl::ocsp::{OcspCertId, OcspCertStatus, OcspFlag, OcspResponse, OcspResponseStatus};
use openssl::ssl::StatusType;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use tunnel_core::pki::CertSpec;
use tunnel_tests::backend::{connect, round_trip};
use tunnel_tests::ocsp::{fetch_der, Responder, Status};
use tunnel_tests::pki::toml_str;
use tunnel_tests::process::count_reloads;
use tunnel_tests::process::{is_audit, number, AgentSpec};
use tunnel_tests::tls::{connect_ssl, exchange, local_addr, TlsClient};
use tunnel_tests::*;

/// A gateway with `ocsp = mode` asking `url`, `extra` top-level keys, and a backend `echo`
/// every verified client may reach.
fn ocsp_gateway(pki: &Pki, echo: &Backend, mode: &str, url: &str, extra: &str) -> Gateway {
    Gateway::start(
        pki,
        &format!(
            "ocsp = \"{mode}\"\nocsp_responder = \"{url}\"\n{extra}\n{}",
            backend_toml("echo", echo.addr, "\"any\"")
        ),
    )
}

/// Connects as `creds` and checks the outcome against `want` (an audit result): `ok` means
/// the message echoed; anything else means nothing came back and the backend was not dialled.
fn check(pki: &Pki, gw: &Gateway, echo: &Backend, creds: &Creds, want: &str) -> serde_json::Value {
    let cn = tunnel_core::tls::common_name(&creds.issued.cert);
    let msg = format!("hello from {cn}");
    let before = echo.accepted();
    let client = TlsClient::new(creds, &pki.ca_crt);
    let mut s = client
        .connect(gw.addr, Some("echo"))
        .expect("the handshake itself succeeds: OCSP is checked after it");
    let peer = local_addr(&s);
    let (got, _) = exchange(&mut s, msg.as_bytes());
    let ev = gw.audit_for(peer);
    assert_eq!(field(&ev, "result"), want, "{cn}: {ev}");
    assert_eq!(field(&ev, "subject"), format!("CN={cn}"), "{ev}");
    if want == "ok" {
        assert_eq!(got, msg.as_bytes(), "{cn}");
        assert_eq!(echo.accepted(), before + 1, "{cn}");
    } else {
        assert!(got.is_empty(), "{cn} was refused but got {got:?}");
        assert_eq!(echo.accepted(), before, "{cn}: the backend was dialled");
    }
    ev
}

#[test]
fn prefer_and_require_against_a_real_responder() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let good = pki.client("good");
    let revoked = pki.client("revoked");
    let unknown = pki.client("unknown");
    // Valid in the index, but first asked about once the responder is down.
    let late = pki.client("late");
    let mut responder = Responder::start(
        &pki,
        &[
            (&good, Status::Valid),
            (&revoked, Status::Revoked),
            (&late, Status::Valid),
        ],
    );
    let url = responder.url();
    let prefer = ocsp_gateway(&pki, &echo, "prefer", &url, "");
    let require = ocsp_gateway(&pki, &echo, "require", &url, "");

    for (creds, on_prefer, on_require) in [
        (&good, "ok", "ok"),
        (&revoked, "revoked", "revoked"),
        (&unknown, "ok", "denied"),
    ] {
        let p = check(&pki, &prefer, &echo, creds, on_prefer);
        let r = check(&pki, &require, &echo, creds, on_require);
        if on_require != "ok" {
            assert!(field(&r, "reason").contains("OCSP"), "{r}");
        }
        if on_prefer == "revoked" {
            assert!(field(&p, "reason").contains("OCSP"), "{p}");
        }
    }
    // Prefer let the unknown certificate through, but said so.
    prefer.wait_for("a warning about the unknown status", PROMPT, |e| {
        field(e, "message").contains("unknown") && field(e, "level") == "WARN"
    });

    // Responder down: nothing listens on its port any more.
    responder.stop();
    check(&pki, &prefer, &echo, &late, "ok");
    let r = check(&pki, &require, &echo, &late, "denied");
    assert!(field(&r, "reason").contains("no OCSP answer"), "{r}");
    // Answers are cached until their nextUpdate: the good one still counts.
    check(&pki, &require, &echo, &good, "ok");
    check(&pki, &prefer, &echo, &revoked, "revoked");
    // Positive control: both gateways still serve after the refusals.
    check(&pki, &prefer, &echo, &good, "ok");
    check(&pki, &require, &echo, &good, "ok");
}

#[test]
fn responder_that_never_answers_costs_at_most_ocsp_timeout() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let alice = pki.client("alice");
    // Accepts the OCSP request and never answers; the connection ends when the gateway
    // gives up.
    let silent = Backend::spawn(|mut s| {
        let _ = std::io::copy(&mut s, &mut std::io::sink());
    });
    let url = format!("http://{}", silent.addr);
    // handshake_timeout far above the bound below, so that only ocsp_timeout can meet it.
    let extra = "ocsp_timeout = \"300ms\"\nhandshake_timeout = \"60s\"";
    let prefer = ocsp_gateway(&pki, &echo, "prefer", &url, extra);
    let require = ocsp_gateway(&pki, &echo, "require", &url, extra);
    check(&pki, &prefer, &echo, &alice, "ok");
    let r = check(&pki, &require, &echo, &alice, "denied");
    assert!(field(&r, "reason").contains("did not answer"), "{r}");
    // 300 ms plus a margin for a loaded 2-core machine.
    assert!(
        u128::from(number(&r, "duration_ms")) < 300 + PROMPT.as_millis(),
        "the query was not bounded by ocsp_timeout: {r}"
    );
    // Positive control: the gateway that let the client through still does.
    check(&pki, &prefer, &echo, &alice, "ok");
}

/// Connects to `gw` asking for the certificate status and returns the staple it sent, if any
/// (after checking that the tunnel works on this connection too).
fn staple_from(pki: &Pki, gw: &Gateway) -> Option<Vec<u8>> {
    let alice = pki.client("stapler");
    let client = TlsClient::new(&alice, &pki.ca_crt);
    let mut ssl = client.ssl(Some("echo"));
    ssl.set_status_type(StatusType::OCSP)
        .expect("status_request");
    let mut s = connect_ssl(ssl, gw.addr).expect("handshake");
    let staple = s.ssl().ocsp_status().map(<[u8]>::to_vec);
    let peer = local_addr(&s);
    assert_eq!(exchange(&mut s, b"staple?").0, b"staple?");
    // Wait for its audit event, so that it cannot be mistaken for a later connection's.
    let ev = gw.audit_for(peer);
    assert_eq!(field(&ev, "result"), "ok", "{ev}");
    staple
}

/// Checks that `der` is a successful response, signed by the fixture's CA, saying `good` for
/// the gateway's certificate.
fn assert_good_for_gateway(pki: &Pki, der: &[u8]) {
    assert_good_for(pki, &pki.server.issued.cert, der);
}

/// Checks that `der` is a successful response, signed by the fixture's CA, saying `good` for
/// `cert`.
fn assert_good_for(pki: &Pki, cert: &openssl::x509::X509Ref, der: &[u8]) {
    let resp = OcspResponse::from_der(der).expect("a DER OCSP response");
    assert_eq!(resp.status(), OcspResponseStatus::SUCCESSFUL);
    let basic = resp.basic().expect("basic response");
    let mut store = X509StoreBuilder::new().unwrap();
    store.add_cert(pki.ca().cert.clone()).unwrap();
    let store = store.build();
    basic
        .verify(&Stack::new().unwrap(), &store, OcspFlag::empty())
        .expect("staple signed by the CA");
    let id = OcspCertId::from_cert(MessageDigest::sha1(), cert, &pki.ca().cert).unwrap();
    let st = basic
        .find_status(&id)
        .expect("the staple is about this certificate");
    assert_eq!(st.status, OcspCertStatus::GOOD);
    st.check_validity(300, None).expect("current");
}

/// An agent for `echo` with `require_staple = true`.
fn staple_agent(pki: &Pki, gw: &Gateway, creds: &Creds) -> Agent {
    Agent::start_spec(
        pki,
        &AgentSpec {
            server: gw.addr.to_string(),
            server_name: pki::SERVER_NAME,
            creds,
            ca: &pki.ca_crt,
            backends: &["echo"],
            extra: "require_staple = true",
        },
    )
}

/// A 100 kB message through `agent` comes back unchanged, and the gateway audits it `ok`.
fn assert_agent_tunnels(agent: &Agent, gw: &Gateway, cn: &str) {
    let msg = data::pattern_bytes(11, 100_000);
    let mut s = connect(agent.addr());
    let (got, err) = round_trip(&mut s, &msg);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(data::sha256_hex(&got), data::sha256_hex(&msg));
    let subject = format!("CN={cn}");
    let ev = gw.wait_for_audit(PROMPT, |e| field(e, "subject") == subject);
    assert_eq!(field(&ev, "result"), "ok", "{ev}");
}

/// A connection through `agent` gets nothing: the agent refused the gateway, which audits
/// the aborted handshake.
fn assert_agent_refuses(agent: &Agent, gw: &Gateway, echo: &Backend) {
    let backend_before = echo.accepted();
    let audits_before = gw.audits().len();
    let mut s = connect(agent.addr());
    let (got, _) = round_trip(&mut s, b"secret");
    assert!(
        got.is_empty(),
        "got {got:?} through a gateway without a good staple"
    );
    agent.wait_for("the agent's refusal", PROMPT, |e| {
        field(e, "message").starts_with("gateway refused or unreachable")
    });
    let ev = gw.wait_until("the gateway's audit", PROMPT, |evs| {
        evs.iter()
            .filter(|e| is_audit(e))
            .nth(audits_before)
            .cloned()
    });
    assert_eq!(field(&ev, "result"), "handshake_failed", "{ev}");
    assert_eq!(echo.accepted(), backend_before, "the backend was dialled");
}

#[test]
fn fetched_staple_is_served_and_satisfies_require_staple() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let responder = Responder::start(&pki, &[(&pki.server, Status::Valid)]);
    let gw = Gateway::start(
        &pki,
        &format!(
            "ocsp_staple = \"fetch\"\nocsp_responder = \"{}\"\n{}",
            responder.url(),
            backend_toml("echo", echo.addr, "\"any\"")
        ),
    );
    gw.wait_for_message("OCSP staple refreshed", PROMPT);
    let staple = staple_from(&pki, &gw).expect("the gateway sent no staple");
    assert_good_for_gateway(&pki, &staple);

    let alice = pki.client("alice");
    let agent = staple_agent(&pki, &gw, &alice);
    assert_agent_tunnels(&agent, &gw, "alice");
}

#[test]
fn require_staple_refuses_a_gateway_that_staples_nothing() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(&pki, &backend_toml("echo", echo.addr, "\"any\""));
    assert!(staple_from(&pki, &gw).is_none(), "a staple out of nowhere");
    let alice = pki.client("alice");
    let agent = staple_agent(&pki, &gw, &alice);
    assert_agent_refuses(&agent, &gw, &echo);
    agent.wait_for("the agent's reason", PROMPT, |e| {
        field(e, "message").contains("sent no OCSP staple")
    });
    // Positive control: the gateway still serves a client that wants no staple.
    assert!(staple_from(&pki, &gw).is_none());
}

#[test]
fn staple_file_is_served_verbatim_and_a_revoked_one_is_refused() {
    let pki = Pki::new();
    let echo = Backend::echo();
    // What an operator does: fetch the gateway's status with `openssl ocsp -respout`.
    let mut responder = Responder::start(&pki, &[(&pki.server, Status::Valid)]);
    let good = fetch_der(&pki, &pki.server, &responder.url());
    responder.stop();
    let mut revoker = Responder::start(&pki, &[(&pki.server, Status::Revoked)]);
    let bad = fetch_der(&pki, &pki.server, &revoker.url());
    revoker.stop();
    assert_good_for_gateway(&pki, &good);

    let staple = pki.unique_path("staple", "der");
    std::fs::write(&staple, &good).unwrap();
    let gw = Gateway::start(
        &pki,
        &format!(
            "ocsp_staple = {}\nreload_interval = \"1s\"\n{}",
            toml_str(&staple),
            backend_toml("echo", echo.addr, "\"any\"")
        ),
    );
    assert_eq!(
        staple_from(&pki, &gw).as_deref(),
        Some(&good[..]),
        "the staple is not the file"
    );
    let alice = pki.client("alice");
    let agent = staple_agent(&pki, &gw, &alice);
    assert_agent_tunnels(&agent, &gw, "alice");

    // The file is re-read when it changes. A staple saying the gateway's certificate is
    // revoked is served as it is, and the agent refuses the gateway.
    let reloads = count_reloads(&gw.events());
    let tmp = pki.unique_path("staple-next", "tmp");
    std::fs::write(&tmp, &bad).unwrap();
    std::fs::rename(&tmp, &staple).unwrap();
    gw.wait_until("reload after the staple changed", PROMPT, |evs| {
        (count_reloads(evs) > reloads).then_some(())
    });
    assert_eq!(staple_from(&pki, &gw).as_deref(), Some(&bad[..]));
    assert_agent_refuses(&agent, &gw, &echo);
    agent.wait_for("the agent's reason", PROMPT, |e| {
        field(e, "message").contains("OCSP staple is not good")
    });
    // Positive control: the gateway still serves (a client that does not check staples).
    assert_eq!(staple_from(&pki, &gw).as_deref(), Some(&bad[..]));
}

#[test]
fn staple_fetching_switched_on_by_a_reload() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let responder = Responder::start(&pki, &[(&pki.server, Status::Valid)]);
    let body = backend_toml("echo", echo.addr, "\"any\"");
    let gw = Gateway::start(&pki, &body);
    assert!(staple_from(&pki, &gw).is_none());

    let reloads = count_reloads(&gw.events());
    std::fs::write(
        &gw.config,
        format!(
            "{}ocsp_staple = \"fetch\"\nocsp_responder = \"{}\"\n{body}",
            Gateway::header(),
            responder.url()
        ),
    )
    .unwrap();
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    gw.wait_until("configuration reloaded", PROMPT, |evs| {
        (count_reloads(evs) > reloads).then_some(())
    });
    gw.wait_for_message("OCSP staple refreshed", PROMPT);
    let staple = staple_from(&pki, &gw).expect("no staple after the reload");
    assert_good_for_gateway(&pki, &staple);
}

#[test]
fn fetched_staple_follows_a_rotated_gateway_certificate() {
    let pki = Pki::new();
    let echo = Backend::echo();
    // The next certificate of the gateway is already issued (and known to the responder).
    let mut spec = CertSpec::server(pki::SERVER_NAME);
    spec.ip.push("127.0.0.1".parse().unwrap());
    let next = pki.issue("server-next", &spec);
    let responder = Responder::start(
        &pki,
        &[(&pki.server, Status::Valid), (&next, Status::Valid)],
    );
    let gw = Gateway::start(
        &pki,
        &format!(
            "ocsp_staple = \"fetch\"\nocsp_responder = \"{}\"\n{}",
            responder.url(),
            backend_toml("echo", echo.addr, "\"any\"")
        ),
    );
    gw.wait_for_message("OCSP staple refreshed", PROMPT);
    let alice = pki.client("alice");
    let agent = staple_agent(&pki, &gw, &alice);
    assert_agent_tunnels(&agent, &gw, "alice");

    // Rotate: key first, then certificate, each by rename; then tell the gateway.
    let reloads = count_reloads(&gw.events());
    std::fs::rename(&next.key, &pki.server.key).unwrap();
    std::fs::rename(&next.cert, &pki.server.cert).unwrap();
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    gw.wait_until("configuration reloaded", PROMPT, |evs| {
        (count_reloads(evs) > reloads).then_some(())
    });
    gw.wait_until("a staple for the new certificate", PROMPT, |evs| {
        (evs.iter()
            .filter(|e| field(e, "message") == "OCSP staple refreshed")
            .count()
            >= 2)
            .then_some(())
    });
    let staple = staple_from(&pki, &gw).expect("no staple after the rotation");
    assert_good_for(&pki, &next.issued.cert, &staple);
    let bob = pki.client("bob");
    let agent = staple_agent(&pki, &gw, &bob);
    assert_agent_tunnels(&agent, &gw, "bob");
}
