use super::*;
use crate::oidc::b64url;
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
        if alg.starts_with("ES") {
            let sig = EcdsaSig::from_der(&der).unwrap();
            let mut raw = sig.r().to_vec_padded(32).unwrap();
            raw.extend(sig.s().to_vec_padded(32).unwrap());
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
            json!({"kty":"EC","crv":"P-256","kid":kid,
                   "x":b64url(&x.to_vec_padded(32).unwrap()),"y":b64url(&y.to_vec_padded(32).unwrap())})
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
        ("EdDSA", ed),
    ]
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
