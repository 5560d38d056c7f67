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

mod import;
mod postgres;
pub mod requests;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The schema version this code writes and reads. Migrations go from each version to the
/// next (`sqlite::MIGRATIONS`, `postgres::MIGRATIONS`); a store with a higher version is
/// refused.
pub const SCHEMA_VERSION: u32 = 3;
/// The default SQLite file in the signer's `state_dir`.
pub const DEFAULT_FILE: &str = "signer.db";
/// First uses between two purges of forgettable token keys.
const PURGE_EVERY: u64 = 1024;

/// What identifies a used ID token ([`crate::signin::oidc::jws::replay_key`]).
pub type ReplayKey = [u8; 32];

/// Why the store cannot do what was asked; each message names the store and what to do.
/// Any of them refuses the request at hand: never a certificate without a record.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The `store` setting (or `password_file`) is not usable as written.
    #[error("store {store}: {problem}")]
    Config {
        /// The setting as written (never with a password).
        store: String,
        /// What is wrong and how to write it.
        problem: String,
    },
    /// The database cannot be opened or reached.
    #[error("cannot open store {store}: {detail}; {fix}")]
    Open {
        /// The store.
        store: String,
        /// The engine's answer.
        detail: String,
        /// What to check.
        fix: &'static str,
    },
    /// The store was written by a newer signer.
    #[error("store {store} has schema version {found}, this signer knows up to {known}; upgrade the signer (every signer sharing a store must be at least as new as the newest one)")]
    SchemaTooNew {
        /// The store.
        store: String,
        /// Its version.
        found: i64,
        /// [`SCHEMA_VERSION`].
        known: u32,
    },
    /// An SQLite file that holds tables but no signer schema.
    #[error("{store} is an SQLite database of something else (it has tables but no signer schema); point `store` at a new file")]
    NotAStore {
        /// The store.
        store: String,
    },
    /// A schema migration failed (rolled back: the store is as it was).
    #[error("store {store}: cannot migrate the schema to version {version}: {detail}; the store was left unchanged; check that the signer's database user may create tables")]
    Migrate {
        /// The store.
        store: String,
        /// The version that failed.
        version: u32,
        /// The engine's answer.
        detail: String,
    },
    /// A query or a commit failed.
    #[error("store {store}: cannot {what}: {detail}; {fix}")]
    Query {
        /// The store.
        store: String,
        /// What was being done.
        what: &'static str,
        /// The engine's answer.
        detail: String,
        /// What to check.
        fix: &'static str,
    },
    /// A serial number that is not hexadecimal.
    #[error("{serial:?} is not a hexadecimal serial number (as `openssl x509 -noout -serial` prints it)")]
    BadSerial {
        /// As given.
        serial: String,
    },
    /// The JSON pki index to import cannot be read.
    #[error("cannot import {}: {problem}", .path.display())]
    Import {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The backup cannot be written.
    #[error("store {store}: cannot back up to {}: {detail}", .path.display())]
    Backup {
        /// The store.
        store: String,
        /// The backup's path.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The engine does not do this.
    #[error("store {store}: {what} is not done by the signer for this engine; {fix}")]
    Unsupported {
        /// The store.
        store: String,
        /// What was asked.
        what: &'static str,
        /// What to use instead.
        fix: &'static str,
    },
    /// The blocking thread running an SQLite call panicked.
    #[error(
        "store {store}: the database call panicked: {detail}; this is a bug, please report it"
    )]
    Panicked {
        /// The store.
        store: String,
        /// The panic.
        detail: String,
    },
}

/// Where the store is: the `store` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `sqlite:PATH`.
    Sqlite(PathBuf),
    /// `postgresql://…` (or `postgres://…`), as written.
    Postgres(String),
}

impl Location {
    /// Reads a `store` setting: `sqlite:PATH` or a `postgresql://` URL.
    pub fn parse(s: &str) -> Result<Location, StoreError> {
        if let Some(path) = s.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::Config {
                    store: s.to_string(),
                    problem:
                        "no file after `sqlite:`; write sqlite:/var/lib/tunnel-signer/signer.db"
                            .into(),
                });
            }
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgresql://") || s.starts_with("postgres://") {
            return Ok(Location::Postgres(s.to_string()));
        }
        Err(StoreError::Config {
            store: postgres::without_password(s),
            problem: "not a store: write sqlite:PATH, or postgresql://USER@HOST:PORT/DB?sslmode=verify-full (the password in password_file)".into(),
        })
    }

    /// The default: `STATE_DIR/signer.db`.
    pub fn default_in(state_dir: &Path) -> Location {
        Location::Sqlite(state_dir.join(DEFAULT_FILE))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            Location::Postgres(url) => f.write_str(&postgres::without_password(url)),
        }
    }
}

/// A certificate to record, as the signer issues it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIssuance {
    /// Serial number, hex (any case, optional `0x` and colons; stored upper-case as the pki
    /// index writes it).
    pub serial: String,
    /// The token's email (the certificate's CN and SAN).
    pub email: String,
    /// The provider's `sub`.
    pub sub: String,
    /// The groups written as OUs.
    pub groups: Vec<String>,
    /// SHA-256 of the certificate's SubjectPublicKeyInfo (DER), lower-case hex.
    pub key_sha256: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// The signer instance that issued it (its name, or host name).
    pub issued_by: String,
    /// The replay key of the token it was issued for.
    pub token: ReplayKey,
}

/// A recorded certificate. Fields that an import from the JSON pki index cannot know are
/// `None` there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// Serial number, upper-case hex.
    pub serial: String,
    /// Email (for an imported entry: its subject's CN, which is the email for the signer's
    /// certificates).
    pub email: String,
    /// The provider's `sub`.
    pub sub: Option<String>,
    /// Groups (OUs).
    pub groups: Vec<String>,
    /// SHA-256 of the SubjectPublicKeyInfo, lower-case hex.
    pub key_sha256: Option<String>,
    /// Start of validity, Unix seconds.
    pub not_before: Option<i64>,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// The signer instance that issued it, or `import:PATH`.
    pub issued_by: String,
    /// The replay key of the token it was issued for.
    pub token: Option<ReplayKey>,
    /// When it was revoked, Unix seconds.
    pub revoked_at: Option<i64>,
    /// Why it was revoked.
    pub revocation_reason: Option<String>,
}

impl From<&NewIssuance> for Issued {
    fn from(n: &NewIssuance) -> Issued {
        Issued {
            serial: n.serial.clone(),
            email: n.email.clone(),
            sub: Some(n.sub.clone()),
            groups: n.groups.clone(),
            key_sha256: Some(n.key_sha256.clone()),
            not_before: Some(n.not_before),
            not_after: n.not_after,
            issued_by: n.issued_by.clone(),
            token: Some(n.token),
            revoked_at: None,
            revocation_reason: None,
        }
    }
}

/// What [`Store::record_issuance`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded and committed: the certificate may be handed out.
    Stored,
    /// A certificate with this serial is already recorded (nothing was changed): draw a new
    /// serial and try again.
    SerialTaken,
    /// A certificate was already recorded for this token (nothing was changed): refuse.
    TokenUsed,
}

/// Which certificates: for [`Store::list`] and [`Store::revoke`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// By email, ASCII case ignored.
    Email(String),
    /// By the provider's `sub`.
    Sub(String),
    /// By serial (any case, optional `0x` and colons).
    Serial(String),
}

/// Whom to block: an identity, not a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// An email, ASCII case ignored.
    Email(String),
    /// A provider `sub`.
    Sub(String),
}

/// A revoked certificate not yet expired: one CRL entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// Serial number, upper-case hex.
    pub serial: String,
    /// When, Unix seconds.
    pub revoked_at: i64,
    /// Why, as given to [`Store::revoke`] (`None` for revocations imported from the pki
    /// index).
    pub reason: Option<String>,
}

/// The user CA's CRL as published in the store, for every signer to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedCrl {
    /// Its CRL Number (from [`Store::next_crl_number`]).
    pub number: u64,
    /// The CRL, DER.
    pub der: Vec<u8>,
    /// When it was built, Unix seconds.
    pub built_at: i64,
}

/// What [`Store::import_json_index`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// This index was imported before; nothing was done.
    AlreadyDone,
    /// Imported now.
    Done {
        /// Entries added.
        added: usize,
        /// Entries whose serial was already in the store (left as they were).
        skipped: usize,
    },
}

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
