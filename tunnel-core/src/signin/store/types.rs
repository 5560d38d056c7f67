//! The public values of the store: where it is ([`Location`], the `store` setting), the
//! certificates recorded ([`NewIssuance`], [`Issued`]), how to select and block people
//! ([`Selector`], [`Blocked`]), the CRL's entries and the CRL published ([`Revoked`],
//! [`PublishedCrl`]), and what a call did ([`Recorded`], [`Imported`]). All are re-exported
//! from [`super`], as `crate::signin::store::…`.

use super::{pg_settings, ReplayKey, StoreError, DEFAULT_FILE};
use std::path::{Path, PathBuf};

/// Where the store is: the `store` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `sqlite:PATH`.
    Sqlite(PathBuf),
    /// `postgresql://…` (or `postgres://…`), as written.
    Postgres(String),
}

impl Location {
    /// Reads a `store` setting: `sqlite:PATH` or a `postgresql://` URL.
    pub fn parse(s: &str) -> Result<Location, StoreError> {
        if let Some(path) = s.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::Config {
                    store: s.to_string(),
                    problem:
                        "no file after `sqlite:`; write sqlite:/var/lib/tunnel-signer/signer.db"
                            .into(),
                });
            }
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgresql://") || s.starts_with("postgres://") {
            return Ok(Location::Postgres(s.to_string()));
        }
        Err(StoreError::Config {
            store: pg_settings::without_password(s),
            problem: "not a store: write sqlite:PATH, or postgresql://USER@HOST:PORT/DB?sslmode=verify-full (the password in password_file)".into(),
        })
    }

    /// The default: `STATE_DIR/signer.db`.
    pub fn default_in(state_dir: &Path) -> Location {
        Location::Sqlite(state_dir.join(DEFAULT_FILE))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            Location::Postgres(url) => f.write_str(&pg_settings::without_password(url)),
        }
    }
}

/// A certificate to record, as the signer issues it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIssuance {
    /// Serial number, hex (any case, optional `0x` and colons; stored upper-case as the pki
    /// index writes it).
    pub serial: String,
    /// The token's email (the certificate's CN and SAN).
    pub email: String,
    /// The provider's `sub`.
    pub sub: String,
    /// The groups written as OUs.
    pub groups: Vec<String>,
    /// SHA-256 of the certificate's SubjectPublicKeyInfo (DER), lower-case hex.
    pub key_sha256: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// The signer instance that issued it (its name, or host name).
    pub issued_by: String,
    /// The replay key of the token it was issued for.
    pub token: ReplayKey,
}

/// A recorded certificate. Fields that an import from the JSON pki index cannot know are
/// `None` there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// Serial number, upper-case hex.
    pub serial: String,
    /// Email (for an imported entry: its subject's CN, which is the email for the signer's
    /// certificates).
    pub email: String,
    /// The provider's `sub`.
    pub sub: Option<String>,
    /// Groups (OUs).
    pub groups: Vec<String>,
    /// SHA-256 of the SubjectPublicKeyInfo, lower-case hex.
    pub key_sha256: Option<String>,
    /// Start of validity, Unix seconds.
    pub not_before: Option<i64>,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// The signer instance that issued it, or `import:PATH`.
    pub issued_by: String,
    /// The replay key of the token it was issued for.
    pub token: Option<ReplayKey>,
    /// When it was revoked, Unix seconds.
    pub revoked_at: Option<i64>,
    /// Why it was revoked.
    pub revocation_reason: Option<String>,
}

impl From<&NewIssuance> for Issued {
    fn from(n: &NewIssuance) -> Issued {
        Issued {
            serial: n.serial.clone(),
            email: n.email.clone(),
            sub: Some(n.sub.clone()),
            groups: n.groups.clone(),
            key_sha256: Some(n.key_sha256.clone()),
            not_before: Some(n.not_before),
            not_after: n.not_after,
            issued_by: n.issued_by.clone(),
            token: Some(n.token),
            revoked_at: None,
            revocation_reason: None,
        }
    }
}

/// What [`Store::record_issuance`](super::Store::record_issuance) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded and committed: the certificate may be handed out.
    Stored,
    /// A certificate with this serial is already recorded (nothing was changed): draw a new
    /// serial and try again.
    SerialTaken,
    /// A certificate was already recorded for this token (nothing was changed): refuse.
    TokenUsed,
}

/// Which certificates: for [`Store::list`](super::Store::list) and [`Store::revoke`](super::Store::revoke).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// By email, ASCII case ignored.
    Email(String),
    /// By the provider's `sub`.
    Sub(String),
    /// By serial (any case, optional `0x` and colons).
    Serial(String),
}

/// Whom to block: an identity, not a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// An email, ASCII case ignored.
    Email(String),
    /// A provider `sub`.
    Sub(String),
}

/// A revoked certificate not yet expired: one CRL entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// Serial number, upper-case hex.
    pub serial: String,
    /// When, Unix seconds.
    pub revoked_at: i64,
    /// Why, as given to [`Store::revoke`](super::Store::revoke) (`None` for revocations imported from the pki
    /// index).
    pub reason: Option<String>,
}

/// The user CA's CRL as published in the store, for every signer to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedCrl {
    /// Its CRL Number (from [`Store::next_crl_number`](super::Store::next_crl_number)).
    pub number: u64,
    /// The CRL, DER.
    pub der: Vec<u8>,
    /// When it was built, Unix seconds.
    pub built_at: i64,
}

/// What [`Store::import_json_index`](super::Store::import_json_index) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// This index was imported before; nothing was done.
    AlreadyDone,
    /// Imported now.
    Done {
        /// Entries added.
        added: usize,
        /// Entries whose serial was already in the store (left as they were).
        skipped: usize,
    },
}
