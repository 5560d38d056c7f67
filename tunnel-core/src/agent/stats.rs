//! What the agent's connections report for `tunnel-client status`: per-backend counts and
//! the last error. Kept by the agent; read by the admin socket (`admin::agent`).

use crate::util::time::unix_now;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Per-backend counts and the last error, as the agent's connections report them.
#[derive(Default)]
pub(crate) struct AgentStats {
    map: Arc<Mutex<HashMap<String, Stat>>>,
}

#[derive(Default, Clone)]
pub(crate) struct Stat {
    /// Connections open now.
    pub(crate) active: u64,
    /// Connections since start.
    pub(crate) total: u64,
    /// The last error and when (Unix seconds).
    pub(crate) last_error: Option<(String, i64)>,
}

/// Counts one open connection until dropped.
pub(crate) struct OpenGuard {
    map: Arc<Mutex<HashMap<String, Stat>>>,
    backend: String,
}

impl AgentStats {
    /// A connection to `backend` starts.
    pub(crate) fn open(&self, backend: &str) -> OpenGuard {
        let mut m = crate::util::sync::lock(&self.map);
        let s = m.entry(backend.to_string()).or_default();
        s.active += 1;
        s.total += 1;
        drop(m);
        OpenGuard {
            map: self.map.clone(),
            backend: backend.to_string(),
        }
    }

    /// A connection to `backend` failed with `error`.
    pub(crate) fn failed(&self, backend: &str, error: &str) {
        crate::util::sync::lock(&self.map)
            .entry(backend.to_string())
            .or_default()
            .last_error = Some((error.to_string(), unix_now()));
    }

    /// The counts of `backend` (`tunnel-client status`).
    pub(crate) fn get(&self, backend: &str) -> Stat {
        crate::util::sync::lock(&self.map)
            .get(backend)
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if let Some(s) = crate::util::sync::lock(&self.map).get_mut(&self.backend) {
            s.active = s.active.saturating_sub(1);
        }
    }
}
