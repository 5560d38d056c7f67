//! The SQLite schema and its migrations, run at open in one `BEGIN IMMEDIATE` transaction
//! (processes opening one file together take turns on its write lock). The version is
//! SQLite's `user_version`; a file with a newer version is refused, and so is a file at
//! version 0 that already holds tables (a database of something else).

use super::{StoreError, SCHEMA_VERSION};
use rusqlite::{Connection, TransactionBehavior};

/// Migrations: `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`. Add new ones at
/// the end (and raise [`SCHEMA_VERSION`]); never edit one that was released.
const MIGRATIONS: &[&str] = &[
    // 1: issuances, used tokens, blocks, CRL number, meta.
    "CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;
    CREATE TABLE issuances (
        serial TEXT PRIMARY KEY,
        email TEXT NOT NULL,
        sub TEXT,
        groups TEXT NOT NULL DEFAULT '[]',
        key_sha256 TEXT,
        not_before INTEGER,
        not_after INTEGER NOT NULL,
        issued_by TEXT NOT NULL,
        token BLOB UNIQUE CHECK (length(token) = 32),
        revoked_at INTEGER,
        revocation_reason TEXT
    ) STRICT;
    CREATE INDEX issuances_email ON issuances (lower(email));
    CREATE INDEX issuances_sub ON issuances (sub);
    CREATE INDEX issuances_revoked ON issuances (revoked_at) WHERE revoked_at IS NOT NULL;
    CREATE TABLE replay (
        key BLOB PRIMARY KEY CHECK (length(key) = 32),
        forget_after INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX replay_forget_after ON replay (forget_after);
    CREATE TABLE blocks (
        kind TEXT NOT NULL CHECK (kind IN ('email', 'sub')),
        value TEXT NOT NULL,
        until INTEGER,
        reason TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (kind, value)
    ) STRICT;
    CREATE TABLE counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) STRICT;
    INSERT INTO counters (name, value) VALUES ('crl_number', 0);",
    // 2: the CRL last published, one row, so every signer serves the same list.
    "CREATE TABLE crl (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        number INTEGER NOT NULL,
        der BLOB NOT NULL,
        built_at INTEGER NOT NULL
    ) STRICT;",
    // 3: just-in-time access: requests, the approvers' decisions, grants.
    "CREATE TABLE access_requests (
        id TEXT PRIMARY KEY,
        requester TEXT NOT NULL,
        role TEXT NOT NULL,
        duration INTEGER NOT NULL CHECK (duration > 0),
        reason TEXT NOT NULL,
        key_sha256 TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired')),
        decided_at INTEGER
    ) STRICT;
    CREATE INDEX access_requests_state ON access_requests (state);
    CREATE TABLE access_decisions (
        request_id TEXT NOT NULL REFERENCES access_requests (id),
        approver TEXT NOT NULL,
        verdict TEXT NOT NULL CHECK (verdict IN ('approve', 'deny')),
        reason TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (request_id, approver)
    ) STRICT;
    CREATE TABLE access_grants (
        request_id TEXT PRIMARY KEY REFERENCES access_requests (id),
        starts_at INTEGER NOT NULL,
        ends_at INTEGER NOT NULL,
        serial TEXT,
        ended INTEGER NOT NULL DEFAULT 0
    ) STRICT;",
];

/// Brings the schema of the file `name` to [`SCHEMA_VERSION`], in one transaction.
pub(super) fn migrate(c: &mut Connection, name: &str) -> Result<(), StoreError> {
    let open_err = |e: rusqlite::Error| StoreError::Open {
        store: name.to_string(),
        detail: e.to_string(),
        fix: "check that it is an SQLite database written by the signer",
    };
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_err)?;
    let found: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(open_err)?;
    if found > i64::from(SCHEMA_VERSION) {
        return Err(StoreError::SchemaTooNew {
            store: name.to_string(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    if found == 0 {
        let tables: i64 = tx
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(open_err)?;
        if tables > 0 {
            return Err(StoreError::NotAStore {
                store: name.to_string(),
            });
        }
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = from as u32 + 1;
        let fail = |e: rusqlite::Error| StoreError::Migrate {
            store: name.to_string(),
            version,
            detail: e.to_string(),
        };
        tx.execute_batch(sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(fail)?;
    }
    tx.commit().map_err(open_err)
}
