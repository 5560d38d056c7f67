//! "Each ID token is usable once" against re-spelled tokens: a token signed in the test (ES256
//! with a P-256 key, RS256 with an RSA key, both in a JWK Set made here) is re-spelled in
//! ways lax decoders accept — padding on any segment, the standard base64 alphabet, unused
//! low bits set, whitespace, leading zero bytes in the signature's numbers, and ECDSA's other
//! valid signature (r, n−s). A model says what each spelling is: which bytes it denotes (its
//! own lax decoder), whether its text is still the canonical one, whether its signature still
//! has the one accepted length. From that alone it predicts the outcome: refused by parsing
//! (non-canonical text), refused by verification (wrong length), or accepted and then refused
//! by the replay cache as the token already used. So no spelling buys a second certificate.

use super::common::config;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::OnceLock;
use tunnel_core::signin::oidc::b64url;
use tunnel_core::signin::oidc::jws::{Jws, JwsError};
use tunnel_core::signin::signer::replay::ReplayCache;

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

struct Keys {
    ec: PKey<Private>,
    rsa: PKey<Private>,
    /// The provider's JWK Set.
    set: Vec<Value>,
    /// The P-256 group order, big endian.
    order: Vec<u8>,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let ec = EcKey::generate(&group).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let (mut x, mut y, mut order) =
            (BigNum::new().unwrap(), BigNum::new().unwrap(), BigNum::new().unwrap());
        ec.public_key()
            .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
            .unwrap();
        group.order(&mut order, &mut ctx).unwrap();
        let rsa = Rsa::generate(2048).unwrap();
        let set = vec![
            json!({"kty":"EC","crv":"P-256","kid":"ec","use":"sig",
                   "x":b64url(&x.to_vec_padded(32).unwrap()),"y":b64url(&y.to_vec_padded(32).unwrap())}),
            json!({"kty":"RSA","kid":"rsa","n":b64url(&rsa.n().to_vec()),"e":b64url(&rsa.e().to_vec())}),
        ];
        Keys {
            ec: PKey::from_ec_key(ec).unwrap(),
            rsa: PKey::from_rsa(rsa).unwrap(),
            set,
            order: order.to_vec(),
        }
    })
}

/// A signed token as its three decoded parts.
#[derive(Debug, Clone)]
struct Signed {
    es: bool,
    header: Vec<u8>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

impl Signed {
    fn text(&self) -> String {
        format!(
            "{}.{}.{}",
            b64url(&self.header),
            b64url(&self.payload),
            b64url(&self.signature)
        )
    }
}

fn sign(es: bool, claims: &Value) -> Signed {
    let k = keys();
    let header = if es {
        json!({"alg":"ES256","kid":"ec","typ":"JWT"})
    } else {
        json!({"alg":"RS256","kid":"rsa","typ":"JWT"})
    };
    let (header, payload) = (
        header.to_string().into_bytes(),
        claims.to_string().into_bytes(),
    );
    let input = format!("{}.{}", b64url(&header), b64url(&payload));
    let key = if es { &k.ec } else { &k.rsa };
    let mut s = Signer::new(MessageDigest::sha256(), key).unwrap();
    let sig = s.sign_oneshot_to_vec(input.as_bytes()).unwrap();
    let signature = if es {
        let sig = EcdsaSig::from_der(&sig).unwrap();
        [
            sig.r().to_vec_padded(32).unwrap(),
            sig.s().to_vec_padded(32).unwrap(),
        ]
        .concat()
    } else {
        sig
    };
    Signed {
        es,
        header,
        payload,
        signature,
    }
}

/// One re-spelling. Signature edits change the signature's bytes (not its numbers, except
/// `NegateS`, which gives the other valid signature); text edits change a segment's text
/// (not its bytes).
#[derive(Debug, Clone)]
enum Edit {
    /// ES: (r, n−s); RS256 has no such twin (no-op).
    NegateS,
    /// `n` zero bytes before r (ES) or the whole signature (RS), before s, or before both
    /// (an even length a lax split in halves reads as the same numbers).
    LeadingZeros { part: Part, n: usize },
    /// Sets unused low bits of the segment's last character (when it has any).
    TrailingBits { seg: usize, bits: u8 },
    /// `-` and `_` written `+` and `/`.
    StdAlphabet { seg: usize },
    /// A whitespace character inserted.
    Whitespace { seg: usize, at: usize, ch: char },
    /// `=` padding appended.
    Pad { seg: usize, n: usize },
}

/// Where [`Edit::LeadingZeros`] puts its zeros.
#[derive(Debug, Clone, Copy)]
enum Part {
    R,
    S,
    Both,
}

/// Signature edits, then text edits (none in half the cases, so that signature edits meet
/// verification often).
fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let sig = prop::collection::vec(
        prop_oneof![
            Just(Edit::NegateS),
            (
                prop::sample::select(vec![Part::R, Part::S, Part::Both]),
                1usize..3
            )
                .prop_map(|(part, n)| Edit::LeadingZeros { part, n }),
        ],
        0..3,
    );
    let text = prop_oneof![Just(Vec::new()), prop::collection::vec(text_edit(), 1..4),];
    (sig, text).prop_map(|(s, t)| [s, t].concat())
}

fn text_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0usize..3, 1u8..16).prop_map(|(seg, bits)| Edit::TrailingBits { seg, bits }),
        (0usize..3).prop_map(|seg| Edit::StdAlphabet { seg }),
        (
            0usize..3,
            any::<usize>(),
            prop::sample::select(vec![' ', '\t', '\r', '\n'])
        )
            .prop_map(|(seg, at, ch)| Edit::Whitespace { seg, at, ch }),
        (0usize..3, 1usize..5).prop_map(|(seg, n)| Edit::Pad { seg, n }),
    ]
}

/// The model's decoder: what a lax base64 decoder makes of a text (whitespace skipped,
/// padding stripped, both alphabets, unused low bits ignored).
fn lax_decode(text: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let v = match c {
            b'+' => 62,
            b'/' => 63,
            b'=' | b' ' | b'\t' | b'\r' | b'\n' => continue,
            c => ALPHABET
                .iter()
                .position(|a| *a == c)
                .expect("a base64 character") as u32,
        };
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

/// A re-spelled token and what the model says about it.
struct Spelling {
    text: String,
    /// Whether each segment's text is still the canonical spelling of its bytes.
    canonical: bool,
    /// Whether the signature still has its one accepted length.
    exact_length: bool,
    /// Whether the signature is the original's (else its twin (r, n−s)).
    same_signature: bool,
}

fn respell(t: &Signed, edits: &[Edit]) -> Spelling {
    // Signature edits first, on bytes.
    let mut negated = false;
    let (mut zeros_r, mut zeros_s) = (0, 0);
    for e in edits {
        match e {
            Edit::NegateS if t.es => negated = !negated,
            Edit::LeadingZeros { part, n } if t.es => match part {
                Part::R => zeros_r += n,
                Part::S => zeros_s += n,
                Part::Both => (zeros_r, zeros_s) = (zeros_r + n, zeros_s + n),
            },
            Edit::LeadingZeros { n, .. } => zeros_r += n,
            _ => {}
        }
    }
    let signature = if t.es {
        let (r, s) = t.signature.split_at(32);
        let s = if negated {
            let mut neg = BigNum::new().unwrap();
            neg.checked_sub(
                &BigNum::from_slice(&keys().order).unwrap(),
                &BigNum::from_slice(s).unwrap(),
            )
            .unwrap();
            neg.to_vec_padded(32).unwrap()
        } else {
            s.to_vec()
        };
        [vec![0; zeros_r], r.to_vec(), vec![0; zeros_s], s].concat()
    } else {
        [vec![0; zeros_r], t.signature.clone()].concat()
    };
    let bytes = [t.header.clone(), t.payload.clone(), signature.clone()];
    let canonical: Vec<String> = bytes.iter().map(|b| b64url(b)).collect();
    // Text edits, in a fixed order: trailing bits (on the last character), the alphabet,
    // whitespace, then padding at the end.
    let mut segs = canonical.clone();
    let rank = |e: &Edit| match e {
        Edit::TrailingBits { .. } => 0,
        Edit::StdAlphabet { .. } => 1,
        Edit::Whitespace { .. } => 2,
        Edit::Pad { .. } => 3,
        _ => 4,
    };
    let mut text_edits: Vec<&Edit> = edits.iter().filter(|e| rank(e) < 4).collect();
    text_edits.sort_by_key(|e| rank(e));
    for e in text_edits {
        match e {
            Edit::TrailingBits { seg, bits } => {
                let s = &mut segs[*seg];
                let unused = match s.len() % 4 {
                    2 => 0b1111,
                    3 => 0b11,
                    _ => 0,
                };
                if let Some(last) = s.pop() {
                    let v = ALPHABET.iter().position(|a| *a as char == last).unwrap();
                    s.push(ALPHABET[v | (*bits as usize & unused)] as char);
                }
            }
            Edit::StdAlphabet { seg } => {
                segs[*seg] = segs[*seg].replace('-', "+").replace('_', "/");
            }
            Edit::Whitespace { seg, at, ch } => {
                let s = &mut segs[*seg];
                let at = at % (s.len() + 1);
                s.insert(at, *ch);
            }
            Edit::Pad { seg, n } => segs[*seg].push_str(&"=".repeat(*n)),
            _ => {}
        }
    }
    // The generator's own check: every text edit re-spells the same bytes.
    for i in 0..3 {
        assert_eq!(lax_decode(&segs[i]), bytes[i], "segment {i}: {}", segs[i]);
    }
    Spelling {
        text: segs.join("."),
        canonical: segs == canonical,
        exact_length: signature.len() == t.signature.len(),
        same_signature: !negated,
    }
}

fn claims() -> impl Strategy<Value = Value> {
    (
        "[a-z0-9]{1,12}",
        0u32..2_000_000_000,
        prop::option::of("[A-Za-z0-9_-]{0,43}"),
        "[ -~]{0,5}",
    )
        .prop_map(|(sub, iat, nonce, extra)| {
            let mut c = json!({"iss":"https://idp.example.com","sub":sub,"aud":"tunnel",
                               "iat":iat,"exp":iat + 600,"x":extra});
            if let Some(n) = nonce {
                c["nonce"] = json!(n);
            }
            c
        })
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn no_spelling_of_a_used_token_is_usable_again(
        es in any::<bool>(),
        claims in claims(),
        edits in edits(),
    ) {
        let k = keys();
        let token = sign(es, &claims);
        let original = token.text();
        let cache = ReplayCache::in_memory();
        let first = Jws::parse(&original).unwrap();
        prop_assert_eq!(first.verify(&k.set), Ok(()));
        prop_assert!(cache.first_use(&first.replay_key(), 1, 0).unwrap(), "the first use");

        let s = respell(&token, &edits);
        // The model's own consistency: an unchanged spelling is the original text.
        prop_assert_eq!(
            s.text == original,
            s.canonical && s.exact_length && s.same_signature,
            "{}", s.text
        );
        match Jws::parse(&s.text) {
            Err(e) => {
                prop_assert!(!s.canonical, "a canonical spelling refused: {e}");
                prop_assert!(matches!(e, JwsError::Malformed(_)), "{e}");
            }
            Ok(jws) => {
                prop_assert!(s.canonical, "a non-canonical spelling parsed: {}", s.text);
                match jws.verify(&k.set) {
                    Err(e) => {
                        prop_assert!(!s.exact_length, "a valid signature refused: {e}");
                        prop_assert_eq!(e, JwsError::BadSignature);
                    }
                    Ok(()) => {
                        prop_assert!(s.exact_length, "a padded signature verified");
                        // The same signed content: already used.
                        prop_assert!(!cache.first_use(&jws.replay_key(), 1, 0).unwrap(), "already used");
                    }
                }
            }
        }
        // Control: other signed content is another token, still usable once.
        let mut other = claims.clone();
        other["sub"] = json!(format!("{}-other", claims["sub"].as_str().unwrap()));
        let other = Jws::parse(&sign(es, &other).text()).unwrap();
        prop_assert_eq!(other.verify(&k.set), Ok(()));
        prop_assert!(cache.first_use(&other.replay_key(), 1, 0).unwrap(), "the first use");
        prop_assert!(!cache.first_use(&other.replay_key(), 1, 0).unwrap(), "already used");
    }
}
