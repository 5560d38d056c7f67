//! The audit trail: exactly one event per connection, emitted when it ends, on the tracing
//! target `audit` (so operators can route or filter it, e.g. `RUST_LOG=audit=info`).

pub(crate) mod flood;

use crate::authz::identity::{printable, Identity};
use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

/// How a connection ended, as operators filter on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Tunnelled and closed normally.
    Ok,
    /// Verified, but no rule allows this identity to reach the backend (or no such backend).
    Denied,
    /// The client certificate, or one in its chain, is revoked.
    Revoked,
    /// The CRL of the client's CA is past nextUpdate and `crl_expired = "deny"`.
    CrlExpired,
    /// A CA of the client's chain has no CRL and `crl_check` requires one.
    CrlMissing,
    /// TLS failed: wrong CA, expired certificate, garbage, protocol mismatch...
    HandshakeFailed,
    /// The backend refused or could not be reached.
    BackendUnreachable,
    /// Handshake, backend connect or idle timeout.
    Timeout,
    /// Gateway at `max_connections`.
    Overloaded,
    /// An I/O error after the tunnel was set up.
    Error,
    /// Cut by an operator through the admin socket (`tunnel-server disconnect`).
    Disconnected,
    /// Cut when the client certificate's notAfter passed (`disconnect_expired`).
    Expired,
}

impl Outcome {
    /// The word logged as `result`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Revoked => "revoked",
            Outcome::CrlExpired => "crl_expired",
            Outcome::CrlMissing => "crl_missing",
            Outcome::HandshakeFailed => "handshake_failed",
            Outcome::BackendUnreachable => "backend_unreachable",
            Outcome::Timeout => "timeout",
            Outcome::Overloaded => "overloaded",
            Outcome::Error => "error",
            Outcome::Disconnected => "disconnected",
            Outcome::Expired => "expired",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The record built up while a connection lives.
#[derive(Debug)]
pub(crate) struct AuditRecord {
    started: Instant,
    /// Where the connection came from.
    pub peer: SocketAddr,
    /// The verified identity, once known.
    pub identity: Option<Identity>,
    /// The SNI the client sent.
    pub sni: Option<String>,
    /// The backend chosen.
    pub backend: Option<String>,
    /// Bytes from the client to the backend.
    pub bytes_up: u64,
    /// Bytes from the backend to the client.
    pub bytes_down: u64,
    /// Extra detail (error text, rule that allowed).
    pub reason: String,
    /// Whether the TLS session was resumed.
    pub resumed: bool,
    /// The key exchange group negotiated (`X25519`, `X25519MLKEM768`...), once known.
    pub group: Option<String>,
    /// The cipher suite negotiated, OpenSSL's name (`TLS_AES_256_GCM_SHA384`,
    /// `ECDHE-ECDSA-AES256-GCM-SHA384`), once known.
    pub cipher: Option<String>,
}

impl AuditRecord {
    /// Starts a record for a connection from `peer`.
    pub(crate) fn new(peer: SocketAddr) -> AuditRecord {
        AuditRecord {
            started: Instant::now(),
            peer,
            identity: None,
            sni: None,
            backend: None,
            bytes_up: 0,
            bytes_down: 0,
            reason: String::new(),
            resumed: false,
            group: None,
            cipher: None,
        }
    }

    /// Emits the one audit event for this connection.
    pub(crate) fn finish(self, outcome: Outcome) {
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let (subject, sans) = match &self.identity {
            Some(id) => (id.subject.clone(), id.sans()),
            None => (String::new(), String::new()),
        };
        // Every text field may carry peer-controlled bytes (SNI, names, OpenSSL's error data
        // about the peer's certificate): escaped here once more, whatever the caller did.
        let backend = printable(self.backend.as_deref().unwrap_or(""));
        let sni = printable(self.sni.as_deref().unwrap_or(""));
        let reason = printable(&self.reason);
        let subject = printable(&subject);
        let sans = printable(&sans);
        let result = outcome.as_str();
        let group = self.group.as_deref().unwrap_or("");
        let cipher = self.cipher.as_deref().unwrap_or("");
        match outcome {
            Outcome::Ok => tracing::info!(
                target: "audit",
                peer = %self.peer, subject = %subject, sans = %sans, sni = %sni, backend = %backend,
                result, bytes_up = self.bytes_up, bytes_down = self.bytes_down, duration_ms,
                resumed = self.resumed, group = %group, cipher = %cipher, reason = %reason,
                "connection closed"
            ),
            _ => tracing::warn!(
                target: "audit",
                peer = %self.peer, subject = %subject, sans = %sans, sni = %sni, backend = %backend,
                result, bytes_up = self.bytes_up, bytes_down = self.bytes_down, duration_ms,
                resumed = self.resumed, group = %group, cipher = %cipher, reason = %reason,
                "connection closed"
            ),
        }
    }
}
