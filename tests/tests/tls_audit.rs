//! TLS audit: testssl.sh (Debian package `testssl.sh`) scans a real gateway, in its default
//! mode (TLS 1.3 only) and with `tls_min_version = "1.2"`. No finding may be MEDIUM or worse,
//! no check may fail to run (WARN), and the scan must show: no protocol below TLS 1.2, only
//! AEAD ciphers with forward secrecy, no client-initiated renegotiation, no compression.
//!
//! The gateway wants SNI and a client certificate. SNI: the scanner targets `localhost`, the
//! name of the audited backend, which is also `default_backend` for testssl's probes without
//! SNI. Client certificate: testssl 3.0 has no mTLS option, so it runs OpenSSL through a small
//! wrapper that adds `-cert`/`-key` to every `s_client`; its own raw-socket probes need only
//! the ServerHello. The gateway's audit log must then show completed, authorized handshakes.
//!
//! The report (text) is written to stderr, uncaptured, so that it lands in the CI log, and kept
//! under `target/tmp/tls-audit/`. Time budget per scan: `TLS_AUDIT_BUDGET` seconds (900).

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tunnel_tests::process::{is_audit, run_to_end};
use tunnel_tests::*;

/// The testssl.sh program (`testssl` in Debian, `testssl.sh` upstream).
fn testssl() -> PathBuf {
    for name in ["testssl", "testssl.sh"] {
        if let Ok(out) = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
        {
            let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !p.is_empty() {
                return PathBuf::from(p);
            }
        }
    }
    panic!(
        "testssl.sh not found on PATH: the TLS audit needs it; run `apt-get install testssl.sh` \
         (scripts/test installs it)"
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}): apt-get install openssl"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A gateway certificate as a public CA would issue it (SANs, key usages, an OCSP URL and a
/// CRL distribution point), so that certificate findings concern the gateway's TLS rather than
/// a bare test certificate. Written as `audit.crt` / `audit.key`.
fn audit_cert(pki: &Pki) {
    let dir = pki.dir();
    let key = pki.ca().key.private_key_to_pem_pkcs8().expect("CA key");
    tunnel_core::pki::write_private(&dir.join("ca.key"), &key).expect("write CA key");
    std::fs::write(
        dir.join("audit-ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
         extendedKeyUsage=serverAuth\n\
         keyUsage=critical,digitalSignature\n\
         basicConstraints=critical,CA:FALSE\n\
         authorityInfoAccess=OCSP;URI:http://127.0.0.1:9/\n\
         crlDistributionPoints=URI:http://127.0.0.1:9/ca.crl\n",
    )
    .expect("write extensions");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "audit.key",
            "-subj",
            "/CN=localhost",
            "-out",
            "audit.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "audit.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "0x5eed5eed5eed5eed",
            "-days",
            "365",
            "-extfile",
            "audit-ext.cnf",
            "-out",
            "audit.crt",
        ],
    );
}

/// `openssl` for testssl: `s_client` gets the scanner's client certificate.
fn openssl_wrapper(pki: &Pki, creds: &Creds) -> PathBuf {
    let path = pki.dir().join("openssl-mtls");
    let q = |p: &Path| format!("'{}'", p.display());
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nif [ \"$1\" = s_client ]; then shift; exec openssl s_client -cert {} -key {} \"$@\"; fi\nexec openssl \"$@\"\n",
            q(&creds.cert),
            q(&creds.key)
        ),
    )
    .expect("write wrapper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

struct Scan {
    findings: Vec<Value>,
    report: String,
    took: Duration,
}

/// Runs testssl against `gw` with the checks the assertions need (everything of the default
/// run but client simulation, plus ciphers per protocol); DNS lookups off (loopback only).
fn scan(pki: &Pki, gw: &Gateway, wrapper: &Path, mode: &str) -> Scan {
    let json = pki.dir().join(format!("testssl-{mode}.json"));
    let mut cmd = Command::new(testssl());
    cmd.args([
        "--quiet",
        "--color",
        "0",
        "--warnings",
        "off",
        "--nodns",
        "none",
    ])
    .args(["--ip", "127.0.0.1", "--add-ca"])
    .arg(&pki.ca_crt)
    .arg("--openssl")
    .arg(wrapper)
    .args(["--connect-timeout", "10", "--openssl-timeout", "10"])
    .args(["-p", "-s", "-f", "-S", "-P", "-U", "-E", "--jsonfile"])
    .arg(&json)
    .arg(format!("localhost:{}", gw.addr.port()))
    .current_dir(pki.dir());
    let budget = std::env::var("TLS_AUDIT_BUDGET")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(900);
    let start = Instant::now();
    let out = run_to_end(cmd, Duration::from_secs(budget));
    let took = start.elapsed();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    publish(mode, &report, &json, took);
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "testssl wrote no JSON ({e}); exit {:?}; stderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let findings: Vec<Value> = serde_json::from_str(&text).expect("testssl JSON");
    assert!(!findings.is_empty(), "empty testssl JSON:\n{report}");
    Scan {
        findings,
        report,
        took,
    }
}

/// The report on stderr (not captured by the test harness: it reaches the CI log) and under
/// target/tmp/tls-audit/.
fn publish(mode: &str, report: &str, json: &Path, took: Duration) {
    let _ = writeln!(
        std::io::stderr(),
        "\n===== testssl.sh report, gateway mode {mode}, {:.0} s =====\n{report}\n===== end of report ({mode}) =====",
        took.as_secs_f64()
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls-audit");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join(format!("{mode}.txt")), report);
        let _ = std::fs::copy(json, dir.join(format!("{mode}.json")));
    }
}

impl Scan {
    fn finding(&self, id: &str) -> String {
        self.findings
            .iter()
            .find(|f| f["id"] == id)
            .and_then(|f| f["finding"].as_str())
            .unwrap_or_else(|| panic!("no finding {id:?} in the scan:\n{}", self.report))
            .to_string()
    }

    fn assert_no_severe_or_failed_check(&self) {
        let bad: Vec<String> = self
            .findings
            .iter()
            .filter(|f| {
                // testssl's own resumption probes (a second s_client reusing the first one's
                // session through the client-certificate wrapper) may fail to connect in the
                // TLS 1.3-only mode; resumption is not one of the audited properties, and the
                // resumption suites (tests/tests/resumption.rs, fleet.rs) cover it.
                let probe = f["id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("sessionresumption_"));
                match f["severity"].as_str() {
                    Some("MEDIUM" | "HIGH" | "CRITICAL") => true,
                    Some("WARN") => !probe,
                    _ => false,
                }
            })
            .map(|f| format!("{} {}: {}", f["severity"], f["id"], f["finding"]))
            .collect();
        assert!(bad.is_empty(), "testssl findings:\n{}", bad.join("\n"));
    }

    fn assert_protocols(&self, tls12: bool) {
        for id in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
            let f = self.finding(id);
            assert!(f.starts_with("not offered"), "{id}: {f}");
        }
        let f = self.finding("TLS1_2");
        assert_eq!(f.starts_with("offered"), tls12, "TLS1_2: {f}");
        let f = self.finding("TLS1_3");
        assert!(f.starts_with("offered"), "TLS1_3: {f}");
    }

    /// Every cipher the server accepted (`-E`): AEAD and ECDHE/DHE (TLS 1.3 suites are both).
    fn assert_ciphers(&self, tls12: bool) {
        let ciphers: Vec<String> = self
            .findings
            .iter()
            .filter(|f| {
                f["id"]
                    .as_str()
                    .is_some_and(|i| i.starts_with("cipher-tls"))
            })
            .filter_map(|f| f["finding"].as_str().map(str::to_string))
            .collect();
        assert!(
            ciphers.iter().any(|c| c.starts_with("TLS 1.3")),
            "no TLS 1.3 cipher listed:\n{}",
            self.report
        );
        assert_eq!(
            ciphers.iter().any(|c| c.starts_with("TLS 1.2")),
            tls12,
            "TLS 1.2 ciphers: {ciphers:#?}"
        );
        for c in &ciphers {
            let cols: Vec<&str> = c.split_whitespace().collect();
            // "TLS 1.2   xc02b   ECDHE-ECDSA-AES128-GCM-SHA256   ECDH 253   AESGCM   128 ..."
            let (name, kx, enc) = (cols[3], cols[4], cols[6]);
            let aead = ["AESGCM", "ChaCha20", "AESCCM"].contains(&enc)
                || name.contains("GCM")
                || name.contains("CHACHA20");
            assert!(aead, "non-AEAD cipher offered: {c}");
            assert!(
                kx == "ECDH" || kx == "DH" || kx.starts_with("ECDH/"),
                "cipher without forward secrecy offered: {c}"
            );
        }
        for id in [
            "cipherlist_NULL",
            "cipherlist_aNULL",
            "cipherlist_EXPORT",
            "cipherlist_LOW",
            "cipherlist_3DES_IDEA",
            "cipherlist_AVERAGE",
        ] {
            let f = self.finding(id);
            assert!(f.starts_with("not offered"), "{id}: {f}");
        }
        // testssl 3.0 says "PFS", later versions "FS".
        let id = if self.findings.iter().any(|f| f["id"] == "FS") {
            "FS"
        } else {
            "PFS"
        };
        let f = self.finding(id);
        assert!(f.starts_with("offered"), "{id}: {f}");
    }

    fn assert_no_renegotiation_or_compression(&self) {
        let f = self.finding("secure_client_renego");
        assert!(f.starts_with("not vulnerable"), "secure_client_renego: {f}");
        let f = self.finding("CRIME_TLS");
        // TLS 1.3 has no compression at all: testssl says "TLS 1.3 only server" then.
        assert!(
            f.starts_with("not vulnerable") || f == "TLS 1.3 only server",
            "CRIME_TLS (compression): {f}"
        );
    }
}

fn audit(top: &str, mode: &str, tls12: bool) {
    let tool = testssl();
    let pki = Pki::new();
    audit_cert(&pki);
    let scanner = pki.client("scanner");
    let wrapper = openssl_wrapper(&pki, &scanner);
    let backend = Backend::echo();
    let config = pki.write(
        "audit",
        "toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ncert = \"audit.crt\"\nkey = \"audit.key\"\n\
             client_ca = \"ca.crt\"\nlog_format = \"json\"\ndefault_backend = \"localhost\"\n{top}\n{}",
            backend_toml("localhost", backend.addr, "\"cn=scanner\"")
        ),
    );
    let mut gw = Gateway::start_file(&config);
    let s = scan(&pki, &gw, &wrapper, mode);
    let _ = writeln!(
        std::io::stderr(),
        "tls_audit {mode}: {} took {:.0} s",
        tool.display(),
        s.took.as_secs_f64()
    );
    s.assert_no_severe_or_failed_check();
    s.assert_protocols(tls12);
    s.assert_ciphers(tls12);
    s.assert_no_renegotiation_or_compression();
    // The wrapper's client certificate worked: the scan reached the backend.
    let served = gw
        .audits()
        .iter()
        .filter(|e| is_audit(e) && field(e, "result") == "ok")
        .count();
    assert!(
        served > 0,
        "no scan connection was authorized: the scan did not complete mTLS handshakes"
    );
    assert_serves(&mut gw, &scanner, &pki.ca_crt, Some("localhost"));
}

#[test]
fn testssl_finds_nothing_in_the_default_mode() {
    audit("", "default", false);
}

#[test]
fn testssl_finds_nothing_with_tls12_allowed() {
    audit("tls_min_version = \"1.2\"", "tls12", true);
}
