//! The provider's signing keys: discovery, then the JWK Set from `jwks_uri`, cached. A token
//! naming a `kid` the cache does not hold triggers one refetch (the provider rotated its
//! keys), at most once per [`REFETCH_INTERVAL`], so forged `kid`s cannot make the signer
//! hammer the provider.

use crate::http::client::Client;
use crate::oidc::Discovery;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Shortest time between two fetches of the JWK Set.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// Cached keys of one provider.
pub struct ProviderKeys {
    issuer: String,
    http: Client,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    keys: Vec<Value>,
    fetched: Option<Instant>,
}

impl ProviderKeys {
    /// Keys of `issuer`, fetched on first use.
    pub fn new(issuer: String, http: Client) -> ProviderKeys {
        ProviderKeys {
            issuer,
            http,
            state: Mutex::new(State::default()),
        }
    }

    /// The keys, fetching them when none are cached, or when `kid` is unknown and the last
    /// fetch is older than [`REFETCH_INTERVAL`].
    pub async fn keys_for(&self, kid: Option<&str>) -> Result<Vec<Value>, String> {
        let mut st = self.state.lock().await;
        let known = |keys: &[Value]| match kid {
            Some(kid) => keys
                .iter()
                .any(|k| k.get("kid").and_then(Value::as_str) == Some(kid)),
            None => !keys.is_empty(),
        };
        let stale = st.fetched.map_or(true, |t| t.elapsed() >= REFETCH_INTERVAL);
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
        let d = Discovery::fetch(&self.http, &self.issuer).await?;
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
