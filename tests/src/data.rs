//! Deterministic byte streams and their SHA-256, so transfers are checked byte for byte without
//! keeping them in memory.

use sha2::Sha256;
use std::io::{self, Read, Write};

pub use sha2::Digest;

const CHUNK: usize = 64 * 1024;

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A pseudo-random stream (xorshift64*) that differs for every `seed`.
pub struct Pattern {
    state: u64,
}

impl Pattern {
    /// A stream for `seed`.
    pub fn new(seed: u64) -> Pattern {
        Pattern {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// Fills `buf` with the next bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.state;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.state = x;
            let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// `len` bytes of the pattern for `seed`, in memory (for small payloads).
pub fn pattern_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Pattern::new(seed).fill(&mut v);
    v
}

/// Writes `len` bytes of the pattern for `seed` to `w`; returns their SHA-256 (hex).
pub fn send_pattern(w: &mut impl Write, seed: u64, len: u64) -> io::Result<String> {
    let mut p = Pattern::new(seed);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        p.fill(&mut buf[..n]);
        w.write_all(&buf[..n])?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    w.flush()?;
    Ok(hex(&h.finalize()))
}

/// The SHA-256 (hex) of `len` bytes of the pattern for `seed`, without sending them.
pub fn pattern_hash(seed: u64, len: u64) -> String {
    send_pattern(&mut io::sink(), seed, len).expect("sink never fails")
}

/// Reads `r` to EOF; returns the byte count and SHA-256 (hex). An error after some bytes is
/// returned with what was read so far, so a test can say how far the stream got.
pub fn hash_reader(r: &mut impl Read) -> (u64, String, Option<io::Error>) {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return (n, hex(&h.finalize()), None),
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (n, hex(&h.finalize()), Some(e)),
        }
    }
}

/// Reads `r` until EOF or an error; returns what arrived and the error, if any.
pub fn read_all(r: &mut impl Read) -> (Vec<u8>, Option<io::Error>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (out, Some(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_seeded() {
        assert_eq!(pattern_bytes(1, 1000), pattern_bytes(1, 1000));
        assert_ne!(pattern_bytes(1, 1000), pattern_bytes(2, 1000));
        let mut v = Vec::new();
        let h = send_pattern(&mut v, 7, 200_001).unwrap();
        assert_eq!(v.len(), 200_001);
        assert_eq!(h, sha256_hex(&v));
        assert_eq!(h, pattern_hash(7, 200_001));
        let (n, h2, err) = hash_reader(&mut &v[..]);
        assert!(err.is_none());
        assert_eq!((n, h2), (200_001, h));
    }
}
