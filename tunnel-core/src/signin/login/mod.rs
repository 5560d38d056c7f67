//! `tunnel-client login`: sign in with the organisation's OpenID provider and get a
//! short-lived client certificate from the signer. The P-256 key is made here and never
//! leaves the machine; the signer sees only a CSR and the ID token, whose nonce is the hash
//! of that key ([`crate::signin::oidc::nonce_for_key`]).

mod error;
pub mod files;
pub(crate) mod flows;
pub mod request;

pub use error::LoginError;

use crate::authz::identity::printable;
use crate::http::client::Client;
use crate::pki::{new_key, KeyType};
use crate::signin::oidc::{nonce_for_key, Discovery};
use crate::signin::signer::wire::{
    CertificateRequest, CertificateResponse, ErrorBody, LoginConfig,
};
use files::{create_dir, targets, write_file};
use flows::FlowParams;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509NameBuilder, X509ReqBuilder};
use std::path::{Path, PathBuf};

/// Options of `tunnel-client login`.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    /// The signer's base URL (`https://signer.example.com:9443`).
    pub signer: String,
    /// CA bundle that verifies the signer.
    pub ca: PathBuf,
    /// CA bundle for the provider's HTTPS (system trust when absent).
    pub idp_ca: Option<PathBuf>,
    /// Use the device flow.
    pub device: bool,
    /// Print the URL instead of opening a browser.
    pub no_browser: bool,
    /// Requested lifetime (`8h`), the signer's default when absent.
    pub lifetime: Option<String>,
    /// The agent config to update (or create).
    pub config: PathBuf,
}

/// What a successful login wrote.
#[derive(Debug, Clone)]
pub struct LoginResult {
    /// Certificate chain file.
    pub cert: PathBuf,
    /// Key file.
    pub key: PathBuf,
    /// The config file (new or existing).
    pub config: PathBuf,
    /// Serial of the new certificate.
    pub serial: String,
    /// End of validity (Unix seconds).
    pub not_after: i64,
    /// Whether the signer shortened the requested lifetime.
    pub clamped: bool,
}

/// Runs the whole login.
pub async fn login(opts: &LoginOptions) -> Result<LoginResult, LoginError> {
    let base = opts.signer.trim_end_matches('/');
    let signer = Client::new(Some(&opts.ca)).map_err(LoginError::Trust)?;
    let lc = login_config(&signer, base).await?;
    let idp = Client::new(opts.idp_ca.as_deref()).map_err(LoginError::Trust)?;
    let discovery = Discovery::fetch(&idp, &lc.issuer).await?;
    let key = new_key(KeyType::EcP256)?;
    let nonce = nonce_for_key(&key)?;
    let params = FlowParams {
        discovery: &discovery,
        client_id: &lc.client_id,
        scope: lc.scopes.join(" "),
        nonce: &nonce,
    };
    let headless =
        std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none();
    let id_token = if opts.device || (headless && !opts.no_browser) {
        flows::device_flow(&idp, &params).await?
    } else {
        flows::code_flow(&idp, &params, !opts.no_browser).await?
    };
    let body = CertificateRequest {
        csr: csr_pem(&key)?,
        id_token,
        lifetime: opts.lifetime.clone().map(serde_json::Value::from),
    };
    let v = certificate(&signer, base, &body).await?;
    save(opts, &lc, &key, v)
}

/// The signer's login configuration: which provider, client id and scopes.
async fn login_config(signer: &Client, base: &str) -> Result<LoginConfig, LoginError> {
    let url = format!("{base}/v1/login-config");
    let resp = signer.get(&url).await?;
    if resp.status != 200 {
        return Err(LoginError::SignerStatus {
            url,
            status: resp.status,
        });
    }
    serde_json::from_slice(&resp.body).map_err(|source| LoginError::SignerAnswer {
        url,
        what: "the signer's login configuration",
        source,
    })
}

/// Asks the signer for the certificate; its refusal is shown with its reason.
async fn certificate(
    signer: &Client,
    base: &str,
    body: &CertificateRequest,
) -> Result<CertificateResponse, LoginError> {
    let url = format!("{base}/v1/certificates");
    let body = serde_json::to_vec(body).map_err(LoginError::Encode)?;
    let resp = signer.post(&url, "application/json", &body).await?;
    if resp.status != 200 {
        let e: ErrorBody = serde_json::from_slice(&resp.body).unwrap_or(ErrorBody {
            error: format!("status {}", resp.status),
            error_description: String::new(),
        });
        return Err(LoginError::SignerRefused {
            error: printable(&e.error),
            description: printable(&e.error_description),
        });
    }
    serde_json::from_slice(&resp.body).map_err(|source| LoginError::SignerAnswer {
        url,
        what: "a certificate response",
        source,
    })
}

fn csr_pem(key: &PKey<Private>) -> Result<String, LoginError> {
    let build = || -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let mut name = X509NameBuilder::new()?;
        // The signer ignores the subject; it takes every name from the ID token.
        name.append_entry_by_text("CN", "tunnel-client login")?;
        let mut b = X509ReqBuilder::new()?;
        b.set_subject_name(&name.build())?;
        b.set_pubkey(key)?;
        b.sign(key, MessageDigest::sha256())?;
        b.build().to_pem()
    };
    build()
        .map(|p| String::from_utf8_lossy(&p).into_owned())
        .map_err(LoginError::Csr)
}

fn save(
    opts: &LoginOptions,
    lc: &LoginConfig,
    key: &PKey<Private>,
    v: CertificateResponse,
) -> Result<LoginResult, LoginError> {
    let t = targets(&opts.config)?;
    if let Some(cfg) = &t.new_config {
        create_dir(cfg.parent().unwrap_or(Path::new(".")))?;
    }
    let key_pem = key.private_key_to_pem_pkcs8()?;
    write_file(&t.key, &key_pem, 0o600)?;
    write_file(&t.cert, v.certificate.as_bytes(), 0o644)?;
    if let Some(cfg) = &t.new_config {
        write_user_config(opts, lc, cfg)?;
    }
    Ok(LoginResult {
        cert: t.cert,
        key: t.key,
        config: opts.config.clone(),
        serial: v.serial,
        not_after: v.not_after,
        clamped: v.lifetime_clamped,
    })
}

fn write_user_config(opts: &LoginOptions, lc: &LoginConfig, cfg: &Path) -> Result<(), LoginError> {
    let dir = cfg.parent().unwrap_or(Path::new("."));
    let ca_path = dir.join("gateway-ca.pem");
    let ca_pem = match &lc.gateway_ca {
        Some(pem) => pem.as_bytes().to_vec(),
        None => std::fs::read(&opts.ca).map_err(|source| LoginError::ReadCa {
            path: opts.ca.clone(),
            source,
        })?,
    };
    write_file(&ca_path, &ca_pem, 0o644)?;
    // The signer and its CA, so the next `tunnel-client login` needs neither flag.
    let signer_ca = std::fs::read(&opts.ca).map_err(|source| LoginError::ReadCa {
        path: opts.ca.clone(),
        source,
    })?;
    write_file(&dir.join("signer-ca.pem"), &signer_ca, 0o644)?;
    let mut toml = format!(
        "# Written by `tunnel-client login`; add [[tunnel]] tables or use `tunnel-client open`.\nserver = {}\ncert = \"cert.pem\"\nkey = \"key.pem\"\nca = \"gateway-ca.pem\"\nsigner = {}\nsigner_ca = \"signer-ca.pem\"\n",
        toml_string(&lc.gateway),
        toml_string(opts.signer.trim_end_matches('/'))
    );
    if let Some(name) = &lc.gateway_server_name {
        toml += &format!("server_name = {}\n", toml_string(name));
    }
    write_file(cfg, toml.as_bytes(), 0o644)
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}
