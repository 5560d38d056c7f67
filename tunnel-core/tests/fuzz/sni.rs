//! SNI handling: the name check agrees with its definition, and real handshakes (in-process,
//! over a socket pair, with the gateway's own `ServerTls`) with arbitrary server names never
//! panic and succeed exactly when the name selects a backend of the fixture's config (the
//! test's own model, not the policy's `target`).

use super::common::{config, fixture};
use openssl::ssl::{Ssl, SslContext, SslMethod, SslVerifyMode};
use proptest::prelude::*;
use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tunnel_core::config::{valid_backend_name_bytes, ServerConfig};
use tunnel_core::gateway::refused::Refused;
use tunnel_core::revocation::ocsp::Staple;
use tunnel_core::tls::ServerTls;

fn gateway() -> &'static (ServerTls, tunnel_core::authz::policy::Policy) {
    static G: OnceLock<(ServerTls, tunnel_core::authz::policy::Policy)> = OnceLock::new();
    G.get_or_init(|| {
        let f = fixture();
        let cfg =
            ServerConfig::from_toml(&f.dir.join("server.toml"), &f.server_toml, HashMap::new())
                .unwrap_or_else(|e| panic!("{e}"));
        let policy = cfg.policy.clone();
        let tls = ServerTls::new(
            &cfg,
            Arc::new(policy.clone()),
            Arc::new(Staple::default()),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        (tls, policy)
    })
}

fn client_ctx() -> &'static SslContext {
    static C: OnceLock<SslContext> = OnceLock::new();
    C.get_or_init(|| {
        let f = fixture();
        let mut b = SslContext::builder(SslMethod::tls_client()).unwrap();
        b.set_certificate(&f.clients[1].cert).unwrap();
        b.set_private_key(&f.clients[1].key).unwrap();
        b.cert_store_mut().add_cert(f.ca.cert.clone()).unwrap();
        b.set_verify(SslVerifyMode::PEER);
        b.build()
    })
}

/// One handshake with `sni` (none when `None`): Ok, or the gateway's recorded refusal; `None`
/// when OpenSSL's client will not send that name at all (over 255 bytes).
fn handshake(sni: Option<&str>) -> Option<Result<(), Option<Refused>>> {
    let (tls, _) = gateway();
    let (a, b) = UnixStream::pair().unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    }
    let mut cssl = Ssl::new(client_ctx()).unwrap();
    if let Some(name) = sni {
        if cssl.set_hostname(name).is_err() {
            return None;
        }
    }
    cssl.param_mut().set_host("localhost").unwrap();
    let client = std::thread::spawn(move || {
        let r = cssl.connect(a);
        // Read the gateway's NewSessionTicket or alert, then go away.
        if let Ok(mut s) = r {
            let _ = s.ssl_read(&mut [0u8; 1]);
        }
    });
    let (ssl, notes) = tls.new_ssl().unwrap();
    let res = ssl
        .accept(b)
        .map(|_| ())
        .map_err(|_| notes.take().map(|(r, _)| r));
    client.join().expect("client thread");
    Some(res)
}

/// The model, from the fixture's config (common.rs): backends `db` and `web`, default
/// `web`; an SNI selects the backend of that name, ASCII case ignored, nothing else.
fn selects_a_backend(sni: Option<&str>) -> bool {
    match sni {
        None => true,
        Some(s) => ["db", "web"].contains(&s.to_ascii_lowercase().as_str()),
    }
}

fn ascii_sni() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["db", "DB", "Web", "web.", "nope", "db\u{2028}", "d*b"]).prop_map(str::to_string),
        2 => "[a-zA-Z0-9._\\-]{1,12}",
        2 => "[^\\x00]{1,40}",
        1 => "[a-z]{250,260}",
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn backend_name_check_agrees_with_its_definition(n in prop::collection::vec(any::<u8>(), 0..300)) {
        let want = !n.is_empty()
            && n.len() <= 253
            && n.iter().all(|c| c.is_ascii_alphanumeric() || b"-._".contains(c));
        prop_assert_eq!(valid_backend_name_bytes(&n), want);
    }
}

proptest! {
    // Each case is two real TLS handshakes: fewer cases.
    #![proptest_config(config(24))]

    #[test]
    fn handshakes_with_arbitrary_sni_follow_the_policy(sni in prop::option::of(ascii_sni())) {
        let sni = sni.filter(|s| !s.is_empty());
        let selects = selects_a_backend(sni.as_deref());
        match handshake(sni.as_deref()) {
            None => {}
            Some(Ok(())) => prop_assert!(selects, "served with SNI {:?}", sni),
            Some(Err(refusal)) => {
                prop_assert!(!selects, "refused with SNI {:?}: {:?}", sni, refusal);
                let unknown = matches!(refusal, Some(Refused::UnknownBackend { .. }));
                prop_assert!(unknown, "SNI {:?} refused for another reason: {:?}", sni, refusal);
            }
        }
        // Positive control: the same gateway still serves a good client.
        prop_assert_eq!(handshake(Some("db")), Some(Ok(())), "db refused after SNI {:?}", sni);
    }
}

#[test]
fn the_fixture_client_is_served() {
    assert_eq!(handshake(Some("db")), Some(Ok(())));
    assert_eq!(
        handshake(None),
        Some(Ok(())),
        "no SNI goes to the default backend"
    );
    assert!(matches!(
        handshake(Some("nope")),
        Some(Err(Some(Refused::UnknownBackend { .. })))
    ));
}
