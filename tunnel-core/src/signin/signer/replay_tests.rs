use super::*;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

fn key(n: u8) -> ReplayKey {
    [n; 32]
}

/// Whether `first_use` saw the token's first use.
fn outcome(c: &ReplayCache, k: &ReplayKey, forget_after: i64, now: i64) -> &'static str {
    match c.first_use(k, forget_after, now) {
        Ok(true) => "first",
        Ok(false) => "used",
        Err(e) => panic!("{e}"),
    }
}

fn record(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(REPLAY_FILE)).unwrap()
}

#[test]
fn a_token_is_usable_once_until_forgotten() {
    let c = ReplayCache::in_memory();
    assert_eq!(outcome(&c, &key(1), 100, 0), "first");
    assert_eq!(outcome(&c, &key(1), 100, 50), "used");
    assert_eq!(outcome(&c, &key(2), 100, 50), "first");
    // Past its expiry the entry is dropped (the expiry check refuses the token then).
    assert_eq!(outcome(&c, &key(1), 300, 101), "first");
}

#[test]
fn a_used_token_stays_used_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let c = ReplayCache::open(dir.path(), 0).unwrap();
    assert_eq!(outcome(&c, &key(1), 100, 0), "first");
    assert_eq!(outcome(&c, &key(2), 10, 0), "first");
    drop(c);
    let c = ReplayCache::open(dir.path(), 50).unwrap();
    assert_eq!(outcome(&c, &key(1), 100, 50), "used", "remembered");
    // key(2) could be forgotten at 10: dropped from the file when it was loaded at 50.
    assert_eq!(c.len(), 1);
    assert_eq!(
        record(dir.path()).lines().count(),
        1,
        "{}",
        record(dir.path())
    );
    assert_eq!(outcome(&c, &key(2), 100, 50), "first");
    drop(c);
    let c = ReplayCache::open(dir.path(), 60).unwrap();
    assert_eq!(outcome(&c, &key(2), 100, 60), "used");
    assert_eq!(outcome(&c, &key(3), 100, 60), "first");
}

#[test]
fn the_record_is_private_and_one_line_per_use() {
    let dir = tempfile::tempdir().unwrap();
    let c = ReplayCache::open(dir.path(), 0).unwrap();
    let path = dir.path().join(REPLAY_FILE);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    c.first_use(&[0xab; 32], -5, -10).unwrap();
    c.first_use(&key(7), i64::MAX, 0).unwrap();
    assert_eq!(
        record(dir.path()),
        format!("{} -5\n{} {}\n", "ab".repeat(32), "07".repeat(32), i64::MAX)
    );
    // A looser mode is tightened by the rewrite at start.
    drop(c);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _c = ReplayCache::open(dir.path(), 0).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn a_damaged_record_refuses_the_start() {
    let good = format!("{} 100\n", "01".repeat(32));
    for bad in [
        "garbage\n".to_string(),
        format!("{good}{} 100\n", "0".repeat(63)),
        format!("{} x\n", "01".repeat(32)),
        format!("{} 100\n", "AB".repeat(32)),
        format!("{}  100\n", "01".repeat(32)),
        format!("{good}\n{good}"),
        format!("{} 1e3\n", "01".repeat(32)),
        "\u{0}\u{0}\u{0}\n".to_string(),
        // Not what an interrupted append leaves behind.
        "garbage".to_string(),
        format!("{good}{{\"version\": 1}}"),
        format!("{good}{} 100 and more", "02".repeat(32)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(REPLAY_FILE), &bad).unwrap();
        let e = ReplayCache::open(dir.path(), 0)
            .err()
            .unwrap_or_else(|| panic!("{bad:?}"));
        assert!(matches!(e, ReplayError::Damaged { .. }), "{bad:?}: {e}");
        let e = e.to_string();
        assert!(
            e.contains("replay.log: ") && e.contains("damaged") && e.contains("max_token_age"),
            "{bad:?}: {e}"
        );
        // Nothing was rewritten: the evidence stays as it was.
        assert_eq!(
            std::fs::read_to_string(dir.path().join(REPLAY_FILE)).unwrap(),
            bad
        );
    }
    // Not readable as a file at all.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(REPLAY_FILE)).unwrap();
    let e = ReplayCache::open(dir.path(), 0).err().unwrap().to_string();
    assert!(
        e.contains("cannot open") || e.contains("cannot read"),
        "{e}"
    );
}

#[test]
fn an_unfinished_last_line_is_dropped() {
    // A crash during an append: the request whose line it was got no certificate.
    let line2 = format!("{} 100", "02".repeat(32));
    for tail in [
        line2[..20].to_string(),
        line2[..64].to_string(),
        line2[..65].to_string(),
        line2.clone(),
        "\u{0}".repeat(40),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{} 100\n{tail}", "01".repeat(32));
        std::fs::write(dir.path().join(REPLAY_FILE), text).unwrap();
        let c = ReplayCache::open(dir.path(), 0).unwrap();
        assert_eq!(outcome(&c, &key(1), 100, 0), "used", "{tail:?}");
        assert_eq!(outcome(&c, &key(2), 100, 0), "first", "{tail:?}");
        assert_eq!(
            record(dir.path()),
            format!("{} 100\n{line2}\n", "01".repeat(32))
        );
    }
}

#[test]
fn a_second_signer_cannot_share_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let c = ReplayCache::open(dir.path(), 0).unwrap();
    let e = ReplayCache::open(dir.path(), 0).err().unwrap();
    assert!(matches!(e, ReplayError::InUse { .. }), "{e}");
    assert!(
        e.to_string().contains("in use by another running signer"),
        "{e}"
    );
    // Still locked after a rewrite moved the record to a new file.
    for n in 0..(COMPACT_SLACK + 10) {
        c.first_use(&numbered(n), 100, 0).unwrap();
    }
    let e = ReplayCache::open(dir.path(), 0).err().unwrap();
    assert!(matches!(e, ReplayError::InUse { .. }), "{e}");
    assert!(
        e.to_string().contains("in use by another running signer"),
        "{e}"
    );
    drop(c);
    ReplayCache::open(dir.path(), 0).unwrap();
}

fn numbered(n: usize) -> ReplayKey {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&(n as u64).to_be_bytes());
    k
}

#[test]
fn forgettable_entries_leave_the_file_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let c = ReplayCache::open(dir.path(), 0).unwrap();
    // Short-lived uses, then one long-lived, then enough uses later on to trigger a rewrite.
    for n in 0..100 {
        c.first_use(&numbered(n), 10, 0).unwrap();
    }
    c.first_use(&numbered(100), 1000, 0).unwrap();
    for n in 101..(COMPACT_SLACK + 200) {
        c.first_use(&numbered(n), 1000, 20).unwrap();
    }
    // 1224 uses, of which the first 100 could be forgotten when the rewrite came.
    let lines = record(dir.path()).lines().count();
    assert_eq!(
        lines,
        COMPACT_SLACK + 100,
        "rewritten without the forgettable"
    );
    assert_eq!(outcome(&c, &numbered(100), 1000, 20), "used");
    drop(c);
    let c = ReplayCache::open(dir.path(), 20).unwrap();
    for n in 100..(COMPACT_SLACK + 200) {
        assert_eq!(outcome(&c, &numbered(n), 1000, 20), "used", "{n}");
    }
    assert_eq!(outcome(&c, &numbered(5), 1000, 20), "first", "forgotten");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from(REPLAY_FILE)]);
}

#[test]
fn concurrent_uses_lose_nothing_and_one_token_wins_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = Arc::new(ReplayCache::open(dir.path(), 0).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                let mut won = 0;
                for i in 0..200 {
                    // One contested token, and this thread's own.
                    if c.first_use(&numbered(usize::MAX), 100, 0).unwrap() {
                        won += 1;
                    }
                    assert_eq!(outcome(&c, &numbered(1 + t * 1000 + i), 100, 0), "first");
                }
                won
            })
        })
        .collect();
    let won: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(won, 1);
    drop(c);
    let c = ReplayCache::open(dir.path(), 0).unwrap();
    assert_eq!(c.len(), 1 + 8 * 200);
}

#[test]
fn leftovers_of_an_interrupted_rewrite_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".replay.log.abc123"), "x").unwrap();
    std::fs::write(dir.path().join("index.json"), "{}").unwrap();
    let _c = ReplayCache::open(dir.path(), 0).unwrap();
    assert!(!dir.path().join(".replay.log.abc123").exists());
    assert!(dir.path().join("index.json").exists(), "other files stay");
}
