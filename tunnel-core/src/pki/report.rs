//! What `tunnel-server pki` commands report: the files they wrote, revocations, and the
//! aligned table of `pki list`.

use super::Entry;
use std::fmt;
use std::path::PathBuf;

/// A certificate written to the directory.
#[derive(Debug, Clone)]
pub struct Created {
    /// The certificate file.
    pub cert: PathBuf,
    /// The key file (mode 0600).
    pub key: PathBuf,
    /// Serial number (hex).
    pub serial: String,
    /// Subject, one line.
    pub subject: String,
    /// End of validity (Unix seconds).
    pub not_after: i64,
}

impl fmt::Display for Created {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "wrote {}", self.cert.display())?;
        writeln!(f, "wrote {} (mode 0600)", self.key.display())?;
        writeln!(f, "  subject:     {}", self.subject)?;
        writeln!(f, "  serial:      {}", self.serial)?;
        writeln!(f, "  valid until: {}", format_time(self.not_after))
    }
}

/// A CRL written to the directory.
#[derive(Debug, Clone)]
pub struct CrlWritten {
    /// The CRL file.
    pub path: PathBuf,
    /// How many certificates it lists.
    pub revoked: usize,
    /// Its next-update time (Unix seconds).
    pub next_update: i64,
}

impl fmt::Display for CrlWritten {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote {} ({} revoked certificate(s), next update {}; run `tunnel-server pki crl` \
             again before then)",
            self.path.display(),
            self.revoked,
            format_time(self.next_update)
        )
    }
}

/// The outcome of a revocation.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// Serial number (hex).
    pub serial: String,
    /// Subject, one line.
    pub subject: String,
    /// When it had already been revoked, if this was a repeat.
    pub already: Option<i64>,
    /// The CRL rewritten to include it.
    pub crl: CrlWritten,
}

impl fmt::Display for Revocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.already {
            Some(at) => writeln!(
                f,
                "{} ({}) was already revoked on {}",
                self.serial,
                self.subject,
                format_time(at)
            )?,
            None => writeln!(f, "revoked {} ({})", self.serial, self.subject)?,
        }
        write!(f, "{}", self.crl)
    }
}

/// The state of an issued certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Within its validity and not revoked.
    Valid,
    /// Revoked (whether or not it has also expired).
    Revoked,
    /// Past its end of validity.
    Expired,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Valid => "valid",
            Status::Revoked => "revoked",
            Status::Expired => "expired",
        })
    }
}

/// One line of `pki list`.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The index entry.
    pub entry: Entry,
    /// Its state now.
    pub status: Status,
}

/// `pki list` output: one certificate per line, columns aligned, with a header.
pub fn format_list(items: &[Listed]) -> String {
    let rows: Vec<[String; 4]> = items
        .iter()
        .map(|l| {
            [
                l.entry.serial.clone(),
                l.entry.subject.clone(),
                format_time(l.entry.not_after),
                l.status.to_string(),
            ]
        })
        .collect();
    let header = [
        "SERIAL".to_string(),
        "SUBJECT".to_string(),
        "NOT-AFTER".to_string(),
        "STATUS".to_string(),
    ];
    let mut width = [0usize; 3];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in width.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        out.push_str(&format!(
            "{:w0$}  {:w1$}  {:w2$}  {}\n",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2]
        ));
    }
    out
}

/// A Unix time as RFC 3339 UTC (`2026-11-27T11:44:00Z`).
pub fn format_time(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}
