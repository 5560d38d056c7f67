//! The store on real engines: SQLite files in temporary directories, and a throwaway
//! PostgreSQL cluster ([`super::pg_cluster`]). Each scenario runs on both; "two signers" are
//! two `Store`s opened on one database.

use super::pg_cluster::Cluster;
use super::*;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

const NOW: i64 = 1_800_000_000;
const HOUR: i64 = 3600;

/// One database that stores can be opened on.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres { url: String, password_file: PathBuf },
}

impl Db {
    fn sqlite() -> Db {
        Db::Sqlite(tempfile::tempdir().unwrap())
    }

    fn postgres(cluster: &Cluster, name: &str) -> Db {
        cluster.create_db(name);
        Db::Postgres {
            url: cluster.url(name),
            password_file: cluster.password_file(),
        }
    }

    fn location(&self) -> Location {
        match self {
            Db::Sqlite(dir) => Location::default_in(dir.path()),
            Db::Postgres { url, .. } => Location::parse(url).unwrap(),
        }
    }

    async fn try_open(&self) -> Result<Store, StoreError> {
        match self {
            Db::Sqlite(_) => Store::open(&self.location(), None).await,
            Db::Postgres { password_file, .. } => {
                Store::open(&self.location(), Some(password_file)).await
            }
        }
    }

    async fn open(&self) -> Store {
        match self.try_open().await {
            Ok(s) => s,
            Err(e) => panic!("open {}: {e}", self.location()),
        }
    }
}

fn token(n: u8) -> ReplayKey {
    [n; 32]
}

fn cert(serial: &str, email: &str, sub: &str, not_after: i64, tok: u8) -> NewIssuance {
    NewIssuance {
        serial: serial.into(),
        email: email.into(),
        sub: sub.into(),
        groups: vec!["dba".into(), "ops, west".into()],
        key_sha256: format!("{:064x}", u64::from(tok)),
        not_before: NOW - 300,
        not_after,
        issued_by: "signer-a".into(),
        token: token(tok),
    }
}

async fn record(store: &Store, c: &NewIssuance) {
    assert_eq!(
        store.record_issuance(c).await.unwrap(),
        Recorded::Stored,
        "{c:?}"
    );
}

// ---- scenarios, each on a fresh database ----

async fn migrates_from_empty(db: &Db) {
    // Two signers opening a new store at once: both succeed, one schema.
    let (a, b) = tokio::join!(db.try_open(), db.try_open());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.schema_version().await.unwrap(), i64::from(SCHEMA_VERSION));
    assert_eq!(b.schema_version().await.unwrap(), i64::from(SCHEMA_VERSION));
    assert!(a.list(None, true, NOW).await.unwrap().is_empty());
    drop((a, b));
    // Reopening an up-to-date store changes nothing.
    let c = db.open().await;
    assert_eq!(c.schema_version().await.unwrap(), i64::from(SCHEMA_VERSION));
}

async fn refuses_a_newer_schema(db: &Db, set_version: impl FnOnce(i64)) {
    let s = db.open().await;
    record(&s, &cert("0A", "alice@example.com", "a", NOW + HOUR, 1)).await;
    drop(s);
    set_version(i64::from(SCHEMA_VERSION) + 1);
    let e = match db.try_open().await {
        Err(e) => e,
        Ok(_) => panic!("a store with a newer schema was opened"),
    };
    assert!(matches!(e, StoreError::SchemaTooNew { .. }), "{e:?}");
    let text = e.to_string();
    let expect = format!(
        "has schema version {}, this signer knows up to {SCHEMA_VERSION}; upgrade the signer",
        SCHEMA_VERSION + 1
    );
    assert!(text.contains(&expect), "{text}");
    assert!(text.contains(&db.location().to_string()), "{text}");
}

async fn serials_are_unique(db: &Db) {
    let s = db.open().await;
    record(
        &s,
        &cert("0x00:0a:bc", "alice@example.com", "a", NOW + HOUR, 1),
    )
    .await;
    // The same serial (another spelling), another token: reported, not overwritten.
    let dup = cert("ABC", "mallory@example.com", "m", NOW + 2 * HOUR, 2);
    assert_eq!(
        s.record_issuance(&dup).await.unwrap(),
        Recorded::SerialTaken
    );
    // Another serial for a token that already has a certificate.
    let again = cert("ABD", "alice@example.com", "a", NOW + HOUR, 1);
    assert_eq!(
        s.record_issuance(&again).await.unwrap(),
        Recorded::TokenUsed
    );
    let all = s.list(None, true, NOW).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    let want = Issued {
        serial: "0ABC".into(),
        ..Issued::from(&cert("ABC", "alice@example.com", "a", NOW + HOUR, 1))
    };
    assert_eq!(all[0], want);
    let e = s
        .record_issuance(&cert("xyz", "a@b", "a", NOW, 3))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::BadSerial { .. }), "{e}");
    // Filters and expiry.
    record(&s, &cert("0B", "bob@example.com", "b", NOW - 1, 4)).await;
    let by = |sel: Selector, expired: bool| {
        let s = &s;
        async move {
            s.list(Some(&sel), expired, NOW)
                .await
                .unwrap()
                .into_iter()
                .map(|i| i.serial)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        by(Selector::Email("ALICE@example.COM".into()), false).await,
        ["0ABC"]
    );
    assert_eq!(
        by(Selector::Sub("b".into()), false).await,
        Vec::<String>::new()
    );
    assert_eq!(by(Selector::Sub("b".into()), true).await, ["0B"]);
    assert_eq!(by(Selector::Serial("abc".into()), false).await, ["0ABC"]);
    assert_eq!(s.list(None, false, NOW).await.unwrap().len(), 1);
    assert_eq!(s.list(None, true, NOW).await.unwrap().len(), 2);
}

async fn tokens_are_used_once(db: &Db) {
    let (a, b) = (db.open().await, db.open().await);
    let k = token(7);
    assert!(a.first_use(&k, NOW + HOUR, NOW).await.unwrap());
    assert!(!a.first_use(&k, NOW + HOUR, NOW).await.unwrap());
    // The other signer sees the use.
    assert!(!b.first_use(&k, NOW + HOUR, NOW + 10).await.unwrap());
    // Once forgettable, the key counts as new (the token is refused as too old by then).
    assert!(b
        .first_use(&k, NOW + 3 * HOUR, NOW + 2 * HOUR)
        .await
        .unwrap());
    assert!(!a
        .first_use(&k, NOW + 3 * HOUR, NOW + 2 * HOUR)
        .await
        .unwrap());
    // Many tasks on two signers, one token: exactly one first use.
    let (a, b) = (Arc::new(a), Arc::new(b));
    let k = token(8);
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { s.first_use(&k, NOW + HOUR, NOW).await.unwrap() })
        })
        .collect();
    let mut firsts = 0;
    for t in tasks {
        firsts += usize::from(t.await.unwrap());
    }
    assert_eq!(firsts, 1);
    // Purge drops only forgettable keys.
    assert!(a.first_use(&token(9), NOW - 1, NOW - 10).await.unwrap());
    assert_eq!(a.purge_replay(NOW).await.unwrap(), 1);
    assert!(!b.first_use(&k, NOW + HOUR, NOW).await.unwrap());
}

async fn revokes_by_identity(db: &Db) {
    let s = db.open().await;
    record(&s, &cert("A1", "alice@example.com", "a", NOW + HOUR, 1)).await;
    record(&s, &cert("A2", "Alice@Example.com", "a", NOW + 2 * HOUR, 2)).await;
    record(&s, &cert("A0", "alice@example.com", "a", NOW - HOUR, 3)).await;
    record(&s, &cert("B1", "bob@example.com", "b", NOW + HOUR, 4)).await;
    let done = s
        .revoke(
            &Selector::Email("alice@EXAMPLE.com".into()),
            "key compromise",
            NOW,
        )
        .await
        .unwrap();
    let serials: Vec<&str> = done.iter().map(|i| i.serial.as_str()).collect();
    assert_eq!(serials, ["A1", "A2"]);
    assert!(done
        .iter()
        .all(|i| i.revoked_at == Some(NOW)
            && i.revocation_reason.as_deref() == Some("key compromise")));
    let again = s
        .revoke(
            &Selector::Email("alice@example.com".into()),
            "again",
            NOW + 1,
        )
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    // A second signer sees the revocations; the CRL lists the unexpired ones.
    let t = db.open().await;
    let crl = t.revoked(NOW).await.unwrap();
    assert_eq!(
        crl,
        ["A1", "A2"].map(|s| Revoked {
            serial: s.into(),
            revoked_at: NOW,
            reason: Some("key compromise".into())
        })
    );
    assert_eq!(t.revoked(NOW + HOUR + 1).await.unwrap().len(), 1);
    let by_serial = t
        .revoke(&Selector::Serial("b1".into()), "left", NOW + 5)
        .await
        .unwrap();
    assert_eq!(by_serial.len(), 1);
    let by_sub = t
        .revoke(&Selector::Sub("b".into()), "x", NOW + 6)
        .await
        .unwrap();
    assert!(by_sub.is_empty());
    assert_eq!(t.revoked(NOW).await.unwrap().len(), 3);
}

async fn blocks_expire_and_lift(db: &Db) {
    let (a, b) = (db.open().await, db.open().await);
    let alice = Blocked::Email("Alice@Example.com".into());
    a.block(&alice, Some(NOW + 10), "left the company", NOW)
        .await
        .unwrap();
    assert!(b
        .is_blocked("alice@example.com", "other-sub", NOW)
        .await
        .unwrap());
    assert!(b
        .is_blocked("ALICE@example.com", "", NOW + 9)
        .await
        .unwrap());
    assert!(!b
        .is_blocked("alice@example.com", "", NOW + 10)
        .await
        .unwrap());
    assert!(!b.is_blocked("bob@example.com", "b", NOW).await.unwrap());
    // Blocking again replaces the earlier block: now without end.
    a.block(&alice, None, "for good", NOW).await.unwrap();
    assert!(b
        .is_blocked("alice@example.com", "", NOW + 1_000_000)
        .await
        .unwrap());
    let sub = Blocked::Sub("s-123".into());
    a.block(&sub, None, "abuse", NOW).await.unwrap();
    assert!(b.is_blocked("x@example.com", "s-123", NOW).await.unwrap());
    assert!(!b.is_blocked("x@example.com", "S-123", NOW).await.unwrap());
    assert!(b.unblock(&alice).await.unwrap());
    assert!(!b.unblock(&alice).await.unwrap());
    assert!(!a.is_blocked("alice@example.com", "", NOW).await.unwrap());
    assert!(a.is_blocked("", "s-123", NOW).await.unwrap());
}

async fn crl_numbers_increase(db: &Db) {
    let (a, b) = (Arc::new(db.open().await), Arc::new(db.open().await));
    assert_eq!(a.next_crl_number().await.unwrap(), 1);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..5 {
                    got.push(s.next_crl_number().await.unwrap());
                }
                got
            })
        })
        .collect();
    let mut all = HashSet::new();
    for t in tasks {
        let got = t.await.unwrap();
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
        for n in got {
            assert!(n > 1 && all.insert(n), "{n} twice or not after 1");
        }
    }
    assert_eq!(all.len(), 200);
    let last = b.next_crl_number().await.unwrap();
    assert!(all.iter().all(|n| *n < last));
}

/// The published CRL is one per store, seen by every store opened on it, and only replaced
/// by a higher number.
async fn published_crl_only_moves_forward(db: &Db) {
    let (a, b) = (db.open().await, db.open().await);
    assert_eq!(a.published_crl().await.unwrap(), None);
    let crl = |number: u64, der: &[u8]| PublishedCrl {
        number,
        der: der.to_vec(),
        built_at: NOW + number as i64,
    };
    a.publish_crl(&crl(5, b"five")).await.unwrap();
    assert_eq!(b.published_crl().await.unwrap(), Some(crl(5, b"five")));
    b.publish_crl(&crl(4, b"four")).await.unwrap();
    b.publish_crl(&crl(5, b"other five")).await.unwrap();
    assert_eq!(a.published_crl().await.unwrap(), Some(crl(5, b"five")));
    b.publish_crl(&crl(6, b"six")).await.unwrap();
    assert_eq!(a.published_crl().await.unwrap(), Some(crl(6, b"six")));
}

/// A pki index in its real format (the pki code's own `Entry`), with one entry whose
/// serial is already in the store.
fn index_fixture(dir: &Path) -> PathBuf {
    let entry =
        |serial: &str, subject: &str, not_after: i64, revoked_at: Option<i64>| crate::pki::Entry {
            serial: serial.into(),
            name: format!("n-{serial}"),
            subject: subject.into(),
            not_after,
            revoked_at,
        };
    let json = serde_json::json!({
        "version": 1,
        "certs": [
            entry("1F", "CN=carol@example.com,OU=dba,OU=x\\,y", NOW + HOUR, None),
            entry("2F", "CN=dave@example.com", NOW + HOUR, Some(NOW - 5)),
            entry("3F", "CN=old@example.com", NOW - HOUR, None),
            entry("A1", "CN=someone-else@example.com", NOW + HOUR, None),
        ],
    });
    let path = dir.join("index.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    path
}

async fn imports_the_json_index_once(db: &Db) {
    let dir = tempfile::tempdir().unwrap();
    let index = index_fixture(dir.path());
    let (a, b) = (db.open().await, db.open().await);
    record(&a, &cert("A1", "alice@example.com", "a", NOW + HOUR, 1)).await;
    assert_eq!(
        a.import_json_index(&index).await.unwrap(),
        Imported::Done {
            added: 3,
            skipped: 1
        }
    );
    assert_eq!(
        b.import_json_index(&index).await.unwrap(),
        Imported::AlreadyDone
    );
    let all = b.list(None, true, NOW).await.unwrap();
    assert_eq!(all.len(), 4, "{all:?}");
    let carol = &b
        .list(
            Some(&Selector::Email("carol@example.com".into())),
            false,
            NOW,
        )
        .await
        .unwrap()[0];
    assert_eq!(carol.serial, "1F");
    assert_eq!(carol.groups, ["dba", "x,y"]);
    assert_eq!((carol.sub.as_ref(), carol.token), (None, None));
    assert!(
        carol.issued_by.starts_with("import:"),
        "{}",
        carol.issued_by
    );
    // The one already recorded was left as it was.
    let a1 = &b
        .list(Some(&Selector::Serial("A1".into())), false, NOW)
        .await
        .unwrap()[0];
    assert_eq!(a1.email, "alice@example.com");
    // The index's revocation is the store's.
    let crl = b.revoked(NOW).await.unwrap();
    assert_eq!(
        crl,
        [Revoked {
            serial: "2F".into(),
            revoked_at: NOW - 5,
            reason: None
        }]
    );
    // A damaged index is refused with its path.
    std::fs::write(&index, "{\"version\":1}").unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"version\":1,\"certs\":[],\"x\":2}").unwrap();
    let e = a.import_json_index(&bad).await.unwrap_err();
    assert!(e.to_string().contains("bad.json"), "{e}");
}

// ---- SQLite ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_migrates_from_empty() {
    let db = Db::sqlite();
    migrates_from_empty(&db).await;
    if let Db::Sqlite(dir) = &db {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(DEFAULT_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let c = rusqlite::Connection::open(dir.path().join(DEFAULT_FILE)).unwrap();
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}

#[tokio::test]
async fn sqlite_refuses_a_newer_schema() {
    let db = Db::sqlite();
    let Db::Sqlite(dir) = &db else { unreachable!() };
    let file = dir.path().join(DEFAULT_FILE);
    refuses_a_newer_schema(&db, |v| {
        let c = rusqlite::Connection::open(&file).unwrap();
        c.pragma_update(None, "user_version", v).unwrap();
    })
    .await;
}

#[tokio::test]
async fn sqlite_refuses_a_foreign_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("other.db");
    rusqlite::Connection::open(&file)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let e = match Store::open(&Location::Sqlite(file), None).await {
        Err(e) => e,
        Ok(_) => panic!("opened a foreign database"),
    };
    assert!(matches!(e, StoreError::NotAStore { .. }), "{e}");
}

#[tokio::test]
async fn sqlite_serials_are_unique() {
    serials_are_unique(&Db::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_tokens_are_used_once() {
    tokens_are_used_once(&Db::sqlite()).await;
}

#[tokio::test]
async fn sqlite_revokes_by_identity() {
    revokes_by_identity(&Db::sqlite()).await;
}

#[tokio::test]
async fn sqlite_blocks_expire_and_lift() {
    blocks_expire_and_lift(&Db::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_crl_numbers_increase() {
    crl_numbers_increase(&Db::sqlite()).await;
}

/// A store of schema version 1 (before the published CRL) is migrated to the current one,
/// its records kept.
#[tokio::test]
async fn sqlite_migrates_a_version_1_store() {
    let db = Db::sqlite();
    let s = db.open().await;
    record(&s, &cert("0A", "a@example.com", "a", NOW + HOUR, 1)).await;
    drop(s);
    if let Db::Sqlite(dir) = &db {
        let c = rusqlite::Connection::open(dir.path().join(DEFAULT_FILE)).unwrap();
        // What a version 1 store is: without the tables of versions 2 (crl) and 3 (access).
        c.execute_batch(
            "DROP TABLE crl; DROP TABLE access_grants; DROP TABLE access_decisions;
             DROP TABLE access_requests; PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let s = db.open().await;
    assert_eq!(s.schema_version().await.unwrap(), i64::from(SCHEMA_VERSION));
    assert_eq!(s.published_crl().await.unwrap(), None);
    assert_eq!(s.list(None, true, NOW).await.unwrap().len(), 1);
}

#[tokio::test]
async fn sqlite_published_crl_only_moves_forward() {
    published_crl_only_moves_forward(&Db::sqlite()).await;
}

#[tokio::test]
async fn sqlite_imports_the_json_index_once() {
    imports_the_json_index_once(&Db::sqlite()).await;
}

#[tokio::test]
async fn sqlite_backup_while_open() {
    let db = Db::sqlite();
    let s = db.open().await;
    record(&s, &cert("0C", "carol@example.com", "c", NOW + HOUR, 1)).await;
    assert!(s.first_use(&token(1), NOW + HOUR, NOW).await.unwrap());
    let out = tempfile::tempdir().unwrap();
    let copy = out.path().join("copy.db");
    s.backup_to(&copy).await.unwrap();
    // The original keeps working; the copy is a store of its own with the records.
    record(&s, &cert("0D", "dave@example.com", "d", NOW + HOUR, 2)).await;
    let c = Store::open(&Location::Sqlite(copy.clone()), None)
        .await
        .unwrap();
    let serials: Vec<String> = c
        .list(None, true, NOW)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.serial)
        .collect();
    assert_eq!(serials, ["0C"]);
    assert!(!c.first_use(&token(1), NOW + HOUR, NOW).await.unwrap());
    // Never over an existing file, and nothing left behind.
    let e = s.backup_to(&copy).await.unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    let names: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".backup-"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

// ---- settings ----

#[test]
fn locations() {
    assert_eq!(
        Location::parse("sqlite:/var/lib/s/signer.db").unwrap(),
        Location::Sqlite("/var/lib/s/signer.db".into())
    );
    assert_eq!(
        Location::parse("sqlite://rel/s.db").unwrap(),
        Location::Sqlite("rel/s.db".into())
    );
    assert!(Location::parse("sqlite:").is_err());
    assert!(matches!(
        Location::parse("postgresql://u@h/db?sslmode=verify-full").unwrap(),
        Location::Postgres(_)
    ));
    let e = Location::parse("mysql://u:hunter2@h/db")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("hunter2") && e.contains("sqlite:PATH"), "{e}");
    assert_eq!(
        Location::default_in(Path::new("/st")).to_string(),
        "sqlite:/st/signer.db"
    );
}

#[tokio::test]
async fn postgres_url_with_a_password_is_refused() {
    for url in [
        "postgresql://signer:hunter2@127.0.0.1:1/db?sslmode=verify-full",
        "postgresql://signer@127.0.0.1:1/db?sslmode=verify-full&password=hunter2",
    ] {
        let loc = Location::parse(url).unwrap();
        assert!(!loc.to_string().contains("hunter2"), "{loc}");
        let e = match Store::open(&loc, None).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("opened {url}"),
        };
        assert!(
            e.contains("holds a password") && e.contains("password_file"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }
    for (url, says) in [
        ("postgresql://s@127.0.0.1:1/db", "no sslmode"),
        (
            "postgresql://s@127.0.0.1:1/db?sslmode=prefer",
            "falls back to plain text",
        ),
        ("postgresql://s@127.0.0.1:1/db?sslmode=bogus", "unknown"),
    ] {
        let e = match Store::open(&Location::parse(url).unwrap(), None).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("opened {url}"),
        };
        assert!(e.contains(says), "{url}: {e}");
    }
    let sqlite = Location::Sqlite("/nonexistent/x.db".into());
    let e = match Store::open(&sqlite, Some(Path::new("/pw"))).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("opened"),
    };
    assert!(e.contains("password_file is for a postgresql store"), "{e}");
}

// ---- PostgreSQL: one cluster, each scenario in a database of its own ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_on_a_real_server() {
    let started = Instant::now();
    let cluster = Cluster::start();
    let up = started.elapsed();
    let t = Instant::now();
    migrates_from_empty(&Db::postgres(&cluster, "migrate")).await;
    let db = Db::postgres(&cluster, "newer");
    refuses_a_newer_schema(&db, |v| {
        cluster.psql("newer", &format!("UPDATE schema_version SET version = {v}"));
    })
    .await;
    serials_are_unique(&Db::postgres(&cluster, "serials")).await;
    tokens_are_used_once(&Db::postgres(&cluster, "tokens")).await;
    revokes_by_identity(&Db::postgres(&cluster, "revoke")).await;
    blocks_expire_and_lift(&Db::postgres(&cluster, "blocks")).await;
    crl_numbers_increase(&Db::postgres(&cluster, "crl")).await;
    published_crl_only_moves_forward(&Db::postgres(&cluster, "published")).await;
    imports_the_json_index_once(&Db::postgres(&cluster, "import")).await;
    // Backups are pg_dump's job.
    let s = Db::postgres(&cluster, "backup").open().await;
    let e = s
        .backup_to(&cluster.dir.path().join("b"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("pg_dump"), "{e}");
    // The store's connection is TLS (and was authenticated by password).
    assert_eq!(s.schema_version().await.unwrap(), i64::from(SCHEMA_VERSION));
    let tls = cluster.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE s.ssl AND a.application_name = 'tunnel-signer'",
    );
    assert_ne!(tls, "0", "no TLS connection from the store");
    eprintln!(
        "postgres: cluster up in {:.2?}, scenarios in {:.2?}",
        up,
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_wrong_password_or_unknown_ca_is_refused() {
    let cluster = Cluster::start();
    cluster.create_db("auth");
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("pw");
    std::fs::write(&wrong, "not it\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let loc = Location::parse(&cluster.url("auth")).unwrap();
    let e = match Store::open(&loc, Some(&wrong)).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("wrong password accepted"),
    };
    assert!(e.contains("password authentication failed"), "{e}");
    // A CA that did not issue the server's certificate: the TLS handshake fails.
    let other = crate::pki::new_ca("other CA", 1).unwrap();
    let other_ca = dir.path().join("other.crt");
    std::fs::write(&other_ca, other.cert.to_pem().unwrap()).unwrap();
    let url = format!(
        "postgresql://{}@127.0.0.1:{}/auth?sslmode=verify-full&sslrootcert={}",
        super::pg_cluster::USER,
        cluster.port,
        other_ca.display()
    );
    let e = match Store::open(
        &Location::parse(&url).unwrap(),
        Some(&cluster.password_file()),
    )
    .await
    {
        Err(e) => e.to_string(),
        Ok(_) => panic!("server with an unknown CA accepted"),
    };
    assert!(
        e.contains("certificate verify failed") || e.contains("TLS"),
        "{e}"
    );
    // Password file readable by everyone: refused before connecting.
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = match Store::open(&loc, Some(&wrong)).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("world-readable password file accepted"),
    };
    assert!(e.contains("o-rwx"), "{e}");
}

#[test]
fn key_fingerprint_is_the_sha256_of_the_spki() {
    let ca = crate::pki::new_ca("fingerprint", 1).unwrap();
    let from_cert = key_sha256(&ca.cert.public_key().unwrap()).unwrap();
    assert_eq!(from_cert, key_sha256(&ca.key).unwrap());
    assert_eq!(from_cert.len(), 64);
    assert!(from_cert
        .bytes()
        .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
}
