//! A browser for the sign-in tests: plain HTTP to loopback (or HTTPS trusting a test CA),
//! redirects followed, a cookie jar, and the forms of the provider's login, consent and
//! device-confirmation pages filled in like a person would.

use crate::http::parse_response;
use openssl::ssl::{SslConnector, SslMethod};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tunnel_core::http::{form, Url};

/// A byte stream: plain TCP or TLS over it.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// One HTTP request (plain HTTP to loopback, or HTTPS trusting only `ca`): status, the
/// response head, body.
fn raw(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    ca: Option<&Path>,
) -> (u16, String, String) {
    let u = Url::parse(url).expect("URL");
    let tcp = TcpStream::connect(u.authority()).unwrap_or_else(|e| panic!("{url}: {e}"));
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut s: Box<dyn Stream> = if u.tls {
        let ca = ca.unwrap_or_else(|| panic!("{url}: HTTPS needs the provider's CA"));
        let mut b = SslConnector::builder(SslMethod::tls_client()).expect("connector");
        b.set_ca_file(ca).expect("CA file");
        let tls = b
            .build()
            .connect(&u.host, tcp)
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let mut req = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        u.path,
        u.authority(),
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).expect("write");
    s.write_all(body).expect("write");
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    let resp = parse_response(&bytes).unwrap_or_else(|e| panic!("{url}: {e}"));
    let body = String::from_utf8_lossy(&resp.body).into_owned();
    (resp.status, resp.head, body)
}

/// One plain-HTTP request (loopback only): status, Location header, body.
pub fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    http_trusting(None, method, url, headers, body)
}

/// Like [`http`]; an `https` URL is verified against `ca` (the provider's test CA).
pub fn http_trusting(
    ca: Option<&Path>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let (status, head, body) = raw(method, url, headers, body, ca);
    let location = header_values(&head, "location").pop().unwrap_or_default();
    (status, location, body)
}

fn header_values(head: &str, name: &str) -> Vec<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// A browser: follows redirects, keeps cookies, fills the provider's login, consent and
/// device-confirmation forms.
#[derive(Default)]
pub struct Browser {
    cookies: HashMap<String, String>,
    /// The CA an `https` provider is verified against.
    ca: Option<PathBuf>,
}

impl Browser {
    /// A browser that trusts `ca` (if any) for HTTPS pages.
    pub fn trusting(ca: Option<PathBuf>) -> Browser {
        Browser {
            ca,
            ..Browser::default()
        }
    }

    fn request(&mut self, method: &str, url: &str, body: &str) -> (u16, String, String) {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut headers = vec![("Cookie", cookie.as_str())];
        if method == "POST" {
            headers.push(("Content-Type", "application/x-www-form-urlencoded"));
        }
        let (status, head, body) = raw(method, url, &headers, body.as_bytes(), self.ca.as_deref());
        for c in header_values(&head, "set-cookie") {
            if let Some((k, v)) = c.split(';').next().and_then(|kv| kv.split_once('=')) {
                self.cookies
                    .insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        let location = header_values(&head, "location").pop().unwrap_or_default();
        (status, location, body)
    }

    /// Starts at `url` and signs in as `account`, consenting when asked, until a redirect
    /// leads to `stop_prefix` (returned, not fetched) or a page without a form (returned).
    pub fn sign_in(&mut self, url: &str, account: &str, stop_prefix: &str) -> String {
        let mut next = (String::from("GET"), url.to_string(), String::new());
        for _ in 0..20 {
            let (method, url, body) = next.clone();
            if !stop_prefix.is_empty() && url.starts_with(stop_prefix) {
                return url;
            }
            let (status, location, page) = self.request(&method, &url, &body);
            if (300..400).contains(&status) {
                next = ("GET".into(), absolute(&url, &location), String::new());
                continue;
            }
            assert_eq!(status, 200, "{method} {url}: {page}");
            let Some(action) = attr_after(&page, "<form", "action") else {
                return page;
            };
            let mut fields: Vec<(String, String)> = hidden_inputs(&page);
            if page.contains("name=\"login\"") {
                fields.push(("login".into(), account.into()));
                fields.push(("password".into(), "any".into()));
            }
            let pairs: Vec<(&str, &str)> = fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            next = ("POST".into(), absolute(&url, &action), form(&pairs));
        }
        panic!("sign-in did not finish within 20 requests");
    }
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let u = Url::parse(base).expect("URL");
    let scheme = if u.tls { "https" } else { "http" };
    format!("{scheme}://{}{location}", u.authority())
}

fn attr_after(page: &str, tag: &str, attr: &str) -> Option<String> {
    let start = page.find(tag)?;
    let rest = &page[start..];
    let end = rest.find('>')?;
    let needle = format!("{attr}=\"");
    let i = rest[..end].find(&needle)? + needle.len();
    let j = rest[i..].find('"')? + i;
    Some(rest[i..j].replace("&amp;", "&"))
}

fn hidden_inputs(page: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in page.split("<input").skip(1) {
        let tag = &part[..part.find('>').unwrap_or(part.len())];
        if !tag.contains("type=\"hidden\"") {
            continue;
        }
        let get = |a: &str| attr_after(&format!("<x {tag}>"), "<x", a);
        if let (Some(n), Some(v)) = (get("name"), get("value")) {
            out.push((n, v));
        }
    }
    out
}
