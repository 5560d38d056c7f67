//! `GET /v1/crl`: the user CA's CRL, built from the store's revocations and signed with the
//! user CA's key.
//!
//! Every request reads the store's current revocations (one query; gateways fetch rarely).
//! The CRL served is rebuilt when they differ from those it lists (a `signer revoke` at any
//! signer, or an entry that expired), and when it has reached half of `crl_lifetime`, so a
//! gateway always gets a list valid for at least half of it. Each rebuild draws its number
//! from the store ([`Store::next_crl_number`]) *before* reading the revocations: a list with
//! a higher number was read later, so a gateway that keeps the highest number it has seen
//! (it refuses to roll back) does not keep an older list than the store's. Two signers
//! serving one store converge on each request.

use crate::pki::Issued;
use crate::signin::store::{Revoked, Store};
use crate::util::time::unix_now;
use openssl::asn1::Asn1Integer;
use openssl::bn::BigNum;
use std::time::Duration;
use tokio::sync::Mutex;

/// How far thisUpdate is set back, for gateways whose clocks run slow (a CRL not yet valid
/// would be refused).
const BACKDATE_SECS: i64 = 300;

/// A CRL as served.
#[derive(Clone)]
pub(crate) struct Served {
    /// DER.
    pub der: Vec<u8>,
    /// PEM.
    pub pem: Vec<u8>,
}

struct Built {
    served: Served,
    entries: Vec<Revoked>,
    built_at: i64,
}

/// The CRL last built by this signer (kept across reloads with the store).
#[derive(Default)]
pub(crate) struct CrlCache {
    last: Mutex<Option<Built>>,
}

impl CrlCache {
    /// The CRL to serve now: the one built before if the store's revocations are the ones
    /// it lists and it is younger than half of `lifetime`, else a new one.
    pub(crate) async fn current(
        &self,
        ca: &Issued,
        store: &Store,
        lifetime: Duration,
    ) -> Result<Served, String> {
        let now = unix_now();
        let entries = store.revoked(now).await.map_err(|e| e.to_string())?;
        let half = (lifetime.as_secs() / 2) as i64;
        let mut last = self.last.lock().await;
        if let Some(b) = last.as_ref() {
            if b.entries == entries && now - b.built_at < half {
                return Ok(b.served.clone());
            }
        }
        let number = store.next_crl_number().await.map_err(|e| e.to_string())?;
        let entries = store.revoked(now).await.map_err(|e| e.to_string())?;
        let served = build(ca, &entries, now, lifetime, number).map_err(|e| e.to_string())?;
        tracing::info!(
            number,
            entries = entries.len(),
            store = store.name(),
            "user CA CRL built"
        );
        *last = Some(Built {
            served: served.clone(),
            entries,
            built_at: now,
        });
        Ok(served)
    }
}

/// The CRL of `entries`, from `now` (set back [`BACKDATE_SECS`]) to `now + lifetime`.
fn build(
    ca: &Issued,
    entries: &[Revoked],
    now: i64,
    lifetime: Duration,
    number: u64,
) -> Result<Served, openssl::error::ErrorStack> {
    let serials: Vec<(Asn1Integer, i64)> = entries
        .iter()
        .map(|r| {
            BigNum::from_hex_str(&r.serial)
                .and_then(|b| b.to_asn1_integer())
                .map(|i| (i, r.revoked_at))
        })
        .collect::<Result<_, _>>()?;
    let refs: Vec<(&openssl::asn1::Asn1IntegerRef, i64)> =
        serials.iter().map(|(s, at)| (&**s, *at)).collect();
    let next = now.saturating_add(lifetime.as_secs() as i64);
    let crl = crate::pki::make_crl_numbered(ca, &refs, (now - BACKDATE_SECS, next), number)?;
    Ok(Served {
        der: crl.to_der()?,
        pem: crl.to_pem()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signin::store::Location;

    /// Rebuilt (with a higher number) when a revocation appears, not otherwise; lists the
    /// revoked serial; signed by the CA. The serial and the number are read back by OpenSSL.
    #[tokio::test]
    async fn rebuilt_when_the_store_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Location::Sqlite(dir.path().join("s.db")), None)
            .await
            .unwrap();
        let ca = crate::pki::new_ca_with("Users", 30, crate::pki::KeyType::EcP256).unwrap();
        let cache = CrlCache::default();
        let hour = Duration::from_secs(3600);
        let first = cache.current(&ca, &store, hour).await.unwrap();
        let again = cache.current(&ca, &store, hour).await.unwrap();
        assert_eq!(first.der, again.der, "unchanged store: the same list");
        let now = unix_now();
        let new = crate::signin::store::NewIssuance {
            serial: "0A1B".into(),
            email: "a@example.com".into(),
            sub: "a".into(),
            groups: vec![],
            key_sha256: "00".into(),
            not_before: now - 10,
            not_after: now + 3600,
            issued_by: "test".into(),
            token: [1; 32],
        };
        store.record_issuance(&new).await.unwrap();
        let which = crate::signin::store::Selector::Email("a@example.com".into());
        store.revoke(&which, "test", now).await.unwrap();
        let after = cache.current(&ca, &store, hour).await.unwrap();
        let crl = openssl::x509::X509Crl::from_der(&after.der).unwrap();
        assert!(crl.verify(&ca.cert.public_key().unwrap()).unwrap());
        let listed: Vec<String> = crl
            .get_revoked()
            .map(|s| {
                s.iter()
                    .map(|r| {
                        r.serial_number()
                            .to_bn()
                            .unwrap()
                            .to_hex_str()
                            .unwrap()
                            .to_string()
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(listed, ["0A1B"]);
        // Read by the gateway's own CRL reader.
        let number = |der: &[u8]| {
            let crl = openssl::x509::X509Crl::from_der(der).unwrap();
            crate::revocation::crl::rollback::Position::of(&crl).number
        };
        assert_eq!(number(&first.der), Some(vec![1]));
        assert_eq!(number(&after.der), Some(vec![2]));
        let next = crl.next_update().unwrap();
        let secs = crate::util::time::asn1_to_unix(next).unwrap() - now;
        assert!(
            (3590..=3610).contains(&secs),
            "nextUpdate = now + lifetime: {secs}"
        );
    }
}
