//! OCSP responder URLs, which come from client certificates (AIA) as well as from the
//! configuration: only `http://host[:port][/path]` that passes [`crate::http::Url`]'s checks
//! is dialled, so that no CR/LF or other control character reaches the request or the logs,
//! and, with `ocsp_responder_allow`, only the hosts listed.

use super::OcspError;

/// A responder URL taken apart (the crate's one URL type).
pub type ResponderUrl = crate::http::Url;

/// Parses and checks `url` ([`crate::http::Url`]'s checks, and `http://` only); the error
/// says what is wrong (with the URL escaped).
pub fn parse(url: &str) -> Result<ResponderUrl, OcspError> {
    let shown = url
        .chars()
        .take(200)
        .collect::<String>()
        .escape_default()
        .to_string();
    let bad = |why| OcspError::UrlRefused {
        url: shown.clone(),
        why,
    };
    let u = crate::http::Url::parse(url).map_err(|e| bad(e.why))?;
    if u.tls {
        return Err(bad("only http:// URLs are supported"));
    }
    Ok(u)
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
            ("ftp://ocsp.example.org/", "scheme"),
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
            let e = parse(url).expect_err(url).to_string();
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
