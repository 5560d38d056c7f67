//! Accepting connections, shared by the gateway and the client agent: an accept loop that
//! never does TLS work, backs off on errors such as EMFILE, and enforces `max_connections`;
//! and a resizable connection limit for reloads.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::warn;

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

    /// Changes the limit; open connections are never cut, a lower limit takes effect as they end.
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

/// Accepts on `listener` until `stop` is cancelled. Each connection is handed to `on_conn`
/// with its slot, or with `None` when the limit is reached (the caller closes it at once).
pub async fn accept_loop<F>(
    listener: TcpListener,
    limit: Arc<Limit>,
    stop: CancellationToken,
    mut on_conn: F,
) where
    F: FnMut(TcpStream, SocketAddr, Option<OwnedSemaphorePermit>),
{
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((sock, peer)) => {
                backoff = Duration::from_millis(10);
                let _ = sock.set_nodelay(true);
                on_conn(sock, peer, limit.try_acquire());
            }
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS...: wait rather than spin.
                warn!(error = %e, "accept failed; backing off");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
