//! A raw TLS client built with the openssl crate, for what the client agent cannot do on
//! purpose: no SNI, chosen SNI, expired/revoked/foreign certificates, session resumption.

use crate::data::read_all;
use crate::pki::{Creds, SERVER_NAME};
use openssl::ssl::{
    Ssl, SslConnector, SslFiletype, SslMethod, SslStream, SslVerifyMode, SslVersion,
};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

/// A TLS client with a client certificate that verifies the gateway as `localhost`.
pub struct TlsClient {
    connector: SslConnector,
}

impl TlsClient {
    /// A client presenting `creds` and trusting the CA bundle `ca`.
    pub fn new(creds: &Creds, ca: &Path) -> TlsClient {
        TlsClient::with_max_version(creds, ca, None)
    }

    /// Like [`TlsClient::new`], offering no protocol version above `max` (TLS 1.2 clients).
    pub fn with_max_version(creds: &Creds, ca: &Path, max: Option<SslVersion>) -> TlsClient {
        let mut b = SslConnector::builder(SslMethod::tls_client()).expect("connector");
        b.set_max_proto_version(max).expect("max version");
        b.set_certificate_chain_file(&creds.cert)
            .expect("client cert");
        b.set_private_key_file(&creds.key, SslFiletype::PEM)
            .expect("client key");
        b.set_ca_file(ca).expect("CA file");
        b.set_verify(SslVerifyMode::PEER);
        TlsClient {
            connector: b.build(),
        }
    }

    /// A fresh `Ssl` that sends `sni` (none when `None`) and verifies the gateway's name.
    pub fn ssl(&self, sni: Option<&str>) -> Ssl {
        let mut cfg = self.connector.configure().expect("configure");
        cfg.set_use_server_name_indication(false);
        let mut ssl = cfg.into_ssl(SERVER_NAME).expect("ssl");
        if let Some(name) = sni {
            ssl.set_hostname(name).expect("SNI");
        }
        ssl
    }

    /// Connects to `addr` sending `sni` and completes the handshake (as far as the client
    /// sees it: with TLS 1.3 a refused client certificate shows up on the first read).
    pub fn connect(
        &self,
        addr: SocketAddr,
        sni: Option<&str>,
    ) -> Result<SslStream<TcpStream>, String> {
        connect_ssl(self.ssl(sni), addr)
    }
}

/// Runs the client handshake of `ssl` over a new TCP connection to `addr`.
pub fn connect_ssl(ssl: Ssl, addr: SocketAddr) -> Result<SslStream<TcpStream>, String> {
    let tcp = crate::backend::connect(addr);
    ssl.connect(tcp).map_err(|e| e.to_string())
}

/// Sends `msg`, then close_notify (TLS half-close), then reads until the gateway closes.
/// Returns what arrived and the error that ended reading, if any.
pub fn exchange(s: &mut SslStream<TcpStream>, msg: &[u8]) -> (Vec<u8>, Option<io::Error>) {
    let write = s.write_all(msg).and_then(|_| s.flush());
    if write.is_ok() {
        let _ = s.shutdown();
    }
    let (got, err) = read_all(s);
    (got, err.or(write.err()))
}

/// The local address of a TLS connection (the `peer` the gateway's audit event names).
pub fn local_addr(s: &SslStream<TcpStream>) -> SocketAddr {
    s.get_ref().local_addr().expect("local_addr")
}
