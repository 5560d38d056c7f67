//! Shared fixture: a PKI generated once per test process (CA, gateway and client
//! certificates, a CRL, an OCSP response from the real `openssl ocsp`), the files of a valid
//! gateway config, byte mutations, and the case count.

use openssl::x509::X509;
use proptest::prelude::*;
use proptest::test_runner::Config;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use tunnel_core::pki::{self, CertSpec, Issued};

/// Cases per property: `small` for `cargo test`; with `PROPTEST_CASES=N` (scripts/fuzz) a
/// property of weight `small` runs `N * small / 128` cases, so that the expensive ones (real
/// handshakes, signing) keep their smaller share.
pub fn config(small: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|n| (n * u64::from(small) / 128).max(u64::from(small)) as u32)
        .unwrap_or(small);
    Config {
        cases,
        // Failures become explicit tests in `regressions`, not files in the tree.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Everything generated once.
pub struct Fixture {
    /// Keeps the directory alive.
    _dir: tempfile::TempDir,
    /// Where the files are.
    pub dir: PathBuf,
    /// The CA.
    pub ca: Issued,
    /// Client certificates; `clients[0]` is revoked in `crl_pem`.
    pub clients: Vec<Issued>,
    /// A CRL of `ca` revoking `clients[0]`.
    pub crl_pem: Vec<u8>,
    /// An OCSP response (DER) by `ca` saying `clients[1]` is good.
    pub ocsp_good: Vec<u8>,
    /// A valid gateway config (paths relative to `dir`).
    pub server_toml: String,
    /// A valid client agent config.
    pub client_toml: String,
}

/// The fixture (built on first use).
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(build)
}

fn build() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let ca = pki::new_ca("Fuzz CA", 30).expect("CA");
    let server = pki::new_leaf(&ca, &CertSpec::server("localhost")).expect("server cert");
    let mut clients = Vec::new();
    for cn in ["revoked", "alice", "bob"] {
        let mut spec = CertSpec::client(cn);
        spec.ou.push("dba".into());
        spec.dns.push(format!("{cn}.example.org"));
        spec.uri.push(format!("spiffe://example.org/sa/{cn}"));
        spec.email.push(format!("{cn}@example.org"));
        spec.ip.push("10.1.2.3".parse().unwrap());
        clients.push(pki::new_leaf(&ca, &spec).expect("client cert"));
    }
    pki::write_issued(&server, &dir.join("server.crt"), &dir.join("server.key")).expect("write");
    write(&dir, "ca.crt", &ca.cert.to_pem().unwrap());
    let crl = pki::make_crl(&ca, &[&clients[0].cert], -1, 7).expect("CRL");
    let crl_pem = crl.to_pem().unwrap();
    write(&dir, "crl.pem", &crl_pem);
    write(&dir, "ca.key", &ca.key.private_key_to_pem_pkcs8().unwrap());
    for (i, c) in clients.iter().enumerate() {
        write(&dir, &format!("client{i}.crt"), &c.cert.to_pem().unwrap());
    }
    pki::write_issued(&clients[1], &dir.join("alice.crt"), &dir.join("alice.key")).expect("write");
    let ocsp_good = ocsp_response(&dir, &clients[1].cert);
    let server_toml = "listen = [\"127.0.0.1:0\"]\ncert = \"server.crt\"\nkey = \"server.key\"\n\
        client_ca = \"ca.crt\"\ncrl = [\"crl.pem\"]\nhandshake_timeout = \"10s\"\n\
        max_connections = 100\ndefault_backend = \"web\"\n\n[groups]\ndba = [\"ou=dba\", \"cn=carol\"]\n\n\
        [[backend]]\nname = \"db\"\naddress = \"127.0.0.1:5432\"\nallow = [\"group=dba\", \"ip=10.0.0.0/8\"]\n\n\
        [[backend]]\nname = \"web\"\naddress = \"localhost:8080\"\nallow = [{ ou = \"web\", o = \"Example\" }, \"dns=*.example.org\"]\n"
        .to_string();
    let client_toml = "server = \"127.0.0.1:8443\"\nserver_name = \"localhost\"\ncert = \"alice.crt\"\n\
        key = \"alice.key\"\nca = \"ca.crt\"\n\n[[tunnel]]\nlisten = \"127.0.0.1:0\"\nbackend = \"db\"\n"
        .to_string();
    Fixture {
        _dir: tmp,
        dir,
        ca,
        clients,
        crl_pem,
        ocsp_good,
        server_toml,
        client_toml,
    }
}

fn write(dir: &Path, name: &str, data: &[u8]) {
    std::fs::write(dir.join(name), data).expect("write fixture file");
}

/// A response of the real `openssl ocsp` responder (index: client 1 valid) for client 1.
fn ocsp_response(dir: &Path, good: &X509) -> Vec<u8> {
    let serial = good
        .serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string();
    let line = format!("V\t391231235959Z\t\t{serial}\tunknown\t/CN=alice\n");
    write(dir, "index.txt", line.as_bytes());
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run openssl ({e}): the OCSP properties need it; apt-get install openssl (scripts/test installs it)")
            });
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "ocsp",
        "-issuer",
        "ca.crt",
        "-cert",
        "client1.crt",
        "-no_nonce",
        "-reqout",
        "req.der",
    ]);
    run(&[
        "ocsp",
        "-index",
        "index.txt",
        "-rsigner",
        "ca.crt",
        "-rkey",
        "ca.key",
        "-CA",
        "ca.crt",
        "-reqin",
        "req.der",
        "-respout",
        "resp.der",
        "-ndays",
        "1",
    ]);
    std::fs::read(dir.join("resp.der")).expect("resp.der")
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Replace the byte at (index mod len).
    Set(usize, u8),
    /// Flip one bit.
    Flip(usize, u8),
    /// Insert bytes.
    Insert(usize, Vec<u8>),
    /// Remove up to n bytes.
    Remove(usize, usize),
    /// Cut the input here.
    Truncate(usize),
}

/// Up to `n` edits, biased to small ones.
pub fn edits(n: usize) -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        4 => (any::<usize>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        // Length-ish bytes: 0x00, 0x7f, 0x80..0x84 (long form), 0xff.
        2 => (any::<usize>(), prop::sample::select(vec![0u8, 0x7f, 0x80, 0x81, 0x82, 0x83, 0x84, 0xff]))
            .prop_map(|(i, b)| Edit::Set(i, b)),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, v)| Edit::Insert(i, v)),
        1 => (any::<usize>(), 1usize..16).prop_map(|(i, n)| Edit::Remove(i, n)),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ];
    prop::collection::vec(edit, 1..=n)
}

/// `data` with `edits` applied.
pub fn mutate(data: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut v = data.to_vec();
    for e in edits {
        let len = v.len().max(1);
        match e {
            Edit::Set(i, b) if !v.is_empty() => v[i % len] = *b,
            Edit::Flip(i, b) if !v.is_empty() => v[i % len] ^= 1 << b,
            Edit::Insert(i, bytes) => {
                let at = i % (v.len() + 1);
                v.splice(at..at, bytes.iter().copied());
            }
            Edit::Remove(i, n) if !v.is_empty() => {
                let at = i % len;
                let end = (at + n).min(v.len());
                v.drain(at..end);
            }
            Edit::Truncate(i) => v.truncate(i % (v.len() + 1)),
            _ => {}
        }
    }
    v
}
