//! A CA kept in a directory, behind `tunnel-server pki`: `ca.crt` and `ca.key` (0600), one
//! `NAME.crt`/`NAME.key` pair per issued certificate, `index.json` (what was issued and
//! revoked) and `crl.pem`. Every command that changes the directory holds its exclusive
//! lock for the whole read-modify-write, and every file is written through a temporary
//! file and a rename, so concurrent invocations neither lose updates nor expose half files.

use super::index::{write_atomic, DirLock, Index, INDEX_FILE};
use super::names::{check_attr, check_days, serial_of};
use super::{new_ca_with, new_leaf, Entry, Issued, KeyType};
use super::{normalize_serial, CertSpec, PkiError};
use crate::util::time::{asn1_to_unix, unix_now};
use openssl::pkey::PKey;
use openssl::x509::X509;
use std::path::{Path, PathBuf};

pub use super::report::{
    format_list, format_time, Created, CrlWritten, Listed, Revocation, Status,
};
pub use super::request::{IssueRequest, LeafKind, RevokeTarget};

/// The CA certificate's file name.
pub const CA_CERT: &str = "ca.crt";
/// The CA key's file name.
pub const CA_KEY: &str = "ca.key";
/// The CRL's file name.
pub const CRL_FILE: &str = "crl.pem";
/// Default subject CN of a new CA.
pub const DEFAULT_CA_NAME: &str = "Example Tunnel CA";
/// Default validity of a new CA, in days.
pub const DEFAULT_CA_DAYS: u32 = 3650;
pub use super::request::DEFAULT_CERT_DAYS;
/// Default validity of a CRL (its next-update time), in days.
pub const DEFAULT_CRL_DAYS: u32 = 30;
/// How often to draw a new serial when a random one is already in the index.
const SERIAL_TRIES: usize = 8;

/// A CA directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The CA kept in `dir` (which need not exist before [`Store::init`]).
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Creates the directory (mode 0700) if needed and a new CA in it; refuses to replace an
    /// existing CA.
    pub fn init(&self, name: &str, days: u32, kt: KeyType) -> Result<Created, PkiError> {
        check_attr("--name", name)?;
        check_days("--days", days)?;
        create_dir(&self.dir)?;
        self.secure()?;
        let _lock = DirLock::exclusive(&self.dir)?;
        for file in [CA_CERT, CA_KEY] {
            let p = self.path(file);
            if p.symlink_metadata().is_ok() {
                return Err(PkiError::file(
                    &p,
                    format!(
                        "a CA already exists in {}; refusing to overwrite it (certificates it \
                         issued would stop working). Use another --dir, or remove ca.crt, ca.key \
                         and index.json yourself to start over",
                        self.dir.display()
                    ),
                ));
            }
        }
        if !Index::load(&self.dir)?.certs.is_empty() {
            return Err(PkiError::file(
                &self.path(INDEX_FILE),
                "records certificates of an earlier CA; move it away or use another --dir",
            ));
        }
        let ca = new_ca_with(name, days, kt).map_err(PkiError::crypto("creating the CA"))?;
        let created = self.write_pair(&ca, CA_CERT, CA_KEY)?;
        let empty = Index::load(&self.dir)?;
        if let Err(e) = empty.save(&self.dir) {
            let _ = std::fs::remove_file(&created.cert);
            let _ = std::fs::remove_file(&created.key);
            return Err(e);
        }
        Ok(created)
    }

    /// Issues a server or client certificate into `DIR/NAME.crt` and `DIR/NAME.key`.
    pub fn issue(&self, req: &IssueRequest) -> Result<Created, PkiError> {
        let spec = req.to_spec()?;
        let _lock = self.lock_existing()?;
        let ca = self.load_ca()?;
        self.check_ca_current(&ca)?;
        let (crt, key) = (format!("{}.crt", req.name), format!("{}.key", req.name));
        self.check_names_free(&crt, &key)?;
        let mut index = Index::load(&self.dir)?;
        let leaf = self.issue_new_serial(&ca, &spec, &index, &req.name)?;
        let created = self.write_pair(&leaf, &crt, &key)?;
        index.certs.push(Entry {
            serial: created.serial.clone(),
            name: req.name.clone(),
            subject: created.subject.clone(),
            not_after: created.not_after,
            revoked_at: None,
        });
        if let Err(e) = index.save(&self.dir) {
            // Without an index entry the certificate could not be listed or revoked by
            // serial: take it back.
            let _ = std::fs::remove_file(&created.cert);
            let _ = std::fs::remove_file(&created.key);
            return Err(e);
        }
        Ok(created)
    }

    /// Records certificates that were issued with this CA's key outside this directory (by
    /// the signer) in the index, with one locked read-modify-write for the whole batch, so
    /// that `pki list` and `pki revoke --serial` know them. Each is recorded under its
    /// `name` (what `pki list` shows). Returns, per certificate, false when the index already
    /// held its serial (nothing recorded; the caller draws a new one).
    pub fn record_issued(&self, certs: &[(X509, String)]) -> Result<Vec<bool>, PkiError> {
        let _lock = DirLock::exclusive(&self.dir)?;
        let mut index = Index::load(&self.dir)?;
        let mut added = Vec::with_capacity(certs.len());
        for (cert, name) in certs {
            let serial = serial_of(cert)?;
            if index.contains(&serial) {
                added.push(false);
                continue;
            }
            let mut entry = entry_for(cert, Path::new(name), &serial)?;
            entry.name = name.clone();
            index.certs.push(entry);
            added.push(true);
        }
        if added.iter().any(|a| *a) {
            index.save(&self.dir)?;
        }
        Ok(added)
    }

    /// Revokes a certificate and rewrites the CRL (valid for `crl_days`), so that the
    /// revocation takes effect once the gateway re-reads it.
    pub fn revoke(&self, target: &RevokeTarget, crl_days: u32) -> Result<Revocation, PkiError> {
        check_days("--crl-days", crl_days)?;
        let (serial, cert) = match target {
            RevokeTarget::Serial(s) => (normalize_serial(s)?, None),
            RevokeTarget::Cert(p) => {
                let cert = read_cert(p)?;
                (serial_of(&cert)?, Some((p, cert)))
            }
        };
        let _lock = self.lock_existing()?;
        let ca = self.load_ca()?;
        let mut index = Index::load(&self.dir)?;
        if let Some((path, cert)) = &cert {
            self.check_revocable(&ca, path, cert, &serial)?;
            if !index.contains(&serial) {
                // Issued here but unknown to the index (lost or made by hand): record it so
                // that the CRL can list it.
                index.certs.push(entry_for(cert, path, &serial)?);
            }
        }
        let (already, subject) = self.mark_revoked(&mut index, &serial)?;
        let crl = self.write_crl_locked(&ca, &index, crl_days).map_err(|e| {
            PkiError::file(
                &self.path(CRL_FILE),
                format!(
                    "not rewritten ({e}); the revocation of {serial} is recorded in the index: fix \
                     the problem and run `tunnel-server pki crl --dir {}`",
                    self.dir.display()
                ),
            )
        })?;
        Ok(Revocation {
            serial,
            subject,
            already,
            crl,
        })
    }

    /// Refuses to issue with a CA past its notAfter: nothing it issues would verify.
    fn check_ca_current(&self, ca: &Issued) -> Result<(), PkiError> {
        let ca_end = asn1_to_unix(ca.cert.not_after())
            .map_err(PkiError::crypto("reading the CA's end of validity"))?;
        if ca_end <= unix_now() {
            return Err(PkiError::file(
                &self.path(CA_CERT),
                format!(
                    "the CA expired on {}; nothing it issues would verify. Create a new CA in \
                     another directory",
                    super::report::format_time(ca_end)
                ),
            ));
        }
        Ok(())
    }

    /// Refuses to overwrite an earlier certificate or key of the same name.
    fn check_names_free(&self, crt: &str, key: &str) -> Result<(), PkiError> {
        for file in [crt, key] {
            let p = self.path(file);
            if p.symlink_metadata().is_ok() {
                return Err(PkiError::file(
                    &p,
                    format!(
                        "already exists; choose another name, or revoke the old certificate \
                         (`tunnel-server pki revoke --dir {} --cert {}`) and remove {crt} and \
                         {key} first",
                        self.dir.display(),
                        self.path(crt).display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Issues `spec` under a serial the index does not hold yet (a CRL entry names a serial,
    /// so two certificates must never share one), drawing again on a collision.
    fn issue_new_serial(
        &self,
        ca: &Issued,
        spec: &CertSpec,
        index: &Index,
        name: &str,
    ) -> Result<Issued, PkiError> {
        let mut tries = 0;
        loop {
            let leaf = new_leaf(ca, spec).map_err(PkiError::crypto(format!(
                "issuing a certificate for {name:?}"
            )))?;
            if !index.contains(&serial_of(&leaf.cert)?) {
                return Ok(leaf);
            }
            tries += 1;
            if tries >= SERIAL_TRIES {
                return Err(PkiError::file(
                    &self.path(INDEX_FILE),
                    "every random serial drawn is already in the index; is the random number \
                     generator broken?",
                ));
            }
        }
    }

    /// A certificate given by file can be revoked here only if this CA issued it and it is
    /// not the CA itself.
    fn check_revocable(
        &self,
        ca: &Issued,
        path: &Path,
        cert: &X509,
        serial: &str,
    ) -> Result<(), PkiError> {
        let issued_here = ca
            .cert
            .public_key()
            .and_then(|k| cert.verify(&k))
            .unwrap_or(false);
        if !issued_here {
            return Err(PkiError::file(
                path,
                format!(
                    "was not issued by the CA in {}; revoke it with the CA that issued it",
                    self.path(CA_CERT).display()
                ),
            ));
        }
        if serial == serial_of(&ca.cert)? {
            return Err(PkiError::file(
                path,
                "is the CA certificate itself, which a CRL cannot revoke; to retire the CA, \
                 remove it from client_ca everywhere",
            ));
        }
        Ok(())
    }

    /// Records the revocation of `serial` in the index (saved only if it is new); returns
    /// the earlier revocation time, if any, and the subject.
    fn mark_revoked(
        &self,
        index: &mut Index,
        serial: &str,
    ) -> Result<(Option<i64>, String), PkiError> {
        let Some(entry) = index.find_mut(serial) else {
            return Err(PkiError::file(
                &self.path(INDEX_FILE),
                format!(
                    "no certificate with serial {serial} was issued by this CA; `tunnel-server pki \
                     list --dir {}` shows the serials (a certificate this index does not know can \
                     be revoked with --cert FILE)",
                    self.dir.display()
                ),
            ));
        };
        let already = entry.revoked_at;
        entry.revoked_at.get_or_insert_with(unix_now);
        let subject = entry.subject.clone();
        if already.is_none() {
            index.save(&self.dir)?;
        }
        Ok((already, subject))
    }

    /// Writes `DIR/crl.pem` listing every revoked certificate, valid for `days` days.
    pub fn write_crl(&self, days: u32) -> Result<CrlWritten, PkiError> {
        check_days("--days", days)?;
        let _lock = self.lock_existing()?;
        let ca = self.load_ca()?;
        let index = Index::load(&self.dir)?;
        self.write_crl_locked(&ca, &index, days)
    }

    fn write_crl_locked(
        &self,
        ca: &Issued,
        index: &Index,
        days: u32,
    ) -> Result<CrlWritten, PkiError> {
        let revoked: Vec<(openssl::asn1::Asn1Integer, i64)> = index
            .certs
            .iter()
            .filter_map(|e| e.revoked_at.map(|at| (e, at)))
            .map(|(e, at)| {
                let bn = openssl::bn::BigNum::from_hex_str(&e.serial)?;
                Ok((bn.to_asn1_integer()?, at))
            })
            .collect::<Result<_, openssl::error::ErrorStack>>()
            .map_err(|_| {
                PkiError::file(
                    &self.path(INDEX_FILE),
                    "holds a serial number that is not hexadecimal; correct or remove that entry",
                )
            })?;
        let refs: Vec<_> = revoked.iter().map(|(s, at)| (&**s, *at)).collect();
        let crl = super::make_crl_entries(ca, &refs, 0, days)
            .map_err(PkiError::crypto("signing the CRL"))?;
        let pem = crl.to_pem().map_err(PkiError::crypto("encoding the CRL"))?;
        let path = self.path(CRL_FILE);
        write_atomic(&path, &pem, 0o644, true)?;
        Ok(CrlWritten {
            path,
            revoked: refs.len(),
            next_update: unix_now() + i64::from(days) * 86_400,
        })
    }

    /// Every issued certificate with its status now, in issue order.
    pub fn list(&self) -> Result<Vec<Listed>, PkiError> {
        // The index is replaced by rename, so reading it needs no lock.
        self.load_ca_cert()?;
        self.secure()?;
        let now = unix_now();
        Ok(Index::load(&self.dir)?
            .certs
            .into_iter()
            .map(|entry| {
                let status = if entry.revoked_at.is_some() {
                    Status::Revoked
                } else if entry.not_after <= now {
                    Status::Expired
                } else {
                    Status::Valid
                };
                Listed { entry, status }
            })
            .collect())
    }

    /// Takes the lock of a directory that must already hold a CA.
    fn lock_existing(&self) -> Result<DirLock, PkiError> {
        // Check first, so that a mistyped --dir gets "no CA here" rather than a stray
        // lock file.
        self.load_ca_cert()?;
        self.secure()?;
        DirLock::exclusive(&self.dir)
    }

    /// Refuses a directory or `ca.key` that group or others may write to, and tightens one
    /// they may read (to 0700 / 0600); returns what was tightened. Every command runs it, so
    /// callers only need it to report the changes.
    pub fn secure(&self) -> Result<Vec<String>, PkiError> {
        super::perms::secure(&self.dir, &self.path(CA_KEY))
    }

    fn load_ca_cert(&self) -> Result<X509, PkiError> {
        let path = self.path(CA_CERT);
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(PkiError::file(
                &path,
                format!(
                    "no CA here; create one with `tunnel-server pki init --dir {}`",
                    self.dir.display()
                ),
            )),
            _ => read_cert(&path),
        }
    }

    fn load_ca(&self) -> Result<Issued, PkiError> {
        let cert = self.load_ca_cert()?;
        let path = self.path(CA_KEY);
        let pem = std::fs::read(&path).map_err(|e| {
            PkiError::file(
                &path,
                format!("cannot read the CA key: {e}; run as the user that owns the CA directory"),
            )
        })?;
        let key = PKey::private_key_from_pem(&pem)
            .map_err(|_| PkiError::file(&path, "not an unencrypted PEM private key"))?;
        let matches = cert
            .public_key()
            .map(|p| p.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(PkiError::file(
                &path,
                format!("does not belong to {}", self.path(CA_CERT).display()),
            ));
        }
        Ok(Issued { cert, key })
    }

    /// Writes a key (0600) and certificate, neither replacing an existing file.
    fn write_pair(&self, issued: &Issued, crt: &str, key: &str) -> Result<Created, PkiError> {
        let (crt, key) = (self.path(crt), self.path(key));
        let key_pem = issued
            .key
            .private_key_to_pem_pkcs8()
            .map_err(PkiError::crypto("encoding the key"))?;
        let crt_pem = issued
            .cert
            .to_pem()
            .map_err(PkiError::crypto("encoding the certificate"))?;
        write_atomic(&key, &key_pem, 0o600, false)?;
        if let Err(e) = write_atomic(&crt, &crt_pem, 0o644, false) {
            let _ = std::fs::remove_file(&key);
            return Err(e);
        }
        Ok(Created {
            serial: serial_of(&issued.cert)?,
            subject: crate::authz::identity::one_line_name(issued.cert.subject_name()),
            not_after: asn1_to_unix(issued.cert.not_after())
                .map_err(PkiError::crypto("reading the end of validity"))?,
            cert: crt,
            key,
        })
    }
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    use std::os::unix::fs::DirBuilderExt;
    // 0700: the directory holds the CA key.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| PkiError::file(dir, format!("cannot create the CA directory: {e}")))?;
    if !dir.is_dir() {
        return Err(PkiError::file(dir, "is not a directory"));
    }
    Ok(())
}

fn read_cert(path: &Path) -> Result<X509, PkiError> {
    let pem = std::fs::read(path)
        .map_err(|e| PkiError::file(path, format!("cannot read the certificate: {e}")))?;
    X509::from_pem(&pem).map_err(|_| PkiError::file(path, "not a PEM certificate"))
}

fn entry_for(cert: &X509, path: &Path, serial: &str) -> Result<Entry, PkiError> {
    Ok(Entry {
        serial: serial.to_string(),
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        subject: crate::authz::identity::one_line_name(cert.subject_name()),
        not_after: asn1_to_unix(cert.not_after())
            .map_err(PkiError::crypto("reading the end of validity"))?,
        revoked_at: None,
    })
}

#[cfg(test)]
mod tests;
