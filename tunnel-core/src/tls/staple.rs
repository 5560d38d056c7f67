//! OCSP stapling: the gateway serves the staple in force for its certificate
//! (`ocsp_staple`), and the client agent checks the one the gateway sends
//! (`require_staple`).

use crate::config::{ConfigError, ServerConfig};
use openssl::error::ErrorStack;
use openssl::ssl::{SslAcceptorBuilder, SslRef};
use openssl::x509::X509;
use std::sync::Arc;

/// `ocsp_staple`: loads a staple file (checked to be a DER OCSP response) and serves the
/// staple in force, if it is for `own`.
pub(super) fn serve_staple(
    b: &mut SslAcceptorBuilder,
    cfg: &ServerConfig,
    own: &X509,
    staple: Arc<crate::revocation::ocsp::Staple>,
) -> Result<(), ConfigError> {
    let file = cfg.file.as_path();
    let tls_err = |e: ErrorStack| ConfigError::new(file, "", format!("OpenSSL: {e}"));
    if let Some(crate::config::StapleSource::File(p)) = &cfg.ocsp_staple {
        let der = std::fs::read(p).map_err(|e| {
            ConfigError::new(
                file,
                "ocsp_staple",
                format!("cannot read {}: {e}", p.display()),
            )
        })?;
        openssl::ocsp::OcspResponse::from_der(&der).map_err(|e| {
            ConfigError::new(
                file,
                "ocsp_staple",
                format!("{} is not a DER OCSP response: {e}", p.display()),
            )
        })?;
        staple.set(crate::revocation::ocsp::cert_fingerprint(own), der);
    }
    if cfg.ocsp_staple.is_some() {
        let fp = crate::revocation::ocsp::cert_fingerprint(own);
        b.set_status_callback(move |ssl| match staple.get_for(&fp) {
            Some(der) => ssl.set_ocsp_status(&der).map(|_| true),
            None => Ok(false),
        })
        .map_err(tls_err)?;
    }

    Ok(())
}

/// The client's check of the gateway's OCSP staple: present, signed by a trusted CA (or
/// its delegate), current, and `good` for the gateway's certificate.
pub(super) fn staple_is_good(
    ssl: &mut SslRef,
    cas: &[X509],
    store: &openssl::x509::store::X509Store,
) -> bool {
    let Some(der) = ssl.ocsp_status() else {
        tracing::warn!("gateway sent no OCSP staple and require_staple = true");
        return false;
    };
    let Some(leaf) = ssl.peer_certificate() else {
        return false;
    };
    let chain: Vec<X509> = ssl
        .peer_cert_chain()
        .map(|c| c.iter().map(|x| x.to_owned()).collect())
        .unwrap_or_default();
    let Some(issuer) = crate::revocation::ocsp::find_issuer(&leaf, chain.iter().chain(cas.iter()))
    else {
        tracing::warn!("issuer of the gateway certificate not found for the OCSP staple");
        return false;
    };
    match crate::revocation::ocsp::parse_response(der, &leaf, &issuer, store, &chain) {
        Ok((crate::revocation::ocsp::Verdict::Good, _)) => true,
        Ok((v, _)) => {
            tracing::warn!(status = ?v, "gateway's OCSP staple is not good");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "gateway's OCSP staple is not acceptable");
            false
        }
    }
}
