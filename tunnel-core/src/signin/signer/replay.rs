//! The record of used tokens signers kept before the store ([`crate::signin::store`]): the
//! signer now records each use with `Store::first_use`, and reads this file only once, at
//! its first start with a store, to import the uses it lists (`super::state`). The type
//! stays as the in-memory model the token fuzz test checks against.
//!
//! Each ID token buys one certificate: tokens already used are remembered until they expire
//! (after which the expiry check refuses them anyway), across restarts.
//!
//! A token is remembered by its replay key ([`crate::signin::oidc::jws::replay_key`]: the SHA-256 of
//! what the provider signed), never by its text, which has many spellings.
//!
//! The record is `STATE_DIR/replay.log` (mode 0600), one line per used token,
//! `HEX-KEY FORGET-AFTER\n` (64 hex digits, Unix seconds). A use is appended and fsynced
//! before [`ReplayCache::first_use`] answers, so no certificate leaves the signer for a use
//! that a crash could forget. At start, and whenever as many uses were appended as lines
//! were kept the last time (plus [`COMPACT_SLACK`]), the lines not yet forgettable are
//! rewritten to a new file (fsynced, renamed into place). An unfinished last line (the start
//! of a line, or zeros, without its newline) was never acknowledged: the crash came before
//! its fsync returned, so that request got no certificate; it is dropped. Anything else that
//! does not parse refuses the start: forgetting used tokens silently would reopen them. The
//! signer holds an exclusive lock (`flock`) on the file while it runs, so two signers cannot
//! share one record and miss each other's uses.
//!
//! Everything goes through [`ReplayCache::open`], [`ReplayCache::in_memory`] and
//! [`ReplayCache::first_use`], so another store (SQLite) can take its place behind the same
//! type.

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The record's file name in `state_dir`.
pub const REPLAY_FILE: &str = "replay.log";
/// Prefix of the temporary files a rewrite uses (left over only by a crash mid-rewrite).
const TMP_PREFIX: &str = ".replay.log.";
/// Uses added beyond those kept at the last rewrite before forgettable ones are dropped.
const COMPACT_SLACK: usize = 1024;
/// Length of one line: 64 hex digits, a space, at most 20 characters of i64, a newline.
const MAX_LINE: usize = 64 + 1 + 20 + 1;

/// What identifies a token: the SHA-256 of what the provider signed.
pub type ReplayKey = [u8; 32];

/// Why the record of used tokens cannot be used; each says what to do. Any of them stops
/// the start, or refuses the request at hand: never a certificate without a record.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The file cannot be opened or created.
    #[error("cannot open {}: {source}; the signer's user needs write access to the directory", .path.display())]
    Open {
        /// The record.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another process holds the file's lock.
    #[error("{} is in use by another running signer; give each signer its own state_dir, or stop the other one", .path.display())]
    InUse {
        /// The record.
        path: PathBuf,
    },
    /// Reading, writing, syncing or replacing the file failed.
    #[error("cannot {what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The record.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line that is neither a record nor what an interrupted write leaves.
    #[error("{}: {problem}; the record of used tokens is damaged. Restore it from a backup, or keep the signer stopped until max_token_age + 2 x clock_skew have passed (every token it may list is refused as too old by then) and remove it", .path.display())]
    Damaged {
        /// The record.
        path: PathBuf,
        /// The line and what is wrong with it.
        problem: String,
    },
    /// An earlier write failed and could not be cut back: where the file ends is unknown.
    #[error("{}: an earlier write failed and could not be undone; refusing every token until the signer restarts", .path.display())]
    Unusable {
        /// The record.
        path: PathBuf,
    },
}

/// Used tokens, each with the time (Unix seconds) after which it may be forgotten; behind
/// one lock, so concurrent uses of one token are decided one after the other.
pub struct ReplayCache {
    inner: Mutex<Inner>,
}

struct Inner {
    seen: HashMap<ReplayKey, i64>,
    /// None: kept in memory only.
    log: Option<Log>,
    /// Entries added since forgettable ones were last dropped (and the file rewritten).
    added: usize,
    /// Entries kept then.
    kept: usize,
}

impl Inner {
    fn new(seen: HashMap<ReplayKey, i64>, log: Option<Log>) -> Inner {
        Inner {
            kept: seen.len(),
            seen,
            log,
            added: 0,
        }
    }
}

/// The open, locked record.
struct Log {
    dir: PathBuf,
    path: PathBuf,
    file: Flock<File>,
    /// Bytes of whole lines in the file: the next line goes here, and a failed append is cut
    /// back to it.
    len: u64,
    /// Set when a failed append could not be cut back: the file's end is unknown, so every
    /// later use is refused until a restart reads it again.
    broken: bool,
}

impl ReplayCache {
    /// A cache that forgets on restart (tests, tools).
    pub fn in_memory() -> ReplayCache {
        ReplayCache {
            inner: Mutex::new(Inner::new(HashMap::new(), None)),
        }
    }

    /// Opens (or creates) the record in `dir`, takes its lock, and loads the entries not yet
    /// forgettable at `now`. `Err` says what is wrong with the file and what to do.
    pub fn open(dir: &Path, now: i64) -> Result<ReplayCache, ReplayError> {
        let path = dir.join(REPLAY_FILE);
        let mut file = open_locked(&path)?;
        sync_dir(dir);
        let mut text = Vec::new();
        file.read_to_end(&mut text)
            .map_err(|source| ReplayError::Io {
                what: "read",
                path: path.clone(),
                source,
            })?;
        let (seen, torn) = parse(&text, now).map_err(|problem| ReplayError::Damaged {
            path: path.clone(),
            problem,
        })?;
        if torn {
            tracing::warn!(file = %path.display(), "dropped an unfinished last line of the replay record (a crash during a write; that request got no certificate)");
        }
        remove_leftovers(dir);
        let mut log = Log {
            dir: dir.to_path_buf(),
            path,
            file,
            len: text.len() as u64,
            broken: false,
        };
        // Start from a clean file: no expired lines, no unfinished tail, mode 0600.
        log.rewrite(&seen)?;
        Ok(ReplayCache {
            inner: Mutex::new(Inner::new(seen, Some(log))),
        })
    }

    /// Records `key` as used until `forget_after`: `Ok(true)` on its first use (recorded
    /// durably when the cache has a file), `Ok(false)` when it was used before, `Err` when
    /// the use cannot be recorded (then no certificate may be issued for it).
    pub fn first_use(
        &self,
        key: &ReplayKey,
        forget_after: i64,
        now: i64,
    ) -> Result<bool, ReplayError> {
        let mut inner = crate::util::sync::lock(&self.inner);
        if inner.seen.get(key).is_some_and(|until| *until >= now) {
            return Ok(false);
        }
        // Remembered in memory even when the write fails: fail closed for this token.
        inner.seen.insert(*key, forget_after);
        if let Some(log) = &mut inner.log {
            log.append(key, forget_after)?;
        }
        inner.added += 1;
        // Amortized: drop forgettable entries (and rewrite the file without them) once as
        // many entries were added as were kept last time, plus some slack.
        if inner.added > inner.kept + COMPACT_SLACK {
            let Inner { seen, log, .. } = &mut *inner;
            seen.retain(|_, until| *until >= now);
            if let Some(log) = log {
                if let Err(e) = log.rewrite(seen) {
                    // The appended file is still complete and durable; try again later.
                    tracing::warn!(error = %e, "cannot compact the replay record");
                }
            }
            inner.kept = inner.seen.len();
            inner.added = 0;
        }
        Ok(true)
    }

    /// Tokens remembered (including forgettable ones not yet dropped).
    pub fn len(&self) -> usize {
        crate::util::sync::lock(&self.inner).seen.len()
    }

    /// Every use remembered, with its forget-after time (for the import into the store).
    pub(crate) fn entries(&self) -> Vec<(ReplayKey, i64)> {
        let inner = crate::util::sync::lock(&self.inner);
        inner.seen.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Whether no token is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for ReplayCache {
    fn default() -> ReplayCache {
        ReplayCache::in_memory()
    }
}

/// Opens (creating, 0600) and locks the file at `path`. Another signer may have renamed a
/// rewritten copy onto `path` between the open and the lock; then the locked file is no
/// longer the record, and this tries again.
fn open_locked(path: &Path) -> Result<Flock<File>, ReplayError> {
    use std::os::unix::fs::MetadataExt;
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| ReplayError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let file = lock(file, path)?;
        let (held, named) = (file.metadata(), std::fs::metadata(path));
        match (held, named) {
            (Ok(h), Ok(n)) if h.dev() == n.dev() && h.ino() == n.ino() => return Ok(file),
            (Err(source), _) | (_, Err(source))
                if source.kind() != std::io::ErrorKind::NotFound =>
            {
                return Err(ReplayError::Io {
                    what: "inspect",
                    path: path.to_path_buf(),
                    source,
                })
            }
            _ => continue,
        }
    }
}

fn lock(file: File, path: &Path) -> Result<Flock<File>, ReplayError> {
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(f) => return Ok(f),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(ReplayError::InUse {
                    path: path.to_path_buf(),
                })
            }
            Err((_, e)) => {
                return Err(ReplayError::Io {
                    what: "lock",
                    path: path.to_path_buf(),
                    source: e.into(),
                })
            }
        }
    }
}

/// Makes a new directory entry durable (best effort: some filesystems refuse).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Removes temporary files of a rewrite a crash interrupted (the lock is held, so no other
/// signer is rewriting).
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn line(key: &ReplayKey, forget_after: i64) -> String {
    let mut s = String::with_capacity(MAX_LINE);
    for b in key {
        let _ = write!(s, "{b:02x}");
    }
    let _ = writeln!(s, " {forget_after}");
    s
}

/// The entries of a record not forgettable at `now`, and whether an unfinished last line
/// was dropped. `Err` names the first line that does not parse.
fn parse(text: &[u8], now: i64) -> Result<(HashMap<ReplayKey, i64>, bool), String> {
    let (whole, tail) = match text.iter().rposition(|b| *b == b'\n') {
        Some(i) => text.split_at(i + 1),
        None => (&[][..], text),
    };
    let mut seen = HashMap::new();
    let lines = match whole.split_last() {
        Some((_newline, lines)) => lines.split(|b| *b == b'\n').collect(),
        None => Vec::new(),
    };
    for (n, l) in lines.into_iter().enumerate() {
        let (key, until) = parse_line(l).ok_or_else(|| {
            format!(
                "line {} is not \"KEY FORGET-AFTER\": {:?}",
                n + 1,
                String::from_utf8_lossy(&l[..l.len().min(MAX_LINE)])
            )
        })?;
        if until >= now {
            let e = seen.entry(key).or_insert(until);
            *e = (*e).max(until);
        }
    }
    if !unfinished_line(tail) {
        return Err(format!(
            "the last line is neither a record nor the start of one: {:?}",
            String::from_utf8_lossy(&tail[..tail.len().min(MAX_LINE)])
        ));
    }
    Ok((seen, !tail.is_empty()))
}

/// Whether `tail` (the bytes after the last newline) is what an interrupted append leaves:
/// nothing, the start of a line, or zeros (a filesystem that extended the file before the
/// data reached the disk).
fn unfinished_line(tail: &[u8]) -> bool {
    if tail.iter().all(|b| *b == 0) {
        return true;
    }
    let (hex, rest) = tail.split_at(tail.len().min(64));
    tail.len() < MAX_LINE
        && hex.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        && match rest.split_first() {
            None => true,
            Some((b' ', until)) => until.iter().all(|c| c.is_ascii_digit() || *c == b'-'),
            Some(_) => false,
        }
}

fn parse_line(l: &[u8]) -> Option<(ReplayKey, i64)> {
    let l = std::str::from_utf8(l).ok()?;
    let (hex, until) = l.split_once(' ')?;
    if hex.len() != 64 || !hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    if until.is_empty() || !until.bytes().all(|c| c.is_ascii_digit() || c == b'-') {
        return None;
    }
    Some((key, until.parse().ok()?))
}

impl Log {
    /// Appends one line and fsyncs it; a failure cuts the file back to its last whole line.
    fn append(&mut self, key: &ReplayKey, forget_after: i64) -> Result<(), ReplayError> {
        if self.broken {
            return Err(ReplayError::Unusable {
                path: self.path.clone(),
            });
        }
        let l = line(key, forget_after);
        let written = self
            .file
            .write_all_at(l.as_bytes(), self.len)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += l.len() as u64;
                Ok(())
            }
            Err(source) => {
                let cut = self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.sync_data());
                if let Err(e) = cut {
                    tracing::error!(file = %self.path.display(), error = %e, "cannot undo a failed write to the replay record; refusing every token until a restart");
                    self.broken = true;
                }
                Err(ReplayError::Io {
                    what: "record the token in",
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Replaces the file by one holding exactly `seen`: a temporary file beside it, fsynced,
    /// locked, renamed into place, then the directory fsynced. The lock moves with it, so
    /// no other signer can take the file in between.
    fn rewrite(&mut self, seen: &HashMap<ReplayKey, i64>) -> Result<(), ReplayError> {
        let path = self.path.clone();
        let fail = |what: &'static str| {
            let path = path.clone();
            move |source: std::io::Error| ReplayError::Io { what, path, source }
        };
        let mut text = String::with_capacity(seen.len() * MAX_LINE);
        for (k, until) in seen {
            text += &line(k, *until);
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(&self.dir)
            .map_err(fail("create a temporary file to rewrite"))?;
        tmp.write_all(text.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(fail("write a temporary file to rewrite"))?;
        // NamedTempFile's file is 0600. Lock it before it takes the name.
        let tmp_file = tmp.as_file().try_clone().map_err(fail("rewrite"))?;
        let locked = lock(tmp_file, &self.path)?;
        tmp.persist(&self.path)
            .map_err(|e| fail("rename a rewritten copy onto")(e.error))?;
        sync_dir(&self.dir);
        self.file = locked;
        self.len = text.len() as u64;
        self.broken = false;
        Ok(())
    }
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod tests;
