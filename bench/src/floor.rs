//! The crypto floor of a full mTLS handshake on the gateway, from `openssl speed` run in the
//! same benchmark run: what the public-key operations alone cost one core, so that a gateway's
//! CPU per full handshake can be given as a multiple of it.
//!
//! A full TLS 1.3 handshake with a client certificate (ECDSA P-256 keys, X25519 key exchange)
//! costs the gateway: 1 ECDSA sign (its CertificateVerify), 2 ECDSA verifies (the client's
//! CertificateVerify and the CA's signature on the client certificate) and 2 X25519 operations
//! (its key share and the shared secret).
//!
//! `openssl speed` measures the system's OpenSSL. A build against another OpenSSL (the
//! vendored one) is measured in this process instead, by [`measure_linked`]: the same
//! operations through the same EVP calls, with the library this binary and our agents link.

use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Operations per second of one core, as `openssl speed` measured them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Speed {
    /// ECDSA P-256 signatures per second.
    pub sign: f64,
    /// ECDSA P-256 verifications per second.
    pub verify: f64,
    /// X25519 key agreements per second.
    pub x25519: f64,
    /// ECDH P-256 key agreements per second (for reference: stunnel's client offers X25519
    /// first, so the handshakes use X25519).
    pub p256: f64,
}

impl Speed {
    /// CPU microseconds of the public-key work of one full mTLS handshake on the gateway.
    pub fn floor_us(&self) -> Option<f64> {
        if self.sign <= 0.0 || self.verify <= 0.0 || self.x25519 <= 0.0 {
            return None;
        }
        Some(1e6 * (1.0 / self.sign + 2.0 / self.verify + 2.0 / self.x25519))
    }
}

/// The floor's figures for the system OpenSSL (`openssl speed`, which HAProxy, nginx and
/// stunnel use) and for the OpenSSL linked into this binary and our agents (measured here).
#[derive(Debug, Clone, PartialEq)]
pub struct Floors {
    /// `openssl speed` of the system's `openssl`.
    pub system: Speed,
    /// Its `openssl version` line.
    pub system_version: String,
    /// [`measure_linked`], with the OpenSSL our binaries are built against.
    pub linked: Speed,
    /// `OpenSSL_version(OPENSSL_VERSION)` of that library.
    pub linked_version: String,
}

impl Floors {
    /// Whether our binaries use the system's OpenSSL (then one floor serves every gateway).
    pub fn same_library(&self) -> bool {
        self.system_version == self.linked_version
    }

    /// The figures our gateway's CPU is compared with: `openssl speed`'s when it runs on the
    /// system library (the same measurement as the other gateways'), else the linked one's.
    pub fn ours(&self) -> &Speed {
        if self.same_library() {
            &self.system
        } else {
            &self.linked
        }
    }
}

/// Runs `openssl speed -mr` for ECDSA P-256, X25519 and ECDH P-256, `secs` per operation.
pub fn measure(openssl: &Path, secs: Duration) -> Result<Speed, String> {
    let out = Command::new(openssl)
        .args(["speed", "-mr", "-seconds"])
        .arg(secs.as_secs().max(1).to_string())
        .args(["ecdsap256", "ecdhx25519", "ecdhp256"])
        .output()
        .map_err(|e| format!("{}: {e}", openssl.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse(&text).ok_or_else(|| {
        format!(
            "openssl speed: no ECDSA P-256 / X25519 results in its output: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Measures the same operations as [`measure`] in this process, with the OpenSSL this binary
/// is linked to, `secs` per operation on one core: ECDSA P-256 sign and verify of a SHA-256
/// sized digest, X25519 and ECDH P-256 key derivation, each through one reused EVP_PKEY_CTX
/// as `openssl speed` does.
pub fn measure_linked(secs: Duration) -> Result<Speed, String> {
    let e = |what: &'static str| move |err: openssl::error::ErrorStack| format!("{what}: {err}");
    let p256 = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(e("P-256"))?;
    let ec_key = |what: &'static str| -> Result<PKey<Private>, String> {
        EcKey::generate(&p256)
            .and_then(PKey::from_ec_key)
            .map_err(e(what))
    };
    let signer = ec_key("ECDSA key")?;
    let digest = [0x5a_u8; 32];
    let mut ctx = PkeyCtx::new(&signer).map_err(e("ECDSA context"))?;
    ctx.sign_init().map_err(e("ECDSA sign"))?;
    // Room for the longest DER-encoded P-256 signature (72 bytes).
    let mut sig = vec![0; 80];
    let sign = rate(secs, || {
        ctx.sign(&digest, Some(&mut sig))
            .map(drop)
            .map_err(e("ECDSA sign"))
    })?;
    let n = ctx.sign(&digest, Some(&mut sig)).map_err(e("ECDSA sign"))?;
    sig.truncate(n);
    ctx.verify_init().map_err(e("ECDSA verify"))?;
    let verify = rate(secs, || match ctx.verify(&digest, &sig) {
        Ok(true) => Ok(()),
        Ok(false) => Err("ECDSA verify: a good signature did not verify".into()),
        Err(err) => Err(format!("ECDSA verify: {err}")),
    })?;
    let x25519 = derive_rate(
        secs,
        PKey::generate_x25519().map_err(e("X25519 key"))?,
        PKey::generate_x25519().map_err(e("X25519 key"))?,
    )?;
    let p256 = derive_rate(secs, ec_key("ECDH key")?, ec_key("ECDH key")?)?;
    Ok(Speed {
        sign,
        verify,
        x25519,
        p256,
    })
}

/// Key derivations per second between `ours` and `peer`'s public key.
fn derive_rate(secs: Duration, ours: PKey<Private>, peer: PKey<Private>) -> Result<f64, String> {
    let e = |err: openssl::error::ErrorStack| format!("key derivation: {err}");
    let mut ctx = PkeyCtx::new(&ours).map_err(e)?;
    ctx.derive_init().map_err(e)?;
    ctx.derive_set_peer(&peer).map_err(e)?;
    let mut secret = vec![0; 64];
    rate(secs, || ctx.derive(Some(&mut secret)).map(drop).map_err(e))
}

/// Calls `op` for `secs` and returns how many times per second it ran.
fn rate(secs: Duration, mut op: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    let start = Instant::now();
    let mut n = 0u64;
    loop {
        for _ in 0..16 {
            op()?;
        }
        n += 16;
        let t = start.elapsed();
        if t >= secs {
            return Ok(n as f64 / t.as_secs_f64());
        }
    }
}

/// Reads the machine-readable lines `+F4:<i>:<bits>:<sign/s>:<verify/s>` (ECDSA) and
/// `+F5:<i>:<bits>:<ops/s>:<secs/op>` (ECDH; 253 bits is X25519, 256 bits P-256).
pub fn parse(text: &str) -> Option<Speed> {
    let mut s = Speed::default();
    for line in text.lines() {
        let f: Vec<&str> = line.trim().split(':').collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
        match (f.first().copied(), f.get(2).copied()) {
            (Some("+F4"), Some("256")) => {
                s.sign = num(3)?;
                s.verify = num(4)?;
            }
            (Some("+F5"), Some("253")) => s.x25519 = num(3)?,
            (Some("+F5"), Some("256")) => s.p256 = num(3)?,
            _ => {}
        }
    }
    (s.sign > 0.0 && s.verify > 0.0 && s.x25519 > 0.0).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "+DT:ecdsa:256:1\n+R5:25225:256:1.00\n+F4:3:256:25225.000000:10665.384615\n\
                       +F5:3:256:13629.629630:0.000073\n+F5:22:253:20607.142857:0.000049\n";

    #[test]
    fn reads_openssl_speed_machine_readable_output() {
        let s = parse(OUT).expect("parsed");
        assert_eq!(s.sign, 25225.0);
        assert_eq!(s.verify, 10665.384615);
        assert_eq!(s.x25519, 20607.142857);
        assert_eq!(s.p256, 13629.62963);
    }

    #[test]
    fn floor_is_one_sign_two_verifies_two_x25519() {
        let s = Speed {
            sign: 10_000.0,
            verify: 5_000.0,
            x25519: 20_000.0,
            p256: 0.0,
        };
        let f = s.floor_us().expect("floor");
        assert!((f - (100.0 + 400.0 + 100.0)).abs() < 1e-9, "{f}");
    }

    #[test]
    fn measures_the_linked_openssl_in_process() {
        let s = measure_linked(Duration::from_millis(50)).expect("measured");
        for (what, v) in [
            ("sign", s.sign),
            ("verify", s.verify),
            ("x25519", s.x25519),
            ("p256", s.p256),
        ] {
            assert!(v.is_finite() && v > 100.0, "{what}: {v} op/s");
        }
        // Verifying costs more than signing for ECDSA, in every OpenSSL.
        assert!(s.verify < s.sign, "{s:?}");
        assert!(s.floor_us().is_some());
    }

    #[test]
    fn missing_algorithms_are_an_error() {
        assert_eq!(parse("+F5:22:253:20607.1:0.00005\n"), None);
        assert_eq!(parse("garbage"), None);
        assert_eq!(Speed::default().floor_us(), None);
    }
}
