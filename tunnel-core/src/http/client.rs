//! HTTP/1.1 requests over TCP or TLS (openssl), one per connection. `https://` is verified
//! against the given trust (a CA bundle, or the system's default paths); plain `http://` is
//! refused except to loopback hosts, where the tests' identity provider runs.

use super::{Url, MAX_HEAD};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
/// Time allowed for one whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL cannot be used.
    #[error(transparent)]
    Url(#[from] super::UrlError),
    /// Plain HTTP to a host that is not loopback.
    #[error("{0}: plain http is only allowed to loopback hosts; use https://")]
    Insecure(String),
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

/// How to verify `https://` servers.
#[derive(Clone)]
pub struct Client {
    connector: SslConnector,
}

impl Client {
    /// Verifies servers against `ca` (PEM bundle), or the system trust store when `None`.
    pub fn new(ca: Option<&Path>) -> Result<Client, String> {
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
        b.set_verify(SslVerifyMode::PEER);
        match ca {
            Some(ca) => b
                .set_ca_file(ca)
                .map_err(|e| format!("{}: not a readable PEM CA bundle ({e})", ca.display()))?,
            None => b.set_default_verify_paths().map_err(|e| e.to_string())?,
        }
        Ok(Client {
            connector: b.build(),
        })
    }

    /// GET `url`.
    pub async fn get(&self, url: &str) -> Result<Response, HttpError> {
        self.request("GET", url, None).await
    }

    /// POST `body` with the given content type to `url`.
    pub async fn post(&self, url: &str, ctype: &str, body: &[u8]) -> Result<Response, HttpError> {
        self.request("POST", url, Some((ctype, body))).await
    }

    async fn request(
        &self,
        method: &str,
        url: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Response, HttpError> {
        let u = Url::parse(url)?;
        if !u.tls && !u.is_loopback() {
            return Err(HttpError::Insecure(url.to_string()));
        }
        let io = |why: String| HttpError::Io {
            url: url.to_string(),
            why,
        };
        let fut = async {
            let mut stream = self.connect(&u).await.map_err(io)?;
            let mut head = format!(
                "{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\nUser-Agent: tunnel/{}\r\n",
                u.path,
                u.authority(),
                env!("CARGO_PKG_VERSION")
            );
            if let Some((ctype, b)) = body {
                head += &format!("Content-Type: {ctype}\r\nContent-Length: {}\r\n", b.len());
            }
            head += "\r\n";
            stream
                .write_all(head.as_bytes())
                .await
                .map_err(|e| io(e.to_string()))?;
            if let Some((_, b)) = body {
                stream.write_all(b).await.map_err(|e| io(e.to_string()))?;
            }
            stream.flush().await.map_err(|e| io(e.to_string()))?;
            let mut raw = Vec::new();
            (&mut stream)
                .take((MAX_HEAD + MAX_BODY + 1) as u64)
                .read_to_end(&mut raw)
                .await
                .map_err(|e| io(e.to_string()))?;
            parse_response(&raw).map_err(|why| HttpError::Protocol {
                url: url.to_string(),
                why,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| io(format!("no complete answer within {REQUEST_TIMEOUT:?}")))?
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
            .and_then(|c| c.into_ssl(&u.host))
            .map_err(|e| e.to_string())?;
        let mut s = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
        Pin::new(&mut s)
            .connect()
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        Ok(Box::pin(s))
    }
}

trait Stream: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> Stream for T {}

/// Parses a whole response read until the server closed the connection.
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("connection closed inside the head".into()),
        Err(e) => return Err(e.to_string()),
    };
    if head_len > MAX_HEAD {
        return Err("head too large".into());
    }
    let status = resp.code.ok_or("no status")?;
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = &raw[head_len..];
    if rest.len() > MAX_BODY && header("transfer-encoding").is_none() {
        return Err(format!("body larger than {MAX_BODY} bytes"));
    }
    let body = if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(|_| "bad Content-Length")?;
        rest.get(..len)
            .ok_or("body shorter than Content-Length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if out.len() + size > MAX_BODY {
            return Err(format!("body larger than {MAX_BODY} bytes"));
        }
        let chunk = data.get(..size).ok_or("truncated chunk")?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).ok_or("truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_and_chunked_bodies() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}garbage").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        let r = parse_response(
            b"HTTP/1.1 404 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
        assert!(parse_response(b"garbage").is_err());
    }
}
