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
    let not_after = tunnel_core::time::unix_time(alice.issued.cert.not_after()).unwrap();
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
