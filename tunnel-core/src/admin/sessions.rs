//! The gateway's live-session registry: every tunnel from admission (after authorization)
//! to its end, with its identity and live byte counters; per-backend and per-identity caps;
//! operator cuts and temporary blocks (kept in memory only); expiry cuts.

use super::protocol::{BlockFor, BlockTooLong, Selector, SessionView};
use crate::authz::identity::Identity;
use crate::authz::policy::IdentitySelector;
use crate::relay::Counters;
use crate::util::time::unix_now;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// What the gateway knows about a tunnel when it admits it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The verified identity.
    pub identity: Identity,
    /// The backend authorized.
    pub backend: String,
    /// Whether the TLS session was resumed.
    pub resumed: bool,
    /// The client certificate's notAfter (Unix seconds).
    pub not_after: Option<i64>,
}

/// Caps that apply to one backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Open tunnels to the backend.
    pub backend: Option<usize>,
    /// Open tunnels of one identity to the backend.
    pub per_identity: Option<usize>,
}

/// Why a tunnel was not admitted. `Display` is the audit `reason`; [`NotAdmitted::outcome`] the
/// audit `result`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAdmitted {
    /// An operator blocked this identity (`disconnect --block-for`) until this Unix time.
    #[error("blocked by an operator (disconnect --block-for) until {}", super::cli::time_text(Some(*until)))]
    Blocked {
        /// Unix seconds.
        until: i64,
    },
    /// The backend has `max_connections` open tunnels.
    #[error("backend {0:?} has max_connections ({1}) open tunnels")]
    BackendFull(String, usize),
    /// This identity has `max_connections_per_identity` open tunnels to the backend.
    #[error("this identity has max_connections_per_identity ({1}) open tunnels to backend {0:?}")]
    IdentityFull(String, usize),
}

impl NotAdmitted {
    /// The audit result: `denied` for a block, `overloaded` for a cap.
    pub fn outcome(&self) -> crate::gateway::audit::Outcome {
        match self {
            NotAdmitted::Blocked { .. } => crate::gateway::audit::Outcome::Denied,
            NotAdmitted::BackendFull(..) | NotAdmitted::IdentityFull(..) => {
                crate::gateway::audit::Outcome::Overloaded
            }
        }
    }
}

/// Why an open tunnel was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// By an operator: who asked and why.
    Disconnected {
        /// The requester (user and uid).
        by: String,
        /// The reason given.
        reason: String,
    },
    /// The client certificate's notAfter passed.
    Expired,
}

struct Entry {
    info: Arc<SessionInfo>,
    started_unix: i64,
    started: Instant,
    counters: Arc<Counters>,
    token: CancellationToken,
    cut: Arc<Mutex<Option<Cut>>>,
}

/// What a block matches on.
#[derive(Debug, Clone)]
enum BlockKey {
    Pattern(IdentitySelector),
    Serial(String),
    Fingerprint(String),
}

struct Block {
    key: BlockKey,
    until: Instant,
    until_unix: i64,
}

#[derive(Default)]
struct Inner {
    open: HashMap<u64, Entry>,
    blocks: Vec<Block>,
    next: u64,
}

/// The registry; cheap to share (`Arc` inside).
#[derive(Default, Clone)]
pub struct Sessions {
    inner: Arc<Mutex<Inner>>,
}

/// One admitted tunnel; leaves the registry when dropped.
pub struct SessionGuard {
    id: u64,
    counters: Arc<Counters>,
    token: CancellationToken,
    cut: Arc<Mutex<Option<Cut>>>,
    not_after: Option<i64>,
    inner: Arc<Mutex<Inner>>,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::util::sync::lock(&self.inner)
    }

    /// Admits a tunnel unless its identity is blocked or a cap of `limits` is reached.
    pub fn admit(&self, info: SessionInfo, limits: Limits) -> Result<SessionGuard, NotAdmitted> {
        let mut g = self.lock();
        let now = Instant::now();
        g.blocks.retain(|b| b.until > now);
        if let Some(b) = g.blocks.iter().find(|b| b.key.matches(&info.identity)) {
            return Err(NotAdmitted::Blocked {
                until: b.until_unix,
            });
        }
        let same_backend = || g.open.values().filter(|e| e.info.backend == info.backend);
        if let Some(max) = limits.backend {
            if same_backend().count() >= max {
                return Err(NotAdmitted::BackendFull(info.backend.clone(), max));
            }
        }
        if let Some(max) = limits.per_identity {
            let key = identity_key(&info.identity);
            if same_backend()
                .filter(|e| identity_key(&e.info.identity) == key)
                .count()
                >= max
            {
                return Err(NotAdmitted::IdentityFull(info.backend.clone(), max));
            }
        }
        g.next += 1;
        let id = g.next;
        let entry = Entry::new(info);
        let guard = SessionGuard {
            id,
            counters: entry.counters.clone(),
            token: entry.token.clone(),
            cut: entry.cut.clone(),
            not_after: entry.info.not_after,
            inner: self.inner.clone(),
        };
        g.open.insert(id, entry);
        Ok(guard)
    }

    /// The open tunnels matching the filters, oldest first.
    pub fn list(
        &self,
        backend: Option<&str>,
        identity: Option<&IdentitySelector>,
    ) -> Vec<SessionView> {
        let g = self.lock();
        let mut v: Vec<SessionView> = g
            .open
            .iter()
            .filter(|(_, e)| backend.map_or(true, |b| e.info.backend == b))
            .filter(|(_, e)| identity.map_or(true, |p| p.matches(&e.info.identity)))
            .map(|(id, e)| e.view(*id))
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Cuts every open tunnel `sel` matches, recording who asked and why; with `block_for`,
    /// also refuses new tunnels of the same identities until then. Returns how many were cut
    /// and the end of the block (Unix seconds); cuts nothing when the end of the block cannot
    /// be represented (never within [`super::protocol::MAX_BLOCK_FOR`]).
    pub fn disconnect(
        &self,
        sel: &Selector,
        by: &str,
        reason: &str,
        block_for: Option<BlockFor>,
    ) -> Result<(usize, Option<i64>), BlockTooLong> {
        let block = block_for.map(block_end).transpose()?;
        let mut g = self.lock();
        let mut cut = 0;
        let mut fingerprints = Vec::new();
        for (id, e) in &g.open {
            if !sel.matches(*id, &e.info) || e.token.is_cancelled() {
                continue;
            }
            *crate::util::sync::lock(&e.cut) = Some(Cut::Disconnected {
                by: by.to_string(),
                reason: reason.to_string(),
            });
            e.token.cancel();
            fingerprints.push(e.info.identity.sha256.clone());
            cut += 1;
        }
        let Some((until, until_unix)) = block else {
            return Ok((cut, None));
        };
        let keys = match sel {
            Selector::Identity(p) => vec![BlockKey::Pattern(p.clone())],
            Selector::Serial(s) => vec![BlockKey::Serial(normalize_serial(s))],
            Selector::Id(_) | Selector::Backend(_) => fingerprints
                .into_iter()
                .map(BlockKey::Fingerprint)
                .collect(),
        };
        for key in keys {
            g.blocks.push(Block {
                key,
                until,
                until_unix,
            });
        }
        Ok((cut, Some(until_unix)))
    }

    /// How many tunnels are open.
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// Whether no tunnel is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Entry {
    fn new(info: SessionInfo) -> Entry {
        Entry {
            info: Arc::new(info),
            started_unix: unix_now(),
            started: Instant::now(),
            counters: Arc::new(Counters::new()),
            token: CancellationToken::new(),
            cut: Arc::new(Mutex::new(None)),
        }
    }

    fn view(&self, id: u64) -> SessionView {
        let i = &self.info;
        SessionView {
            id,
            peer: i.peer.to_string(),
            subject: i.identity.subject.clone(),
            sans: i.identity.sans(),
            serial: i.identity.serial.clone(),
            sha256: i.identity.sha256.clone(),
            backend: i.backend.clone(),
            started: self.started_unix,
            duration_ms: self.started.elapsed().as_millis() as u64,
            bytes_up: self
                .counters
                .a_to_b
                .load(std::sync::atomic::Ordering::Relaxed),
            bytes_down: self
                .counters
                .b_to_a
                .load(std::sync::atomic::Ordering::Relaxed),
            idle_ms: self.counters.idle_for().as_millis() as u64,
            resumed: i.resumed,
            not_after: i.not_after,
        }
    }
}

impl SessionGuard {
    /// The tunnel's id in `sessions` and `disconnect --id`.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The counters the copy loop must count into.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Completes when an operator cuts the tunnel, or (with `expiry`) when the client
    /// certificate's notAfter passes.
    pub async fn cut(&self, expiry: bool) {
        let wait = match self.not_after.filter(|_| expiry) {
            Some(t) => until_unix(t),
            None => None,
        };
        match wait {
            Some(d) => {
                tokio::select! {
                    _ = self.token.cancelled() => {}
                    _ = tokio::time::sleep(d) => {
                        crate::util::sync::lock(&self.cut).get_or_insert(Cut::Expired);
                    }
                }
            }
            None => self.token.cancelled().await,
        }
    }

    /// Why the tunnel was cut, if it was.
    pub fn why(&self) -> Option<Cut> {
        crate::util::sync::lock(&self.cut).clone()
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        crate::util::sync::lock(&self.inner).open.remove(&self.id);
    }
}

impl BlockKey {
    fn matches(&self, id: &Identity) -> bool {
        match self {
            BlockKey::Pattern(p) => p.matches(id),
            BlockKey::Serial(s) => normalize_serial(&id.serial) == *s,
            BlockKey::Fingerprint(f) => id.sha256 == *f,
        }
    }
}

impl Selector {
    /// Whether this selector picks tunnel `id` with `info`.
    pub fn matches(&self, id: u64, info: &SessionInfo) -> bool {
        match self {
            Selector::Id(n) => *n == id,
            Selector::Identity(p) => p.matches(&info.identity),
            Selector::Backend(b) => info.backend.eq_ignore_ascii_case(b),
            Selector::Serial(s) => normalize_serial(&info.identity.serial) == normalize_serial(s),
        }
    }
}

/// What counts as "the same identity" for `max_connections_per_identity`: subject and SANs
/// (a renewed certificate is the same client).
fn identity_key(id: &Identity) -> String {
    format!("{}\u{0}{}", id.subject, id.sans())
}

/// Upper-case hex without leading zeros or colons, so `0a:1b`, `A1B` and `0A1B` compare equal.
pub(crate) fn normalize_serial(s: &str) -> String {
    let hex: String = s
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let t = hex.trim_start_matches('0');
    if t.is_empty() {
        "0".into()
    } else {
        t.to_string()
    }
}

/// When a block of `b` from now ends: as an `Instant` and in Unix seconds, with checked
/// arithmetic (the duration came from the admin socket).
fn block_end(b: BlockFor) -> Result<(Instant, i64), BlockTooLong> {
    let d = b.duration();
    let too_long = || BlockTooLong { secs: d.as_secs() };
    let until = Instant::now().checked_add(d).ok_or_else(too_long)?;
    let until_unix = i64::try_from(d.as_secs())
        .ok()
        .and_then(|s| unix_now().checked_add(s))
        .ok_or_else(too_long)?;
    Ok((until, until_unix))
}

/// Time left until Unix second `t` (zero when past).
fn until_unix(t: i64) -> Option<Duration> {
    let at = UNIX_EPOCH.checked_add(Duration::from_secs(t.max(0) as u64))?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests;
