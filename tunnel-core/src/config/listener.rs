//! `[[listener]]` tables of the gateway configuration: listen addresses with settings of
//! their own, for now whether a load balancer in front sends a PROXY protocol header.
//!
//! ```toml
//! [[listener]]
//! address = "0.0.0.0:8443"
//! proxy_protocol = true
//! proxy_protocol_from = ["10.0.0.0/24"]   # the balancers; required with proxy_protocol
//! ```

use super::ConfigError;
use crate::util::cidr::Cidr;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    address: Option<String>,
    proxy_protocol: Option<bool>,
    #[serde(default)]
    proxy_protocol_from: Vec<String>,
}

/// A listener whose connections start with a PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyListener {
    /// The address as configured (port 0: any port the system chose).
    pub address: SocketAddr,
    /// Peers allowed to send the header.
    pub from: Vec<Cidr>,
}

impl ProxyListener {
    /// The PROXY listener among `list` that the listener bound at `bound` was made from:
    /// the same address, or the same IP with port 0 configured.
    pub fn find(list: &[ProxyListener], bound: SocketAddr) -> Option<&ProxyListener> {
        list.iter().find(|p| p.address == bound).or_else(|| {
            list.iter()
                .find(|p| p.address.port() == 0 && p.address.ip() == bound.ip())
        })
    }
}

/// Validates the `[[listener]]` tables: their addresses (to add to `listen`) and the PROXY
/// listeners among them.
pub(crate) fn validate(
    file: &Path,
    raw: Vec<RawListener>,
) -> Result<(Vec<SocketAddr>, Vec<ProxyListener>), ConfigError> {
    let mut addrs = Vec::new();
    let mut proxies = Vec::new();
    for (i, l) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("listener[{i}].{k}");
        let a = l.address.ok_or_else(|| {
            ConfigError::new(file, key("address"), "missing; e.g. \"0.0.0.0:8443\"")
        })?;
        let address: SocketAddr = a.trim().parse().map_err(|_| {
            ConfigError::new(
                file,
                key("address"),
                format!("{a:?} is not an IP:port address, e.g. \"0.0.0.0:8443\""),
            )
        })?;
        if addrs.contains(&address) && address.port() != 0 {
            return Err(ConfigError::new(
                file,
                key("address"),
                format!("{address} is listed twice"),
            ));
        }
        addrs.push(address);
        let mut from = Vec::new();
        for (j, c) in l.proxy_protocol_from.iter().enumerate() {
            from.push(c.parse::<Cidr>().map_err(|m| {
                ConfigError::new(file, format!("{}[{j}]", key("proxy_protocol_from")), m)
            })?);
        }
        match l.proxy_protocol.unwrap_or(false) {
            true if from.is_empty() => {
                return Err(ConfigError::new(
                    file,
                    key("proxy_protocol_from"),
                    "missing: with proxy_protocol = true, list the balancers' addresses (e.g. [\"10.0.0.0/24\"]); anyone else could claim any client address",
                ))
            }
            true => proxies.push(ProxyListener { address, from }),
            false if !from.is_empty() => {
                return Err(ConfigError::new(
                    file,
                    key("proxy_protocol_from"),
                    "is set but proxy_protocol is not true; set proxy_protocol = true or remove it",
                ))
            }
            false => {}
        }
    }
    Ok((addrs, proxies))
}

#[cfg(test)]
mod tests {
    use crate::config::ServerConfig;

    fn load(extra: &str) -> Result<ServerConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        for f in ["s.crt", "s.key", "ca.crt"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let file = dir.path().join("s.toml");
        let text = format!(
            "cert = \"s.crt\"\nkey = \"s.key\"\nclient_ca = \"ca.crt\"\n{extra}\n\
             [[backend]]\nname = \"b\"\naddress = \"127.0.0.1:1\"\nallow = [\"any\"]\n"
        );
        ServerConfig::from_toml(&file, &text, Default::default()).map_err(|e| {
            let s = e.to_string();
            s.strip_prefix(&format!("{}: ", file.display()))
                .unwrap_or(&s)
                .to_string()
        })
    }

    #[test]
    fn listener_tables() {
        let c = load(
            "listen = \"127.0.0.1:8443\"\n[[listener]]\naddress = \"127.0.0.1:8444\"\n\
             proxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/8\", \"::1\"]\n",
        )
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.proxy_listeners.len(), 1);
        let bound = "127.0.0.1:8444".parse().unwrap();
        assert!(super::ProxyListener::find(&c.proxy_listeners, bound).is_some());
        let plain = "127.0.0.1:8443".parse().unwrap();
        assert!(super::ProxyListener::find(&c.proxy_listeners, plain).is_none());
        // A listener table alone is enough.
        assert!(load("[[listener]]\naddress = \"127.0.0.1:8444\"\n").is_ok());
        for (extra, want) in [
            (
                "[[listener]]\naddress = \"127.0.0.1:1\"\nproxy_protocol = true\n",
                "listener[0].proxy_protocol_from: missing",
            ),
            (
                "[[listener]]\naddress = \"127.0.0.1:1\"\nproxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/40\"]\n",
                "listener[0].proxy_protocol_from[0]:",
            ),
            (
                "[[listener]]\naddress = \"127.0.0.1:1\"\nproxy_protocol_from = [\"10.0.0.0/8\"]\n",
                "proxy_protocol is not true",
            ),
            ("[[listener]]\nproxy_protocol = true\n", "listener[0].address: missing"),
            (
                "listen = \"127.0.0.1:1\"\n[[listener]]\naddress = \"127.0.0.1:1\"\n",
                "listener[0].address: 127.0.0.1:1 is also in listen",
            ),
            ("[[listener]]\naddress = \"x\"\nproxy = 1\n", "proxy"),
            ("", "listen: missing"),
        ] {
            let e = load(extra).unwrap_err();
            assert!(e.contains(want), "{extra:?}: {e}");
        }
    }
}
