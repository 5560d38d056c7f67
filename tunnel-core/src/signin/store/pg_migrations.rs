//! The PostgreSQL schema and its migrations, run at open in one transaction of their own
//! connection. Signers opening one store together take turns on an advisory lock, so the
//! second sees the first one's tables; the version is kept in the `schema_version` table,
//! created only when missing (a signer whose database user may not create tables can still
//! open a store that is up to date); a store with a newer version is refused.

use super::error::pg_detail as detail;
use super::{StoreError, SCHEMA_VERSION};
use tokio_postgres::{Client, Transaction};

/// Migrations: `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`. Add new ones at
/// the end (and raise [`SCHEMA_VERSION`]); never edit one that was released.
const MIGRATIONS: &[&str] = &[
    // 1: issuances, used tokens, blocks, CRL number, meta.
    "CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE issuances (
        serial TEXT PRIMARY KEY,
        email TEXT NOT NULL,
        sub TEXT,
        groups TEXT[] NOT NULL DEFAULT '{}',
        key_sha256 TEXT,
        not_before BIGINT,
        not_after BIGINT NOT NULL,
        issued_by TEXT NOT NULL,
        token BYTEA CONSTRAINT issuances_token_key UNIQUE CHECK (length(token) = 32),
        revoked_at BIGINT,
        revocation_reason TEXT
    );
    CREATE INDEX issuances_email ON issuances (lower(email));
    CREATE INDEX issuances_sub ON issuances (sub);
    CREATE INDEX issuances_revoked ON issuances (revoked_at) WHERE revoked_at IS NOT NULL;
    CREATE TABLE replay (
        key BYTEA PRIMARY KEY CHECK (length(key) = 32),
        forget_after BIGINT NOT NULL
    );
    CREATE INDEX replay_forget_after ON replay (forget_after);
    CREATE TABLE blocks (
        kind TEXT NOT NULL CHECK (kind IN ('email', 'sub')),
        value TEXT NOT NULL,
        until BIGINT,
        reason TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (kind, value)
    );
    CREATE SEQUENCE crl_number START WITH 1 MINVALUE 1 NO CYCLE;",
    // 2: the CRL last published, one row, so every signer serves the same list.
    "CREATE TABLE crl (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        number BIGINT NOT NULL,
        der BYTEA NOT NULL,
        built_at BIGINT NOT NULL
    );",
    // 3: just-in-time access: requests, the approvers' decisions, grants.
    "CREATE TABLE access_requests (
        id TEXT PRIMARY KEY,
        requester TEXT NOT NULL,
        role TEXT NOT NULL,
        duration BIGINT NOT NULL CHECK (duration > 0),
        reason TEXT NOT NULL,
        key_sha256 TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired')),
        decided_at BIGINT
    );
    CREATE INDEX access_requests_state ON access_requests (state);
    CREATE TABLE access_decisions (
        request_id TEXT NOT NULL REFERENCES access_requests (id),
        approver TEXT NOT NULL,
        verdict TEXT NOT NULL CHECK (verdict IN ('approve', 'deny')),
        reason TEXT NOT NULL,
        at BIGINT NOT NULL,
        PRIMARY KEY (request_id, approver)
    );
    CREATE TABLE access_grants (
        request_id TEXT PRIMARY KEY REFERENCES access_requests (id),
        starts_at BIGINT NOT NULL,
        ends_at BIGINT NOT NULL,
        serial TEXT,
        ended BIGINT NOT NULL DEFAULT 0
    );",
];

/// The advisory lock that serializes migrations by concurrent signers ("tunnelsg").
const MIGRATION_LOCK: i64 = 0x7475_6e6e_656c_7367;

/// Brings the schema of the store `name` to [`SCHEMA_VERSION`], on `client` (a connection of
/// its own), in one transaction.
pub(super) async fn migrate(client: &mut Client, name: &str) -> Result<(), StoreError> {
    let open_err = |e: tokio_postgres::Error| StoreError::Open {
        store: name.to_string(),
        detail: detail(&e),
        fix: "check that the signer's database user may use the database",
    };
    let tx = client.transaction().await.map_err(open_err)?;
    let found = found_version(&tx, name).await?;
    if found > i64::from(SCHEMA_VERSION) {
        return Err(StoreError::SchemaTooNew {
            store: name.to_string(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    if found == i64::from(SCHEMA_VERSION) {
        return Ok(());
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        apply(&tx, name, from as u32 + 1, sql).await?;
    }
    tx.commit().await.map_err(open_err)
}

/// Takes the migration lock, creates `schema_version` when missing, and reads the store's
/// version (0: a new store).
async fn found_version(tx: &Transaction<'_>, name: &str) -> Result<i64, StoreError> {
    let open_err = |e: tokio_postgres::Error| StoreError::Open {
        store: name.to_string(),
        detail: detail(&e),
        fix: "check that the signer's database user may use the database",
    };
    // Signers starting together take turns: the second sees the first one's tables.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(open_err)?;
    // Created only when missing: a signer whose database user may not create tables
    // can still open a store that is up to date.
    let exists: bool = tx
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await
        .map_err(open_err)?
        .get(0);
    if !exists {
        tx.batch_execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            .await
            .map_err(|e| StoreError::Migrate {
                store: name.to_string(),
                version: 1,
                detail: detail(&e),
            })?;
    }
    Ok(tx
        .query_one(
            "SELECT COALESCE(max(version), 0)::BIGINT FROM schema_version",
            &[],
        )
        .await
        .map_err(open_err)?
        .get(0))
}

/// Runs the migration `sql` to `version` and records the version.
async fn apply(
    tx: &Transaction<'_>,
    name: &str,
    version: u32,
    sql: &str,
) -> Result<(), StoreError> {
    let fail = |e: tokio_postgres::Error| StoreError::Migrate {
        store: name.to_string(),
        version,
        detail: detail(&e),
    };
    tx.batch_execute(sql).await.map_err(fail)?;
    tx.execute("DELETE FROM schema_version", &[])
        .await
        .map_err(fail)?;
    tx.execute(
        "INSERT INTO schema_version (version) VALUES ($1)",
        &[&(version as i32)],
    )
    .await
    .map_err(fail)?;
    Ok(())
}
