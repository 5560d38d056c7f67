//! Live sessions through the admin socket: `tunnel-server sessions` lists exactly the open
//! tunnels, `disconnect` cuts exactly the matching ones (the others keep carrying checked
//! bytes), `--block-for` refuses and later admits again, other local users are refused, and
//! `disconnect_expired` cuts a tunnel when its certificate expires.

use std::path::PathBuf;
use tunnel_core::pki::CertSpec;
use tunnel_tests::admin::{
    disconnect, expiring_client, raw_request, server_cli, sessions, tunnel_works, wait_until,
    EchoTunnel,
};
use tunnel_tests::process::number;
use tunnel_tests::{backend_toml, field, Backend, Gateway, Pki, PROMPT};

/// A gateway with backends `db` and `web` (both echo, any client) and an admin socket.
fn setup(pki: &Pki, echo: &Backend, extra: &str) -> (Gateway, PathBuf) {
    let body = format!(
        "admin_socket = \"admin.sock\"\n{extra}{}{}",
        backend_toml("db", echo.addr, "\"any\""),
        backend_toml("web", echo.addr, "\"any\"")
    );
    let gw = Gateway::start(pki, &body);
    (gw, pki.dir().join("admin.sock"))
}

fn audit_of(gw: &Gateway, t: &EchoTunnel) -> serde_json::Value {
    gw.audit_for(t.local)
}

#[test]
fn sessions_list_matches_open_tunnels() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let (gw, sock) = setup(&pki, &echo, "");
    let (alice, bob) = (pki.client("alice"), pki.client("bob"));
    let mut t = vec![
        EchoTunnel::open(&pki, &alice, gw.addr, "db", 1),
        EchoTunnel::open(&pki, &alice, gw.addr, "web", 2),
        EchoTunnel::open(&pki, &bob, gw.addr, "db", 3),
    ];
    t[0].round_trip(200_000).unwrap();
    t[2].round_trip(50_000).unwrap();
    let list = sessions(&sock, &[]);
    assert_eq!(list.len(), 3, "{list:?}");
    for (tunnel, (cn, backend)) in t
        .iter()
        .zip([("alice", "db"), ("alice", "web"), ("bob", "db")])
    {
        let s = list
            .iter()
            .find(|s| field(s, "peer") == tunnel.local.to_string())
            .unwrap_or_else(|| panic!("no session for {}: {list:?}", tunnel.local));
        assert_eq!(field(s, "subject"), format!("CN={cn}"));
        assert_eq!(field(s, "backend"), backend);
        // Every byte was echoed and read back before listing: the counters may lag by at
        // most one TLS record (16 KiB) in each direction.
        for key in ["bytes_up", "bytes_down"] {
            let n = number(s, key);
            assert!(
                n <= tunnel.verified && tunnel.verified - n <= 16 * 1024,
                "{key} = {n}, truth {}",
                tunnel.verified
            );
        }
        assert!(s["not_after"].as_i64().unwrap() > tunnel_core::util::time::unix_now());
        assert!(!field(s, "serial").is_empty());
    }
    assert_eq!(sessions(&sock, &["--backend", "db"]).len(), 2);
    assert_eq!(sessions(&sock, &["--identity", "bob"]).len(), 1);
    assert_eq!(
        sessions(&sock, &["--identity", "CN=al*", "--backend", "web"]).len(),
        1
    );
    // The human table lists the same tunnels.
    let out = tunnel_tests::admin::server_cli(&["sessions", "--socket", sock.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("3 session(s)"),
        "{text}"
    );
    for tunnel in &t {
        assert!(text.contains(&tunnel.local.to_string()), "{text}");
    }
    // --config finds the socket through the file's admin_socket.
    let cfg = gw.config.to_str().unwrap().to_string();
    let out = tunnel_tests::admin::server_cli(&["sessions", "--json", "--config", &cfg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sessions"].as_array().map(Vec::len), Some(3));
    // A closed tunnel leaves the list.
    drop(t.pop());
    wait_until("bob's tunnel to leave the list", PROMPT, || {
        sessions(&sock, &[]).len() == 2
    });
}

#[test]
fn disconnect_by_each_selector_cuts_only_matches() {
    let pki = Pki::new();
    // An echo backend that reports each connection's end: a cut must close the backend side
    // too, and only that one.
    let (ended_tx, ended) = std::sync::mpsc::channel();
    let echo = Backend::spawn(move |s: std::net::TcpStream| {
        let mut r = s.try_clone().expect("clone");
        let mut w = s;
        let _ = std::io::copy(&mut r, &mut w);
        let _ = ended_tx.send(());
    });
    let (gw, sock) = setup(&pki, &echo, "");
    let (alice, bob, carol, dave) = (
        pki.client("alice"),
        pki.client("bob"),
        pki.client("carol"),
        pki.client("dave"),
    );
    let mut by_id = EchoTunnel::open(&pki, &alice, gw.addr, "db", 1);
    let mut by_serial = EchoTunnel::open(&pki, &bob, gw.addr, "db", 2);
    let mut by_backend = EchoTunnel::open(&pki, &carol, gw.addr, "web", 3);
    let mut by_identity = EchoTunnel::open(&pki, &dave, gw.addr, "db", 4);
    let mut keeps = [
        EchoTunnel::open(&pki, &alice, gw.addr, "db", 5),
        EchoTunnel::open(&pki, &carol, gw.addr, "db", 6),
    ];
    let id_of = |t: &EchoTunnel| {
        let list = sessions(&sock, &[]);
        let s = list
            .iter()
            .find(|s| field(s, "peer") == t.local.to_string())
            .expect("listed");
        number(s, "id").to_string()
    };
    let bob_serial = tunnel_tests::pki::serial_hex(&bob.issued.cert);
    let steps: Vec<(Vec<String>, &mut EchoTunnel)> = vec![
        (vec!["--id".into(), id_of(&by_id)], &mut by_id),
        (
            vec!["--serial".into(), bob_serial.to_lowercase()],
            &mut by_serial,
        ),
        (vec!["--backend".into(), "web".into()], &mut by_backend),
        (vec!["--identity".into(), "da*".into()], &mut by_identity),
    ];
    for (i, (args, victim)) in steps.into_iter().enumerate() {
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        let reason = format!("step {i}");
        a.extend(["--reason", &reason]);
        let out = disconnect(&sock, &a);
        assert!(out.contains("disconnected 1 tunnel(s)"), "{args:?}: {out}");
        assert!(victim.is_cut(), "{args:?} did not cut its tunnel");
        ended
            .recv_timeout(PROMPT)
            .unwrap_or_else(|_| panic!("{args:?}: the backend side stayed open"));
        let ev = audit_of(&gw, victim);
        assert_eq!(field(&ev, "result"), "disconnected", "{ev}");
        let why = field(&ev, "reason");
        assert!(why.contains(&reason) && why.contains("uid 0"), "{ev}");
        // The others still stream, every byte checked.
        for k in keeps.iter_mut() {
            k.round_trip(100_000)
                .unwrap_or_else(|e| panic!("{args:?} also cut {}: {e}", k.local));
        }
    }
    assert_eq!(sessions(&sock, &[]).len(), 2);
    assert!(
        ended.try_recv().is_err(),
        "a backend connection of a kept tunnel ended"
    );
    // A selector that matches nothing says so and fails (before: "disconnected 0", exit 0).
    let out = disconnect_raw(&sock, &["--identity", "nobody-matches"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("disconnected 0 tunnel(s)") && text.contains("no live tunnel matches"),
        "{text}"
    );
}

/// `tunnel-server disconnect --socket S ARGS` to completion, whatever its status.
fn disconnect_raw(sock: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["disconnect", "--socket", sock.to_str().expect("UTF-8 path")];
    all.extend_from_slice(args);
    server_cli(&all)
}

/// `--identity` speaks the `allow` rule language: `ou=contractors` lists and cuts every
/// contractor and no one else, `cn=` and `email=` pick by attribute (before, `cn=carol` was a
/// glob over the subject line and matched nothing); a selector that matches nothing says so
/// and exits 1, as text and as JSON; an unknown kind is a usage error (64).
#[test]
fn rule_selectors_cut_every_match_and_a_miss_is_not_success() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let (gw, sock) = setup(&pki, &echo, "");
    let person = |cn: &str, ou: &str| {
        let spec = CertSpec {
            ou: vec![ou.into()],
            email: vec![format!("{cn}@example.com")],
            ..CertSpec::client(cn)
        };
        pki.issue(cn, &spec)
    };
    let (alice, bob, carol) = (
        person("alice", "contractors"),
        person("bob", "contractors"),
        person("carol", "staff"),
    );
    let mut a = EchoTunnel::open(&pki, &alice, gw.addr, "db", 1);
    let mut b = EchoTunnel::open(&pki, &bob, gw.addr, "web", 2);
    let mut c = EchoTunnel::open(&pki, &carol, gw.addr, "db", 3);
    let peers = |args: &[&str]| {
        let mut v: Vec<String> = sessions(&sock, args)
            .iter()
            .map(|s| field(s, "peer").to_string())
            .collect();
        v.sort();
        v
    };
    let mut contractors = vec![a.local.to_string(), b.local.to_string()];
    contractors.sort();
    assert_eq!(peers(&["--identity", "ou=contractors"]), contractors);
    assert_eq!(
        peers(&["--identity", "cn=carol"]),
        vec![c.local.to_string()]
    );

    let out = disconnect(
        &sock,
        &["--identity", "ou=contractors", "--reason", "contract ended"],
    );
    assert!(out.contains("disconnected 2 tunnel(s)"), "{out}");
    assert!(a.is_cut() && b.is_cut(), "a contractor kept a tunnel");
    c.round_trip(100_000).expect("staff tunnel cut too");

    let miss = disconnect_raw(&sock, &["--identity", "ou=contractors"]);
    assert_eq!(miss.status.code(), Some(1), "{miss:?}");
    assert!(String::from_utf8_lossy(&miss.stdout).contains("no live tunnel matches"));
    let miss = disconnect_raw(&sock, &["--json", "--identity", "cn=nobody"]);
    assert_eq!(miss.status.code(), Some(1), "{miss:?}");
    let v: serde_json::Value = serde_json::from_slice(&miss.stdout).expect("JSON");
    assert_eq!(v["disconnected"], 0, "{v}");
    assert!(field(&v, "note").contains("no live tunnel matches"), "{v}");
    let typo = disconnect_raw(&sock, &["--identity", "cm=carol"]);
    assert_eq!(typo.status.code(), Some(64), "{typo:?}");
    assert!(String::from_utf8_lossy(&typo.stderr).contains("unknown attribute"));
    c.round_trip(100_000)
        .expect("a refused selector cut a tunnel");

    // Positive control: the same person by email (case-insensitive, as in `allow`).
    let out = disconnect(&sock, &["--identity", "email=*@EXAMPLE.com"]);
    assert!(out.contains("disconnected 1 tunnel(s)"), "{out}");
    assert!(c.is_cut());
}

#[test]
fn block_for_refuses_then_admits_again() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let (gw, sock) = setup(&pki, &echo, "");
    let (bob, alice) = (pki.client("bob"), pki.client("alice"));
    let mut t = EchoTunnel::open(&pki, &bob, gw.addr, "db", 1);
    // As long as the steps between the block and the refusal below may take (PROMPT), so
    // that they cannot outlast it; the block ends no earlier than `from + block`.
    let block = PROMPT.as_secs() as i64;
    let from = tunnel_core::util::time::unix_now();
    let out = disconnect(
        &sock,
        &[
            "--identity",
            "bob",
            "--block-for",
            &format!("{block}s"),
            "--reason",
            "offboarded",
        ],
    );
    assert!(
        out.contains("disconnected 1 tunnel(s)") && out.contains("blocked until"),
        "{out}"
    );
    assert!(
        out.contains("CRL"),
        "the output must point at the durable way: {out}"
    );
    assert!(t.is_cut());
    let (ok, local) = tunnel_works(&pki, &bob, gw.addr, "web");
    assert!(!ok, "a blocked identity got a tunnel");
    assert!(
        tunnel_core::util::time::unix_now() < from + block,
        "the refusal came after the block could have ended: it proves nothing"
    );
    let ev = gw.audit_for(local);
    assert_eq!(field(&ev, "result"), "denied", "{ev}");
    assert!(field(&ev, "reason").contains("blocked"), "{ev}");
    // Others are not blocked.
    assert!(tunnel_works(&pki, &alice, gw.addr, "db").0);
    // Admitted again once the block ends.
    wait_until("bob to be admitted again", PROMPT * 2, || {
        tunnel_works(&pki, &bob, gw.addr, "db").0
    });
    assert!(
        tunnel_core::util::time::unix_now() >= from + block,
        "the block ended early"
    );
}

/// The longest block the documentation allows: 366 days.
const MAX_BLOCK_SECS: u64 = 366 * 86_400;

/// Asserts that the gateway is still up and `t`, opened before, still carries checked bytes.
fn still_serving(gw: &mut Gateway, t: &mut EchoTunnel, what: &str) {
    assert!(
        gw.running(),
        "the gateway died after {what}; its log:\n{}",
        gw.log_text()
    );
    t.round_trip(100_000)
        .unwrap_or_else(|e| panic!("the tunnel opened before {what} stopped flowing: {e}"));
}

#[test]
fn disconnect_block_for_beyond_the_maximum_is_a_usage_error() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let (mut gw, sock) = setup(&pki, &echo, "");
    let (alice, bob) = (pki.client("alice"), pki.client("bob"));
    let mut before = EchoTunnel::open(&pki, &alice, gw.addr, "db", 1);
    let s = sock.to_str().unwrap();
    let args = [
        "disconnect",
        "--socket",
        s,
        "--identity",
        "x",
        "--block-for",
    ];
    let out = server_cli(&[&args[..], &["500000000000y"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("--block-for") && err.contains("366 days"),
        "the message must name the flag and the maximum: {err}"
    );
    still_serving(&mut gw, &mut before, "disconnect --block-for 500000000000y");
    // One second over the maximum is refused too.
    let over = format!("{}s", MAX_BLOCK_SECS + 1);
    let out = server_cli(&[&args[..], &[over.as_str()]].concat());
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    // Positive control: the maximum itself blocks, and cuts only bob.
    let mut bobs = EchoTunnel::open(&pki, &bob, gw.addr, "web", 2);
    let out = disconnect(&sock, &["--identity", "bob", "--block-for", "366days"]);
    assert!(
        out.contains("disconnected 1 tunnel(s)") && out.contains("blocked until"),
        "{out}"
    );
    assert!(bobs.is_cut());
    assert!(!tunnel_works(&pki, &bob, gw.addr, "db").0, "bob is blocked");
    still_serving(&mut gw, &mut before, "a block of the maximum");
}

#[test]
fn admin_socket_refuses_an_overlong_block_and_the_gateway_keeps_serving() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let (mut gw, sock) = setup(&pki, &echo, "");
    let (alice, bob) = (pki.client("alice"), pki.client("bob"));
    let mut before = EchoTunnel::open(&pki, &alice, gw.addr, "db", 1);
    let request = |ident: &str, secs: u64| {
        let line = format!(
            "{{\"v\":1,\"cmd\":\"disconnect\",\"identity\":\"{ident}\",\"block_for_secs\":{secs}}}"
        );
        let reply = raw_request(&sock, &line);
        serde_json::from_str::<serde_json::Value>(&reply)
            .unwrap_or_else(|e| panic!("no JSON reply to {line} ({e}): {reply:?}"))
    };
    for secs in [u64::MAX, MAX_BLOCK_SECS + 1] {
        let v = request("x", secs);
        assert_eq!(v["ok"], false, "{v}");
        let e = v["error"].as_str().unwrap_or_default();
        assert!(
            e.contains("block_for_secs") && e.contains("366 days"),
            "the error must name the field and the maximum: {v}"
        );
        still_serving(&mut gw, &mut before, &format!("block_for_secs {secs}"));
    }
    // Positive control: the maximum itself cuts and blocks bob, until 366 days from now.
    let mut bobs = EchoTunnel::open(&pki, &bob, gw.addr, "web", 2);
    let v = request("bob", MAX_BLOCK_SECS);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["disconnected"], 1, "{v}");
    let until = v["blocked_until"].as_i64().unwrap_or_default();
    let want = tunnel_core::util::time::unix_now() + MAX_BLOCK_SECS as i64;
    assert!(
        (want - PROMPT.as_secs() as i64..=want).contains(&until),
        "blocked_until {until}, expected about {want}"
    );
    assert!(bobs.is_cut());
    assert!(!tunnel_works(&pki, &bob, gw.addr, "db").0, "bob is blocked");
    still_serving(&mut gw, &mut before, "a block of the maximum");
}

#[test]
fn expired_certificate_cuts_its_tunnel() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let (gw, _sock) = setup(&pki, &echo, "disconnect_expired = true\n");
    // Valid for as long as opening the tunnels may take (PROMPT): setup cannot outlast it.
    let life = PROMPT.as_secs() as i64;
    let short = expiring_client(&pki, "short-lived", life);
    let not_after = tunnel_core::util::time::unix_now() + life;
    let alice = pki.client("alice");
    let mut dying = EchoTunnel::open(&pki, &short, gw.addr, "db", 1);
    let mut keeps = EchoTunnel::open(&pki, &alice, gw.addr, "db", 2);
    // Before expiry the tunnel carries bytes: the cut below is the expiry's doing.
    dying
        .round_trip(10_000)
        .expect("the tunnel works before expiry");
    assert!(
        tunnel_core::util::time::unix_now() < not_after,
        "setup outlasted the certificate: nothing is proven"
    );
    let ev = gw.wait_for_audit(PROMPT * 2, |e| field(e, "peer") == dying.local.to_string());
    assert_eq!(field(&ev, "result"), "expired", "{ev}");
    assert!(dying.is_cut());
    keeps.round_trip(100_000).unwrap();
}

/// The uid and gid of `nobody` (the unprivileged local user of these tests).
const NOBODY: u32 = 65534;

fn sessions_as_nobody(sock: &std::path::Path) -> std::process::Output {
    let mut cmd = tunnel_tests::command(&tunnel_tests::bins::server());
    cmd.args(["sessions", "--json", "--socket", sock.to_str().unwrap()]);
    tunnel_tests::admin::as_user(cmd, NOBODY, NOBODY)
}

fn chmod(p: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn admin_socket_refuses_other_local_users() {
    use std::os::unix::fs::MetadataExt;
    let pki = Pki::new();
    let echo = Backend::echo();
    let (gw, sock) = setup(&pki, &echo, "");
    let alice = pki.client("alice");
    let _t = EchoTunnel::open(&pki, &alice, gw.addr, "db", 1);
    let meta = std::fs::metadata(&sock).expect("socket exists");
    assert_eq!(meta.mode() & 0o777, 0o660, "admin socket mode");
    // Let nobody reach the socket file itself; its mode must keep nobody out.
    chmod(pki.dir(), 0o755);
    let out = sessions_as_nobody(&sock);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(err.contains("refused"), "{err}");
    assert!(out.stdout.is_empty());
    // Even with the file mode opened up by mistake, the peer-credential check refuses.
    chmod(&sock, 0o666);
    let out = sessions_as_nobody(&sock);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(
        err.contains("permission denied: nobody (uid 65534)"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("alice"));
    gw.wait_for("the refusal warning", PROMPT, |e| {
        field(e, "message").starts_with("admin socket: refused") && number(e, "uid") == 65534
    });
    // Positive control: root still gets the list.
    assert_eq!(sessions(&sock, &[]).len(), 1);
}

#[test]
fn admin_group_members_are_admitted() {
    use std::os::unix::fs::MetadataExt;
    let pki = Pki::new();
    let echo = Backend::echo();
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(NOBODY))
        .expect("group lookup")
        .expect("a group with gid 65534 (nogroup)")
        .name;
    let (gw, sock) = setup(&pki, &echo, &format!("admin_group = \"{group}\"\n"));
    let alice = pki.client("alice");
    let _t = EchoTunnel::open(&pki, &alice, gw.addr, "db", 1);
    assert_eq!(std::fs::metadata(&sock).unwrap().gid(), NOBODY);
    chmod(pki.dir(), 0o755);
    let out = sessions_as_nobody(&sock);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sessions"][0]["subject"], "CN=alice");
}

#[test]
fn admin_socket_defaults_to_systemds_runtime_directory() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let run = tempfile::tempdir().unwrap();
    let config = pki.write(
        "server",
        "toml",
        &(Gateway::header() + &backend_toml("db", echo.addr, "\"any\"")),
    );
    let mut cmd = tunnel_tests::command(&tunnel_tests::bins::server());
    cmd.arg("--config")
        .arg(&config)
        .env("RUNTIME_DIRECTORY", run.path());
    let gw = tunnel_tests::Proc::spawn("tunnel-server", cmd);
    let ev = gw.wait_for_message("gateway listening", tunnel_tests::READY);
    let addr = field(&ev, "listen").parse().unwrap();
    let alice = pki.client("alice");
    let _t = EchoTunnel::open(&pki, &alice, addr, "db", 1);
    let list = sessions(&run.path().join("admin.sock"), &[]);
    assert_eq!(list.len(), 1);
    assert_eq!(field(&list[0], "subject"), "CN=alice");
}
