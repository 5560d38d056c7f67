//! The PostgreSQL side of [`super`]: the same statements with `$N` parameters. A decision
//! and an expiry run in a transaction on a connection of their own (the shared one carries
//! other calls meanwhile); a decision locks its request's row first.

use super::{
    AccessRequest, Decided, Decision, Expired, Grant, NewRequest, RequestState, Verdict, Which,
    COLS,
};
use crate::signin::store::postgres::Postgres;
use crate::signin::store::StoreError;
use tokio_postgres::GenericClient;

const FIX: &str = "check that the database server is up and reachable";

fn query<'a>(
    name: &'a str,
    what: &'static str,
) -> impl Fn(tokio_postgres::Error) -> StoreError + 'a {
    move |e| StoreError::Query {
        store: name.to_string(),
        what,
        detail: e
            .as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_string()),
        fix: FIX,
    }
}

pub(super) async fn create_request(
    pg: &Postgres,
    name: &str,
    new: &NewRequest,
) -> Result<AccessRequest, StoreError> {
    let c = pg.client().await?;
    let id = super::new_id();
    c.execute(
        &format!("INSERT INTO access_requests ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', NULL)"),
        &[&id, &new.requester, &new.role, &new.duration, &new.reason, &new.key_sha256, &new.created_at],
    )
    .await
    .map_err(query(name, "record the access request"))?;
    load(&*c, &id)
        .await
        .map_err(query(name, "read the access request"))?
        .ok_or_else(|| StoreError::Query {
            store: name.to_string(),
            what: "read the access request",
            detail: "it is gone".into(),
            fix: FIX,
        })
}

pub(super) async fn access_request(
    pg: &Postgres,
    name: &str,
    id: &str,
) -> Result<Option<AccessRequest>, StoreError> {
    let c = pg.client().await?;
    load(&*c, id)
        .await
        .map_err(query(name, "read the access request"))
}

pub(super) async fn access_requests(
    pg: &Postgres,
    name: &str,
    which: &Which,
) -> Result<Vec<AccessRequest>, StoreError> {
    let c = pg.client().await?;
    let q = query(name, "list access requests");
    let rows = match which {
        Which::Mine(email) => c
            .query(
                "SELECT id FROM access_requests WHERE lower(requester) = lower($1) ORDER BY created_at DESC, id",
                &[email],
            )
            .await,
        Which::Pending(roles) => c
            .query(
                "SELECT id FROM access_requests WHERE state = 'pending' AND role = ANY($1) ORDER BY created_at, id",
                &[roles],
            )
            .await,
    }
    .map_err(&q)?;
    let mut out = Vec::new();
    for r in rows {
        let id: String = r.get(0);
        out.extend(load(&*c, &id).await.map_err(&q)?);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn decide(
    pg: &Postgres,
    name: &str,
    id: &str,
    approver: &str,
    verdict: Verdict,
    reason: &str,
    needed: u32,
    now: i64,
) -> Result<Decided, StoreError> {
    let approver = approver.to_ascii_lowercase();
    let q = query(name, "record the decision");
    let mut own = pg.connect().await?;
    let tx = own.transaction().await.map_err(&q)?;
    // Concurrent decisions on one request take turns here.
    let locked = tx
        .query_opt(
            "SELECT id FROM access_requests WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .map_err(&q)?;
    if locked.is_none() {
        return Ok(Decided::NotFound);
    }
    let Some(req) = load(&tx, id).await.map_err(&q)? else {
        return Ok(Decided::NotFound);
    };
    if req.state != RequestState::Pending {
        return Ok(Decided::Final(req.state));
    }
    if req
        .decisions
        .iter()
        .any(|d| d.approver.eq_ignore_ascii_case(&approver))
    {
        return Ok(Decided::AlreadyDecided);
    }
    tx.execute(
        "INSERT INTO access_decisions (request_id, approver, verdict, reason, at) VALUES ($1, $2, $3, $4, $5)",
        &[&id, &approver, &verdict.as_str(), &reason, &now],
    )
    .await
    .map_err(&q)?;
    let approvals = req.approvals() + usize::from(verdict == Verdict::Approve);
    let state = super::decide::next_state(verdict, approvals, needed);
    settle(&tx, id, state, now, req.duration)
        .await
        .map_err(&q)?;
    let after = load(&tx, id).await.map_err(&q)?.unwrap_or(req);
    tx.commit().await.map_err(&q)?;
    Ok(super::decide::decided(state, after))
}

/// Writes the state a decision took request `id` to (none: still pending), and the grant of
/// an approval, from `now` for `duration`.
async fn settle(
    tx: &impl GenericClient,
    id: &str,
    state: Option<RequestState>,
    now: i64,
    duration: i64,
) -> Result<(), tokio_postgres::Error> {
    if let Some(state) = state {
        tx.execute(
            "UPDATE access_requests SET state = $2, decided_at = $3 WHERE id = $1",
            &[&id, &state.as_str(), &now],
        )
        .await?;
    }
    if state == Some(RequestState::Approved) {
        tx.execute(
            "INSERT INTO access_grants (request_id, starts_at, ends_at) VALUES ($1, $2, $3)",
            &[&id, &now, &now.saturating_add(duration)],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn record_grant_issuance(
    pg: &Postgres,
    name: &str,
    id: &str,
    serial: &str,
) -> Result<(), StoreError> {
    let c = pg.client().await?;
    c.execute(
        "UPDATE access_grants SET serial = $2 WHERE request_id = $1",
        &[&id, &serial],
    )
    .await
    .map_err(query(name, "record the grant's certificate"))?;
    Ok(())
}

pub(super) async fn expire_access(
    pg: &Postgres,
    name: &str,
    now: i64,
    pending_ttl: i64,
) -> Result<Expired, StoreError> {
    let q = query(name, "expire access requests");
    let mut own = pg.connect().await?;
    let tx = own.transaction().await.map_err(&q)?;
    let stale = tx
        .query(
            "UPDATE access_requests SET state = 'expired', decided_at = $1
             WHERE state = 'pending' AND created_at <= $2 RETURNING id",
            &[&now, &now.saturating_sub(pending_ttl)],
        )
        .await
        .map_err(&q)?;
    let ended = tx
        .query(
            "UPDATE access_grants SET ended = 1 WHERE ended = 0 AND ends_at <= $1 RETURNING request_id",
            &[&now],
        )
        .await
        .map_err(&q)?;
    let mut out = Expired::default();
    for r in stale {
        let id: String = r.get(0);
        out.requests.extend(load(&tx, &id).await.map_err(&q)?);
    }
    for r in ended {
        let id: String = r.get(0);
        out.grants.extend(load(&tx, &id).await.map_err(&q)?);
    }
    tx.commit().await.map_err(&q)?;
    Ok(out)
}

/// Reads request `id` with its decisions and grant.
async fn load(
    c: &impl GenericClient,
    id: &str,
) -> Result<Option<AccessRequest>, tokio_postgres::Error> {
    let Some(r) = c
        .query_opt(
            &format!("SELECT {COLS} FROM access_requests WHERE id = $1"),
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let state: String = r.get(7);
    let decisions = c
        .query(
            "SELECT approver, verdict, reason, at FROM access_decisions WHERE request_id = $1 ORDER BY at, approver",
            &[&id],
        )
        .await?
        .iter()
        .map(|d| {
            let verdict: String = d.get(1);
            Decision {
                approver: d.get(0),
                verdict: if verdict == "deny" { Verdict::Deny } else { Verdict::Approve },
                reason: d.get(2),
                at: d.get(3),
            }
        })
        .collect();
    let grant = c
        .query_opt(
            "SELECT starts_at, ends_at, serial FROM access_grants WHERE request_id = $1",
            &[&id],
        )
        .await?
        .map(|g| Grant {
            starts_at: g.get(0),
            ends_at: g.get(1),
            serial: g.get(2),
        });
    Ok(Some(AccessRequest {
        id: r.get(0),
        requester: r.get(1),
        role: r.get(2),
        duration: r.get(3),
        reason: r.get(4),
        key_sha256: r.get(5),
        created_at: r.get(6),
        state: RequestState::parse(&state),
        decided_at: r.get(8),
        decisions,
        grant,
    }))
}
