//! CRL and OCSP response parsing: arbitrary and mutated lists and responses never panic; a
//! CRL says revoked exactly for the serials it lists; an untouched OCSP response says good.

use super::common::{config, edits, fixture, mutate};
use openssl::x509::X509;
use proptest::prelude::*;
use tunnel_core::config::CrlCoverage;
use tunnel_core::crl::{CrlCheck, CrlSet};
use tunnel_core::ocsp::{parse_response, store_of, OcspError, Verdict};
use tunnel_core::pki;

/// Loads `pem` as the only CRL; when it loads, checks every fixture certificate.
fn load_and_check(pem: &[u8], case: u64) -> Result<(), TestCaseError> {
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
            for c in &f.clients {
                let _ = set.check_chain(&[c.cert.clone(), f.ca.cert.clone()], pki::unix_now());
            }
            let _ = set.expired(pki::unix_now());
            let _ = set.earliest_next_update();
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
    fn arbitrary_crl_files_never_panic(data in prop::collection::vec(any::<u8>(), 0..500), case in any::<u64>()) {
        load_and_check(&data, case)?;
    }

    #[test]
    fn mutated_crls_never_panic(e in edits(6), as_der in any::<bool>(), case in any::<u64>()) {
        let f = fixture();
        let pem = if as_der {
            pem_of_der(&mutate(&der_of_pem(&f.crl_pem), &e))
        } else {
            mutate(&f.crl_pem, &e)
        };
        load_and_check(&pem, case)?;
    }

    #[test]
    fn arbitrary_ocsp_responses_never_panic(data in prop::collection::vec(any::<u8>(), 0..500), which in 0usize..3) {
        prop_assert!(ocsp(&data, which).is_err() || !data.is_empty());
    }

    #[test]
    fn mutated_ocsp_responses_never_panic(e in edits(6), which in 0usize..3) {
        let f = fixture();
        let der = mutate(&f.ocsp_good, &e);
        if let Ok((v, _)) = ocsp(&der, which) {
            // Whatever still verifies may only speak of the certificate it names.
            prop_assert!(which % 3 == 1 || v != Verdict::Good, "good for client {which}");
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
        if let Ok(u) = tunnel_core::ocsp::url::parse(&url) {
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

proptest! {
    #![proptest_config(config(16))]

    /// Each case signs a CRL: fewer cases.
    #[test]
    fn a_crl_revokes_exactly_what_it_lists(mask in 0u8..8) {
        let f = fixture();
        let listed: Vec<&X509> = f.clients.iter().enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, c)| &c.cert)
            .collect();
        let crl = pki::make_crl(&f.ca, &listed, -1, 7).unwrap();
        let path = f.dir.join(format!("crl-mask-{}-{mask}.pem", std::process::id()));
        std::fs::write(&path, crl.to_pem().unwrap()).unwrap();
        let set = CrlSet::load(
            &f.dir.join("server.toml"),
            std::slice::from_ref(&path),
            std::slice::from_ref(&f.ca.cert),
            CrlCoverage::Chain,
            None,
        );
        let _ = std::fs::remove_file(&path);
        let set = set.map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (i, c) in f.clients.iter().enumerate() {
            let want = if mask & (1 << i) != 0 { CrlCheck::Revoked } else { CrlCheck::Good };
            let chain = [c.cert.clone(), f.ca.cert.clone()];
            prop_assert_eq!(set.check_chain(&chain, pki::unix_now()), want, "client {}", i);
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
