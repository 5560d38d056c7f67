//! Why an OCSP query or a staple fetch gave no usable answer ([`OcspError`]). The checker
//! keeps these in its negative cache, and the gateway turns them into
//! [`super::Verdict::Unavailable`], whose text goes to the audit log.

use super::Verdict;
use openssl::error::ErrorStack;
use std::time::Duration;

/// Why no usable OCSP answer was had. `Clone`, so that a responder found unreachable can
/// be remembered with its error for a few seconds.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OcspError {
    /// The certificate names no responder and none is configured.
    #[error(
        "no OCSP responder: the certificate has no AIA OCSP URL and ocsp_responder is not set"
    )]
    NoResponder,
    /// The responder URL fails the checks of [`super::url::parse`].
    #[error("OCSP responder URL \"{url}\" refused: {why}")]
    UrlRefused {
        /// The URL, escaped and shortened for printing.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The certificate's AIA names a host outside `ocsp_responder_allow`.
    #[error(
        "OCSP responder host {host:?} of the certificate's AIA is not in ocsp_responder_allow"
    )]
    NotAllowed {
        /// The host the AIA names.
        host: String,
    },
    /// The request cannot be built.
    #[error("OCSP request: {0}")]
    Request(ErrorStack),
    /// The request built by OpenSSL is not the DER the nonce is added to.
    #[error("OCSP request: unexpected DER")]
    MalformedRequest,
    /// The HTTP client for the responder cannot be set up.
    #[error("OCSP responder {url}: {why}")]
    Client {
        /// The responder URL.
        url: String,
        /// Why.
        why: String,
    },
    /// The responder did not answer in time.
    #[error("OCSP responder {url} did not answer within {timeout:?}")]
    Timeout {
        /// The responder URL.
        url: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The responder cannot be reached, or answered with broken HTTP (the text names it).
    #[error("OCSP responder {0}")]
    Unreachable(String),
    /// The responder answered another HTTP status than 200.
    #[error("OCSP responder {url}: HTTP status {status}")]
    Status {
        /// The responder URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The response echoes a nonce other than the request's.
    #[error("OCSP response carries another nonce than the request (replayed or misdirected)")]
    NonceMismatch,
    /// The body is not an OCSP response.
    #[error("not an OCSP response: {0}")]
    NotOcsp(ErrorStack),
    /// The responder answered with an error status (`tryLater`, `unauthorized`...).
    #[error("OCSP responder answered status {0}")]
    ResponseStatus(i32),
    /// The response has no basic response.
    #[error("OCSP response: {0}")]
    NoBasic(ErrorStack),
    /// The response's signature does not chain to a trusted CA.
    #[error("OCSP response signature not trusted: {0}")]
    Untrusted(ErrorStack),
    /// The response says nothing about the certificate asked about.
    #[error("OCSP response does not cover this certificate")]
    NotCovered,
    /// The response is too old, not yet valid or past its nextUpdate.
    #[error("OCSP response outside its validity window: {0}")]
    OutsideValidity(ErrorStack),
    /// The responder says the gateway's own certificate is not good: no staple.
    #[error("the responder says our own certificate is {0:?}; not stapling")]
    OwnNotGood(Verdict),
    /// OpenSSL failed in a step that has no better name.
    #[error(transparent)]
    Crypto(#[from] ErrorStack),
}
