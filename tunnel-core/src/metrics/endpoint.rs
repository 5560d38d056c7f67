//! The metrics HTTP endpoint: `GET /metrics` (OpenMetrics text when asked for, else the
//! classic text format) and `GET /healthz`, served by the crate's one HTTP server
//! ([`crate::http::serve`]).
//!
//! It must keep answering health checks whatever other clients do: at most [`MAX_OPEN`]
//! connections are open at once, and when one more arrives the oldest connection that has
//! not sent its request is closed to make room, so idle or slow sockets cannot starve a load
//! balancer's probe (a real request is answered in milliseconds). With `metrics_allow`,
//! connections from other networks are closed at once; a non-loopback address without it
//! is warned about at start.

use super::{Health, Metrics};
use crate::http::serve::{reply, Limits, Reply, Request, Server};
use crate::util::cidr::Cidr;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Connections served at once; one more closes the oldest idle one.
pub const MAX_OPEN: usize = 64;
/// Time a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// What the endpoint accepts: small GETs, a few seconds each.
const LIMITS: Limits = Limits {
    max_open: MAX_OPEN,
    max_per_source: MAX_OPEN,
    handshake: Duration::from_secs(5),
    head: READ_TIMEOUT,
    total: Duration::from_secs(15),
    max_head: 16 * 1024,
    max_body: 0,
};

/// A bound metrics endpoint and who may use it.
#[derive(Debug)]
pub struct Endpoint {
    listener: TcpListener,
    allow: Vec<Cidr>,
}

impl Endpoint {
    /// Restricts the endpoint to peers in `allow` (empty: no restriction).
    pub fn allow(mut self, allow: Vec<Cidr>) -> Endpoint {
        self.allow = allow;
        self
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Binds the metrics endpoint.
pub async fn bind(addr: SocketAddr) -> std::io::Result<Endpoint> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on metrics address {addr}: {e}"),
        )
    })?;
    Ok(Endpoint {
        listener,
        allow: Vec::new(),
    })
}

/// Serves `/metrics` and `/healthz` on `ep` forever (run it in its own task).
pub async fn serve(ep: Endpoint, metrics: Arc<Metrics>) {
    let Endpoint { listener, allow } = ep;
    if let Ok(addr) = listener.local_addr() {
        warn_exposure(addr, &allow);
        info!(metrics = %addr, "metrics endpoint listening");
    }
    let last_refusal_log = AtomicI64::new(0);
    let admit = move |peer: SocketAddr| {
        if allow.is_empty() || allow.iter().any(|c| c.contains(peer.ip())) {
            return true;
        }
        // At most one line a second: refusals must not flood the log either.
        let now = crate::util::time::unix_now();
        if last_refusal_log.swap(now, Ordering::Relaxed) != now {
            info!(%peer, "metrics connection refused: address not in metrics_allow (further refusals this second not logged)");
        }
        false
    };
    let handler = move |req: Request| {
        let r = respond(&req, &metrics);
        async move { r }
    };
    Server::new(listener, None, LIMITS)
        .admit(admit)
        .run(Arc::new(handler), CancellationToken::new(), Duration::ZERO)
        .await;
}

fn warn_exposure(addr: SocketAddr, allow: &[Cidr]) {
    if addr.ip().is_loopback() {
        return;
    }
    if allow.is_empty() {
        warn!(
            metrics = %addr,
            "the metrics endpoint {addr} is not a loopback address: anyone who can reach it reads the metrics (backend names, traffic); bind 127.0.0.1, or on the gateway set metrics_allow"
        );
    } else {
        let nets: Vec<String> = allow.iter().map(ToString::to_string).collect();
        info!(metrics = %addr, metrics_allow = %nets.join(","), "metrics endpoint limited to metrics_allow");
    }
}

fn respond(req: &Request, metrics: &Metrics) -> Reply {
    let openmetrics = super::wants_openmetrics(req.header("accept"));
    let (status, ctype, body) = answer(req.head.method.as_str(), req.path(), openmetrics, metrics);
    reply(status, ctype, body)
}

/// Status, content type and body for a request; `/metrics` answers in OpenMetrics when the
/// request asks for it (`openmetrics`), else in the classic text format.
fn answer(
    method: &str,
    path: &str,
    openmetrics: bool,
    metrics: &Metrics,
) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain";
    match (method, path) {
        ("GET", "/metrics") if openmetrics => (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        ("GET", "/metrics") => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render_classic(),
        ),
        ("GET", "/healthz") => match metrics.health() {
            Health::Serving => (200, TEXT, "ok\n".to_string()),
            Health::Starting => (503, TEXT, "starting\n".to_string()),
            Health::Draining => (503, TEXT, "draining\n".to_string()),
        },
        ("GET", _) => (404, TEXT, "try /metrics or /healthz\n".to_string()),
        _ => (405, TEXT, "GET only\n".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[tokio::test]
    async fn idle_connections_do_not_starve_health_checks() {
        let ep = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = ep.local_addr().unwrap();
        let m = Arc::new(Metrics::new());
        m.set_health(Health::Serving);
        tokio::spawn(serve(ep, m));
        let mut idle = Vec::new();
        for _ in 0..MAX_OPEN * 2 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await.unwrap();
        let mut resp = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut resp))
            .await
            .expect("answered in time")
            .unwrap();
        assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
        assert!(resp.ends_with("\r\n\r\nok\n"), "{resp}");
    }
}
