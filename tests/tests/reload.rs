//! Reload without dropping a connection: SIGHUP and file changes swap configuration,
//! certificates and rules for new connections while established ones keep flowing; a broken
//! configuration is refused and the old one keeps serving; listeners follow `listen`.

use nix::sys::signal::Signal;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tunnel_core::pki::CertSpec;
use tunnel_tests::process::count_reloads;
use tunnel_tests::tls::{exchange, local_addr, TlsClient};
use tunnel_tests::*;

/// Number of "configuration reloaded" lines so far.
fn reloads(p: &Proc) -> usize {
    count_reloads(&p.events())
}

/// Sends SIGHUP and waits until one more successful reload has been logged.
fn sighup_and_wait(p: &Proc) {
    let before = reloads(p);
    p.signal(Signal::SIGHUP);
    p.wait_until("configuration reloaded", PROMPT, |evs| {
        (count_reloads(evs) > before).then_some(())
    });
}

/// One long-lived tunnelled stream: a writer thread sends chunks of a known pattern until
/// `stop`, then half-closes; the reader hashes everything echoed back.
struct Stream {
    writer: std::thread::JoinHandle<(u64, String)>,
    reader: std::thread::JoinHandle<(u64, String, Option<std::io::Error>)>,
}

fn start_stream(addr: SocketAddr, seed: u64, stop: Arc<AtomicBool>) -> Stream {
    let s = backend::connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = s;
    let writer = std::thread::spawn(move || {
        let mut pattern = data::Pattern::new(seed);
        let mut hasher = sha2::Sha256::new();
        let mut sent = 0u64;
        let mut buf = vec![0u8; 8 * 1024];
        while !stop.load(Ordering::SeqCst) {
            pattern.fill(&mut buf);
            if w.write_all(&buf).is_err() {
                break;
            }
            hasher.update(&buf);
            sent += buf.len() as u64;
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = w.shutdown(Shutdown::Write);
        let hex: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        (sent, hex)
    });
    let reader = std::thread::spawn(move || hash_reader(&mut r));
    Stream { writer, reader }
}

#[test]
fn reload_under_load_keeps_every_byte_and_applies_new_rules_to_new_connections_only() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let alice = pki.client("alice");
    let body_v1 = backend_toml("data", echo.addr, "\"cn=alice\"");
    let gw = Gateway::start(&pki, &body_v1);
    let agent = Agent::start(&pki, gw.addr, &alice, &["data"]);

    let stop = Arc::new(AtomicBool::new(false));
    let streams: Vec<Stream> = (0..50)
        .map(|i| start_stream(agent.addr(), 1000 + i, stop.clone()))
        .collect();
    // Every stream has reached the backend before the first reload.
    let deadline = Instant::now() + PROMPT * 3;
    while echo.accepted() < 50 {
        assert!(
            Instant::now() < deadline,
            "only {} streams connected",
            echo.accepted()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let client = TlsClient::new(&alice, &pki.ca_crt);
    let old_server_serial = gw_cert_serial(&client, gw.addr);

    // 1: a backend added.
    let body_v2 = format!(
        "{body_v1}{}",
        backend_toml("extra", echo.addr, "\"cn=alice\"")
    );
    std::fs::write(&gw.config, Gateway::header() + &body_v2).unwrap();
    sighup_and_wait(&gw);
    let mut s = client.connect(gw.addr, Some("extra")).expect("handshake");
    assert_eq!(exchange(&mut s, b"new backend").0, b"new backend");

    // 2: a rule changed: alice may no longer reach "data" on new connections.
    let body_v3 = format!(
        "{}{}",
        backend_toml("data", echo.addr, "\"cn=bob\""),
        backend_toml("extra", echo.addr, "\"cn=alice\"")
    );
    std::fs::write(&gw.config, Gateway::header() + &body_v3).unwrap();
    sighup_and_wait(&gw);
    let mut s = client.connect(gw.addr, Some("data")).expect("TCP");
    let peer = local_addr(&s);
    let (got, _) = exchange(&mut s, b"should not pass");
    assert!(got.is_empty(), "denied connection got {got:?}");
    assert_eq!(field(&gw.audit_for(peer), "result"), "denied");

    // 3: the gateway's certificate replaced (same paths, new key and serial).
    let mut spec = CertSpec::server(pki::SERVER_NAME);
    spec.ip.push("127.0.0.1".parse().unwrap());
    let fresh = tunnel_core::pki::new_leaf(pki.ca(), &spec).unwrap();
    let tmp_crt = pki.unique_path("server-new", "crt");
    let tmp_key = pki.unique_path("server-new", "key");
    tunnel_core::pki::write_issued(&fresh, &tmp_crt, &tmp_key).unwrap();
    std::fs::rename(&tmp_key, &pki.server.key).unwrap();
    std::fs::rename(&tmp_crt, &pki.server.cert).unwrap();
    sighup_and_wait(&gw);
    let new_serial = gw_cert_serial(&client, gw.addr);
    assert_ne!(
        new_serial, old_server_serial,
        "new connections must see the new certificate"
    );

    // 4 and 5: back to the first rules, then a reload with nothing changed.
    std::fs::write(&gw.config, Gateway::header() + &body_v2).unwrap();
    sighup_and_wait(&gw);
    sighup_and_wait(&gw);
    let mut s = client.connect(gw.addr, Some("data")).expect("handshake");
    assert_eq!(exchange(&mut s, b"allowed again").0, b"allowed again");

    stop.store(true, Ordering::SeqCst);
    for (i, st) in streams.into_iter().enumerate() {
        let (sent, sent_hash) = st.writer.join().unwrap();
        let (got, got_hash, err) = st.reader.join().unwrap();
        assert!(err.is_none(), "stream {i}: {err:?}");
        assert!(sent > 0, "stream {i} sent nothing");
        assert_eq!(
            (got, got_hash),
            (sent, sent_hash),
            "stream {i} lost or changed bytes"
        );
    }
    // Every stream ended normally at the gateway, none was cut by a reload.
    let ok = gw.wait_until("50 ok audits for data", PROMPT, |evs| {
        let n = evs
            .iter()
            .filter(|e| {
                process::is_audit(e) && field(e, "backend") == "data" && field(e, "result") == "ok"
            })
            .count();
        (n >= 51).then_some(n)
    });
    assert!(ok >= 51);
    assert!(reloads(&gw) >= 5);
}

/// The serial number of the certificate the gateway presents now.
fn gw_cert_serial(client: &TlsClient, addr: SocketAddr) -> String {
    let s = client.connect(addr, Some("data")).expect("handshake");
    let cert = s.ssl().peer_certificate().expect("server certificate");
    tunnel_tests::pki::serial_hex(&cert)
}

#[test]
fn broken_config_is_refused_and_the_old_one_keeps_serving() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let alice = pki.client("alice");
    let body = backend_toml("data", echo.addr, "\"cn=alice\"");
    let gw = Gateway::start(&pki, &body);
    let client = TlsClient::new(&alice, &pki.ca_crt);

    for broken in [
        "this is not toml [".to_string(),
        Gateway::header() + &backend_toml("data", echo.addr, "\"cx=alice\""),
        Gateway::header().replace("server.key", "missing.key") + &body,
    ] {
        std::fs::write(&gw.config, &broken).unwrap();
        let before = gw.events().len();
        gw.signal(Signal::SIGHUP);
        let ev = gw.wait_until("reload refused", PROMPT, |evs| {
            evs[before..]
                .iter()
                .find(|e| field(e, "message").contains("reload refused"))
                .cloned()
        });
        let error = field(&ev, "error");
        assert!(
            error.contains(&gw.config.display().to_string()),
            "error names the file: {error}"
        );
        let mut s = client.connect(gw.addr, Some("data")).expect("handshake");
        assert_eq!(exchange(&mut s, b"still here").0, b"still here");
    }
}

#[test]
fn certificate_file_change_is_picked_up_without_a_signal() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let bob = pki.client("bob");
    let gw = Gateway::start(
        &pki,
        &format!(
            "reload_interval = \"1s\"\n{}",
            backend_toml("data", echo.addr, "\"cn=alice\"")
        ),
    );
    let bob_client = TlsClient::new(&bob, &pki.ca_crt);
    let mut s = bob_client.connect(gw.addr, Some("data")).expect("TCP");
    assert!(
        exchange(&mut s, b"x").0.is_empty(),
        "bob is not allowed yet"
    );

    let before = reloads(&gw);
    std::fs::write(
        &gw.config,
        Gateway::header()
            + "reload_interval = \"1s\"\n"
            + &backend_toml("data", echo.addr, "\"cn=alice\", \"cn=bob\""),
    )
    .unwrap();
    gw.wait_until("reload after file change", PROMPT, |evs| {
        (count_reloads(evs) > before).then_some(())
    });
    let mut s = bob_client
        .connect(gw.addr, Some("data"))
        .expect("handshake");
    assert_eq!(exchange(&mut s, b"bob now").0, b"bob now");
}

#[test]
fn listeners_follow_the_listen_key() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let alice = pki.client("alice");
    let p1 = free_port();
    let body = backend_toml("data", echo.addr, "\"cn=alice\"");
    let header = Gateway::header().replace("127.0.0.1:0", &format!("127.0.0.1:{p1}"));
    let path = pki.write("server", "toml", &(header + &body));
    let gw = Gateway::start_file(&path);
    assert_eq!(gw.addr.port(), p1);
    let client = TlsClient::new(&alice, &pki.ca_crt);

    let p2 = free_port();
    let header2 = Gateway::header().replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = [\"127.0.0.1:{p2}\"]"),
    );
    std::fs::write(&path, header2 + &body).unwrap();
    sighup_and_wait(&gw);
    let a2: SocketAddr = format!("127.0.0.1:{p2}").parse().unwrap();
    let mut s = client
        .connect(a2, Some("data"))
        .expect("new address serves");
    assert_eq!(exchange(&mut s, b"p2").0, b"p2");
    let a1: SocketAddr = format!("127.0.0.1:{p1}").parse().unwrap();
    let deadline = Instant::now() + PROMPT;
    while TcpStream::connect(a1).is_ok() {
        assert!(Instant::now() < deadline, "old address {a1} still accepts");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn client_agent_rotates_its_certificate_without_restart() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let gw = Gateway::start(
        &pki,
        &backend_toml("data", echo.addr, "\"cn=alice\", \"cn=alice2\""),
    );
    // The agent's own copy of its credentials, so the test can rotate them in place.
    let mine = pki.issue("agent", &CertSpec::client("alice"));
    let agent = Agent::start(&pki, gw.addr, &mine, &["data"]);
    let (got, _) = backend::round_trip(&mut backend::connect(agent.addr()), b"one");
    assert_eq!(got, b"one");
    gw.wait_for_audit(PROMPT, |e| field(e, "subject") == "CN=alice");

    let before = reloads(&agent);
    let next = tunnel_core::pki::new_leaf(pki.ca(), &CertSpec::client("alice2")).unwrap();
    let tmp_crt = pki.unique_path("agent-next", "crt");
    let tmp_key = pki.unique_path("agent-next", "key");
    tunnel_core::pki::write_issued(&next, &tmp_crt, &tmp_key).unwrap();
    std::fs::rename(&tmp_key, &mine.key).unwrap();
    std::fs::rename(&tmp_crt, &mine.cert).unwrap();
    agent.signal(Signal::SIGHUP);
    agent.wait_until("agent reloaded", PROMPT, |evs| {
        (count_reloads(evs) > before).then_some(())
    });
    let (got, _) = backend::round_trip(&mut backend::connect(agent.addr()), b"two");
    assert_eq!(got, b"two");
    gw.wait_for_audit(PROMPT, |e| {
        field(e, "subject") == "CN=alice2" && field(e, "result") == "ok"
    });
}
