//! The store side of just-in-time access, on SQLite and on a real PostgreSQL server.

use super::*;
use crate::signin::store::pg_cluster::Cluster;
use crate::signin::store::Location;

const NOW: i64 = 1_800_000_000;

async fn store(dir: &tempfile::TempDir) -> Store {
    Store::open(&Location::default_in(dir.path()), None)
        .await
        .unwrap()
}

/// A store in a new database of `cluster`.
async fn pg_store(cluster: &Cluster, db: &str) -> Store {
    cluster.create_db(db);
    let loc = Location::parse(&cluster.url(db)).unwrap();
    Store::open(&loc, Some(&cluster.password_file()))
        .await
        .unwrap()
}

fn new(requester: &str) -> NewRequest {
    NewRequest {
        requester: requester.into(),
        role: "db-admin".into(),
        duration: 600,
        reason: "INC-4711".into(),
        key_sha256: "ab".repeat(32),
        created_at: NOW,
    }
}

#[tokio::test]
async fn sqlite_one_approval_grants_from_the_decision_for_the_duration() {
    let dir = tempfile::tempdir().unwrap();
    one_approval_grants_from_the_decision_for_the_duration(store(&dir).await).await;
}

async fn one_approval_grants_from_the_decision_for_the_duration(s: Store) {
    let r = s.create_request(&new("bob@example.com")).await.unwrap();
    assert_eq!((r.state, r.id.len()), (RequestState::Pending, 12));
    let d = s
        .decide(
            &r.id,
            "Carol@example.com",
            Verdict::Approve,
            "ok",
            1,
            NOW + 5,
        )
        .await
        .unwrap();
    let Decided::Approved(a) = d else {
        panic!("{d:?}")
    };
    assert_eq!(a.state, RequestState::Approved);
    assert_eq!(
        a.grant,
        Some(Grant {
            starts_at: NOW + 5,
            ends_at: NOW + 605,
            serial: None
        })
    );
    assert_eq!(a.decisions[0].approver, "carol@example.com");
    // Final: another approver, or a denial, changes nothing.
    for v in [Verdict::Approve, Verdict::Deny] {
        let d = s
            .decide(&r.id, "dan@example.com", v, "late", 1, NOW + 6)
            .await
            .unwrap();
        assert_eq!(d, Decided::Final(RequestState::Approved));
    }
    s.record_grant_issuance(&r.id, "0A").await.unwrap();
    let got = s.access_request(&r.id).await.unwrap().unwrap();
    assert_eq!(got.grant.unwrap().serial.as_deref(), Some("0A"));
}

#[tokio::test]
async fn sqlite_distinct_approvers_are_counted_and_a_denial_is_final() {
    let dir = tempfile::tempdir().unwrap();
    distinct_approvers_are_counted_and_a_denial_is_final(store(&dir).await).await;
}

async fn distinct_approvers_are_counted_and_a_denial_is_final(s: Store) {
    let r = s.create_request(&new("bob@example.com")).await.unwrap();
    let d = s
        .decide(&r.id, "carol@example.com", Verdict::Approve, "", 2, NOW)
        .await
        .unwrap();
    assert!(
        matches!(d, Decided::Recorded(ref a) if a.approvals() == 1),
        "{d:?}"
    );
    let d = s
        .decide(&r.id, "CAROL@example.com", Verdict::Approve, "", 2, NOW)
        .await
        .unwrap();
    assert_eq!(d, Decided::AlreadyDecided);
    let d = s
        .decide(&r.id, "dan@example.com", Verdict::Deny, "no", 2, NOW)
        .await
        .unwrap();
    assert!(
        matches!(d, Decided::Denied(ref a) if a.state == RequestState::Denied && a.grant.is_none()),
        "{d:?}"
    );
    let d = s
        .decide(&r.id, "erin@example.com", Verdict::Approve, "", 2, NOW)
        .await
        .unwrap();
    assert_eq!(d, Decided::Final(RequestState::Denied));
    assert_eq!(
        s.decide("nope", "x@example.com", Verdict::Approve, "", 1, NOW)
            .await
            .unwrap(),
        Decided::NotFound
    );
}

#[tokio::test]
async fn sqlite_lists_mine_and_pending_by_role_and_expires_both() {
    let dir = tempfile::tempdir().unwrap();
    lists_mine_and_pending_by_role_and_expires_both(store(&dir).await).await;
    // Survives a reopen.
    let s = store(&dir).await;
    let all = s
        .access_requests(&Which::Mine("bob@example.com".into()))
        .await
        .unwrap();
    assert_eq!(all[0].state, RequestState::Expired);
}

/// The same scenarios on a real PostgreSQL server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_access_requests_on_a_real_server() {
    let cluster = Cluster::start();
    one_approval_grants_from_the_decision_for_the_duration(pg_store(&cluster, "a1").await).await;
    distinct_approvers_are_counted_and_a_denial_is_final(pg_store(&cluster, "a2").await).await;
    lists_mine_and_pending_by_role_and_expires_both(pg_store(&cluster, "a3").await).await;
}

async fn lists_mine_and_pending_by_role_and_expires_both(s: Store) {
    let old = s.create_request(&new("bob@example.com")).await.unwrap();
    let mut other = new("erin@example.com");
    other.role = "ssh-root".into();
    other.created_at = NOW + 100;
    let later = s.create_request(&other).await.unwrap();
    let mine = s
        .access_requests(&Which::Mine("BOB@example.com".into()))
        .await
        .unwrap();
    assert_eq!(
        mine.iter().map(|r| &r.id).collect::<Vec<_>>(),
        vec![&old.id]
    );
    let pending = s
        .access_requests(&Which::Pending(vec!["ssh-root".into()]))
        .await
        .unwrap();
    assert_eq!(
        pending.iter().map(|r| &r.id).collect::<Vec<_>>(),
        vec![&later.id]
    );
    // A fresh grant on `later`; `old` waits past the TTL.
    s.decide(
        &later.id,
        "carol@example.com",
        Verdict::Approve,
        "",
        1,
        NOW + 200,
    )
    .await
    .unwrap();
    let e = s
        .expire_access(NOW + PENDING_TTL_SECS, PENDING_TTL_SECS)
        .await
        .unwrap();
    assert_eq!(
        e.requests
            .iter()
            .map(|r| (&r.id, r.state))
            .collect::<Vec<_>>(),
        vec![(&old.id, RequestState::Expired)]
    );
    assert_eq!(e.grants.len(), 1, "the 600 s grant ended long ago");
    let again = s
        .expire_access(NOW + PENDING_TTL_SECS, PENDING_TTL_SECS)
        .await
        .unwrap();
    assert_eq!(again, Expired::default(), "each is reported once");
}
