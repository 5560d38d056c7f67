//! PROXY protocol headers (v1 text, v2 binary) on gateway listeners: arbitrary bytes never
//! panic, and a header built here by hand from the specification (HAProxy's
//! proxy-protocol.txt: the 12-byte signature, version/command 0x21, family/protocol, a
//! big-endian length, then the addresses, ports and any TLVs) yields exactly the source
//! address put in, consuming exactly the header; every truncation of it is refused.

use super::common::config;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use tunnel_core::proxy_protocol::inbound::{parse_v1, parse_v2, read_header};

/// The v2 signature, from the specification (section 2.2).
const SIG: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

/// Reads one header from `bytes`; returns the result and the bytes left unread.
fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, String>, Vec<u8>) {
    let mut r = bytes;
    let got = runtime().block_on(read_header(&mut r));
    (got, r.to_vec())
}

/// A v2 PROXY/TCP header from `src` to `dst`, followed by `tlvs` inside the address block.
fn v2_header(src: SocketAddr, dst: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    let fam = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            block.extend_from_slice(&s.octets());
            block.extend_from_slice(&d.octets());
            0x11 // AF_INET, STREAM
        }
        (s, d) => {
            block.extend_from_slice(&to_v6(s).octets());
            block.extend_from_slice(&to_v6(d).octets());
            0x21 // AF_INET6, STREAM
        }
    };
    block.extend_from_slice(&src.port().to_be_bytes());
    block.extend_from_slice(&dst.port().to_be_bytes());
    block.extend_from_slice(tlvs);
    let mut h = SIG.to_vec();
    h.push(0x21); // version 2, PROXY
    h.push(fam);
    h.extend_from_slice(&(block.len() as u16).to_be_bytes());
    h.extend_from_slice(&block);
    h
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(a, p)| SocketAddr::new(Ipv4Addr::from(a).into(), p)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(a, p)| SocketAddr::new(Ipv6Addr::from(a).into(), p)),
    ]
}

/// Bytes that start like a header often enough to reach the parsers' inner branches.
fn header_like() -> impl Strategy<Value = Vec<u8>> {
    let tail = prop::collection::vec(any::<u8>(), 0..120);
    prop_oneof![
        2 => tail.clone(),
        2 => tail.clone().prop_map(|t| [SIG.to_vec(), t].concat()),
        1 => (any::<u8>(), any::<u8>(), 0u16..64, tail.clone())
            .prop_map(|(vc, fam, len, t)| [SIG.to_vec(), vec![vc, fam], len.to_be_bytes().to_vec(), t].concat()),
        2 => "PROXY (TCP4|TCP6|UNKNOWN|UDP4)?( [0-9a-f.:]{0,20}){0,5}(\r\n|\n)?"
            .prop_map(String::into_bytes),
        1 => tail.prop_map(|t| [b"PROXY ".to_vec(), t].concat()),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in header_like()) {
        let (got, rest) = read(&bytes);
        prop_assert!(rest.len() <= bytes.len());
        if got.is_ok() {
            prop_assert!(bytes.len() - rest.len() >= 15, "a header is at least 15 bytes");
        }
        let _ = parse_v1(&bytes);
        if let [vc, fam, body @ ..] = bytes.as_slice() {
            let _ = parse_v2(*vc, *fam, body);
        }
    }

    #[test]
    fn a_v2_header_yields_exactly_its_source_and_truncations_are_refused(
        src in addr(),
        dst in addr(),
        tlvs in prop::collection::vec(any::<u8>(), 0..40),
        after in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let h = v2_header(src, dst, &tlvs);
        let want = match (src.ip(), dst.ip()) {
            (IpAddr::V4(_), IpAddr::V4(_)) => src,
            (ip, _) => SocketAddr::new(to_v6(ip).into(), src.port()),
        };
        let (got, rest) = read(&[h.clone(), after.clone()].concat());
        prop_assert_eq!(got, Ok(Some(want)));
        prop_assert_eq!(rest, after, "exactly the header is consumed");
        for cut in 0..h.len() {
            let (got, _) = read(&h[..cut]);
            prop_assert!(got.is_err(), "{} of {} bytes gave {:?}", cut, h.len(), got);
        }
    }

    #[test]
    fn a_v1_line_yields_exactly_its_source_and_truncations_are_refused(
        src in addr(),
        dst_port in any::<u16>(),
        after in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let (fam, dst) = match src.ip() {
            IpAddr::V4(_) => ("TCP4", "192.0.2.1"),
            IpAddr::V6(_) => ("TCP6", "2001:db8::1"),
        };
        let line = format!("PROXY {fam} {} {dst} {} {dst_port}\r\n", src.ip(), src.port());
        let (got, rest) = read(&[line.as_bytes(), &after].concat());
        prop_assert_eq!(got, Ok(Some(src)));
        prop_assert_eq!(rest, after);
        for cut in 0..line.len() {
            let (got, _) = read(&line.as_bytes()[..cut]);
            prop_assert!(got.is_err(), "{:?} gave {:?}", &line[..cut], got);
        }
    }
}
