//! The user CA's CRL, built from the store's revocations, signed with the user CA's key and
//! published in the store, so that every signer sharing it serves the very same list.
//!
//! `GET /v1/crl` reads the store's current revocations and the published CRL (two queries;
//! gateways fetch rarely). The published CRL is served when it lists exactly those
//! revocations and is younger than half of `crl_lifetime` (a gateway always gets a list valid
//! for at least half of it); otherwise a new one is built and published. `signer revoke`
//! publishes one at once. Each build draws its number from the store
//! ([`Store::next_crl_number`]) *before* reading the revocations, and the store keeps only
//! the highest number published: a list with a higher number was read later, so the list in
//! force never goes back to older revocations, and gateways (which refuse a lower number)
//! never see one signer's list as a rollback of another's.

use crate::pki::Issued;
use crate::signin::store::{PublishedCrl, Revoked, Store};
use crate::util::time::unix_now;
use openssl::asn1::Asn1Integer;
use openssl::bn::BigNum;
use openssl::x509::X509Crl;
use std::collections::BTreeSet;
use std::time::Duration;

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

/// The CRL to serve now: the published one if it lists the store's revocations and is
/// younger than half of `lifetime`, else a new one (published first).
pub(crate) async fn current(
    ca: &Issued,
    store: &Store,
    lifetime: Duration,
) -> Result<Served, String> {
    let now = unix_now();
    let entries = store.revoked(now).await.map_err(|e| e.to_string())?;
    let published = store.published_crl().await.map_err(|e| e.to_string())?;
    let half = (lifetime.as_secs() / 2) as i64;
    if let Some(p) = published {
        if now - p.built_at < half && lists(&p.der, &entries) {
            return served(&p.der);
        }
    }
    let p = publish(ca, store, lifetime).await?;
    served(&p.der)
}

/// Builds a CRL of the store's revocations now, publishes it, and returns the CRL
/// published after that (this one, or a newer one another signer published meanwhile).
pub(crate) async fn publish(
    ca: &Issued,
    store: &Store,
    lifetime: Duration,
) -> Result<PublishedCrl, String> {
    let now = unix_now();
    let number = store.next_crl_number().await.map_err(|e| e.to_string())?;
    let entries = store.revoked(now).await.map_err(|e| e.to_string())?;
    let der = build(ca, &entries, now, lifetime, number).map_err(|e| e.to_string())?;
    let crl = PublishedCrl {
        number,
        der,
        built_at: now,
    };
    store.publish_crl(&crl).await.map_err(|e| e.to_string())?;
    tracing::info!(
        number,
        entries = entries.len(),
        store = store.name(),
        "user CA CRL published"
    );
    Ok(store
        .published_crl()
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or(crl))
}

fn served(der: &[u8]) -> Result<Served, String> {
    let pem = X509Crl::from_der(der)
        .and_then(|c| c.to_pem())
        .map_err(|e| format!("the published CRL does not parse: {e}"))?;
    Ok(Served {
        der: der.to_vec(),
        pem,
    })
}

/// Whether the CRL `der` lists exactly `entries` (serial and revocation time).
fn lists(der: &[u8], entries: &[Revoked]) -> bool {
    let Ok(crl) = X509Crl::from_der(der) else {
        return false;
    };
    let listed: Option<BTreeSet<(String, i64)>> = crl
        .get_revoked()
        .map(|s| {
            s.iter()
                .map(|r| {
                    let serial = r.serial_number().to_bn().ok()?.to_hex_str().ok()?;
                    let at = crate::util::time::unix_time(r.revocation_date())?;
                    Some((serial.to_string(), at))
                })
                .collect()
        })
        .unwrap_or(Some(BTreeSet::new()));
    let want: BTreeSet<(String, i64)> = entries
        .iter()
        .map(|r| (r.serial.clone(), r.revoked_at))
        .collect();
    listed == Some(want)
}

/// The CRL of `entries`, from `now` (set back [`BACKDATE_SECS`]) to `now + lifetime`, DER.
fn build(
    ca: &Issued,
    entries: &[Revoked],
    now: i64,
    lifetime: Duration,
    number: u64,
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
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
    crate::pki::make_crl_numbered(ca, &refs, (now - BACKDATE_SECS, next), number)?.to_der()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signin::store::Location;

    /// Rebuilt (with a higher number) when a revocation appears, not otherwise, and the same
    /// list for two stores on one database; lists the revoked serial; signed by the CA. The
    /// serial and the number are read back by OpenSSL and the gateway's reader.
    #[tokio::test]
    async fn rebuilt_when_the_store_changes() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::Sqlite(dir.path().join("s.db"));
        let store = Store::open(&location, None).await.unwrap();
        let other = Store::open(&location, None).await.unwrap();
        let ca = crate::pki::new_ca_with("Users", 30, crate::pki::KeyType::EcP256).unwrap();
        let hour = Duration::from_secs(3600);
        let first = current(&ca, &store, hour).await.unwrap();
        let again = current(&ca, &other, hour).await.unwrap();
        assert_eq!(
            first.der, again.der,
            "unchanged store: the same list, at every signer"
        );
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
        let after = current(&ca, &other, hour).await.unwrap();
        assert_eq!(
            current(&ca, &store, hour).await.unwrap().der,
            after.der,
            "the other signer serves the new list"
        );
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
