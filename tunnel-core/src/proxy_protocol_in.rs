//! PROXY protocol (v1 text and v2 binary, as HAProxy's `send-proxy` / `send-proxy-v2` write
//! it) on gateway listeners behind a load balancer: the header that precedes the TLS
//! handshake names the real client, which the audit event, the logs and the metrics then use.
//!
//! Only peers within the listener's `proxy_protocol_from` may send it (anyone else is refused
//! before a byte is read, or they could claim any address); a missing, malformed or late
//! header is refused within `handshake_timeout`. A `LOCAL` (v2) or `UNKNOWN` (v1) header,
//! which balancers send for their own checks, keeps the balancer's address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

/// The v2 signature (12 bytes).
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 line, CRLF included (spec section 2.1).
const V1_MAX: usize = 107;
/// Longest v2 address block accepted (TLVs included); HAProxy sends far less.
const V2_MAX: usize = 1024;

/// An IP network `addr/prefix` (`10.0.0.0/8`, `::1/128`; a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `text`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (text, None),
        };
        let net: IpAddr = ip
            .parse()
            .map_err(|_| format!("{text:?} is not an address or network such as \"10.0.0.0/8\""))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: prefix length must be 0..={max}"))?,
        };
        Ok(Cidr { net, prefix })
    }

    /// Whether `ip` is inside (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Why a connection on a PROXY listener was refused. `Display` is the audit reason; the
/// audit result and the metric label are mapped with every other refusal, in
/// [`crate::refused::Refused`].
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

/// Parses a v1 line (`PROXY TCP4 src dst sport dport\r\n`).
pub fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, String> {
    let bad = || "malformed PROXY v1 header".to_string();
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let text = text.strip_suffix("\r\n").ok_or_else(bad)?;
    let parts: Vec<&str> = text.split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        ["PROXY", fam @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src.parse().map_err(|_| bad())?;
            if ip.is_ipv4() != (*fam == "TCP4") {
                return Err(bad());
            }
            let port: u16 = sport.parse().map_err(|_| bad())?;
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Err(bad()),
    }
}

/// Parses the v2 version/command byte, family byte and address block.
pub fn parse_v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Result<Option<SocketAddr>, String> {
    if ver_cmd >> 4 != 2 {
        return Err(format!("PROXY v2 header with version {}", ver_cmd >> 4));
    }
    match ver_cmd & 0x0f {
        0 => return Ok(None), // LOCAL: the balancer's own connection
        1 => {}
        c => return Err(format!("PROXY v2 header with unknown command {c}")),
    }
    let short = || "PROXY v2 address block too short".to_string();
    match fam >> 4 {
        0 => Ok(None), // AF_UNSPEC
        1 => {
            let b = body.get(..12).ok_or_else(short)?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([b[8], b[9]]),
            )))
        }
        2 => {
            let b = body.get(..36).ok_or_else(short)?;
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[..16]);
            let ip = Ipv6Addr::from(a);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([b[32], b[33]]),
            )))
        }
        f => Err(format!(
            "PROXY v2 address family {f} is not TCP over IPv4/IPv6"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        let one = Cidr::parse("::1").unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "fe80::/129",
            "10.0.0/8",
            "host/8",
            "10.0.0.0/x",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

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
        let from = [Cidr::parse("127.0.0.0/8").unwrap()];
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
        let other = [Cidr::parse("10.0.0.0/8").unwrap()];
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
