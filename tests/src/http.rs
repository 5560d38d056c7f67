//! A minimal HTTP/1.1 GET for the gateway's `/healthz` and `/metrics` endpoints.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// `GET path` on `addr`; returns the status code and the body (code 0 when the endpoint
/// cannot be reached or answers no status line).
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(crate::PROMPT));
    if write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").is_err() {
        return (0, String::new());
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
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
