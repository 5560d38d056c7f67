//! The client side of just-in-time access (`tunnel-client request`, `requests`, `approve`,
//! `deny`): calls to the signer's `/v1/access/` API authenticated with the certificate and
//! key that `login` wrote, found through the per-user config (`signer`, `signer_ca`,
//! `cert`, `key`). An approved grant's certificate replaces the one in `cert` exactly as
//! `login` writes it (same key, atomic rename), so a running agent picks it up.

use super::files::write_file;
use crate::authz::identity::printable;
use crate::config::{load_raw, resolve_path, CLIENT_ENV_PREFIX};
use crate::exit::Exit;
use crate::http::client::{Client, HttpError};
use crate::signin::signer::access::wire::{
    DecisionBody, NewAccessRequest, RequestList, RequestView,
};
use crate::signin::signer::wire::{CertificateResponse, ErrorBody};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why an access command failed; [`AccessError::exit`] is its exit status.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The per-user config is missing what the command needs.
    #[error("{0}")]
    Config(String),
    /// The signer cannot be reached, or its CA or our certificate cannot be loaded.
    #[error(transparent)]
    Http(HttpError),
    /// The signer refused (texts made printable).
    #[error("the signer refused: {description} ({error})")]
    Refused {
        /// The signer's reason code.
        error: String,
        /// Its sentence.
        description: String,
    },
    /// The signer's answer is not what the API says.
    #[error("{url}: unexpected answer: {source}")]
    Answer {
        /// The URL asked.
        url: String,
        /// Why it does not parse.
        source: serde_json::Error,
    },
    /// `--wait` ended on a request that was not approved.
    #[error("request {id} was {state}")]
    NotApproved {
        /// The request.
        id: String,
        /// `denied` or `expired`.
        state: String,
    },
    /// `--wait` timed out.
    #[error("request {id} is still pending after {after}; `tunnel-client request --list` shows it, `tunnel-client request --fetch {id}` installs the certificate once approved")]
    Timeout {
        /// The request.
        id: String,
        /// How long it waited (`5m`).
        after: String,
    },
    /// The certificate cannot be written.
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: super::LoginError,
    },
}

impl From<HttpError> for AccessError {
    fn from(e: HttpError) -> AccessError {
        AccessError::Http(e)
    }
}

impl AccessError {
    /// The exit status: 64 for a config to fix, 69 when the signer is unreachable, 74 when
    /// the certificate cannot be written, 1 for a refusal or a request not approved.
    pub fn exit(&self) -> Exit {
        match self {
            AccessError::Config(_) => Exit::Usage,
            AccessError::Http(HttpError::Trust(_)) => Exit::Usage,
            AccessError::Http(_) => Exit::Unavailable,
            AccessError::Write { .. } => Exit::IoError,
            _ => Exit::Failure,
        }
    }
}

#[derive(Deserialize)]
struct UserConfig {
    signer: Option<String>,
    signer_ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

/// A session with the signer's access API, as the person of the per-user config.
pub struct AccessClient {
    http: Client,
    base: String,
    cert: PathBuf,
}

impl AccessClient {
    /// Reads `config` (the per-user config `login` wrote).
    pub fn from_config(config: &Path) -> Result<AccessClient, AccessError> {
        if !config.is_file() {
            return Err(AccessError::Config(format!(
                "{} does not exist; sign in first (tunnel-client login --signer URL --ca FILE)",
                config.display()
            )));
        }
        let c: UserConfig =
            load_raw(config, CLIENT_ENV_PREFIX).map_err(|e| AccessError::Config(e.to_string()))?;
        let missing = |key: &str| {
            AccessError::Config(format!(
                "{}: {key}: is not set; sign in first (tunnel-client login)",
                config.display()
            ))
        };
        let signer = c.signer.ok_or_else(|| missing("signer"))?;
        let ca = resolve_path(config, &c.signer_ca.ok_or_else(|| missing("signer_ca"))?);
        let cert = resolve_path(config, &c.cert.ok_or_else(|| missing("cert"))?);
        let key = resolve_path(config, &c.key.ok_or_else(|| missing("key"))?);
        let http = Client::new(Some(&ca))?.with_identity(&cert, &key)?;
        Ok(AccessClient {
            http,
            base: signer.trim_end_matches('/').to_string(),
            cert,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, AccessError> {
        let url = format!("{}/v1/access/{path}", self.base);
        let resp = match body {
            Some(b) => self.http.post(&url, "application/json", &b).await?,
            None => self.http.get(&url).await?,
        };
        if !(200..300).contains(&resp.status) {
            let e: ErrorBody = serde_json::from_slice(&resp.body).unwrap_or(ErrorBody {
                error: format!("status {}", resp.status),
                error_description: String::new(),
            });
            return Err(AccessError::Refused {
                error: printable(&e.error),
                description: printable(&e.error_description),
            });
        }
        serde_json::from_slice(&resp.body).map_err(|source| AccessError::Answer { url, source })
    }

    /// Asks for `role` for `duration` (e.g. `"2h"`) because of `reason`.
    pub async fn request(
        &self,
        role: &str,
        duration: &str,
        reason: &str,
    ) -> Result<RequestView, AccessError> {
        let body = NewAccessRequest {
            role: role.to_string(),
            duration: duration.to_string(),
            reason: reason.to_string(),
        };
        self.call(
            "requests",
            Some(serde_json::to_vec(&body).unwrap_or_default()),
        )
        .await
    }

    /// One's own requests, newest first.
    pub async fn mine(&self) -> Result<Vec<RequestView>, AccessError> {
        Ok(self.call::<RequestList>("requests", None).await?.requests)
    }

    /// The pending requests one may decide.
    pub async fn pending(&self) -> Result<Vec<RequestView>, AccessError> {
        Ok(self.call::<RequestList>("pending", None).await?.requests)
    }

    /// One request.
    pub async fn get(&self, id: &str) -> Result<RequestView, AccessError> {
        self.call(&format!("requests/{}", path_segment(id)), None)
            .await
    }

    /// Approves (`approve`) or denies request `id`.
    pub async fn decide(
        &self,
        id: &str,
        approve: bool,
        reason: &str,
    ) -> Result<RequestView, AccessError> {
        let verb = if approve { "approve" } else { "deny" };
        let body = DecisionBody {
            reason: reason.to_string(),
        };
        self.call(
            &format!("requests/{}/{verb}", path_segment(id)),
            Some(serde_json::to_vec(&body).unwrap_or_default()),
        )
        .await
    }

    /// Polls request `id` every `every` until it is no longer pending or `timeout` passed.
    pub async fn wait(
        &self,
        id: &str,
        timeout: Duration,
        every: Duration,
    ) -> Result<RequestView, AccessError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let r = self.get(id).await?;
            if r.state != "pending" {
                return Ok(r);
            }
            if tokio::time::Instant::now() + every > deadline {
                return Err(AccessError::Timeout {
                    id: id.to_string(),
                    after: humantime::format_duration(timeout).to_string(),
                });
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Fetches the elevated certificate of approved request `id` and installs it where
    /// `login` installs certificates (the key stays: it is the same one).
    pub async fn install(&self, id: &str) -> Result<Installed, AccessError> {
        let v: CertificateResponse = self
            .call(
                &format!("requests/{}/certificate", path_segment(id)),
                Some(Vec::new()),
            )
            .await?;
        write_file(&self.cert, v.certificate.as_bytes(), 0o644).map_err(|source| {
            AccessError::Write {
                path: self.cert.clone(),
                source,
            }
        })?;
        Ok(Installed {
            serial: v.serial,
            not_after: v.not_after,
            cert: self.cert.clone(),
        })
    }
}

/// What [`AccessClient::install`] wrote.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The elevated certificate's serial.
    pub serial: String,
    /// Its end (Unix seconds).
    pub not_after: i64,
    /// Where it was written.
    pub cert: PathBuf,
}

/// An id as one path segment: anything but letters, digits, `-` and `_` is dropped (ids
/// are hex), so a typed id can never reach another endpoint.
fn path_segment(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}
