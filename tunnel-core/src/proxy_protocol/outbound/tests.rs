use super::*;

fn alice() -> Identity {
    Identity {
        subject: "CN=alice,OU=dba,O=Example".into(),
        cn: vec!["alice".into()],
        dns: vec!["alice.example".into()],
        sha256: "ab".repeat(32),
        serial: "1F".into(),
        ..Identity::default()
    }
}

fn tlvs(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let len = u16::from_be_bytes([b[1], b[2]]) as usize;
        out.push((b[0], b[3..3 + len].to_vec()));
        b = &b[3 + len..];
    }
    out
}

#[test]
fn header_bytes_by_hand() {
    let id = alice();
    let info = ProxyInfo {
        source: "192.0.2.7:40000".parse().unwrap(),
        destination: "198.51.100.1:8443".parse().unwrap(),
        sni: Some("db"),
        tls_version: "TLSv1.3",
        cipher: "TLS_AES_128_GCM_SHA256",
        resumed: false,
        identity: &id,
        tunnel_id: 42,
    };
    let h = header(&info).unwrap();
    assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!(h[12], 0x21, "version 2, PROXY");
    assert_eq!(h[13], 0x11, "TCP over IPv4");
    let len = u16::from_be_bytes([h[14], h[15]]) as usize;
    assert_eq!(h.len(), 16 + len);
    assert_eq!(&h[16..20], &[192, 0, 2, 7]);
    assert_eq!(&h[20..24], &[198, 51, 100, 1]);
    assert_eq!(u16::from_be_bytes([h[24], h[25]]), 40000);
    assert_eq!(u16::from_be_bytes([h[26], h[27]]), 8443);
    let t = tlvs(&h[28..]);
    let kinds: Vec<u8> = t.iter().map(|x| x.0).collect();
    assert_eq!(kinds, vec![0x02, 0x05, 0x20, 0xE0, 0xE1, 0xE2, 0xE3]);
    assert_eq!(t[0].1, b"db");
    assert_eq!(t[1].1, b"42");
    let ssl = &t[2].1;
    assert_eq!(ssl[0], CLIENT_SSL | CLIENT_CERT_CONN | CLIENT_CERT_SESS);
    assert_eq!(&ssl[1..5], &[0, 0, 0, 0], "verified");
    let sub = tlvs(&ssl[5..]);
    assert_eq!(
        sub,
        vec![
            (0x21, b"TLSv1.3".to_vec()),
            (0x22, b"alice".to_vec()),
            (0x23, b"TLS_AES_128_GCM_SHA256".to_vec())
        ]
    );
    assert_eq!(t[3].1, b"CN=alice,OU=dba,O=Example");
    assert_eq!(t[4].1, b"DNS:alice.example");
    assert_eq!(t[5].1, "ab".repeat(32).as_bytes());
    assert_eq!(t[6].1, b"1F");
    // The crate's own parser agrees.
    let parsed = ppp::v2::Header::try_from(&h[..]).unwrap();
    assert_eq!(parsed.tlvs().count(), 7);
}

#[test]
fn mixed_families_become_v6_and_resumed_sets_cert_sess_only() {
    let id = alice();
    let info = ProxyInfo {
        source: "192.0.2.7:1".parse().unwrap(),
        destination: "[::1]:2".parse().unwrap(),
        sni: None,
        tls_version: "TLSv1.3",
        cipher: "x",
        resumed: true,
        identity: &id,
        tunnel_id: 1,
    };
    let h = header(&info).unwrap();
    assert_eq!(h[13], 0x21, "TCP over IPv6");
    let src: [u8; 16] = h[16..32].try_into().unwrap();
    assert_eq!(
        std::net::Ipv6Addr::from(src),
        "::ffff:192.0.2.7".parse::<std::net::Ipv6Addr>().unwrap()
    );
    let t = tlvs(&h[52..]);
    assert_eq!(t[0].0, 0x05, "no SNI, no AUTHORITY");
    assert_eq!(t[1].1[0], CLIENT_SSL | CLIENT_CERT_SESS);
}

/// Names a backend could misread are escaped in `0xE1` and the CN sub-TLV `0x22`: a comma
/// would split off a fake SAN for a comma-splitting parser, a NUL would end a C string at
/// `victim@corp.com`. The certificate is built here; the expected bytes are written by hand.
#[test]
fn sans_and_cn_with_separators_backslashes_and_nul_are_escaped() {
    use crate::pki::{self, CertSpec};
    let ca = pki::new_ca("Test CA", 30).unwrap();
    let mut spec = CertSpec::client("victim@corp.com\0@example.com");
    spec.dns = vec!["a, URI:https://idp#admin".into(), "b\\, c".into()];
    spec.uri = vec!["https://x/\\x00".into()];
    spec.email = vec!["victim@corp.com\0@example.com".into()];
    let leaf = pki::new_leaf(&ca, &spec).unwrap();
    let id = Identity::from_cert(&leaf.cert);
    let info = ProxyInfo {
        source: "192.0.2.7:40000".parse().unwrap(),
        destination: "198.51.100.1:8443".parse().unwrap(),
        sni: None,
        tls_version: "TLSv1.3",
        cipher: "x",
        resumed: false,
        identity: &id,
        tunnel_id: 7,
    };
    let h = header(&info).unwrap();
    let t = tlvs(&h[28..]);
    let sans = t.iter().find(|x| x.0 == TLV_SANS).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sans.1),
        r"DNS:a\, URI:https://idp#admin, DNS:b\\\, c, URI:https://x/\\x00, email:victim@corp.com\x00@example.com"
    );
    let ssl = &t.iter().find(|x| x.0 == 0x20).unwrap().1;
    let cn = tlvs(&ssl[5..]).into_iter().find(|x| x.0 == 0x22).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&cn.1),
        r"victim@corp.com\x00@example.com"
    );
}
