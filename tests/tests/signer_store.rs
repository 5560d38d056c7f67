//! The signer on its store (issue 23): offboarding in one command (`signer revoke`), seen by
//! a gateway that fetches the signer's `/v1/crl`; the record kept across restarts; a backup
//! of the running signer's SQLite store restored into a new state directory.

use openssl::x509::X509Crl;
use serde_json::Value;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tunnel_tests::backend::connect;
use tunnel_tests::oidc::{agent, echoes, key_and_csr, login, try_login, Provider, SignerProc};
use tunnel_tests::pki::toml_str;
use tunnel_tests::process::command;
use tunnel_tests::{backend_toml, bins, field, free_port, Backend, Gateway, Pki, PROMPT};

/// How often the gateway fetches the signer's CRL in these tests (`crl_refresh`).
const CRL_REFRESH: Duration = Duration::from_secs(2);

/// The serials of `records` (from `signer list --json`).
fn serials(records: &[Value]) -> HashSet<String> {
    records
        .iter()
        .map(|e| e["serial"].as_str().expect("serial").to_string())
        .collect()
}

/// The serials a CRL lists, as OpenSSL reads them (upper-case hex).
fn crl_serials(crl: &X509Crl) -> HashSet<String> {
    crl.get_revoked()
        .map(|s| {
            s.iter()
                .map(|r| {
                    r.serial_number()
                        .to_bn()
                        .unwrap()
                        .to_hex_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// GETs the signer's `/v1/crl` asking for PEM; checks the content type.
fn served_crl(signer: &SignerProc) -> X509Crl {
    let get = b"GET /v1/crl HTTP/1.1\r\nHost: localhost\r\nAccept: application/x-pem-file\r\nConnection: close\r\n\r\n";
    let (status, text) = signer.raw(get);
    assert_eq!(status, 200, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: application/x-pem-file"),
        "{text}"
    );
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    X509Crl::from_pem(body.as_bytes()).expect("a PEM CRL")
}

/// A gateway on `port` trusting the user CA in `users`, fetching the signer's CRL every
/// [`CRL_REFRESH`] and closing open tunnels of certificates it revokes; `db` lets OU dba and
/// OU dev in. It trusts the signer's HTTPS certificate through SSL_CERT_FILE.
fn gateway(pki: &Pki, users: &Path, signer: &SignerProc, port: u16, echo: &Backend) -> Gateway {
    let state = pki.dir().join(format!("gw-state-{port}"));
    std::fs::create_dir_all(&state).unwrap();
    let url = format!(
        "https://{}:{}/v1/crl",
        tunnel_tests::pki::SERVER_NAME,
        signer.addr.port()
    );
    let body = format!(
        "listen = \"127.0.0.1:{port}\"\ncert = \"server.crt\"\nkey = \"server.key\"\n\
         client_ca = {}\nlog_format = \"json\"\ncrl = [\"{url}\"]\nstate_dir = {}\n\
         crl_refresh = \"{}s\"\nrevoke_established = true\n{}",
        toml_str(&users.join("ca.crt")),
        toml_str(&state),
        CRL_REFRESH.as_secs(),
        backend_toml("db", echo.addr, "\"ou=dba\", \"ou=dev\""),
    );
    let mut cmd = command(&bins::server());
    cmd.env("SSL_CERT_FILE", &pki.ca_crt);
    Gateway::start_command(cmd, &pki.write("gateway", "toml", &body))
}

/// alice has two certificates from two logins and a live tunnel; `signer revoke --email`
/// puts both serials in the CRL the signer serves, the gateway (fetching it by URL) ends
/// the live tunnel within crl_refresh plus a margin and refuses her new tunnels, bob is
/// unaffected, and alice cannot sign in again until `signer unblock`.
#[test]
fn offboarding_revokes_everywhere_in_one_command() {
    let pki = Pki::new();
    let provider = Provider::start(pki.dir());
    let users = SignerProc::new_user_ca(&pki);
    let port = free_port();
    let signer = SignerProc::start_in(
        &pki,
        &provider,
        &format!("127.0.0.1:{port}"),
        "",
        users.clone(),
    );
    let echo = Backend::echo();
    let gw = gateway(&pki, &users, &signer, port, &echo);

    let homes: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (alice1, alice2, bob) = (homes[0].path(), homes[1].path(), homes[2].path());
    login(&pki, &signer, alice1, "alice", &["--no-browser"]);
    login(&pki, &signer, alice2, "alice", &["--no-browser"]);
    login(&pki, &signer, bob, "bob", &["--no-browser"]);
    let (_a1, a1) = agent(alice1, &["db"]);
    let (_a2, a2) = agent(alice2, &["db"]);
    let (_b, b) = agent(bob, &["db"]);
    // A live tunnel: written and echoed without closing.
    let mut live = connect(a1[0]);
    live.write_all(b"live\n").unwrap();
    let mut echoed = [0u8; 5];
    live.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"live\n", "alice's live tunnel");
    assert!(echoes(b[0]), "bob reaches db");

    let (code, out, _) = signer.command(&["list", "--email", "alice@example.com", "--json"]);
    assert_eq!(code, 0);
    let alices = serials(&serde_json::from_str::<Vec<Value>>(&out).unwrap());
    assert_eq!(alices.len(), 2, "two logins, two certificates: {out}");
    assert!(crl_serials(&served_crl(&signer)).is_empty());

    let revoked_at = Instant::now();
    let (code, out, err) =
        signer.command(&["revoke", "--email", "alice@example.com", "--reason", "left"]);
    assert_eq!(code, 0, "{err}");
    for s in &alices {
        assert!(out.contains(s.as_str()), "revoke prints {s}: {out}");
    }
    let crl = served_crl(&signer);
    assert_eq!(crl_serials(&crl), alices, "both serials in the served CRL");
    let ca = openssl::x509::X509::from_pem(&std::fs::read(&signer.users_ca).unwrap()).unwrap();
    assert!(
        crl.verify(&ca.public_key().unwrap()).unwrap(),
        "signed by the user CA"
    );

    // The live tunnel ends once the gateway has fetched the new list.
    gw.wait_for_message(
        "closed open connections of certificates revoked by the new CRL",
        CRL_REFRESH + PROMPT,
    );
    let cut_after = revoked_at.elapsed();
    // Closed by the gateway: the agent ends the local side (EOF, or a reset).
    let mut rest = Vec::new();
    let _ = live.read_to_end(&mut rest);
    assert!(rest.is_empty(), "the live tunnel was ended: got {rest:?}");
    println!(
        "offboarding: live tunnel ended {cut_after:?} after `signer revoke` (crl_refresh {CRL_REFRESH:?})"
    );
    assert!(!echoes(a2[0]), "alice's other certificate is refused");
    gw.wait_for_audit(PROMPT, |e| {
        field(e, "result") == "revoked" && field(e, "subject").contains("alice@example.com")
    });
    assert!(echoes(b[0]), "bob is unaffected");

    let home = tempfile::tempdir().unwrap();
    let (ok, out) = try_login(&pki, &signer, home.path(), "alice", &["--no-browser"]);
    assert!(!ok, "alice is blocked: {out}");
    let ev = signer.refusal("blocked");
    assert_eq!(field(&ev, "email"), "alice@example.com");
    login(&pki, &signer, home.path(), "bob", &["--no-browser"]);

    let (code, _, err) = signer.command(&["unblock", "--email", "alice@example.com"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = signer.command(&["unblock", "--email", "alice@example.com"]);
    assert_eq!(code, 1, "nothing to unblock: {err}");
    let (code, _, err) = signer.command(&["revoke", "--email", "nobody@example.com"]);
    assert_eq!(code, 1, "nothing matched: {err}");
    assert!(err.contains("nothing was revoked"), "{err}");
    let again = tempfile::tempdir().unwrap();
    login(&pki, &signer, again.path(), "alice", &["--no-browser"]);
    let (_a3, a3) = agent(again.path(), &["db"]);
    assert!(echoes(a3[0]), "alice, unblocked, signs in and reaches db");
}

/// Issues one certificate for a new token of `account`; returns its serial.
fn issue(signer: &SignerProc, provider: &Provider, account: &str) -> String {
    let (_, csr, nonce) = key_and_csr();
    let token = provider.token(account, "tunnel", &nonce);
    let (status, body) = signer.request(&csr, &token, None);
    assert_eq!(status, 200, "{body}");
    body["serial"].as_str().unwrap().to_string()
}

fn private_dir(pki: &Pki, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let d = pki.dir().join(name);
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

/// `signer backup` copies the running signer's SQLite store; restored into a new state
/// directory, a signer keeps every record and every used token, and goes on issuing with
/// serials that are all new.
#[test]
fn a_backup_taken_while_running_restores_and_issuing_goes_on() {
    let pki = Pki::new();
    let provider = Provider::start(pki.dir());
    let users = SignerProc::new_user_ca(&pki);
    let state = private_dir(&pki, "state");
    let extra = format!("require_nonce = false\nstate_dir = {}", toml_str(&state));
    // A command does not create the store (run as root, the signer could not open it).
    let config = SignerProc::write_config(&pki, &provider, "127.0.0.1:1", &extra, &users);
    let out = tunnel_tests::run_server(
        &["signer", "list", "--config", config.to_str().unwrap()],
        PROMPT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("does not exist yet; start the signer once"),
        "{err}"
    );
    assert!(!state.join("signer.db").exists());
    let mut signer = SignerProc::start_in(&pki, &provider, "127.0.0.1:1", &extra, users.clone());
    let before: HashSet<String> = (0..3).map(|_| issue(&signer, &provider, "bob")).collect();
    let used = provider.token("alice", "tunnel", "");
    let (_, csr, _) = key_and_csr();
    assert_eq!(signer.request(&csr, &used, None).0, 200);
    let backup = pki.dir().join("signer-backup.db");
    let (code, out, err) = signer.command(&["backup", "--to", backup.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("backed up"), "{out}");
    let (code, _, err) = signer.command(&["backup", "--to", backup.to_str().unwrap()]);
    assert_ne!(code, 0, "an existing file is not overwritten: {err}");
    signer.proc.terminate();
    signer.proc.wait_exit(Duration::from_secs(20));

    let restored = private_dir(&pki, "restored");
    std::fs::copy(&backup, restored.join("signer.db")).unwrap();
    let extra = format!("require_nonce = false\nstate_dir = {}", toml_str(&restored));
    let signer = SignerProc::start_in(&pki, &provider, "127.0.0.1:1", &extra, users);
    let (_, other, _) = key_and_csr();
    let (status, body) = signer.request(&other, &used, None);
    assert_eq!(
        (status, body["error"].as_str().unwrap_or("")),
        (401, "token_replayed"),
        "a token used before the backup stays used: {body}"
    );
    let after: HashSet<String> = (0..3).map(|_| issue(&signer, &provider, "bob")).collect();
    assert!(after.is_disjoint(&before), "no serial reused");
    let records = signer.recorded();
    let all = serials(&records);
    assert_eq!(records.len(), all.len(), "one record per serial");
    assert!(
        all.is_superset(&before) && all.is_superset(&after),
        "{records:?}"
    );
    assert_eq!(records.len(), 7, "4 before the backup, 3 after");
}
