//! The server side: read one request (head and a `Content-Length` body, both bounded) and
//! write one response, then close. Used by the signer's HTTPS API and by the loopback
//! redirect listener of `tunnel-client login`.

use super::MAX_HEAD;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    /// Body.
    pub body: Vec<u8>,
}

impl Request {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query string (empty when none).
    pub fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }
}

/// Why a request could not be read; each maps to the status answered.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer closed or the connection failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// Not HTTP/1.x.
    #[error("not an HTTP request: {0}")]
    Malformed(String),
    /// Head or body over the limits.
    #[error("request too large")]
    TooLarge,
}

impl ReadError {
    /// The status to answer with (none when the connection is gone).
    pub fn status(&self) -> Option<u16> {
        match self {
            ReadError::Io(_) => None,
            ReadError::Malformed(_) => Some(400),
            ReadError::TooLarge => Some(413),
        }
    }
}

/// Reads one request with a body of at most `max_body` bytes.
pub async fn read_request<S: AsyncRead + Unpin>(
    s: &mut S,
    max_body: usize,
) -> Result<Request, ReadError> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(ReadError::Malformed(
                "connection closed inside the head".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 48];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let method = req.method.unwrap_or("").to_string();
                let target = req.path.unwrap_or("").to_string();
                let len = content_length(req.headers)?;
                if len > max_body {
                    return Err(ReadError::TooLarge);
                }
                let mut body = buf.split_off(head_len);
                if body.len() < len {
                    let mut more = vec![0u8; len - body.len()];
                    s.read_exact(&mut more).await?;
                    body.extend_from_slice(&more);
                }
                body.truncate(len);
                return Ok(Request {
                    method,
                    target,
                    body,
                });
            }
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => return Err(ReadError::TooLarge),
            Err(e) => return Err(ReadError::Malformed(e.to_string())),
        }
    }
}

fn content_length(headers: &[httparse::Header]) -> Result<usize, ReadError> {
    let mut len = 0;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ReadError::Malformed(
                "chunked requests are not accepted".into(),
            ));
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| ReadError::Malformed("bad Content-Length".into()))?;
        }
    }
    Ok(len)
}

/// Writes a response with `body` and closes the write side.
pub async fn write_response<S: AsyncWrite + Unpin>(
    s: &mut S,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    // One write: a response in two small segments waits on Nagle and delayed ACKs.
    let mut all = head.into_bytes();
    all.extend_from_slice(body);
    s.write_all(&all).await?;
    s.flush().await?;
    s.shutdown().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_head_and_body() {
        let raw = b"POST /v1/x?a=b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
        let r = read_request(&mut &raw[..], 100).await.unwrap();
        assert_eq!(
            (r.method.as_str(), r.path(), r.query()),
            ("POST", "/v1/x", "a=b")
        );
        assert_eq!(r.body, b"hello");
        let e = read_request(&mut &raw[..], 4).await.unwrap_err();
        assert_eq!(e.status(), Some(413));
        let e = read_request(&mut &b"\x16\x03\x01garbage\r\n\r\n"[..], 4)
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(400));
        let e = read_request(&mut &b"GET / HTTP/1.1\r\n"[..], 4)
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(400));
    }
}
