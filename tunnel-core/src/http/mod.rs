//! A small HTTP/1.1 implementation for the sign-in feature: the signer's HTTPS API
//! ([`server`]), and the requests the signer and `tunnel-client login` make to the identity
//! provider and the signer ([`client`]). One request per connection (`Connection: close`),
//! bounded sizes, TLS through the openssl crate only. Heads are parsed with `httparse`.

pub mod client;
mod registry;
pub mod serve;

use std::fmt;

/// Largest request or response head accepted.
pub const MAX_HEAD: usize = 16 * 1024;

/// An `http://` or `https://` URL split into the parts a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Whether the scheme is `https`.
    pub tls: bool,
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// Port (default 80 / 443).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// A URL this module cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url:?} is not a usable URL: {why}")]
pub struct UrlError {
    url: String,
    why: &'static str,
}

impl Url {
    /// Parses `http://host[:port][/path]` or `https://…`.
    pub fn parse(url: &str) -> Result<Url, UrlError> {
        let err = |why| UrlError {
            url: url.to_string(),
            why,
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(err("the scheme must be https:// (or http:// on loopback)"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(err("user information in URLs is not supported"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| err("bad host or port"))?;
        if host.is_empty() {
            return Err(err("no host"));
        }
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(Url {
            tls,
            host,
            port: port.unwrap_or(if tls { 443 } else { 80 }),
            path,
        })
    }

    /// Whether the host is a loopback address or `localhost` (where plain http is allowed).
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false)
    }

    /// `host:port` for connecting (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.path)
    }
}

fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_ascii_lowercase(), Some(p.parse().ok()?))),
        None => Some((authority.to_ascii_lowercase(), None)),
    }
}

/// `application/x-www-form-urlencoded` encoding of `pairs`.
pub fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The value of `key` in a query string or form body.
pub fn query_value(query: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = Url::parse("https://idp.example.com/realms/x").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (true, "idp.example.com", 443)
        );
        assert_eq!(u.path, "/realms/x");
        let u = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (u.port, u.path.as_str(), u.is_loopback()),
            (8080, "/", true)
        );
        let u = Url::parse("http://[::1]:9/a?b=c").unwrap();
        assert_eq!(
            (u.host.as_str(), u.authority()),
            ("::1", "[::1]:9".to_string())
        );
        assert_eq!(u.to_string(), "http://[::1]:9/a?b=c");
        for bad in [
            "ftp://x",
            "https://",
            "https://a:b",
            "https://u@h/",
            "http://[::1",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn form_round_trip() {
        let f = form(&[("a", "x y&z"), ("b", "é")]);
        assert_eq!(query_value(&f, "a").as_deref(), Some("x y&z"));
        assert_eq!(query_value(&f, "b").as_deref(), Some("é"));
        assert_eq!(query_value(&f, "c"), None);
    }
}
