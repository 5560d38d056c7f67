//! The metrics HTTP endpoint: `GET /metrics` (OpenMetrics text when asked for, else the
//! classic text format) and `GET /healthz`.
//!
//! It must keep answering health checks whatever other clients do: at most [`MAX_OPEN`]
//! connections are served at once, and when one more arrives the oldest open connection is
//! closed to make room, so idle or slow sockets cannot starve a load balancer's probe (a
//! real request is answered in milliseconds and so is never the oldest for long). With
//! `metrics_allow`, connections from other networks are closed at once; a non-loopback
//! address without it is warned about at start.

use super::{Health, Metrics};
use crate::cidr::Cidr;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Connections served at once; one more closes the oldest.
pub const MAX_OPEN: usize = 64;
/// Time a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

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
    let open = Open::default();
    let mut last_refusal_log = 0;
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !allow.is_empty() && !allow.iter().any(|c| c.contains(peer.ip())) {
            // At most one line a second: refusals must not flood the log either.
            let now = crate::time::unix_now();
            if now != last_refusal_log {
                last_refusal_log = now;
                info!(%peer, "metrics connection refused: address not in metrics_allow (further refusals this second not logged)");
            }
            continue;
        }
        let slot = open.admit(MAX_OPEN);
        let metrics = metrics.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = slot.token.cancelled() => debug!(%peer, "metrics connection closed to make room"),
                _ = respond(sock, peer, &metrics) => {}
            }
            drop(slot);
        });
    }
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

/// Reads one request head and answers it.
async fn respond(mut sock: TcpStream, peer: SocketAddr, metrics: &Metrics) {
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        while n < buf.len() {
            let m = sock.read(&mut buf[n..]).await?;
            if m == 0 {
                break;
            }
            n += m;
            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n")
                || buf[..n].windows(2).any(|w| w == b"\n\n")
            {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        debug!(%peer, "metrics request not read");
        return;
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = answer(method, path, super::wants_openmetrics(&head), metrics);
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        let _ = sock.write_all(resp.as_bytes()).await;
        let _ = sock.shutdown().await;
    })
    .await;
}

/// Status, content type and body for a request; `/metrics` answers in OpenMetrics when the
/// request asks for it (`openmetrics`), else in the classic text format.
fn answer(
    method: &str,
    path: &str,
    openmetrics: bool,
    metrics: &Metrics,
) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain";
    match (method, path) {
        ("GET", "/metrics") if openmetrics => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render_classic(),
        ),
        ("GET", "/healthz") => match metrics.health() {
            Health::Serving => ("200 OK", TEXT, "ok\n".to_string()),
            Health::Starting => ("503 Service Unavailable", TEXT, "starting\n".to_string()),
            Health::Draining => ("503 Service Unavailable", TEXT, "draining\n".to_string()),
        },
        ("GET", _) => (
            "404 Not Found",
            TEXT,
            "try /metrics or /healthz\n".to_string(),
        ),
        _ => ("405 Method Not Allowed", TEXT, "GET only\n".to_string()),
    }
}

/// Open connections, oldest first.
#[derive(Default)]
struct Open {
    next: std::sync::atomic::AtomicU64,
    map: Arc<Mutex<BTreeMap<u64, CancellationToken>>>,
}

/// One open connection; leaves [`Open`] when dropped.
struct Slot {
    id: u64,
    token: CancellationToken,
    map: Arc<Mutex<BTreeMap<u64, CancellationToken>>>,
}

impl Open {
    /// Registers a new connection, first closing the oldest ones while `cap` are open.
    fn admit(&self, cap: usize) -> Slot {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = CancellationToken::new();
        if let Ok(mut m) = self.map.lock() {
            while m.len() >= cap {
                match m.pop_first() {
                    Some((_, oldest)) => oldest.cancel(),
                    None => break,
                }
            }
            m.insert(id, token.clone());
        }
        Slot {
            id,
            token,
            map: self.map.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_closes_the_oldest_when_full() {
        let open = Open::default();
        let slots: Vec<Slot> = (0..3).map(|_| open.admit(3)).collect();
        assert!(slots.iter().all(|s| !s.token.is_cancelled()));
        let newest = open.admit(3);
        assert!(slots[0].token.is_cancelled(), "the oldest stays open");
        assert!(!slots[1].token.is_cancelled() && !slots[2].token.is_cancelled());
        assert!(!newest.token.is_cancelled());
        drop(slots);
        assert_eq!(open.map.lock().unwrap().len(), 1);
    }

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
