//! Why the signer refused a request: one variant per check, each with the reason code
//! written to the audit event and the HTTP status answered.

/// A refused certificate request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request body is not what the API expects.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A method other than POST on `/v1/certificates`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body is over the limit.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The CSR is not PEM, or its self-signature does not verify, or its key is weak.
    #[error("bad CSR: {0}")]
    BadCsr(String),
    /// The token's signature or algorithm is not acceptable.
    #[error("bad token signature: {0}")]
    Signature(String),
    /// The provider's keys cannot be fetched.
    #[error("the identity provider's keys are unavailable: {0}")]
    ProviderUnavailable(String),
    /// `iss` is not the configured issuer.
    #[error("token issuer {0:?} is not the configured issuer")]
    Issuer(String),
    /// `aud`/`azp` do not name this client.
    #[error("token audience is not this client: {0}")]
    Audience(String),
    /// `exp` is past (beyond the clock skew).
    #[error("token expired at {0}")]
    Expired(i64),
    /// `iat`/`nbf` in the future, or `iat` older than the maximum age.
    #[error("token time is not acceptable: {0}")]
    TokenTime(String),
    /// `nonce` is not the hash of the CSR's key.
    #[error("token nonce does not match the CSR's public key")]
    Nonce,
    /// `email` missing.
    #[error("token has no email claim")]
    NoEmail,
    /// `email_verified` not true.
    #[error("email {0} is not verified by the identity provider")]
    EmailUnverified(String),
    /// The email is not a plain `local@domain` address (it would reach certificate names
    /// that backends parse).
    #[error("email {0:?} is not a plain address (local@domain, letters, digits, dots, hyphens)")]
    BadEmail(String),
    /// The email's domain is not allowed.
    #[error("email domain of {0} is not allowed")]
    EmailDomain(String),
    /// Not in any of the required groups.
    #[error("{0} is in none of the required groups")]
    MissingGroup(String),
    /// The token was used before.
    #[error("token was already used")]
    Replayed,
    /// The identity (email or sub) is blocked (`tunnel-server signer revoke --block-for`,
    /// until `signer unblock`).
    #[error("{0} is blocked from signing in")]
    Blocked(String),
    /// The signer could not issue (CA or store problem).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Refusal {
    /// Short reason code for audit events and the API's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BadRequest(_) => "bad_request",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::TooLarge(_) => "too_large",
            Refusal::BadCsr(_) => "bad_csr",
            Refusal::Signature(_) => "bad_signature",
            Refusal::ProviderUnavailable(_) => "provider_unavailable",
            Refusal::Issuer(_) => "wrong_issuer",
            Refusal::Audience(_) => "wrong_audience",
            Refusal::Expired(_) => "token_expired",
            Refusal::TokenTime(_) => "token_time",
            Refusal::Nonce => "nonce_mismatch",
            Refusal::NoEmail => "no_email",
            Refusal::EmailUnverified(_) => "email_unverified",
            Refusal::BadEmail(_) => "bad_email",
            Refusal::EmailDomain(_) => "email_domain",
            Refusal::MissingGroup(_) => "missing_group",
            Refusal::Replayed => "token_replayed",
            Refusal::Blocked(_) => "blocked",
            Refusal::Internal(_) => "internal",
        }
    }

    /// HTTP status answered.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) | Refusal::BadCsr(_) => 400,
            Refusal::MethodNotAllowed => 405,
            Refusal::TooLarge(_) => 413,
            Refusal::EmailDomain(_)
            | Refusal::BadEmail(_)
            | Refusal::MissingGroup(_)
            | Refusal::Blocked(_)
            | Refusal::EmailUnverified(_) => 403,
            Refusal::ProviderUnavailable(_) => 503,
            Refusal::Internal(_) => 500,
            _ => 401,
        }
    }

    /// What the reply says: a fixed text per reason. The details (claims, the provider's
    /// address, OpenSSL's and serde's error text) go to the log only: they may quote the
    /// request or name internal hosts.
    pub fn public_description(&self) -> &'static str {
        match self {
            Refusal::BadRequest(_) => {
                "the body must be JSON {\"csr\": PEM, \"id_token\": JWT, \"lifetime\": optional}"
            }
            Refusal::MethodNotAllowed => "POST only",
            Refusal::TooLarge(_) => "the request body is too large",
            Refusal::BadCsr(_) => "the CSR is not a valid PEM request with an acceptable key",
            Refusal::Signature(_) => "the ID token's signature is not acceptable",
            Refusal::ProviderUnavailable(_) => {
                "the identity provider's keys cannot be fetched now; try again later"
            }
            Refusal::Issuer(_) => "the ID token is not from the configured issuer",
            Refusal::Audience(_) => "the ID token is not for this client",
            Refusal::Expired(_) => "the ID token has expired; sign in again",
            Refusal::TokenTime(_) => "the ID token's times are not acceptable; sign in again",
            Refusal::Nonce => "the ID token's nonce does not match the CSR's key",
            Refusal::NoEmail => "the ID token has no email claim",
            Refusal::EmailUnverified(_) => "the email is not verified by the identity provider",
            Refusal::EmailDomain(_) => "the email's domain is not allowed",
            Refusal::BadEmail(_) => "the email is not a plain address (name@domain)",
            Refusal::MissingGroup(_) => "not a member of a group allowed to sign in",
            Refusal::Replayed => "the ID token was already used; sign in again",
            Refusal::Blocked(_) => "this identity may not sign in now; ask an administrator",
            Refusal::Internal(_) => "the signer could not issue; see its log",
        }
    }
}
