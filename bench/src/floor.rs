//! The crypto floor of a full mTLS handshake on the gateway, from `openssl speed` run in the
//! same benchmark run: what the public-key operations alone cost one core, so that a gateway's
//! CPU per full handshake can be given as a multiple of it.
//!
//! A full TLS 1.3 handshake with a client certificate (ECDSA P-256 keys, X25519 key exchange)
//! costs the gateway: 1 ECDSA sign (its CertificateVerify), 2 ECDSA verifies (the client's
//! CertificateVerify and the CA's signature on the client certificate) and 2 X25519 operations
//! (its key share and the shared secret).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

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
    fn missing_algorithms_are_an_error() {
        assert_eq!(parse("+F5:22:253:20607.1:0.00005\n"), None);
        assert_eq!(parse("garbage"), None);
        assert_eq!(Speed::default().floor_us(), None);
    }
}
