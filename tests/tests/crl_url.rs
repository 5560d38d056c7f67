//! `crl` entries that are URLs: the CRL is fetched from a real HTTP server (Python's
//! `http.server`) or HTTPS server (`openssl s_server -WWW`) on loopback, enforced, kept in
//! `state_dir` so a restart without the server still enforces it, and fetched again on
//! reload. A URL that cannot be fetched with no earlier copy stops the gateway at start.

use std::path::{Path, PathBuf};
use std::process::Command;
use tunnel_core::pki::make_crl;
use tunnel_tests::process::Proc;
use tunnel_tests::*;

/// Writes, as DER (what distribution points serve), a CRL of `pki`'s CA revoking `revoked`
/// to `dir/ca.crl`.
fn publish(pki: &Pki, dir: &Path, revoked: &[&Creds]) {
    let certs: Vec<_> = revoked.iter().map(|c| &c.issued.cert).collect();
    let crl = make_crl(pki.ca(), &certs, -1, 7).expect("CRL");
    std::fs::write(dir.join("ca.crl"), crl.to_der().expect("DER")).expect("write CRL");
}

/// `python3 -m http.server` serving `dir` on a free loopback port.
fn http_server(dir: &Path, port: u16) -> Proc {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        &port.to_string(),
        "--directory",
    ])
    .arg(dir);
    let p = Proc::spawn("python3 -m http.server (install python3)", cmd);
    backend::wait_accepting(
        format!("127.0.0.1:{port}").parse().unwrap(),
        READY,
        "http.server",
    );
    p
}

/// Starts a gateway on `config` with `env` set, waiting for readiness.
fn gateway(config: &Path, env: &[(&str, &Path)]) -> Gateway {
    let mut cmd = process::command(&bins::server());
    cmd.arg("--config").arg(config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let proc = Proc::spawn("tunnel-server", cmd);
    let ev = proc.wait_for_message("gateway listening", READY);
    let addr = field(&ev, "listen").parse().expect("listen");
    Gateway {
        proc,
        addr,
        config: config.to_path_buf(),
    }
}

/// The audit result of one connection of `who` to "echo".
fn result_for(gw: &Gateway, pki: &Pki, who: &Creds) -> String {
    tunnel_tests::control::audit_result(gw, &pki.ca_crt, who, "echo")
}

fn config(pki: &Pki, echo: &Backend, url: &str, state: &Path) -> PathBuf {
    pki.write(
        "server",
        "toml",
        &(Gateway::header()
            + &format!("crl = [\"{url}\"]\nstate_dir = {}\n", pki::toml_str(state))
            + &backend_toml("echo", echo.addr, "\"any\"")),
    )
}

#[test]
fn a_crl_url_is_enforced_kept_across_a_restart_without_network_and_refetched_on_reload() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let (alice, mallory) = (pki.client("alice"), pki.client("mallory"));
    let web = pki.dir().join("web");
    let state = pki.dir().join("state");
    std::fs::create_dir_all(&web).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    publish(&pki, &web, &[&mallory]);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/ca.crl");
    let cfg = config(&pki, &echo, &url, &state);

    // Nothing served and no copy yet: the gateway refuses to start without the CRL.
    let out = run_server(&["--config", cfg.to_str().unwrap()], PROMPT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains(&url) && err.contains("state_dir"), "{err}");

    let mut web_server = http_server(&web, port);
    let mut gw = gateway(&cfg, &[]);
    assert_eq!(result_for(&gw, &pki, &mallory), "revoked");
    assert_eq!(result_for(&gw, &pki, &alice), "ok");

    // The CRL server goes away; the gateway restarts from its copy and still enforces it.
    drop(web_server);
    gw.terminate();
    gw.wait_exit(PROMPT);
    let gw = gateway(&cfg, &[]);
    gw.wait_for_message("cannot fetch the CRL; using the last good copy", PROMPT);
    assert_eq!(result_for(&gw, &pki, &mallory), "revoked");
    assert_eq!(result_for(&gw, &pki, &alice), "ok");

    // A new CRL revokes alice too; a reload fetches it.
    publish(&pki, &web, &[&mallory, &alice]);
    web_server = http_server(&web, port);
    let reloads = |evs: &[serde_json::Value]| {
        evs.iter()
            .filter(|e| field(e, "message") == "configuration reloaded")
            .count()
    };
    let before = reloads(&gw.events());
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    // The fetch writes a new copy, and that change is picked up too: wait for the reloads to
    // settle on alice being refused.
    gw.wait_until("a reload", PROMPT, |evs| {
        (reloads(evs) > before).then_some(())
    });
    let deadline = std::time::Instant::now() + PROMPT;
    while result_for(&gw, &pki, &alice) != "revoked" {
        assert!(std::time::Instant::now() < deadline, "alice never refused");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(web_server);
}

#[test]
fn a_crl_is_fetched_over_https_verified_against_the_trust_store() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let mallory = pki.client("mallory");
    let web = pki.dir().join("web");
    let state = pki.dir().join("state");
    std::fs::create_dir_all(&web).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    publish(&pki, &web, &[&mallory]);
    let port = free_port();
    // openssl s_server -WWW serves files relative to its working directory over HTTPS.
    let mut cmd = Command::new("openssl");
    cmd.current_dir(&web)
        .args(["s_server", "-quiet", "-WWW", "-accept"]);
    cmd.arg(port.to_string())
        .arg("-cert")
        .arg(pki.dir().join("server.crt"))
        .arg("-key")
        .arg(pki.dir().join("server.key"));
    let _https = Proc::spawn("openssl s_server", cmd);
    backend::wait_accepting(
        format!("127.0.0.1:{port}").parse().unwrap(),
        READY,
        "s_server",
    );
    let url = format!("https://{}:{port}/ca.crl", pki::SERVER_NAME);
    let cfg = config(&pki, &echo, &url, &state);
    // Without the test CA in the trust store the server is not trusted: no CRL, no start.
    let out = run_server(&["--config", cfg.to_str().unwrap()], PROMPT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    // Refused for the untrusted server, not for some other failure.
    assert!(
        err.contains(&url) && err.contains("certificate verify failed"),
        "{err}"
    );
    // Trusting it (OpenSSL's SSL_CERT_FILE), the CRL is fetched and enforced.
    let gw = gateway(&cfg, &[("SSL_CERT_FILE", &pki.ca_crt)]);
    assert_eq!(result_for(&gw, &pki, &mallory), "revoked");
    assert_eq!(result_for(&gw, &pki, &pki.client("alice")), "ok");
}
