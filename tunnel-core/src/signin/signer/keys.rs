//! The provider's signing keys: discovery, then the JWK Set from `jwks_uri`, cached. A token
//! naming a `kid` the cache does not hold triggers one refetch (the provider rotated its
//! keys), at most once per [`REFETCH_INTERVAL`], so forged `kid`s cannot make the signer
//! hammer the provider.

use crate::http::client::Client;
use crate::signin::oidc::Discovery;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Shortest time between two fetches of the JWK Set.
pub(crate) const REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// Cached keys of one provider.
pub(crate) struct ProviderKeys {
    issuer: String,
    http: Client,
    refetch_interval: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    keys: Vec<Value>,
    fetched: Option<Instant>,
}

impl ProviderKeys {
    /// Keys of `issuer`, fetched on first use.
    pub(crate) fn new(issuer: String, http: Client) -> ProviderKeys {
        ProviderKeys {
            issuer,
            http,
            refetch_interval: REFETCH_INTERVAL,
            state: Mutex::new(State::default()),
        }
    }

    /// The keys, fetching them when none are cached, or when `kid` is unknown and the last
    /// fetch is older than the refetch interval ([`REFETCH_INTERVAL`]).
    pub(crate) async fn keys_for(&self, kid: Option<&str>) -> Result<Vec<Value>, String> {
        let mut st = self.state.lock().await;
        let known = |keys: &[Value]| match kid {
            Some(kid) => keys
                .iter()
                .any(|k| k.get("kid").and_then(Value::as_str) == Some(kid)),
            None => !keys.is_empty(),
        };
        let stale = st
            .fetched
            .map_or(true, |t| t.elapsed() >= self.refetch_interval);
        if st.fetched.is_none() || (!known(&st.keys) && stale) {
            st.fetched = Some(Instant::now());
            match self.fetch().await {
                Ok(keys) => {
                    tracing::info!(issuer = %self.issuer, keys = keys.len(), "fetched the provider's signing keys");
                    st.keys = keys;
                }
                Err(e) => {
                    tracing::warn!(issuer = %self.issuer, error = %e, "cannot fetch the provider's signing keys");
                    if st.keys.is_empty() {
                        // Let the next request try again instead of waiting out the interval.
                        st.fetched = None;
                        return Err(e);
                    }
                }
            }
        }
        Ok(st.keys.clone())
    }

    async fn fetch(&self) -> Result<Vec<Value>, String> {
        let d = Discovery::fetch(&self.http, &self.issuer)
            .await
            .map_err(|e| e.to_string())?;
        let resp = self
            .http
            .get(&d.jwks_uri)
            .await
            .map_err(|e| e.to_string())?;
        if resp.status != 200 {
            return Err(format!("{}: status {}", d.jwks_uri, resp.status));
        }
        let set = resp.json().map_err(|e| format!("{}: {e}", d.jwks_uri))?;
        set.get("keys")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| format!("{}: no \"keys\" array", d.jwks_uri))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::serve::{reply, Request, Server};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A provider on loopback serving discovery and a JWK Set whose `kid` is `kid-N` after
    /// N fetches of the set (a provider rotating its key on every fetch).
    async fn rotating_provider() -> (String, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", l.local_addr().unwrap());
        let fetches = Arc::new(AtomicUsize::new(0));
        let (iss, n) = (issuer.clone(), fetches.clone());
        let handler = move |req: Request| {
            let body = if req.path().ends_with("openid-configuration") {
                serde_json::json!({"issuer": iss, "jwks_uri": format!("{iss}/jwks")})
            } else {
                let k = n.fetch_add(1, Ordering::SeqCst) + 1;
                serde_json::json!({"keys": [{"kty": "RSA", "kid": format!("kid-{k}")}]})
            };
            async move { reply(200, "application/json", body.to_string()) }
        };
        let server = Server::new(l, None, crate::signin::signer::LIMITS);
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(server.run(Arc::new(handler), stop, Duration::ZERO));
        (issuer, fetches)
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_at_most_once_per_interval() {
        let (issuer, fetches) = rotating_provider().await;
        let mut keys = ProviderKeys::new(issuer, Client::new(None).unwrap());
        keys.refetch_interval = Duration::from_millis(300);
        let kid = |k: &Vec<Value>| k[0]["kid"].as_str().unwrap().to_string();
        assert_eq!(kid(&keys.keys_for(Some("kid-1")).await.unwrap()), "kid-1");
        // Known kid: served from the cache.
        keys.keys_for(Some("kid-1")).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // Unknown kids right away (forged tokens): no refetch within the interval.
        for _ in 0..5 {
            keys.keys_for(Some("kid-2")).await.unwrap();
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // After the interval an unknown kid refetches once: the rotated key is found.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(kid(&keys.keys_for(Some("kid-2")).await.unwrap()), "kid-2");
        keys.keys_for(Some("kid-2")).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }
}
