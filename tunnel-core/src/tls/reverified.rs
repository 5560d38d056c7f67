//! Chains the gateway has verified again for resumed sessions, remembered for a short while.
//!
//! Every resumed session is verified again (OpenSSL runs no verify callback on resumption):
//! signatures up to a trusted CA, validity dates, every CRL. A client that reconnects many
//! times a second presents the same chain each time, and the answer cannot change until one
//! of its inputs does. Those inputs are the chain itself (the key: a SHA-256 over each
//! certificate's DER), the trusted CAs and the CRLs (fixed for one [`super::ServerTls`], which
//! a reload replaces together with this cache), and the time. The time is bounded per entry:
//! an entry is used only before the first `notAfter` of the chain, before the earliest CRL
//! `nextUpdate`, and for at most [`MAX_AGE`] seconds. Only successful verifications are kept;
//! a refusal is verified afresh every time. Authorization and OCSP are not cached here: they
//! run for every connection as before.

use crate::util::sync;
use crate::util::time::unix_time;
use openssl::hash::MessageDigest;
use openssl::sha::Sha256;
use openssl::x509::X509;
use std::collections::HashMap;
use std::sync::Mutex;

/// Longest time one verification is reused, in seconds.
pub(super) const MAX_AGE: i64 = 60;
/// Most chains remembered; when full, expired entries go first, then everything.
pub(super) const MAX_ENTRIES: usize = 4096;

/// The key of a chain: SHA-256 over the SHA-256 of each certificate, leaf first.
pub(super) type ChainKey = [u8; 32];

struct Entry {
    chain: Vec<X509>,
    valid_until: i64,
}

/// Verified chains by [`ChainKey`], each with the time it stops being usable.
#[derive(Default)]
pub(super) struct Reverified {
    entries: Mutex<HashMap<ChainKey, Entry>>,
}

impl Reverified {
    /// The key of the chain `leaf` + `sent` (`None` when OpenSSL cannot hash a certificate:
    /// then nothing is cached).
    pub(super) fn key(leaf: &X509, sent: &[X509]) -> Option<ChainKey> {
        let mut h = Sha256::new();
        for c in std::iter::once(leaf).chain(sent) {
            h.update(&c.digest(MessageDigest::sha256()).ok()?);
        }
        Some(h.finish())
    }

    /// The chain verified for `key`, if that verification still holds at `now`.
    pub(super) fn get(&self, key: &ChainKey, now: i64) -> Option<Vec<X509>> {
        let map = sync::lock(&self.entries);
        map.get(key)
            .filter(|e| now < e.valid_until)
            .map(|e| e.chain.clone())
    }

    /// Remembers `chain`, verified at `now`, until the earliest of `now + MAX_AGE`, the
    /// chain's first `notAfter` and `crl_next_update`.
    pub(super) fn put(
        &self,
        key: ChainKey,
        chain: &[X509],
        now: i64,
        crl_next_update: Option<i64>,
    ) {
        let mut valid_until = now + MAX_AGE;
        for c in chain {
            match unix_time(c.not_after()) {
                Some(t) => valid_until = valid_until.min(t),
                // A date OpenSSL cannot convert: do not cache this chain.
                None => return,
            }
        }
        if let Some(t) = crl_next_update {
            valid_until = valid_until.min(t);
        }
        if valid_until <= now {
            return;
        }
        let mut map = sync::lock(&self.entries);
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, e| now < e.valid_until);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(
            key,
            Entry {
                chain: chain.to_vec(),
                valid_until,
            },
        );
    }

    /// How many chains are remembered (for tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        sync::lock(&self.entries).len()
    }

    /// Whether no chain is remembered.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate valid for `days`, and its notAfter in Unix time.
    fn self_signed(cn: &str, days: u32) -> (X509, i64) {
        let cert = crate::pki::new_ca(cn, days).unwrap().cert;
        let not_after = unix_time(cert.not_after()).unwrap();
        (cert, not_after)
    }

    #[test]
    fn an_entry_is_used_only_until_its_earliest_bound() {
        let (leaf, not_after) = self_signed("leaf", 1);
        let c = Reverified::default();
        let key = Reverified::key(&leaf, &[]).unwrap();
        let now = not_after - 3600;
        c.put(key, std::slice::from_ref(&leaf), now, None);
        assert!(c.get(&key, now).is_some());
        assert!(c.get(&key, now + MAX_AGE - 1).is_some());
        assert!(c.get(&key, now + MAX_AGE).is_none(), "MAX_AGE bounds it");
        // The CRL's nextUpdate comes first.
        c.put(key, std::slice::from_ref(&leaf), now, Some(now + 5));
        assert!(c.get(&key, now + 4).is_some());
        assert!(c.get(&key, now + 5).is_none(), "nextUpdate bounds it");
        // The certificate's notAfter comes first.
        let now = not_after - 10;
        c.put(key, std::slice::from_ref(&leaf), now, None);
        assert!(c.get(&key, not_after - 1).is_some());
        assert!(c.get(&key, not_after).is_none(), "notAfter bounds it");
        // Already past a bound: not remembered at all.
        let fresh = Reverified::default();
        fresh.put(key, std::slice::from_ref(&leaf), not_after, None);
        assert!(fresh.is_empty());
    }

    #[test]
    fn the_key_covers_every_certificate_and_their_order() {
        let (a, _) = self_signed("a", 1);
        let (b, _) = self_signed("b", 1);
        let k = |leaf: &X509, sent: &[X509]| Reverified::key(leaf, sent).unwrap();
        let (just_a, just_b) = (std::slice::from_ref(&a), std::slice::from_ref(&b));
        assert_eq!(k(&a, just_b), k(&a, just_b));
        assert_ne!(k(&a, &[]), k(&a, just_b));
        assert_ne!(k(&a, just_b), k(&b, just_a));
        assert_ne!(k(&a, &[]), k(&b, &[]));
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first() {
        let (leaf, not_after) = self_signed("leaf", 1);
        let c = Reverified::default();
        let now = not_after - 3600;
        for i in 0..MAX_ENTRIES {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            // Half of them expire after one second.
            let bound = (i % 2 == 0).then_some(now + 1);
            c.put(key, std::slice::from_ref(&leaf), now, bound);
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        let key = Reverified::key(&leaf, &[]).unwrap();
        c.put(key, std::slice::from_ref(&leaf), now + 2, None);
        assert_eq!(c.len(), MAX_ENTRIES / 2 + 1);
        assert!(c.get(&key, now + 2).is_some());
    }
}
