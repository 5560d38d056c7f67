//! A decision on an access request ([`super::Store::decide`]): the rules both engines share
//! (the state a decision takes a pending request to, and what the call reports), and the
//! SQLite transaction that records it, in one `BEGIN IMMEDIATE` so that two approvers
//! answering at once take turns. The PostgreSQL transaction is in `requests_pg.rs`.

use super::{load, query, AccessRequest, Decided, RequestState, Verdict};
use crate::signin::store::StoreError;
use rusqlite::{params, TransactionBehavior};

/// The state a decision takes a pending request to: denied by a denial, approved by the
/// approval that reaches `needed` (`approvals` counts it), else still pending (`None`).
pub(super) fn next_state(verdict: Verdict, approvals: usize, needed: u32) -> Option<RequestState> {
    match verdict {
        Verdict::Deny => Some(RequestState::Denied),
        Verdict::Approve if approvals >= needed as usize => Some(RequestState::Approved),
        Verdict::Approve => None,
    }
}

/// What a recorded decision did, from the state it took the request to and the request after.
pub(super) fn decided(state: Option<RequestState>, after: AccessRequest) -> Decided {
    match state {
        Some(RequestState::Denied) => Decided::Denied(after),
        Some(_) => Decided::Approved(after),
        None => Decided::Recorded(after),
    }
}

/// [`Store::decide`](super::Store::decide) on SQLite, in one `BEGIN IMMEDIATE` transaction.
#[allow(clippy::too_many_arguments)]
pub(super) fn decide_sqlite(
    c: &mut rusqlite::Connection,
    name: &str,
    id: &str,
    approver: &str,
    verdict: Verdict,
    reason: &str,
    needed: u32,
    now: i64,
) -> Result<Decided, StoreError> {
    let q = query(name, "record the decision");
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&q)?;
    let Some(req) = load(&tx, id).map_err(&q)? else {
        return Ok(Decided::NotFound);
    };
    if req.state != RequestState::Pending {
        return Ok(Decided::Final(req.state));
    }
    if req
        .decisions
        .iter()
        .any(|d| d.approver.eq_ignore_ascii_case(approver))
    {
        return Ok(Decided::AlreadyDecided);
    }
    tx.execute(
        "INSERT INTO access_decisions (request_id, approver, verdict, reason, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, approver, verdict.as_str(), reason, now],
    )
    .map_err(&q)?;
    let approvals = req.approvals() + usize::from(verdict == Verdict::Approve);
    let state = next_state(verdict, approvals, needed);
    if let Some(state) = state {
        tx.execute(
            "UPDATE access_requests SET state = ?2, decided_at = ?3 WHERE id = ?1",
            params![id, state.as_str(), now],
        )
        .map_err(&q)?;
    }
    if state == Some(RequestState::Approved) {
        tx.execute(
            "INSERT INTO access_grants (request_id, starts_at, ends_at) VALUES (?1, ?2, ?3)",
            params![id, now, now.saturating_add(req.duration)],
        )
        .map_err(&q)?;
    }
    let after = load(&tx, id).map_err(&q)?.unwrap_or(req);
    tx.commit().map_err(&q)?;
    Ok(decided(state, after))
}
