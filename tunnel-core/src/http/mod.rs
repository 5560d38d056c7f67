//! HTTP for every part of the product that speaks it, on hyper with TLS through the openssl
//! crate only: the one server ([`serve`]: the signer's API, the login's redirect listener),
//! the one client ([`client`]: identity provider, signer, OCSP, CRL sources), and the one URL
//! type ([`Url`]) with the checks every dialled URL passes.

pub(crate) mod client;
mod registry;
pub(crate) mod serve;
mod url;

pub use self::url::{Url, UrlError, MAX_URL};

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
    fn form_round_trip() {
        let f = form(&[("a", "x y&z"), ("b", "é")]);
        assert_eq!(query_value(&f, "a").as_deref(), Some("x y&z"));
        assert_eq!(query_value(&f, "b").as_deref(), Some("é"));
        assert_eq!(query_value(&f, "c"), None);
    }
}
