//! Alert rules and dashboard against the real metrics: `promtool test rules` on
//! contrib/prometheus/alerts_test.yml, `promtool check metrics` on a live gateway's `/metrics`
//! after real traffic (allowed, denied, backend unreachable), and every metric that
//! contrib/prometheus/alerts.yml and contrib/grafana/tunnel.json use is one the gateway exports.
//! Needs `promtool` (Debian package `prometheus`; scripts/test installs it).

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tunnel_tests::tls::{exchange, TlsClient};
use tunnel_tests::*;

fn contrib(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .join("contrib")
        .join(rel)
}

fn promtool() -> Command {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "promtool not found: install Debian's `prometheus` package (scripts/test does)"
    );
    Command::new("promtool")
}

/// `promtool check metrics` on `text`: (success, findings).
fn check_metrics(text: &str) -> (bool, String) {
    let mut child = promtool()
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let findings =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), findings)
}

/// GET /metrics with optional extra header lines; returns the body.
fn scrape(addr: SocketAddr, extra: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("metrics endpoint");
    s.set_read_timeout(Some(PROMPT)).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: test\r\n{extra}\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// Metric names (`tunnel_…`) a PromQL text mentions.
fn metric_names(promql: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = promql;
    while let Some(i) = rest.find("tunnel_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Sample names in classic text format.
fn exported(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
        .collect()
}

/// A gateway with metrics on, after one allowed tunnel, one denied client and one connection
/// to a backend that is down; returns the gateway (kept alive) and the metrics address.
fn gateway_with_traffic(pki: &Pki, echo: &Backend) -> (Gateway, SocketAddr) {
    let maddr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let down: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let crl = pki.crl(&[]);
    let gw = Gateway::start(
        pki,
        &format!(
            "metrics = \"{maddr}\"\ncrl = [{}]\n{}{}",
            pki::toml_str(&crl),
            backend_toml("data", echo.addr, "\"cn=alice\""),
            backend_toml("down", down, "\"cn=alice\"")
        ),
    );
    let alice = TlsClient::new(&pki.client("alice"), &pki.ca_crt);
    let mut s = alice.connect(gw.addr, Some("data")).expect("alice");
    let (got, _) = exchange(&mut s, b"ping");
    assert_eq!(got, b"ping");
    gw.wait_for_audit(PROMPT, |e| field(e, "result") == "ok");
    if let Ok(mut s) = alice.connect(gw.addr, Some("down")) {
        let _ = exchange(&mut s, b"x");
    }
    gw.wait_for_audit(PROMPT, |e| field(e, "result") == "backend_unreachable");
    let bob = TlsClient::new(&pki.client("bob"), &pki.ca_crt);
    if let Ok(mut s) = bob.connect(gw.addr, Some("data")) {
        let _ = exchange(&mut s, b"x");
    }
    gw.wait_for_audit(PROMPT, |e| field(e, "result") == "denied");
    (gw, maddr)
}

#[test]
fn alert_rules_pass_their_promtool_unit_tests() {
    let out = promtool()
        .current_dir(contrib("prometheus"))
        .args(["test", "rules", "alerts_test.yml"])
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = promtool()
        .args(["check", "rules"])
        .arg(contrib("prometheus/alerts.yml"))
        .output()
        .expect("promtool");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn live_metrics_pass_promtool_and_cover_alerts_and_dashboard() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let (_gw, maddr) = gateway_with_traffic(&pki, &echo);

    let text = scrape(maddr, "");
    let (ok, findings) = check_metrics(&text);
    assert!(
        ok && findings.trim().is_empty(),
        "promtool check metrics:\n{findings}\non:\n{text}"
    );
    // Control: promtool does flag OpenMetrics counter families (no `_total` in HELP/TYPE), so
    // the clean result above is not promtool ignoring its input.
    let om = scrape(
        maddr,
        "Accept: application/openmetrics-text; version=1.0.0\r\n",
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    let (_, om_findings) = check_metrics(&om);
    assert!(om_findings.contains("no help text"), "{om_findings}");

    let have = exported(&text);
    let alerts = std::fs::read_to_string(contrib("prometheus/alerts.yml")).expect("alerts.yml");
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(contrib("grafana/tunnel.json")).expect("tunnel.json"),
    )
    .expect("tunnel.json is not valid JSON");
    let panels = dash["panels"].as_array().expect("dashboard panels");
    let mut exprs: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(exprs.len() >= panels.len(), "a panel without a query");
    exprs.push(alerts);
    let mut used = 0;
    for expr in &exprs {
        for name in metric_names(expr) {
            used += 1;
            assert!(
                have.contains(&name),
                "{name} (used in {expr:.80}) is not exported by the gateway:\n{text}"
            );
        }
    }
    assert!(used > 20, "only {used} metric references found");
}
