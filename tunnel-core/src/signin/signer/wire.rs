//! The contract between the signer and `tunnel-client login`: the JSON bodies of
//! `GET /v1/login-config` and `POST /v1/certificates`, as serde structs both sides use (as
//! `catalog.rs` shares the catalog), so a field renamed on one side cannot go unnoticed on
//! the other.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `GET /v1/login-config`: what `login` needs to sign in and to write its config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LoginConfig {
    /// The provider's issuer URL.
    pub issuer: String,
    /// This application's client id at the provider.
    pub client_id: String,
    /// Scopes to request.
    pub scopes: Vec<String>,
    /// The flows the signer accepts tokens from.
    #[serde(default)]
    pub flows: Vec<String>,
    /// Longest lifetime issued (seconds).
    #[serde(default)]
    pub max_lifetime: u64,
    /// Lifetime issued when none is asked for (seconds).
    #[serde(default)]
    pub default_lifetime: u64,
    /// The gateway the certificates are for (`host:port`).
    pub gateway: String,
    /// The name to verify in the gateway's certificate.
    #[serde(default)]
    pub gateway_server_name: Option<String>,
    /// The CA bundle that verifies the gateway (PEM).
    #[serde(default)]
    pub gateway_ca: Option<String>,
    /// Signature algorithms accepted for ID tokens.
    #[serde(default)]
    pub id_token_algorithms: Vec<String>,
}

/// `POST /v1/certificates`: a CSR and the ID token that vouches for its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertificateRequest {
    /// The CSR (PEM).
    pub csr: String,
    /// The ID token (compact JWS).
    pub id_token: String,
    /// Seconds, or a duration like `"8h"`; absent or null: the default lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<Value>,
}

/// The answer to a granted [`CertificateRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CertificateResponse {
    /// The certificate and the user CA (PEM).
    pub certificate: String,
    /// Its serial (hex).
    pub serial: String,
    /// End of validity (Unix seconds).
    pub not_after: i64,
    /// Whether the requested lifetime was shortened to `max_lifetime`.
    #[serde(default)]
    pub lifetime_clamped: bool,
}

/// The body of every refusal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ErrorBody {
    /// The reason code (as in the audit event).
    pub error: String,
    /// A fixed sentence for the person.
    #[serde(default)]
    pub error_description: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field names are the wire format: written out by hand here, not derived.
    #[test]
    fn field_names_are_the_documented_ones() {
        let r = CertificateResponse {
            certificate: "PEM".into(),
            serial: "0A".into(),
            not_after: 5,
            lifetime_clamped: true,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"certificate": "PEM", "serial": "0A", "not_after": 5, "lifetime_clamped": true})
        );
        let req: CertificateRequest =
            serde_json::from_str(r#"{"csr": "C", "id_token": "T", "lifetime": "8h"}"#).unwrap();
        assert_eq!(req.lifetime, Some(Value::from("8h")));
        assert!(serde_json::from_str::<CertificateRequest>(
            r#"{"csr": "C", "id_token": "T", "x": 1}"#
        )
        .is_err());
        let e: ErrorBody = serde_json::from_str(r#"{"error": "bad_email"}"#).unwrap();
        assert_eq!(
            (e.error.as_str(), e.error_description.as_str()),
            ("bad_email", "")
        );
    }
}
