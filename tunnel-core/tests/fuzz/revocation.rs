//! CRL and OCSP response parsing against a model read with OpenSSL directly: an arbitrary or
//! mutated CRL that still loads is signed by the CA and revokes exactly the serials it lists;
//! random bytes are never an OCSP answer, and a mutated response that still verifies is good
//! only for the certificate it names. A CRL says revoked exactly for the serials it lists.
//!
//! With `FUZZ_COUNT=1 … -- --nocapture` each case a model judged prints `MEANINGFUL <what>`:
//! most random edits break the CA's signature, so the re-signed mutations carry the CRL model.

use super::common::{config, edits, fixture, mutate};
use openssl::x509::X509;
use proptest::prelude::*;
use tunnel_core::config::CrlCoverage;
use tunnel_core::pki;
use tunnel_core::revocation::crl::{CrlCheck, CrlSet};
use tunnel_core::revocation::ocsp::{parse_response, store_of, OcspError, Verdict};

/// What the model expects of a CRL file the gateway loaded, read with OpenSSL directly.
struct CrlModel {
    /// Serials it lists.
    listed: Vec<openssl::bn::BigNum>,
    /// Its nextUpdate (Unix time).
    next: i64,
    /// Whether it is the fixture CA's list: issuer name equal to the CA's (OpenSSL's
    /// comparison), its authority key id (if any) the CA's key id. Anything else is taken
    /// for an intermediate CA's list and applies to none of the fixture's chains.
    ours: bool,
}

/// The model of a loaded CRL file: the CA's list must be signed by the CA.
fn crl_model(pem: &[u8]) -> Result<CrlModel, TestCaseError> {
    let f = fixture();
    let crl = openssl::x509::X509Crl::from_pem(pem)
        .or_else(|_| openssl::x509::X509Crl::from_der(pem))
        .map_err(|e| TestCaseError::fail(format!("loaded, yet OpenSSL cannot read it: {e}")))?;
    let named =
        crl.issuer_name().try_cmp(f.ca.cert.subject_name()).ok() == Some(std::cmp::Ordering::Equal);
    let ski = f.ca.cert.subject_key_id().map(|k| k.as_slice().to_vec());
    let keyed = match (aki_keyid_model(&crl.to_der().unwrap()), ski) {
        (Some(a), Some(k)) => a == k,
        _ => true,
    };
    let ours = named && keyed;
    if ours {
        prop_assert!(
            crl.verify(&f.ca.cert.public_key().unwrap())
                .unwrap_or(false),
            "loaded the CA's CRL whose signature does not verify"
        );
    }
    let listed = crl
        .get_revoked()
        .map(|st| {
            st.iter()
                .map(|r| r.serial_number().to_bn().unwrap())
                .collect()
        })
        .unwrap_or_default();
    let next = crl
        .next_update()
        .and_then(|t| tunnel_core::util::time::asn1_to_unix(t).ok())
        .unwrap_or(i64::MAX);
    Ok(CrlModel { listed, next, ours })
}

/// Loads `pem` as the only CRL; when it loads, every fixture certificate is judged as the
/// model says (revoked exactly when listed, good otherwise while the CRL is current).
fn load_and_check(pem: &[u8], case: u64, what: &str) -> Result<(), TestCaseError> {
    let f = fixture();
    let path = f.dir.join(format!("crl-{}-{case}.pem", std::process::id()));
    std::fs::write(&path, pem).expect("write");
    let cfg = f.dir.join("server.toml");
    let res = CrlSet::load(
        &cfg,
        std::slice::from_ref(&path),
        std::slice::from_ref(&f.ca.cert),
        CrlCoverage::Chain,
        None,
    );
    let _ = std::fs::remove_file(&path);
    match res {
        Ok(set) => {
            if std::env::var_os("FUZZ_COUNT").is_some() {
                // scripts/fuzz-style runs can count the cases a model judged.
                eprintln!("MEANINGFUL {what}");
            }
            let m = crl_model(pem)?;
            let now = tunnel_core::util::time::unix_now();
            for (i, c) in f.clients.iter().enumerate() {
                let serial = c.cert.serial_number().to_bn().unwrap();
                // The fixture CA is "Fuzz CA" (common.rs); coverage `chain` requires its CRL.
                let want = if !m.ours {
                    CrlCheck::Missing("CN=Fuzz CA".into())
                } else if m.listed.contains(&serial) {
                    CrlCheck::Revoked
                } else if m.next < now {
                    CrlCheck::Expired(m.next)
                } else {
                    CrlCheck::Good
                };
                let got = set.check_chain(&[c.cert.clone(), f.ca.cert.clone()], now);
                prop_assert_eq!(got, want, "client {}", i);
            }
        }
        Err(e) => {
            prop_assert!(
                e.to_string().starts_with(&cfg.display().to_string()),
                "{}",
                e
            );
            prop_assert_eq!(e.key, "crl[0]");
        }
    }
    Ok(())
}

fn der_of_pem(pem: &[u8]) -> Vec<u8> {
    openssl::x509::X509Crl::from_pem(pem)
        .unwrap()
        .to_der()
        .unwrap()
}

fn pem_of_der(der: &[u8]) -> Vec<u8> {
    let b64 = openssl::base64::encode_block(der);
    let mut out = b"-----BEGIN X509 CRL-----\n".to_vec();
    for chunk in b64.as_bytes().chunks(64) {
        out.extend_from_slice(chunk);
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END X509 CRL-----\n");
    out
}

/// One DER element at the start of `d`: (whole element, rest). Definite lengths only.
fn der_element(d: &[u8]) -> Option<(&[u8], &[u8])> {
    let first = *d.get(1)?;
    let (len, head) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        let bytes = d.get(2..2 + n)?;
        (
            bytes.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b)),
            2 + n,
        )
    };
    let end = head.checked_add(len)?;
    (end <= d.len()).then(|| d.split_at(end))
}

/// The content of the DER element at the start of `d` when its tag is `tag`.
fn der_content(d: &[u8], tag: u8) -> Option<&[u8]> {
    let (el, _) = der_element(d).filter(|_| d.first() == Some(&tag))?;
    let head = if el[1] < 0x80 {
        2
    } else {
        2 + usize::from(el[1] & 0x7f)
    };
    Some(&el[head..])
}

/// RFC 5280's keyIdentifier of a CRL's authority key identifier extension (OID 2.5.29.35),
/// read here by hand: none when the extension is absent or its value is not a SEQUENCE
/// starting with `[0]`.
fn aki_keyid_model(der: &[u8]) -> Option<Vec<u8>> {
    const OID: [u8; 5] = [0x06, 0x03, 0x55, 0x1d, 0x23];
    let at = der.windows(OID.len()).position(|w| w == OID)?;
    let mut rest = &der[at + OID.len()..];
    if rest.first() == Some(&0x01) {
        rest = der_element(rest)?.1;
    }
    let value = der_content(rest, 0x04)?;
    let seq = der_content(value, 0x30)?;
    der_content(seq, 0x80).map(<[u8]>::to_vec)
}

/// `tag`, a DER length, `content`.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// The fixture CRL with `e` applied to its list of revoked certificates (serials, dates),
/// signed again by the CA: the signature no longer rejects every mutation, so the loader's
/// reading of the list itself is what the model judges. (Issuer, dates and extensions stay:
/// what they mean for a list is a separate question.)
fn resigned_mutation(e: &[super::common::Edit]) -> Vec<u8> {
    let f = fixture();
    let der = der_of_pem(&f.crl_pem);
    let outer = der_content(&der, 0x30).expect("CertificateList");
    let (tbs, rest) = der_element(outer).expect("tbsCertList");
    let (alg, _) = der_element(rest).expect("signatureAlgorithm");
    // tbsCertList: version, signature, issuer, thisUpdate, nextUpdate, revokedCertificates...
    let mut fields = der_content(tbs, 0x30).expect("tbsCertList content");
    let mut head = Vec::new();
    for _ in 0..5 {
        let (el, r) = der_element(fields).expect("tbsCertList field");
        head.extend_from_slice(el);
        fields = r;
    }
    let (list, tail) = der_element(fields).expect("revokedCertificates (the fixture lists one)");
    let mut content = head;
    content.extend(mutate(list, e));
    content.extend_from_slice(tail);
    let tbs = der_tlv(0x30, &content);
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &f.ca.key).unwrap();
    let sig = signer.sign_oneshot_to_vec(&tbs).unwrap();
    let mut bits = vec![0u8];
    bits.extend(sig);
    let mut body = tbs;
    body.extend_from_slice(alg);
    body.extend(der_tlv(0x03, &bits));
    pem_of_der(&der_tlv(0x30, &body))
}

fn ocsp(der: &[u8], which: usize) -> Result<(Verdict, Option<i64>), OcspError> {
    let f = fixture();
    let store = store_of(std::slice::from_ref(&f.ca.cert)).unwrap();
    let cert: &X509 = &f.clients[which % f.clients.len()].cert;
    parse_response(
        der,
        cert,
        &f.ca.cert,
        &store,
        std::slice::from_ref(&f.ca.cert),
    )
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn arbitrary_crl_files_are_judged_as_openssl_reads_them(data in prop::collection::vec(any::<u8>(), 0..500), case in any::<u64>()) {
        load_and_check(&data, case, "arbitrary_crl")?;
    }

    #[test]
    fn mutated_crls_that_still_load_revoke_what_they_list(e in edits(6), as_der in any::<bool>(), case in any::<u64>()) {
        let f = fixture();
        let pem = if as_der {
            pem_of_der(&mutate(&der_of_pem(&f.crl_pem), &e))
        } else {
            mutate(&f.crl_pem, &e)
        };
        load_and_check(&pem, case, "mutated_crl")?;
    }

    /// Random bytes carry no CA signature: never an answer, whatever the certificate.
    /// Mutations of the revoked list, signed again: whatever still loads is judged by the
    /// list OpenSSL reads from it.
    #[test]
    fn resigned_mutated_crls_revoke_exactly_what_they_list(e in edits(4), case in any::<u64>()) {
        load_and_check(&resigned_mutation(&e), case, "resigned_crl")?;
    }

    #[test]
    fn arbitrary_ocsp_responses_are_refused(data in prop::collection::vec(any::<u8>(), 0..500), which in 0usize..3) {
        prop_assert!(ocsp(&data, which).is_err(), "{:?} accepted", data);
    }

    /// A mutated response that still verifies says what the signed one said: good for the
    /// certificate it names (client 1), and never good for another.
    #[test]
    fn mutated_ocsp_responses_never_speak_for_another_certificate(e in edits(6), which in 0usize..3) {
        let f = fixture();
        let der = mutate(&f.ocsp_good, &e);
        if let Ok((v, _)) = ocsp(&der, which) {
            if std::env::var_os("FUZZ_COUNT").is_some() {
                eprintln!("MEANINGFUL mutated_ocsp which={}", which % 3);
            }
            if which % 3 == 1 {
                prop_assert_eq!(v, Verdict::Good);
            } else {
                prop_assert!(v != Verdict::Good, "good for client {}", which);
            }
        }
    }
}

fn responder_url() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        "(http|https|HTTP|ftp)://[a-zA-Z0-9.:\\[\\]@%_\\-]{0,24}(/[ -~]{0,16})?",
        "http://[a-z0-9.]{1,12}(:[0-9]{0,7})?[\r\n\t /a-z]{0,8}",
    ]
}

proptest! {
    #![proptest_config(config(256))]

    /// AIA URLs come from client certificates: whatever they say, parsing never panics and
    /// what it accepts is safe to dial, to send as `Host:` and to log.
    #[test]
    fn responder_urls_never_panic_and_accepted_ones_are_clean(url in responder_url()) {
        if let Ok(u) = tunnel_core::revocation::ocsp::url::parse(&url) {
            let authority = u.authority();
            for part in [&u.host, &u.path, &authority] {
                prop_assert!(!part.chars().any(|c| c.is_control() || c == ' '), "{:?} from {:?}", u, url);
            }
            prop_assert!(!u.host.is_empty(), "{:?}", u);
            prop_assert!(u.port != 0, "{:?}", u);
            prop_assert!(u.path.starts_with('/'), "{:?}", u);
        }
    }
}

/// Every subset of the three fixture clients (all 8 masks): a CRL listing exactly that
/// subset revokes exactly it.
#[test]
fn a_crl_revokes_exactly_what_it_lists() {
    let f = fixture();
    for mask in 0u8..8 {
        let listed: Vec<&X509> = f
            .clients
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, c)| &c.cert)
            .collect();
        let crl = pki::make_crl(&f.ca, &listed, -1, 7).unwrap();
        let path = f
            .dir
            .join(format!("crl-mask-{}-{mask}.pem", std::process::id()));
        std::fs::write(&path, crl.to_pem().unwrap()).unwrap();
        let set = CrlSet::load(
            &f.dir.join("server.toml"),
            std::slice::from_ref(&path),
            std::slice::from_ref(&f.ca.cert),
            CrlCoverage::Chain,
            None,
        );
        let _ = std::fs::remove_file(&path);
        let set = set.unwrap_or_else(|e| panic!("mask {mask}: {e}"));
        for (i, c) in f.clients.iter().enumerate() {
            let want = if mask & (1 << i) != 0 {
                CrlCheck::Revoked
            } else {
                CrlCheck::Good
            };
            let chain = [c.cert.clone(), f.ca.cert.clone()];
            assert_eq!(
                set.check_chain(&chain, tunnel_core::util::time::unix_now()),
                want,
                "mask {mask}, client {i}"
            );
        }
    }
}

#[test]
fn the_untouched_ocsp_response_says_good_for_its_certificate_only() {
    let f = fixture();
    assert_eq!(
        ocsp(&f.ocsp_good, 1).ok().map(|(v, _)| v),
        Some(Verdict::Good)
    );
    assert!(
        matches!(ocsp(&f.ocsp_good, 2), Err(OcspError::NotCovered)),
        "the response does not cover client 2"
    );
}
