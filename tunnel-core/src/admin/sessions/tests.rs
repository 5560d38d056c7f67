use super::*;

fn info(cn: &str, backend: &str, serial: &str) -> SessionInfo {
    SessionInfo {
        peer: "127.0.0.1:1".parse().unwrap(),
        identity: Identity {
            subject: format!("CN={cn}"),
            cn: vec![cn.into()],
            serial: serial.into(),
            sha256: format!("{cn}-fp"),
            ..Identity::default()
        },
        backend: backend.into(),
        resumed: false,
        not_after: None,
    }
}

#[test]
fn caps_per_backend_and_per_identity() {
    let s = Sessions::default();
    let lim = Limits {
        backend: Some(3),
        per_identity: Some(2),
    };
    let a1 = s.admit(info("alice", "db", "1"), lim).unwrap();
    let _a2 = s.admit(info("alice", "db", "1"), lim).unwrap();
    assert_eq!(
        s.admit(info("alice", "db", "1"), lim).err(),
        Some(NotAdmitted::IdentityFull("db".into(), 2))
    );
    // Another backend has its own count.
    let _other = s.admit(info("alice", "web", "1"), lim).unwrap();
    let _b = s.admit(info("bob", "db", "2"), lim).unwrap();
    assert_eq!(
        s.admit(info("carol", "db", "3"), lim).err(),
        Some(NotAdmitted::BackendFull("db".into(), 3))
    );
    drop(a1);
    assert!(s.admit(info("carol", "db", "3"), lim).is_ok());
}

#[test]
fn disconnect_cuts_only_matches_and_blocks() {
    let s = Sessions::default();
    let a = s
        .admit(info("alice", "db", "0A"), Limits::default())
        .unwrap();
    let b = s.admit(info("bob", "db", "0B"), Limits::default()).unwrap();
    let c = s
        .admit(info("carol", "web", "0C"), Limits::default())
        .unwrap();
    let (n, until) = s
        .disconnect(
            &Selector::Serial("a".into()),
            "root (uid 0)",
            "left",
            Some(block(600)),
        )
        .unwrap();
    assert_eq!(n, 1);
    assert!(until.unwrap() >= unix_now() + 599);
    assert_eq!(
        a.why(),
        Some(Cut::Disconnected {
            by: "root (uid 0)".into(),
            reason: "left".into()
        })
    );
    assert_eq!((b.why(), c.why()), (None, None));
    assert!(matches!(
        s.admit(info("alice", "web", "a"), Limits::default()),
        Err(NotAdmitted::Blocked { .. })
    ));
    assert_eq!(
        s.disconnect(&Selector::Backend("DB".into()), "x", "y", None)
            .unwrap()
            .0,
        1
    );
    assert!(b.why().is_some() && c.why().is_none());
    assert_eq!(
        s.disconnect(&Selector::Identity(sel("car*")), "x", "y", None)
            .unwrap()
            .0,
        1
    );
    let ids: Vec<u64> = s.list(None, None).iter().map(|v| v.id).collect();
    assert_eq!(ids, vec![a.id(), b.id(), c.id()]);
    assert_eq!(s.list(Some("web"), None).len(), 1);
    assert_eq!(s.list(None, Some(&sel("CN=bob"))).len(), 1);
}

#[test]
fn serials_compare_without_leading_zeros_or_colons() {
    assert_eq!(normalize_serial("00:0a:1B"), "A1B");
    assert_eq!(normalize_serial("000"), "0");
}

#[tokio::test(start_paused = true)]
async fn expiry_cut_fires_at_not_after() {
    let s = Sessions::default();
    let mut i = info("alice", "db", "1");
    i.not_after = Some(unix_now() + 30);
    let g = s.admit(i, Limits::default()).unwrap();
    tokio::time::timeout(Duration::from_secs(40), g.cut(true))
        .await
        .expect("cut by expiry");
    assert_eq!(g.why(), Some(Cut::Expired));
    // Without disconnect_expired nothing fires.
    assert!(tokio::time::timeout(Duration::from_secs(60), g.cut(false))
        .await
        .is_err());
}

#[test]
fn block_after_cut_by_id_or_backend_is_by_fingerprint() {
    let s = Sessions::default();
    let a = s
        .admit(info("alice", "db", "1"), Limits::default())
        .unwrap();
    let _b = s.admit(info("bob", "web", "2"), Limits::default()).unwrap();
    let (n, until) = s
        .disconnect(&Selector::Id(a.id()), "x", "y", Some(block(60)))
        .unwrap();
    assert_eq!((n, until.is_some()), (1, true));
    // alice's certificate is blocked on every backend; bob is not.
    assert!(s
        .admit(info("alice", "web", "1"), Limits::default())
        .is_err());
    assert!(s.admit(info("bob", "db", "2"), Limits::default()).is_ok());
    // No block without --block-for.
    let (_, until) = s
        .disconnect(&Selector::Backend("web".into()), "x", "y", None)
        .unwrap();
    assert_eq!(until, None);
    assert!(s.admit(info("bob", "web", "2"), Limits::default()).is_ok());
}

fn block(secs: u64) -> BlockFor {
    BlockFor::try_from(secs).unwrap()
}

#[test]
fn a_block_of_the_maximum_ends_366_days_from_now() {
    let s = Sessions::default();
    let _a = s
        .admit(info("alice", "db", "1"), Limits::default())
        .unwrap();
    let year_and_day = 366 * 86_400;
    let (n, until) = s
        .disconnect(
            &Selector::Identity(sel("alice")),
            "x",
            "y",
            Some(block(year_and_day)),
        )
        .unwrap();
    assert_eq!(n, 1);
    let until = until.unwrap();
    let want = unix_now() + year_and_day as i64;
    assert!((want - 5..=want).contains(&until), "{until} vs {want}");
    assert_eq!(
        BlockFor::try_from(year_and_day + 1),
        Err(BlockTooLong {
            secs: year_and_day + 1
        })
    );
}

fn sel(s: &str) -> crate::authz::policy::IdentitySelector {
    crate::authz::policy::IdentitySelector::parse(s).unwrap()
}
