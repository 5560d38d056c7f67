//! Which HTTP connections may stay open: a cap overall and per source address, and when a
//! newcomer would pass one, the oldest connection that has not yet sent a complete request
//! is closed for it (see [`super::serve`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

struct Entry {
    ip: IpAddr,
    cut: CancellationToken,
    requested: Arc<AtomicBool>,
}

type Map = Arc<Mutex<BTreeMap<u64, Entry>>>;

/// Open connections, oldest first (ids grow with time).
pub(crate) struct Registry {
    next: AtomicU64,
    map: Map,
    max_open: usize,
    max_per_source: usize,
}

/// One open connection; leaves the registry when dropped.
pub(crate) struct Slot {
    id: u64,
    /// Cancelled when the connection is closed to make room (or at shutdown).
    pub cut: CancellationToken,
    requested: Arc<AtomicBool>,
    map: Map,
}

impl Slot {
    /// Marks the connection as having sent a complete request: it is no longer closed for a
    /// newcomer.
    pub(super) fn requested(&self) {
        self.requested.store(true, Ordering::Release);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        crate::util::sync::lock(&self.map).remove(&self.id);
    }
}

impl Registry {
    pub(crate) fn new(max_open: usize, max_per_source: usize) -> Registry {
        Registry {
            next: AtomicU64::new(0),
            map: Map::default(),
            max_open: max_open.max(1),
            max_per_source: max_per_source.max(1),
        }
    }

    /// Registers a connection from `ip`, first closing the oldest idle connection of that
    /// source (or overall) when a cap is reached. `None`: no room could be made.
    pub(crate) fn admit(&self, ip: IpAddr) -> Option<Slot> {
        let mut m = crate::util::sync::lock(&self.map);
        if m.values().filter(|e| e.ip == ip).count() >= self.max_per_source
            && !evict_oldest_idle(&mut m, Some(ip))
        {
            return None;
        }
        if m.len() >= self.max_open && !evict_oldest_idle(&mut m, None) {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            id,
            cut: CancellationToken::new(),
            requested: Arc::default(),
            map: self.map.clone(),
        };
        m.insert(
            id,
            Entry {
                ip,
                cut: slot.cut.clone(),
                requested: slot.requested.clone(),
            },
        );
        Some(slot)
    }

    /// Closes every connection that has not sent a request (at shutdown).
    pub(crate) fn close_idle(&self) {
        let mut m = crate::util::sync::lock(&self.map);
        while evict_oldest_idle(&mut m, None) {}
    }
}

/// Closes and forgets the oldest connection (of `ip`, when given) that has not sent a
/// complete request; false when there is none.
fn evict_oldest_idle(m: &mut BTreeMap<u64, Entry>, ip: Option<IpAddr>) -> bool {
    let victim = m
        .iter()
        .find(|(_, e)| ip.map_or(true, |ip| e.ip == ip) && !e.requested.load(Ordering::Acquire))
        .map(|(id, _)| *id);
    match victim.and_then(|id| m.remove(&id)) {
        Some(e) => {
            e.cut.cancel();
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_source_over_its_cap_loses_its_oldest_idle_connection() {
        let r = Registry::new(10, 2);
        let a1 = r.admit(ip(1)).unwrap();
        let a2 = r.admit(ip(1)).unwrap();
        let b1 = r.admit(ip(2)).unwrap();
        let a3 = r.admit(ip(1)).unwrap();
        assert!(a1.cut.is_cancelled(), "the oldest of source 1 makes room");
        assert!(!a2.cut.is_cancelled() && !a3.cut.is_cancelled());
        assert!(!b1.cut.is_cancelled(), "another source is untouched");
    }

    #[test]
    fn a_connection_with_a_request_is_never_closed_for_a_newcomer() {
        let r = Registry::new(2, 2);
        let busy = r.admit(ip(1)).unwrap();
        busy.requested();
        let idle = r.admit(ip(1)).unwrap();
        let new = r.admit(ip(1)).unwrap();
        assert!(!busy.cut.is_cancelled());
        assert!(idle.cut.is_cancelled());
        new.requested();
        assert!(r.admit(ip(1)).is_none(), "no idle connection left to close");
        assert!(r.admit(ip(3)).is_none(), "the overall cap holds too");
        drop(busy);
        assert!(
            r.admit(ip(3)).is_some(),
            "a closed connection frees its place"
        );
    }

    #[test]
    fn the_overall_cap_closes_the_oldest_idle_of_any_source() {
        let r = Registry::new(2, 5);
        let a = r.admit(ip(1)).unwrap();
        let b = r.admit(ip(2)).unwrap();
        let c = r.admit(ip(3)).unwrap();
        assert!(a.cut.is_cancelled() && !b.cut.is_cancelled() && !c.cut.is_cancelled());
        r.close_idle();
        assert!(b.cut.is_cancelled() && c.cut.is_cancelled());
    }
}
