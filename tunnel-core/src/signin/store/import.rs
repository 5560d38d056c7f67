//! Reading the user CA's JSON pki index (`CA_DIR/index.json`, written by
//! [`crate::pki::store`]) for a one-time import into the store.
//!
//! The index keeps, per certificate, its serial, file stem, one-line subject, end of
//! validity and revocation time. The store takes the email from the subject's CN (the
//! signer's certificates have CN = email) and the groups from its OUs; what the index does
//! not know (sub, key, start of validity, token) stays empty.

use super::{canonical_serial, Issued, StoreError};
use serde::Deserialize;
use std::path::Path;

/// The index format version this reads (that of `pki/index.rs`).
const INDEX_VERSION: u32 = 1;

/// The index file, entries as the pki code defines them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Index {
    version: u32,
    certs: Vec<crate::pki::Entry>,
}

/// The import's marker in `meta` (one per index file, by its canonical path) and the rows
/// to insert.
pub(super) fn read(path: &Path) -> Result<(String, Vec<Issued>), StoreError> {
    let fail = |problem: String| StoreError::Import {
        path: path.to_path_buf(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let index: Index = serde_json::from_str(&text).map_err(|e| {
        fail(format!(
            "not a pki index ({e}); give the user CA's index.json"
        ))
    })?;
    if index.version != INDEX_VERSION {
        return Err(fail(format!(
            "index format version {} (this signer reads version {INDEX_VERSION})",
            index.version
        )));
    }
    let canonical = path.canonicalize().map_err(|e| fail(e.to_string()))?;
    let issued_by = format!("import:{}", canonical.display());
    let mut rows = Vec::with_capacity(index.certs.len());
    for e in &index.certs {
        let serial = canonical_serial(&e.serial)
            .map_err(|_| fail(format!("serial {:?} is not hexadecimal", e.serial)))?;
        let attrs = attributes(&e.subject);
        let email = attrs
            .iter()
            .find(|(k, _)| k == "CN")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| e.name.clone());
        rows.push(Issued {
            serial,
            email,
            sub: None,
            groups: attrs
                .into_iter()
                .filter(|(k, _)| k == "OU")
                .map(|(_, v)| v)
                .collect(),
            key_sha256: None,
            not_before: None,
            not_after: e.not_after,
            issued_by: issued_by.clone(),
            token: None,
            revoked_at: e.revoked_at,
            revocation_reason: None,
        });
    }
    Ok((format!("import:json_index:{}", canonical.display()), rows))
}

/// The `KEY=VALUE` pairs of a one-line subject (`CN=alice,OU=dba`), with the backslash
/// escapes of [`crate::authz::identity::one_line_name`] undone.
fn attributes(subject: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (mut key, mut cur, mut in_value) = (String::new(), String::new(), false);
    let mut chars = subject.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            '=' if !in_value => {
                key = std::mem::take(&mut cur);
                in_value = true;
            }
            ',' => {
                if in_value {
                    out.push((std::mem::take(&mut key), std::mem::take(&mut cur)));
                }
                cur.clear();
                in_value = false;
            }
            c => cur.push(c),
        }
    }
    if in_value {
        out.push((key, cur));
    }
    out
}

#[cfg(test)]
#[test]
fn subject_attributes() {
    assert_eq!(
        attributes(r#"CN=a \"q\" b,OU=dba,OU=x\,y,O=Example\, Inc."#),
        [
            ("CN", r#"a "q" b"#),
            ("OU", "dba"),
            ("OU", "x,y"),
            ("O", "Example, Inc.")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
}
