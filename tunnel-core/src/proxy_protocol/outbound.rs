//! The PROXY protocol v2 header the gateway sends to a backend with `proxy_protocol = "v2"`:
//! the client's address, and TLVs for what the gateway verified (encoded with the `ppp`
//! crate).
//!
//! TLVs: `PP2_TYPE_AUTHORITY` (0x02) = SNI; `PP2_TYPE_UNIQUE_ID` (0x05) = the tunnel id shown
//! by `tunnel-server sessions`; `PP2_TYPE_SSL` (0x20) with client flags SSL + CERT_CONN (or
//! CERT_SESS for a resumed session), verify = 0, and sub-TLVs version (0x21), CN (0x22) and
//! cipher (0x23); and our own, in the range the specification leaves for applications:
//! [`TLV_SUBJECT`], [`TLV_SANS`], [`TLV_SHA256`], [`TLV_SERIAL`].

use crate::authz::identity::{escape, Identity};
use ppp::v2::{Builder, Command, Protocol, Type, Version};
use std::io;
use std::net::{IpAddr, SocketAddr};

/// Custom TLV: the client certificate's full subject, UTF-8 (`CN=alice,OU=dba,O=Example`).
pub(crate) const TLV_SUBJECT: u8 = 0xE0;
/// Custom TLV: its SANs in one line (`DNS:a, URI:spiffe://x, email:b, IP:10.0.0.1`), each
/// value escaped by [`escape::list_item`] (`\,`, `\\`, `\xNN`).
pub(crate) const TLV_SANS: u8 = 0xE1;
/// Custom TLV: SHA-256 of the DER certificate, 64 lower-case hex characters.
pub(crate) const TLV_SHA256: u8 = 0xE2;
/// Custom TLV: the certificate serial number, upper-case hex.
pub(crate) const TLV_SERIAL: u8 = 0xE3;

/// `PP2_CLIENT_SSL`: the client connected over TLS.
pub(crate) const CLIENT_SSL: u8 = 0x01;
/// `PP2_CLIENT_CERT_CONN`: it presented a certificate on this connection.
pub(crate) const CLIENT_CERT_CONN: u8 = 0x02;
/// `PP2_CLIENT_CERT_SESS`: it presented a certificate in this TLS session (resumed).
pub(crate) const CLIENT_CERT_SESS: u8 = 0x04;

/// What goes into one header.
#[derive(Debug, Clone)]
pub(crate) struct ProxyInfo<'a> {
    /// The client's address.
    pub source: SocketAddr,
    /// The gateway address the client connected to.
    pub destination: SocketAddr,
    /// The SNI the client sent.
    pub sni: Option<&'a str>,
    /// Negotiated TLS version (`TLSv1.3`).
    pub tls_version: &'a str,
    /// Negotiated cipher (`TLS_AES_256_GCM_SHA384`).
    pub cipher: &'a str,
    /// Whether the TLS session was resumed.
    pub resumed: bool,
    /// The verified client identity.
    pub identity: &'a Identity,
    /// The tunnel id (`tunnel-server sessions`).
    pub tunnel_id: u64,
}

/// The complete header for `info`.
pub(crate) fn header(info: &ProxyInfo) -> io::Result<Vec<u8>> {
    let id = info.identity;
    let (src, dst) = same_family(info.source, info.destination);
    let mut b =
        Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, (src, dst));
    if let Some(sni) = info.sni {
        b = b.write_tlv(Type::Authority, sni.as_bytes())?;
    }
    b = b.write_tlv(Type::UniqueId, info.tunnel_id.to_string().as_bytes())?;
    b = b.write_tlv(Type::SSL, &ssl_value(info)?)?;
    b = b.write_tlv(TLV_SUBJECT, id.subject.as_bytes())?;
    b = b.write_tlv(TLV_SANS, id.sans().as_bytes())?;
    b = b.write_tlv(TLV_SHA256, id.sha256.as_bytes())?;
    b = b.write_tlv(TLV_SERIAL, id.serial.as_bytes())?;
    b.build()
}

/// The value of `PP2_TYPE_SSL`: client flags, verify result (0 = verified), sub-TLVs.
fn ssl_value(info: &ProxyInfo) -> io::Result<Vec<u8>> {
    let cert = if info.resumed {
        CLIENT_CERT_SESS
    } else {
        CLIENT_CERT_CONN | CLIENT_CERT_SESS
    };
    let mut v = vec![CLIENT_SSL | cert];
    v.extend_from_slice(&0u32.to_be_bytes());
    // Escaped: a NUL in the CN would end it early for a C-string reader.
    let cn = info
        .identity
        .cn
        .first()
        .map(|cn| escape::field_value(cn))
        .unwrap_or_default();
    for (kind, value) in [
        (Type::SSLVersion, info.tls_version),
        (Type::SSLCommonName, cn.as_str()),
        (Type::SSLCipher, info.cipher),
    ] {
        let len = u16::try_from(value.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        v.push(kind as u8);
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(value.as_bytes());
    }
    Ok(v)
}

/// Both addresses in one family (a v4 address becomes v4-mapped v6 next to a v6 one), as
/// the header has one address family.
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |s: SocketAddr| match s.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), s.port()),
        IpAddr::V6(_) => s,
    };
    match (a, b) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => (a, b),
        _ => (v6(a), v6(b)),
    }
}

#[cfg(test)]
mod tests;
