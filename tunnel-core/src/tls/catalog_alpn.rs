//! The catalog's side of the TLS handshake: its reserved server name and ALPN protocol, and
//! the gateway's ALPN choice. What the catalog says is [`crate::gateway::catalog`]'s.

use openssl::ssl::{AlpnError, NameType, SslRef};

/// The catalog's ALPN protocol name.
pub const ALPN: &[u8] = b"tunnel-catalog/1";
/// [`ALPN`] in the wire format of ALPN lists (length-prefixed).
pub const ALPN_WIRE: &[u8] = b"\x10tunnel-catalog/1";
/// The reserved server name of catalog requests.
pub const SNI: &str = "tunnel-catalog.invalid";
/// Whether this handshake asks for the catalog (by its reserved SNI).
pub fn is_request(ssl: &SslRef) -> bool {
    ssl.servername_raw(NameType::HOST_NAME) == Some(SNI.as_bytes())
}

/// Whether the catalog protocol was negotiated on this connection.
pub fn selected(ssl: &SslRef) -> bool {
    is_request(ssl) && ssl.selected_alpn_protocol() == Some(ALPN)
}

/// The gateway's ALPN choice: the catalog protocol for catalog requests (refused without
/// it); no ALPN for tunnels, as before.
pub fn select_alpn<'a>(ssl: &mut SslRef, offered: &'a [u8]) -> Result<&'a [u8], AlpnError> {
    if !is_request(ssl) {
        return Err(AlpnError::NOACK);
    }
    match openssl::ssl::select_next_proto(ALPN_WIRE, offered) {
        Some(p) => Ok(p),
        None => Err(AlpnError::ALERT_FATAL),
    }
}
