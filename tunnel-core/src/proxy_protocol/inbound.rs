//! PROXY protocol (v1 text and v2 binary, as HAProxy's `send-proxy` / `send-proxy-v2` write
//! it) on gateway listeners behind a load balancer: the header that precedes the TLS
//! handshake names the real client, which the audit event, the logs and the metrics then use.
//!
//! Only peers within the listener's `proxy_protocol_from` may send it (anyone else is refused
//! before a byte is read, or they could claim any address); a missing, malformed or late
//! header is refused within `handshake_timeout`. A `LOCAL` (v2) or `UNKNOWN` (v1) header,
//! which balancers send for their own checks, keeps the balancer's address.

use crate::util::cidr::Cidr;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

/// The v2 signature (12 bytes).
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 line, CRLF included (spec section 2.1).
const V1_MAX: usize = 107;
/// Longest v2 address block accepted (TLVs included); HAProxy sends far less.
const V2_MAX: usize = 1024;

/// Why a connection on a PROXY listener was refused. `Display` is the audit reason; the
/// audit result and the metric label are mapped with every other refusal, in
/// [`crate::gateway::refused::Refused`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderRefused {
    /// The peer is outside `proxy_protocol_from`, so it may not claim addresses.
    #[error("{0} may not send a PROXY header (not in proxy_protocol_from)")]
    NotAllowed(IpAddr),
    /// No complete header within `handshake_timeout`.
    #[error("no complete PROXY header within handshake_timeout ({0:?})")]
    Timeout(Duration),
    /// Not a PROXY header, a malformed one, or the connection ended inside it.
    #[error("{0}")]
    Malformed(String),
}

/// Reads the PROXY header a balancer at `peer` sent, if `peer` may send one; returns the
/// real client's address. Nothing beyond the header is consumed.
pub async fn receive(
    sock: &mut TcpStream,
    peer: SocketAddr,
    from: &[Cidr],
    deadline: Duration,
) -> Result<SocketAddr, ProxyHeaderRefused> {
    if !from.iter().any(|c| c.contains(peer.ip())) {
        return Err(ProxyHeaderRefused::NotAllowed(peer.ip()));
    }
    match tokio::time::timeout(deadline, read_header(sock)).await {
        Err(_) => Err(ProxyHeaderRefused::Timeout(deadline)),
        Ok(Err(why)) => Err(ProxyHeaderRefused::Malformed(why)),
        Ok(Ok(Some(real))) => Ok(real),
        Ok(Ok(None)) => Ok(peer),
    }
}

/// Reads one header from `sock`: `Some(source)`, or `None` for LOCAL / UNKNOWN; an error
/// for anything else, including a stream that ends inside the header. Reads exactly the
/// header's bytes. Generic over the reader so that property tests can feed it bytes.
pub async fn read_header<R: AsyncRead + Unpin>(sock: &mut R) -> Result<Option<SocketAddr>, String> {
    let io = |e: std::io::Error| format!("PROXY header: {e}");
    let mut head = [0u8; 8];
    sock.read_exact(&mut head).await.map_err(io)?;
    if head[..] == V2_SIG[..8] {
        let mut rest = [0u8; 8];
        sock.read_exact(&mut rest).await.map_err(io)?;
        if rest[..4] != V2_SIG[8..] {
            return Err("malformed PROXY v2 signature".into());
        }
        let len = u16::from_be_bytes([rest[6], rest[7]]) as usize;
        if len > V2_MAX {
            return Err(format!("PROXY v2 address block of {len} bytes is too long"));
        }
        let mut body = vec![0u8; len];
        sock.read_exact(&mut body).await.map_err(io)?;
        return parse_v2(rest[4], rest[5], &body);
    }
    if &head[..6] != b"PROXY " {
        return Err("no PROXY header (the listener has proxy_protocol = true)".into());
    }
    // v1: read up to the LF one byte at a time, so that no TLS byte is consumed.
    let mut line = head.to_vec();
    while !line.ends_with(b"\n") {
        if line.len() >= V1_MAX {
            return Err("PROXY v1 line longer than 107 bytes".into());
        }
        line.push(sock.read_u8().await.map_err(io)?);
    }
    parse_v1(&line)
}

/// Parses a v1 line (`PROXY TCP4 src dst sport dport\r\n`) with `ppp`.
pub fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, String> {
    use ppp::v1::{Addresses, Header};
    let bad = |e: &dyn std::fmt::Display| format!("malformed PROXY v1 header: {e}");
    let h = Header::try_from(line).map_err(|e| bad(&e))?;
    if h.header.len() != line.len() {
        return Err(bad(&"bytes after the line end"));
    }
    Ok(match h.addresses {
        Addresses::Unknown => None,
        Addresses::Tcp4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        Addresses::Tcp6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
    })
}

/// Parses a v2 header from its version/command byte, family byte and address block (what
/// follows the signature) with `ppp`.
pub fn parse_v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Result<Option<SocketAddr>, String> {
    use ppp::v2::{Addresses, Command, Header};
    let len = u16::try_from(body.len()).map_err(|_| "PROXY v2 address block too long")?;
    let mut whole = Vec::with_capacity(16 + body.len());
    whole.extend_from_slice(V2_SIG);
    whole.extend_from_slice(&[ver_cmd, fam]);
    whole.extend_from_slice(&len.to_be_bytes());
    whole.extend_from_slice(body);
    let h = Header::try_from(whole.as_slice())
        .map_err(|e| format!("malformed PROXY v2 header: {e}"))?;
    if h.command == Command::Local {
        return Ok(None); // the balancer's own connection (a health check)
    }
    match h.addresses {
        Addresses::Unspecified => Ok(None),
        Addresses::IPv4(a) => Ok(Some(SocketAddr::new(
            a.source_address.into(),
            a.source_port,
        ))),
        Addresses::IPv6(a) => Ok(Some(SocketAddr::new(
            a.source_address.into(),
            a.source_port,
        ))),
        Addresses::Unix(_) => Err("PROXY v2 address family is not TCP over IPv4/IPv6".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_lines() {
        let ok = |l: &str| parse_v1(l.as_bytes());
        assert_eq!(
            ok("PROXY TCP4 192.0.2.7 10.0.0.1 51000 8443\r\n"),
            Ok(Some("192.0.2.7:51000".parse().unwrap()))
        );
        assert_eq!(
            ok("PROXY TCP6 2001:db8::7 2001:db8::1 51000 8443\r\n"),
            Ok(Some("[2001:db8::7]:51000".parse().unwrap()))
        );
        assert_eq!(ok("PROXY UNKNOWN\r\n"), Ok(None));
        for bad in [
            "PROXY TCP4 192.0.2.7 10.0.0.1 51000 8443\n",
            "PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
            "PROXY TCP4 192.0.2.7 10.0.0.1 70000 8443\r\n",
            "PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",
            "PROXY TCP4 192.0.2.7\r\n",
        ] {
            assert!(ok(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn v2_blocks() {
        let mut v4 = vec![192, 0, 2, 7, 10, 0, 0, 1];
        v4.extend_from_slice(&51000u16.to_be_bytes());
        v4.extend_from_slice(&8443u16.to_be_bytes());
        assert_eq!(
            parse_v2(0x21, 0x11, &v4),
            Ok(Some("192.0.2.7:51000".parse().unwrap()))
        );
        // TLVs after the addresses are ignored.
        let mut tlv = v4.clone();
        tlv.extend_from_slice(&[0x04, 0, 1, 0]);
        assert!(parse_v2(0x21, 0x11, &tlv).unwrap().is_some());
        assert_eq!(parse_v2(0x20, 0x00, &[]), Ok(None));
        let mut v6 = vec![0u8; 36];
        v6[15] = 1;
        v6[32..34].copy_from_slice(&443u16.to_be_bytes());
        assert_eq!(
            parse_v2(0x21, 0x21, &v6),
            Ok(Some("[::1]:443".parse().unwrap()))
        );
        assert!(parse_v2(0x21, 0x11, &v4[..11]).is_err());
        assert!(parse_v2(0x11, 0x11, &v4).is_err());
        assert!(parse_v2(0x22, 0x11, &v4).is_err());
        assert!(parse_v2(0x21, 0x31, &v4).is_err());
    }

    #[tokio::test]
    async fn reads_exactly_the_header_and_refuses_strangers_and_silence() {
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let from = ["127.0.0.0/8".parse::<Cidr>().unwrap()];
        let mut c = TcpStream::connect(addr).await.unwrap();
        let (mut s, peer) = l.accept().await.unwrap();
        c.write_all(b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 8443\r\nTLS")
            .await
            .unwrap();
        let real = receive(&mut s, peer, &from, Duration::from_secs(5)).await;
        assert_eq!(real, Ok("192.0.2.7:51000".parse().unwrap()));
        let mut rest = [0u8; 3];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"TLS");
        // Silence: refused at the deadline.
        let _c = TcpStream::connect(addr).await.unwrap();
        let (mut s, peer) = l.accept().await.unwrap();
        let r = receive(&mut s, peer, &from, Duration::from_millis(200)).await;
        assert!(matches!(r, Err(ProxyHeaderRefused::Timeout(_))), "{r:?}");
        // Not an allowed balancer.
        let other = ["10.0.0.0/8".parse::<Cidr>().unwrap()];
        let r = receive(&mut s, peer, &other, Duration::from_secs(5)).await;
        assert!(matches!(r, Err(ProxyHeaderRefused::NotAllowed(_))), "{r:?}");
        // A TLS ClientHello where the header should be.
        let mut c = TcpStream::connect(addr).await.unwrap();
        let (mut s, peer) = l.accept().await.unwrap();
        c.write_all(&[0x16, 3, 1, 0, 0xc8, 1, 0, 0, 0xc4])
            .await
            .unwrap();
        let r = receive(&mut s, peer, &from, Duration::from_secs(5)).await;
        assert!(matches!(r, Err(ProxyHeaderRefused::Malformed(_))), "{r:?}");
    }
}
