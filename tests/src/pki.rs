//! A throwaway PKI in a temporary directory: one CA, a gateway certificate for `localhost` and
//! 127.0.0.1, and client certificates on demand, all made with `tunnel_core::pki`.

use openssl::x509::X509Ref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use tempfile::TempDir;
use tunnel_core::pki::{self, CertSpec, Issued};

/// The name in the gateway certificate (DNS SAN); it also carries IP 127.0.0.1.
pub const SERVER_NAME: &str = "localhost";

/// A certificate and key written to disk.
#[derive(Debug, Clone)]
pub struct Creds {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// The certificate and key in memory.
    pub issued: Issued,
}

impl Creds {
    /// Lower-case hex SHA-256 of the DER certificate.
    pub fn sha256(&self) -> String {
        let der = self.issued.cert.to_der().expect("DER");
        crate::data::sha256_hex(&der)
    }
}

/// A CA with its files in a fresh temporary directory. Everything a test writes (configs,
/// CRLs) goes into [`Pki::dir`] too, so it all disappears with the fixture.
pub struct Pki {
    dir: TempDir,
    ca: Issued,
    /// PEM of the CA certificate.
    pub ca_crt: PathBuf,
    /// The gateway's certificate (for [`SERVER_NAME`] and 127.0.0.1).
    pub server: Creds,
    counter: AtomicUsize,
}

impl Pki {
    /// A new CA named `Tunnel Test CA` and a gateway certificate.
    pub fn new() -> Pki {
        Pki::named("Tunnel Test CA")
    }

    /// A new CA with the given name (tests use a second one as the "wrong" CA).
    pub fn named(ca_name: &str) -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("tunnel-tests-")
            .tempdir()
            .expect("temp dir");
        let ca = pki::new_ca(ca_name, 30).expect("new CA");
        let ca_crt = dir.path().join("ca.crt");
        std::fs::write(&ca_crt, ca.cert.to_pem().expect("PEM")).expect("write CA");
        let mut spec = CertSpec::server(SERVER_NAME);
        spec.ip.push("127.0.0.1".parse().expect("IP"));
        let server = issue_into(dir.path(), &ca, "server", &spec);
        Pki {
            dir,
            ca,
            ca_crt,
            server,
            counter: AtomicUsize::new(0),
        }
    }

    /// The directory holding every file of this fixture.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA itself.
    pub fn ca(&self) -> &Issued {
        &self.ca
    }

    /// Issues `spec` and writes it as `<file>.crt` / `<file>.key`.
    pub fn issue(&self, file: &str, spec: &CertSpec) -> Creds {
        issue_into(self.dir(), &self.ca, file, spec)
    }

    /// A client certificate whose only attribute is CN `cn`.
    pub fn client(&self, cn: &str) -> Creds {
        self.issue(cn, &CertSpec::client(cn))
    }

    /// An intermediate CA under this root and a client `cn` issued by it, written as a chain
    /// file (leaf, then intermediate) as the client agent sends it.
    pub fn via_intermediate(&self, cn: &str) -> (Creds, Creds) {
        let inter = self.issue(
            "intermediate",
            &CertSpec {
                usage: tunnel_core::pki::Usage::Ca,
                ..CertSpec::client("Tunnel Intermediate CA")
            },
        );
        let issued = pki::new_leaf(&inter.issued, &CertSpec::client(cn)).expect("issue");
        let cert = self.unique_path(cn, "chain.pem");
        let key = self.unique_path(cn, "key");
        let mut pem = issued.cert.to_pem().expect("PEM");
        pem.extend(inter.issued.cert.to_pem().expect("PEM"));
        std::fs::write(&cert, pem).expect("write chain");
        pki::write_private(
            &key,
            &issued.key.private_key_to_pem_pkcs8().expect("key PEM"),
        )
        .expect("write key");
        (inter, Creds { cert, key, issued })
    }

    /// Writes a CRL revoking `revoked` and returns its path.
    pub fn crl(&self, revoked: &[&Creds]) -> PathBuf {
        let certs: Vec<_> = revoked.iter().map(|c| &c.issued.cert).collect();
        let crl = pki::make_crl(&self.ca, &certs, -1, 7).expect("CRL");
        let path = self.unique_path("crl", "pem");
        std::fs::write(&path, crl.to_pem().expect("PEM")).expect("write CRL");
        path
    }

    /// A new, unused path `<stem>-<n>.<ext>` inside the fixture directory.
    pub fn unique_path(&self, stem: &str, ext: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.dir().join(format!("{stem}-{n}.{ext}"))
    }

    /// Writes `text` to a new file `<stem>-<n>.<ext>` and returns its path.
    pub fn write(&self, stem: &str, ext: &str, text: &str) -> PathBuf {
        let path = self.unique_path(stem, ext);
        std::fs::write(&path, text).expect("write file");
        path
    }
}

fn issue_into(dir: &Path, ca: &Issued, file: &str, spec: &CertSpec) -> Creds {
    let issued = pki::new_leaf(ca, spec).expect("issue certificate");
    let cert = dir.join(format!("{file}.crt"));
    let key = dir.join(format!("{file}.key"));
    pki::write_issued(&issued, &cert, &key).expect("write certificate");
    Creds { cert, key, issued }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

/// `path` as a TOML basic string (paths in tests are plain, but quote them properly anyway).
pub fn toml_str(path: &Path) -> String {
    let s = path.display().to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A certificate's serial number in upper-case hex, as OpenSSL prints it (no leading zeros).
pub fn serial_hex(cert: &X509Ref) -> String {
    cert.serial_number()
        .to_bn()
        .and_then(|b| b.to_hex_str().map(|s| s.to_string()))
        .expect("serial as hex")
}
