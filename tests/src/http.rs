//! A minimal HTTP/1.1 client for the metrics endpoint (`/metrics`, `/healthz`), and where a
//! process's endpoint listens (from its `metrics endpoint listening` log line, so tests can
//! configure `metrics = "127.0.0.1:0"`).

use crate::process::{field, Proc};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The address of `proc`'s metrics endpoint, once it logged that it listens.
pub fn metrics_addr(proc: &Proc) -> SocketAddr {
    let ev = proc.wait_for_message("metrics endpoint listening", crate::READY);
    field(&ev, "metrics")
        .parse()
        .unwrap_or_else(|_| panic!("no metrics address in {ev}"))
}

/// GET `path` over `s`: (status code, body); status 0 when the server closed without an
/// answer (or did not answer within `timeout`).
pub fn get_on(mut s: TcpStream, path: &str, timeout: Duration) -> (u16, String) {
    s.set_read_timeout(Some(timeout)).expect("timeout");
    s.set_write_timeout(Some(timeout)).expect("timeout");
    if write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").is_err() {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// GET `path` from `addr`: (status code, body), status 0 when closed without an answer.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    match TcpStream::connect_timeout(&addr, crate::PROMPT) {
        Ok(s) => get_on(s, path, crate::PROMPT),
        Err(_) => (0, String::new()),
    }
}

/// The value of the sample `series` (name and labels exactly as rendered) in OpenMetrics text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// A whole HTTP/1.1 response read until the server closed: status, head, de-chunked body.
/// The harness parses responses itself, not with the product's HTTP code it is testing.
#[derive(Debug)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// The head (status line and headers) as text.
    pub head: String,
    /// The body (`Content-Length` bytes, de-chunked, or all that followed the head).
    pub body: Vec<u8>,
}

/// Parses a response read to the end of the connection.
pub fn parse_response(raw: &[u8]) -> Result<RawResponse, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of head")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let rest = &raw[end + 4..];
    let status = head
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line: {head:.80}"))?;
    let header = |name: &str| {
        head.lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
    };
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
    Ok(RawResponse { status, head, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size")?;
        let size = size.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| "bad chunk size")?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or("truncated chunk")?);
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
        assert!(parse_response(b"garbage").is_err());
    }
}
