//! Why `tunnel-client login` failed ([`LoginError`]), and the one place that decides the
//! exit status of each failure ([`LoginError::exit`]), so the binary never reads the text.

use crate::config::ConfigError;
use crate::exit::Exit;
use crate::http::client::HttpError;
use crate::signin::oidc::DiscoveryError;
use std::path::PathBuf;
use std::time::Duration;

/// Why the sign-in stopped. The texts are what the person reads after
/// `tunnel-client login: `.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// A CA bundle (`--ca`, `--idp-ca`) cannot be loaded.
    #[error(transparent)]
    Trust(HttpError),
    /// The signer or the provider cannot be reached, or answered with broken HTTP.
    #[error(transparent)]
    Unreachable(#[from] HttpError),
    /// The signer answered its login configuration with another status than 200.
    #[error("{url}: status {status}")]
    SignerStatus {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The signer's answer is not what the protocol says.
    #[error("{url}: not {what}: {source}")]
    SignerAnswer {
        /// The URL asked.
        url: String,
        /// What was expected ("the signer's login configuration").
        what: &'static str,
        /// Why it does not parse.
        source: serde_json::Error,
    },
    /// The signer refused to issue (texts made printable).
    #[error("the signer refused: {description} ({error})")]
    SignerRefused {
        /// The signer's `error` code.
        error: String,
        /// Its `error_description`.
        description: String,
    },
    /// The provider's discovery document, or a URL it gives for the browser, is refused.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The provider lacks an endpoint the chosen flow needs (the text says which).
    #[error("{0}")]
    MissingEndpoint(&'static str),
    /// The loopback listener for the redirect cannot be opened.
    #[error("cannot listen on 127.0.0.1 for the redirect: {0}")]
    RedirectListen(std::io::Error),
    /// The redirect listener ended without a callback.
    #[error("the redirect listener stopped")]
    RedirectStopped,
    /// The person did not finish in time.
    #[error("no sign-in within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The provider's redirect carries an error (texts made printable).
    #[error("the provider refused the sign-in: {error} {description}")]
    SignInRefused {
        /// The `error` parameter.
        error: String,
        /// The `error_description` parameter.
        description: String,
    },
    /// The redirect names another issuer (RFC 9207 `iss`): a mix-up.
    #[error("the redirect names another issuer; start again")]
    OtherIssuer,
    /// The redirect has neither a code nor an error.
    #[error("the redirect carries no code")]
    NoCode,
    /// A provider endpoint answered something that is not JSON.
    #[error("body is not JSON: {0}")]
    NotJson(serde_json::Error),
    /// The token endpoint refused.
    #[error("the provider's token endpoint answered {status}: {error} {description}")]
    TokenRefused {
        /// The HTTP status.
        status: u16,
        /// The `error` member.
        error: String,
        /// The `error_description` member.
        description: String,
    },
    /// The token response has no ID token.
    #[error("the token response has no id_token; is \"openid\" in the scopes?")]
    NoIdToken,
    /// The device authorization endpoint refused (texts made printable).
    #[error("device authorization refused ({status}): {error} {description}")]
    DeviceRefused {
        /// The HTTP status.
        status: u16,
        /// The `error` member.
        error: String,
        /// The `error_description` member.
        description: String,
    },
    /// The device code expired while polling.
    #[error("the device code expired before the sign-in finished; run login again")]
    DeviceCodeExpired,
    /// Making the key, its nonce or the request failed in OpenSSL.
    #[error(transparent)]
    Crypto(#[from] openssl::error::ErrorStack),
    /// The certificate request cannot be made.
    #[error("cannot make the certificate request: {0}")]
    Csr(openssl::error::ErrorStack),
    /// The request to the signer cannot be encoded.
    #[error(transparent)]
    Encode(serde_json::Error),
    /// The existing config file cannot be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The existing config file does not say where the certificate and key go.
    #[error("{}: cert, key: both are needed so that login knows where to write; add e.g. cert = \"me.crt\" and key = \"me.key\"", .0.display())]
    NoTargets(PathBuf),
    /// The `--ca` bundle cannot be read to copy it beside a new config.
    #[error("{}: {source}", path.display())]
    ReadCa {
        /// The bundle.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file or directory cannot be written.
    #[error("{}: cannot {what}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The step that failed ("write", "rename into place"...).
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

impl LoginError {
    /// The exit status of `tunnel-client login` for this error: files named on the command
    /// line or in the config that cannot be used are bad usage, a file that cannot be
    /// written an I/O error, anything else (network, provider, signer) a runtime failure.
    pub fn exit(&self) -> Exit {
        match self {
            LoginError::Trust(_)
            | LoginError::Config(_)
            | LoginError::NoTargets(_)
            | LoginError::ReadCa { .. } => Exit::Usage,
            LoginError::Write { .. } => Exit::IoError,
            _ => Exit::Failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_exit_status() {
        let io = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let cases = [
            (LoginError::Trust(HttpError::Trust("ca.pem".into())), 64),
            (LoginError::NoTargets("c.toml".into()), 64),
            (
                LoginError::ReadCa {
                    path: "ca.pem".into(),
                    source: io(),
                },
                64,
            ),
            (
                LoginError::Write {
                    path: "key.pem".into(),
                    what: "write",
                    source: io(),
                },
                74,
            ),
            (HttpError::Insecure("http://x".into()).into(), 1),
            (LoginError::OtherIssuer, 1),
            (LoginError::Timeout(Duration::from_secs(300)), 1),
        ];
        for (e, code) in cases {
            assert_eq!(e.exit().code(), code, "{e}");
        }
    }

    #[test]
    fn texts_are_the_ones_people_read() {
        assert_eq!(
            LoginError::Timeout(Duration::from_secs(300)).to_string(),
            "no sign-in within 5m"
        );
        let e = LoginError::Write {
            path: "d/key.pem".into(),
            what: "rename into place",
            source: std::io::Error::other("denied"),
        };
        assert_eq!(e.to_string(), "d/key.pem: cannot rename into place: denied");
    }
}
