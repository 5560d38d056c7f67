//! The reference deployment `deploy/haproxy/haproxy.cfg` with a real HAProxy in front of
//! three gateways on loopback (PROXY v2, health checks on /healthz, shared ticket keys).
//! While long tunnels stream hash-checked data and a client makes one new connection after
//! another, gateway 1 is drained (SIGTERM) and gateway 3 is killed (SIGKILL): every new
//! connection succeeds, no tunnel on the surviving gateway 2 (or the draining gateway 1)
//! loses a byte, and sessions resume across gateways.

use openssl::ssl::SslSession;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tunnel_tests::haproxy::{deploy_config, Haproxy};
use tunnel_tests::tls::{connect_ssl, exchange, local_addr, TlsClient};
use tunnel_tests::*;

/// A gateway as deploy/haproxy/gateway.toml describes it, on loopback, with its metrics
/// address and its admin socket (for `tunnel-server sessions`).
fn fleet_gateway(
    pki: &Pki,
    keys: &std::path::Path,
    echo: &Backend,
) -> (Gateway, SocketAddr, PathBuf) {
    let maddr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin = pki.dir().join(format!("admin-{}.sock", maddr.port()));
    let gw = Gateway::start_file(&pki.write(
        "server",
        "toml",
        &format!(
            "cert = \"server.crt\"\nkey = \"server.key\"\nclient_ca = \"ca.crt\"\nlog_format = \"json\"\n\
             session_ticket_keys = {}\nmetrics = \"{maddr}\"\ndrain_delay = \"4s\"\nshutdown_timeout = \"60s\"\n\
             admin_socket = {}\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\nproxy_protocol_from = [\"127.0.0.1/32\"]\n{}",
            pki::toml_str(keys),
            pki::toml_str(&admin),
            backend_toml("echo", echo.addr, "\"cn=alice\"")
        ),
    ));
    (gw, maddr, admin)
}

/// Which of the gateways (by their admin sockets) holds the open tunnel from `peer` now.
fn holder(admins: &[PathBuf], peer: SocketAddr) -> usize {
    let held: Vec<usize> = (0..admins.len())
        .filter(|&i| {
            admin::sessions(&admins[i], &[])
                .iter()
                .any(|s| field(s, "peer") == peer.to_string())
        })
        .collect();
    assert_eq!(held.len(), 1, "tunnel {peer} held by gateways {held:?}");
    held[0]
}

/// Which gateway audited the (closed) connection from `peer`: waits for the event.
fn audited_by(gws: &[(Gateway, SocketAddr, PathBuf)], peer: SocketAddr) -> usize {
    let want = peer.to_string();
    admin::wait_until("the connection's audit event", PROMPT, || {
        gws.iter().any(|(g, _, _)| audited(g, &want).is_some())
    });
    gws.iter()
        .position(|(g, _, _)| audited(g, &want).is_some())
        .unwrap()
}

/// A long tunnel: streams `chunks` chunks of 32 KiB through `lb`, one every `pause`, reading
/// the echo as it goes; sends its address on `up` once connected. Returns the client's
/// address and whether every byte came back intact.
fn long_tunnel(
    client: Arc<TlsClient>,
    lb: SocketAddr,
    seed: u64,
    up: Sender<SocketAddr>,
) -> std::thread::JoinHandle<(SocketAddr, bool)> {
    let (chunks, pause) = (60, Duration::from_millis(150));
    std::thread::spawn(move || {
        let mut s = client
            .connect(lb, Some("echo"))
            .expect("long tunnel handshake");
        let me = local_addr(&s);
        // One round trip first: the gateway has dialled the backend and lists the session.
        let mut b = [0u8; 1];
        s.write_all(b"x")
            .and_then(|_| s.read_exact(&mut b))
            .expect("first byte");
        up.send(me).expect("report the tunnel");
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

/// The audit event `gw` logged for `peer`, if any yet.
fn audited(gw: &Gateway, peer: &str) -> Option<serde_json::Value> {
    gw.events()
        .into_iter()
        .find(|e| process::is_audit(e) && field(e, "peer") == peer)
}

/// What the stream of new connections saw: (client address, resumed, gateway that audited
/// it) per connection, the resumptions and offers, and when gateway 1 began draining.
struct Stream {
    conns: Vec<(SocketAddr, bool, usize)>,
    resumed: usize,
    offered: usize,
    drained_at: Instant,
}

type Held = Option<(
    SocketAddr,
    bool,
    openssl::ssl::SslStream<std::net::TcpStream>,
)>;

impl Stream {
    /// Closes the held connection and records which gateway audited it (waiting for the
    /// event, not for a time).
    fn close(&mut self, held: &mut Held, gws: &[(Gateway, SocketAddr, PathBuf)]) {
        if let Some((peer, r, mut prev)) = held.take() {
            let _ = exchange(&mut prev, b"");
            self.conns.push((peer, r, audited_by(gws, peer)));
        }
    }
}

/// New connections one after another; gateway 1 drains at the 15th, gateway 3 dies at the
/// 30th. Each connection stays open until the next is up, so that leastconn sends the next
/// to another gateway and the session it offers comes from a different one.
fn new_connections(
    gws: &mut [(Gateway, SocketAddr, PathBuf)],
    client: &TlsClient,
    lb: SocketAddr,
) -> Stream {
    let start = Instant::now();
    let mut session = None;
    let mut out = Stream {
        conns: Vec::new(),
        resumed: 0,
        offered: 0,
        drained_at: start,
    };
    let mut held: Held = None;
    let mut n = 0u64;
    while n < 60 || start.elapsed() < Duration::from_secs(7) {
        if n == 15 {
            gws[0].0.terminate();
            out.drained_at = Instant::now();
        }
        if n == 30 {
            // No connection in flight at the kill: the held one is closed (and audited) first.
            out.close(&mut held, gws);
            gws[2].0.signal(nix::sys::signal::Signal::SIGKILL);
            // Dead, not dying: a connection its kernel still accepted would be cut.
            gws[2].0.wait_exit(PROMPT);
        }
        let (r, s, me, open) = new_connection(client, lb, session.as_ref(), n);
        out.close(&mut held, gws);
        held = Some((me, r, open));
        if session.is_some() {
            out.offered += 1;
            out.resumed += r as usize;
        }
        session = Some(s);
        n += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    out.close(&mut held, gws);
    out
}

/// Joins the long tunnels: every one held by a live gateway (`holders`, read before the
/// kill) delivered every byte and was audited `ok` there. Returns how many were on live
/// gateways.
fn check_long_tunnels(
    gws: &[(Gateway, SocketAddr, PathBuf)],
    long: Vec<std::thread::JoinHandle<(SocketAddr, bool)>>,
    holders: &std::collections::HashMap<SocketAddr, usize>,
    killed: usize,
) -> usize {
    let mut on_live = 0;
    for h in long {
        let (peer, intact) = h.join().expect("long tunnel thread");
        let at = holders[&peer];
        if at == killed {
            continue;
        }
        assert!(
            intact,
            "tunnel {peer} on live gateway {} lost bytes",
            at + 1
        );
        let want = peer.to_string();
        let ev = gws[at]
            .0
            .wait_for_audit(PROMPT, |e| field(e, "peer") == want);
        assert_eq!(field(&ev, "result"), "ok", "{ev}");
        on_live += 1;
    }
    on_live
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
    let mut gws: Vec<(Gateway, SocketAddr, PathBuf)> =
        (0..3).map(|_| fleet_gateway(&pki, &keys, &echo)).collect();
    let front: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = deploy_config(
        front,
        &gws.iter().map(|(g, m, _)| (g.addr, *m)).collect::<Vec<_>>(),
    );
    let lb = Haproxy::start_config(pki.dir(), &cfg, front);
    let client = Arc::new(TlsClient::new(&pki.client("alice"), &pki.ca_crt));

    // Long tunnels spread over the three gateways (leastconn), running through both events.
    // Which gateway holds each is read from `tunnel-server sessions` before anything happens.
    let (up, ups) = channel();
    let long: Vec<_> = (0..9)
        .map(|i| long_tunnel(client.clone(), lb.addr, 100 + i, up.clone()))
        .collect();
    let admins: Vec<PathBuf> = gws.iter().map(|(_, _, a)| a.clone()).collect();
    let holders: std::collections::HashMap<SocketAddr, usize> = (0..long.len())
        .map(|_| {
            let peer = ups.recv_timeout(PROMPT).expect("a long tunnel connected");
            (peer, holder(&admins, peer))
        })
        .collect();
    let stream = new_connections(&mut gws, &client, lb.addr);
    let (resumed, offered) = (stream.resumed, stream.offered);
    let rate = resumed as f64 / offered as f64;
    eprintln!(
        "fleet: {} new connections all succeeded; {resumed}/{offered} resumed ({:.0}%) across 3 gateways",
        stream.conns.len(),
        rate * 100.0
    );
    assert!(rate >= 0.8, "resumption rate {rate}");
    // The resumptions on a gateway other than the previous connection's (PROXY v2 gave the
    // gateways the client's address, so their audit events say which served each).
    let cross: Vec<bool> = stream
        .conns
        .windows(2)
        .filter(|w| w[0].2 != w[1].2)
        .map(|w| w[1].1)
        .collect();
    let cross_resumed = cross.iter().filter(|r| **r).count();
    eprintln!(
        "fleet: {cross_resumed}/{} sessions issued by one gateway resumed on another",
        cross.len()
    );
    let by: Vec<(usize, bool)> = stream.conns.iter().map(|c| (c.2, c.1)).collect();
    assert!(
        cross.len() >= 10,
        "too few cross-gateway connections: {by:?}"
    );
    assert!(cross_resumed as f64 >= 0.8 * cross.len() as f64, "{by:?}");

    // Every long tunnel held by gateway 1 (drained) or 2 (survivor) delivered every byte.
    let on_live = check_long_tunnels(&gws, long, &holders, 2);
    eprintln!(
        "fleet: long tunnels: {on_live} intact on gateways 1-2, {} on the killed gateway 3",
        holders.len() - on_live
    );
    assert!(
        on_live >= 2,
        "too few tunnels on the live gateways to prove anything"
    );
    // The drained gateway finished its tunnels and exited cleanly after leaving rotation.
    let status = gws[0].0.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "drained gateway exited with {status}");
    assert!(stream.drained_at.elapsed() >= Duration::from_secs(4));
    drop(lb);
}
