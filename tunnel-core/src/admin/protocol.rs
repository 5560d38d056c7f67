//! The admin protocol: one JSON object per line each way, version 1.
//!
//! Requests: `{"v":1,"cmd":"sessions","backend":"db","identity":"alice*"}`,
//! `{"v":1,"cmd":"disconnect","id":7,"reason":"left","block_for_secs":600}` (exactly one of
//! `id`, `identity`, `backend`, `serial`), `{"v":1,"cmd":"status"}` (client agent).
//! Replies: `{"v":1,"ok":true,...}` with `sessions`, `disconnected` (+ `blocked_until`,
//! `note`) or `agent` + `tunnels`; errors are `{"v":1,"ok":false,"error":"..."}`.
//! `block_for_secs` is at most [`MAX_BLOCK_FOR`]; a longer one is refused when parsed.

use crate::authz::policy::IdentitySelector;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;

/// Longest request line accepted.
pub const MAX_LINE: usize = 64 * 1024;

/// The longest block `disconnect --block-for` may set. A year and a day covers any temporary
/// measure (for good, revoke the certificate), and keeps the block's end far from where
/// `Instant` or Unix-time arithmetic overflows.
pub const MAX_BLOCK_FOR: Duration = Duration::from_secs(366 * 86_400);

/// [`MAX_BLOCK_FOR`] as operators read it.
pub const MAX_BLOCK_FOR_TEXT: &str = "366 days";

/// A block longer than [`MAX_BLOCK_FOR`] was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "block_for_secs {secs} is longer than the maximum of {} ({MAX_BLOCK_FOR_TEXT})",
    MAX_BLOCK_FOR.as_secs()
)]
pub struct BlockTooLong {
    /// The seconds asked for.
    pub secs: u64,
}

/// How long `disconnect` also blocks the identities: at most [`MAX_BLOCK_FOR`], so that the
/// block's end can always be computed. On the wire, whole seconds (`block_for_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct BlockFor(Duration);

impl BlockFor {
    /// `d` rounded down to whole seconds, if it is at most [`MAX_BLOCK_FOR`].
    pub fn new(d: Duration) -> Result<BlockFor, BlockTooLong> {
        BlockFor::try_from(d.as_secs())
    }

    /// The duration.
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl TryFrom<u64> for BlockFor {
    type Error = BlockTooLong;

    fn try_from(secs: u64) -> Result<BlockFor, BlockTooLong> {
        if secs > MAX_BLOCK_FOR.as_secs() {
            return Err(BlockTooLong { secs });
        }
        Ok(BlockFor(Duration::from_secs(secs)))
    }
}

impl From<BlockFor> for u64 {
    fn from(b: BlockFor) -> u64 {
        b.0.as_secs()
    }
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// List live tunnels (gateway).
    Sessions {
        /// Only this backend.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        backend: Option<String>,
        /// Only identities this pattern matches.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identity: Option<String>,
    },
    /// Cut tunnels (gateway).
    Disconnect {
        /// One tunnel by id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Identities this pattern matches.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identity: Option<String>,
        /// Every tunnel to this backend.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        backend: Option<String>,
        /// The certificate with this serial (hex).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        serial: Option<String>,
        /// Why (goes into the audit events).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Also refuse these identities for this many seconds (at most [`MAX_BLOCK_FOR`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        block_for_secs: Option<BlockFor>,
    },
    /// The client agent's tunnels and their last errors.
    Status,
}

/// Which tunnels a `disconnect` picks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The tunnel with this id.
    Id(u64),
    /// Identities a rule (`ou=contractors`) or glob (`alice*`) matches.
    Identity(IdentitySelector),
    /// Tunnels to a backend.
    Backend(String),
    /// The certificate with this serial (hex).
    Serial(String),
}

/// The selector of a `disconnect`, or why there is not exactly one.
pub fn selector(
    id: Option<u64>,
    identity: Option<String>,
    backend: Option<String>,
    serial: Option<String>,
) -> Result<Selector, String> {
    let mut v = Vec::new();
    v.extend(id.map(Selector::Id));
    if let Some(i) = identity {
        v.push(Selector::Identity(
            IdentitySelector::parse(&i).map_err(|e| e.to_string())?,
        ));
    }
    v.extend(backend.map(Selector::Backend));
    v.extend(serial.map(Selector::Serial));
    if v.len() != 1 {
        return Err("give exactly one of id, identity, backend, serial".into());
    }
    Ok(v.remove(0))
}

/// One live tunnel, as `sessions` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// Id for `disconnect --id`.
    pub id: u64,
    /// Client address.
    pub peer: String,
    /// Certificate subject.
    pub subject: String,
    /// Certificate SANs in one line.
    pub sans: String,
    /// Certificate serial (hex).
    pub serial: String,
    /// Certificate SHA-256 fingerprint (hex).
    pub sha256: String,
    /// Backend.
    pub backend: String,
    /// Start, Unix seconds.
    pub started: i64,
    /// Age in milliseconds.
    pub duration_ms: u64,
    /// Bytes client → backend.
    pub bytes_up: u64,
    /// Bytes backend → client.
    pub bytes_down: u64,
    /// Milliseconds since a byte last moved.
    pub idle_ms: u64,
    /// Whether the TLS session was resumed.
    pub resumed: bool,
    /// Certificate notAfter, Unix seconds.
    pub not_after: Option<i64>,
}

/// One tunnel of the client agent, as `status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelStatus {
    /// Local listening address.
    pub listen: String,
    /// Backend name (SNI).
    pub backend: String,
    /// Connections open now.
    pub active: u64,
    /// Connections made since start.
    pub total: u64,
    /// The last error and when (Unix seconds), if any.
    pub last_error: Option<String>,
    /// When the last error happened (Unix seconds).
    pub last_error_at: Option<i64>,
}

/// The client agent as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Gateway address.
    pub gateway: String,
    /// Certificate subject.
    pub subject: String,
    /// Certificate notAfter, Unix seconds.
    pub not_after: Option<i64>,
    /// Within the warning window or expired: that, and what to run for a new certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Protocol version.
    pub v: u32,
    /// Whether the request succeeded.
    pub ok: bool,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `sessions`: the tunnels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<Vec<SessionView>>,
    /// `disconnect`: how many were cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected: Option<usize>,
    /// `disconnect --block-for`: end of the block, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_until: Option<i64>,
    /// A remark for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// `status`: the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentStatus>,
    /// `status`: its tunnels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnels: Option<Vec<TunnelStatus>>,
}

impl Response {
    /// A success with nothing filled in yet.
    pub fn ok() -> Response {
        Response {
            v: VERSION,
            ok: true,
            ..Response::default()
        }
    }

    /// A failure.
    pub fn error(msg: impl Into<String>) -> Response {
        Response {
            v: VERSION,
            ok: false,
            error: Some(msg.into()),
            ..Response::default()
        }
    }
}

/// Parses one request line: a JSON object with `"v": 1` and a known `cmd`.
pub fn parse_request(line: &str) -> Result<Request, String> {
    let mut value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let obj = value
        .as_object_mut()
        .ok_or("a request is a JSON object such as {\"v\":1,\"cmd\":\"sessions\"}")?;
    match obj.remove("v").and_then(|v| v.as_u64()) {
        Some(v) if v == VERSION as u64 => {}
        Some(v) => {
            return Err(format!(
                "protocol version {v} is not supported; this server speaks v{VERSION}"
            ))
        }
        None => return Err(format!("missing \"v\"; send \"v\":{VERSION}")),
    }
    serde_json::from_value(value).map_err(|e| format!("bad request: {e}"))
}

/// Serializes `req` as one line (without the newline), with `"v"`.
pub fn request_line(req: &Request) -> String {
    let mut v = serde_json::to_value(req).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("v".into(), VERSION.into());
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_refused() {
        let reqs = [
            Request::Sessions {
                backend: Some("db".into()),
                identity: None,
            },
            Request::Disconnect {
                id: Some(3),
                identity: None,
                backend: None,
                serial: None,
                reason: Some("left".into()),
                block_for_secs: Some(BlockFor::new(Duration::from_secs(60)).unwrap()),
            },
            Request::Status,
        ];
        for r in reqs {
            assert_eq!(parse_request(&request_line(&r)).unwrap(), r);
        }
        let bad = [
            ("{}", "missing \"v\""),
            ("{\"v\":2,\"cmd\":\"sessions\"}", "version 2"),
            ("{\"v\":1,\"cmd\":\"reboot\"}", "bad request"),
            ("{\"v\":1,\"cmd\":\"sessions\",\"x\":1}", "bad request"),
            ("[1]", "JSON object"),
            ("nope", "not JSON"),
            (
                "{\"v\":1,\"cmd\":\"disconnect\",\"id\":1,\"block_for_secs\":31622401}",
                "block_for_secs 31622401 is longer than the maximum of 31622400 (366 days)",
            ),
            (
                "{\"v\":1,\"cmd\":\"disconnect\",\"id\":1,\"block_for_secs\":-1}",
                "bad request",
            ),
        ];
        for (line, want) in bad {
            let e = parse_request(line).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
    }

    #[test]
    fn selector_needs_exactly_one() {
        assert_eq!(selector(Some(1), None, None, None), Ok(Selector::Id(1)));
        assert!(selector(None, None, None, None).is_err());
        assert!(selector(Some(1), Some("a".into()), None, None).is_err());
    }
}
