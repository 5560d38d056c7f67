//! The reference deployment `deploy/haproxy/haproxy.cfg` with a real HAProxy in front of
//! three gateways on loopback (PROXY v2, health checks on /healthz, shared ticket keys).
//! While long tunnels stream hash-checked data and a client makes one new connection after
//! another, gateway 1 is drained (SIGTERM) and gateway 3 is killed (SIGKILL): every new
//! connection succeeds, no tunnel on the surviving gateway 2 (or the draining gateway 1)
//! loses a byte, and sessions resume across gateways.

use openssl::ssl::SslSession;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tunnel_tests::haproxy::{deploy_config, Haproxy};
use tunnel_tests::tls::{connect_ssl, exchange, local_addr, TlsClient};
use tunnel_tests::*;

/// A gateway as deploy/haproxy/gateway.toml describes it, on loopback.
fn fleet_gateway(pki: &Pki, keys: &std::path::Path, echo: &Backend) -> (Gateway, SocketAddr) {
    let maddr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = Gateway::start_file(&pki.write(
        "server",
        "toml",
        &format!(
            "cert = \"server.crt\"\nkey = \"server.key\"\nclient_ca = \"ca.crt\"\nlog_format = \"json\"\n\
             session_ticket_keys = {}\nmetrics = \"{maddr}\"\ndrain_delay = \"4s\"\nshutdown_timeout = \"60s\"\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\nproxy_protocol_from = [\"127.0.0.1/32\"]\n{}",
            pki::toml_str(keys),
            backend_toml("echo", echo.addr, "\"cn=alice\"")
        ),
    ));
    (gw, maddr)
}

/// A long tunnel: streams `chunks` chunks of 32 KiB through `lb`, one every `pause`, reading
/// the echo as it goes. Returns the client's address and whether every byte came back intact.
fn long_tunnel(
    client: Arc<TlsClient>,
    lb: SocketAddr,
    seed: u64,
    chunks: usize,
    pause: Duration,
) -> std::thread::JoinHandle<(SocketAddr, bool)> {
    std::thread::spawn(move || {
        let mut s = client
            .connect(lb, Some("echo"))
            .expect("long tunnel handshake");
        let me = local_addr(&s);
        let msg = data::pattern_bytes(seed, chunks * 32 * 1024);
        let mut got = Vec::with_capacity(msg.len());
        for chunk in msg.chunks(32 * 1024) {
            if s.write_all(chunk).is_err() {
                return (me, false);
            }
            let mut buf = vec![0u8; chunk.len()];
            if s.read_exact(&mut buf).is_err() {
                return (me, false);
            }
            got.extend_from_slice(&buf);
            std::thread::sleep(pause);
        }
        let _ = exchange(&mut s, b"");
        (me, sha256_hex(&got) == sha256_hex(&msg))
    })
}

/// One new connection through `lb`, offering `offer`: (resumed, next session, client
/// address, the open connection). Panics when the bytes do not come back intact.
fn new_connection(
    client: &TlsClient,
    lb: SocketAddr,
    offer: Option<&SslSession>,
    seed: u64,
) -> (
    bool,
    SslSession,
    SocketAddr,
    openssl::ssl::SslStream<std::net::TcpStream>,
) {
    let mut ssl = client.ssl(Some("echo"));
    if let Some(sess) = offer {
        // SAFETY: the session comes from a connection of `client`'s own SslContext.
        unsafe { ssl.set_session(sess).expect("set_session") };
    }
    let mut s = connect_ssl(ssl, lb).unwrap_or_else(|e| panic!("connection {seed}: {e}"));
    let me = local_addr(&s);
    let msg = data::pattern_bytes(seed, 20_000);
    s.write_all(&msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("connection {seed}: {e}"));
    assert_eq!(sha256_hex(&got), sha256_hex(&msg), "connection {seed}");
    let resumed = s.ssl().session_reused();
    let sess = s.ssl().session().expect("session").to_owned();
    (resumed, sess, me, s)
}

/// Whether `gw` logged an audit event for `peer` within `wait`.
fn audited(gw: &Gateway, peer: SocketAddr, wait: Duration) -> Option<serde_json::Value> {
    let want = peer.to_string();
    gw.try_wait_until(wait, |evs| {
        evs.iter()
            .find(|e| process::is_audit(e) && field(e, "peer") == want)
            .cloned()
    })
    .ok()
}

#[test]
fn drain_one_gateway_and_kill_another_behind_haproxy_without_losing_a_connection_or_a_byte() {
    haproxy::binary();
    let pki = Pki::new();
    let echo = Backend::echo();
    let keys = pki.write("tickets", "keys", &{
        let mut b = [0u8; 80];
        openssl::rand::rand_bytes(&mut b).unwrap();
        b.iter().map(|x| format!("{x:02x}")).collect::<String>() + "\n"
    });
    std::fs::set_permissions(&keys, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut gws: Vec<(Gateway, SocketAddr)> =
        (0..3).map(|_| fleet_gateway(&pki, &keys, &echo)).collect();
    let front: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = deploy_config(
        front,
        &gws.iter().map(|(g, m)| (g.addr, *m)).collect::<Vec<_>>(),
    );
    let lb = Haproxy::start_config(pki.dir(), &cfg, front);
    let client = Arc::new(TlsClient::new(&pki.client("alice"), &pki.ca_crt));

    // Long tunnels spread over the three gateways (leastconn), running through both events.
    let long: Vec<_> = (0..9)
        .map(|i| {
            long_tunnel(
                client.clone(),
                lb.addr,
                100 + i,
                60,
                Duration::from_millis(150),
            )
        })
        .collect();
    // New connections one after another; gateway 1 drains at the 15th, gateway 3 dies at the
    // 30th (between two connections, so none is in flight at that moment).
    let start = Instant::now();
    let mut session = None;
    let (mut resumed, mut offered) = (0, 0);
    let mut drained_at = None;
    let mut n = 0u64;
    let mut conns = Vec::new();
    let mut held = None;
    while n < 60 || start.elapsed() < Duration::from_secs(7) {
        if n == 15 {
            gws[0].0.terminate();
            drained_at = Some(Instant::now());
        }
        if n == 30 {
            gws[2].0.signal(nix::sys::signal::Signal::SIGKILL);
            // Dead, not dying: a connection its kernel still accepted would be cut.
            gws[2].0.wait_exit(PROMPT);
        }
        let (r, s, me, open) = new_connection(&client, lb.addr, session.as_ref(), n);
        // The previous connection stays open until this one is up, so that leastconn sends
        // this one to another gateway: the session it offers comes from a different one.
        if let Some(mut prev) = held.replace(open) {
            let _ = exchange(&mut prev, b"");
        }
        if session.is_some() {
            offered += 1;
            resumed += r as usize;
        }
        conns.push((me, r));
        session = Some(s);
        n += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let rate = resumed as f64 / offered as f64;
    eprintln!(
        "fleet: {n} new connections all succeeded; {resumed}/{offered} resumed ({:.0}%) across 3 gateways",
        rate * 100.0
    );
    assert!(rate >= 0.8, "resumption rate {rate}");
    // Which gateway served each connection (from the audit events: PROXY v2 gave them the
    // client's address), to count the resumptions on a gateway other than the previous one.
    let served_by = |peer: SocketAddr| {
        gws.iter().position(|(g, _)| {
            g.events()
                .iter()
                .any(|e| process::is_audit(e) && field(e, "peer") == peer.to_string())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let by: Vec<(Option<usize>, bool)> = conns.iter().map(|(p, r)| (served_by(*p), *r)).collect();
    let cross: Vec<bool> = by
        .windows(2)
        .filter(|w| w[0].0.is_some() && w[1].0.is_some() && w[0].0 != w[1].0)
        .map(|w| w[1].1)
        .collect();
    let cross_resumed = cross.iter().filter(|r| **r).count();
    eprintln!(
        "fleet: {cross_resumed}/{} sessions issued by one gateway resumed on another",
        cross.len()
    );
    assert!(
        cross.len() >= 10,
        "too few cross-gateway connections: {by:?}"
    );
    assert!(cross_resumed as f64 >= 0.8 * cross.len() as f64, "{by:?}");

    // Every long tunnel on gateway 1 (drained) or 2 (survivor) delivered every byte; the
    // ones that failed were on gateway 3, which was killed.
    let (mut on_survivors, mut on_killed) = (0, 0);
    for h in long {
        let (peer, intact) = h.join().expect("long tunnel thread");
        let ev = audited(&gws[0].0, peer, Duration::from_secs(1))
            .or_else(|| audited(&gws[1].0, peer, Duration::from_secs(1)));
        match (intact, ev) {
            (true, Some(ev)) => {
                assert_eq!(field(&ev, "result"), "ok", "{ev}");
                on_survivors += 1;
            }
            (false, None) => on_killed += 1,
            (true, None) => panic!("tunnel {peer} intact but audited nowhere"),
            (false, Some(ev)) => panic!("tunnel {peer} lost bytes on a live gateway: {ev}"),
        }
    }
    eprintln!("fleet: long tunnels: {on_survivors} intact on gateways 1-2, {on_killed} cut with gateway 3");
    assert!(
        on_survivors >= 2,
        "too few tunnels on the live gateways to prove anything"
    );
    // The drained gateway finished its tunnels and exited cleanly after leaving rotation.
    let status = gws[0].0.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "drained gateway exited with {status}");
    assert!(drained_at.unwrap().elapsed() >= Duration::from_secs(4));
    drop(lb);
}
