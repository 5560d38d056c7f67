//! The PostgreSQL engine, for several signers sharing one store.
//!
//! One connection per signer, shared by its requests (tokio-postgres pipelines them); every
//! call is a single statement, atomic on its own, so the shared connection never holds a
//! transaction. The migration at open and an import use a connection of their own, in one
//! transaction (the migrations are in `pg_migrations.rs`). A closed connection (the server
//! restarted) is replaced at the next call.
//!
//! TLS goes through OpenSSL (the settings are read in `pg_settings.rs`). `sslmode` as libpq reads it: `disable`; `require` (encrypted;
//! the server's chain is checked only when `sslrootcert` names a CA file); `verify-ca`
//! (chain checked against `sslrootcert`, or the system's CAs); `verify-full` (and the host
//! name). `prefer`, `allow` or no `sslmode` are refused: they fall back to plain text
//! silently. The password is read from `password_file`; a URL holding one is refused.

use super::error::pg_detail as detail;
use super::{Imported, Issued, PublishedCrl, Recorded, Revoked, Selector, StoreError};
use postgres_openssl::MakeTlsConnector;
use std::path::Path;
use std::sync::Arc;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config};

const COLS: &str = "serial, email, sub, groups, key_sha256, not_before, not_after, issued_by, \
                    token, revoked_at, revocation_reason";
const FIX: &str = "check that the database server is up and reachable";

pub(super) struct Postgres {
    config: Config,
    tls: MakeTlsConnector,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
    name: String,
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

/// The parameters of [`INSERT`] for `r` (`token`: its replay key as bytes).
fn insert_params<'a>(
    r: &'a Issued,
    token: &'a Option<Vec<u8>>,
) -> [&'a (dyn tokio_postgres::types::ToSql + Sync); 11] {
    [
        &r.serial,
        &r.email,
        &r.sub,
        &r.groups,
        &r.key_sha256,
        &r.not_before,
        &r.not_after,
        &r.issued_by,
        token,
        &r.revoked_at,
        &r.revocation_reason,
    ]
}

impl Postgres {
    pub(super) async fn open(
        url: &str,
        password_file: Option<&Path>,
        name: String,
    ) -> Result<Postgres, StoreError> {
        let (config, tls) = super::pg_settings::settings(url, password_file, &name)?;
        let pg = Postgres {
            config,
            tls,
            client: tokio::sync::Mutex::new(None),
            name,
        };
        let mut own = pg.connect().await?;
        super::pg_migrations::migrate(&mut own, &pg.name).await?;
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
        let done = c.execute(INSERT, &insert_params(r, &token)).await;
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
                .execute(&insert, &insert_params(r, &token))
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
