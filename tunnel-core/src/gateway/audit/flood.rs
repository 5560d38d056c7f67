//! Rate limit for the audit lines of connections refused before the client proved an
//! identity (garbage, wrong CA, unknown SNI, handshake timeout): anyone can cause those at no
//! cost, so one WARN line each would let a single address flood the log.
//!
//! Per source (an IPv4 address, or an IPv6 /64, which one attacker usually holds whole), at
//! most [`BURST`] such lines are written per [`PERIOD`]; the rest are counted, and at the end
//! of the period one line per source says how many were left out and with which results.
//! Metrics are counted before this and stay exact. Connections of verified clients (ok,
//! denied by a rule, revoked...) are always logged.

use super::{AuditRecord, Outcome};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, Weak};
use std::time::Duration;

/// Lines of refused connections written per source and period.
pub(crate) const BURST: u32 = 10;
/// How often suppressed lines are reported (and the per-source budgets renewed).
pub(crate) const PERIOD: Duration = Duration::from_secs(10);
/// Sources tracked one by one per period; beyond, they share one budget.
const MAX_SOURCES: usize = 4096;

/// Where refused connections come from, as the limit counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// An IPv4 address (also IPv4-mapped IPv6).
    V4(std::net::Ipv4Addr),
    /// An IPv6 /64 prefix.
    V6Net(Ipv6Addr),
    /// Every source beyond [`MAX_SOURCES`] in one period.
    Other,
}

impl Source {
    /// The source of a peer address.
    pub(crate) fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(a) => Source::V4(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6Net(Ipv6Addr::from(u128::from(a) & !((1u128 << 64) - 1))),
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::V4(a) => write!(f, "{a}"),
            Source::V6Net(a) => write!(f, "{a}/64"),
            Source::Other => f.write_str("other sources"),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    logged: u32,
    suppressed: BTreeMap<&'static str, u64>,
}

/// What one source had suppressed in the period that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Suppressed {
    /// The source.
    pub source: Source,
    /// Lines left out.
    pub count: u64,
    /// `result=count` pairs, e.g. `handshake_failed=40,timeout=2`.
    pub results: String,
}

/// The per-source budget of audit lines for refused, unauthenticated connections.
#[derive(Debug)]
pub(crate) struct FloodLimit {
    burst: u32,
    sources: Mutex<HashMap<Source, Counts>>,
}

impl Default for FloodLimit {
    fn default() -> Self {
        FloodLimit::new(BURST)
    }
}

impl FloodLimit {
    /// A limit of `burst` lines per source and period.
    pub(crate) fn new(burst: u32) -> FloodLimit {
        FloodLimit {
            burst,
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// Emits the audit event of `rec`, unless it is an unauthenticated refusal from a
    /// source that used up its budget this period (then it is only counted).
    pub(crate) fn finish(&self, rec: AuditRecord, outcome: Outcome) {
        if !is_limited(&rec, outcome) || self.admit(rec.peer.ip(), outcome) {
            rec.finish(outcome);
        }
    }

    /// Whether a line for `outcome` from `ip` may be written now (counted either way).
    pub(crate) fn admit(&self, ip: IpAddr, outcome: Outcome) -> bool {
        let mut m = crate::util::sync::lock(&self.sources);
        let mut source = Source::of(ip);
        if !m.contains_key(&source) && m.len() >= MAX_SOURCES {
            source = Source::Other;
        }
        let c = m.entry(source).or_default();
        if c.logged < self.burst {
            c.logged += 1;
            return true;
        }
        *c.suppressed.entry(outcome.as_str()).or_default() += 1;
        false
    }

    /// Ends the period: returns what each source had suppressed and renews every budget.
    pub(crate) fn end_period(&self) -> Vec<Suppressed> {
        let mut m = crate::util::sync::lock(&self.sources);
        let mut out: Vec<Suppressed> = m
            .drain()
            .filter(|(_, c)| !c.suppressed.is_empty())
            .map(|(source, c)| Suppressed {
                source,
                count: c.suppressed.values().sum(),
                results: c
                    .suppressed
                    .iter()
                    .map(|(r, n)| format!("{r}={n}"))
                    .collect::<Vec<_>>()
                    .join(","),
            })
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.count));
        out
    }

    /// Ends the period and writes one WARN line (target `audit`) per source that had lines
    /// suppressed.
    pub(crate) fn report(&self) {
        for s in self.end_period() {
            tracing::warn!(
                target: "audit",
                source = %s.source, suppressed = s.count, results = %s.results,
                period_secs = PERIOD.as_secs(),
                "audit lines of refused connections suppressed (at most {} per source every {}s; metrics count them all)",
                self.burst, PERIOD.as_secs()
            );
        }
    }
}

/// Whether `outcome` is an unauthenticated refusal: the connection ended before the client
/// proved an identity.
fn is_limited(rec: &AuditRecord, outcome: Outcome) -> bool {
    rec.identity.is_none()
        && matches!(
            outcome,
            Outcome::HandshakeFailed | Outcome::Timeout | Outcome::Denied
        )
}

/// Reports and renews `limit` every [`PERIOD`] until it is dropped.
pub(crate) async fn run(limit: Weak<FloodLimit>) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PERIOD, PERIOD);
    loop {
        tick.tick().await;
        let Some(l) = limit.upgrade() else { return };
        l.report();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_gets_its_burst_then_is_counted() {
        let l = FloodLimit::new(3);
        let a = ip("192.0.2.1");
        let admitted = (0..10)
            .filter(|i| {
                let o = if i % 2 == 0 {
                    Outcome::HandshakeFailed
                } else {
                    Outcome::Timeout
                };
                l.admit(a, o)
            })
            .count();
        assert_eq!(admitted, 3);
        // Another source has its own budget.
        assert!(l.admit(ip("192.0.2.2"), Outcome::HandshakeFailed));
        let report = l.end_period();
        assert_eq!(
            report,
            vec![Suppressed {
                source: Source::V4("192.0.2.1".parse().unwrap()),
                count: 7,
                results: "handshake_failed=3,timeout=4".into(),
            }]
        );
        // A new period, a new budget; nothing left to report.
        assert!(l.admit(a, Outcome::HandshakeFailed));
        assert!(l.end_period().is_empty());
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
        let cases = [
            ("192.0.2.7", "192.0.2.7"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
            ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
            ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ];
        for (addr, want) in cases {
            assert_eq!(Source::of(ip(addr)).to_string(), want, "{addr}");
        }
        let l = FloodLimit::new(1);
        assert!(l.admit(ip("2001:db8::1"), Outcome::HandshakeFailed));
        assert!(!l.admit(ip("2001:db8::2"), Outcome::HandshakeFailed));
    }

    #[test]
    fn beyond_max_sources_every_new_source_shares_one_budget() {
        let l = FloodLimit::new(1);
        for i in 0..MAX_SOURCES as u32 {
            assert!(l.admit(IpAddr::from(i.to_be_bytes()), Outcome::HandshakeFailed));
        }
        let extra = |i: u32| IpAddr::from((0xC000_0000u32 + i).to_be_bytes());
        assert!(l.admit(extra(1), Outcome::HandshakeFailed));
        assert!(!l.admit(extra(2), Outcome::Timeout));
        let r = l.end_period();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].source, Source::Other);
    }

    #[test]
    fn verified_clients_and_other_results_are_never_limited() {
        let mut rec = AuditRecord::new("192.0.2.1:1".parse().unwrap());
        assert!(is_limited(&rec, Outcome::HandshakeFailed));
        assert!(is_limited(&rec, Outcome::Denied));
        assert!(!is_limited(&rec, Outcome::Error));
        assert!(!is_limited(&rec, Outcome::Overloaded));
        rec.identity = Some(Default::default());
        for o in [
            Outcome::Denied,
            Outcome::Revoked,
            Outcome::Timeout,
            Outcome::Ok,
        ] {
            assert!(!is_limited(&rec, o), "{o}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn budgets_are_renewed_every_period() {
        let l = Arc::new(FloodLimit::new(1));
        tokio::spawn(run(Arc::downgrade(&l)));
        let a = ip("192.0.2.1");
        assert!(l.admit(a, Outcome::HandshakeFailed));
        assert!(!l.admit(a, Outcome::HandshakeFailed));
        tokio::time::sleep(PERIOD / 2).await;
        assert!(!l.admit(a, Outcome::HandshakeFailed));
        tokio::time::sleep(PERIOD / 2 + Duration::from_millis(10)).await;
        assert!(
            l.admit(a, Outcome::HandshakeFailed),
            "not renewed after a period"
        );
    }
}
