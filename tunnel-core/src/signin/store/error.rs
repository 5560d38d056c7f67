//! [`StoreError`]: why the store cannot do what was asked, for either engine. Each variant's
//! message names the store (never with a password) and what to do about it; any of them
//! refuses the request at hand, so that no certificate is handed out without its record.
//! Re-exported as `crate::signin::store::StoreError`.

use std::path::PathBuf;

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
        /// [`SCHEMA_VERSION`](super::SCHEMA_VERSION).
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

/// The engine's message, with its cause (tokio-postgres's own text is only the kind).
pub(super) fn pg_detail(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}
