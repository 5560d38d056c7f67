//! Helpers for the operator-control tests: the admin CLI (`tunnel-server sessions`,
//! `disconnect`), long-lived echo tunnels that keep checking every byte they get back, and
//! certificates that expire seconds from now.

use crate::bins;
use crate::data::Pattern;
use crate::pki::{Creds, Pki};
use crate::process::{command, run_to_end};
use crate::tls::TlsClient;
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage};
use openssl::x509::{X509Builder, X509NameBuilder};
use serde_json::Value;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// `tunnel-server ARGS` to completion.
pub fn server_cli(args: &[&str]) -> Output {
    let mut cmd = command(&bins::server());
    cmd.args(args);
    run_to_end(cmd, crate::PROMPT)
}

/// `cmd` run as another user (uid, gid) with no supplementary groups.
pub fn as_user(mut cmd: Command, uid: u32, gid: u32) -> Output {
    use std::os::unix::process::CommandExt;
    cmd.uid(uid).gid(gid);
    run_to_end(cmd, crate::PROMPT)
}

/// The `sessions` array of `tunnel-server sessions --json --socket S ARGS`.
pub fn sessions(socket: &Path, args: &[&str]) -> Vec<Value> {
    let s = socket.to_str().expect("UTF-8 path");
    let mut all = vec!["sessions", "--json", "--socket", s];
    all.extend_from_slice(args);
    let out = server_cli(&all);
    assert!(
        out.status.success(),
        "sessions failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("sessions --json prints JSON");
    v["sessions"].as_array().cloned().unwrap_or_default()
}

/// `tunnel-server disconnect --socket S ARGS`; returns stdout, asserting success.
pub fn disconnect(socket: &Path, args: &[&str]) -> String {
    let s = socket.to_str().expect("UTF-8 path");
    let mut all = vec!["disconnect", "--socket", s];
    all.extend_from_slice(args);
    let out = server_cli(&all);
    assert!(
        out.status.success(),
        "disconnect failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TLS tunnel to an echo backend that sends pattern bytes and checks every echoed byte.
pub struct EchoTunnel {
    tls: openssl::ssl::SslStream<TcpStream>,
    pattern: Pattern,
    /// Bytes sent and verified so far.
    pub verified: u64,
    /// The local address (the `peer` of the gateway's audit event).
    pub local: SocketAddr,
}

impl EchoTunnel {
    /// Connects with `creds` to `gateway`, SNI `backend`, and checks one round trip.
    pub fn open(
        pki: &Pki,
        creds: &Creds,
        gateway: SocketAddr,
        backend: &str,
        seed: u64,
    ) -> EchoTunnel {
        let c = TlsClient::new(creds, &pki.ca_crt);
        let tls = c
            .connect(gateway, Some(backend))
            .unwrap_or_else(|e| panic!("TLS to {backend}: {e}"));
        let local = crate::tls::local_addr(&tls);
        let mut t = EchoTunnel {
            tls,
            pattern: Pattern::new(seed),
            verified: 0,
            local,
        };
        t.round_trip(1000).expect("first round trip");
        t
    }

    /// Sends `n` more pattern bytes and checks that exactly they come back.
    pub fn round_trip(&mut self, n: usize) -> io::Result<()> {
        let mut out = vec![0u8; n];
        self.pattern.fill(&mut out);
        self.tls.write_all(&out)?;
        self.tls.flush()?;
        let mut back = vec![0u8; n];
        self.tls.read_exact(&mut back)?;
        if back != out {
            return Err(io::Error::other("echoed bytes differ from the bytes sent"));
        }
        self.verified += n as u64;
        Ok(())
    }

    /// Whether the gateway closed this tunnel: the next read ends (EOF or error) promptly.
    pub fn is_cut(&mut self) -> bool {
        let _ = self.tls.get_ref().set_read_timeout(Some(crate::PROMPT));
        let _ = self.tls.write_all(b"x");
        let mut b = [0u8; 16];
        match self.tls.read(&mut b) {
            Ok(0) | Err(_) => true,
            // The echo of our byte: the tunnel is alive.
            Ok(_) => false,
        }
    }
}

/// Whether a fresh tunnel for `creds` to `backend` carries bytes (false when the gateway
/// refuses it after the handshake).
pub fn tunnel_works(
    pki: &Pki,
    creds: &Creds,
    gateway: SocketAddr,
    backend: &str,
) -> (bool, SocketAddr) {
    let c = TlsClient::new(creds, &pki.ca_crt);
    let Ok(mut tls) = c.connect(gateway, Some(backend)) else {
        return (false, "0.0.0.0:0".parse().expect("addr"));
    };
    let local = crate::tls::local_addr(&tls);
    let ok = tls.write_all(b"ping").is_ok() && {
        let mut b = [0u8; 4];
        tls.read_exact(&mut b).is_ok() && &b == b"ping"
    };
    (ok, local)
}

/// A client certificate for `cn` that expires `secs` seconds from now.
pub fn expiring_client(pki: &Pki, cn: &str, secs: i64) -> Creds {
    client_valid(pki, cn, 60, secs)
}

/// A client certificate for `cn` valid from `since` seconds ago to `secs` seconds from now.
pub fn client_valid(pki: &Pki, cn: &str, since: i64, secs: i64) -> Creds {
    let ca = pki.ca();
    let key = tunnel_core::pki::new_key(tunnel_core::pki::KeyType::EcP256).expect("key");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", cn).expect("CN");
    let name = name.build();
    let mut b = X509Builder::new().expect("builder");
    b.set_version(2).expect("version");
    let serial =
        Asn1Integer::from_bn(&BigNum::from_u32(0x5EC0 + secs as u32).expect("bn")).expect("serial");
    b.set_serial_number(&serial).expect("serial");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(ca.cert.subject_name()).expect("issuer");
    b.set_pubkey(&key).expect("pubkey");
    let now = tunnel_core::util::time::unix_now();
    b.set_not_before(&Asn1Time::from_unix(now - since).expect("time"))
        .expect("notBefore");
    b.set_not_after(&Asn1Time::from_unix(now + secs).expect("time"))
        .expect("notAfter");
    b.append_extension(BasicConstraints::new().critical().build().expect("bc"))
        .expect("bc");
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .build()
            .expect("ku"),
    )
    .expect("ku");
    b.append_extension(ExtendedKeyUsage::new().client_auth().build().expect("eku"))
        .expect("eku");
    b.sign(&ca.key, MessageDigest::sha256()).expect("sign");
    let issued = tunnel_core::pki::Issued {
        cert: b.build(),
        key,
    };
    let cert = pki.unique_path(cn, "crt");
    let keyp = pki.unique_path(cn, "key");
    tunnel_core::pki::write_issued(&issued, &cert, &keyp).expect("write");
    Creds {
        cert,
        key: keyp,
        issued,
    }
}

/// Waits until `f` is true, polling every 50 ms; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends one raw `line` (a newline is added) to the admin socket at `socket`, as any admin
/// client could, and returns the reply line as received (empty when the socket closed
/// without one).
pub fn raw_request(socket: &Path, line: &str) -> String {
    use std::io::BufRead;
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    s.set_read_timeout(Some(crate::PROMPT)).expect("timeout");
    s.write_all(format!("{line}\n").as_bytes())
        .expect("write the request");
    let mut reply = String::new();
    let _ = io::BufReader::new(&s).read_line(&mut reply);
    reply
}
