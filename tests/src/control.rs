//! Positive controls: after a refusal, prove the gateway still serves a good client (a
//! refusal test must not pass because the gateway hung or died).

use crate::pki::Creds;
use crate::process::{field, Gateway};
use crate::tls::{exchange, local_addr, TlsClient};
use std::path::Path;

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
