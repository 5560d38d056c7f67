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
