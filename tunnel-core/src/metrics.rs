//! Prometheus metrics (OpenMetrics text via `prometheus-client`); the `endpoint` submodule is the small
//! HTTP endpoint that serves `/metrics` and `/healthz`.
//!
//! Metric names (prefix `tunnel_`): `connections_total{backend,result}`,
//! `active_connections{backend}`, `bytes_total{backend,direction}`,
//! `handshake_duration_seconds` (histogram), `handshake_failures_total{reason}`,
//! `reloads_total{result}`, `last_reload_success_timestamp_seconds`,
//! `certificate_expiry_seconds{which}` (own certificate `cert`, `ca`, and on the gateway the
//! earliest CRL nextUpdate `crl`), `max_connections` (the configured limit).
//!
//! `/metrics` answers in OpenMetrics when the scraper asks for it (Prometheus does), else in
//! the classic text format 0.0.4 (curl, `promtool check metrics`), whose counter families are
//! named with their `_total` suffix.

mod endpoint;

pub use endpoint::{bind, serve, Endpoint, MAX_OPEN, READ_TIMEOUT};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether the process is ready to serve (for `/healthz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// Loading configuration, binding.
    Starting = 0,
    /// Accepting connections.
    Serving = 1,
    /// Shutting down: no new connections.
    Draining = 2,
}

/// Every metric of one agent.
pub struct Metrics {
    registry: Mutex<Registry>,
    connections: Family<Labels, Counter>,
    active: Family<Labels, Gauge>,
    bytes: Family<Labels, Counter>,
    handshake_seconds: Histogram,
    handshake_failures: Family<Labels, Counter>,
    reloads: Family<Labels, Counter>,
    last_reload: Gauge<f64, std::sync::atomic::AtomicU64>,
    expiry: Family<Labels, Gauge>,
    max_connections: Gauge,
    /// Unix times of expiry, turned into "seconds from now" at each scrape.
    expiry_at: Mutex<Vec<(String, i64)>>,
    health: AtomicU8,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let metrics = Metrics {
            registry: Mutex::default(),
            connections: Family::default(),
            active: Family::default(),
            bytes: Family::default(),
            handshake_seconds: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            handshake_failures: Family::default(),
            reloads: Family::default(),
            last_reload: Gauge::default(),
            expiry: Family::default(),
            max_connections: Gauge::default(),
            expiry_at: Mutex::new(Vec::new()),
            health: AtomicU8::new(Health::Starting as u8),
        };
        // Registered in this order, which is the order of the scrape output.
        let mut r = Registry::with_prefix("tunnel");
        metrics.register_traffic(&mut r);
        metrics.register_handshakes(&mut r);
        metrics.register_operations(&mut r);
        Metrics {
            registry: Mutex::new(r),
            ..metrics
        }
    }

    /// Connections, open tunnels and bytes, by backend.
    fn register_traffic(&self, r: &mut Registry) {
        r.register(
            "connections",
            "Connections ended, by backend and result",
            self.connections.clone(),
        );
        r.register(
            "active_connections",
            "Tunnels currently open, by backend",
            self.active.clone(),
        );
        r.register(
            "bytes",
            "Bytes tunnelled, by backend and direction (up = client to backend)",
            self.bytes.clone(),
        );
    }

    /// Handshake durations and failures.
    fn register_handshakes(&self, r: &mut Registry) {
        r.register(
            "handshake_duration_seconds",
            "TLS handshake duration",
            self.handshake_seconds.clone(),
        );
        r.register(
            "handshake_failures",
            "Refused or failed handshakes, by reason",
            self.handshake_failures.clone(),
        );
    }

    /// What operators watch besides traffic: reloads, expiry, the connection cap.
    fn register_operations(&self, r: &mut Registry) {
        r.register(
            "reloads",
            "Configuration reloads, by result",
            self.reloads.clone(),
        );
        r.register(
            "last_reload_success_timestamp_seconds",
            "Unix time of the last successful (re)load",
            self.last_reload.clone(),
        );
        r.register(
            "certificate_expiry_seconds",
            "Seconds until expiry: own certificate (which=cert), CA (which=ca), CRL nextUpdate (which=crl)",
            self.expiry.clone(),
        );
        r.register(
            "max_connections",
            "Configured max_connections: connections served at once, more are refused",
            self.max_connections.clone(),
        );
    }

    /// Counts one ended connection.
    pub fn connection(&self, backend: &str, result: &str) {
        self.connections
            .get_or_create(&labels(&[("backend", backend), ("result", result)]))
            .inc();
    }

    /// Marks one tunnel open to `backend` until the guard drops.
    pub fn active_guard(self: &Arc<Self>, backend: &str) -> ActiveGuard {
        let g = self
            .active
            .get_or_create_owned(&labels(&[("backend", backend)]));
        g.inc();
        ActiveGuard { gauge: g }
    }

    /// The (up, down) byte counters of `backend`, to be bumped as bytes move.
    pub fn byte_counters(&self, backend: &str) -> (Counter, Counter) {
        (
            self.bytes
                .get_or_create_owned(&labels(&[("backend", backend), ("direction", "up")])),
            self.bytes
                .get_or_create_owned(&labels(&[("backend", backend), ("direction", "down")])),
        )
    }

    /// Records a handshake's duration.
    pub fn handshake(&self, d: Duration) {
        self.handshake_seconds.observe(d.as_secs_f64());
    }

    /// Counts a failed or refused handshake.
    pub fn handshake_failure(&self, reason: &str) {
        self.handshake_failures
            .get_or_create(&labels(&[("reason", reason)]))
            .inc();
    }

    /// Counts a (re)load.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads
            .get_or_create(&labels(&[("result", result)]))
            .inc();
        if ok {
            self.last_reload.set(crate::util::time::unix_now() as f64);
        }
    }

    /// Sets the expiry times (unix seconds) reported as `certificate_expiry_seconds`; series
    /// no longer configured (a CRL removed) disappear.
    pub fn set_expiries(&self, items: Vec<(String, i64)>) {
        let mut g = crate::util::sync::lock(&self.expiry_at);
        for (which, _) in g.iter() {
            if !items.iter().any(|(w, _)| w == which) {
                self.expiry.remove(&labels(&[("which", which)]));
            }
        }
        *g = items;
    }

    /// Sets the configured connection limit (at start and on every reload).
    pub fn set_max_connections(&self, n: usize) {
        self.max_connections
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets the health reported by `/healthz`.
    pub fn set_health(&self, h: Health) {
        self.health.store(h as u8, Ordering::Relaxed);
    }

    /// The current health.
    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Relaxed) {
            1 => Health::Serving,
            2 => Health::Draining,
            _ => Health::Starting,
        }
    }

    /// Every metric in the classic Prometheus text format 0.0.4.
    pub fn render_classic(&self) -> String {
        to_classic(&self.render())
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let now = crate::util::time::unix_now();
        for (which, at) in crate::util::sync::lock(&self.expiry_at).iter() {
            self.expiry
                .get_or_create(&labels(&[("which", which)]))
                .set(at - now);
        }
        let mut out = String::new();
        let _ = encode(&mut out, &crate::util::sync::lock(&self.registry));
        out
    }
}

/// OpenMetrics text to the classic text format: counter families take their samples'
/// `_total` name in `# HELP`/`# TYPE`, and `# UNIT`/`# EOF` lines go.
fn to_classic(om: &str) -> String {
    let counters: Vec<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + 64);
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let tail = if tail == "unknown" { "untyped" } else { tail };
                let suffix = if counters.contains(&name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Whether a request's `Accept` header asks for OpenMetrics (`application/openmetrics-text`).
pub(crate) fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// Decrements the active-connections gauge when dropped.
pub struct ActiveGuard {
    gauge: Gauge,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Arc::new(Metrics::new());
        m.connection("db", "ok");
        m.connection("db", "ok");
        m.connection("db", "denied");
        let (up, down) = m.byte_counters("db");
        up.inc_by(10);
        down.inc_by(20);
        {
            let _g = m.active_guard("db");
            assert!(m
                .render()
                .contains("tunnel_active_connections{backend=\"db\"} 1"));
        }
        m.reload(true);
        m.set_expiries(vec![("cert".into(), crate::util::time::unix_now() + 100)]);
        let text = m.render();
        for want in [
            "tunnel_connections_total{backend=\"db\",result=\"ok\"} 2",
            "tunnel_connections_total{backend=\"db\",result=\"denied\"} 1",
            "tunnel_bytes_total{backend=\"db\",direction=\"up\"} 10",
            "tunnel_bytes_total{backend=\"db\",direction=\"down\"} 20",
            "tunnel_active_connections{backend=\"db\"} 0",
            "tunnel_reloads_total{result=\"success\"} 1",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        assert!(
            text.contains("tunnel_certificate_expiry_seconds{which=\"cert\"} 10"),
            "{text}"
        );
    }

    #[test]
    fn classic_format_names_counter_families_with_total() {
        let m = Metrics::new();
        m.connection("db", "ok");
        m.set_max_connections(7);
        let text = m.render_classic();
        for want in [
            "# HELP tunnel_connections_total Connections ended",
            "# TYPE tunnel_connections_total counter\n",
            "tunnel_connections_total{backend=\"db\",result=\"ok\"} 1\n",
            "# TYPE tunnel_max_connections gauge\ntunnel_max_connections 7\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            !text.contains("# TYPE tunnel_connections counter"),
            "{text}"
        );
    }

    #[test]
    fn accept_header_picks_the_format() {
        let om = "application/openmetrics-text;version=1.0.0,text/plain;q=0.5";
        assert!(wants_openmetrics(Some(om)));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
