//! The PostgreSQL engine, for several signers sharing one store.
//!
//! One connection per signer, shared by its requests (tokio-postgres pipelines them); every
//! call is a single statement, atomic on its own, so the shared connection never holds a
//! transaction. The migration at open and an import use a connection of their own, in one
//! transaction. A closed connection (the server restarted) is replaced at the next call.
//!
//! TLS goes through OpenSSL. `sslmode` as libpq reads it: `disable`; `require` (encrypted;
//! the server's chain is checked only when `sslrootcert` names a CA file); `verify-ca`
//! (chain checked against `sslrootcert`, or the system's CAs); `verify-full` (and the host
//! name). `prefer`, `allow` or no `sslmode` are refused: they fall back to plain text
//! silently. The password is read from `password_file`; a URL holding one is refused.

use super::{
    Imported, Issued, PublishedCrl, Recorded, Revoked, Selector, StoreError, SCHEMA_VERSION,
};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use postgres_openssl::MakeTlsConnector;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config};

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
const COLS: &str = "serial, email, sub, groups, key_sha256, not_before, not_after, issued_by, \
                    token, revoked_at, revocation_reason";
const FIX: &str = "check that the database server is up and reachable";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Nothing,
    Chain,
    ChainAndHost,
}

pub(super) struct Postgres {
    config: Config,
    tls: MakeTlsConnector,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
    name: String,
}

/// `url` without a password (for messages); not a URL at all: a placeholder.
pub(super) fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            if u.query_pairs().any(|(k, _)| k == "password") {
                let kept: Vec<(String, String)> = u
                    .query_pairs()
                    .filter(|(k, _)| k != "password")
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(kept);
            }
            u.to_string()
        }
        Err(_) => "(the `store` setting)".to_string(),
    }
}

/// The engine's message, with its cause (tokio-postgres's own text is only the kind).
fn detail(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

fn query<'a>(
    name: &'a str,
    what: &'static str,
) -> impl Fn(tokio_postgres::Error) -> StoreError + 'a {
    move |e| StoreError::Query {
        store: name.to_string(),
        what,
        detail: detail(&e),
        fix: FIX,
    }
}

/// The connection settings and TLS connector for `url`.
fn settings(
    url: &str,
    password_file: Option<&Path>,
    name: &str,
) -> Result<(Config, MakeTlsConnector), StoreError> {
    let bad = |problem: String| StoreError::Config {
        store: name.to_string(),
        problem,
    };
    let mut u = url::Url::parse(url).map_err(|e| bad(format!("not a URL: {e}")))?;
    if u.password().is_some() || u.query_pairs().any(|(k, _)| k == "password") {
        return Err(bad(
            "the URL holds a password; remove it from the URL (it would show in process lists \
             and logs) and put it in a file named by password_file (mode 0600)"
                .into(),
        ));
    }
    let (mut mode, mut root) = (None, None);
    let mut kept = Vec::new();
    for (k, v) in u.query_pairs() {
        match &*k {
            "sslmode" => mode = Some(v.into_owned()),
            "sslrootcert" => root = Some(PathBuf::from(&*v)),
            _ => kept.push((k.into_owned(), v.into_owned())),
        }
    }
    if kept.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut().clear().extend_pairs(kept);
    }
    use tokio_postgres::config::SslMode;
    let (ssl, verify) = match mode.as_deref() {
        Some("disable") => (SslMode::Disable, Verify::Nothing),
        Some("require") if root.is_some() => (SslMode::Require, Verify::Chain),
        Some("require") => (SslMode::Require, Verify::Nothing),
        Some("verify-ca") => (SslMode::Require, Verify::Chain),
        Some("verify-full") => (SslMode::Require, Verify::ChainAndHost),
        Some(m @ ("prefer" | "allow")) => {
            return Err(bad(format!(
                "sslmode={m} falls back to plain text without a word; write \
                 sslmode=verify-full (or require, verify-ca; disable for a local socket)"
            )))
        }
        Some(m) => {
            return Err(bad(format!(
                "sslmode={m:?} is unknown; write verify-full, verify-ca, require or disable"
            )))
        }
        None => {
            return Err(bad(
                "the URL has no sslmode; add ?sslmode=verify-full (or require, verify-ca; \
                 disable for a local socket)"
                    .into(),
            ))
        }
    };
    let mut config: Config = u
        .as_str()
        .parse()
        .map_err(|e: tokio_postgres::Error| bad(detail(&e)))?;
    config.ssl_mode(ssl);
    config.connect_timeout(CONNECT_TIMEOUT);
    config.application_name("tunnel-signer");
    if let Some(path) = password_file {
        config.password(read_password(path).map_err(bad)?);
    }
    let tls = connector(verify, root.as_deref())
        .map_err(|e| bad(format!("cannot set up TLS (sslrootcert): {e}")))?;
    Ok((config, tls))
}

/// The password: the file's first line. Refused when others may read the file.
fn read_password(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |e: std::io::Error| format!("password_file {}: {e}", path.display());
    let meta = std::fs::metadata(path).map_err(fail)?;
    if meta.permissions().mode() & 0o007 != 0 {
        return Err(format!(
            "password_file {}: readable or writable by every user; chmod o-rwx it",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(fail)?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(format!(
            "password_file {}: empty; write the database user's password on its first line",
            path.display()
        ));
    }
    Ok(line.to_string())
}

fn connector(
    verify: Verify,
    root: Option<&Path>,
) -> Result<MakeTlsConnector, openssl::error::ErrorStack> {
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    if let Some(root) = root {
        b.set_ca_file(root)?;
    }
    if verify == Verify::Nothing {
        b.set_verify(SslVerifyMode::NONE);
    }
    let mut tls = MakeTlsConnector::new(b.build());
    if verify != Verify::ChainAndHost {
        tls.set_callback(|c, _| {
            c.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(tls)
}

fn issued(r: &tokio_postgres::Row) -> Issued {
    let token: Option<Vec<u8>> = r.get(8);
    Issued {
        serial: r.get(0),
        email: r.get(1),
        sub: r.get(2),
        groups: r.get(3),
        key_sha256: r.get(4),
        not_before: r.get(5),
        not_after: r.get(6),
        issued_by: r.get(7),
        // The column's CHECK keeps it 32 bytes.
        token: token.and_then(|t| t.try_into().ok()),
        revoked_at: r.get(9),
        revocation_reason: r.get(10),
    }
}

/// The condition (on parameter `$N`) selecting `which`, and its value.
fn condition(which: &Selector, n: usize) -> (String, String) {
    match which {
        Selector::Email(e) => (format!("lower(email) = lower(${n})"), e.clone()),
        Selector::Sub(s) => (format!("sub = ${n}"), s.clone()),
        Selector::Serial(s) => (format!("serial = ${n}"), s.clone()),
    }
}

const INSERT: &str = "INSERT INTO issuances (serial, email, sub, groups, key_sha256, not_before, \
     not_after, issued_by, token, revoked_at, revocation_reason) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

impl Postgres {
    pub(super) async fn open(
        url: &str,
        password_file: Option<&Path>,
        name: String,
    ) -> Result<Postgres, StoreError> {
        let (config, tls) = settings(url, password_file, &name)?;
        let pg = Postgres {
            config,
            tls,
            client: tokio::sync::Mutex::new(None),
            name,
        };
        let mut own = pg.connect().await?;
        pg.migrate(&mut own).await?;
        Ok(pg)
    }

    pub(super) async fn connect(&self) -> Result<Client, StoreError> {
        let (client, conn) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| StoreError::Open {
                store: self.name.clone(),
                detail: detail(&e),
                fix: "check that the server is up, the URL, sslmode/sslrootcert, and the password in password_file",
            })?;
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!(store = %name, error = %detail(&e), "store connection lost; the next request reconnects");
            }
        });
        Ok(client)
    }

    /// The shared connection, (re)connected when needed.
    pub(super) async fn client(&self) -> Result<Arc<Client>, StoreError> {
        let mut held = self.client.lock().await;
        if let Some(c) = &*held {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let c = Arc::new(self.connect().await?);
        *held = Some(c.clone());
        Ok(c)
    }

    async fn migrate(&self, client: &mut Client) -> Result<(), StoreError> {
        let name = &self.name;
        let open_err = |e: tokio_postgres::Error| StoreError::Open {
            store: name.clone(),
            detail: detail(&e),
            fix: "check that the signer's database user may use the database",
        };
        let tx = client.transaction().await.map_err(open_err)?;
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
                    store: name.clone(),
                    version: 1,
                    detail: detail(&e),
                })?;
        }
        let found: i64 = tx
            .query_one(
                "SELECT COALESCE(max(version), 0)::BIGINT FROM schema_version",
                &[],
            )
            .await
            .map_err(open_err)?
            .get(0);
        if found > i64::from(SCHEMA_VERSION) {
            return Err(StoreError::SchemaTooNew {
                store: name.clone(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        if found == i64::from(SCHEMA_VERSION) {
            return Ok(());
        }
        for (from, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let version = from as u32 + 1;
            let fail = |e: tokio_postgres::Error| StoreError::Migrate {
                store: name.clone(),
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
        }
        tx.commit().await.map_err(open_err)
    }

    pub(super) async fn schema_version(&self) -> Result<i64, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT COALESCE(max(version), 0)::BIGINT FROM schema_version",
                &[],
            )
            .await
            .map_err(query(&self.name, "read the schema version"))?;
        Ok(row.get(0))
    }

    pub(super) async fn record(&self, r: &Issued) -> Result<Recorded, StoreError> {
        let c = self.client().await?;
        let token = r.token.map(|t| t.to_vec());
        let done = c
            .execute(
                INSERT,
                &[
                    &r.serial,
                    &r.email,
                    &r.sub,
                    &r.groups,
                    &r.key_sha256,
                    &r.not_before,
                    &r.not_after,
                    &r.issued_by,
                    &token,
                    &r.revoked_at,
                    &r.revocation_reason,
                ],
            )
            .await;
        match done {
            Ok(_) => Ok(Recorded::Stored),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                let constraint = e.as_db_error().and_then(|d| d.constraint());
                Ok(if constraint == Some("issuances_pkey") {
                    Recorded::SerialTaken
                } else {
                    Recorded::TokenUsed
                })
            }
            Err(e) => Err(query(&self.name, "record the certificate")(e)),
        }
    }

    pub(super) async fn list(
        &self,
        which: Option<&Selector>,
        since: i64,
    ) -> Result<Vec<Issued>, StoreError> {
        let c = self.client().await?;
        let (cond, value) = match which {
            Some(w) => {
                let (cond, value) = condition(w, 2);
                (cond, Some(value))
            }
            None => ("$2::TEXT IS NULL".to_string(), None),
        };
        let rows = c
            .query(
                &format!(
                    "SELECT {COLS} FROM issuances WHERE not_after >= $1 AND {cond} \
                     ORDER BY not_after, serial"
                ),
                &[&since, &value],
            )
            .await
            .map_err(query(&self.name, "list certificates"))?;
        Ok(rows.iter().map(issued).collect())
    }

    pub(super) async fn first_use(
        &self,
        key: &[u8; 32],
        forget_after: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "INSERT INTO replay (key, forget_after) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET forget_after = EXCLUDED.forget_after
                 WHERE replay.forget_after < $3",
                &[&&key[..], &forget_after, &now],
            )
            .await
            .map_err(query(&self.name, "record the token's use"))?;
        Ok(n == 1)
    }

    pub(super) async fn purge_replay(&self, now: i64) -> Result<u64, StoreError> {
        let c = self.client().await?;
        c.execute("DELETE FROM replay WHERE forget_after < $1", &[&now])
            .await
            .map_err(query(&self.name, "drop forgettable token keys"))
    }

    pub(super) async fn revoke(
        &self,
        which: &Selector,
        reason: &str,
        now: i64,
    ) -> Result<Vec<Issued>, StoreError> {
        let c = self.client().await?;
        let (cond, value) = condition(which, 3);
        // One statement: atomic, and concurrent revocations of one certificate serialize on
        // its row (the second sees it revoked and skips it).
        let rows = c
            .query(
                &format!(
                    "UPDATE issuances SET revoked_at = $1, revocation_reason = $2 \
                     WHERE revoked_at IS NULL AND not_after >= $1 AND {cond} RETURNING {COLS}"
                ),
                &[&now, &reason, &value],
            )
            .await
            .map_err(query(&self.name, "revoke"))?;
        let mut revoked: Vec<Issued> = rows.iter().map(issued).collect();
        revoked.sort_by(|a, b| (a.not_after, &a.serial).cmp(&(b.not_after, &b.serial)));
        Ok(revoked)
    }

    pub(super) async fn revoked(&self, now: i64) -> Result<Vec<Revoked>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT serial, revoked_at, revocation_reason FROM issuances
                 WHERE revoked_at IS NOT NULL AND not_after >= $1 ORDER BY revoked_at, serial",
                &[&now],
            )
            .await
            .map_err(query(&self.name, "list revocations"))?;
        Ok(rows
            .iter()
            .map(|r| Revoked {
                serial: r.get(0),
                revoked_at: r.get(1),
                reason: r.get(2),
            })
            .collect())
    }

    pub(super) async fn block(
        &self,
        kind: &str,
        value: &str,
        until: Option<i64>,
        reason: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO blocks (kind, value, until, reason, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (kind, value) DO UPDATE SET until = EXCLUDED.until,
                 reason = EXCLUDED.reason, created_at = EXCLUDED.created_at",
            &[&kind, &value, &until, &reason, &now],
        )
        .await
        .map_err(query(&self.name, "record the block"))?;
        Ok(())
    }

    pub(super) async fn unblock(&self, kind: &str, value: &str) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM blocks WHERE kind = $1 AND value = $2",
                &[&kind, &value],
            )
            .await
            .map_err(query(&self.name, "remove the block"))?;
        Ok(n > 0)
    }

    pub(super) async fn is_blocked(
        &self,
        email: &str,
        sub: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM blocks
                 WHERE ((kind = 'email' AND value = $1) OR (kind = 'sub' AND value = $2))
                   AND (until IS NULL OR until > $3))",
                &[&email, &sub, &now],
            )
            .await
            .map_err(query(&self.name, "look up blocks"))?;
        Ok(row.get(0))
    }

    pub(super) async fn published_crl(&self) -> Result<Option<PublishedCrl>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt("SELECT number, der, built_at FROM crl WHERE id = 1", &[])
            .await
            .map_err(query(&self.name, "read the published CRL"))?;
        Ok(row.map(|r| PublishedCrl {
            number: r.get::<_, i64>(0) as u64,
            der: r.get(1),
            built_at: r.get(2),
        }))
    }

    pub(super) async fn publish_crl(&self, crl: &PublishedCrl) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO crl (id, number, der, built_at) VALUES (1, $1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET number = excluded.number, der = excluded.der, \
             built_at = excluded.built_at WHERE excluded.number > crl.number",
            &[&(crl.number as i64), &crl.der, &crl.built_at],
        )
        .await
        .map_err(query(&self.name, "publish the CRL"))?;
        Ok(())
    }

    pub(super) async fn next_crl_number(&self) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one("SELECT nextval('crl_number')", &[])
            .await
            .map_err(query(&self.name, "draw a CRL number"))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    pub(super) async fn import(
        &self,
        marker: &str,
        rows: &[Issued],
    ) -> Result<Imported, StoreError> {
        let name = &self.name;
        let mut own = self.connect().await?;
        let tx = own
            .transaction()
            .await
            .map_err(query(name, "start a transaction"))?;
        let now = crate::util::time::unix_now();
        // A second signer importing at the same time waits here for the first to commit,
        // then finds the marker.
        let first = tx
            .execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&marker, &format!("{} entries at {now}", rows.len())],
            )
            .await
            .map_err(query(name, "record the import"))?;
        if first == 0 {
            return Ok(Imported::AlreadyDone);
        }
        let insert = tx
            .prepare(&format!("{INSERT} ON CONFLICT DO NOTHING"))
            .await
            .map_err(query(name, "import a certificate"))?;
        let mut added = 0;
        for r in rows {
            let token = r.token.map(|t| t.to_vec());
            added += tx
                .execute(
                    &insert,
                    &[
                        &r.serial,
                        &r.email,
                        &r.sub,
                        &r.groups,
                        &r.key_sha256,
                        &r.not_before,
                        &r.not_after,
                        &r.issued_by,
                        &token,
                        &r.revoked_at,
                        &r.revocation_reason,
                    ],
                )
                .await
                .map_err(query(name, "import a certificate"))? as usize;
        }
        tx.commit()
            .await
            .map_err(query(name, "commit the import"))?;
        Ok(Imported::Done {
            added,
            skipped: rows.len() - added,
        })
    }
}
