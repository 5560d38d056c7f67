//! The CA directory and `ca.key` stay private to their owner: a directory or key that group
//! or others may write to is refused (someone there could have replaced the CA's files, so
//! its contents cannot be trusted blindly); one they may only read or enter is tightened to
//! 0700 / 0600, and the change is reported.

use super::PkiError;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Checks `dir` (when it exists) and `key` (when it exists); returns what was tightened.
pub(crate) fn secure(dir: &Path, key: &Path) -> Result<Vec<String>, PkiError> {
    let mut notes = Vec::new();
    if let Some(n) = tighten(dir, 0o700, "the directory holds the CA key")? {
        notes.push(n);
    }
    if let Some(n) = tighten(
        key,
        0o600,
        "if they were not trusted, treat the CA key as exposed and create a new CA",
    )? {
        notes.push(n);
    }
    Ok(notes)
}

/// Refuses `path` if group or others may write to it; else removes their access (keeping
/// at most `keep`), returning a note when something changed.
fn tighten(path: &Path, keep: u32, why: &str) -> Result<Option<String>, PkiError> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(None);
    };
    let mode = meta.permissions().mode() & 0o7777;
    let fix = if meta.is_dir() {
        "chmod 700"
    } else {
        "chmod 600"
    };
    if mode & 0o022 != 0 {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "group and others",
            (true, false) => "group",
            _ => "others",
        };
        return Err(PkiError::file(
            path,
            format!(
                "its {who} may write to it (mode {mode:04o}), so its contents cannot be trusted; \
                 refusing to use it. Check what it holds, then `{fix} {}`",
                path.display()
            ),
        ));
    }
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    let tight = mode & keep & !0o077;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(tight)).map_err(|e| {
        PkiError::file(
            path,
            format!(
                "group or others may read it (mode {mode:04o}) and it cannot be tightened ({e}); \
                 run `{fix} {}`",
                path.display()
            ),
        )
    })?;
    Ok(Some(format!(
        "{}: group or others could read it (mode {mode:04o}); tightened to {tight:04o} ({why})",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chmod(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    /// Modes of the directory and key after, or part of the refusal.
    type Want = Result<(u32, u32), &'static str>;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn modes_are_tightened_or_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        std::fs::create_dir(&dir).unwrap();
        let key = dir.join("ca.key");
        std::fs::write(&key, b"k").unwrap();
        // (dir mode, key mode, Ok(dir after, key after) or Err(part of the message))
        let cases: &[(u32, u32, Want)] = &[
            (0o700, 0o600, Ok((0o700, 0o600))),
            (0o755, 0o600, Ok((0o700, 0o600))),
            (0o750, 0o640, Ok((0o700, 0o600))),
            (0o711, 0o644, Ok((0o700, 0o600))),
            (0o700, 0o400, Ok((0o700, 0o400))),
            (0o770, 0o600, Err("its group may write")),
            (0o707, 0o600, Err("its others may write")),
            (0o1777, 0o600, Err("group and others may write")),
            (0o700, 0o620, Err("ca.key: its group may write")),
            (0o700, 0o606, Err("ca.key: its others may write")),
        ];
        for (dm, km, want) in cases {
            chmod(&dir, *dm);
            chmod(&key, *km);
            let got = secure(&dir, &key);
            match want {
                Ok((d, k)) => {
                    let notes = got.unwrap_or_else(|e| panic!("{dm:o}/{km:o}: {e}"));
                    assert_eq!((mode(&dir), mode(&key)), (*d, *k), "{dm:o}/{km:o}");
                    assert_eq!(notes.len(), usize::from(*dm != *d) + usize::from(*km != *k));
                }
                Err(part) => {
                    let e = got.expect_err("refused").to_string();
                    assert!(e.contains(part), "{dm:o}/{km:o}: {e}");
                    assert_eq!((mode(&dir), mode(&key)), (*dm, *km), "left as it was");
                }
            }
        }
        chmod(&dir, 0o700);
    }
}
