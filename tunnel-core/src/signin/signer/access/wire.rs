//! The JSON contract of `/v1/access/…` between the signer and `tunnel-client request`,
//! `requests`, `approve` and `deny`: serde structs both sides use.

use serde::{Deserialize, Serialize};

/// `POST /v1/access/requests`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccessRequest {
    /// The role's name.
    pub role: String,
    /// How long, as a duration (`"2h"`).
    pub duration: String,
    /// Why (a ticket, an incident).
    #[serde(default)]
    pub reason: String,
}

/// `POST /v1/access/requests/ID/approve` and `/deny`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// One approver's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionView {
    /// Their email.
    pub approver: String,
    /// `approve` or `deny`.
    pub verdict: String,
    /// Their reason.
    pub reason: String,
    /// When (Unix seconds).
    pub at: i64,
}

/// A request as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestView {
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
    /// `pending`, `approved`, `denied` or `expired`.
    pub state: String,
    /// When it was made (Unix seconds).
    pub created_at: i64,
    /// Approvals recorded.
    pub approvals: usize,
    /// Approvals needed.
    pub approvals_needed: u32,
    /// The groups whose members may decide.
    pub approver_groups: Vec<String>,
    /// The decisions so far.
    pub decisions: Vec<DecisionView>,
    /// When the grant ends (Unix seconds), once approved.
    #[serde(default)]
    pub grant_ends_at: Option<i64>,
}

/// A list of requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestList {
    /// Newest first (own requests) or oldest first (pending ones).
    pub requests: Vec<RequestView>,
}
