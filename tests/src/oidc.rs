//! The sign-in fixtures: a real OpenID Provider (npm's `oidc-provider`, run by node from
//! `tests/oidc/`), a browser that drives its real login and consent pages over HTTP with a
//! cookie jar, direct code-flow token requests for the refusal tests, and the signer
//! (`tunnel-server signer`) with a user CA made at test time.

use crate::browser::{http_trusting, Browser};
use crate::http::parse_response;
use crate::pki::{toml_str, Pki};
use crate::process::{command, field, Proc};
use crate::{bins, READY};
use openssl::ssl::{SslConnector, SslMethod};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tunnel_core::http::{form, query_value};
use tunnel_core::signin::oidc::{pkce_challenge, random_token};

/// The provider's test accounts: alice (dba), bob (dev), carol (unverified email), mallory
/// (a domain not allowed), dave (no group), lena (dev, leads), erin (ID tokens that expire
/// after 1 s).
pub fn accounts() -> Value {
    let a = |email: &str, verified: bool, groups: &[&str]| json!({ "email": email, "email_verified": verified, "groups": groups });
    let mut erin = a("erin@example.com", true, &["dev"]);
    erin["id_token_ttl"] = json!(1);
    json!({
        "alice": a("alice@example.com", true, &["dba", "engineering"]),
        "bob": a("bob@example.com", true, &["dev"]),
        "carol": a("carol@example.com", false, &["dba"]),
        "mallory": a("mallory@evil.example", true, &["dba"]),
        "dave": a("dave@example.com", true, &[]),
        // An approver for just-in-time access (tests/access.rs).
        "lena": a("lena@example.com", true, &["dev", "leads"]),
        "erin": erin,
        // Emails a provider that lets users edit them could hand out, in an allowed domain:
        // as a certificate's CN/SAN a comma-splitting backend would see a fake URI SAN, and
        // a C-string reader `ceo@example.com`.
        "eve": a("x, URI:https://idp#admin, email:ceo@example.com@example.com", true, &["dba"]),
        "nul": a("ceo@example.com\u{0}@example.com", false, &["dba"]),
    })
}

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

/// A running oidc-provider on 127.0.0.1 (killed on drop).
pub struct Provider {
    child: Child,
    /// Its issuer URL (`http://127.0.0.1:PORT`, or `https://localhost:PORT` over TLS).
    pub issuer: String,
    /// The CA its HTTPS certificate chains to (over TLS only).
    pub ca: Option<PathBuf>,
}

impl Provider {
    /// Starts the provider with [`accounts`]; fails with what to install when node or the
    /// npm package is missing.
    pub fn start(dir: &Path) -> Provider {
        Provider::start_with(dir, None)
    }

    /// Starts the provider over HTTPS with `pki`'s server certificate (for `localhost`):
    /// the signer reaches it only by trusting `pki`'s CA (`issuer_ca`).
    pub fn start_tls(pki: &Pki) -> Provider {
        Provider::start_with(pki.dir(), Some(pki))
    }

    fn start_with(dir: &Path, tls: Option<&Pki>) -> Provider {
        let module = oidc_dir().join("node_modules").join("oidc-provider");
        assert!(
            module.is_dir(),
            "the OpenID Provider for the sign-in tests is not installed: install Node.js and npm \
             (apt-get install nodejs npm) and run `npm ci` in tests/oidc (scripts/test does both)"
        );
        let accounts_file = dir.join("accounts.json");
        std::fs::write(&accounts_file, accounts().to_string()).expect("write accounts");
        let mut node = Command::new("node");
        node.arg(oidc_dir().join("provider.mjs"))
            .arg(&accounts_file);
        if let Some(pki) = tls {
            node.arg(&pki.server.cert).arg(&pki.server.key);
        }
        let mut child = node
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node (apt-get install nodejs npm): {e}"));
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let issuer = rx
            .recv_timeout(READY)
            .expect("oidc-provider did not start listening");
        Provider {
            child,
            issuer,
            ca: tls.map(|p| p.ca_crt.clone()),
        }
    }

    /// An ID token for `account` and `client_id` with `nonce` (none when empty, like a
    /// device-flow token), by the code flow with PKCE through the provider's real login and
    /// consent pages.
    pub fn token(&self, account: &str, client_id: &str, nonce: &str) -> String {
        let redirect = "http://127.0.0.1:9/callback";
        let verifier = random_token(32);
        let challenge = pkce_challenge(&verifier);
        let mut params = vec![
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", redirect),
            ("scope", "openid email groups"),
            ("state", "s"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        if !nonce.is_empty() {
            params.push(("nonce", nonce));
        }
        let url = format!("{}/auth?{}", self.issuer, form(&params));
        let back = Browser::trusting(self.ca.clone()).sign_in(&url, account, redirect);
        let query = back.split_once('?').map(|(_, q)| q).unwrap_or("");
        let code = query_value(query, "code").unwrap_or_else(|| panic!("no code in {back}"));
        let body = form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("client_id", client_id),
            ("code_verifier", &verifier),
        ]);
        let (status, _, text) = http_trusting(
            self.ca.as_deref(),
            "POST",
            &format!("{}/token", self.issuer),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        );
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(status, 200, "token endpoint: {text}");
        v["id_token"].as_str().expect("id_token").to_string()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running signer with its user CA (in `DIR/users/`).
pub struct SignerProc {
    /// The process (JSON logs).
    pub proc: Proc,
    /// Its HTTPS address.
    pub addr: SocketAddr,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The user CA's certificate (for the gateway's client_ca).
    pub users_ca: PathBuf,
    /// The user CA's directory (and, by default, the signer's state_dir: signer.db).
    pub users_dir: PathBuf,
    /// Its configuration file (rewrite it and send SIGHUP to reload).
    pub config: PathBuf,
    /// Verifies the signer against `pki`'s CA; built once, as loading trust is slow.
    connector: SslConnector,
}

impl SignerProc {
    /// A new user CA (`tunnel-server pki init`) in a fresh directory of `pki`'s.
    pub fn new_user_ca(pki: &Pki) -> PathBuf {
        let users_dir = pki.dir().join(format!("users-{}", random_token(4)));
        let out = crate::process::run_server(
            &[
                "pki",
                "init",
                "--dir",
                users_dir.to_str().expect("utf8"),
                "--name",
                "Test User CA",
            ],
            READY,
        );
        assert!(
            out.status.success(),
            "pki init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        users_dir
    }

    /// Starts a signer with a new user CA; see [`SignerProc::start_in`].
    pub fn start(pki: &Pki, provider: &Provider, gateway: &str, extra: &str) -> SignerProc {
        SignerProc::start_in(pki, provider, gateway, extra, SignerProc::new_user_ca(pki))
    }

    /// Writes the config of a signer on the user CA in `users_dir`, whose HTTPS certificate
    /// is `pki`'s server certificate, for `provider`, handing out `gateway`; `extra` adds keys
    /// (TOML).
    pub fn write_config(
        pki: &Pki,
        provider: &Provider,
        gateway: &str,
        extra: &str,
        users_dir: &Path,
    ) -> PathBuf {
        let users_ca = users_dir.join("ca.crt");
        let log = if extra.contains("log_format = \"text\"") {
            ""
        } else {
            "log_format = \"json\"\n"
        };
        let toml = format!(
            "listen = \"127.0.0.1:0\"\ncert = {}\nkey = {}\nca_cert = {}\nca_key = {}\n\
             issuer = \"{}\"\nclient_id = \"tunnel\"\nscopes = [\"openid\", \"email\", \"groups\"]\n\
             allowed_email_domains = [\"example.com\"]\nrequired_groups = [\"dba\", \"dev\"]\n\
             gateway = \"{gateway}\"\ngateway_server_name = \"localhost\"\ngateway_ca = {}\n\
             {log}{extra}\n\
             [group_map]\ndba = \"dba\"\ndev = \"dev\"\nleads = \"leads\"\n",
            toml_str(&pki.server.cert),
            toml_str(&pki.server.key),
            toml_str(&users_ca),
            toml_str(&users_dir.join("ca.key")),
            provider.issuer,
            toml_str(&pki.ca_crt),
        );
        pki.write("signer", "toml", &toml)
    }

    /// Starts a signer with the config of [`SignerProc::write_config`].
    pub fn start_in(
        pki: &Pki,
        provider: &Provider,
        gateway: &str,
        extra: &str,
        users_dir: PathBuf,
    ) -> SignerProc {
        let users_ca = users_dir.join("ca.crt");
        let config = SignerProc::write_config(pki, provider, gateway, extra, &users_dir);
        let mut cmd = command(&bins::server());
        cmd.arg("signer").arg("--config").arg(&config);
        let proc = Proc::spawn("tunnel-server signer", cmd);
        let addr: SocketAddr = if extra.contains("log_format = \"text\"") {
            let line = proc.wait_for_line("signer listening", READY);
            let listen = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("listen="));
            listen
                .expect("listen= in the text log")
                .parse()
                .expect("listen")
        } else {
            let ev = proc.wait_for_message("signer listening", READY);
            field(&ev, "listen").parse().expect("listen")
        };
        let mut b = SslConnector::builder(SslMethod::tls_client()).expect("connector");
        b.set_ca_file(&pki.ca_crt).expect("CA");
        SignerProc {
            proc,
            addr,
            url: format!("https://127.0.0.1:{}", addr.port()),
            users_ca,
            users_dir,
            config,
            connector: b.build(),
        }
    }

    /// POSTs `/v1/certificates` over HTTPS (verifying the signer with the fixture's CA).
    pub fn request(&self, csr: &str, token: &str, lifetime: Option<&str>) -> (u16, Value) {
        self.request_with_lifetime(csr, token, json!(lifetime))
    }

    /// Like [`SignerProc::request`], with any JSON value as the requested `lifetime`.
    pub fn request_with_lifetime(&self, csr: &str, token: &str, lifetime: Value) -> (u16, Value) {
        let body = json!({ "csr": csr, "id_token": token, "lifetime": lifetime }).to_string();
        let tcp = TcpStream::connect(self.addr).expect("connect to the signer");
        let mut tls = self
            .connector
            .connect("localhost", tcp)
            .expect("TLS to the signer");
        let req = format!(
            "POST /v1/certificates HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(req.as_bytes()).expect("write");
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw);
        let resp = parse_response(&raw).expect("HTTP response");
        (
            resp.status,
            serde_json::from_slice(&resp.body).unwrap_or_default(),
        )
    }

    /// Like [`SignerProc::request`] through `addr` (a load balancer in front of signers);
    /// `None` when no complete HTTP answer came (the signer died mid-request).
    pub fn try_request_at(
        &self,
        addr: SocketAddr,
        csr: &str,
        token: &str,
        lifetime: Option<&str>,
    ) -> Option<(u16, Value)> {
        let body = json!({ "csr": csr, "id_token": token, "lifetime": lifetime }).to_string();
        let tcp = TcpStream::connect(addr).ok()?;
        tcp.set_read_timeout(Some(crate::IO_TIMEOUT)).ok()?;
        let mut tls = self.connector.connect("localhost", tcp).ok()?;
        let req = format!(
            "POST /v1/certificates HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(req.as_bytes()).ok()?;
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw);
        let resp = parse_response(&raw).ok()?;
        Some((
            resp.status,
            serde_json::from_slice(&resp.body).unwrap_or_default(),
        ))
    }

    /// Sends `raw` bytes over HTTPS and returns the status and the whole response as text
    /// (status 0 when the signer answered no status line). The status is read here, not by
    /// the product's HTTP code.
    pub fn raw(&self, raw: &[u8]) -> (u16, String) {
        let tcp = TcpStream::connect(self.addr).expect("connect to the signer");
        let mut tls = self
            .connector
            .connect("localhost", tcp)
            .expect("TLS to the signer");
        tls.write_all(raw).expect("write");
        let mut resp = Vec::new();
        let _ = tls.read_to_end(&mut resp);
        let text = String::from_utf8_lossy(&resp).into_owned();
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, text)
    }

    /// `tunnel-server signer ARGS --config CONFIG`: its exit code, stdout and stderr.
    pub fn command(&self, args: &[&str]) -> (i32, String, String) {
        let mut full = vec!["signer"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--config", self.config.to_str().expect("utf8")]);
        let out = crate::process::run_server(&full, READY);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Every certificate in the signer's store, expired or not (`signer list --all --json`).
    pub fn recorded(&self) -> Vec<Value> {
        let (code, out, err) = self.command(&["list", "--all", "--json"]);
        assert_eq!(code, 0, "signer list: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("signer list --json: {e}: {out}"))
    }

    /// Waits for the audit event of a refusal with `reason`.
    pub fn refusal(&self, reason: &str) -> Value {
        self.proc.wait_for_audit(crate::PROMPT, |e| {
            field(e, "result") == "refused" && field(e, "reason") == reason
        })
    }
}

/// The nonce that binds a token to `key`, computed here (not with the product's
/// `nonce_for_key`): base64url without padding of SHA-256 over the SubjectPublicKeyInfo.
pub fn nonce_of(key: &openssl::pkey::PKeyRef<openssl::pkey::Private>) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.public_key_to_der().expect("SPKI"));
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in digest.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The replay key of a token, computed here from its text (not with the product's code):
/// SHA-256 over the header's length (8 bytes, big endian), the header and the payload;
/// lower-case hex.
pub fn replay_key_of(token: &str) -> String {
    use sha2::Digest;
    let p: Vec<&str> = token.split('.').collect();
    let header = tunnel_core::signin::oidc::b64url_decode(p[0]).expect("header");
    let payload = tunnel_core::signin::oidc::b64url_decode(p[1]).expect("payload");
    let mut h = sha2::Sha256::new();
    h.update((header.len() as u64).to_be_bytes());
    h.update(&header);
    h.update(&payload);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A new P-256 key, its CSR (PEM) and the nonce that binds a token to it.
pub fn key_and_csr() -> (openssl::pkey::PKey<openssl::pkey::Private>, String, String) {
    let key = tunnel_core::pki::new_key(tunnel_core::pki::KeyType::EcP256).expect("key");
    let csr = csr_signed_by(&key, &key);
    let nonce = nonce_of(&key);
    (key, csr, nonce)
}

/// A CSR for `key`'s public key signed by `signer` (another key makes a bad CSR).
pub fn csr_signed_by(
    key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
    signer: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
) -> String {
    let mut b = openssl::x509::X509ReqBuilder::new().expect("req");
    b.set_pubkey(key).expect("pubkey");
    b.sign(signer, openssl::hash::MessageDigest::sha256())
        .expect("sign");
    String::from_utf8(b.build().to_pem().expect("PEM")).expect("utf8")
}

/// Runs `tunnel-client login --signer … --ca … ARGS` with `XDG_CONFIG_HOME=home`, signs in
/// as `account` in the [`Browser`] from the URL it prints (the code flow's authorization URL,
/// or with `--device` the verification URL), and returns its stdout once it exited 0.
pub fn login(pki: &Pki, signer: &SignerProc, home: &Path, account: &str, args: &[&str]) -> String {
    let (ok, out) = try_login(pki, signer, home, account, args);
    assert!(ok, "login failed: {out}");
    out
}

/// Like [`login`]; returns whether it exited 0, and its stdout and stderr.
pub fn try_login(
    pki: &Pki,
    signer: &SignerProc,
    home: &Path,
    account: &str,
    args: &[&str],
) -> (bool, String) {
    try_login_with(pki, signer, home, account, args, |_| {})
}

/// Like [`try_login`], running `meanwhile` with the sign-in URL before the browser opens it
/// (to probe the redirect listener while the login waits).
pub fn try_login_with(
    pki: &Pki,
    signer: &SignerProc,
    home: &Path,
    account: &str,
    args: &[&str],
    meanwhile: impl FnOnce(&str),
) -> (bool, String) {
    let ca = pki.ca_crt.to_string_lossy().into_owned();
    let mut full = vec!["--signer", &signer.url, "--ca", &ca];
    full.extend_from_slice(args);
    drive_login(home, account, &full, meanwhile)
}

/// Runs `tunnel-client login ARGS` (exactly those: e.g. none, to use the remembered signer)
/// with `XDG_CONFIG_HOME=home`, signs in as `account` from the URL it prints, and returns
/// whether it exited 0 with its stdout and stderr.
pub fn drive_login(
    home: &Path,
    account: &str,
    args: &[&str],
    meanwhile: impl FnOnce(&str),
) -> (bool, String) {
    let mut cmd = command(&bins::client());
    cmd.env("XDG_CONFIG_HOME", home)
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .arg("login")
        .args(args);
    let mut proc = Proc::spawn("tunnel-client login", cmd);
    let deadline = std::time::Instant::now() + READY;
    let url = loop {
        let out = String::from_utf8_lossy(&proc.stdout()).into_owned();
        let found = out
            .lines()
            .map(str::trim)
            .map(|l| l.strip_prefix("or open ").unwrap_or(l))
            .find(|l| l.starts_with("http") && (l.contains("/auth?") || l.contains("/device")));
        if let Some(u) = found {
            break u.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline && proc.running(),
            "login printed no sign-in URL: {out}\n{}",
            proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    meanwhile(&url);
    Browser::default().sign_in(&url, account, "");
    let status = proc.wait_exit(Duration::from_secs(60));
    let out = String::from_utf8_lossy(&proc.stdout()).into_owned();
    (status.success(), format!("{out}\n{}", proc.log_text()))
}

/// Starts the agent on the per-user config that login wrote in `home`, with one tunnel per
/// backend; returns it and the tunnels' local addresses.
pub fn agent(home: &Path, backends: &[&str]) -> (Proc, Vec<SocketAddr>) {
    let config: PathBuf = home.join("tunnel").join("client.toml");
    let mut text = std::fs::read_to_string(&config).expect("login wrote the per-user config");
    text += "log_format = \"json\"\n";
    for b in backends {
        text += &format!("\n[[tunnel]]\nlisten = \"127.0.0.1:0\"\nbackend = \"{b}\"\n");
    }
    std::fs::write(&config, text).expect("write config");
    let mut cmd = command(&bins::client());
    cmd.arg("--config").arg(&config);
    let proc = Proc::spawn("tunnel-client", cmd);
    let addrs = proc.wait_until("tunnel listening", READY, |evs| {
        let a: Vec<SocketAddr> = evs
            .iter()
            .filter(|e| field(e, "message") == "tunnel listening")
            .filter_map(|e| field(e, "listen").parse().ok())
            .collect();
        (a.len() >= backends.len()).then_some(a)
    });
    (proc, addrs)
}

/// Whether a line sent through the tunnel at `addr` comes back from an echo backend.
pub fn echoes(addr: SocketAddr) -> bool {
    let mut s = crate::backend::connect(addr);
    crate::backend::round_trip(&mut s, b"select 1;\n").0 == b"select 1;\n"
}

#[cfg(test)]
mod tests {
    /// The same known answer as the product's unit test (key with private scalar 1).
    #[test]
    fn the_harness_nonce_is_the_known_answer() {
        use openssl::bn::{BigNum, BigNumContext};
        use openssl::ec::{EcGroup, EcKey, EcPoint};
        use openssl::nid::Nid;
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let one = BigNum::from_u32(1).unwrap();
        let mut g = EcPoint::new(&group).unwrap();
        g.mul_generator2(&group, &one, &mut BigNumContext::new().unwrap())
            .unwrap();
        let key = EcKey::from_private_components(&group, &one, &g).unwrap();
        let key = openssl::pkey::PKey::from_ec_key(key).unwrap();
        assert_eq!(
            super::nonce_of(&key),
            "XNJS-wzokyQ2-vjM0QQJgbie5K1rn-niorfnGqyyfNM"
        );
    }
}
