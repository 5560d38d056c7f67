//! `tunnel-server signer list|revoke|unblock|backup --config signer.toml`: the operator's
//! commands on the signer's store. They open the store the running signers use (SQLite's
//! locking and PostgreSQL's transactions make that safe) and change it; `revoke` publishes
//! the new CRL in the store, which every signer serves at `/v1/crl` from then on
//! (`super::crl`).

use super::SignerConfig;
use crate::exit::{Exit, StartError};
use crate::signin::store::{Blocked, Issued, Location, Selector, Store};
use crate::util::time::unix_now;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// One certificate as `signer list --json` and `signer revoke --json` print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedCert {
    /// Serial, upper-case hex.
    pub serial: String,
    /// The email (CN and SAN).
    pub email: String,
    /// The provider's `sub` (absent for certificates imported from the pki index).
    pub sub: Option<String>,
    /// Groups (OUs).
    pub groups: Vec<String>,
    /// SHA-256 of the public key (SubjectPublicKeyInfo), hex.
    pub key_sha256: Option<String>,
    /// Start of validity, Unix seconds.
    pub not_before: Option<i64>,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// The signer that issued it (`HOST:PID`), or `import:PATH`.
    pub issued_by: String,
    /// When it was revoked, Unix seconds.
    pub revoked_at: Option<i64>,
    /// Why.
    pub revocation_reason: Option<String>,
}

impl From<Issued> for ListedCert {
    fn from(i: Issued) -> ListedCert {
        ListedCert {
            serial: i.serial,
            email: i.email,
            sub: i.sub,
            groups: i.groups,
            key_sha256: i.key_sha256,
            not_before: i.not_before,
            not_after: i.not_after,
            issued_by: i.issued_by,
            revoked_at: i.revoked_at,
            revocation_reason: i.revocation_reason,
        }
    }
}

/// Which identity or certificate a command is about.
#[derive(Debug, Clone)]
pub enum Target {
    /// `--email`.
    Email(String),
    /// `--sub`.
    Sub(String),
    /// `--serial`.
    Serial(String),
}

impl Target {
    fn selector(&self) -> Selector {
        match self {
            Target::Email(e) => Selector::Email(e.clone()),
            Target::Sub(s) => Selector::Sub(s.clone()),
            Target::Serial(s) => Selector::Serial(s.clone()),
        }
    }

    /// The identity to block: none for a serial (a lost device, not a person to stop).
    fn identity(&self) -> Option<Blocked> {
        match self {
            Target::Email(e) => Some(Blocked::Email(e.clone())),
            Target::Sub(s) => Some(Blocked::Sub(s.clone())),
            Target::Serial(_) => None,
        }
    }
}

/// Opens the store of `config` for a command.
async fn store(config: &Path) -> Result<Store, StartError> {
    let cfg = SignerConfig::load(config)?;
    open(&cfg).await
}

async fn open(cfg: &SignerConfig) -> Result<Store, StartError> {
    // A command must not create the store: run as root, it would leave a file the signer's
    // user cannot open.
    if let Location::Sqlite(path) = &cfg.store {
        if !path.exists() {
            return Err(StartError::Usage(format!(
                "{}: store: {} does not exist yet; start the signer once (it creates the store), then run the command",
                cfg.file.display(),
                path.display()
            )));
        }
    }
    super::state::open_only(cfg).await.map_err(|e| {
        if e.is_config() {
            StartError::Usage(e.to_string())
        } else {
            StartError::Unavailable(e.to_string())
        }
    })
}

fn failed(what: &str, e: impl std::fmt::Display) -> StartError {
    StartError::Unavailable(format!("tunnel-server signer {what}: {e}"))
}

/// `signer list [--email E] [--all] [--json]`: the recorded certificates (unexpired ones
/// unless `all`).
pub async fn list(
    config: &Path,
    email: Option<String>,
    all: bool,
    json: bool,
) -> Result<Exit, StartError> {
    let store = store(config).await?;
    let which = email.map(Selector::Email);
    let rows = store
        .list(which.as_ref(), all, unix_now())
        .await
        .map_err(|e| failed("list", e))?;
    let rows: Vec<ListedCert> = rows.into_iter().map(ListedCert::from).collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(|e| failed("list", e))?
        );
    } else {
        print!("{}", table(&rows, unix_now()));
    }
    Ok(Exit::Success)
}

/// The text form of a list: serial, email, not-after, status.
fn table(rows: &[ListedCert], now: i64) -> String {
    let mut out = format!(
        "{:<34} {:<32} {:<20} {}\n",
        "SERIAL", "EMAIL", "NOT AFTER", "STATUS"
    );
    for r in rows {
        let status = match (&r.revoked_at, &r.revocation_reason) {
            (Some(_), Some(why)) => format!("revoked ({why})"),
            (Some(_), None) => "revoked".into(),
            (None, _) if r.not_after < now => "expired".into(),
            (None, _) => "valid".into(),
        };
        out += &format!(
            "{:<34} {:<32} {:<20} {status}\n",
            r.serial,
            r.email,
            when(r.not_after)
        );
    }
    out
}

/// `signer revoke (--email|--sub|--serial) [--reason R] [--block-for D]`: revokes every
/// matching unexpired certificate and, for an email or a sub, blocks further issuance to
/// that identity (for `block_for`, or until `unblock`). Exit 0 when a certificate was
/// revoked, 1 when none matched (the block is set all the same).
pub async fn revoke(
    config: &Path,
    target: Target,
    reason: Option<String>,
    block_for: Option<Duration>,
    json: bool,
) -> Result<Exit, StartError> {
    let cfg = SignerConfig::load(config)?;
    // The CA is read first: a revocation is published with it.
    let ca = super::user_ca(&cfg).map_err(StartError::Usage)?;
    let store = open(&cfg).await?;
    let now = unix_now();
    let reason = reason.unwrap_or_else(|| "revoked by the operator".into());
    let revoked = store
        .revoke(&target.selector(), &reason, now)
        .await
        .map_err(|e| failed("revoke", e))?;
    let crl = super::crl::publish(&ca, &store, cfg.crl_lifetime)
        .await
        .map_err(|e| failed("revoke", e))?;
    let note = match target.identity() {
        Some(who) => Some(block(&store, &who, block_for, &reason, now).await?),
        None => None,
    };
    let rows: Vec<ListedCert> = revoked.into_iter().map(ListedCert::from).collect();
    tracing::info!(target: "audit", result = "revoked", count = rows.len(), reason = %reason, "certificates revoked");
    print_revoked(&rows, json)?;
    if let Some(n) = note {
        eprintln!("tunnel-server signer revoke: {n}");
    }
    if rows.is_empty() {
        eprintln!(
            "tunnel-server signer revoke: no unexpired, unrevoked certificate matched; nothing was revoked"
        );
        return Ok(Exit::Failure);
    }
    eprintln!(
        "tunnel-server signer revoke: {} certificate(s) revoked; CRL number {} published, which the signers serve at /v1/crl",
        rows.len(),
        crl.number
    );
    Ok(Exit::Success)
}

/// Blocks `who` from signing in for `block_for` (none: until `unblock`); says so.
async fn block(
    store: &Store,
    who: &Blocked,
    block_for: Option<Duration>,
    reason: &str,
    now: i64,
) -> Result<String, StartError> {
    let until = block_for.map(|d| now.saturating_add(d.as_secs() as i64));
    store
        .block(who, until, reason, now)
        .await
        .map_err(|e| failed("revoke", e))?;
    Ok(match until {
        Some(t) => format!("{} may not sign in until {}", shown(who), when(t)),
        None => format!(
            "{} may not sign in until `tunnel-server signer unblock`",
            shown(who)
        ),
    })
}

/// What `revoke` revoked: JSON, or a line per certificate.
fn print_revoked(rows: &[ListedCert], json: bool) -> Result<(), StartError> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(rows).map_err(|e| failed("revoke", e))?
        );
    } else {
        for r in rows {
            println!(
                "revoked {} {} (valid until {})",
                r.serial,
                r.email,
                when(r.not_after)
            );
        }
    }
    Ok(())
}

/// Unix seconds as RFC 3339 (UTC).
fn when(t: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

fn shown(who: &Blocked) -> String {
    match who {
        Blocked::Email(e) => e.clone(),
        Blocked::Sub(s) => format!("sub {s}"),
    }
}

/// `signer unblock (--email|--sub)`: exit 0 when a block was lifted, 1 when there was none.
pub async fn unblock(config: &Path, target: Target) -> Result<Exit, StartError> {
    let Some(who) = target.identity() else {
        return Err(StartError::Usage(
            "tunnel-server signer unblock: give --email or --sub".into(),
        ));
    };
    let store = store(config).await?;
    let lifted = store
        .unblock(&who)
        .await
        .map_err(|e| failed("unblock", e))?;
    if lifted {
        println!("{} may sign in again", shown(&who));
        Ok(Exit::Success)
    } else {
        eprintln!(
            "tunnel-server signer unblock: {} was not blocked",
            shown(&who)
        );
        Ok(Exit::Failure)
    }
}

/// `signer backup --to FILE`: a consistent copy of an SQLite store, taken while signers run.
pub async fn backup(config: &Path, to: &Path) -> Result<Exit, StartError> {
    let store = store(config).await?;
    store.backup_to(to).await.map_err(|e| failed("backup", e))?;
    println!("{} backed up to {}", store.name(), to.display());
    Ok(Exit::Success)
}
