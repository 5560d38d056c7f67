//! The one URL type of the crate, on the `url` crate, with the checks every URL we dial
//! passes (OCSP responders from certificates, CRL sources, the identity provider, the
//! signer): `http` or `https` only, no user information, a sane host and port, and no byte
//! outside visible ASCII, so no CR/LF or other control character can reach a request line or
//! a log. The `url` crate silently drops tabs and newlines and encodes spaces; what we
//! refuse must be refused before it gets the chance to "fix" it.

use std::fmt;

/// Longest URL accepted.
pub const MAX_URL: usize = 2048;

/// An `http://` or `https://` URL split into the parts a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Whether the scheme is `https`.
    pub tls: bool,
    /// Host name (lower case) or IP (IPv6 without brackets).
    pub host: String,
    /// Port (default 80 / 443).
    pub port: u16,
    /// Path and query, starting with `/` (a fragment is never sent).
    pub path: String,
}

/// A URL that may not be dialled, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{url}\" is not a usable URL: {why}")]
pub struct UrlError {
    /// The URL, escaped for printing.
    pub url: String,
    /// What is wrong.
    pub why: &'static str,
}

impl Url {
    /// Parses and checks `url`.
    pub fn parse(url: &str) -> Result<Url, UrlError> {
        let err = |why| UrlError {
            url: url
                .chars()
                .take(200)
                .collect::<String>()
                .escape_default()
                .to_string(),
            why,
        };
        if url.len() > MAX_URL {
            return Err(err("longer than 2048 bytes"));
        }
        if url.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
            return Err(err(
                "it contains spaces, control characters (CR/LF) or non-ASCII bytes",
            ));
        }
        let u = url::Url::parse(url).map_err(|e| match e {
            url::ParseError::RelativeUrlWithoutBase => err("not an absolute URL"),
            _ => err("malformed host or port"),
        })?;
        let tls = match u.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(err("the scheme must be http:// or https://")),
        };
        if !u.username().is_empty() || u.password().is_some() {
            return Err(err("user information is not allowed"));
        }
        check_authority(url).map_err(err)?;
        let host = match u.host() {
            Some(url::Host::Domain(d)) if valid_name(d) => d.to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(err("malformed host")),
        };
        let port = u
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        if port == 0 {
            return Err(err("malformed port"));
        }
        let path = match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        };
        Ok(Url {
            tls,
            host,
            port,
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

    /// `host:port` for connecting and for `Host:` (IPv6 in brackets).
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

/// What the `url` crate forgives and we do not: `http:///x` (it takes `x` for the host) and
/// an empty port (`host:/`).
fn check_authority(url: &str) -> Result<(), &'static str> {
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or("not an absolute URL")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err("malformed host");
    }
    if authority.ends_with(':') {
        return Err("malformed port");
    }
    Ok(())
}

/// A DNS name: labels of letters, digits, `-` and `_`, not starting or ending with `-`.
fn valid_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sane_urls() {
        let ok = [
            (
                "https://idp.example.com/realms/x",
                true,
                "idp.example.com",
                443,
                "/realms/x",
            ),
            ("http://127.0.0.1:8080", false, "127.0.0.1", 8080, "/"),
            ("http://[::1]:9/a?b=c#frag", false, "::1", 9, "/a?b=c"),
            (
                "HTTP://OCSP.example.org?x",
                false,
                "ocsp.example.org",
                80,
                "/?x",
            ),
            (
                "https://crl.example.org:8443/ca.crl",
                true,
                "crl.example.org",
                8443,
                "/ca.crl",
            ),
        ];
        for (url, tls, host, port, path) in ok {
            let u = Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(
                (u.tls, u.host.as_str(), u.port, u.path.as_str()),
                (tls, host, port, path),
                "{url}"
            );
        }
        let u = Url::parse("http://[::1]:9/a?b=c").unwrap();
        assert_eq!(u.authority(), "[::1]:9");
        assert_eq!(u.to_string(), "http://[::1]:9/a?b=c");
        assert!(u.is_loopback());
    }

    #[test]
    fn refuses_the_rest_saying_why() {
        let bad = [
            ("http://h.example/\r\nX-Injected: 1", "control characters"),
            ("http://h.example\r\n/", "control characters"),
            ("http://h.example/a b", "spaces"),
            ("http://h.example/\u{2028}", "non-ASCII"),
            ("http://h.example/\t", "control characters"),
            ("ftp://h.example/", "scheme"),
            ("file:///etc/passwd", "scheme"),
            ("h.example/x", "absolute"),
            ("http://h.example:0/", "port"),
            ("http://h.example:99999/", "port"),
            ("http://h.example:+80/", "port"),
            ("http://h.example:/", "port"),
            ("http://user@h.example/", "user information"),
            ("http://u:p@h.example/", "user information"),
            ("http://-bad-.example.org/", "malformed host"),
            ("http://a..b/", "malformed host"),
            ("http:///path", "malformed host"),
            ("https://", "malformed host"),
            ("http://[zz]:80/", "malformed host or port"),
            ("http://[::1", "malformed host or port"),
        ];
        for (url, why) in bad {
            let e = Url::parse(url).expect_err(url).to_string();
            assert!(e.contains(why), "{url:?}: {e}");
            assert!(!e.contains('\r') && !e.contains('\n'), "{e:?}");
        }
        let long = format!("http://h.example/{}", "a".repeat(MAX_URL));
        assert!(Url::parse(&long)
            .unwrap_err()
            .to_string()
            .contains("longer"));
    }
}
