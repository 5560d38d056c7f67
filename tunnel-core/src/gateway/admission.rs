//! Admission control: the connection limit (`max_connections`, resizable by a reload), the
//! handshakes in progress (so that a flood of stalled handshakes cannot keep legitimate
//! clients out), the open tunnels (so that a reload can cut those its CRLs revoke), and the
//! rate-limited audit of refusals at the limit.
//!
//! Handshakes and tunnels are entries of one [`Registry`]: each is cancellable and leaves the
//! registry when its [`Guard`] drops. Time comes from `tokio::time`, so eviction is tested on
//! paused time.

use crate::gateway::audit::{AuditRecord, Outcome};
use crate::metrics::Metrics;
use openssl::x509::X509;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A cap on concurrent connections that a reload can raise or lower.
#[derive(Debug)]
pub struct Limit {
    sem: Arc<Semaphore>,
    size: AtomicUsize,
}

impl Limit {
    /// A limit of `n` connections.
    pub fn new(n: usize) -> Limit {
        Limit {
            sem: Arc::new(Semaphore::new(n)),
            size: AtomicUsize::new(n),
        }
    }

    /// A slot, or `None` when the limit is reached.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.sem.clone().try_acquire_owned().ok()
    }

    /// A slot, waiting at most `d` for one to free up.
    pub async fn acquire_within(&self, d: Duration) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout(d, self.sem.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Changes the limit; open connections are never cut, a lower limit takes effect as they
    /// end.
    pub fn resize(&self, n: usize) {
        let old = self.size.swap(n, Ordering::SeqCst);
        if n > old {
            self.sem.add_permits(n - old);
        } else if n < old {
            let sem = self.sem.clone();
            let diff = (old - n) as u32;
            tokio::spawn(async move {
                if let Ok(p) = sem.acquire_many_owned(diff).await {
                    p.forget();
                }
            });
        }
    }
}

type Entries<V> = Arc<Mutex<BTreeMap<u64, (V, CancellationToken)>>>;

/// Cancellable entries in registration order, each removed when its [`Guard`] drops.
pub(crate) struct Registry<V> {
    next: AtomicU64,
    entries: Entries<V>,
}

impl<V> Default for Registry<V> {
    fn default() -> Self {
        Registry {
            next: AtomicU64::new(0),
            entries: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }
}

/// One entry of a [`Registry`]; leaves it when dropped.
pub(crate) struct Guard<V> {
    id: u64,
    /// Cancelled when the entry is evicted or cut.
    pub token: CancellationToken,
    entries: Entries<V>,
}

impl<V> Guard<V> {
    /// Replaces the entry's value.
    pub(crate) fn set(&self, value: V) {
        if let Some(e) = crate::util::sync::lock(&self.entries).get_mut(&self.id) {
            e.0 = value;
        }
    }
}

impl<V> Drop for Guard<V> {
    fn drop(&mut self) {
        crate::util::sync::lock(&self.entries).remove(&self.id);
    }
}

impl<V> Registry<V> {
    /// Adds `value`, after letting `make_room` act on the entries first.
    fn register_with(
        &self,
        value: V,
        make_room: impl FnOnce(&mut BTreeMap<u64, (V, CancellationToken)>),
    ) -> Guard<V> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        let mut m = crate::util::sync::lock(&self.entries);
        make_room(&mut m);
        m.insert(id, (value, token.clone()));
        Guard {
            id,
            token,
            entries: self.entries.clone(),
        }
    }

    /// Adds `value`.
    pub(crate) fn register(&self, value: V) -> Guard<V> {
        self.register_with(value, |_| {})
    }

    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        crate::util::sync::lock(&self.entries).len()
    }

    /// Whether there is no entry.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cancels every entry whose value matches `pred` and that is not cancelled yet; returns
    /// how many.
    pub(crate) fn cancel_where(&self, pred: impl Fn(&V) -> bool) -> usize {
        let m = crate::util::sync::lock(&self.entries);
        let mut n = 0;
        for (v, token) in m.values() {
            if !token.is_cancelled() && pred(v) {
                token.cancel();
                n += 1;
            }
        }
        n
    }
}

/// A handshake pending this long is fair game for eviction under pressure; real clients
/// finish in milliseconds.
pub(crate) const STALLED: Duration = Duration::from_secs(1);

/// Handshakes in progress, oldest first: beyond `max_handshakes`, the oldest handshakes
/// pending for longer than [`STALLED`] are closed to make room.
#[derive(Default)]
pub(crate) struct PendingHandshakes(Registry<Instant>);

/// Closes the oldest entry if it has been pending for [`STALLED`]; returns whether it did.
fn evict_oldest(m: &mut BTreeMap<u64, (Instant, CancellationToken)>) -> bool {
    let Some((&oldest, (since, _))) = m.iter().next() else {
        return false;
    };
    if since.elapsed() < STALLED {
        return false;
    }
    if let Some((_, t)) = m.remove(&oldest) {
        t.cancel();
    }
    true
}

impl PendingHandshakes {
    /// Registers a handshake starting now, first evicting stalled ones while `cap` are
    /// pending.
    pub(crate) fn start(&self, cap: usize) -> Guard<Instant> {
        self.0.register_with(
            Instant::now(),
            |m| {
                while m.len() >= cap && evict_oldest(m) {}
            },
        )
    }

    /// Closes the oldest handshake if it has been pending longer than [`STALLED`]; returns
    /// whether one was closed.
    pub(crate) fn evict_stalled(&self) -> bool {
        evict_oldest(&mut crate::util::sync::lock(&self.0.entries))
    }

    /// Handshakes pending.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no handshake is pending.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Open tunnels and their clients' verified chains (leaf first), so that a reload can close
/// those its CRLs revoke: the client certificate or a CA that issued it.
#[derive(Default)]
pub(crate) struct LiveConns(Registry<Vec<X509>>);

impl LiveConns {
    /// Registers a tunnel of a client with `chain`.
    pub(crate) fn register(&self, chain: Vec<X509>) -> Guard<Vec<X509>> {
        self.0.register(chain)
    }

    /// Cancels every open tunnel whose chain `revoked` says is revoked (the client
    /// certificate or a CA above it); returns how many.
    pub(crate) fn cut_revoked(&self, revoked: impl Fn(&[X509]) -> bool) -> usize {
        self.0.cancel_where(|chain| revoked(chain))
    }
}

/// Refusals at `max_connections`: each counted, audited at most once per second (a flood
/// must not flood the log).
#[derive(Default)]
pub(crate) struct Overload {
    last_logged: Mutex<Option<Instant>>,
}

impl Overload {
    /// Counts and (rate-limited) audits a connection from `peer` refused at the limit.
    pub(crate) fn refuse(&self, metrics: &Metrics, peer: SocketAddr) {
        metrics.connection("", Outcome::Overloaded.as_str());
        if self.log_now() {
            let mut rec = AuditRecord::new(peer);
            rec.reason = "max_connections reached; connection refused (further refusals this second not logged)".into();
            rec.finish(Outcome::Overloaded);
        }
    }

    /// Whether a refusal now should be audited: the first one, then one a second at most.
    fn log_now(&self) -> bool {
        let now = Instant::now();
        let mut last = crate::util::sync::lock(&self.last_logged);
        match *last {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests;
