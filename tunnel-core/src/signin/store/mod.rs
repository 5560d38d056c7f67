//! Everything the signer remembers, in a real database: the certificates it issued, the ID
//! tokens already used, revocations and blocked identities, the CRL number, and the CRL last
//! published (schema version 2).
//!
//! Two engines behind one [`Store`]:
//!
//! - `sqlite:PATH` (the default: `signer.db` in the signer's `state_dir`), embedded. Every
//!   call runs on a blocking thread (`spawn_blocking`) with the one connection behind the
//!   crate's lock policy ([`crate::util::sync::lock`]). The file is in WAL mode with
//!   `synchronous=FULL`: each commit fsyncs the WAL before it returns, so a recorded issuance
//!   or token use survives a power loss (with `NORMAL`, the last commits before a crash
//!   could be lost: a certificate out in the world with no record, a token usable twice).
//!   Several processes may open one file (SQLite's own locking, and a busy timeout).
//! - `postgresql://USER@HOST:PORT/DB?sslmode=verify-full`, for several signers sharing one
//!   store. TLS is OpenSSL's (`postgres-openssl`). The password comes from a file
//!   (`password_file`), never from the URL, which is refused when it holds one.
//!
//! Every rule that must hold across signers is a constraint of the database, not a check
//! in this process: a serial is a primary key (a duplicate is reported, never overwritten),
//! a token's key is unique among issuances, a used token is a primary key of `replay`, the
//! CRL number is one counter (a sequence in PostgreSQL). Each change is one statement or one
//! transaction, committed before the call returns.
//!
//! The schema is versioned and migrated at open, in one transaction ([`SCHEMA_VERSION`]);
//! a store written by a newer signer is refused rather than misread.
//!
//! The files: this one holds [`Store`] and its calls; the public values are in `types.rs` and
//! [`StoreError`] in `error.rs` (both re-exported here); the engines are `sqlite.rs` and
//! `postgres.rs`, with their schema migrations in `sqlite_migrations.rs` and
//! `pg_migrations.rs`, and PostgreSQL's URL, TLS and password settings in `pg_settings.rs`.

mod error;
mod import;
mod pg_migrations;
mod pg_settings;
mod postgres;
pub mod requests;
mod sqlite;
mod sqlite_migrations;
mod types;

pub use error::StoreError;
pub use types::{
    Blocked, Imported, Issued, Location, NewIssuance, PublishedCrl, Recorded, Revoked, Selector,
};

use std::path::Path;
use std::sync::Arc;

/// The schema version this code writes and reads. Migrations go from each version to the
/// next (`sqlite_migrations::MIGRATIONS`, `pg_migrations::MIGRATIONS`); a store with a higher version is
/// refused.
pub const SCHEMA_VERSION: u32 = 3;
/// The default SQLite file in the signer's `state_dir`.
pub const DEFAULT_FILE: &str = "signer.db";
/// First uses between two purges of forgettable token keys.
const PURGE_EVERY: u64 = 1024;

/// What identifies a used ID token ([`crate::signin::oidc::jws::replay_key`]).
pub type ReplayKey = [u8; 32];

/// The store of one signer (or of several: PostgreSQL, or one SQLite file on one machine).
/// Cheap to share: hold it in an `Arc`.
pub struct Store {
    engine: Engine,
    /// The store, as messages name it.
    name: String,
    /// First uses since the last purge of forgettable token keys.
    uses: std::sync::atomic::AtomicU64,
}

enum Engine {
    Sqlite(Arc<sqlite::Sqlite>),
    Postgres(Box<postgres::Postgres>),
}

impl Store {
    /// Opens the store at `location`, creating it or migrating its schema as needed.
    /// `password_file` is for PostgreSQL only: the file holding the database user's
    /// password (one line).
    pub async fn open(
        location: &Location,
        password_file: Option<&Path>,
    ) -> Result<Store, StoreError> {
        let name = location.to_string();
        let engine = match location {
            Location::Sqlite(path) => {
                if password_file.is_some() {
                    return Err(StoreError::Config {
                        store: name,
                        problem: "password_file is for a postgresql store; remove it".into(),
                    });
                }
                let (path, n) = (path.clone(), name.clone());
                let db = tokio::task::spawn_blocking(move || sqlite::Sqlite::open(&path, n))
                    .await
                    .map_err(|e| StoreError::Panicked {
                        store: name.clone(),
                        detail: e.to_string(),
                    })??;
                Engine::Sqlite(Arc::new(db))
            }
            Location::Postgres(url) => Engine::Postgres(Box::new(
                postgres::Postgres::open(url, password_file, name.clone()).await?,
            )),
        };
        Ok(Store {
            engine,
            name,
            uses: Default::default(),
        })
    }

    /// The store, as messages name it (`sqlite:PATH`, or the URL).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schema version of the database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        match &self.engine {
            Engine::Sqlite(db) => blocking(db, |c| c.schema_version()).await,
            Engine::Postgres(pg) => pg.schema_version().await,
        }
    }

    /// Records an issued certificate, committed (durable) before it returns: call it before
    /// handing the certificate out, and hand it out only on [`Recorded::Stored`].
    pub async fn record_issuance(&self, new: &NewIssuance) -> Result<Recorded, StoreError> {
        let mut row = Issued::from(new);
        row.serial = canonical_serial(&row.serial)?;
        match &self.engine {
            Engine::Sqlite(db) => blocking(db, move |c| c.record(&row)).await,
            Engine::Postgres(pg) => pg.record(&row).await,
        }
    }

    /// The recorded certificates matching `which` (all when `None`), without those expired
    /// at `now` unless `include_expired`; by end of validity, then serial.
    pub async fn list(
        &self,
        which: Option<&Selector>,
        include_expired: bool,
        now: i64,
    ) -> Result<Vec<Issued>, StoreError> {
        let which = which.map(canonical).transpose()?;
        let since = if include_expired { i64::MIN } else { now };
        match &self.engine {
            Engine::Sqlite(db) => blocking(db, move |c| c.list(which.as_ref(), since)).await,
            Engine::Postgres(pg) => pg.list(which.as_ref(), since).await,
        }
    }

    /// Records the use of the token `key` until `forget_after`: `true` on its first use
    /// across every signer sharing the store (committed before it returns), `false` when it
    /// was used before and is not forgettable yet at `now`. Now and then, also drops the
    /// keys forgettable at `now`.
    pub async fn first_use(
        &self,
        key: &ReplayKey,
        forget_after: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let key = *key;
        let first = match &self.engine {
            Engine::Sqlite(db) => blocking(db, move |c| c.first_use(&key, forget_after, now)).await,
            Engine::Postgres(pg) => pg.first_use(&key, forget_after, now).await,
        }?;
        let uses = self.uses.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if uses % PURGE_EVERY == 0 {
            if let Err(e) = self.purge_replay(now).await {
                // The use is recorded; dropping old keys can wait for the next purge.
                tracing::warn!(error = %e, "cannot drop forgettable token keys");
            }
        }
        Ok(first)
    }

    /// Drops the token keys forgettable at `now`; returns how many.
    pub async fn purge_replay(&self, now: i64) -> Result<u64, StoreError> {
        match &self.engine {
            Engine::Sqlite(db) => blocking(db, move |c| c.purge_replay(now)).await,
            Engine::Postgres(pg) => pg.purge_replay(now).await,
        }
    }

    /// Revokes, in one transaction, every certificate matching `which` that is neither
    /// expired at `now` nor already revoked; returns them (as revoked).
    pub async fn revoke(
        &self,
        which: &Selector,
        reason: &str,
        now: i64,
    ) -> Result<Vec<Issued>, StoreError> {
        let which = canonical(which)?;
        let reason = reason.to_string();
        match &self.engine {
            Engine::Sqlite(db) => blocking(db, move |c| c.revoke(&which, &reason, now)).await,
            Engine::Postgres(pg) => pg.revoke(&which, &reason, now).await,
        }
    }

    /// Every revoked certificate not expired at `now`, by revocation time: the CRL's entries.
    pub async fn revoked(&self, now: i64) -> Result<Vec<Revoked>, StoreError> {
        match &self.engine {
            Engine::Sqlite(db) => blocking(db, move |c| c.revoked(now)).await,
            Engine::Postgres(pg) => pg.revoked(now).await,
        }
    }

    /// Blocks an identity until `until` (Unix seconds; `None`: until unblocked), replacing
    /// an earlier block of it.
    pub async fn block(
        &self,
        who: &Blocked,
        until: Option<i64>,
        reason: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let (kind, value) = blocked_key(who);
        let reason = reason.to_string();
        match &self.engine {
            Engine::Sqlite(db) => {
                blocking(db, move |c| c.block(kind, &value, until, &reason, now)).await
            }
            Engine::Postgres(pg) => pg.block(kind, &value, until, &reason, now).await,
        }
    }

    /// Lifts a block; `false` when there was none.
    pub async fn unblock(&self, who: &Blocked) -> Result<bool, StoreError> {
        let (kind, value) = blocked_key(who);
        match &self.engine {
            Engine::Sqlite(db) => blocking(db, move |c| c.unblock(kind, &value)).await,
            Engine::Postgres(pg) => pg.unblock(kind, &value).await,
        }
    }

    /// Whether the person with this email or this `sub` is blocked at `now`.
    pub async fn is_blocked(&self, email: &str, sub: &str, now: i64) -> Result<bool, StoreError> {
        let (email, sub) = (email.to_ascii_lowercase(), sub.to_string());
        match &self.engine {
            Engine::Sqlite(db) => blocking(db, move |c| c.is_blocked(&email, &sub, now)).await,
            Engine::Postgres(pg) => pg.is_blocked(&email, &sub, now).await,
        }
    }

    /// The next CRL number: strictly greater than every number returned before, by any
    /// signer sharing the store (committed before it returns). Starts at 1.
    pub async fn next_crl_number(&self) -> Result<u64, StoreError> {
        match &self.engine {
            Engine::Sqlite(db) => blocking(db, |c| c.next_crl_number()).await,
            Engine::Postgres(pg) => pg.next_crl_number().await,
        }
    }

    /// The CRL last published, if any.
    pub async fn published_crl(&self) -> Result<Option<PublishedCrl>, StoreError> {
        match &self.engine {
            Engine::Sqlite(db) => blocking(db, |c| c.published_crl()).await,
            Engine::Postgres(pg) => pg.published_crl().await,
        }
    }

    /// Publishes `crl` in one statement, unless a CRL with a number at least as high is
    /// published already (by another signer): the published number only goes up.
    pub async fn publish_crl(&self, crl: &PublishedCrl) -> Result<(), StoreError> {
        let crl = crl.clone();
        match &self.engine {
            Engine::Sqlite(db) => blocking(db, move |c| c.publish_crl(&crl)).await,
            Engine::Postgres(pg) => pg.publish_crl(&crl).await,
        }
    }

    /// Writes a consistent copy of an SQLite store to `path` (which must not exist), while
    /// the signer runs. For PostgreSQL, use `pg_dump`.
    pub async fn backup_to(&self, path: &Path) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sqlite(db) => {
                let path = path.to_path_buf();
                blocking(db, move |c| c.backup_to(&path)).await
            }
            Engine::Postgres(_) => Err(StoreError::Unsupported {
                store: self.name.clone(),
                what: "a backup",
                fix: "use pg_dump (or the server's own backups)",
            }),
        }
    }

    /// Imports the issuances of a JSON pki index (`CA_DIR/index.json`), once: the import is
    /// recorded in the store, and a second call (by any signer) does nothing. Serials
    /// already recorded are left as they are.
    pub async fn import_json_index(&self, path: &Path) -> Result<Imported, StoreError> {
        let (marker, rows) = import::read(path)?;
        match &self.engine {
            Engine::Sqlite(db) => blocking(db, move |c| c.import(&marker, &rows)).await,
            Engine::Postgres(pg) => pg.import(&marker, &rows).await,
        }
    }
}

/// Runs `f` on the SQLite connection, on a blocking thread.
async fn blocking<T, F>(db: &Arc<sqlite::Sqlite>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut sqlite::Conn<'_>) -> Result<T, StoreError> + Send + 'static,
{
    let db2 = db.clone();
    tokio::task::spawn_blocking(move || db2.with(f))
        .await
        .map_err(|e| StoreError::Panicked {
            store: db.name().to_string(),
            detail: e.to_string(),
        })?
}

/// The key fingerprint [`NewIssuance::key_sha256`] holds: SHA-256 of the key's
/// SubjectPublicKeyInfo (DER), lower-case hex.
pub fn key_sha256<T: openssl::pkey::HasPublic>(
    key: &openssl::pkey::PKeyRef<T>,
) -> Result<String, openssl::error::ErrorStack> {
    Ok(crate::authz::identity::hex(&openssl::sha::sha256(
        &key.public_key_to_der()?,
    )))
}

/// The canonical serial: upper-case hex without leading zeros, as the pki index writes it.
fn canonical_serial(s: &str) -> Result<String, StoreError> {
    let bad = || StoreError::BadSerial {
        serial: s.to_string(),
    };
    let t = s.trim();
    let hex: String = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t)
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if hex.is_empty() || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let bn = openssl::bn::BigNum::from_hex_str(&hex).map_err(|_| bad())?;
    Ok(bn.to_hex_str().map_err(|_| bad())?.to_string())
}

fn canonical(which: &Selector) -> Result<Selector, StoreError> {
    Ok(match which {
        Selector::Serial(s) => Selector::Serial(canonical_serial(s)?),
        other => other.clone(),
    })
}

/// The `blocks` row key: kind, and the value (emails lower-cased).
fn blocked_key(who: &Blocked) -> (&'static str, String) {
    match who {
        Blocked::Email(e) => ("email", e.to_ascii_lowercase()),
        Blocked::Sub(s) => ("sub", s.clone()),
    }
}

#[cfg(test)]
mod pg_cluster;
#[cfg(test)]
mod tests;
