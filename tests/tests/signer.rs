//! The signer against a real OpenID Provider (oidc-provider): tokens come from the
//! provider's real login and consent pages, then are used as they are or tampered with.
//! Every refusal is checked by its HTTP status, its `error` code and its audit event, and
//! followed by a positive control proving the signer still issues.

use openssl::x509::X509;
use serde_json::Value;
use std::path::PathBuf;
use tunnel_core::signin::oidc::b64url;
use tunnel_core::util::time::{asn1_to_unix, unix_now};
use tunnel_tests::oidc::{csr_signed_by, key_and_csr, replay_key_of, Provider, SignerProc};
use tunnel_tests::pki::toml_str;
use tunnel_tests::process::field;
use tunnel_tests::{run_server, Pki, PROMPT};

struct Fixture {
    _pki: Pki,
    provider: Provider,
    signer: SignerProc,
}

fn fixture(extra: &str) -> Fixture {
    let pki = Pki::new();
    let provider = Provider::start(pki.dir());
    let signer = SignerProc::start(&pki, &provider, "127.0.0.1:1", extra);
    Fixture {
        _pki: pki,
        provider,
        signer,
    }
}

impl Fixture {
    /// A fresh key, CSR and a token of `account` bound to it.
    fn token(&self, account: &str) -> (String, String) {
        let (_, csr, nonce) = key_and_csr();
        (csr, self.provider.token(account, "tunnel", &nonce))
    }

    fn post(&self, csr: &str, token: &str, lifetime: Option<&str>) -> (u16, Value) {
        self.signer.request(csr, token, lifetime)
    }

    /// Asserts a refusal with `status`/`code` and its audit line, then that alice still
    /// gets a certificate.
    fn assert_refused(&self, (status, body): (u16, Value), want_status: u16, code: &str) {
        assert_eq!(
            (status, body["error"].as_str().unwrap_or("")),
            (want_status, code),
            "{body}"
        );
        let ev = self.signer.refusal(code);
        assert_eq!(field(&ev, "message"), "certificate refused");
        self.assert_issues("alice");
    }

    /// Stops the signer with SIGTERM, waits for it to exit, and starts a new one on the same
    /// user CA (so the same default `state_dir`) with `extra`.
    fn restart(&mut self, extra: &str) {
        self.signer.proc.terminate();
        let status = self
            .signer
            .proc
            .wait_exit(std::time::Duration::from_secs(20));
        assert!(
            status.success(),
            "the signer exits 0 on SIGTERM: {status:?}"
        );
        let users = self.signer.users_dir.clone();
        self.signer = SignerProc::start_in(&self._pki, &self.provider, "127.0.0.1:1", extra, users);
    }

    fn assert_issues(&self, account: &str) -> X509 {
        let (csr, token) = self.token(account);
        let (status, body) = self.post(&csr, &token, None);
        assert_eq!(status, 200, "positive control: {body}");
        X509::from_pem(
            body["certificate"]
                .as_str()
                .expect("certificate")
                .as_bytes(),
        )
        .expect("PEM")
    }
}

fn tamper_payload(token: &str, f: impl Fn(&mut Value)) -> String {
    let p: Vec<&str> = token.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&tunnel_core::signin::oidc::b64url_decode(p[1]).expect("b64"))
            .expect("json");
    f(&mut claims);
    format!(
        "{}.{}.{}",
        p[0],
        b64url(claims.to_string().as_bytes()),
        p[2]
    )
}

#[test]
fn issues_a_certificate_with_names_from_the_token_and_records_it() {
    let fx = fixture("");
    let cert = fx.assert_issues("alice");
    let subject = tunnel_core::authz::identity::one_line_name(cert.subject_name());
    assert_eq!(
        subject, "CN=alice@example.com,OU=dba",
        "the unmapped group is dropped"
    );
    let id = tunnel_core::authz::identity::Identity::from_cert(&cert);
    let sans = id.sans();
    assert!(sans.contains("alice@example.com"), "{sans}");
    assert!(
        sans.contains(&format!("{}#alice", fx.provider.issuer)),
        "{sans}"
    );
    let users_ca = X509::from_pem(&std::fs::read(&fx.signer.users_ca).unwrap()).unwrap();
    assert!(
        cert.verify(&users_ca.public_key().unwrap()).unwrap(),
        "signed by the user CA"
    );
    let now = unix_now();
    let nb = asn1_to_unix(cert.not_before()).unwrap();
    let na = asn1_to_unix(cert.not_after()).unwrap();
    assert!(
        (now - 330..=now - 290).contains(&nb),
        "backdated 5 minutes: {nb} vs {now}"
    );
    assert!(
        (na - now - 8 * 3600).abs() < 60,
        "default lifetime 8h: {}",
        na - now
    );
    let ev = fx
        .signer
        .proc
        .wait_for_audit(PROMPT, |e| field(e, "result") == "issued");
    assert_eq!(field(&ev, "email"), "alice@example.com");
    assert_eq!(field(&ev, "groups"), "dba");
    // The certificate's own serial (read by OpenSSL, upper-case hex as `openssl x509
    // -serial` prints it) is the one the audit names and the one the store records, once.
    let serial = cert
        .serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string();
    assert!(!serial.is_empty());
    assert_eq!(
        field(&ev, "serial"),
        serial,
        "the audit names the certificate"
    );
    let recorded = fx.signer.recorded();
    let entries: Vec<&Value> = recorded
        .iter()
        .filter(|e| e["serial"].as_str() == Some(serial.as_str()))
        .collect();
    assert_eq!(entries.len(), 1, "one record for {serial}: {recorded:?}");
    let e = entries[0];
    assert_eq!(e["email"], "alice@example.com");
    assert_eq!(e["sub"], "alice");
    assert_eq!(e["groups"], serde_json::json!(["dba"]));
    assert_eq!(e["not_after"].as_i64(), Some(na));
    assert_eq!(e["revoked_at"], Value::Null);
    // The key's fingerprint, computed here from the certificate.
    let spki = cert.public_key().unwrap().public_key_to_der().unwrap();
    let fp: String = openssl::sha::sha256(&spki)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(e["key_sha256"].as_str(), Some(fp.as_str()));
}

#[test]
fn refuses_a_token_for_another_client() {
    let fx = fixture("");
    let (_, csr, nonce) = key_and_csr();
    let token = fx.provider.token("alice", "other", &nonce);
    fx.assert_refused(fx.post(&csr, &token, None), 401, "wrong_audience");
}

#[test]
fn refuses_a_tampered_signature_or_payload() {
    let fx = fixture("");
    let (csr, token) = fx.token("alice");
    let (head, sig) = token.rsplit_once('.').unwrap();
    let mut raw = tunnel_core::signin::oidc::b64url_decode(sig).unwrap();
    raw[10] ^= 1;
    let flipped = format!("{head}.{}", b64url(&raw));
    fx.assert_refused(fx.post(&csr, &flipped, None), 401, "bad_signature");
    // bob's real token, with the group changed to dba.
    let (csr, token) = fx.token("bob");
    let forged = tamper_payload(&token, |c| c["groups"] = serde_json::json!(["dba"]));
    fx.assert_refused(fx.post(&csr, &forged, None), 401, "bad_signature");
}

#[test]
fn refuses_alg_none() {
    let fx = fixture("");
    let (csr, token) = fx.token("alice");
    let payload = token.split('.').nth(1).unwrap();
    let none = format!("{}.{payload}.", b64url(br#"{"alg":"none"}"#));
    fx.assert_refused(fx.post(&csr, &none, None), 401, "bad_signature");
    let hs = format!(
        "{}.{payload}.{}",
        b64url(br#"{"alg":"HS256"}"#),
        b64url(b"x")
    );
    fx.assert_refused(fx.post(&csr, &hs, None), 401, "bad_signature");
}

#[test]
fn refuses_a_replayed_token() {
    let fx = fixture("");
    let (csr, token) = fx.token("alice");
    assert_eq!(fx.post(&csr, &token, None).0, 200);
    fx.assert_refused(fx.post(&csr, &token, None), 401, "token_replayed");
}

#[test]
fn refuses_a_token_bound_to_another_key() {
    let fx = fixture("");
    let (_, token) = fx.token("alice");
    let (_, other_csr, _) = key_and_csr();
    fx.assert_refused(fx.post(&other_csr, &token, None), 401, "nonce_mismatch");
}

/// An email that is not a plain address never reaches a certificate, verified or not (the
/// `nul` account is unverified, accepted by `require_email_verified = false`).
#[test]
fn refuses_an_email_that_is_not_a_plain_address() {
    let fx = fixture("require_email_verified = false");
    for account in ["eve", "nul"] {
        let (csr, token) = fx.token(account);
        let (status, body) = fx.post(&csr, &token, None);
        let cert = body["certificate"].as_str().unwrap_or("");
        assert!(cert.is_empty(), "{account}: issued {body}");
        fx.assert_refused((status, body), 403, "bad_email");
    }
    let refusals = |evs: &[Value]| {
        evs.iter()
            .filter(|e| field(e, "result") == "refused" && field(e, "reason") == "bad_email")
            .count()
    };
    fx.signer
        .proc
        .wait_until("one bad_email event per account", PROMPT, |evs| {
            (refusals(evs) == 2).then_some(())
        });
    // The unverified but plain carol passes with this setting (the setting is in force).
    fx.assert_issues("carol");
}

#[test]
fn refuses_an_email_domain_not_allowed() {
    let fx = fixture("");
    let (csr, token) = fx.token("mallory");
    fx.assert_refused(fx.post(&csr, &token, None), 403, "email_domain");
}

#[test]
fn refuses_an_unverified_email() {
    let fx = fixture("");
    let (csr, token) = fx.token("carol");
    fx.assert_refused(fx.post(&csr, &token, None), 403, "email_unverified");
}

#[test]
fn refuses_a_person_without_a_required_group() {
    let fx = fixture("");
    let (csr, token) = fx.token("dave");
    fx.assert_refused(fx.post(&csr, &token, None), 403, "missing_group");
}

#[test]
fn refuses_an_expired_token() {
    // erin's tokens live 1 s; no clock skew allowance here.
    let fx = fixture("clock_skew = \"0s\"");
    let (csr, token) = fx.token("erin");
    let exp = tunnel_core::signin::oidc::jws::Jws::parse(&token)
        .unwrap()
        .payload["exp"]
        .as_i64()
        .unwrap();
    while unix_now() <= exp {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    fx.assert_refused(fx.post(&csr, &token, None), 401, "token_expired");
}

#[test]
fn clamps_a_lifetime_above_the_maximum() {
    let fx = fixture("max_lifetime = \"12h\"");
    // Just above the maximum, and far beyond what i64 seconds hold (as text and as a number).
    let requests = [
        Value::from("100h"),
        Value::from("500000000000y"),
        Value::from(u64::MAX),
    ];
    for lifetime in requests {
        let (csr, token) = fx.token("bob");
        let (status, body) = fx
            .signer
            .request_with_lifetime(&csr, &token, lifetime.clone());
        assert_eq!(status, 200, "lifetime {lifetime}: {body}");
        assert_eq!(body["lifetime_clamped"], Value::Bool(true), "{lifetime}");
        let cert = X509::from_pem(body["certificate"].as_str().unwrap().as_bytes()).unwrap();
        let left = asn1_to_unix(cert.not_after()).unwrap() - unix_now();
        assert!(
            (12 * 3600 - 60..=12 * 3600).contains(&left),
            "lifetime {lifetime} clamped to 12h: {left}"
        );
        let ev = fx
            .signer
            .proc
            .wait_for_audit(PROMPT, |e| field(e, "result") == "issued");
        assert_eq!(ev["clamped"], Value::Bool(true), "{ev}");
    }
    // Not positive: refused, and the signer still issues.
    let (csr, token) = fx.token("bob");
    let zero = fx
        .signer
        .request_with_lifetime(&csr, &token, Value::from(0));
    fx.assert_refused(zero, 400, "bad_request");
}

#[test]
fn refuses_a_csr_with_a_bad_signature() {
    let fx = fixture("");
    let (key, _, nonce) = key_and_csr();
    let token = fx.provider.token("alice", "tunnel", &nonce);
    let other = tunnel_core::pki::new_key(tunnel_core::pki::KeyType::EcP256).unwrap();
    let bad = csr_signed_by(&key, &other);
    fx.assert_refused(fx.post(&bad, &token, None), 400, "bad_csr");
}

#[test]
fn a_broken_signer_config_exits_64_naming_the_key() {
    let pki = Pki::new();
    let path = pki.write(
        "signer",
        "toml",
        "listen = \"127.0.0.1:0\"\nissuer = \"https://idp.example.com\"\nclient_id = \"t\"\ngateway = \"gw:1\"\n",
    );
    let out = tunnel_tests::run_server(&["signer", "--config", path.to_str().unwrap()], PROMPT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    let want = format!("{}: allowed_email_domains: must list", path.display());
    assert!(err.contains(&want), "{err}");
}

/// `token` with segment `i` (0 header, 1 payload, 2 signature) replaced by `f(segment)`.
fn respell(token: &str, i: usize, f: impl Fn(&str) -> String) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[i] = f(&parts[i]);
    parts.join(".")
}

/// A segment with the last character's unused low bits set (a second spelling of the same
/// bytes for decoders that ignore them), when its length leaves such bits.
fn with_trailing_bits(seg: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let unused = match seg.len() % 4 {
        2 => 0b1111,
        3 => 0b11,
        _ => return None,
    };
    let last = *seg.as_bytes().last()?;
    let v = ALPHABET.iter().position(|c| *c == last)? | unused;
    Some(format!("{}{}", &seg[..seg.len() - 1], ALPHABET[v] as char))
}

/// Every spelling of a used token that decodes to the same header, payload and signature
/// (or the same signature number) is refused, with a key the token was never bound to:
/// `require_nonce = false` is the device-flow setup, where a token without a nonce is not
/// bound to any key and its single use is all that stands between a leaked token and a
/// certificate for anyone's key.
#[test]
fn refuses_re_spellings_of_a_used_token() {
    let fx = fixture("require_nonce = false");
    let token = fx.provider.token("alice", "tunnel", "");
    let claims = tunnel_core::signin::oidc::jws::Jws::parse(&token)
        .unwrap()
        .payload;
    assert!(
        claims.get("nonce").is_none(),
        "a token without a nonce: {claims}"
    );
    let (_, csr, _) = key_and_csr();
    let (status, body) = fx.post(&csr, &token, None);
    assert_eq!(status, 200, "first use: {body}");
    let mut spellings = Vec::new();
    for i in 0..3 {
        for pad in ["=", "==", "===="] {
            spellings.push((
                format!("segment {i} + {pad:?}"),
                respell(&token, i, |s| format!("{s}{pad}")),
            ));
        }
        spellings.push((
            format!("segment {i} in the standard alphabet"),
            respell(&token, i, |s| s.replace('-', "+").replace('_', "/")),
        ));
        if let Some(t) = with_trailing_bits(token.split('.').nth(i).unwrap()) {
            spellings.push((
                format!("segment {i} with trailing bits"),
                respell(&token, i, |_| t.clone()),
            ));
        }
    }
    // The signature number with a leading zero byte (RS256: one byte longer than the modulus).
    spellings.push((
        "signature with a leading zero byte".into(),
        respell(&token, 2, |s| {
            let mut raw = vec![0u8];
            raw.extend(tunnel_core::signin::oidc::b64url_decode(s).unwrap());
            b64url(&raw)
        }),
    ));
    let mut accepted = Vec::new();
    for (what, spelled) in &spellings {
        if spelled == &token {
            continue; // e.g. the standard alphabet of a segment without '-' or '_'
        }
        let (_, other, _) = key_and_csr();
        let (status, body) = fx.post(&other, spelled, None);
        let got = (status, body["error"].as_str().unwrap_or("").to_string());
        if got != (401, "bad_signature".to_string()) {
            accepted.push(format!("{what}: {got:?}"));
        }
    }
    assert!(
        accepted.is_empty(),
        "not refused as bad_signature: {accepted:#?}"
    );
    let ev = fx.signer.refusal("bad_signature");
    assert_eq!(field(&ev, "message"), "certificate refused");
    // The original spelling is still refused as used, and the signer still issues.
    let (_, other, _) = key_and_csr();
    fx.assert_refused(fx.post(&other, &token, None), 401, "token_replayed");
}

/// A used token stays used, and its certificate recorded, after the signer restarts within
/// the token's lifetime; a fresh token still issues.
#[test]
fn a_used_token_stays_used_across_a_restart() {
    let mut fx = fixture("require_nonce = false");
    let token = fx.provider.token("alice", "tunnel", "");
    let (_, csr, _) = key_and_csr();
    let (status, body) = fx.post(&csr, &token, None);
    assert_eq!(status, 200, "{body}");
    let serial = body["serial"].as_str().unwrap().to_string();
    fx.restart("require_nonce = false");
    // The record is kept too (the store is SQLite in the default state_dir).
    let records = fx.signer.recorded();
    assert!(
        records
            .iter()
            .any(|e| e["serial"].as_str() == Some(serial.as_str())),
        "{records:?}"
    );
    let (_, other, _) = key_and_csr();
    fx.assert_refused(fx.post(&other, &token, None), 401, "token_replayed");
    // Restarted twice: the record survives a second load (and its compaction) too.
    fx.restart("require_nonce = false");
    let (_, other, _) = key_and_csr();
    fx.assert_refused(fx.post(&other, &token, None), 401, "token_replayed");
}

/// A private state directory in `pki`'s.
fn state_dir(pki: &Pki, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let state = pki.dir().join(name);
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    state
}

/// `state_dir` holds the default store (`signer.db`, mode 0600): a signer on another user CA
/// with the same `state_dir`, running at the same time, refuses a token used at the first.
#[test]
fn state_dir_holds_the_store_shared_by_signers_on_it() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let provider = Provider::start(pki.dir());
    let state = state_dir(&pki, "signer-state");
    let extra = format!("require_nonce = false\nstate_dir = {}", toml_str(&state));
    let first = SignerProc::start(&pki, &provider, "127.0.0.1:1", &extra);
    let token = provider.token("alice", "tunnel", "");
    let (_, csr, _) = key_and_csr();
    assert_eq!(first.request(&csr, &token, None).0, 200);
    let db = state.join("signer.db");
    let meta = std::fs::metadata(&db).expect("the store is in state_dir");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(
        !first.users_dir.join("signer.db").exists(),
        "not in the user CA's directory"
    );
    let second = SignerProc::start(&pki, &provider, "127.0.0.1:1", &extra);
    let (_, other, _) = key_and_csr();
    let (status, body) = second.request(&other, &token, None);
    assert_eq!(
        (status, body["error"].as_str().unwrap_or("")),
        (401, "token_replayed"),
        "{body}"
    );
    second.refusal("token_replayed");
    let (_, csr, nonce) = key_and_csr();
    let fresh = provider.token("bob", "tunnel", &nonce);
    assert_eq!(
        second.request(&csr, &fresh, None).0,
        200,
        "positive control"
    );
}

/// A signer upgraded from the `replay.log` record and the pki index: at its first start the
/// used tokens listed in replay.log are imported into the store and stay refused (across a
/// later restart too, the file being renamed `replay.log.imported`), and the user CA's
/// issuances and revocations are imported once; a damaged record stops the start (exit 64, naming
/// `state_dir`) instead of forgetting used tokens.
#[test]
fn tokens_used_before_the_store_stay_refused() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let provider = Provider::start(pki.dir());
    let state = state_dir(&pki, "old-state");
    let token = provider.token("alice", "tunnel", "");
    let record = state.join("replay.log");
    let forget = unix_now() + 600;
    std::fs::write(&record, format!("{} {forget}\n", replay_key_of(&token))).unwrap();
    std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o600)).unwrap();
    let extra = format!("require_nonce = false\nstate_dir = {}", toml_str(&state));
    let users = SignerProc::new_user_ca(&pki);
    // A certificate the signer issued before the store (into the pki index), then revoked.
    let dir = users.to_str().unwrap();
    let issue = [
        "pki",
        "issue",
        "--dir",
        dir,
        "--client",
        "carol@example.com",
    ];
    let out = run_server(&issue, PROMPT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let old = X509::from_pem(&std::fs::read(users.join("carol@example.com.crt")).unwrap()).unwrap();
    let old_serial = old
        .serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string();
    let revoke = [
        "pki",
        "revoke",
        "--dir",
        dir,
        "--serial",
        old_serial.as_str(),
    ];
    let out = run_server(&revoke, PROMPT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut signer = SignerProc::start_in(&pki, &provider, "127.0.0.1:1", &extra, users.clone());
    for round in 0..2 {
        let (_, csr, _) = key_and_csr();
        let (status, body) = signer.request(&csr, &token, None);
        assert_eq!(
            (status, body["error"].as_str().unwrap_or("")),
            (401, "token_replayed"),
            "round {round}: {body}"
        );
        signer.refusal("token_replayed");
        let (_, csr, nonce) = key_and_csr();
        let fresh = provider.token("bob", "tunnel", &nonce);
        assert_eq!(
            signer.request(&csr, &fresh, None).0,
            200,
            "positive control"
        );
        assert!(!record.exists() && state.join("replay.log.imported").exists());
        // The user CA's JSON pki index was imported once, with its revocation.
        let imported: Vec<Value> = signer
            .recorded()
            .into_iter()
            .filter(|e| e["issued_by"].as_str().unwrap_or("").starts_with("import:"))
            .collect();
        assert_eq!(imported.len(), 1, "{imported:?}");
        assert_eq!(imported[0]["serial"].as_str(), Some(old_serial.as_str()));
        assert_eq!(imported[0]["email"], "carol@example.com");
        assert!(imported[0]["revoked_at"].is_i64(), "{imported:?}");
        if round == 0 {
            signer.proc.terminate();
            signer.proc.wait_exit(std::time::Duration::from_secs(20));
            signer = SignerProc::start_in(&pki, &provider, "127.0.0.1:1", &extra, users.clone());
        }
    }

    let damaged = state_dir(&pki, "damaged-state");
    let record = damaged.join("replay.log");
    let text = format!("{} {forget}\nnot a record\n", replay_key_of(&token));
    std::fs::write(&record, &text).unwrap();
    let extra = format!("require_nonce = false\nstate_dir = {}", toml_str(&damaged));
    let users = SignerProc::new_user_ca(&pki);
    let config = SignerProc::write_config(&pki, &provider, "127.0.0.1:1", &extra, &users);
    let out = run_server(&["signer", "--config", config.to_str().unwrap()], PROMPT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    let key = format!("{}: state_dir: ", config.display());
    assert!(
        err.contains(&key) && err.contains("replay.log: line 2 ") && err.contains("damaged"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&record).unwrap(),
        text,
        "left as it was"
    );
}

#[path = "signer/hardening.rs"]
mod hardening;

/// The signer reloads like the gateway (issue 21 item 5): SIGHUP applies a changed
/// signer.toml, keeps the record of used tokens, and a broken file is refused while the
/// configuration in force keeps serving.
#[test]
fn sighup_reloads_the_configuration_and_a_broken_one_keeps_the_old() {
    use nix::sys::signal::Signal;
    let fx = fixture("");
    let login_config = || {
        let get = b"GET /v1/login-config HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        let (status, text) = fx.signer.raw(get);
        assert_eq!(status, 200, "{text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        serde_json::from_str::<Value>(&body).expect("JSON")
    };
    assert_eq!(login_config()["max_lifetime"], 12 * 3600);
    let (csr, used) = fx.token("alice");
    assert_eq!(fx.post(&csr, &used, None).0, 200);

    let lifetimes = "default_lifetime = \"1h\"\nmax_lifetime = \"2h\"\n";
    let fresh = SignerProc::write_config(
        &fx._pki,
        &fx.provider,
        "127.0.0.1:1",
        lifetimes,
        &fx.signer.users_dir,
    );
    std::fs::copy(&fresh, &fx.signer.config).expect("rewrite signer.toml");
    fx.signer.proc.signal(Signal::SIGHUP);
    fx.signer
        .proc
        .wait_for_message("signer configuration reloaded", PROMPT);
    assert_eq!(
        login_config()["max_lifetime"],
        2 * 3600,
        "the new file is in force"
    );
    assert_eq!(
        fx.post(&csr, &used, None).1["error"],
        "token_replayed",
        "the record survives"
    );

    std::fs::write(&fx.signer.config, "listen = [broken").expect("break signer.toml");
    fx.signer.proc.signal(Signal::SIGHUP);
    let ev = fx.signer.proc.wait_for("the refused reload", PROMPT, |e| {
        field(e, "message").starts_with("reload refused")
    });
    let name = fx.signer.config.to_string_lossy().into_owned();
    assert!(
        field(&ev, "error").starts_with(&name),
        "names the file: {ev}"
    );
    assert_eq!(
        login_config()["max_lifetime"],
        2 * 3600,
        "the last good one serves"
    );
    fx.assert_issues("alice");
}

/// The provider over HTTPS with a private CA: discovery and the JWK Set are fetched over TLS,
/// trusted through `issuer_ca` only. The same request to a signer without it is refused
/// (the system trust store does not know the test CA) and nothing is issued.
#[test]
fn a_provider_over_https_is_trusted_through_issuer_ca_and_only_through_it() {
    let pki = Pki::new();
    let provider = Provider::start_tls(&pki);
    assert!(
        provider.issuer.starts_with("https://"),
        "{}",
        provider.issuer
    );
    let issuer_ca = format!("issuer_ca = {}\n", toml_str(&pki.ca_crt));
    let trusting = SignerProc::start(&pki, &provider, "127.0.0.1:1", &issuer_ca);
    let (_, csr, nonce) = key_and_csr();
    let token = provider.token("alice", "tunnel", &nonce);
    let (status, body) = trusting.request(&csr, &token, None);
    assert_eq!(status, 200, "{body}");
    let cert = X509::from_pem(body["certificate"].as_str().unwrap().as_bytes()).unwrap();
    let users_ca = X509::from_pem(&std::fs::read(&trusting.users_ca).unwrap()).unwrap();
    assert!(cert.verify(&users_ca.public_key().unwrap()).unwrap());

    let untrusting = SignerProc::start(&pki, &provider, "127.0.0.1:1", "");
    let (_, csr, nonce) = key_and_csr();
    let token = provider.token("alice", "tunnel", &nonce);
    let (status, body) = untrusting.request(&csr, &token, None);
    assert_ne!(status, 200, "issued without trusting the provider: {body}");
    let ev = untrusting
        .proc
        .wait_for_audit(PROMPT, |e| field(e, "result") == "refused");
    assert!(
        field(&ev, "detail").contains("certificate verify failed"),
        "refused for the provider's untrusted certificate: {ev}"
    );
}
