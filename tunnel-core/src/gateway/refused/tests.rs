use super::*;
use crate::pki::{self, CertSpec};
use crate::revocation::crl::CrlCheck;
use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
use std::pin::Pin;
use tokio::net::{TcpListener, TcpStream};
use tokio_openssl::SslStream;

#[test]
fn each_refusal_maps_to_one_outcome_label_and_alert() {
    use Alert::*;
    let resumed_revoked = Refused::Resumed(Box::new(Refused::Revoked(RevokedBy::Crl)));
    let resumed_expired = Refused::Resumed(Box::new(Refused::HandshakeFailed(
        "client certificate no longer valid: certificate has expired".into(),
    )));
    #[rustfmt::skip]
    let cases: Vec<(Refused, &str, &str, Option<Alert>, &str)> = vec![
        (Refused::Setup("x".into()), "error", "handshake_failed", None, "OpenSSL: x"),
        (Refused::HandshakeTimeout(Duration::from_secs(10)), "timeout", "timeout", None, "no TLS handshake within handshake_timeout (10s)"),
        (Refused::Evicted { pending_for: Duration::from_secs(2), max_handshakes: 8 }, "timeout", "evicted", None, "while max_handshakes (8) were pending"),
        (Refused::HandshakeFailed("client certificate rejected: unable to get local issuer certificate".into()), "handshake_failed", "handshake_failed", None, "client certificate rejected"),
        (Refused::NoClientCertificate, "handshake_failed", "handshake_failed", None, "no client certificate"),
        (Refused::UnknownBackend { sni: Some("nope".into()) }, "denied", "unknown_backend", Some(UnrecognizedName), "no backend named \"nope\""),
        (Refused::UnknownBackend { sni: None }, "denied", "unknown_backend", Some(UnrecognizedName), "no SNI sent and no default_backend configured"),
        (Refused::Denied { backend: "db".into() }, "denied", "denied", Some(HandshakeFailure), "no allow rule of backend \"db\" matches"),
        (Refused::Revoked(RevokedBy::Crl), "revoked", "revoked", Some(HandshakeFailure), "certificate revoked by CRL"),
        (Refused::Revoked(RevokedBy::Ocsp), "revoked", "revoked", None, "certificate revoked (OCSP)"),
        (Refused::CrlExpired, "crl_expired", "crl_expired", Some(HandshakeFailure), "past its nextUpdate (crl_expired = \"deny\")"),
        (Refused::CrlMissing { ca: "CN=Sub CA".into() }, "crl_missing", "crl_missing", Some(HandshakeFailure), "no CRL of CA CN=Sub CA is configured and crl_check requires one"),
        (Refused::Reloaded(Box::new(Refused::Revoked(RevokedBy::Crl))), "revoked", "revoked", None, "refused under the reloaded configuration: certificate revoked by CRL"),
        (Refused::OcspUnknown, "denied", "ocsp", None, "OCSP responder does not know this certificate"),
        (Refused::OcspUnavailable("responder did not answer".into()), "denied", "ocsp", None, "no OCSP answer and ocsp = \"require\": responder did not answer"),
        (resumed_revoked, "revoked", "revoked", None, "resumed session refused: certificate revoked by CRL"),
        (resumed_expired, "handshake_failed", "handshake_failed", None, "resumed session refused: client certificate no longer valid: certificate has expired"),
        (Refused::RevokedDuringSetup, "revoked", "revoked", None, "revoke_established"),
        (Refused::BackendVanished, "error", "handshake_failed", None, "backend vanished"),
        (Refused::BackendTimeout("10.0.0.5:5432".into()), "timeout", "backend_unreachable", None, "connecting to 10.0.0.5:5432 took longer than connect_timeout"),
        (Refused::BackendUnreachable { address: "127.0.0.1:1".into(), error: "Connection refused".into() }, "backend_unreachable", "backend_unreachable", None, "127.0.0.1:1: Connection refused"),
        (Refused::Overloaded, "overloaded", "overloaded", None, "max_connections reached"),
        (Refused::ProxyHeader(ProxyHeaderRefused::NotAllowed("192.0.2.9".parse().unwrap())), "denied", "proxy_protocol", None, "192.0.2.9 may not send a PROXY header (not in proxy_protocol_from)"),
        (Refused::ProxyHeader(ProxyHeaderRefused::Timeout(Duration::from_secs(2))), "timeout", "proxy_protocol", None, "no complete PROXY header within handshake_timeout (2s)"),
        (Refused::ProxyHeader(ProxyHeaderRefused::Malformed("malformed PROXY v1 header".into())), "handshake_failed", "proxy_protocol", None, "malformed PROXY v1 header"),
    ];
    for (r, outcome, label, alert, text) in cases {
        assert_eq!(r.outcome().as_str(), outcome, "{r:?}");
        assert_eq!(r.metric_label(), label, "{r:?}");
        assert_eq!(r.alert(), alert, "{r:?}");
        assert!(r.to_string().contains(text), "{r}: want {text:?}");
    }
}

#[test]
fn the_crl_expired_refusal_has_one_text() {
    // Handshake and post-handshake sites used to word it differently.
    let direct = Refused::CrlExpired.to_string();
    let resumed = Refused::Resumed(Box::new(Refused::CrlExpired)).to_string();
    assert_eq!(resumed, format!("resumed session refused: {direct}"));
    assert!(direct.contains("publish a fresh CRL"), "{direct}");
}

#[test]
fn crl_verdicts_become_refusals_once() {
    use crate::config::CrlExpired::{Deny, Warn};
    assert_eq!(Refused::from_crl(CrlCheck::Good, Deny), None);
    assert_eq!(
        Refused::from_crl(CrlCheck::Revoked, Warn),
        Some(Refused::Revoked(RevokedBy::Crl))
    );
    assert_eq!(
        Refused::from_crl(CrlCheck::Expired(1), Deny),
        Some(Refused::CrlExpired)
    );
    assert_eq!(
        Refused::from_crl(CrlCheck::Expired(1), Warn),
        None,
        "crl_expired = \"warn\""
    );
    assert_eq!(
        Refused::from_crl(CrlCheck::Missing("CN=CA".into()), Warn),
        Some(Refused::CrlMissing { ca: "CN=CA".into() })
    );
}

#[test]
fn only_denials_name_a_backend() {
    assert_eq!(
        Refused::Denied {
            backend: "db".into()
        }
        .backend(),
        Some("db")
    );
    assert_eq!(
        Refused::UnknownBackend {
            sni: Some("db".into())
        }
        .backend(),
        None
    );
    assert_eq!(Refused::Revoked(RevokedBy::Crl).backend(), None);
}

/// A real TLS server that refuses every SNI with `unrecognized_name`, and a real client: the
/// client's error is recognised as that alert by its type, not its text.
#[tokio::test]
async fn a_received_alert_is_recognised_by_type() {
    let ca = pki::new_ca("CA", 1).unwrap();
    let server = pki::new_leaf(&ca, &CertSpec::server("localhost")).unwrap();
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
    b.set_certificate(&server.cert).unwrap();
    b.set_private_key(&server.key).unwrap();
    b.set_servername_callback(|_, alert| {
        *alert = Alert::UnrecognizedName.ssl_alert().unwrap();
        Err(openssl::ssl::SniError::ALERT_FATAL)
    });
    let acceptor = b.build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let ssl = openssl::ssl::Ssl::new(acceptor.context()).unwrap();
        let mut s = SslStream::new(ssl, sock).unwrap();
        let _ = Pin::new(&mut s).accept().await;
    });
    let mut c = SslConnector::builder(SslMethod::tls_client()).unwrap();
    c.set_verify(SslVerifyMode::NONE);
    let ssl = c.build().configure().unwrap().into_ssl("nope").unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut s = SslStream::new(ssl, tcp).unwrap();
    let err = Pin::new(&mut s).connect().await.unwrap_err();
    assert_eq!(alert_in(&err), Some(112), "{err}");
    let io = std::io::Error::other(err);
    assert_eq!(received_alert(&io), Some(112));
    // An error that is no alert is not taken for one.
    let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    assert_eq!(received_alert(&reset), None);
}
