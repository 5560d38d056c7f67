//! `tunnel-client status` through the agent's own admin socket: its tunnels, the gateway,
//! the certificate's notAfter, open and total connections, and the last error per tunnel.

use std::io::{Read, Write};
use tunnel_tests::admin::wait_until;
use tunnel_tests::backend::connect;
use tunnel_tests::pki::SERVER_NAME;
use tunnel_tests::{backend_toml, bins, command, Agent, AgentSpec, Backend, Gateway, Pki, PROMPT};

fn status(sock: &std::path::Path, json: bool) -> (bool, String, String) {
    let mut cmd = command(&bins::client());
    cmd.args(["status", "--socket", sock.to_str().unwrap()]);
    if json {
        cmd.arg("--json");
    }
    let out = tunnel_tests::process::run_to_end(cmd, PROMPT);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn status_lists_tunnels_expiry_and_last_errors() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let body = format!(
        "{}{}",
        backend_toml("db", echo.addr, "\"cn=alice\""),
        backend_toml("secret", echo.addr, "\"cn=bob\"")
    );
    let gw = Gateway::start(&pki, &body);
    let alice = pki.client("alice");
    let agent = Agent::start_spec(
        &pki,
        &AgentSpec {
            server: gw.addr.to_string(),
            server_name: SERVER_NAME,
            creds: &alice,
            ca: &pki.ca_crt,
            backends: &["db", "secret"],
            extra: "admin_socket = \"agent.sock\"\n",
        },
    );
    let sock = pki.dir().join("agent.sock");
    // One open tunnel to db, one refused attempt to secret.
    let mut open = connect(agent.listens[0]);
    open.write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    open.read_exact(&mut b).unwrap();
    let mut refused = connect(agent.listens[1]);
    let _ = refused.write_all(b"x");
    let (got, _) = tunnel_tests::data::read_all(&mut refused);
    assert!(got.is_empty(), "secret must not answer alice");
    let json = || {
        let (ok, out, err) = status(&sock, true);
        assert!(ok, "status failed: {err}");
        serde_json::from_str::<serde_json::Value>(&out).expect("JSON")
    };
    wait_until("the refusal to show up in status", PROMPT, || {
        json()["tunnels"][1]["last_error"].is_string()
    });
    let v = json();
    // The gateway's refusal itself (it denies with a handshake_failure alert, and its audit
    // says so), not just any string.
    let last = v["tunnels"][1]["last_error"].as_str().unwrap();
    assert!(last.contains("alert handshake failure"), "{last}");
    let denied = gw.wait_for_audit(PROMPT, |e| tunnel_tests::field(e, "sni") == "secret");
    assert_eq!(tunnel_tests::field(&denied, "result"), "denied", "{denied}");
    assert_eq!(v["agent"]["gateway"], gw.addr.to_string());
    assert_eq!(v["agent"]["subject"], "CN=alice");
    let not_after = tunnel_core::util::time::unix_time(alice.issued.cert.not_after()).unwrap();
    assert_eq!(v["agent"]["not_after"].as_i64(), Some(not_after));
    let t = v["tunnels"].as_array().unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0]["listen"], agent.listens[0].to_string());
    assert_eq!(t[0]["backend"], "db");
    assert_eq!(
        (t[0]["active"].as_u64(), t[0]["total"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(t[0]["last_error"].is_null(), "{v}");
    assert_eq!(t[1]["backend"], "secret");
    assert_eq!(t[1]["active"].as_u64(), Some(0));
    let (ok, text, _) = status(&sock, false);
    assert!(
        ok && text.contains("LAST ERROR") && text.contains(&agent.listens[1].to_string()),
        "{text}"
    );
    drop(open);
    wait_until("db's tunnel to close", PROMPT, || {
        json()["tunnels"][0]["active"].as_u64() == Some(0)
    });
}

/// The default expiry warning fits the certificate's lifetime: a fresh 8-hour certificate is
/// not "expiring soon" (before, the 14-day default warned at once with days_left=0); one in
/// the last fifth of its 8 hours is, and because `signer` marks a sign-in certificate, the
/// log and `tunnel-client status` say to run `tunnel-client login`. A configured
/// `expiry_warning` still wins (positive control for the fresh certificate).
#[test]
fn expiry_warning_scales_to_short_lived_sign_in_certificates() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(&pki, &backend_toml("db", echo.addr, "\"cn=alice\""));
    let hour = 3600;
    let start = |creds: &tunnel_tests::Creds, extra: &str| {
        Agent::start_spec(
            &pki,
            &AgentSpec {
                server: gw.addr.to_string(),
                server_name: SERVER_NAME,
                creds,
                ca: &pki.ca_crt,
                backends: &["db"],
                extra,
            },
        )
    };
    let warned = |agent: &Agent| {
        agent.wait_for_message("client agent started", PROMPT);
        agent
            .events()
            .into_iter()
            .find(|e| tunnel_tests::field(e, "message") == "cert expires soon (expiry_warning)")
    };
    let signer = "signer = \"https://signer.example.com:9443\"\n";

    // Fresh: 8 h left of 8 h.
    let fresh = tunnel_tests::admin::client_valid(&pki, "alice", 60, 8 * hour);
    let agent = start(&fresh, signer);
    assert_eq!(
        warned(&agent),
        None,
        "a fresh 8 h certificate was warned about"
    );
    drop(agent);
    let agent = start(&fresh, &format!("{signer}expiry_warning = \"9h\"\n"));
    assert!(
        warned(&agent).is_some(),
        "a configured expiry_warning was ignored"
    );
    drop(agent);

    // In its last fifth: 1 h left of 8 h (the window is 96 minutes).
    let late = tunnel_tests::admin::client_valid(&pki, "alice", 7 * hour, hour);
    let agent = start(&late, &format!("{signer}admin_socket = \"late.sock\"\n"));
    let ev = warned(&agent).expect("no warning in the last fifth");
    assert!(
        tunnel_tests::field(&ev, "renew").contains("tunnel-client login"),
        "{ev}"
    );
    let (ok, text, err) = status(&pki.dir().join("late.sock"), false);
    assert!(ok, "{err}");
    assert!(
        text.contains("expires in") && text.contains("tunnel-client login"),
        "{text}"
    );
}

/// The agent looks at its certificate again when the warning window opens, not only every
/// 6 hours: an agent started before the window warns when the window opens (with the 6-hour
/// check alone, an 8-hour certificate's 96-minute window was slept through).
#[test]
fn the_expiry_warning_comes_when_the_window_opens() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(&pki, &backend_toml("db", echo.addr, "\"cn=alice\""));
    // 85 s of lifetime, 25 s left: the window (the last fifth, 17 s) opens in 8 s.
    let creds = tunnel_tests::admin::client_valid(&pki, "alice", 60, 25);
    let agent = Agent::start_spec(
        &pki,
        &AgentSpec {
            server: gw.addr.to_string(),
            server_name: SERVER_NAME,
            creds: &creds,
            ca: &pki.ca_crt,
            backends: &["db"],
            extra: "",
        },
    );
    agent.wait_for_message("client agent started", PROMPT);
    let soon = "cert expires soon (expiry_warning)";
    let early = agent
        .events()
        .into_iter()
        .any(|e| tunnel_tests::field(&e, "message") == soon);
    assert!(!early, "warned before the window opened");
    let ev = agent.wait_for_message(soon, PROMPT);
    let left: i64 = ev["seconds_left"].as_i64().unwrap_or(-1);
    assert!((0..=17).contains(&left), "warned inside the window: {ev}");
}
