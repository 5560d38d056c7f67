//! Each ID token buys one certificate: tokens already used are remembered (by the SHA-256 of
//! the whole token) until they expire, after which the expiry check refuses them anyway.

use std::collections::HashMap;
use std::sync::Mutex;

/// Tokens seen, each with the time (Unix seconds) after which it may be forgotten.
#[derive(Default)]
pub struct ReplayCache {
    seen: Mutex<HashMap<[u8; 32], i64>>,
}

impl ReplayCache {
    /// Records `token` as used until `forget_after`; false when it was used before.
    pub fn first_use(&self, token: &str, forget_after: i64, now: i64) -> bool {
        let digest = openssl::sha::sha256(token.as_bytes());
        let mut seen = crate::sync::lock(&self.seen);
        seen.retain(|_, until| *until >= now);
        if seen.contains_key(&digest) {
            return false;
        }
        seen.insert(digest, forget_after);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_usable_once_until_forgotten() {
        let c = ReplayCache::default();
        assert!(c.first_use("t1", 100, 0));
        assert!(!c.first_use("t1", 100, 50));
        assert!(c.first_use("t2", 100, 50));
        // Past its expiry the entry is dropped (the expiry check refuses the token then).
        assert!(c.first_use("t1", 300, 101));
    }
}
