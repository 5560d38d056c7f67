//! The client agent's choice of gateway when several serve it: `server = ["gw1:8443",
//! "gw2:8443"]`, or a DNS name with several addresses.
//!
//! Each connection tries the addresses in order, skipping those that failed recently; a
//! failed address (connect refused or timed out, TLS handshake failed) is passed over for a
//! backoff that doubles from [`BACKOFF_MIN`] to [`BACKOFF_MAX`] and is forgotten at its first
//! success. When every address is backing off they are still tried, soonest-due first, so a
//! fleet that comes back is used at once. One connection gives up after `failover_timeout`.
//! DNS names are resolved again for each connection, through a cache of [`DNS_CACHE`] (the
//! system resolver does not tell the record's TTL), so that a changed record is followed.

use crate::config::ConfigError;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// Default bound on the time one connection spends trying gateways.
pub(crate) const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(15);
/// First backoff of an address that failed.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest backoff.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long resolved addresses of a name are reused.
pub(crate) const DNS_CACHE: Duration = Duration::from_secs(5);
/// Pause between two rounds over every address.
const ROUND_PAUSE: Duration = Duration::from_millis(200);

/// Checks the `server` list: non-empty, each `host:port`.
pub(crate) fn validate_servers(file: &Path, list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    let list: Vec<String> = list.into_iter().map(|s| s.trim().to_string()).collect();
    if list.is_empty() || list.iter().all(String::is_empty) {
        return Err(ConfigError::new(
            file,
            "server",
            "missing; the gateway's host:port, e.g. \"gateway.example.com:8443\", or a list of them",
        ));
    }
    for (i, s) in list.iter().enumerate() {
        if !crate::config::valid_host_port(s) {
            let key = if list.len() == 1 {
                "server".to_string()
            } else {
                format!("server[{i}]")
            };
            return Err(ConfigError::new(
                file,
                key,
                format!("{s:?} is not host:port"),
            ));
        }
    }
    Ok(list)
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: Instant,
    next: Duration,
}

/// Failure memory and DNS cache of one client agent (kept across reloads).
#[derive(Debug, Default)]
pub(crate) struct Failover {
    backoff: Mutex<HashMap<SocketAddr, Backoff>>,
    dns: Mutex<HashMap<String, (Instant, Vec<SocketAddr>)>>,
}

impl Failover {
    /// Connects through the first address of `servers` that works, calling `attempt` for
    /// each address tried (it applies its own per-attempt deadline); gives up after `total`
    /// with the last error.
    pub(crate) async fn connect<T, E, F, Fut>(
        &self,
        servers: &[String],
        total: Duration,
        mut attempt: F,
    ) -> Result<T, Failed>
    where
        E: std::fmt::Display,
        F: FnMut(SocketAddr) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        // `total` comes from the config: a duration past what `Instant` holds means no limit,
        // not a panic.
        let deadline = Instant::now().checked_add(total);
        let time_left = || {
            deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            })
        };
        let mut last = None;
        let mut failures = 0usize;
        loop {
            let addrs = self.candidates(servers, &mut last).await;
            for addr in addrs {
                let left = time_left();
                if left.is_zero() {
                    return Err(Failed { last, failures });
                }
                match tokio::time::timeout(left, attempt(addr)).await {
                    Ok(Ok(v)) => {
                        self.succeeded(addr);
                        if failures > 0 {
                            info!(gateway = %addr, failed_attempts = failures, "connected after failing over");
                        }
                        return Ok(v);
                    }
                    Ok(Err(e)) => {
                        warn!(gateway = %addr, error = %e, "gateway failed; trying the next");
                        self.failed(addr);
                        failures += 1;
                        last = Some(e.to_string());
                    }
                    Err(_) => {
                        self.failed(addr);
                        failures += 1;
                        last = Some(format!("{addr}: no connection within failover_timeout"));
                    }
                }
            }
            let left = time_left();
            if left.is_zero() {
                return Err(Failed { last, failures });
            }
            tokio::time::sleep(ROUND_PAUSE.min(left)).await;
        }
    }

    /// Every address of `servers` in the order to try: healthy ones in configured order,
    /// then those backing off, soonest due first.
    async fn candidates(&self, servers: &[String], last: &mut Option<String>) -> Vec<SocketAddr> {
        let mut all: Vec<SocketAddr> = Vec::new();
        for s in servers {
            match self.resolve(s).await {
                Ok(v) => all.extend(
                    v.into_iter()
                        .filter(|a| !all.contains(a))
                        .collect::<Vec<_>>(),
                ),
                Err(e) => *last = Some(format!("cannot resolve {s}: {e}")),
            }
        }
        let now = Instant::now();
        let b = crate::util::sync::lock(&self.backoff).clone();
        let due = |a: &SocketAddr| b.get(a).map(|x| x.until).filter(|t| *t > now);
        let (mut later, mut out): (Vec<_>, Vec<_>) =
            all.into_iter().partition(|a| due(a).is_some());
        later.sort_by_key(|a| due(a));
        out.extend(later);
        out
    }

    async fn resolve(&self, server: &str) -> std::io::Result<Vec<SocketAddr>> {
        if let Ok(a) = server.parse::<SocketAddr>() {
            return Ok(vec![a]);
        }
        let cached = crate::util::sync::lock(&self.dns).get(server).cloned();
        if let Some((at, v)) = cached {
            if at.elapsed() < DNS_CACHE {
                return Ok(v);
            }
        }
        let v: Vec<SocketAddr> = tokio::net::lookup_host(server).await?.collect();
        crate::util::sync::lock(&self.dns).insert(server.to_string(), (Instant::now(), v.clone()));
        Ok(v)
    }

    fn failed(&self, addr: SocketAddr) {
        let mut m = crate::util::sync::lock(&self.backoff);
        let b = m.entry(addr).or_insert(Backoff {
            until: Instant::now(),
            next: BACKOFF_MIN,
        });
        b.until = Instant::now() + b.next;
        b.next = (b.next * 2).min(BACKOFF_MAX);
    }

    fn succeeded(&self, addr: SocketAddr) {
        crate::util::sync::lock(&self.backoff).remove(&addr);
    }
}

/// Every gateway failed within `failover_timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The last error seen, as text.
    pub last: Option<String>,
    /// How many attempts failed.
    pub failures: usize,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no gateway answered within failover_timeout ({} attempts failed); last error: {}",
            self.failures,
            self.last
                .as_deref()
                .unwrap_or("none (no time left for an attempt)")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn skips_a_failed_address_until_its_backoff_ends() {
        let f = Failover::default();
        let list = servers(&["127.0.0.1:1", "127.0.0.1:2"]);
        let down: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let tried = Mutex::new(Vec::new());
        let attempt = |a: SocketAddr| {
            tried.lock().unwrap().push(a.port());
            async move {
                if a == down {
                    Err("refused")
                } else {
                    Ok(a)
                }
            }
        };
        let total = Duration::from_secs(5);
        assert_eq!(f.connect(&list, total, attempt).await.unwrap().port(), 2);
        // The failed address waits out its backoff (1s), then is tried first again.
        assert_eq!(f.connect(&list, total, attempt).await.unwrap().port(), 2);
        tokio::time::advance(BACKOFF_MIN + Duration::from_millis(1)).await;
        assert_eq!(f.connect(&list, total, attempt).await.unwrap().port(), 2);
        assert_eq!(*tried.lock().unwrap(), vec![1, 2, 2, 1, 2]);
        // The second failure doubles the backoff.
        tokio::time::advance(Duration::from_millis(1500)).await;
        f.connect(&list, total, attempt).await.unwrap();
        assert_eq!(tried.lock().unwrap().last(), Some(&2));
        assert_eq!(tried.lock().unwrap().len(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_total_beyond_the_clock_means_no_limit() {
        let f = Failover::default();
        let list = servers(&["127.0.0.1:1"]);
        let r = f
            .connect(&list, Duration::MAX, |a| async move { Ok::<_, String>(a) })
            .await;
        assert_eq!(r.unwrap().port(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_total_time_and_says_why() {
        let f = Failover::default();
        let list = servers(&["127.0.0.1:1", "127.0.0.1:2"]);
        let start = Instant::now();
        let r: Result<(), Failed> = f
            .connect(&list, Duration::from_secs(3), |a| async move {
                Err::<(), _>(format!("{a}: connection refused"))
            })
            .await;
        let e = r.unwrap_err();
        assert!(start.elapsed() >= Duration::from_secs(3));
        assert!(start.elapsed() < Duration::from_secs(4));
        assert!(e.failures >= 2, "{e}");
        assert!(e.to_string().contains("connection refused"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_gateway_cannot_take_more_than_the_total() {
        let f = Failover::default();
        let list = servers(&["127.0.0.1:1"]);
        let r: Result<(), Failed> = f
            .connect(&list, Duration::from_secs(2), |_| {
                std::future::pending::<Result<(), String>>()
            })
            .await;
        assert!(r.unwrap_err().to_string().contains("failover_timeout"));
    }

    #[test]
    fn server_lists_are_validated() {
        let file = Path::new("c.toml");
        assert_eq!(
            validate_servers(file, servers(&["gw:1", " gw2:2 "])).unwrap()[1],
            "gw2:2"
        );
        let e = validate_servers(file, servers(&["gw:1", "gw2"])).unwrap_err();
        assert_eq!(e.key, "server[1]");
        assert_eq!(validate_servers(file, vec![]).unwrap_err().key, "server");
    }
}
