//! Positive controls: after a refusal, prove the gateway still serves a good client (a
//! refusal test must not pass because the gateway hung or died).

use crate::pki::Creds;
use crate::process::{field, Gateway};
use crate::tls::{exchange, local_addr, TlsClient};
use std::path::Path;

/// The audit result (`ok`, `revoked`, ...) of one connection as `who` (trusting `ca`) to
/// `sni`; the handshake itself must complete.
pub fn audit_result(gw: &Gateway, ca: &Path, who: &Creds, sni: &str) -> String {
    let client = TlsClient::new(who, ca);
    let peer = match client.connect(gw.addr, Some(sni)) {
        Ok(mut s) => {
            let p = local_addr(&s);
            let _ = exchange(&mut s, b"x");
            p
        }
        Err(e) => panic!("handshake: {e}"),
    };
    field(&gw.audit_for(peer), "result").to_string()
}

/// Connects as `creds` (trusting `ca`) with `sni`, sends a line, and asserts that bytes came
/// back and that the gateway's audit event for this connection says `result = ok`. Also
/// asserts the gateway process is still running.
pub fn assert_serves(gw: &mut Gateway, creds: &Creds, ca: &Path, sni: Option<&str>) {
    assert!(
        gw.running(),
        "positive control: the gateway exited; its log:\n{}",
        gw.log_text()
    );
    let client = TlsClient::new(creds, ca);
    let mut s = client.connect(gw.addr, sni).unwrap_or_else(|e| {
        panic!(
            "positive control: handshake failed ({e}); gateway log:\n{}",
            gw.log_text()
        )
    });
    let peer = local_addr(&s);
    let (got, _) = exchange(&mut s, b"positive control\n");
    let ev = gw.audit_for(peer);
    assert_eq!(field(&ev, "result"), "ok", "positive control: {ev}");
    assert!(
        !got.is_empty(),
        "positive control: nothing came back through the tunnel; audit: {ev}"
    );
}
