//! Just-in-time access in the store: requests for a role, the approvers' decisions, and the
//! grants they make. Every rule that must hold when two approvers answer at once is kept in
//! one transaction: a decision on a request that is no longer pending is refused, one
//! approver counts once (the decision's primary key), and the approval that reaches the
//! count needed creates the grant in the same commit.
//!
//! Both engines run the same statements; in PostgreSQL a decision locks its request's row
//! (`SELECT … FOR UPDATE`) for the length of its transaction, as SQLite's `BEGIN IMMEDIATE`
//! locks the file. A decision's rules and its SQLite transaction are in `requests_decide.rs`;
//! the PostgreSQL statements in `requests_pg.rs`.

use super::{Engine, Store, StoreError};
use rusqlite::{params, OptionalExtension, TransactionBehavior};

/// How long a request waits for its decision before it expires.
pub const PENDING_TTL_SECS: i64 = 24 * 3600;

const FIX: &str = "check the file's permissions and the free space on its disk";
const COLS: &str =
    "id, requester, role, duration, reason, key_sha256, created_at, state, decided_at";

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestState {
    /// Waiting for decisions.
    Pending,
    /// Approved by enough approvers: a grant exists.
    Approved,
    /// Denied by an approver.
    Denied,
    /// Not decided in time.
    Expired,
}

impl RequestState {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
            RequestState::Expired => "expired",
        }
    }

    fn parse(s: &str) -> RequestState {
        match s {
            "approved" => RequestState::Approved,
            "denied" => RequestState::Denied,
            "expired" => RequestState::Expired,
            _ => RequestState::Pending,
        }
    }
}

/// An approver's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Approve.
    Approve,
    /// Deny (final at once).
    Deny,
}

impl Verdict {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        }
    }
}

/// A request to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequest {
    /// The requester's email (their certificate's).
    pub requester: String,
    /// The role asked for.
    pub role: String,
    /// Seconds asked for.
    pub duration: i64,
    /// Why (may be empty when the role does not require one).
    pub reason: String,
    /// SHA-256 of the requester's public key (SPKI), lower-case hex: the elevated
    /// certificate is for this key only.
    pub key_sha256: String,
    /// When, Unix seconds.
    pub created_at: i64,
}

/// One approver's recorded decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The approver's email.
    pub approver: String,
    /// What they answered.
    pub verdict: Verdict,
    /// Their reason (may be empty for an approval).
    pub reason: String,
    /// When, Unix seconds.
    pub at: i64,
}

/// The time a grant lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// From, Unix seconds (the final approval).
    pub starts_at: i64,
    /// Until, Unix seconds.
    pub ends_at: i64,
    /// The elevated certificate issued for it, if any yet (the latest).
    pub serial: Option<String>,
}

/// A recorded request with its decisions and grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest {
    /// Its id.
    pub id: String,
    /// The requester's email.
    pub requester: String,
    /// The role.
    pub role: String,
    /// Seconds asked for.
    pub duration: i64,
    /// Why.
    pub reason: String,
    /// The requester's key (see [`NewRequest::key_sha256`]).
    pub key_sha256: String,
    /// When, Unix seconds.
    pub created_at: i64,
    /// Where it is.
    pub state: RequestState,
    /// When it stopped being pending.
    pub decided_at: Option<i64>,
    /// The decisions, oldest first.
    pub decisions: Vec<Decision>,
    /// The grant, once approved.
    pub grant: Option<Grant>,
}

impl AccessRequest {
    /// Distinct approvals recorded.
    pub fn approvals(&self) -> usize {
        self.decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Approve)
            .count()
    }
}

/// What [`Store::decide`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// No such request.
    NotFound,
    /// The request is no longer pending: nothing was changed.
    Final(RequestState),
    /// This approver decided this request before: nothing was changed.
    AlreadyDecided,
    /// The approval is recorded; more are needed.
    Recorded(AccessRequest),
    /// The approval completed the count: the request is approved and granted.
    Approved(AccessRequest),
    /// The request is denied.
    Denied(AccessRequest),
}

/// What [`Store::expire_access`] changed at `now`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired {
    /// Pending requests that waited too long (now `expired`).
    pub requests: Vec<AccessRequest>,
    /// Approved requests whose grant has ended (reported once).
    pub grants: Vec<AccessRequest>,
}

/// Which requests [`Store::access_requests`] lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    /// This requester's (email, ASCII case ignored), every state.
    Mine(String),
    /// Pending requests for these roles.
    Pending(Vec<String>),
}

fn query<'a>(name: &'a str, what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
    move |e| StoreError::Query {
        store: name.to_string(),
        what,
        detail: e.to_string(),
        fix: FIX,
    }
}

/// A new request id: 12 hex digits (short enough to type, 48 random bits).
fn new_id() -> String {
    let mut b = [0u8; 6];
    openssl::rand::rand_bytes(&mut b).expect("the OpenSSL random generator failed");
    crate::authz::identity::hex(&b)
}

impl Store {
    /// Records a new pending request; returns it with its id.
    pub async fn create_request(&self, new: &NewRequest) -> Result<AccessRequest, StoreError> {
        let db = match &self.engine {
            Engine::Sqlite(db) => db.clone(),
            Engine::Postgres(pg) => return pg::create_request(pg, &self.name, new).await,
        };
        let new = new.clone();
        super::blocking(&db, move |c| {
            let (c, name) = c.raw();
            let id = new_id();
            c.execute(
                &format!("INSERT INTO access_requests ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', NULL)"),
                params![id, new.requester, new.role, new.duration, new.reason, new.key_sha256, new.created_at],
            )
            .map_err(query(name, "record the access request"))?;
            load(c, &id).map_err(query(name, "read the access request"))?.ok_or_else(|| {
                StoreError::Query {
                    store: name.to_string(),
                    what: "read the access request",
                    detail: "it is gone".into(),
                    fix: FIX,
                }
            })
        })
        .await
    }

    /// One request, with its decisions and grant.
    pub async fn access_request(&self, id: &str) -> Result<Option<AccessRequest>, StoreError> {
        let db = match &self.engine {
            Engine::Sqlite(db) => db.clone(),
            Engine::Postgres(pg) => return pg::access_request(pg, &self.name, id).await,
        };
        let id = id.to_string();
        super::blocking(&db, move |c| {
            let (c, name) = c.raw();
            load(c, &id).map_err(query(name, "read the access request"))
        })
        .await
    }

    /// The requests `which` selects, newest first.
    pub async fn access_requests(&self, which: &Which) -> Result<Vec<AccessRequest>, StoreError> {
        let db = match &self.engine {
            Engine::Sqlite(db) => db.clone(),
            Engine::Postgres(pg) => return pg::access_requests(pg, &self.name, which).await,
        };
        let which = which.clone();
        super::blocking(&db, move |c| {
            let (c, name) = c.raw();
            let ids: Vec<String> = {
                let (sql, arg) = match &which {
                    Which::Mine(email) => (
                        "SELECT id FROM access_requests WHERE lower(requester) = lower(?1) ORDER BY created_at DESC, id",
                        email.clone(),
                    ),
                    Which::Pending(roles) => (
                        "SELECT id FROM access_requests WHERE state = 'pending' AND role IN (SELECT value FROM json_each(?1)) ORDER BY created_at, id",
                        serde_json::to_string(roles).unwrap_or_else(|_| "[]".into()),
                    ),
                };
                let mut st = c.prepare(sql).map_err(query(name, "list access requests"))?;
                let rows = st
                    .query_map([arg], |r| r.get(0))
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(query(name, "list access requests"))?;
                rows
            };
            let mut out = Vec::new();
            for id in ids {
                if let Some(r) = load(c, &id).map_err(query(name, "read an access request"))? {
                    out.push(r);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Records `approver`'s decision on request `id` at `now`, in one transaction: refused
    /// when the request is no longer pending or the approver decided it before; a denial is
    /// final; the approval that makes `needed` distinct approvals grants the role from `now`
    /// for the requested duration.
    pub async fn decide(
        &self,
        id: &str,
        approver: &str,
        verdict: Verdict,
        reason: &str,
        needed: u32,
        now: i64,
    ) -> Result<Decided, StoreError> {
        let db = match &self.engine {
            Engine::Sqlite(db) => db.clone(),
            Engine::Postgres(pg) => {
                return pg::decide(pg, &self.name, id, approver, verdict, reason, needed, now).await
            }
        };
        let (id, approver, reason) = (
            id.to_string(),
            approver.to_ascii_lowercase(),
            reason.to_string(),
        );
        super::blocking(&db, move |c| {
            let (c, name) = c.raw();
            decide::decide_sqlite(
                c,
                name,
                &id,
                &approver,
                verdict,
                reason.as_str(),
                needed,
                now,
            )
        })
        .await
    }

    /// Records `serial` as the elevated certificate issued for the grant of request `id`.
    pub async fn record_grant_issuance(&self, id: &str, serial: &str) -> Result<(), StoreError> {
        let db = match &self.engine {
            Engine::Sqlite(db) => db.clone(),
            Engine::Postgres(pg) => {
                return pg::record_grant_issuance(pg, &self.name, id, serial).await
            }
        };
        let (id, serial) = (id.to_string(), serial.to_string());
        super::blocking(&db, move |c| {
            let (c, name) = c.raw();
            c.execute(
                "UPDATE access_grants SET serial = ?2 WHERE request_id = ?1",
                params![id, serial],
            )
            .map_err(query(name, "record the grant's certificate"))?;
            Ok(())
        })
        .await
    }

    /// Expires, at `now`, the requests pending for longer than `pending_ttl` seconds, and
    /// reports (once) the grants that have ended.
    pub async fn expire_access(&self, now: i64, pending_ttl: i64) -> Result<Expired, StoreError> {
        let db = match &self.engine {
            Engine::Sqlite(db) => db.clone(),
            Engine::Postgres(pg) => {
                return pg::expire_access(pg, &self.name, now, pending_ttl).await
            }
        };
        super::blocking(&db, move |c| {
            let (c, name) = c.raw();
            let q = query(name, "expire access requests");
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&q)?;
            let ids = |sql: &str, arg: i64| -> rusqlite::Result<Vec<String>> {
                let mut st = tx.prepare(sql)?;
                let rows = st.query_map([arg], |r| r.get(0))?.collect();
                rows
            };
            let stale: Vec<String> = {
                let mut st = tx
                    .prepare(
                        "UPDATE access_requests SET state = 'expired', decided_at = ?1
                         WHERE state = 'pending' AND created_at <= ?2 RETURNING id",
                    )
                    .map_err(&q)?;
                let rows = st
                    .query_map(params![now, now.saturating_sub(pending_ttl)], |r| r.get(0))
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
                    .map_err(&q)?;
                rows
            };
            let ended = ids(
                "UPDATE access_grants SET ended = 1 WHERE ended = 0 AND ends_at <= ?1 RETURNING request_id",
                now,
            )
            .map_err(&q)?;
            let mut out = Expired::default();
            for id in stale {
                out.requests.extend(load(&tx, &id).map_err(&q)?);
            }
            for id in ended {
                out.grants.extend(load(&tx, &id).map_err(&q)?);
            }
            tx.commit().map_err(&q)?;
            Ok(out)
        })
        .await
    }
}

/// Reads request `id` with its decisions and grant.
fn load(c: &rusqlite::Connection, id: &str) -> rusqlite::Result<Option<AccessRequest>> {
    let Some(mut req) = c
        .query_row(
            &format!("SELECT {COLS} FROM access_requests WHERE id = ?1"),
            [id],
            |r| {
                let state: String = r.get(7)?;
                Ok(AccessRequest {
                    id: r.get(0)?,
                    requester: r.get(1)?,
                    role: r.get(2)?,
                    duration: r.get(3)?,
                    reason: r.get(4)?,
                    key_sha256: r.get(5)?,
                    created_at: r.get(6)?,
                    state: RequestState::parse(&state),
                    decided_at: r.get(8)?,
                    decisions: Vec::new(),
                    grant: None,
                })
            },
        )
        .optional()?
    else {
        return Ok(None);
    };
    let mut st = c.prepare(
        "SELECT approver, verdict, reason, at FROM access_decisions WHERE request_id = ?1 ORDER BY at, approver",
    )?;
    req.decisions = st
        .query_map([id], |r| {
            let verdict: String = r.get(1)?;
            Ok(Decision {
                approver: r.get(0)?,
                verdict: if verdict == "deny" {
                    Verdict::Deny
                } else {
                    Verdict::Approve
                },
                reason: r.get(2)?,
                at: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    req.grant = c
        .query_row(
            "SELECT starts_at, ends_at, serial FROM access_grants WHERE request_id = ?1",
            [id],
            |r| {
                Ok(Grant {
                    starts_at: r.get(0)?,
                    ends_at: r.get(1)?,
                    serial: r.get(2)?,
                })
            },
        )
        .optional()?;
    Ok(Some(req))
}

#[path = "requests_decide.rs"]
mod decide;
#[path = "requests_pg.rs"]
mod pg;

#[cfg(test)]
#[path = "requests_tests.rs"]
mod tests;
