//! Every way a gateway connection ends without a tunnel, as one type.
//!
//! [`Refused`]'s `Display` is the audit `reason`; [`Refused::outcome`] is the audit `result`,
//! [`Refused::metric_label`] the `reason` label of `tunnel_handshake_failures_total`, and
//! [`Refused::alert`] the TLS alert the client receives when the refusal is decided inside
//! the handshake. All of it is mapped here and nowhere else, so one refusal has one text.

use crate::config::CrlExpired;
use crate::gateway::audit::Outcome;
use crate::proxy_protocol::inbound::ProxyHeaderRefused;
use crate::revocation::crl::CrlCheck;
use openssl::ssl::SslAlert;
use openssl::x509::X509VerifyResult;
use std::ffi::c_int;
use std::time::Duration;

/// Which revocation source said "revoked".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokedBy {
    /// A configured CRL lists the certificate or a CA of its chain.
    Crl,
    /// The OCSP responder answered "revoked".
    Ocsp,
}

/// Why a connection got no tunnel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// OpenSSL could not set the connection up.
    #[error("OpenSSL: {0}")]
    Setup(String),
    /// No handshake within `handshake_timeout`.
    #[error("no TLS handshake within handshake_timeout ({0:?})")]
    HandshakeTimeout(Duration),
    /// Closed while still handshaking, to make room for new handshakes.
    #[error("handshake still pending after {pending_for:?} while max_handshakes ({max_handshakes}) were pending: closed to make room (handshake flood?)")]
    Evicted {
        /// How long it had been pending.
        pending_for: Duration,
        /// The configured `max_handshakes`.
        max_handshakes: usize,
    },
    /// The TLS handshake failed: untrusted or expired certificate, garbage, protocol
    /// mismatch. The text says what OpenSSL reported.
    #[error("{0}")]
    HandshakeFailed(String),
    /// The handshake completed without a client certificate.
    #[error("no client certificate")]
    NoClientCertificate,
    /// The SNI names no backend, or no SNI was sent and there is no `default_backend`.
    #[error("{}", match .sni { Some(s) => format!("no backend named {s:?}"), None => "no SNI sent and no default_backend configured".into() })]
    UnknownBackend {
        /// The SNI sent (printable), if any.
        sni: Option<String>,
    },
    /// No `allow` rule of the backend matches the client.
    #[error("no allow rule of backend {backend:?} matches")]
    Denied {
        /// The backend asked for.
        backend: String,
    },
    /// The identity is refused whatever the rules say (several subject CNs...): the policy's
    /// [`crate::authz::policy::Decision::Refused`].
    #[error("{reason}")]
    Identity {
        /// The backend asked for.
        backend: String,
        /// Why (from the policy).
        reason: String,
    },
    /// The client certificate or a CA of its chain is revoked.
    #[error("{}", match .0 { RevokedBy::Crl => "certificate revoked by CRL", RevokedBy::Ocsp => "certificate revoked (OCSP)" })]
    Revoked(RevokedBy),
    /// The CRL of a CA in the client's chain is past its nextUpdate and `crl_expired = "deny"`.
    #[error("the CRL of the client's CA is past its nextUpdate (crl_expired = \"deny\"); publish a fresh CRL")]
    CrlExpired,
    /// A CA of the chain has no CRL configured and `crl_check` requires one.
    #[error("no CRL of CA {ca} is configured and crl_check requires one; add its CRL to crl, or set crl_check = \"leaf\" or \"available\"")]
    CrlMissing {
        /// The CA without a CRL (one-line name).
        ca: String,
    },
    /// `ocsp = "require"` and the responder does not know the certificate.
    #[error("OCSP responder does not know this certificate (ocsp = \"require\")")]
    OcspUnknown,
    /// `ocsp = "require"` and no OCSP answer could be had.
    #[error("no OCSP answer and ocsp = \"require\": {0}")]
    OcspUnavailable(String),
    /// A resumed session whose certificate chain no longer verifies (OpenSSL does not verify
    /// again on resumption).
    #[error("resumed session refused: {0}")]
    Resumed(Box<Refused>),
    /// A connection handshaken under the previous configuration whose chain does not verify
    /// under the one a reload put in force meanwhile.
    #[error("refused under the reloaded configuration: {0}")]
    Reloaded(Box<Refused>),
    /// A reload with `revoke_established` revoked the certificate while the tunnel was being
    /// set up.
    #[error("certificate revoked while the tunnel was being set up (revoke_established)")]
    RevokedDuringSetup,
    /// The authorized backend is no longer in the configuration.
    #[error("backend vanished from configuration")]
    BackendVanished,
    /// The backend did not accept within `connect_timeout`.
    #[error("connecting to {0} took longer than connect_timeout")]
    BackendTimeout(String),
    /// The backend refused or could not be reached.
    #[error("{address}: {error}")]
    BackendUnreachable {
        /// The backend's address.
        address: String,
        /// What the connect said.
        error: String,
    },
    /// The live-session registry refused the tunnel: an operator block or a per-backend cap.
    #[error(transparent)]
    Admission(crate::admin::NotAdmitted),
    /// A PROXY listener got no usable PROXY header (or one from a peer outside
    /// `proxy_protocol_from`).
    #[error(transparent)]
    ProxyHeader(ProxyHeaderRefused),
    /// The gateway is at `max_connections`.
    #[error(
        "max_connections reached; connection refused (further refusals this second not logged)"
    )]
    Overloaded,
}

/// The TLS alert a refusal decided during the handshake sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    /// `unrecognized_name` (112), from the SNI callback.
    UnrecognizedName,
    /// From the certificate verify callback (`X509_V_ERR_APPLICATION_VERIFICATION`), which
    /// OpenSSL sends as `handshake_failure` (40).
    HandshakeFailure,
}

impl Refused {
    /// The audit `result`.
    pub fn outcome(&self) -> Outcome {
        match self {
            Refused::Setup(_) | Refused::BackendVanished => Outcome::Error,
            Refused::HandshakeTimeout(_) | Refused::Evicted { .. } => Outcome::Timeout,
            Refused::BackendTimeout(_) => Outcome::Timeout,
            Refused::HandshakeFailed(_) | Refused::NoClientCertificate => Outcome::HandshakeFailed,
            Refused::UnknownBackend { .. } | Refused::Denied { .. } => Outcome::Denied,
            Refused::Identity { .. } => Outcome::Denied,
            Refused::OcspUnknown | Refused::OcspUnavailable(_) => Outcome::Denied,
            Refused::Revoked(_) | Refused::RevokedDuringSetup => Outcome::Revoked,
            Refused::CrlExpired => Outcome::CrlExpired,
            Refused::CrlMissing { .. } => Outcome::CrlMissing,
            Refused::Resumed(inner) | Refused::Reloaded(inner) => inner.outcome(),
            Refused::BackendUnreachable { .. } => Outcome::BackendUnreachable,
            Refused::Overloaded => Outcome::Overloaded,
            Refused::Admission(r) => r.outcome(),
            Refused::ProxyHeader(ProxyHeaderRefused::NotAllowed(_)) => Outcome::Denied,
            Refused::ProxyHeader(ProxyHeaderRefused::Timeout(_)) => Outcome::Timeout,
            Refused::ProxyHeader(ProxyHeaderRefused::Malformed(_)) => Outcome::HandshakeFailed,
        }
    }

    /// The `reason` label of `tunnel_handshake_failures_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Refused::HandshakeTimeout(_) => "timeout",
            Refused::Evicted { .. } => "evicted",
            Refused::UnknownBackend { .. } => "unknown_backend",
            Refused::Denied { .. } | Refused::Identity { .. } => "denied",
            Refused::Revoked(_) | Refused::RevokedDuringSetup => "revoked",
            Refused::CrlExpired => "crl_expired",
            Refused::CrlMissing { .. } => "crl_missing",
            Refused::OcspUnknown | Refused::OcspUnavailable(_) => "ocsp",
            Refused::Resumed(inner) | Refused::Reloaded(inner) => inner.metric_label(),
            Refused::BackendTimeout(_) | Refused::BackendUnreachable { .. } => {
                "backend_unreachable"
            }
            Refused::Overloaded => "overloaded",
            Refused::Admission(crate::admin::NotAdmitted::Blocked { .. }) => "denied",
            Refused::Admission(_) => "overloaded",
            Refused::ProxyHeader(_) => "proxy_protocol",
            Refused::Setup(_)
            | Refused::HandshakeFailed(_)
            | Refused::NoClientCertificate
            | Refused::BackendVanished => "handshake_failed",
        }
    }

    /// The alert the client receives when this refusal is decided inside a full handshake
    /// (the SNI and certificate callbacks); `None` for refusals that can only come later.
    /// Decided after the handshake (a resumed session, OCSP, the backend), any refusal ends
    /// with close_notify instead.
    pub fn alert(&self) -> Option<Alert> {
        match self {
            Refused::UnknownBackend { .. } => Some(Alert::UnrecognizedName),
            Refused::Denied { .. }
            | Refused::Identity { .. }
            | Refused::Revoked(RevokedBy::Crl)
            | Refused::CrlExpired
            | Refused::CrlMissing { .. } => Some(Alert::HandshakeFailure),
            _ => None,
        }
    }

    /// The refusal for a chain [`crate::revocation::crl::CrlSet::check_chain`] judged `check`, under
    /// `crl_expired`; `None` when the chain may pass.
    pub fn from_crl(check: CrlCheck, crl_expired: CrlExpired) -> Option<Refused> {
        match check {
            CrlCheck::Good => None,
            CrlCheck::Revoked => Some(Refused::Revoked(RevokedBy::Crl)),
            CrlCheck::Expired(_) if crl_expired == CrlExpired::Warn => None,
            CrlCheck::Expired(_) => Some(Refused::CrlExpired),
            CrlCheck::Missing(ca) => Some(Refused::CrlMissing { ca }),
        }
    }

    /// The backend this refusal concerns, when one was chosen.
    pub fn backend(&self) -> Option<&str> {
        match self {
            Refused::Denied { backend } | Refused::Identity { backend, .. } => Some(backend),
            _ => None,
        }
    }
}

impl Alert {
    /// The alert for OpenSSL's SNI callback (`None`: the alert comes from the verify
    /// callback).
    pub fn ssl_alert(self) -> Option<SslAlert> {
        match self {
            Alert::UnrecognizedName => Some(SslAlert::UNRECOGNIZED_NAME),
            Alert::HandshakeFailure => None,
        }
    }

    /// The error for OpenSSL's certificate verify callback, from which OpenSSL derives the
    /// alert (`X509_V_ERR_APPLICATION_VERIFICATION`: handshake_failure).
    pub fn verify_error(self) -> X509VerifyResult {
        X509VerifyResult::APPLICATION_VERIFICATION
    }
}

/// The alert number (RFC 8446 section 6) a TLS peer sent, when `e` (as returned by a TLS
/// stream's read, write or handshake) is the report of a received alert.
pub fn received_alert(e: &std::io::Error) -> Option<u8> {
    let ssl = e.get_ref()?.downcast_ref::<openssl::ssl::Error>()?;
    alert_in(ssl)
}

/// Like [`received_alert`], for an OpenSSL handshake error.
pub fn alert_in(e: &openssl::ssl::Error) -> Option<u8> {
    // OpenSSL reports a received alert as reason SSL_AD_REASON_OFFSET (1000) + the alert
    // number, in the SSL library.
    const LIB_SSL: c_int = 20;
    const SSL_AD_REASON_OFFSET: c_int = 1000;
    e.ssl_error()?.errors().iter().find_map(|err| {
        let reason = err.reason_code();
        let alert = reason - SSL_AD_REASON_OFFSET;
        (err.library_code() == LIB_SSL && (0..=255).contains(&alert)).then_some(alert as u8)
    })
}

#[cfg(test)]
mod tests;
