//! Key formats on both agents: encrypted PEM (`key_password_file`), PKCS#12 (`keystore`,
//! `keystore_password_file`) and PKCS#11 tokens (`key = "pkcs11:..."`, SoftHSM2 through the
//! libp11 engine). Wrong passwords and absent tokens are config errors (exit 64) naming the
//! file or URI; reload reads the keys again.

use nix::sys::signal::Signal;
use openssl::symm::Cipher;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use tunnel_tests::backend::round_trip;
use tunnel_tests::pki::toml_str;
use tunnel_tests::process::field;
use tunnel_tests::*;

fn encrypted_key(pki: &Pki, creds: &Creds, pass: &str) -> (PathBuf, PathBuf) {
    let pem = creds
        .issued
        .key
        .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), pass.as_bytes())
        .expect("encrypt key");
    let key = pki.unique_path("enc", "key");
    std::fs::write(&key, pem).expect("write key");
    let pw = pki.write("pass", "txt", &format!("{pass}\n"));
    (key, pw)
}

fn keystore(pki: &Pki, creds: &Creds, pass: &str, path: Option<&Path>) -> PathBuf {
    let mut ca = openssl::stack::Stack::new().expect("stack");
    ca.push(pki.ca().cert.clone()).expect("push");
    let der = openssl::pkcs12::Pkcs12::builder()
        .name("agent")
        .pkey(&creds.issued.key)
        .cert(&creds.issued.cert)
        .ca(ca)
        .build2(pass)
        .expect("PKCS#12")
        .to_der()
        .expect("DER");
    let p = path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| pki.unique_path("ks", "p12"));
    std::fs::write(&p, der).expect("write p12");
    p
}

fn gateway_toml(keys: &str, backend: &Backend) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\n{keys}\nclient_ca = \"ca.crt\"\nlog_format = \"json\"\n{}",
        backend_toml("echo", backend.addr, "\"any\"")
    )
}

fn agent_toml(pki: &Pki, gw: &Gateway, keys: &str) -> String {
    format!(
        "server = \"{}\"\nserver_name = \"{}\"\n{keys}\nca = {}\nlog_format = \"json\"\n\n[[tunnel]]\nlisten = \"127.0.0.1:0\"\nbackend = \"echo\"\n",
        gw.addr,
        pki::SERVER_NAME,
        toml_str(&pki.ca_crt)
    )
}

fn start_agent(config: &Path) -> (Proc, std::net::SocketAddr) {
    start_agent_command(command(&bins::client()), config)
}

/// `start_agent` with a prepared command (e.g. carrying a token's SOFTHSM2_CONF).
fn start_agent_command(mut cmd: Command, config: &Path) -> (Proc, std::net::SocketAddr) {
    cmd.arg("--config").arg(config);
    let p = Proc::spawn("tunnel-client", cmd);
    let ev = p.wait_for_message("tunnel listening", READY);
    let addr = field(&ev, "listen").parse().expect("listen addr");
    (p, addr)
}

/// Bytes through the agent; returns the subject the gateway's audit event names.
fn echo_subject(gw: &Gateway, addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect agent");
    let (got, err) = round_trip(&mut s, b"key format bytes");
    assert_eq!(got, b"key format bytes", "{err:?}");
    drop(s);
    let ev = gw
        .proc
        .wait_for_audit(PROMPT, |e| field(e, "result") == "ok");
    field(&ev, "subject").to_string()
}

/// Exit code and output of `tunnel-server check` / a client start on `config`.
fn refused(bin: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = command(bin);
    cmd.args(args);
    let out = process::run_to_end(cmd, READY);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn encrypted_pem_and_pkcs12_on_both_agents_with_reload() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (gw_key, gw_pw) = encrypted_key(&pki, &pki.server, "gateway pass");
    let wrong = pki.write("wrong", "txt", "not it\n");
    let gw_keys = |pw: &Path| {
        format!(
            "cert = \"server.crt\"\nkey = {}\nkey_password_file = {}",
            toml_str(&gw_key),
            toml_str(pw)
        )
    };
    // Refusal first: the wrong password is a config error naming the password file.
    let bad = pki.write(
        "server-bad",
        "toml",
        &gateway_toml(&gw_keys(&wrong), &backend),
    );
    let (code, err) = refused(
        &bins::server(),
        &["check", "--config", bad.to_str().unwrap()],
    );
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("key_password_file") && err.contains(&wrong.display().to_string()),
        "{err}"
    );

    let gw_cfg = pki.write("server", "toml", &gateway_toml(&gw_keys(&gw_pw), &backend));
    let gw = Gateway::start_file(&gw_cfg);

    // The agent: a PKCS#12 keystore; a wrong password refuses the start.
    let alice = pki.client("alice");
    let ks = keystore(&pki, &alice, "p12 pass", None);
    let ks_pw = pki.write("kspass", "txt", "p12 pass");
    let agent_keys = |pw: &Path| {
        format!(
            "keystore = {}\nkeystore_password_file = {}",
            toml_str(&ks),
            toml_str(pw)
        )
    };
    let bad = pki.write(
        "client-bad",
        "toml",
        &agent_toml(&pki, &gw, &agent_keys(&wrong)),
    );
    let (code, err) = refused(&bins::client(), &["--config", bad.to_str().unwrap()]);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("keystore_password_file") && err.contains(&ks.display().to_string()),
        "{err}"
    );

    let cfg = pki.write(
        "client",
        "toml",
        &agent_toml(&pki, &gw, &agent_keys(&ks_pw)),
    );
    let (agent, addr) = start_agent(&cfg);
    assert!(echo_subject(&gw, addr).contains("CN=alice"));

    // Reload reads the keystore again: a new identity in the same file.
    let alice2 = pki.client("alice2");
    keystore(&pki, &alice2, "p12 pass", Some(&ks));
    let before = count(&agent, "configuration reloaded");
    agent.signal(Signal::SIGHUP);
    agent.wait_until("agent reload", PROMPT, |evs| {
        (evs.iter()
            .filter(|e| field(e, "message") == "configuration reloaded")
            .count()
            > before)
            .then_some(())
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    let (got, _) = round_trip(&mut s, b"again");
    assert_eq!(got, b"again");
    let ev = gw
        .proc
        .wait_for_audit(PROMPT, |e| field(e, "subject").contains("CN=alice2"));
    assert_eq!(field(&ev, "result"), "ok", "{ev}");
}

fn count(p: &Proc, msg: &str) -> usize {
    p.events()
        .iter()
        .filter(|e| field(e, "message") == msg)
        .count()
}

#[test]
fn pkcs12_gateway_and_encrypted_pem_agent() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let ks = keystore(&pki, &pki.server, "gw", None);
    let pw = pki.write("gwpass", "txt", "gw\n");
    let gw_cfg = pki.write(
        "server",
        "toml",
        &gateway_toml(
            &format!(
                "keystore = {}\nkeystore_password_file = {}",
                toml_str(&ks),
                toml_str(&pw)
            ),
            &backend,
        ),
    );
    let gw = Gateway::start_file(&gw_cfg);
    let bob = pki.client("bob");
    let (key, kpw) = encrypted_key(&pki, &bob, "bob pass");
    let cfg = pki.write(
        "client",
        "toml",
        &agent_toml(
            &pki,
            &gw,
            &format!(
                "cert = {}\nkey = {}\nkey_password_file = {}",
                toml_str(&bob.cert),
                toml_str(&key),
                toml_str(&kpw)
            ),
        ),
    );
    let (_agent, addr) = start_agent(&cfg);
    assert!(echo_subject(&gw, addr).contains("CN=bob"));
}

/// A SoftHSM2 token in the fixture's directory (SOFTHSM2_CONF points at it).
struct Token {
    conf: PathBuf,
    module: PathBuf,
    pin: String,
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run ({e}); install softhsm2"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Token {
    /// A token labelled `tunnel` whose user PIN is `pin`.
    fn new(pki: &Pki, pin: &str) -> Token {
        let listing = Command::new("dpkg")
            .args(["-L", "softhsm2-common", "libsofthsm2"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let module = listing
            .lines()
            .find(|l| l.ends_with("/libsofthsm2.so"))
            .map(PathBuf::from)
            .expect("the SoftHSM2 module libsofthsm2.so is not installed: apt-get install softhsm2 (scripts/test does)");
        let engine = Command::new("dpkg")
            .args(["-s", "libengine-pkcs11-openssl"])
            .output();
        assert!(
            engine.map(|o| o.status.success()).unwrap_or(false),
            "the libp11 OpenSSL engine is missing: apt-get install libengine-pkcs11-openssl (scripts/test does)"
        );
        let dir = pki.dir().join("tokens");
        std::fs::create_dir_all(&dir).expect("token dir");
        let conf = pki.write(
            "softhsm2",
            "conf",
            &format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.display()
            ),
        );
        run(
            Command::new("softhsm2-util")
                .env("SOFTHSM2_CONF", &conf)
                .args([
                    "--init-token",
                    "--free",
                    "--label",
                    "tunnel",
                    "--pin",
                    pin,
                    "--so-pin",
                    "123456",
                ]),
            "softhsm2-util --init-token",
        );
        Token {
            conf,
            module,
            pin: pin.to_string(),
        }
    }

    fn import(&self, pki: &Pki, creds: &Creds, label: &str, id: &str) {
        let p8 = pki.unique_path(label, "p8");
        std::fs::write(
            &p8,
            creds.issued.key.private_key_to_pem_pkcs8().expect("pkcs8"),
        )
        .expect("write");
        run(
            Command::new("softhsm2-util")
                .env("SOFTHSM2_CONF", &self.conf)
                .args([
                    "--import",
                    p8.to_str().unwrap(),
                    "--token",
                    "tunnel",
                    "--label",
                    label,
                    "--id",
                    id,
                    "--pin",
                    &self.pin,
                ]),
            "softhsm2-util --import",
        );
        std::fs::remove_file(&p8).expect("remove key file");
    }

    /// A command for BIN that finds this token: the variable is set per child, never with
    /// `std::env::set_var` in this multi-threaded test binary.
    fn command(&self, bin: &Path) -> Command {
        let mut cmd = command(bin);
        cmd.env("SOFTHSM2_CONF", &self.conf);
        cmd
    }

    fn keys(&self, pki: &Pki, cert: &Path, uri: &str, pin: &str) -> String {
        let pin = pki.write("pin", "txt", &format!("{pin}\n"));
        format!(
            "cert = {}\nkey = \"{uri}\"\nkey_password_file = {}\npkcs11_module = {}",
            toml_str(cert),
            toml_str(&pin),
            toml_str(&self.module)
        )
    }
}

#[cfg(not(feature = "vendored-openssl"))]
#[test]
fn pkcs11_keys_in_a_softhsm_token_on_both_agents() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let token = Token::new(&pki, "1234");
    token.import(&pki, &pki.server, "gateway", "01");
    let carol = pki.client("carol");
    token.import(&pki, &carol, "carol", "02");
    std::fs::remove_file(&pki.server.key).expect("the gateway key lives in the token only");
    std::fs::remove_file(&carol.key).expect("the agent key lives in the token only");

    // Refusals first: absent token, wrong PIN; both name the URI.
    for (uri, pin) in [
        ("pkcs11:token=absent;object=gateway;type=private", "1234"),
        ("pkcs11:token=tunnel;object=gateway;type=private", "9999"),
        ("pkcs11:token=tunnel;object=nosuchkey;type=private", "1234"),
    ] {
        let cfg = pki.write(
            "server-bad",
            "toml",
            &gateway_toml(&token.keys(&pki, &pki.server.cert, uri, pin), &backend),
        );
        let (code, err) = server_output(&token, &["check", "--config", cfg.to_str().unwrap()]);
        assert_eq!(code, Some(64), "{uri} pin {pin}: {err}");
        assert!(err.contains(uri) && err.contains("key:"), "{err}");
    }

    let gw_cfg = pki.write(
        "server",
        "toml",
        &gateway_toml(
            &token.keys(
                &pki,
                &pki.server.cert,
                "pkcs11:token=tunnel;object=gateway;type=private",
                "1234",
            ),
            &backend,
        ),
    );
    let gw = Gateway::start_command(token.command(&bins::server()), &gw_cfg);
    let cfg = pki.write(
        "client",
        "toml",
        &agent_toml(
            &pki,
            &gw,
            &token.keys(
                &pki,
                &carol.cert,
                "pkcs11:token=tunnel;object=carol;type=private",
                "1234",
            ),
        ),
    );
    let (agent, addr) = start_agent_command(token.command(&bins::client()), &cfg);
    assert!(echo_subject(&gw, addr).contains("CN=carol"));
    // Reload loads the key from the token again.
    let before = count(&gw.proc, "configuration reloaded");
    gw.signal(Signal::SIGHUP);
    gw.wait_until("gateway reload", PROMPT, |evs| {
        (evs.iter()
            .filter(|e| field(e, "message") == "configuration reloaded")
            .count()
            > before)
            .then_some(())
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    let (got, _) = round_trip(&mut s, b"after reload");
    assert_eq!(got, b"after reload");
    drop(agent);
}

/// `tunnel-server ARGS` with the token's SOFTHSM2_CONF: exit code and stdout + stderr.
fn server_output(token: &Token, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = token.command(&bins::server());
    cmd.args(args);
    let out = process::run_to_end(cmd, READY);
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// A PIN written in the key URI (`pin-value`) is a secret: when the key is not found, neither
/// `tunnel-server check` nor the gateway's start-up may print it (the libp11 engine prints
/// the URI it was given), in either place RFC 7512 allows it. The URI's PIN still works.
#[cfg(not(feature = "vendored-openssl"))]
#[test]
fn a_pin_in_the_pkcs11_uri_never_reaches_the_output() {
    const PIN: &str = "SECRET1234";
    let pki = Pki::new();
    let backend = Backend::echo();
    let token = Token::new(&pki, PIN);
    token.import(&pki, &pki.server, "gateway", "01");
    let keys = |uri: &str| {
        format!(
            "cert = \"server.crt\"\nkey = \"{uri}\"\npkcs11_module = {}",
            toml_str(&token.module)
        )
    };
    for uri in [
        "pkcs11:token=tunnel;object=nosuchkey;type=private;pin-value=SECRET1234",
        "pkcs11:token=tunnel;object=nosuchkey;type=private?pin-value=SECRET1234",
        "pkcs11:token=tunnel;object=nosuchkey;type=private?module-name=softhsm2&pin-value=SECRET1234",
    ] {
        let cfg = pki.write("server-bad", "toml", &gateway_toml(&keys(uri), &backend));
        let cfg = cfg.to_str().unwrap();
        for args in [&["check", "--config", cfg][..], &["--config", cfg][..]] {
            let (code, out) = server_output(&token, args);
            assert_eq!(code, Some(64), "{args:?} {uri}: {out}");
            assert!(out.contains("nosuchkey"), "names the URI: {out}");
            assert!(!out.contains(PIN), "{args:?} {uri} printed the PIN: {out}");
        }
    }
    // Positive control: the right object, the PIN only in the URI.
    let uri = "pkcs11:token=tunnel;object=gateway;type=private?pin-value=SECRET1234";
    let cfg = pki.write("server", "toml", &gateway_toml(&keys(uri), &backend));
    let (code, out) = server_output(&token, &["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains(PIN), "{out}");
    let gw = Gateway::start_command(token.command(&bins::server()), &cfg);
    let dave = pki.client("dave");
    let agent_keys = format!(
        "cert = {}\nkey = {}",
        toml_str(&dave.cert),
        toml_str(&dave.key)
    );
    let (_agent, addr) =
        start_agent(&pki.write("client", "toml", &agent_toml(&pki, &gw, &agent_keys)));
    assert!(echo_subject(&gw, addr).contains("CN=dave"));
    assert!(!gw.log_text().contains(PIN));
}
