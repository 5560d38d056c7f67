//! The CA directory's record of what it issued and revoked (`DIR/index.json`), and the
//! lock (`DIR/.lock`) that serializes every read-modify-write of the directory, so that
//! concurrent `tunnel-server pki` processes never lose an update.

use super::PkiError;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The index file's name inside the CA directory.
pub(crate) const INDEX_FILE: &str = "index.json";
/// The lock file's name inside the CA directory.
pub(crate) const LOCK_FILE: &str = ".lock";
/// Format version written to the index.
const INDEX_VERSION: u32 = 1;

/// The index: every certificate the CA issued, in issue order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Index {
    /// Format version ([`INDEX_VERSION`]).
    pub version: u32,
    /// Issued certificates.
    pub certs: Vec<Entry>,
}

/// One issued certificate in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Serial number, upper-case hex as `openssl x509 -serial` prints it.
    pub serial: String,
    /// File stem: the certificate is `DIR/<name>.crt`.
    pub name: String,
    /// Subject, one line (`CN=alice,OU=dba`).
    pub subject: String,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// When it was revoked (seconds since the Unix epoch), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

impl Index {
    /// Reads `DIR/index.json`; a missing file is an empty index (a CA directory made by hand
    /// or by an older version has none yet).
    pub(super) fn load(dir: &Path) -> Result<Index, PkiError> {
        let path = dir.join(INDEX_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Index {
                    version: INDEX_VERSION,
                    certs: Vec::new(),
                })
            }
            Err(e) => return Err(PkiError::file(&path, format!("cannot read the index: {e}"))),
        };
        let index: Index = serde_json::from_str(&text).map_err(|e| {
            PkiError::file(
                &path,
                format!(
                    "not a valid index ({e}); restore it from a backup, or move it away to start \
                     an empty one (the revocations recorded in it would then be lost)"
                ),
            )
        })?;
        if index.version != INDEX_VERSION {
            return Err(PkiError::file(
                &path,
                format!(
                    "index format version {} is not supported (this program reads version \
                     {INDEX_VERSION}); use the tunnel-server that wrote it",
                    index.version
                ),
            ));
        }
        Ok(index)
    }

    /// Writes `DIR/index.json` atomically: a temporary file in the same directory, synced,
    /// then renamed over the old one, so a reader sees the old or the new index, never half.
    pub(super) fn save(&self, dir: &Path) -> Result<(), PkiError> {
        let mut json = serde_json::to_vec_pretty(self)
            .map_err(|e| PkiError::file(&dir.join(INDEX_FILE), format!("cannot encode: {e}")))?;
        json.push(b'\n');
        write_atomic(&dir.join(INDEX_FILE), &json, 0o644, true)
    }

    /// The entry with this canonical serial.
    pub(super) fn find_mut(&mut self, serial: &str) -> Option<&mut Entry> {
        self.certs.iter_mut().find(|e| e.serial == serial)
    }

    /// Whether a certificate with this canonical serial was issued.
    pub(super) fn contains(&self, serial: &str) -> bool {
        self.certs.iter().any(|e| e.serial == serial)
    }
}

/// Writes `data` to `path` via a temporary file and a rename, with permission bits `mode`.
/// With `replace` false, fails with `AlreadyExists` instead of replacing an existing file
/// (checked atomically by the rename, so two writers cannot both win).
pub(crate) fn write_atomic(
    path: &Path,
    data: &[u8],
    mode: u32,
    replace: bool,
) -> Result<(), PkiError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let fail = |what: &str, e: std::io::Error| PkiError::file(path, format!("cannot {what}: {e}"));
    // NamedTempFile is created with mode 0600, so a key is never readable by others, even
    // for a moment.
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| fail("create a temporary file beside it", e))?;
    tmp.write_all(data).map_err(|e| fail("write", e))?;
    if mode != 0o600 {
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| fail("set permissions", e))?;
    }
    tmp.as_file().sync_all().map_err(|e| fail("sync", e))?;
    if replace {
        tmp.persist(path)
            .map_err(|e| fail("rename into place", e.error))?;
    } else {
        tmp.persist_noclobber(path).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                PkiError::file(path, "already exists; refusing to overwrite it")
            } else {
                fail("rename into place", e.error)
            }
        })?;
    }
    // Make the rename itself durable.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// An exclusive lock on the CA directory, released on drop.
#[derive(Debug)]
pub(crate) struct DirLock {
    _lock: Flock<File>,
}

impl DirLock {
    /// Blocks until this process holds the directory's exclusive lock. `flock` locks belong
    /// to the open file, so this serializes threads of one process as well as processes.
    pub(super) fn exclusive(dir: &Path) -> Result<DirLock, PkiError> {
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                PkiError::file(
                    &path,
                    format!("cannot open the lock file: {e}; check that the directory exists and is writable"),
                )
            })?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(lock) => return Ok(DirLock { _lock: lock }),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, e)) => {
                    return Err(PkiError::file(&path, format!("cannot lock: {e}")));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(serial: &str, revoked_at: Option<i64>) -> Entry {
        Entry {
            serial: serial.to_string(),
            name: format!("n{serial}"),
            subject: "CN=a \"quoted\" name,O=Example\\, Inc.".to_string(),
            not_after: 1_900_000_000,
            revoked_at,
        }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let empty = Index::load(dir.path()).unwrap();
        assert!(empty.certs.is_empty());
        let index = Index {
            version: INDEX_VERSION,
            certs: vec![entry("0A", None), entry("7F01", Some(1_700_000_000))],
        };
        index.save(dir.path()).unwrap();
        assert_eq!(Index::load(dir.path()).unwrap(), index);
        // Saving again replaces the file and leaves no temporary file behind.
        let mut index2 = index.clone();
        index2.find_mut("0A").unwrap().revoked_at = Some(5);
        index2.save(dir.path()).unwrap();
        assert_eq!(Index::load(dir.path()).unwrap(), index2);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![INDEX_FILE.to_string()]);
    }

    #[test]
    fn corrupt_or_foreign_index_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INDEX_FILE);
        for text in [
            "{not json",
            r#"{"version":1,"certs":[],"extra":1}"#,
            r#"{"version":2,"certs":[]}"#,
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Index::load(dir.path()).unwrap_err();
            assert!(e.to_string().contains(INDEX_FILE), "{e}");
            assert_eq!(e.exit_code(), crate::EXIT_IOERR);
        }
    }

    #[test]
    fn write_atomic_no_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.key");
        write_atomic(&p, b"one", 0o600, false).unwrap();
        let e = write_atomic(&p, b"two", 0o600, false).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn lock_serializes_threads() {
        // Each thread increments a counter stored in a file under the lock; a lost update
        // would show as a smaller total.
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("counter");
        std::fs::write(&counter, "0").unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (d, c) = (dir.path().to_path_buf(), counter.clone());
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        let _lock = DirLock::exclusive(&d).unwrap();
                        let n: u32 = std::fs::read_to_string(&c).unwrap().parse().unwrap();
                        std::thread::yield_now();
                        write_atomic(&c, (n + 1).to_string().as_bytes(), 0o644, true).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(std::fs::read_to_string(&counter).unwrap(), "200");
    }
}
