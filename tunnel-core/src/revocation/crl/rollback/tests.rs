//! The rollback rule, table-driven: positions written out by hand, and the cRLNumber read
//! from CRLs built with a known number.

use super::*;
use openssl::asn1::{Asn1Object, Asn1OctetString, Asn1Time};
use openssl::x509::{X509Crl, X509CrlBuilder, X509Extension};

const NOW: i64 = 1_700_000_000;

/// A position; `tag` stands for the content (two lists with the same tag are the same list).
fn at(number: Option<&[u8]>, this_update: i64, next_update: Option<i64>, tag: u8) -> Position {
    Position {
        number: number.map(<[u8]>::to_vec),
        this_update: Some(this_update),
        next_update,
        digest: [tag; 32],
    }
}

type Case = (&'static str, Position, Position, Verdict);

fn check(cases: Vec<Case>) {
    for (what, current, offered, want) in cases {
        assert_eq!(judge(&current, &offered, NOW), want, "{what}");
    }
}

#[test]
fn numbers_decide_when_both_lists_have_one() {
    let (t1, t2) = (NOW - 7200, NOW - 3600);
    // Numbered, current until tomorrow.
    let n = |v: &[u8], t: i64, tag: u8| at(Some(v), t, Some(NOW + 86_400), tag);
    use CrlRefusal::*;
    use Verdict::*;
    check(vec![
        ("higher", n(&[5], t1, 1), n(&[6], t1, 2), Replace),
        ("lower", n(&[6], t1, 1), n(&[5], t1, 2), Keep(Older)),
        (
            "lower, later thisUpdate",
            n(&[6], t1, 1),
            n(&[5], t2, 2),
            Keep(Older),
        ),
        (
            "higher, earlier thisUpdate",
            n(&[5], t2, 1),
            n(&[6], t1, 2),
            Replace,
        ),
        (
            "equal, other content",
            n(&[5], t1, 1),
            n(&[5], t2, 2),
            Keep(SamePosition),
        ),
        ("the same list", n(&[5], t1, 1), n(&[5], t1, 1), Same),
        // Longer magnitudes are larger whatever their first byte.
        (
            "256 after 255",
            n(&[0xff], t1, 1),
            n(&[1, 0], t1, 2),
            Replace,
        ),
        (
            "255 after 256",
            n(&[1, 0], t1, 1),
            n(&[0xff], t1, 2),
            Keep(Older),
        ),
    ]);
}

#[test]
fn this_update_decides_when_a_list_has_no_number() {
    let (t1, t2) = (NOW - 7200, NOW - 3600);
    let day = Some(NOW + 86_400);
    let n = |v: &[u8], t: i64, tag: u8| at(Some(v), t, day, tag);
    let u = |t: i64, tag: u8| at(None, t, day, tag);
    use CrlRefusal::*;
    use Verdict::*;
    check(vec![
        (
            "offered unnumbered, later",
            n(&[9], t1, 1),
            u(t2, 2),
            Replace,
        ),
        (
            "offered unnumbered, earlier",
            n(&[9], t2, 1),
            u(t1, 2),
            Keep(Older),
        ),
        (
            "current unnumbered, earlier",
            u(t2, 1),
            n(&[9], t1, 2),
            Keep(Older),
        ),
        ("neither numbered, later", u(t1, 1), u(t2, 2), Replace),
        (
            "neither, same second",
            u(t1, 1),
            u(t1, 2),
            Keep(SamePosition),
        ),
    ]);
}

#[test]
fn an_expired_list_never_replaces_a_current_one() {
    let (t1, t2) = (NOW - 7200, NOW - 3600);
    let (day, past, long_past) = (Some(NOW + 86_400), Some(NOW - 1), Some(NOW - 60));
    let n = |v: &[u8], t: i64, next: Option<i64>, tag: u8| at(Some(v), t, next, tag);
    use CrlRefusal::*;
    use Verdict::*;
    check(vec![
        (
            "offered expired, higher",
            n(&[5], t1, day, 1),
            n(&[6], t2, past, 2),
            Keep(Expired),
        ),
        (
            "both expired, higher",
            n(&[5], t1, long_past, 1),
            n(&[6], t2, past, 2),
            Replace,
        ),
        (
            "current expired, lower",
            n(&[6], t1, past, 1),
            n(&[5], t2, day, 2),
            Keep(Older),
        ),
        (
            "never expires, higher",
            n(&[5], t1, day, 1),
            n(&[6], t2, None, 2),
            Replace,
        ),
    ]);
}

#[test]
fn positions_are_logged_as_numbers_or_else_as_times() {
    // 2023-11-14T22:13:20Z is unix 1_700_000_000.
    let cases: Vec<(Position, Position, (&str, &str))> = vec![
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
    let numbered = Position::of(&crl_numbered(&[0x02, 0x02, 0x01, 0x2c]));
    assert_eq!(numbered.number.as_deref(), Some(&[0x01, 0x2c][..]));
    assert_eq!(numbered.this_update, Some(NOW));
    assert_eq!(numbered.next_update, Some(NOW + 600));
    let negative = Position::of(&crl_numbered(&[0x02, 0x01, 0xff]));
    assert_eq!(negative.number, None);
    assert_eq!(
        positions(&numbered, &negative),
        (
            "thisUpdate 2023-11-14T22:13:20Z".to_string(),
            "thisUpdate 2023-11-14T22:13:20Z".to_string()
        )
    );
}
