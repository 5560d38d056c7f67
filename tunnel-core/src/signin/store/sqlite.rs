//! The SQLite engine: one connection behind a mutex ([`crate::util::sync::lock`]), used from
//! blocking threads only. WAL mode with `synchronous=FULL` (see the module documentation of
//! [`super`]); writes that read first take the write lock at `BEGIN IMMEDIATE`, so that two
//! processes on one file wait for each other (busy timeout) instead of failing. The schema
//! and its migrations are in `sqlite_migrations.rs`.

use super::{Imported, Issued, PublishedCrl, Recorded, Revoked, Selector, StoreError};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const COLS: &str = "serial, email, sub, groups, key_sha256, not_before, not_after, issued_by, \
                    token, revoked_at, revocation_reason";
const FIX: &str = "check the file's permissions and the free space on its disk";
const BUSY: Duration = Duration::from_secs(10);

pub(super) struct Sqlite {
    conn: Mutex<Connection>,
    name: String,
}

/// The connection while its lock is held.
pub(super) struct Conn<'a> {
    c: &'a mut Connection,
    name: &'a str,
}

fn query<'a>(name: &'a str, what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
    move |e| StoreError::Query {
        store: name.to_string(),
        what,
        detail: e.to_string(),
        fix: FIX,
    }
}

impl Sqlite {
    /// Opens (creating it, mode 0600) the file at `path`, sets WAL and `synchronous=FULL`,
    /// and migrates the schema.
    pub(super) fn open(path: &Path, name: String) -> Result<Sqlite, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let open_err = |detail: String| StoreError::Open {
            store: name.clone(),
            detail,
            fix: "the directory must exist and be writable by the signer's user",
        };
        // Create it 0600 before SQLite does (0644): it lists who holds certificates. The WAL
        // and shared-memory files take the database file's mode.
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| open_err(e.to_string()))?;
        let mut c = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        c.busy_timeout(BUSY).map_err(|e| open_err(e.to_string()))?;
        // Switching a new file to WAL needs it to itself, and SQLite answers "locked" at
        // once (no busy timeout) while another process does the same: wait for it.
        let started = Instant::now();
        let mode: String = loop {
            match c.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
                Err(e)
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                        && started.elapsed() < BUSY =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other.map_err(|e| open_err(e.to_string()))?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(format!(
                "the file cannot be put in WAL mode (it stays in {mode} mode); put it on a local filesystem"
            )));
        }
        c.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(|e| open_err(e.to_string()))?;
        super::sqlite_migrations::migrate(&mut c, &name)?;
        Ok(Sqlite {
            conn: Mutex::new(c),
            name,
        })
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` with the connection (lock held).
    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Conn<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = crate::util::sync::lock(&self.conn);
        f(&mut Conn {
            c: &mut guard,
            name: &self.name,
        })
    }
}

/// The condition (on parameter `?N`) selecting `which`.
fn condition(which: &Selector, n: usize) -> (String, String) {
    match which {
        Selector::Email(e) => (format!("lower(email) = lower(?{n})"), e.clone()),
        Selector::Sub(s) => (format!("sub = ?{n}"), s.clone()),
        Selector::Serial(s) => (format!("serial = ?{n}"), s.clone()),
    }
}

fn issued(r: &rusqlite::Row<'_>) -> rusqlite::Result<Issued> {
    let groups: String = r.get(3)?;
    let groups = serde_json::from_str(&groups).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Issued {
        serial: r.get(0)?,
        email: r.get(1)?,
        sub: r.get(2)?,
        groups,
        key_sha256: r.get(4)?,
        not_before: r.get(5)?,
        not_after: r.get(6)?,
        issued_by: r.get(7)?,
        token: r.get(8)?,
        revoked_at: r.get(9)?,
        revocation_reason: r.get(10)?,
    })
}

/// Inserts `r`; `Ok(false)` when a unique constraint (serial or token) refused it.
fn insert(tx: &rusqlite::Transaction<'_>, r: &Issued) -> rusqlite::Result<bool> {
    let groups = serde_json::to_string(&r.groups).unwrap_or_else(|_| "[]".into());
    let done = tx.execute(
        &format!(
            "INSERT INTO issuances ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        ),
        params![
            r.serial,
            r.email,
            r.sub,
            groups,
            r.key_sha256,
            r.not_before,
            r.not_after,
            r.issued_by,
            r.token,
            r.revoked_at,
            r.revocation_reason
        ],
    );
    match done {
        Ok(_) => Ok(true),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if matches!(
                e.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

impl Conn<'_> {
    /// The connection and the store's name, for the queries of other modules
    /// ([`super::requests`]).
    pub(super) fn raw(&mut self) -> (&mut Connection, &str) {
        (self.c, self.name)
    }

    fn immediate(&mut self) -> Result<rusqlite::Transaction<'_>, StoreError> {
        self.c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(query(self.name, "start a transaction"))
    }

    pub(super) fn schema_version(&mut self) -> Result<i64, StoreError> {
        self.c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(query(self.name, "read the schema version"))
    }

    pub(super) fn record(&mut self, r: &Issued) -> Result<Recorded, StoreError> {
        let name = self.name;
        let tx = self.immediate()?;
        if insert(&tx, r).map_err(query(name, "record the certificate"))? {
            tx.commit().map_err(query(name, "commit the certificate"))?;
            return Ok(Recorded::Stored);
        }
        let serial_taken = tx
            .query_row(
                "SELECT 1 FROM issuances WHERE serial = ?1",
                [&r.serial],
                |_| Ok(()),
            )
            .optional()
            .map_err(query(name, "look up a serial"))?
            .is_some();
        Ok(if serial_taken {
            Recorded::SerialTaken
        } else {
            Recorded::TokenUsed
        })
    }

    pub(super) fn list(
        &mut self,
        which: Option<&Selector>,
        since: i64,
    ) -> Result<Vec<Issued>, StoreError> {
        let (cond, value) = match which {
            Some(w) => condition(w, 2),
            None => ("?2 IS NULL".to_string(), String::new()),
        };
        let value = which.map(|_| value);
        let sql = format!(
            "SELECT {COLS} FROM issuances WHERE not_after >= ?1 AND {cond} ORDER BY not_after, serial"
        );
        let mut st = self
            .c
            .prepare(&sql)
            .map_err(query(self.name, "list certificates"))?;
        let rows = st
            .query_map(params![since, value], issued)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(query(self.name, "list certificates"));
        rows
    }

    pub(super) fn first_use(
        &mut self,
        key: &[u8; 32],
        forget_after: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = self
            .c
            .execute(
                "INSERT INTO replay (key, forget_after) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET forget_after = excluded.forget_after
                 WHERE replay.forget_after < ?3",
                params![key, forget_after, now],
            )
            .map_err(query(self.name, "record the token's use"))?;
        Ok(n == 1)
    }

    pub(super) fn purge_replay(&mut self, now: i64) -> Result<u64, StoreError> {
        let n = self
            .c
            .execute("DELETE FROM replay WHERE forget_after < ?1", [now])
            .map_err(query(self.name, "drop forgettable token keys"))?;
        Ok(n as u64)
    }

    pub(super) fn revoke(
        &mut self,
        which: &Selector,
        reason: &str,
        now: i64,
    ) -> Result<Vec<Issued>, StoreError> {
        let name = self.name;
        let (cond, value) = condition(which, 3);
        let tx = self.immediate()?;
        let revoked = {
            let mut st = tx
                .prepare(&format!(
                    "UPDATE issuances SET revoked_at = ?1, revocation_reason = ?2
                     WHERE revoked_at IS NULL AND not_after >= ?1 AND {cond}
                     RETURNING {COLS}"
                ))
                .map_err(query(name, "revoke"))?;
            let rows = st
                .query_map(params![now, reason, value], issued)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(query(name, "revoke"))?;
            rows
        };
        tx.commit().map_err(query(name, "commit the revocation"))?;
        let mut revoked = revoked;
        revoked.sort_by(|a, b| (a.not_after, &a.serial).cmp(&(b.not_after, &b.serial)));
        Ok(revoked)
    }

    pub(super) fn revoked(&mut self, now: i64) -> Result<Vec<Revoked>, StoreError> {
        let mut st = self
            .c
            .prepare(
                "SELECT serial, revoked_at, revocation_reason FROM issuances
                 WHERE revoked_at IS NOT NULL AND not_after >= ?1 ORDER BY revoked_at, serial",
            )
            .map_err(query(self.name, "list revocations"))?;
        let rows = st
            .query_map([now], |r| {
                Ok(Revoked {
                    serial: r.get(0)?,
                    revoked_at: r.get(1)?,
                    reason: r.get(2)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(query(self.name, "list revocations"));
        rows
    }

    pub(super) fn block(
        &mut self,
        kind: &str,
        value: &str,
        until: Option<i64>,
        reason: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.c
            .execute(
                "INSERT INTO blocks (kind, value, until, reason, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (kind, value) DO UPDATE SET until = excluded.until,
                     reason = excluded.reason, created_at = excluded.created_at",
                params![kind, value, until, reason, now],
            )
            .map_err(query(self.name, "record the block"))?;
        Ok(())
    }

    pub(super) fn unblock(&mut self, kind: &str, value: &str) -> Result<bool, StoreError> {
        let n = self
            .c
            .execute(
                "DELETE FROM blocks WHERE kind = ?1 AND value = ?2",
                params![kind, value],
            )
            .map_err(query(self.name, "remove the block"))?;
        Ok(n > 0)
    }

    pub(super) fn is_blocked(
        &mut self,
        email: &str,
        sub: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.c
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM blocks
                 WHERE ((kind = 'email' AND value = ?1) OR (kind = 'sub' AND value = ?2))
                   AND (until IS NULL OR until > ?3))",
                params![email, sub, now],
                |r| r.get(0),
            )
            .map_err(query(self.name, "look up blocks"))
    }

    pub(super) fn next_crl_number(&mut self) -> Result<u64, StoreError> {
        let n: i64 = self
            .c
            .query_row(
                "UPDATE counters SET value = value + 1 WHERE name = 'crl_number' RETURNING value",
                [],
                |r| r.get(0),
            )
            .map_err(query(self.name, "draw a CRL number"))?;
        Ok(n as u64)
    }

    pub(super) fn published_crl(&mut self) -> Result<Option<PublishedCrl>, StoreError> {
        self.c
            .query_row(
                "SELECT number, der, built_at FROM crl WHERE id = 1",
                [],
                |r| {
                    Ok(PublishedCrl {
                        number: r.get::<_, i64>(0)? as u64,
                        der: r.get(1)?,
                        built_at: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(query(self.name, "read the published CRL"))
    }

    pub(super) fn publish_crl(&mut self, crl: &PublishedCrl) -> Result<(), StoreError> {
        self.c
            .execute(
                "INSERT INTO crl (id, number, der, built_at) VALUES (1, ?1, ?2, ?3) \
                 ON CONFLICT (id) DO UPDATE SET number = excluded.number, der = excluded.der, \
                 built_at = excluded.built_at WHERE excluded.number > crl.number",
                params![crl.number as i64, crl.der, crl.built_at],
            )
            .map_err(query(self.name, "publish the CRL"))?;
        Ok(())
    }

    /// `VACUUM INTO` a temporary file beside `path` (a consistent snapshot, taken in one
    /// read transaction while others keep writing), synced, then renamed to `path` without
    /// replacing anything: a backup under its final name is always whole.
    pub(super) fn backup_to(&mut self, path: &Path) -> Result<(), StoreError> {
        let fail = |detail: String| StoreError::Backup {
            store: self.name.to_string(),
            path: path.to_path_buf(),
            detail,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if path.exists() {
            return Err(fail("it already exists; give a new file name".into()));
        }
        let tmp = tempfile::Builder::new()
            .prefix(".backup-")
            .tempfile_in(dir)
            .map_err(|e| fail(format!("cannot create a file in {}: {e}", dir.display())))?;
        let tmp_path = tmp
            .path()
            .to_str()
            .ok_or_else(|| fail("the path is not UTF-8".into()))?;
        self.c
            .execute("VACUUM INTO ?1", [tmp_path])
            .map_err(|e| fail(e.to_string()))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| fail(format!("cannot sync: {e}")))?;
        tmp.persist_noclobber(path)
            .map_err(|e| fail(e.error.to_string()))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    pub(super) fn import(&mut self, marker: &str, rows: &[Issued]) -> Result<Imported, StoreError> {
        let name = self.name;
        let tx = self.immediate()?;
        let now = crate::util::time::unix_now();
        let first = tx
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                params![marker, format!("{} entries at {now}", rows.len())],
            )
            .map_err(query(name, "record the import"))?;
        if first == 0 {
            return Ok(Imported::AlreadyDone);
        }
        let mut added = 0;
        for r in rows {
            if insert(&tx, r).map_err(query(name, "import a certificate"))? {
                added += 1;
            }
        }
        tx.commit().map_err(query(name, "commit the import"))?;
        Ok(Imported::Done {
            added,
            skipped: rows.len() - added,
        })
    }
}
