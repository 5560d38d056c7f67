//! The rollback rule, table-driven: positions written out by hand, and the cRLNumber read
//! from CRLs built with a known number.

use super::*;
use openssl::asn1::{Asn1Object, Asn1OctetString, Asn1Time};
use openssl::x509::{X509Crl, X509CrlBuilder, X509Extension};

const NOW: i64 = 1_700_000_000;

/// A position; `tag` stands for the content (two lists with the same tag are the same list).
fn at(number: Option<&[u8]>, this_update: i64, next_update: Option<i64>, tag: u8) -> Issue {
    Issue {
        number: number.map(<[u8]>::to_vec),
        this_update: Some(this_update),
        next_update,
        digest: [tag; 32],
    }
}

#[test]
fn which_list_stays_in_force() {
    let day = Some(NOW + 86_400);
    let (t1, t2) = (NOW - 7200, NOW - 3600);
    use Refusal::*;
    use Verdict::*;
    let cases: Vec<(&str, Issue, Issue, Verdict)> = vec![
        (
            "higher number",
            at(Some(&[5]), t1, day, 1),
            at(Some(&[6]), t1, day, 2),
            Replace,
        ),
        (
            "lower number",
            at(Some(&[6]), t1, day, 1),
            at(Some(&[5]), t1, day, 2),
            Keep(Older),
        ),
        (
            "lower number, later thisUpdate",
            at(Some(&[6]), t1, day, 1),
            at(Some(&[5]), t2, day, 2),
            Keep(Older),
        ),
        (
            "higher number, earlier thisUpdate",
            at(Some(&[5]), t2, day, 1),
            at(Some(&[6]), t1, day, 2),
            Replace,
        ),
        (
            "equal number, other content",
            at(Some(&[5]), t1, day, 1),
            at(Some(&[5]), t2, day, 2),
            Keep(SamePosition),
        ),
        (
            "the same list",
            at(Some(&[5]), t1, day, 1),
            at(Some(&[5]), t1, day, 1),
            Same,
        ),
        // 256 against 255: longer magnitudes are larger whatever their first byte.
        (
            "number 256 after 255",
            at(Some(&[0xff]), t1, day, 1),
            at(Some(&[1, 0]), t1, day, 2),
            Replace,
        ),
        (
            "number 255 after 256",
            at(Some(&[1, 0]), t1, day, 1),
            at(Some(&[0xff]), t1, day, 2),
            Keep(Older),
        ),
        (
            "offered unnumbered, later thisUpdate",
            at(Some(&[9]), t1, day, 1),
            at(None, t2, day, 2),
            Replace,
        ),
        (
            "offered unnumbered, earlier thisUpdate",
            at(Some(&[9]), t2, day, 1),
            at(None, t1, day, 2),
            Keep(Older),
        ),
        (
            "current unnumbered, earlier thisUpdate",
            at(None, t2, day, 1),
            at(Some(&[9]), t1, day, 2),
            Keep(Older),
        ),
        (
            "neither numbered, later thisUpdate",
            at(None, t1, day, 1),
            at(None, t2, day, 2),
            Replace,
        ),
        (
            "neither numbered, same second",
            at(None, t1, day, 1),
            at(None, t1, day, 2),
            Keep(SamePosition),
        ),
        (
            "offered expired, higher number",
            at(Some(&[5]), t1, day, 1),
            at(Some(&[6]), t2, Some(NOW - 1), 2),
            Keep(Expired),
        ),
        (
            "both expired, higher number",
            at(Some(&[5]), t1, Some(NOW - 60), 1),
            at(Some(&[6]), t2, Some(NOW - 1), 2),
            Replace,
        ),
        (
            "current expired, lower number",
            at(Some(&[6]), t1, Some(NOW - 1), 1),
            at(Some(&[5]), t2, day, 2),
            Keep(Older),
        ),
        (
            "offered without nextUpdate, higher number",
            at(Some(&[5]), t1, day, 1),
            at(Some(&[6]), t2, None, 2),
            Replace,
        ),
    ];
    for (what, current, offered, want) in cases {
        assert_eq!(judge(&current, &offered, NOW), want, "{what}");
    }
}

#[test]
fn positions_are_logged_as_numbers_or_else_as_times() {
    // 2023-11-14T22:13:20Z is unix 1_700_000_000.
    let cases: Vec<(Issue, Issue, (&str, &str))> = vec![
        (
            at(Some(&[1, 0]), NOW, None, 1),
            at(Some(&[0xff]), NOW, None, 2),
            ("CRL number 256", "CRL number 255"),
        ),
        (
            at(Some(&[1, 0]), NOW, None, 1),
            at(None, NOW - 3600, None, 2),
            (
                "thisUpdate 2023-11-14T22:13:20Z",
                "thisUpdate 2023-11-14T21:13:20Z",
            ),
        ),
    ];
    for (current, offered, (c, o)) in cases {
        assert_eq!(
            positions(&current, &offered),
            (c.to_string(), o.to_string())
        );
    }
}

#[test]
fn crl_numbers_are_read_as_unsigned_integers() {
    let cases: Vec<(&[u8], Option<&[u8]>)> = vec![
        (&[0x02, 0x01, 0x05], Some(&[0x05])),
        (&[0x02, 0x02, 0x00, 0xff], Some(&[0xff])),
        (&[0x02, 0x01, 0x00], Some(&[])),
        (&[0x02, 0x01, 0xff], None), // -1
        (&[0x04, 0x01, 0x05], None), // an OCTET STRING
        (&[0x02, 0x00], None),
        (&[], None),
    ];
    for (der, want) in cases {
        assert_eq!(unsigned(der).as_deref(), want, "{der:02x?}");
    }
}

/// A CRL with cRLNumber `number` (the DER INTEGER; rust-openssl builds none without one).
fn crl_numbered(number: &[u8]) -> X509Crl {
    let ca = crate::pki::new_ca("Numbered CA", 1).unwrap();
    let ext = |oid: &str, der: &[u8]| {
        let obj = Asn1Object::from_str(oid).unwrap();
        let value = Asn1OctetString::new_from_bytes(der).unwrap();
        X509Extension::new_from_der(&obj, false, &value).unwrap()
    };
    let mut b = X509CrlBuilder::new().unwrap();
    b.set_issuer_name(ca.cert.subject_name()).unwrap();
    b.set_last_update(&Asn1Time::from_unix(NOW).unwrap())
        .unwrap();
    b.set_next_update(&Asn1Time::from_unix(NOW + 600).unwrap())
        .unwrap();
    // AuthorityKeyIdentifier { keyIdentifier [0] 01 }, which rust-openssl also wants.
    b.append_extension(ext("2.5.29.35", &[0x30, 0x03, 0x80, 0x01, 0x01]))
        .unwrap();
    b.append_extension(ext("2.5.29.20", number)).unwrap();
    b.sign(&ca.key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    b.build().unwrap()
}

#[test]
fn the_position_of_a_real_crl() {
    // 300 (0x012c), and -1, which RFC 5280 does not allow: read as no number.
    let numbered = Issue::of(&crl_numbered(&[0x02, 0x02, 0x01, 0x2c]));
    assert_eq!(numbered.number.as_deref(), Some(&[0x01, 0x2c][..]));
    assert_eq!(numbered.this_update, Some(NOW));
    assert_eq!(numbered.next_update, Some(NOW + 600));
    let negative = Issue::of(&crl_numbered(&[0x02, 0x01, 0xff]));
    assert_eq!(negative.number, None);
    assert_eq!(
        positions(&numbered, &negative),
        (
            "thisUpdate 2023-11-14T22:13:20Z".to_string(),
            "thisUpdate 2023-11-14T22:13:20Z".to_string()
        )
    );
}
