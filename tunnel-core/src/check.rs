//! `tunnel-server check`: validate a configuration completely (including certificates, key
//! match, CA and CRLs) and, with `--explain CERT`, say which backends a certificate may reach.

use crate::config::{ConfigError, ServerConfig};
use crate::identity::Identity;
use crate::server::Snapshot;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509StoreContext, X509};
use std::fmt::Write;
use std::path::Path;

/// Validates `path` and returns a human summary; with `explain`, also the backends the
/// certificate in that file may reach and the rule allowing each.
pub fn check(path: &Path, explain: Option<&Path>) -> Result<String, ConfigError> {
    let cfg = ServerConfig::load(path)?;
    let snap = Snapshot::new(cfg, Default::default())?;
    let cfg = &snap.cfg;
    let mut out = String::new();
    let _ = writeln!(out, "{}: OK", path.display());
    let listen: Vec<String> = cfg.listen.iter().map(|a| a.to_string()).collect();
    let _ = writeln!(out, "  listen: {}", listen.join(", "));
    let _ = writeln!(
        out,
        "  certificate: {} (expires {})",
        crate::identity::one_line_name(snap.tls.cert.subject_name()),
        snap.tls.cert.not_after()
    );
    let _ = writeln!(
        out,
        "  client CAs: {}, CRLs: {}",
        snap.tls.cas.len(),
        snap.tls.crls.len()
    );
    for b in &cfg.backends {
        let default = if cfg.policy.default_backend() == Some(b.name.as_str()) {
            " (default)"
        } else {
            ""
        };
        let _ = writeln!(out, "  backend {}{} -> {}", b.name, default, b.address);
    }
    if let Some(cert_path) = explain {
        let pem = std::fs::read(cert_path).map_err(|e| {
            ConfigError::new(cert_path, "", format!("cannot read certificate: {e}"))
        })?;
        // The leaf first; any further certificates are the chain the client would send.
        let mut certs = X509::stack_from_pem(&pem)
            .map_err(|e| ConfigError::new(cert_path, "", format!("not a PEM certificate: {e}")))?;
        if certs.is_empty() {
            return Err(ConfigError::new(cert_path, "", "holds no PEM certificate"));
        }
        let cert = certs.remove(0);
        let id = Identity::from_cert(&cert);
        let _ = writeln!(out, "\n{}: {}", cert_path.display(), id);
        let _ = writeln!(out, "  sha256: {}", id.sha256);
        match verify_against(&snap.tls.cas, &cert, &certs) {
            Ok(()) => {}
            Err(why) => {
                let _ = writeln!(
                    out,
                    "  WARNING: the gateway would refuse this certificate: {why}"
                );
            }
        }
        if snap.tls.crls.is_revoked(&cert) {
            let _ = writeln!(
                out,
                "  WARNING: this certificate is revoked by a configured CRL"
            );
        }
        let allowed = cfg.policy.explain(&id);
        if allowed.is_empty() {
            let _ = writeln!(out, "  may reach no backend");
        }
        for (backend, rule) in allowed {
            let _ = writeln!(out, "  may reach {backend}: allowed by {rule}");
        }
    }
    Ok(out)
}

fn verify_against(cas: &[X509], cert: &X509, sent: &[X509]) -> Result<(), String> {
    let mut sb = X509StoreBuilder::new().map_err(|e| e.to_string())?;
    for ca in cas {
        sb.add_cert(ca.clone()).map_err(|e| e.to_string())?;
    }
    let store = sb.build();
    let mut chain = openssl::stack::Stack::new().map_err(|e| e.to_string())?;
    for c in sent {
        chain.push(c.clone()).map_err(|e| e.to_string())?;
    }
    let mut ctx = X509StoreContext::new().map_err(|e| e.to_string())?;
    ctx.init(&store, cert, &chain, |c| {
        let ok = c.verify_cert()?;
        Ok(if ok {
            Ok(())
        } else {
            Err(c.error().error_string().to_string())
        })
    })
    .map_err(|e| e.to_string())?
}
