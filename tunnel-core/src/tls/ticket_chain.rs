//! The client's intermediate certificates carried inside stateless session tickets.
//!
//! A ticket holds the session's client certificate but not the intermediates the client sent
//! in its full handshake, and the gateway verifies a resumed session's chain again. A gateway
//! that opens another gateway's ticket has never seen those intermediates, so they travel in
//! the ticket's application data (sealed and authenticated with the ticket itself). They are
//! only candidates for chain building: trust still comes from `client_ca` alone.
//!
//! Holds the `unsafe` FFI for `SSL_CTX_set_session_ticket_cb` and the ticket app data, which
//! the `openssl` crate does not wrap.

use openssl::ssl::{SslAcceptorBuilder, SslRef};
use openssl::x509::X509;

/// What goes into a ticket: the client's intermediates.
struct Chain;

impl super::ffi::ticket_chain::AppData for Chain {
    fn encode(ssl: &SslRef) -> Option<Vec<u8>> {
        encode(ssl)
    }
}

/// Length-prefixed DER of the certificates the client sent besides its own, for the
/// ticket being sealed.
pub(crate) fn encode(ssl: &SslRef) -> Option<Vec<u8>> {
    let leaf = ssl.peer_certificate()?.to_der().ok()?;
    let mut out = Vec::new();
    for c in ssl.peer_cert_chain()?.iter() {
        let der = c.to_der().ok()?;
        if der != leaf {
            out.extend_from_slice(&(der.len() as u32).to_be_bytes());
            out.extend_from_slice(&der);
        }
    }
    (!out.is_empty()).then_some(out)
}

fn decode(mut data: &[u8]) -> Vec<X509> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let n = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let Some(der) = data.get(4..4 + n) else { break };
        match X509::from_der(der) {
            Ok(c) => out.push(c),
            Err(_) => break,
        }
        data = &data[4 + n..];
    }
    out
}

/// Makes the context being built put the client's intermediates into every ticket it seals.
pub(super) fn install(b: &mut SslAcceptorBuilder) -> Result<(), openssl::error::ErrorStack> {
    super::ffi::ticket_chain::install::<Chain>(b)
}

/// The intermediates a resumed session's ticket carried (empty for a full handshake or a
/// ticket without any).
pub fn resumed_intermediates(ssl: &SslRef) -> Vec<X509> {
    if !ssl.session_reused() {
        return Vec::new();
    }
    ssl.session()
        .and_then(super::ffi::ticket_chain::appdata)
        .map(|d| decode(&d))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_stops_at_anything_malformed() {
        let ca = crate::pki::new_ca("T", 1).unwrap();
        let der = ca.cert.to_der().unwrap();
        let mut data = (der.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(&der);
        assert_eq!(decode(&data).len(), 1);
        data.extend_from_slice(&[0, 0, 0, 9, 1, 2]);
        assert_eq!(decode(&data).len(), 1);
        assert!(decode(&[0xff, 0xff, 0xff, 0xff]).is_empty());
        assert!(decode(&[0, 0, 0, 2, 0x30, 0x00]).is_empty());
    }
}
