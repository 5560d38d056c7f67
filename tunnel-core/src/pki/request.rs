//! What an operator asks `tunnel-server pki issue` and `revoke` for, validated into
//! certificate specs before the CA directory is touched.

use super::names::{check_attr, check_days, check_file_stem, check_san, parse_ip};
/// Default validity of an issued certificate, in days.
pub const DEFAULT_CERT_DAYS: u32 = 365;
use super::{CertSpec, KeyType, PkiError};
use std::path::PathBuf;

/// What an issued certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKind {
    /// A gateway (EKU serverAuth); its name is also a SAN.
    Server,
    /// A client (EKU clientAuth); its name is the subject CN.
    Client,
}

/// A request to issue a certificate, as typed on the command line.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// Server or client.
    pub kind: LeafKind,
    /// Server NAME or client CN; also the file stem (`DIR/NAME.crt`).
    pub name: String,
    /// Extra SAN DNS names (server).
    pub dns: Vec<String>,
    /// Extra SAN IP addresses (server).
    pub ip: Vec<String>,
    /// Subject O (client).
    pub o: Vec<String>,
    /// Subject OU (client).
    pub ou: Vec<String>,
    /// SAN URIs (client).
    pub uri: Vec<String>,
    /// SAN emails (client).
    pub email: Vec<String>,
    /// Validity in days, from now.
    pub days: u32,
    /// Key algorithm.
    pub key_type: KeyType,
}

impl IssueRequest {
    /// A request with the defaults and no extra attributes.
    pub fn new(kind: LeafKind, name: &str) -> IssueRequest {
        IssueRequest {
            kind,
            name: name.to_string(),
            dns: vec![],
            ip: vec![],
            o: vec![],
            ou: vec![],
            uri: vec![],
            email: vec![],
            days: DEFAULT_CERT_DAYS,
            key_type: KeyType::default(),
        }
    }

    /// Validates every value and builds the certificate spec.
    pub(crate) fn to_spec(&self) -> Result<CertSpec, PkiError> {
        let flag = match self.kind {
            LeafKind::Server => "--server",
            LeafKind::Client => "--client",
        };
        check_file_stem(flag, &self.name)?;
        check_attr(flag, &self.name)?;
        check_days("--days", self.days)?;
        let mut spec = match self.kind {
            LeafKind::Server => CertSpec::server(&self.name),
            LeafKind::Client => CertSpec::client(&self.name),
        };
        for d in &self.dns {
            check_san("--dns", d)?;
            if !spec.dns.contains(d) {
                spec.dns.push(d.clone());
            }
        }
        for i in &self.ip {
            let ip = parse_ip("--ip", i)?;
            if !spec.ip.contains(&ip) {
                spec.ip.push(ip);
            }
        }
        for (flag, values) in [("--o", &self.o), ("--ou", &self.ou)] {
            for v in values {
                check_attr(flag, v)?;
            }
        }
        for (flag, values) in [("--uri", &self.uri), ("--email", &self.email)] {
            for v in values {
                check_san(flag, v)?;
            }
        }
        spec.o = self.o.clone();
        spec.ou = self.ou.clone();
        spec.uri = self.uri.clone();
        spec.email = self.email.clone();
        spec.start_days = 0;
        spec.days = self.days;
        spec.key_type = self.key_type;
        Ok(spec)
    }
}

/// Which certificate to revoke.
#[derive(Debug, Clone)]
pub enum RevokeTarget {
    /// By serial number (hex, as `pki list` shows it).
    Serial(String),
    /// By certificate file (PEM).
    Cert(PathBuf),
}
