//! External load generators: wrk (HTTP connection and request rates) and iperf3 (bulk), and
//! the parsing of what they print.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What a wrk run measured.
#[derive(Debug, Default, Clone)]
pub struct WrkResult {
    /// Completed requests per second.
    pub rate: f64,
    /// Requests completed.
    pub requests: u64,
    /// Socket errors (connect + read + write + timeout) and non-2xx/3xx answers.
    pub errors: u64,
    /// The error line as wrk printed it, if any.
    pub error_text: String,
}

/// Runs wrk (one thread) with `conns` connections for `dur` against 127.0.0.1:`port`;
/// `close` adds `Connection: close` so that every request uses a new connection.
pub fn wrk(
    wrk: &Path,
    port: u16,
    conns: usize,
    dur: Duration,
    close: bool,
) -> Result<WrkResult, String> {
    let mut cmd = Command::new(wrk);
    cmd.args(["-t1", "-c", &conns.to_string()])
        .args(["-d", &format!("{}s", dur.as_secs().max(1))])
        .args(["--timeout", "5s"]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(format!("http://127.0.0.1:{port}/"));
    let out = cmd.output().map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!(
            "wrk failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse_wrk(&text).ok_or_else(|| format!("cannot read wrk output:\n{text}"))
}

/// Reads the numbers out of wrk's text output.
pub fn parse_wrk(text: &str) -> Option<WrkResult> {
    let mut r = WrkResult::default();
    let mut seen_rate = false;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            r.rate = v.trim().parse().ok()?;
            seen_rate = true;
        } else if line.contains(" requests in ") {
            r.requests = line.split_whitespace().next()?.parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 12, write 0, timeout 0"
            r.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().nth(1))
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
            r.error_text = line.to_string();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += v.trim().parse::<u64>().ok()?;
            r.error_text = format!("{} {line}", r.error_text).trim().to_string();
        }
    }
    seen_rate.then_some(r)
}

/// Runs one iperf3 stream for `dur` through 127.0.0.1:`port`, client to server or (`download`,
/// iperf3 -R) server to client; returns Gbit/s received.
pub fn iperf3(iperf3: &Path, port: u16, dur: Duration, download: bool) -> Result<f64, String> {
    let mut cmd = Command::new(iperf3);
    cmd.args(["-c", "127.0.0.1", "-p", &port.to_string(), "-J", "-t"])
        .arg(dur.as_secs().max(1).to_string());
    if download {
        cmd.arg("-R");
    }
    let out = cmd.output().map_err(|e| format!("iperf3: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("iperf3 output is not JSON ({e}): {text}"))?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        return Err(format!("iperf3: {err}"));
    }
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(|b| b.as_f64())
        .map(|b| b / 1e9)
        .ok_or_else(|| format!("no end.sum_received in iperf3 output: {text}"))
}

/// First line of `prog ARGS` output (stdout, else stderr), for the version table.
pub fn version_of(prog: &Path, args: &[&str], line_with: &str) -> String {
    let Ok(out) = Command::new(prog).args(args).output() else {
        return "?".to_string();
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find(|l| l.contains(line_with))
        .unwrap_or("?")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = "Running 2s test @ http://127.0.0.1:1/\n  1 threads and 32 connections\n\
            \x20 Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
            \x20   Latency     1.00ms  100.00us   2.00ms   90.00%\n\
            \x20 12345 requests in 2.00s, 1.23MB read\n\
            \x20 Socket errors: connect 1, read 2, write 0, timeout 3\n\
            \x20 Non-2xx or 3xx responses: 4\n\
            Requests/sec:   6172.50\nTransfer/sec:    615.00KB\n";
        let r = parse_wrk(text).unwrap();
        assert_eq!(r.requests, 12345);
        assert_eq!(r.errors, 10);
        assert!((r.rate - 6172.5).abs() < 1e-9);
        assert!(parse_wrk("garbage").is_none());
    }
}
