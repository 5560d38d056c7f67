//! OCSP responder URLs, which come from client certificates (AIA) as well as from the
//! configuration: only `http://host[:port][/path]` with a sane host, port and path is
//! dialled, so that no CR/LF or other control character reaches the request or the logs,
//! and, with `ocsp_responder_allow`, only the hosts listed.

/// A responder URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponderUrl {
    /// Host name or IP address (an IPv6 address without brackets), lower case.
    pub host: String,
    /// TCP port (80 when not given).
    pub port: u16,
    /// Path, starting with `/`.
    pub path: String,
}

impl ResponderUrl {
    /// `host:port` to dial and to send as `Host:`.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses and checks `url`; the error says what is wrong (with the URL escaped).
pub fn parse(url: &str) -> Result<ResponderUrl, String> {
    let shown = url.escape_default().to_string();
    let bad = |why: &str| format!("OCSP responder URL \"{shown}\" refused: {why}");
    if url.len() > 2048 {
        return Err(bad("longer than 2048 bytes"));
    }
    if url.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        return Err(bad(
            "it contains spaces, control characters (CR/LF) or non-ASCII bytes",
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| {
            url.get(..7)
                .filter(|p| p.eq_ignore_ascii_case("http://"))
                .map(|_| &url[7..])
        })
        .ok_or_else(|| bad("only http:// URLs are supported"))?;
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err(bad("user information is not allowed"));
    }
    let (host, port) = split_host_port(authority).ok_or_else(|| bad("malformed host or port"))?;
    if !valid_host(host) {
        return Err(bad("malformed host"));
    }
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Ok(ResponderUrl {
        host: host.to_ascii_lowercase(),
        port,
        path,
    })
}

fn split_host_port(a: &str) -> Option<(&str, u16)> {
    if let Some(v6) = a.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        return match rest {
            "" => Some((host, 80)),
            p => Some((host, port(p.strip_prefix(':')?)?)),
        };
    }
    match a.rsplit_once(':') {
        Some((h, p)) => Some((h, port(p)?)),
        None => Some((a, 80)),
    }
}

fn port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|p| *p != 0)
}

fn valid_host(h: &str) -> bool {
    if h.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
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

/// Whether `url` may be dialled under `ocsp_responder_allow` (`allow` empty: any host).
pub fn allowed(url: &ResponderUrl, allow: &[String]) -> bool {
    allow.is_empty() || allow.iter().any(|h| h.eq_ignore_ascii_case(&url.host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sane_urls_and_refuses_the_rest() {
        let ok = [
            ("http://ocsp.example.org", "ocsp.example.org", 80, "/"),
            (
                "http://OCSP.example.org:8080/a/b",
                "ocsp.example.org",
                8080,
                "/a/b",
            ),
            ("http://127.0.0.1:9/", "127.0.0.1", 9, "/"),
            ("http://[::1]:8888/x", "::1", 8888, "/x"),
            ("HTTP://ocsp.example.org?x", "ocsp.example.org", 80, "/?x"),
        ];
        for (url, host, port, path) in ok {
            let u = parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(
                (u.host.as_str(), u.port, u.path.as_str()),
                (host, port, path)
            );
        }
        let bad = [
            (
                "http://ocsp.example.org/\r\nX-Injected: 1",
                "control characters",
            ),
            ("http://ocsp.example.org\r\n/", "control characters"),
            ("http://ocsp.example.org/a b", "spaces"),
            ("http://ocsp.example.org/\u{2028}", "non-ASCII"),
            ("https://ocsp.example.org/", "only http://"),
            ("ftp://ocsp.example.org/", "only http://"),
            ("http://ocsp.example.org:0/", "port"),
            ("http://ocsp.example.org:99999/", "port"),
            ("http://ocsp.example.org:+80/", "port"),
            ("http://ocsp.example.org:/", "port"),
            ("http://user@ocsp.example.org/", "user information"),
            ("http://-bad-.example.org/", "malformed host"),
            ("http://a..b/", "malformed host"),
            ("http:///path", "malformed host"),
            ("http://[zz]:80/", "malformed host or port"),
        ];
        for (url, why) in bad {
            let e = parse(url).expect_err(url);
            assert!(e.contains(why), "{url:?}: {e}");
            assert!(!e.contains('\r') && !e.contains('\n'), "{e:?}");
        }
    }

    #[test]
    fn allow_list_matches_hosts_exactly() {
        let u = parse("http://ocsp.example.org:8080/").unwrap();
        assert!(allowed(&u, &[]));
        assert!(allowed(&u, &["OCSP.example.org".into()]));
        assert!(!allowed(&u, &["example.org".into()]));
        assert!(!allowed(&u, &["evil.example.org".into()]));
    }
}
