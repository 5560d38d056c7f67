//! The signer's store at start: opened (created or migrated), and on the first start with a
//! store, what the signer remembered before is imported once: the user CA's JSON pki index
//! (its issuances and revocations) and `STATE_DIR/replay.log` (its used tokens, which must
//! stay refused).

use super::replay::{ReplayCache, REPLAY_FILE};
use super::SignerConfig;
use crate::signin::store::{Imported, Store, StoreError};
use crate::util::time::unix_now;
use std::path::Path;
use std::sync::Arc;
use tracing::info;

/// The JSON pki index in the user CA's directory (as `pki` writes it).
const INDEX_FILE: &str = "index.json";
/// What the `replay.log` becomes once imported (kept, for the record, and never read again).
pub(crate) const REPLAY_IMPORTED: &str = "replay.log.imported";

/// Why the store cannot be used at start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    /// The store refused.
    #[error("{file}: store: {source}")]
    Store {
        /// The store's answer.
        source: StoreError,
        /// signer.toml.
        file: String,
    },
    /// The old record of used tokens cannot be imported.
    #[error("{file}: state_dir: {problem}")]
    Replay {
        /// What is wrong.
        problem: String,
        /// signer.toml.
        file: String,
    },
}

impl StateError {
    /// A problem with the settings or the state kept (exit 64) rather than with reaching
    /// the store (69).
    pub(crate) fn is_config(&self) -> bool {
        matches!(
            self,
            StateError::Replay { .. }
                | StateError::Store {
                    source: StoreError::Config { .. }
                        | StoreError::SchemaTooNew { .. }
                        | StoreError::NotAStore { .. },
                    ..
                }
        )
    }
}

/// Opens the store of `cfg` and runs the one-time imports.
pub(crate) async fn open(cfg: &SignerConfig) -> Result<Arc<Store>, StateError> {
    let store = open_only(cfg).await?;
    import_index(&store, cfg)
        .await
        .map_err(|source| StateError::Store {
            source,
            file: cfg.file.display().to_string(),
        })?;
    import_replay(&store, &cfg.state_dir)
        .await
        .map_err(|problem| StateError::Replay {
            problem,
            file: cfg.file.display().to_string(),
        })?;
    Ok(Arc::new(store))
}

/// Opens the store without imports (for the `signer list|revoke|unblock|backup` commands:
/// the running signer did the imports).
pub(crate) async fn open_only(cfg: &SignerConfig) -> Result<Store, StateError> {
    Store::open(&cfg.store, cfg.store_password_file.as_deref())
        .await
        .map_err(|source| StateError::Store {
            source,
            file: cfg.file.display().to_string(),
        })
}

/// Imports `CA_DIR/index.json` when there is one; the store remembers that it did.
async fn import_index(store: &Store, cfg: &SignerConfig) -> Result<(), StoreError> {
    let dir = cfg.ca_cert.parent().unwrap_or(Path::new("."));
    let index = dir.join(INDEX_FILE);
    if !index.exists() {
        return Ok(());
    }
    if let Imported::Done { added, skipped } = store.import_json_index(&index).await? {
        info!(index = %index.display(), added, skipped, store = store.name(), "pki index imported into the store");
    }
    Ok(())
}

/// Imports the used tokens of `STATE_DIR/replay.log` (those not forgettable yet), then
/// renames it to [`REPLAY_IMPORTED`] so it is read once. A crash between the two imports
/// it again at the next start, which changes nothing (a use already recorded stays).
async fn import_replay(store: &Store, state_dir: &Path) -> Result<(), String> {
    let path = state_dir.join(REPLAY_FILE);
    if !path.exists() {
        return Ok(());
    }
    let now = unix_now();
    let entries = ReplayCache::open(state_dir, now)
        .map_err(|e| e.to_string())?
        .entries();
    for (key, forget_after) in &entries {
        store
            .first_use(key, *forget_after, now)
            .await
            .map_err(|e| e.to_string())?;
    }
    std::fs::rename(&path, state_dir.join(REPLAY_IMPORTED)).map_err(|e| {
        format!(
            "cannot rename {} after importing it: {e}; the signer's user needs write access to {}",
            path.display(),
            state_dir.display()
        )
    })?;
    info!(record = %path.display(), tokens = entries.len(), store = store.name(), "used tokens imported into the store");
    Ok(())
}
