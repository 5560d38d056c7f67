use super::*;
use crate::signin::oidc::b64url;
use openssl::pkey::Private;
use openssl::sign::Signer;
use serde_json::json;

fn sign(alg: &str, key: &PKey<Private>, header: Value, claims: Value) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = if alg == "EdDSA" {
        let mut s = Signer::new_without_digest(key).unwrap();
        s.sign_oneshot_to_vec(input.as_bytes()).unwrap()
    } else {
        let mut s = Signer::new(digest_of(alg), key).unwrap();
        if alg.starts_with("PS") {
            s.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            s.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
        }
        let der = s.sign_oneshot_to_vec(input.as_bytes()).unwrap();
        if let Some(n) = ec_coordinate_size(alg) {
            let sig = EcdsaSig::from_der(&der).unwrap();
            let mut raw = sig.r().to_vec_padded(n as i32).unwrap();
            raw.extend(sig.s().to_vec_padded(n as i32).unwrap());
            raw
        } else {
            der
        }
    };
    format!("{input}.{}", b64url(&sig))
}

fn jwk(key: &PKey<Private>, kid: &str) -> Value {
    match key.id() {
        Id::RSA => {
            let r = key.rsa().unwrap();
            json!({"kty":"RSA","kid":kid,"n":b64url(&r.n().to_vec()),"e":b64url(&r.e().to_vec())})
        }
        Id::EC => {
            let ec = key.ec_key().unwrap();
            let mut ctx = openssl::bn::BigNumContext::new().unwrap();
            let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
            ec.public_key()
                .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
                .unwrap();
            let (crv, n) = match ec.group().curve_name() {
                Some(Nid::SECP384R1) => ("P-384", 48),
                Some(Nid::SECP521R1) => ("P-521", 66),
                _ => ("P-256", 32),
            };
            json!({"kty":"EC","crv":crv,"kid":kid,
                   "x":b64url(&x.to_vec_padded(n).unwrap()),"y":b64url(&y.to_vec_padded(n).unwrap())})
        }
        _ => {
            json!({"kty":"OKP","crv":"Ed25519","kid":kid,"x":b64url(&key.raw_public_key().unwrap())})
        }
    }
}

fn keys() -> Vec<(&'static str, PKey<Private>)> {
    let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let ec = crate::pki::new_key(crate::pki::KeyType::EcP256).unwrap();
    let ed = PKey::generate_ed25519().unwrap();
    vec![
        ("RS256", rsa.clone()),
        ("PS384", rsa),
        ("ES256", ec),
        ("ES384", ec_key(Nid::SECP384R1)),
        ("ES512", ec_key(Nid::SECP521R1)),
        ("EdDSA", ed),
    ]
}

fn ec_key(curve: Nid) -> PKey<Private> {
    let group = EcGroup::from_curve_name(curve).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// A decoder that ignores the unused low bits of the last character (as many do).
fn lax_decode(text: &str) -> Option<Vec<u8>> {
    use base64::engine::{general_purpose::GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine;
    let lax = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    lax.decode(text).ok()
}

fn segments(t: &str) -> Vec<String> {
    t.split('.').map(str::to_string).collect()
}

fn with_signature(t: &str, sig: &[u8]) -> String {
    let p = segments(t);
    format!("{}.{}.{}", p[0], p[1], b64url(sig))
}

fn claims() -> Value {
    json!({"iss":"https://idp.example.com","sub":"a","aud":"tunnel","iat":1_700_000_000})
}

#[test]
fn refuses_every_non_canonical_spelling_of_a_segment() {
    for (alg, key) in keys() {
        let t = sign(alg, &key, json!({"alg":alg,"kid":"k1"}), claims());
        let set = vec![jwk(&key, "k1")];
        assert_eq!(Jws::parse(&t).unwrap().verify(&set), Ok(()), "{alg}");
        for i in 0..3 {
            let respell = |f: &dyn Fn(&str) -> String| {
                let mut p = segments(&t);
                p[i] = f(&p[i]);
                p.join(".")
            };
            let mut spellings = vec![
                respell(&|s| format!("{s}=")),
                respell(&|s| format!("{s}==")),
                respell(&|s| format!("{s}====")),
                respell(&|s| format!(" {s}")),
                respell(&|s| format!("{}\n{}", &s[..4], &s[4..])),
                // The standard alphabet's spelling of the same bytes.
                respell(&|s| format!("{}+", &s[..s.len() - 1])),
                respell(&|s| format!("{}/", &s[..s.len() - 1])),
            ];
            // The same bytes with a non-zero unused low bit in the last character.
            let seg = &segments(&t)[i];
            if seg.len() % 4 != 0 {
                let bytes = crate::signin::oidc::b64url_decode(seg).unwrap();
                let last = seg.as_bytes()[seg.len() - 1];
                let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                let v = alphabet.iter().position(|c| *c == last).unwrap() | 1;
                let bent = format!("{}{}", &seg[..seg.len() - 1], alphabet[v] as char);
                if bent != *seg {
                    assert_eq!(lax_decode(&bent), Some(bytes), "a lax decoder");
                    spellings.push(respell(&|_| bent.clone()));
                }
            }
            for s in spellings {
                assert!(
                    matches!(Jws::parse(&s), Err(JwsError::Malformed(_))),
                    "{alg} segment {i}: {s}"
                );
            }
        }
    }
}

/// ECDSA's r‖s has one accepted length per curve; (r, n−s), the other valid signature of
/// the same content, verifies but is the same token to the replay cache.
#[test]
fn ec_signatures_have_one_length_and_their_twin_one_replay_key() {
    for (alg, curve, size) in [
        ("ES256", Nid::X9_62_PRIME256V1, 32),
        ("ES384", Nid::SECP384R1, 48),
        ("ES512", Nid::SECP521R1, 66),
    ] {
        let key = ec_key(curve);
        let set = vec![jwk(&key, "k1")];
        let t = sign(alg, &key, json!({"alg":alg,"kid":"k1"}), claims());
        let jws = Jws::parse(&t).unwrap();
        assert_eq!(jws.verify(&set), Ok(()), "{alg}");
        let raw = crate::signin::oidc::b64url_decode(&segments(&t)[2]).unwrap();
        assert_eq!(raw.len(), 2 * size, "{alg}");
        let (r, s) = raw.split_at(size);
        let zero_r = [&[0][..], r, s].concat();
        let zero_s = [r, &[0][..], s].concat();
        let zero_both = [&[0][..], r, &[0][..], s].concat();
        for (what, sig) in [
            ("r with a leading zero", zero_r),
            ("s with a leading zero", zero_s),
            ("r and s with a leading zero", zero_both),
            ("one byte short", raw[..raw.len() - 1].to_vec()),
            ("empty", vec![]),
        ] {
            let spelled = with_signature(&t, &sig);
            assert_eq!(
                Jws::parse(&spelled).unwrap().verify(&set),
                Err(JwsError::BadSignature),
                "{alg}: {what}"
            );
        }
        // (r, n − s).
        let group = EcGroup::from_curve_name(curve).unwrap();
        let mut order = BigNum::new().unwrap();
        group
            .order(&mut order, &mut openssl::bn::BigNumContext::new().unwrap())
            .unwrap();
        let s_num = BigNum::from_slice(s).unwrap();
        let mut neg = BigNum::new().unwrap();
        neg.checked_sub(&order, &s_num).unwrap();
        let twin = [r, &neg.to_vec_padded(size as i32).unwrap()].concat();
        let twin = with_signature(&t, &twin);
        assert_ne!(twin, t);
        let twin = Jws::parse(&twin).unwrap();
        assert_eq!(
            twin.verify(&set),
            Ok(()),
            "{alg}: (r, n-s) is a valid signature"
        );
        assert_eq!(twin.replay_key(), jws.replay_key(), "{alg}");
        // Another content signed by the same key is another token.
        let other = sign(alg, &key, json!({"alg":alg,"kid":"k1"}), json!({"sub":"b"}));
        assert_ne!(Jws::parse(&other).unwrap().replay_key(), jws.replay_key());
    }
}

#[test]
fn rsa_and_eddsa_signatures_have_one_length() {
    for (alg, key) in keys() {
        if alg.starts_with("ES") {
            continue;
        }
        let set = vec![jwk(&key, "k1")];
        let t = sign(alg, &key, json!({"alg":alg,"kid":"k1"}), claims());
        let raw = crate::signin::oidc::b64url_decode(&segments(&t)[2]).unwrap();
        let padded = with_signature(&t, &[&[0][..], &raw].concat());
        assert_eq!(
            Jws::parse(&padded).unwrap().verify(&set),
            Err(JwsError::BadSignature),
            "{alg}"
        );
    }
}

#[test]
fn the_replay_key_is_the_signed_header_and_payload() {
    // Header and payload bytes are hashed with the header's length first: moving bytes
    // from one to the other gives another key.
    assert_ne!(
        replay_key(b"{\"a\":1}", b"{}"),
        replay_key(b"{\"a\":1}{", b"}")
    );
    assert_ne!(
        replay_key(b"{}", b"{\"a\":1}"),
        replay_key(b"{\"a\":1}", b"{}")
    );
    let key = ec_key(Nid::X9_62_PRIME256V1);
    let t = sign("ES256", &key, json!({"alg":"ES256"}), claims());
    let p = segments(&t);
    let h = crate::signin::oidc::b64url_decode(&p[0]).unwrap();
    let b = crate::signin::oidc::b64url_decode(&p[1]).unwrap();
    assert_eq!(Jws::parse(&t).unwrap().replay_key(), replay_key(&h, &b));
    // A fresh signature of the same content (ECDSA signs with a random k) is the same key.
    let again = sign("ES256", &key, json!({"alg":"ES256"}), claims());
    assert_ne!(again, t);
    assert_eq!(
        Jws::parse(&again).unwrap().replay_key(),
        Jws::parse(&t).unwrap().replay_key()
    );
}

#[test]
fn verifies_each_algorithm_and_refuses_tampering() {
    for (alg, key) in keys() {
        let set = vec![jwk(&key, "k1")];
        let t = sign(alg, &key, json!({"alg":alg,"kid":"k1"}), json!({"sub":"a"}));
        let jws = Jws::parse(&t).unwrap();
        assert_eq!(jws.verify(&set), Ok(()), "{alg}");
        // Another payload under the same signature.
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], b64url(br#"{"sub":"b"}"#), parts[2]);
        assert_eq!(
            Jws::parse(&forged).unwrap().verify(&set),
            Err(JwsError::BadSignature),
            "{alg}"
        );
        // Unknown kid.
        let other = sign(alg, &key, json!({"alg":alg,"kid":"k2"}), json!({"sub":"a"}));
        assert!(matches!(
            Jws::parse(&other).unwrap().verify(&set),
            Err(JwsError::NoKey(_))
        ));
    }
}

#[test]
fn refuses_none_hmac_crit_and_garbage() {
    let claims = b64url(br#"{"sub":"a"}"#);
    for alg in ["none", "HS256", "", "RS1"] {
        let t = format!(
            "{}.{claims}.",
            b64url(format!(r#"{{"alg":"{alg}"}}"#).as_bytes())
        );
        assert_eq!(Jws::parse(&t).unwrap_err(), JwsError::Algorithm(alg.into()));
    }
    let t = format!("{}.{claims}.AA", b64url(br#"{"alg":"RS256","crit":["x"]}"#));
    assert_eq!(Jws::parse(&t).unwrap_err(), JwsError::Critical);
    for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
        assert!(
            matches!(Jws::parse(bad), Err(JwsError::Malformed(_))),
            "{bad}"
        );
    }
}

#[test]
fn an_rsa_key_cannot_verify_an_ec_algorithm() {
    let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let t = sign("RS256", &rsa, json!({"alg":"ES256"}), json!({}));
    assert!(matches!(
        Jws::parse(&t).unwrap().verify(&[jwk(&rsa, "k")]),
        Err(JwsError::NoKey(_))
    ));
}
