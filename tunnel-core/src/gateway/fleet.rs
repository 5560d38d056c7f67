//! Being a good member of a fleet behind a load balancer: at shutdown, fail the health check
//! first and keep serving for `drain_delay`, so that the balancer (HAProxy `option httpchk`,
//! a Kubernetes readiness probe) stops sending new clients before the listeners close.

use crate::metrics::{Health, Metrics};
use std::time::Duration;
use tracing::info;

/// Marks the process draining (`/healthz` answers 503 from now on) and, when `delay` is not
/// zero, waits that long while the listeners still accept.
pub(crate) async fn drain_delay(metrics: &Metrics, delay: Duration) {
    metrics.set_health(Health::Draining);
    if delay.is_zero() {
        return;
    }
    info!(
        drain_delay = ?delay,
        "draining: /healthz answers 503; still accepting for drain_delay"
    );
    crate::service::systemd::stopping("failing health checks before closing listeners");
    tokio::time::sleep(delay).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn health_turns_503_before_the_delay_ends() {
        let m = Metrics::new();
        m.set_health(Health::Serving);
        let start = tokio::time::Instant::now();
        let fut = drain_delay(&m, Duration::from_secs(5));
        tokio::pin!(fut);
        assert!(futures_poll_once(&mut fut).await.is_none());
        assert_eq!(m.health(), Health::Draining);
        fut.await;
        assert!(start.elapsed() >= Duration::from_secs(5));
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        tokio::select! {
            biased;
            v = f => Some(v),
            _ = std::future::ready(()) => None,
        }
    }
}
