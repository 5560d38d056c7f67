use super::*;
use tokio::time::advance;

#[tokio::test(start_paused = true)]
async fn only_stalled_handshakes_are_evicted_to_make_room() {
    let p = PendingHandshakes::default();
    let first = p.start(2);
    let second = p.start(2);
    // At the cap, but nobody is stalled yet: the newcomer is let in, nobody is closed.
    let third = p.start(2);
    assert_eq!(p.len(), 3);
    assert!(!first.token.is_cancelled() && !second.token.is_cancelled());
    assert!(!p.evict_stalled(), "nothing has been pending for STALLED");

    advance(STALLED).await;
    // Now the oldest ones are stalled: a new handshake evicts oldest first, down below the cap.
    let fourth = p.start(2);
    assert!(first.token.is_cancelled());
    assert!(second.token.is_cancelled());
    assert!(!third.token.is_cancelled(), "eviction stops below the cap");
    assert!(!fourth.token.is_cancelled());
    assert_eq!(p.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn evict_stalled_closes_the_oldest_only_once_it_is_stalled() {
    let p = PendingHandshakes::default();
    let old = p.start(100);
    advance(STALLED / 2).await;
    let young = p.start(100);
    assert!(!p.evict_stalled());
    advance(STALLED / 2).await;
    assert!(p.evict_stalled(), "the oldest has now waited STALLED");
    assert!(old.token.is_cancelled());
    assert!(
        !p.evict_stalled(),
        "the other one has waited only half as long"
    );
    assert!(!young.token.is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn a_finished_handshake_leaves_the_registry() {
    let p = PendingHandshakes::default();
    let g = p.start(1);
    assert_eq!(p.len(), 1);
    drop(g);
    assert!(p.is_empty());
    advance(STALLED * 2).await;
    assert!(!p.evict_stalled(), "nothing left to evict");
}

#[tokio::test(start_paused = true)]
async fn a_lower_limit_takes_effect_as_connections_end() {
    let limit = Limit::new(2);
    let a = limit.try_acquire().expect("slot 1");
    let b = limit.try_acquire().expect("slot 2");
    assert!(limit.try_acquire().is_none());
    limit.resize(1);
    tokio::task::yield_now().await;
    drop(a);
    tokio::task::yield_now().await;
    assert!(
        limit.try_acquire().is_none(),
        "the freed slot went to the lower limit"
    );
    drop(b);
    tokio::task::yield_now().await;
    let c = limit.try_acquire().expect("one slot under the new limit");
    assert!(limit.try_acquire().is_none());
    drop(c);
}

#[tokio::test(start_paused = true)]
async fn a_higher_limit_frees_slots_at_once() {
    let limit = Limit::new(1);
    let _a = limit.try_acquire().expect("slot 1");
    assert!(limit.acquire_within(Duration::from_secs(1)).await.is_none());
    limit.resize(3);
    assert!(limit.try_acquire().is_some());
    assert!(limit.acquire_within(Duration::from_secs(1)).await.is_some());
}

#[tokio::test(start_paused = true)]
async fn waiting_for_a_slot_ends_when_one_frees_up() {
    let limit = Arc::new(Limit::new(1));
    let held = limit.try_acquire().expect("slot");
    let l2 = limit.clone();
    let waiter = tokio::spawn(async move { l2.acquire_within(Duration::from_secs(1)).await });
    advance(Duration::from_millis(500)).await;
    drop(held);
    assert!(waiter.await.unwrap().is_some());
}

#[tokio::test(start_paused = true)]
async fn overload_refusals_are_audited_once_a_second() {
    let o = Overload::default();
    assert!(o.log_now());
    assert!(!o.log_now());
    advance(Duration::from_millis(999)).await;
    assert!(!o.log_now());
    advance(Duration::from_millis(1)).await;
    assert!(o.log_now());
}

#[test]
fn revoked_chains_are_cut_once() {
    let ca = crate::pki::new_ca("CA", 1).unwrap();
    let spec = crate::pki::CertSpec::client("alice");
    let alice = crate::pki::new_leaf(&ca, &spec).unwrap();
    let bob = crate::pki::new_leaf(&ca, &crate::pki::CertSpec::client("bob")).unwrap();
    let live = LiveConns::default();
    let a = live.register(vec![alice.cert.clone(), ca.cert.clone()]);
    let b = live.register(vec![bob.cert.clone(), ca.cert.clone()]);
    let alice_serial = alice.cert.serial_number().to_bn().unwrap();
    let has_alice = |chain: &[X509]| {
        chain
            .iter()
            .any(|c| c.serial_number().to_bn().unwrap() == alice_serial)
    };
    assert_eq!(live.cut_revoked(has_alice), 1);
    assert!(a.token.is_cancelled());
    assert!(!b.token.is_cancelled());
    assert_eq!(
        live.cut_revoked(has_alice),
        0,
        "an already cut tunnel is not counted again"
    );
    // The CA revoked: every remaining tunnel under it goes.
    let ca_serial = ca.cert.serial_number().to_bn().unwrap();
    assert_eq!(
        live.cut_revoked(|chain: &[X509]| chain
            .iter()
            .any(|c| c.serial_number().to_bn().unwrap() == ca_serial)),
        1
    );
    assert!(b.token.is_cancelled());
    // A chain replaced after registration is the one cut.
    let c = live.register(vec![ca.cert.clone()]);
    c.set(vec![alice.cert.clone()]);
    assert_eq!(live.cut_revoked(has_alice), 1);
    assert!(c.token.is_cancelled());
    drop((a, b, c));
    assert!(live.0.is_empty());
}
