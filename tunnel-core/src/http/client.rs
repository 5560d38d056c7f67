//! The one HTTP/1.1 client of the crate, on hyper over TCP or TLS (the openssl crate): the
//! identity provider's discovery, JWKS, token and device endpoints, the signer's API for
//! `login`, OCSP responders and CRL sources. One request per connection; redirects are
//! answered as they are (a 3xx is a failed request to every caller, never followed), the
//! response is bounded in time ([`ClientLimits::timeout`]) and size
//! ([`ClientLimits::max_body`]). `https://` is verified against the given trust (a CA
//! bundle, or the system's default paths); plain `http://` is refused except to loopback
//! hosts (where the tests' identity provider runs), unless the client is made for signed
//! objects ([`Client::for_signed_objects`]: OCSP responses and CRLs carry their own
//! signature, and their URLs are plain http by custom).

use super::{Url, UrlError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Largest response body accepted by default.
pub(crate) const MAX_BODY: usize = 1024 * 1024;
/// Largest response head accepted.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Time allowed for one whole request by default.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a request may take and how large its answer may be.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// The whole request: connect, TLS, request, response head and body.
    pub timeout: Duration,
    /// Largest response body.
    pub max_body: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            timeout: REQUEST_TIMEOUT,
            max_body: MAX_BODY,
        }
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL cannot be used.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// Plain HTTP to a host that is not loopback.
    #[error("{0}: plain http is only allowed to loopback hosts; use https://")]
    Insecure(String),
    /// The trust for `https://` could not be loaded.
    #[error("{0}")]
    Trust(String),
    /// TCP, TLS or I/O failure.
    #[error("{url}: {why}")]
    Io {
        /// The URL requested.
        url: String,
        /// What failed.
        why: String,
    },
    /// The response is not valid HTTP or too large.
    #[error("{url}: bad response: {why}")]
    Protocol {
        /// The URL requested.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// No complete answer in time.
    #[error("{url}: no complete answer within {limit:?}")]
    Timeout {
        /// The URL requested.
        url: String,
        /// The limit.
        limit: Duration,
    },
}

/// A response: status and body (headers are not needed by the callers).
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("body is not JSON: {e}"))
    }
}

/// How to verify `https://` servers, and what may be fetched.
#[derive(Clone)]
pub struct Client {
    connector: SslConnector,
    plain_http_anywhere: bool,
    limits: ClientLimits,
    identity: Option<
        std::sync::Arc<(
            openssl::x509::X509,
            openssl::pkey::PKey<openssl::pkey::Private>,
        )>,
    >,
}

impl Client {
    /// Verifies servers against `ca` (PEM bundle), or the system trust store when `None`.
    pub fn new(ca: Option<&Path>) -> Result<Client, HttpError> {
        let mut b = SslConnector::builder(SslMethod::tls_client())
            .map_err(|e| HttpError::Trust(e.to_string()))?;
        b.set_verify(SslVerifyMode::PEER);
        match ca {
            Some(ca) => b.set_ca_file(ca).map_err(|e| {
                HttpError::Trust(format!(
                    "{}: not a readable PEM CA bundle ({e})",
                    ca.display()
                ))
            })?,
            None => b
                .set_default_verify_paths()
                .map_err(|e| HttpError::Trust(e.to_string()))?,
        }
        Ok(Client {
            connector: b.build(),
            plain_http_anywhere: false,
            limits: ClientLimits::default(),
            identity: None,
        })
    }

    /// The same client, presenting the certificate `cert` (PEM, leaf first) with `key` to
    /// servers that ask for one (the signer's access API).
    pub fn with_identity(mut self, cert: &Path, key: &Path) -> Result<Client, HttpError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| HttpError::Trust(format!("{}: {e}", p.display())))
        };
        let c = openssl::x509::X509::from_pem(&read(cert)?).map_err(|e| {
            HttpError::Trust(format!("{}: not a PEM certificate ({e})", cert.display()))
        })?;
        let k = openssl::pkey::PKey::private_key_from_pem(&read(key)?).map_err(|e| {
            HttpError::Trust(format!("{}: not a PEM private key ({e})", key.display()))
        })?;
        self.identity = Some(std::sync::Arc::new((c, k)));
        Ok(self)
    }

    /// A client for OCSP responses and CRLs: plain `http://` to any host, `https://`
    /// verified against the system trust store, with `limits`.
    pub fn for_signed_objects(limits: ClientLimits) -> Result<Client, HttpError> {
        let mut c = Client::new(None)?;
        c.plain_http_anywhere = true;
        c.limits = limits;
        Ok(c)
    }

    /// GET `url`, asking for `accept`.
    pub async fn get_as(&self, url: &str, accept: &str) -> Result<Response, HttpError> {
        self.request(hyper::Method::GET, url, accept, None).await
    }

    /// GET `url` (JSON expected).
    pub async fn get(&self, url: &str) -> Result<Response, HttpError> {
        self.get_as(url, "application/json").await
    }

    /// POST `body` with the given content type to `url` (JSON expected back).
    pub async fn post(&self, url: &str, ctype: &str, body: &[u8]) -> Result<Response, HttpError> {
        self.request(
            hyper::Method::POST,
            url,
            "application/json",
            Some((ctype, body)),
        )
        .await
    }

    /// POST `body` to `url`, asking for `accept`.
    pub async fn post_as(
        &self,
        url: &str,
        ctype: &str,
        accept: &str,
        body: &[u8],
    ) -> Result<Response, HttpError> {
        self.request(hyper::Method::POST, url, accept, Some((ctype, body)))
            .await
    }

    async fn request(
        &self,
        method: hyper::Method,
        url: &str,
        accept: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Response, HttpError> {
        let u = Url::parse(url)?;
        if !u.tls && !u.is_loopback() && !self.plain_http_anywhere {
            return Err(HttpError::Insecure(url.to_string()));
        }
        let req = build(method, &u, accept, body).map_err(|why| HttpError::Protocol {
            url: url.to_string(),
            why,
        })?;
        let limit = self.limits.timeout;
        tokio::time::timeout(limit, self.exchange(&u, req))
            .await
            .map_err(|_| HttpError::Timeout {
                url: url.to_string(),
                limit,
            })?
            .map_err(|e| e.at(url))
    }

    async fn exchange(
        &self,
        u: &Url,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<Response, Failure> {
        let stream = self.connect(u).await.map_err(Failure::Io)?;
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(MAX_HEAD.max(8192))
            .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Io(e.to_string()))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| Failure::Protocol(e.to_string()))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), self.limits.max_body)
                .collect()
                .await
                .map_err(|e| match e.is::<http_body_util::LengthLimitError>() {
                    true => Failure::Protocol(format!(
                        "body larger than {} bytes",
                        self.limits.max_body
                    )),
                    false => Failure::Io(e.to_string()),
                })?
                .to_bytes()
                .to_vec();
            Ok(Response { status, body })
        }
        .await;
        driver.abort();
        result
    }

    async fn connect(&self, u: &Url) -> Result<Pin<Box<dyn Stream>>, String> {
        let tcp = TcpStream::connect(u.authority())
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        if !u.tls {
            return Ok(Box::pin(tcp));
        }
        let ssl = self
            .connector
            .configure()
            .and_then(|mut c| {
                if let Some(id) = &self.identity {
                    c.set_certificate(&id.0)?;
                    c.set_private_key(&id.1)?;
                }
                c.into_ssl(&u.host)
            })
            .map_err(|e| e.to_string())?;
        let mut s = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
        Pin::new(&mut s)
            .connect()
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        Ok(Box::pin(s))
    }
}

/// A failure before the URL is attached to it.
enum Failure {
    Io(String),
    Protocol(String),
}

impl Failure {
    fn at(self, url: &str) -> HttpError {
        let url = url.to_string();
        match self {
            Failure::Io(why) => HttpError::Io { url, why },
            Failure::Protocol(why) => HttpError::Protocol { url, why },
        }
    }
}

fn build(
    method: hyper::Method,
    u: &Url,
    accept: &str,
    body: Option<(&str, &[u8])>,
) -> Result<hyper::Request<Full<Bytes>>, String> {
    let header = |v: &str| HeaderValue::from_str(v).map_err(|e| e.to_string());
    let mut req = hyper::Request::new(Full::new(Bytes::copy_from_slice(
        body.map(|(_, b)| b).unwrap_or_default(),
    )));
    *req.method_mut() = method;
    *req.uri_mut() = u
        .path
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| e.to_string())?;
    let h = req.headers_mut();
    h.insert(HOST, header(&u.authority())?);
    h.insert(ACCEPT, header(accept)?);
    h.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("tunnel/", env!("CARGO_PKG_VERSION"))),
    );
    if let Some((ctype, _)) = body {
        h.insert(CONTENT_TYPE, header(ctype)?);
    }
    Ok(req)
}

trait Stream: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> Stream for T {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::serve::{reply, Limits, Request, Server};
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;

    /// A plain HTTP server on loopback answering every request with `answer`.
    async fn server(answer: fn(&Request) -> crate::http::serve::Reply) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let limits = Limits {
            max_body: 1024,
            ..crate::signin::signer::LIMITS
        };
        let handler = move |req: Request| {
            let r = answer(&req);
            async move { r }
        };
        let server = Server::new(l, None, limits);
        tokio::spawn(server.run(Arc::new(handler), CancellationToken::new(), Duration::ZERO));
        base
    }

    #[tokio::test]
    async fn reads_status_and_body_and_bounds_the_body() {
        let base = server(|req| match req.path() {
            "/big" => reply(200, "text/plain", vec![b'x'; 5000]),
            "/moved" => {
                let mut r = reply(302, "text/plain", "");
                r.headers_mut()
                    .insert("location", HeaderValue::from_static("http://127.0.0.1:1/"));
                r
            }
            p => reply(404, "text/plain", p.to_string()),
        })
        .await;
        let c = Client::new(None).unwrap();
        let r = c.get(&format!("{base}/a?b")).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"/a"[..]));
        let r = c.get(&format!("{base}/moved")).await.unwrap();
        assert_eq!(r.status, 302, "redirects are not followed");
        let small = Client {
            limits: ClientLimits {
                max_body: 4096,
                ..ClientLimits::default()
            },
            ..c.clone()
        };
        let e = small.get(&format!("{base}/big")).await.unwrap_err();
        assert!(e.to_string().contains("larger than 4096"), "{e}");
        assert_eq!(
            c.get(&format!("{base}/big")).await.unwrap().body.len(),
            5000
        );
    }

    #[tokio::test]
    async fn plain_http_only_to_loopback_unless_for_signed_objects() {
        let c = Client::new(None).unwrap();
        // Refused before any lookup or connection.
        let e = c.get("http://crl.example.org/x").await.unwrap_err();
        assert!(matches!(e, HttpError::Insecure(_)), "{e}");
        // A loopback server that accepts and never answers: the deadline ends the request.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x", silent.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let limits = ClientLimits {
            timeout: Duration::from_millis(300),
            max_body: 10,
        };
        let s = Client::for_signed_objects(limits).unwrap();
        let e = s.get(&url).await.unwrap_err();
        assert!(matches!(e, HttpError::Timeout { .. }), "{e}");
    }
}
