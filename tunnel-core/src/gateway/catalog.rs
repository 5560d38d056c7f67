//! The catalog: on its normal port, after the usual mTLS verification (chain, CRL, OCSP),
//! the gateway tells a client which backends its identity may reach, and by which rule.
//! It never lists a backend the identity may not use.
//!
//! A catalog request is a TLS connection with the reserved SNI [`SNI`] (a `.invalid` name,
//! RFC 6761, so it can never be a backend) offering the ALPN protocol [`ALPN`]. The SNI is
//! needed because OpenSSL asks for the server name before it selects ALPN, and the gateway
//! refuses unknown names there; the ALPN names the protocol and its version. The answer is
//! one JSON document, then the gateway closes: `{"identity": …, "backends": [{"name", "rule"}]}`.

use crate::authz::identity::Identity;
use crate::authz::policy::Decision;
use crate::config::ServerConfig;
use crate::tls::ClientTls;
use serde::{Deserialize, Serialize};
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

// The handshake side (the reserved SNI, the ALPN name and choice) is TLS's: tls::catalog_alpn.
pub use crate::tls::catalog_alpn::{is_request, select_alpn, selected, ALPN, ALPN_WIRE, SNI};
/// Largest catalog answer a client reads.
const MAX_ANSWER: u64 = 1024 * 1024;

/// One backend in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Backend name (the SNI to send).
    pub name: String,
    /// The allow rule that matches this identity.
    pub rule: String,
}

/// The catalog answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// The identity the gateway saw (subject).
    pub identity: String,
    /// Backends it may reach.
    pub backends: Vec<Entry>,
}

/// The backends `id` may reach under `cfg`.
pub fn list(cfg: &ServerConfig, id: &Identity) -> Catalog {
    let backends = cfg
        .backends
        .iter()
        .filter_map(|b| match cfg.policy.authorize(Some(&b.name), id) {
            Decision::Allow { backend, rule } => Some(Entry {
                name: backend,
                rule,
            }),
            _ => None,
        })
        .collect();
    Catalog {
        identity: id.subject.clone(),
        backends,
    }
}

/// Answers a catalog request on an established, verified connection; returns the number of
/// backends listed.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    tls: &mut S,
    cfg: &ServerConfig,
    id: &Identity,
) -> std::io::Result<usize> {
    let catalog = list(cfg, id);
    let mut body = serde_json::to_vec(&catalog).map_err(std::io::Error::other)?;
    body.push(b'\n');
    tls.write_all(&body).await?;
    tls.flush().await?;
    tls.shutdown().await?;
    Ok(catalog.backends.len())
}

/// Asks the gateway at `server` for the catalog, with the agent's TLS settings.
pub async fn fetch(tls: &ClientTls, server: &str) -> Result<Catalog, String> {
    let tcp = tokio::net::TcpStream::connect(server)
        .await
        .map_err(|e| format!("cannot connect to gateway {server}: {e}"))?;
    let mut ssl = tls.new_ssl(SNI).map_err(|e| e.to_string())?;
    ssl.set_alpn_protos(ALPN_WIRE).map_err(|e| e.to_string())?;
    let mut s = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
    Pin::new(&mut s).connect().await.map_err(|e| {
        let v = s.ssl().verify_result();
        if v.as_raw() != 0 {
            format!(
                "gateway certificate rejected: {} (check ca and server_name)",
                v.error_string()
            )
        } else {
            format!("TLS handshake with gateway {server} failed: {e}")
        }
    })?;
    if s.ssl().selected_alpn_protocol() != Some(ALPN) {
        return Err(format!(
            "gateway {server} does not offer the catalog (an older version?)"
        ));
    }
    let mut raw = Vec::new();
    (&mut s)
        .take(MAX_ANSWER)
        .read_to_end(&mut raw)
        .await
        .map_err(|e| format!("gateway {server} refused the catalog request ({e}); is the certificate still valid?"))?;
    serde_json::from_slice(&raw).map_err(|e| format!("gateway {server}: not a catalog answer: {e}"))
}

/// The catalog as a table for `tunnel-client ls`.
pub fn format(c: &Catalog) -> String {
    let width = c
        .backends
        .iter()
        .map(|b| b.name.len())
        .max()
        .unwrap_or(0)
        .max(7);
    let mut out = format!("{:width$}  ALLOWED BY\n", "BACKEND");
    for b in &c.backends {
        out += &format!("{:width$}  {}\n", b.name, b.rule);
    }
    if c.backends.is_empty() {
        out += "(no backend allows this identity)\n";
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_wire_form_is_length_prefixed() {
        assert_eq!(super::ALPN_WIRE[0] as usize, super::ALPN.len());
        assert_eq!(&super::ALPN_WIRE[1..], super::ALPN);
    }
}
