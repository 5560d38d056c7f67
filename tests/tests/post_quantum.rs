//! Post-quantum hybrid key exchange: with the `vendored-openssl` build (OpenSSL >= 3.5) our two
//! agents negotiate X25519MLKEM768 (named in the gateway's audit event) and fall back to X25519
//! for a peer without it; with the system OpenSSL 3.0 the same configuration is refused by
//! `check` and at start, naming the build that supports it.

use tunnel_tests::*;

const HYBRID: &str = "[tls]\ngroups = [\"X25519MLKEM768\", \"X25519\"]\n";

fn gateway_config(pki: &Pki, backend: std::net::SocketAddr) -> std::path::PathBuf {
    pki.write(
        "server",
        "toml",
        &format!(
            "{}{HYBRID}{}",
            Gateway::header(),
            backend_toml("echo", backend, "\"any\"")
        ),
    )
}

#[cfg(not(feature = "vendored-openssl"))]
#[test]
fn system_openssl_build_refuses_hybrid_groups_naming_the_vendored_build() {
    let pki = Pki::new();
    let cfg = gateway_config(&pki, "127.0.0.1:9".parse().unwrap());
    let path = cfg.to_str().unwrap();
    // Both `check` and a real start refuse it, each naming the build that supports it.
    for args in [&["check", "--config", path][..], &["--config", path][..]] {
        let out = run_server(args, READY);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        for needle in [
            "tls.groups",
            "\"X25519MLKEM768\"",
            "vendored-openssl",
            "OpenSSL 3.0",
        ] {
            assert!(err.contains(needle), "{args:?}: {needle} missing: {err}");
        }
    }
    // Positive control: the same file without the hybrid group passes.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"X25519MLKEM768\", ", "");
    std::fs::write(&cfg, text).unwrap();
    let out = run_server(&["check", "--config", cfg.to_str().unwrap()], READY);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(feature = "vendored-openssl")]
#[test]
fn vendored_build_negotiates_x25519mlkem768_between_the_agents() {
    use std::net::TcpStream;
    use tunnel_tests::backend::round_trip;
    use tunnel_tests::process::field;
    let pki = Pki::new();
    let backend = Backend::echo();
    let gw = Gateway::start_file(&gateway_config(&pki, backend.addr));
    let through = |extra: &str| {
        let agent = Agent::start_spec(
            &pki,
            &AgentSpec {
                server: gw.addr.to_string(),
                server_name: pki::SERVER_NAME,
                creds: &pki.client("pq"),
                ca: &pki.ca_crt,
                backends: &["echo"],
                extra,
            },
        );
        // The gateway sees the agent's outgoing connection, not this one: take the first
        // audit event after those logged so far (the tunnel may close, and be audited, as
        // soon as the round trip ends).
        let before = gw.proc.audits().len();
        let mut s = TcpStream::connect(agent.addr()).expect("connect");
        let (got, err) = round_trip(&mut s, b"post-quantum bytes");
        assert_eq!(got, b"post-quantum bytes", "{err:?}");
        drop(s);
        gw.proc.wait_until("audit event", PROMPT, |evs| {
            let a: Vec<_> = evs.iter().filter(|e| process::is_audit(e)).collect();
            a.get(before).map(|e| (*e).clone())
        })
    };
    let ev = through(HYBRID);
    assert_eq!(field(&ev, "result"), "ok", "{ev}");
    assert_eq!(field(&ev, "group"), "X25519MLKEM768", "{ev}");
    // A peer without the hybrid group still gets in, with X25519.
    let ev = through("[tls]\ngroups = [\"X25519\"]\n");
    assert_eq!(field(&ev, "result"), "ok", "{ev}");
    assert_eq!(field(&ev, "group").to_ascii_lowercase(), "x25519", "{ev}");
}
