//! The client agent's TLS session cache: per backend name, a few unused sessions (TLS 1.3
//! tickets) the gateway issued, each offered by one later connection to that backend so that
//! it resumes instead of repeating the full handshake (signatures and certificate chain
//! verification on both sides). The gateway authorizes every connection, resumed or not,
//! from the session's verified certificate and this connection's SNI; sessions are only
//! offered for the backend name they were obtained with, and a chain of resumptions ends
//! [`MAX_CHAIN_AGE`] after the full handshake it started from.
//!
//! Each ticket is used once (RFC 8446 C.4: clients SHOULD NOT reuse a ticket). Sharing one
//! session between concurrent handshakes also made OpenSSL 3.0 fall back to a full handshake
//! for about one connection in ten. A full handshake brings two tickets and a resumed one a
//! new one, so the pool refills itself; [`POOL_SIZE`] bounds it.
//!
//! A session is the current session of the connection that received it, until that
//! connection gets a newer one. OpenSSL marks it not resumable if that connection is freed
//! without having sent close_notify (reset, idle timeout); the connection that picks it then
//! makes a full handshake. (Copying sessions through DER to avoid that costs more: OpenSSL
//! 3.0 decodes the certificate inside on every copy.)
//!
//! Offering a session goes through `tls::ffi::set_session` (`SSL_set_session`, whose
//! contract is that the session belongs to the same `SSL_CTX` as the connection: this
//! module keeps it).

use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::ssl::{Ssl, SslConnectorBuilder, SslRef, SslSession, SslSessionCacheMode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long after a full handshake its sessions may still be resumed: then a full handshake
/// verifies both certificates again (validity, chain) even if the gateway's tickets live longer.
pub const MAX_CHAIN_AGE: Duration = Duration::from_secs(600);

/// Unused sessions kept per backend (the oldest go first).
pub(super) const POOL_SIZE: usize = 64;

struct Entry {
    session: SslSession,
    /// When the full handshake this session descends from took place.
    since: Instant,
}

/// What one connection offered: its backend and, when it offered a session, that session's
/// `since`.
struct Offer {
    backend: Arc<str>,
    since: Option<Instant>,
}

fn offer_index() -> Index<Ssl, Offer> {
    static IDX: OnceLock<Index<Ssl, Offer>> = OnceLock::new();
    *IDX.get_or_init(|| Ssl::new_ex_index().expect("OpenSSL ex_data index"))
}

/// Unused sessions per backend (newest last) for one client context.
#[derive(Default)]
pub(super) struct SessionCache {
    map: Mutex<HashMap<Arc<str>, Vec<Entry>>>,
}

impl SessionCache {
    /// Creates a cache and hooks it into the context being built: OpenSSL hands every session
    /// the gateway issues to it. The cache must only be used with `Ssl`s of that context.
    pub(super) fn install(b: &mut SslConnectorBuilder) -> Arc<SessionCache> {
        let cache = Arc::new(SessionCache::default());
        // Clients never look sessions up in OpenSSL's internal store; keep it empty.
        b.set_session_cache_mode(
            SslSessionCacheMode::CLIENT | SslSessionCacheMode::NO_INTERNAL_STORE,
        );
        let c = cache.clone();
        b.set_new_session_callback(move |ssl, session| c.store(ssl, session));
        cache
    }

    fn store(&self, ssl: &SslRef, session: SslSession) {
        let Some(offer) = ssl.ex_data(offer_index()) else {
            return;
        };
        let since = match (ssl.session_reused(), offer.since) {
            (true, Some(t)) => t,
            _ => Instant::now(),
        };
        let mut m = crate::util::sync::lock(&self.map);
        let pool = m.entry(offer.backend.clone()).or_default();
        if pool.len() >= POOL_SIZE {
            pool.remove(0);
        }
        pool.push(Entry { session, since });
    }

    /// Prepares `ssl` (made from the context this cache was installed in) for `backend`:
    /// offers the newest unused session obtained for that backend, if young enough, and notes
    /// the backend so that the sessions this connection receives are filed under it.
    pub(super) fn prepare(&self, ssl: &mut SslRef, backend: &str) -> Result<(), ErrorStack> {
        let cached = crate::util::sync::lock(&self.map)
            .get_mut(backend)
            .and_then(|pool| {
                // Sessions of one chain share `since`; older chains sit below newer ones.
                pool.retain(|e| e.since.elapsed() < MAX_CHAIN_AGE);
                pool.pop().map(|e| (e.session, e.since))
            });
        let since = match cached {
            Some((session, since)) => {
                super::ffi::set_session(ssl, &session)?;
                Some(since)
            }
            None => None,
        };
        ssl.set_ex_data(
            offer_index(),
            Offer {
                backend: backend.into(),
                since,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::agent::ClientAgent;
    use crate::config::{ClientConfig, ServerConfig};
    use crate::gateway::{self, Gateway};
    use crate::metrics::Metrics;
    use crate::pki::{self, CertSpec};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A gateway in front of an echo backend under the names "a" and "b" (open to cn=c1) and
    /// "x" (open to cn=someone-else only), and a client agent with the certificate of c1.
    async fn setup(dir: &std::path::Path) -> Arc<ClientAgent> {
        let ca = pki::new_ca("Test CA", 1).unwrap();
        pki::write_issued(&ca, &dir.join("ca.crt"), &dir.join("ca.key")).unwrap();
        let s = pki::new_leaf(&ca, &CertSpec::server("localhost")).unwrap();
        pki::write_issued(&s, &dir.join("s.crt"), &dir.join("s.key")).unwrap();
        let c = pki::new_leaf(&ca, &CertSpec::client("c1")).unwrap();
        pki::write_issued(&c, &dir.join("c1.crt"), &dir.join("c1.key")).unwrap();
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let mut toml =
            "listen = \"127.0.0.1:0\"\ncert = \"s.crt\"\nkey = \"s.key\"\nclient_ca = \"ca.crt\"\n"
                .to_string();
        for (name, who) in [("a", "c1"), ("b", "c1"), ("x", "someone-else")] {
            toml += &format!("[[backend]]\nname = \"{name}\"\naddress = \"{echo_addr}\"\nallow = [\"cn={who}\"]\n");
        }
        std::fs::write(dir.join("server.toml"), toml).unwrap();
        let scfg = ServerConfig::load(&dir.join("server.toml")).unwrap();
        let listeners = gateway::bind_all(&scfg).await.unwrap();
        let gw_addr = listeners[0].local_addr().unwrap();
        let gw = Gateway::new(scfg, Arc::new(Metrics::new())).unwrap();
        tokio::spawn(gw.serve(listeners, std::future::pending()));
        let toml = format!(
            "server = \"{gw_addr}\"\nserver_name = \"localhost\"\ncert = \"c1.crt\"\nkey = \"c1.key\"\n\
             ca = \"ca.crt\"\n[[tunnel]]\nlisten = \"127.0.0.1:0\"\nbackend = \"a\"\n"
        );
        std::fs::write(dir.join("client.toml"), toml).unwrap();
        let ccfg = ClientConfig::load(&dir.join("client.toml")).unwrap();
        ClientAgent::new(ccfg, Arc::new(Metrics::new())).unwrap()
    }

    /// Dials `backend`; returns whether the session was resumed and whether a byte made it
    /// through the backend and back.
    async fn round_trip(agent: &ClientAgent, backend: &str) -> (bool, bool) {
        let mut s = agent.dial(backend).await.unwrap();
        let resumed = s.ssl().session_reused();
        let echoed = async {
            s.write_all(b"?").await.ok()?;
            s.flush().await.ok()?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.ok()?;
            // close_notify, as the agent sends when a tunnel ends normally.
            s.shutdown().await.ok()?;
            Some(b == *b"?")
        };
        let echoed = tokio::time::timeout(Duration::from_secs(5), echoed).await;
        (resumed, matches!(echoed, Ok(Some(true))))
    }

    /// `n` concurrent round trips to `backend`.
    async fn many(agent: &Arc<ClientAgent>, backend: &'static str, n: usize) -> Vec<(bool, bool)> {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let a = agent.clone();
            set.spawn(async move { round_trip(&a, backend).await });
        }
        set.join_all().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resumes_per_backend_and_never_past_authorization() {
        let dir = tempfile::tempdir().unwrap();
        let agent = setup(dir.path()).await;
        // The first tunnel to "a" makes a full handshake; reading its echo also reads the
        // gateway's tickets.
        assert_eq!(round_trip(&agent, "a").await, (false, true));
        assert_eq!(round_trip(&agent, "a").await, (true, true));
        assert_eq!(round_trip(&agent, "a").await, (true, true));
        // A session is only offered for the name it was obtained with. Concurrent first
        // tunnels to "b" make full handshakes (unless one starts after another got its
        // tickets); each full handshake leaves two tickets, enough for twice as many
        // concurrent tunnels to resume, each with a ticket of its own.
        let first = many(&agent, "b", 4).await;
        assert!(first.iter().all(|r| r.1), "{first:?}");
        let full = first.iter().filter(|r| !r.0).count();
        assert!(full >= 1, "{first:?}");
        assert_eq!(
            many(&agent, "b", 2 * full).await,
            vec![(true, true); 2 * full]
        );
        // Not allowed: refused, however many sessions the client holds for other names.
        assert!(!round_trip(&agent, "x").await.1);
        assert!(!round_trip(&agent, "x").await.1);
        assert_eq!(round_trip(&agent, "a").await, (true, true));
    }
}
