//! `tunnel-server check`: validate a configuration completely (including certificates, key
//! match, CA and CRLs) and, with `--explain CERT`, say which backends a certificate may reach.

use crate::authz::identity::Identity;
use crate::config::{ConfigError, ServerConfig};
use crate::gateway::Snapshot;
use openssl::x509::X509;
use std::fmt::Write;
use std::path::Path;

/// Validates `path` and returns a human summary; with `explain`, also the backends the
/// certificate in that file may reach and the rule allowing each.
pub fn check(path: &Path, explain: Option<&Path>) -> Result<String, ConfigError> {
    let cfg = ServerConfig::load(path)?;
    let snap = Snapshot::new(cfg, Default::default(), None)?;
    let mut out = String::new();
    write_summary(&mut out, path, &snap);
    write_warnings(&mut out, &snap.cfg);
    if let Some(cert_path) = explain {
        write_explanation(&mut out, &snap, cert_path)?;
    }
    Ok(out)
}

/// The configuration at a glance: listeners, own certificate, CAs and CRLs, backends.
fn write_summary(out: &mut String, path: &Path, snap: &Snapshot) {
    let cfg = &snap.cfg;
    let _ = writeln!(out, "{}: OK", path.display());
    let listen: Vec<String> = cfg.listen.iter().map(|a| a.to_string()).collect();
    let _ = writeln!(out, "  listen: {}", listen.join(", "));
    let _ = writeln!(
        out,
        "  certificate: {} (expires {})",
        crate::authz::identity::one_line_name(snap.tls.cert.subject_name()),
        snap.tls.cert.not_after()
    );
    let _ = writeln!(
        out,
        "  client CAs: {}, CRLs: {}",
        snap.tls.cas.len(),
        snap.tls.crls.len()
    );
    for line in crl_coverage_lines(snap) {
        let _ = writeln!(out, "  {line}");
    }
    for b in &cfg.backends {
        let default = if cfg.policy.default_backend() == Some(b.name.as_str()) {
            " (default)"
        } else {
            ""
        };
        let _ = writeln!(out, "  backend {}{} -> {}", b.name, default, b.address);
    }
}

/// `--explain CERT`: the certificate's identity, whether the gateway would refuse it
/// whatever the rules say, and every backend it may reach with the rule allowing it.
fn write_explanation(
    out: &mut String,
    snap: &Snapshot,
    cert_path: &Path,
) -> Result<(), ConfigError> {
    let cfg = &snap.cfg;
    let (cert, chain) = read_explained(cert_path)?;
    let id = Identity::from_cert(&cert);
    let _ = writeln!(out, "\n{}: {}", cert_path.display(), id);
    let _ = writeln!(out, "  sha256: {}", id.sha256);
    match snap.tls.reverify(&cert, &chain, cfg.crl_expired) {
        Ok(_) => {}
        Err(crate::gateway::refused::Refused::Revoked(_)) => {
            let _ = writeln!(
                out,
                "  WARNING: this certificate is revoked by a configured CRL"
            );
        }
        Err(why) => {
            let _ = writeln!(
                out,
                "  WARNING: the gateway would refuse this certificate: {why}"
            );
        }
    }
    if let Some(why) = cfg.policy.identity_problem(&id) {
        let _ = writeln!(
            out,
            "  WARNING: the gateway would refuse this certificate: {why}"
        );
    }
    let allowed = cfg.policy.explain(&id);
    if allowed.is_empty() {
        let _ = writeln!(out, "  may reach no backend");
    }
    for (backend, rule) in allowed {
        let _ = writeln!(out, "  may reach {backend}: allowed by {rule}");
    }
    Ok(())
}

/// The certificate to explain (the file's first) and the rest of the file, the chain the
/// client would send.
fn read_explained(cert_path: &Path) -> Result<(X509, Vec<X509>), ConfigError> {
    let pem = std::fs::read(cert_path)
        .map_err(|e| ConfigError::new(cert_path, "", format!("cannot read certificate: {e}")))?;
    let mut certs = X509::stack_from_pem(&pem)
        .map_err(|e| ConfigError::new(cert_path, "", format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::new(cert_path, "", "holds no PEM certificate"));
    }
    let cert = certs.remove(0);
    Ok((cert, certs))
}

/// One line per CA of `client_ca` without a CRL (and what that means under `crl_check`),
/// and one per CRL of an intermediate CA; also logged at start and on reload.
pub fn crl_coverage_lines(snap: &Snapshot) -> Vec<String> {
    let crls = &snap.tls.crls;
    let effect = match crls.coverage() {
        crate::config::CrlCoverage::Chain => {
            "certificates it issued are refused (crl_check = \"chain\")"
        }
        crate::config::CrlCoverage::Leaf => {
            "client certificates it issued are refused, CA certificates pass (crl_check = \"leaf\")"
        }
        crate::config::CrlCoverage::Available => {
            "its certificates are not checked (crl_check = \"available\")"
        }
    };
    let mut out: Vec<String> = crls
        .cas_without_crl(&snap.tls.cas)
        .into_iter()
        .map(|ca| format!("no CRL for CA {ca}: {effect}"))
        .collect();
    for issuer in crls.intermediate_issuers(&snap.tls.cas) {
        out.push(format!(
            "CRL of intermediate CA {issuer}: verified against the intermediate in each client's chain"
        ));
    }
    out
}

/// Settings that are valid but probably not what the operator meant.
fn write_warnings(out: &mut String, cfg: &crate::config::ServerConfig) {
    for (key, rule) in cfg.policy.broad_rules() {
        let _ = writeln!(
            out,
            "  WARNING: {key}: {rule} matches every client that has the attribute; write \"any\" if that is meant, or a narrower pattern"
        );
    }
    if let Some(m) = cfg.metrics {
        if !m.ip().is_loopback() && cfg.metrics_allow.is_empty() {
            let _ = writeln!(
                out,
                "  WARNING: metrics: {m} is not a loopback address: anyone who can reach it reads the metrics; bind 127.0.0.1 or set metrics_allow"
            );
        }
    }
}
