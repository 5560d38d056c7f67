//! The signer (`tunnel-server signer --config signer.toml`): an HTTPS service that turns an
//! OpenID Connect ID token plus a CSR into a short-lived client certificate from the user
//! CA. It runs as its own process; the gateway only trusts the user CA through `client_ca`.
//!
//! [`config`] reads signer.toml; [`keys`] fetches and caches the provider's JWKS;
//! [`claims`] checks the token's claims; [`mint`] checks the CSR, issues, and records the
//! certificate in the store ([`crate::signin::store`], which also makes each token
//! single-use); [`state`] opens the store and imports what older signers kept ([`replay`],
//! the pki index); [`crl`] serves the user CA's CRL from the store; [`commands`] are
//! `signer list|revoke|unblock|backup`; [`api`] is the HTTP surface; [`refusal`] names every
//! refusal; [`wire`] is the JSON contract with `login`; `service` runs it (signals, reloads,
//! systemd).

pub mod access;
pub(crate) mod api;
pub(crate) mod claims;
pub mod commands;
pub(crate) mod config;
pub(crate) mod crl;
pub(crate) mod keys;
pub(crate) mod mint;
pub(crate) mod refusal;
pub mod replay;
mod service;
pub(crate) mod state;
pub(crate) mod wire;

pub use config::SignerConfig;
pub use refusal::Refusal;
pub use service::run_file;

use crate::http::client::Client;
use crate::http::serve::Limits;
use crate::pki::Issued;
use crate::signin::store::Store;
use openssl::pkey::PKey;
use openssl::ssl::{SslAcceptor, SslMethod, SslVersion};
use openssl::x509::X509;
use std::sync::Arc;
use std::time::Duration;

/// What the signer's HTTPS API accepts. An unauthenticated client can open connections and
/// send nothing: the handshake and the head have a few seconds each, one address holds at
/// most half of the 512 places, and a newcomer closes the oldest connection that has not
/// sent a complete request (`http::serve`), so idle sockets cannot starve a login. The cap
/// per address is generous because a load balancer in front (HAProxy) is one address for
/// every client: 200 sign-ins at once from one address are served (tests/signer_load.rs).
pub const LIMITS: Limits = Limits {
    max_open: 512,
    max_per_source: 256,
    handshake: Duration::from_secs(5),
    head: Duration::from_secs(5),
    total: Duration::from_secs(15),
    max_head: 16 * 1024,
    max_body: api::MAX_REQUEST_BODY,
};
/// How long requests in progress may finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A signer: configuration, user CA, provider keys, store. Cheap to clone.
#[derive(Clone)]
pub struct Signer {
    cfg: Arc<SignerConfig>,
    minter: Arc<mint::Minter>,
    ca_pem: Arc<str>,
    gateway_ca_pem: Option<Arc<str>>,
    keys: Arc<keys::ProviderKeys>,
    acceptor: Arc<SslAcceptor>,
    access: Arc<access::Access>,
}

fn read(path: &std::path::Path, key: &str, cfg: &SignerConfig) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "{}: {key}: cannot read {}: {e}",
            cfg.file.display(),
            path.display()
        )
    })
}

impl Signer {
    /// Loads the user CA, the HTTPS identity and the provider's trust; `Err` is a config
    /// problem (`file: key: problem`). `store` is the open store ([`state::open`]), kept
    /// across reloads.
    pub(crate) fn new(cfg: SignerConfig, store: Arc<Store>) -> Result<Signer, String> {
        let f = cfg.file.display().to_string();
        let ca = user_ca(&cfg)?;
        let ca_pem: Arc<str> =
            String::from_utf8_lossy(&ca.cert.to_pem().unwrap_or_default()).into();
        let gateway_ca_pem = match &cfg.gateway_ca {
            Some(p) => Some(String::from_utf8_lossy(&read(p, "gateway_ca", &cfg)?).into()),
            None => None,
        };
        let http =
            Client::new(cfg.issuer_ca.as_deref()).map_err(|e| format!("{f}: issuer_ca: {e}"))?;
        let acceptor = acceptor(&cfg).map_err(|e| format!("{f}: cert/key: {e}"))?;
        let access = Arc::new(access::Access::new(store.clone(), cfg.notify_url.clone()));
        if !cfg.roles.is_empty() {
            access::Access::start_sweeper(&access);
        }
        for w in &cfg.role_warnings {
            tracing::warn!("{w}");
        }
        Ok(Signer {
            keys: Arc::new(keys::ProviderKeys::new(cfg.issuer.clone(), http)),
            minter: Arc::new(mint::Minter {
                ca: Arc::new(ca),
                issuer: cfg.issuer.clone(),
                store,
                instance: instance_name(),
            }),
            ca_pem,
            gateway_ca_pem,
            acceptor: Arc::new(acceptor),
            access,
            cfg: Arc::new(cfg),
        })
    }

    /// The TLS identity it serves with.
    pub(crate) fn acceptor(&self) -> Arc<SslAcceptor> {
        self.acceptor.clone()
    }

    /// The configuration in force.
    pub fn config(&self) -> &SignerConfig {
        &self.cfg
    }

    /// The store it records in.
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.minter.store
    }
}

/// The user CA of `cfg`: its certificate and the key that belongs to it; `Err` is
/// `file: key: problem`.
pub(crate) fn user_ca(cfg: &SignerConfig) -> Result<Issued, String> {
    let f = cfg.file.display();
    let cert = X509::from_pem(&read(&cfg.ca_cert, "ca_cert", cfg)?)
        .map_err(|_| format!("{f}: ca_cert: not a PEM certificate"))?;
    let key = PKey::private_key_from_pem(&read(&cfg.ca_key, "ca_key", cfg)?)
        .map_err(|_| format!("{f}: ca_key: not an unencrypted PEM private key"))?;
    if !cert
        .public_key()
        .map(|p| p.public_eq(&key))
        .unwrap_or(false)
    {
        return Err(format!("{f}: ca_key: does not belong to ca_cert"));
    }
    Ok(Issued { cert, key })
}

/// This signer's name in the records: `HOST:PID` (two signers on one host differ).
fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "signer".into());
    format!("{host}:{}", std::process::id())
}

fn acceptor(cfg: &SignerConfig) -> Result<SslAcceptor, openssl::error::ErrorStack> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_certificate_chain_file(&cfg.cert)?;
    b.set_private_key_file(&cfg.key, openssl::ssl::SslFiletype::PEM)?;
    b.check_private_key()?;
    access::request_client_cert(&mut b, &cfg.ca_cert)?;
    Ok(b.build())
}
