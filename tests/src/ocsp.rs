//! A real OCSP responder for the tests: `openssl ocsp -index ... -port 0` answering from an
//! OpenSSL CA index file, signed by the fixture's CA. It reports the port it bound, so no
//! port is guessed; it is killed on drop. Also `openssl ocsp` as a client, to fetch a DER
//! response into a file (what an operator does for `ocsp_staple = "<file>"`).
//!
//! The `openssl` binary is required: a missing one fails the test with the package to install.

use crate::pki::{Creds, Pki};
use crate::READY;
use openssl::x509::X509Ref;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// The `openssl` command-line tool; fails (never skips) when it is not installed.
pub fn openssl_bin() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("openssl"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "openssl not found on PATH: the OCSP tests run a real `openssl ocsp` responder; \
                 run `apt-get install openssl` (scripts/test installs it)"
            )
        })
}

/// What the responder's index says about a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Listed as valid: the responder answers `good`.
    Valid,
    /// Listed as revoked (a minute ago): the responder answers `revoked`.
    Revoked,
}

/// One line of an OpenSSL CA index (`index.txt`) for `cert`. A certificate without a line
/// gets the answer `unknown`.
pub fn index_line(cert: &X509Ref, status: Status) -> String {
    let serial = crate::pki::serial_hex(cert);
    let expiry = tunnel_core::util::time::asn1_to_unix(cert.not_after()).expect("notAfter");
    let dn = openssl_dn(cert);
    match status {
        Status::Valid => format!("V\t{}\t\t{serial}\tunknown\t{dn}\n", utc_time(expiry)),
        Status::Revoked => {
            let when = tunnel_core::util::time::unix_now() - 60;
            format!(
                "R\t{}\t{}\t{serial}\tunknown\t{dn}\n",
                utc_time(expiry),
                utc_time(when)
            )
        }
    }
}

/// The subject in OpenSSL's index form, `/CN=alice`.
fn openssl_dn(cert: &X509Ref) -> String {
    cert.subject_name()
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("UNDEF");
            let value = tunnel_core::authz::identity::asn1_text(e.data());
            format!("/{key}={value}")
        })
        .collect()
}

/// Unix seconds as ASN.1 UTCTime text, `YYMMDDHHMMSSZ` (years 1950..2049).
pub fn utc_time(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{:02}{month:02}{day:02}{:02}{:02}{:02}Z",
        year % 100,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A running `openssl ocsp` responder for the fixture's CA (it signs with the CA key).
pub struct Responder {
    child: Child,
    /// Where it accepts (127.0.0.1 and the port it bound).
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Responder {
    /// Starts a responder answering from an index of `entries`; returns once it listens.
    /// Answers carry a nextUpdate a day ahead.
    pub fn start(pki: &Pki, entries: &[(&Creds, Status)]) -> Responder {
        let index: String = entries
            .iter()
            .map(|(c, s)| index_line(&c.issued.cert, *s))
            .collect();
        let index_path = pki.write("ocsp-index", "txt", &index);
        // Several certificates may share a subject (a rotated one and its successor).
        let mut attr = index_path.clone().into_os_string();
        attr.push(".attr");
        std::fs::write(&attr, "unique_subject = no\n").expect("write index attributes");
        let key_path = pki.unique_path("ocsp-ca", "key");
        let pem = pki.ca().key.private_key_to_pem_pkcs8().expect("CA key PEM");
        tunnel_core::pki::write_private(&key_path, &pem).expect("write CA key");

        let mut cmd = Command::new(openssl_bin());
        cmd.arg("ocsp")
            .arg("-index")
            .arg(&index_path)
            .args(["-port", "0", "-ndays", "1"])
            .arg("-rsigner")
            .arg(&pki.ca_crt)
            .arg("-rkey")
            .arg(&key_path)
            .arg("-CA")
            .arg(&pki.ca_crt)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&text);
            }
        });
        // "ACCEPT [::]:PORT PID=N" on stdout says which port it bound.
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = accept_port(&line) {
                    let _ = tx.send(port);
                }
            }
        });
        let mut r = Responder {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr,
        };
        match rx.recv_timeout(READY) {
            Ok(port) => r.addr.set_port(port),
            Err(_) => panic!(
                "openssl ocsp did not report its port within {READY:?}; stderr:\n{}",
                r.stderr()
            ),
        }
        // No connect probe: the ACCEPT line comes after listen(2), and OpenSSL 3.0's
        // responder stalls for good on a connection closed before sending a request.
        r
    }

    /// The responder's URL, for `ocsp_responder`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the responder wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops the responder; afterwards nothing listens on its port.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("----- stderr of openssl ocsp -----\n{}", self.stderr());
        }
    }
}

fn accept_port(line: &str) -> Option<u16> {
    let addr = line.strip_prefix("ACCEPT ")?.split_whitespace().next()?;
    addr.rsplit_once(':')?.1.parse().ok()
}

/// Asks `url` about `creds` with `openssl ocsp` (response verified against the fixture's CA)
/// and returns the DER response it saved with `-respout`.
pub fn fetch_der(pki: &Pki, creds: &Creds, url: &str) -> Vec<u8> {
    let out_path = pki.unique_path("ocsp-response", "der");
    let mut cmd = Command::new(openssl_bin());
    cmd.arg("ocsp")
        .arg("-issuer")
        .arg(&pki.ca_crt)
        .arg("-cert")
        .arg(&creds.cert)
        .arg("-CAfile")
        .arg(&pki.ca_crt)
        .args(["-url", url])
        .arg("-respout")
        .arg(&out_path);
    let out = crate::process::run_to_end(cmd, READY);
    assert!(
        out.status.success(),
        "openssl ocsp client failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&out_path).expect("read -respout file")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_time_formats() {
        assert_eq!(utc_time(0), "700101000000Z");
        assert_eq!(utc_time(1_796_212_128), "261202114848Z");
        assert_eq!(utc_time(1_835_438_400), "280229120000Z");
    }

    #[test]
    fn accept_line_gives_the_port() {
        assert_eq!(accept_port("ACCEPT [::]:34697 PID=29240"), Some(34697));
        assert_eq!(accept_port("ACCEPT 0.0.0.0:8080"), Some(8080));
        assert_eq!(accept_port("ocsp: waiting"), None);
    }
}
