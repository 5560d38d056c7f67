//! Command-line conventions of both binaries: `--version` names the linked OpenSSL, `--help`
//! shows examples and exit statuses, bad usage exits 64 (not clap's 2), an address that cannot
//! be listened on exits 69, and text logs carry colour on a terminal unless `NO_COLOR` is set.

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::Duration;
use tunnel_tests::*;

const LIMIT: Duration = Duration::from_secs(30);

fn run(bin: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = command(bin);
    cmd.args(args);
    process::run_to_end(cmd, LIMIT)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn version_names_the_linked_openssl() {
    let linked = tunnel_core::version_line("");
    for (bin, name) in [
        (bins::server(), "tunnel-server"),
        (bins::client(), "tunnel-client"),
    ] {
        for flag in ["--version", "-V"] {
            let out = run(&bin, &[flag]);
            assert_eq!(out.status.code(), Some(0), "{name} {flag}");
            let v = text(&out.stdout);
            assert!(
                v.starts_with(&format!("{name} {} (OpenSSL ", env!("CARGO_PKG_VERSION"))),
                "{v}"
            );
            assert!(v.trim_end().ends_with(linked.trim()), "{v} vs {linked}");
        }
    }
}

#[test]
fn help_shows_examples_and_exit_statuses() {
    for (bin, example) in [
        (bins::server(), "tunnel-server check --config"),
        (
            bins::client(),
            "tunnel-client --server gateway.example.com:8443",
        ),
    ] {
        let out = run(&bin, &["--help"]);
        assert_eq!(out.status.code(), Some(0));
        let help = text(&out.stdout);
        assert!(
            help.contains("Examples:") && help.contains(example),
            "{help}"
        );
        for code in ["0", "64", "69", "74"] {
            assert!(
                help.contains(&format!("\n  {code:>3}  ")),
                "exit {code} missing:\n{help}"
            );
        }
    }
}

#[test]
fn bad_usage_exits_64_on_both_binaries() {
    for bin in [bins::server(), bins::client()] {
        let out = run(&bin, &["--no-such-flag"]);
        assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("--no-such-flag"));
    }
    let out = run(&bins::server(), &["pki", "issue", "--dir", "x"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
}

/// A gateway config (text logs) whose listen address is `taken`.
fn config_listening_on(pki: &Pki, taken: std::net::SocketAddr) -> std::path::PathBuf {
    let body = Gateway::header()
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{taken}\""))
        .replace("log_format = \"json\"", "log_format = \"text\"")
        + &backend_toml("db", "127.0.0.1:5432", "\"any\"");
    pki.write("busy", "toml", &body)
}

#[test]
fn an_address_in_use_exits_69_unavailable() {
    let pki = Pki::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = config_listening_on(&pki, taken.local_addr().unwrap());
    let out = run(&bins::server(), &["--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("listen"),
        "{}",
        text(&out.stderr)
    );
    // Control: the same file is a valid configuration.
    let out = run(
        &bins::server(),
        &["check", "--config", cfg.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn a_client_listen_address_in_use_exits_69_unavailable() {
    let pki = Pki::new();
    let alice = pki.client("alice");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let args = [
        "--server",
        "127.0.0.1:9",
        "--server-name",
        "localhost",
        "--cert",
        alice.cert.to_str().unwrap(),
        "--key",
        alice.key.to_str().unwrap(),
        "--ca",
        pki.ca_crt.to_str().unwrap(),
        "--backend",
        "db",
        "--listen",
    ];
    let mut busy = args.to_vec();
    busy.push(&listen);
    let out = run(&bins::client(), &busy);
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    // Control: a missing key file is a configuration error, 64.
    let mut broken = busy.clone();
    broken[7] = "/nonexistent/alice.key";
    let out = run(&bins::client(), &broken);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
}

/// Runs `tunnel-server --config CFG` under a pseudo-terminal (util-linux `script`), with or
/// without NO_COLOR; returns (exit status, what the terminal showed).
fn on_a_terminal(cfg: &std::path::Path, no_color: bool) -> (Option<i32>, String) {
    let line = format!("{} --config {}", bins::server().display(), cfg.display());
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"])
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info");
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run `script` (Debian package bsdutils): {e}"));
    (out.status.code(), text(&out.stdout))
}

#[test]
fn no_color_turns_off_colour_on_a_terminal() {
    let pki = Pki::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = config_listening_on(&pki, taken.local_addr().unwrap());
    let (code, shown) = on_a_terminal(&cfg, false);
    assert_eq!(code, Some(69), "{shown}");
    assert!(
        shown.contains('\x1b'),
        "no colour on a terminal without NO_COLOR:\n{shown}"
    );
    let (code, shown) = on_a_terminal(&cfg, true);
    assert_eq!(code, Some(69), "{shown}");
    assert!(shown.contains("listen"), "{shown}");
    assert!(
        !shown.contains('\x1b'),
        "colour despite NO_COLOR:\n{shown:?}"
    );
}

/// Issue 25 item 5, a person's first minutes: `tunnel-client` alone says what to do next
/// (sign in, or a config) rather than a usage error about a missing key; once signed in it
/// points at `ls`, `open` and `exec`; and `ls` with an expired sign-in certificate says to
/// sign in again.
#[test]
fn a_bare_tunnel_client_says_what_to_do_next() {
    let home = tempfile::tempdir().unwrap();
    let bare = || {
        let mut cmd = command(&bins::client());
        cmd.env("XDG_CONFIG_HOME", home.path()).env_remove("HOME");
        process::run_to_end(cmd, LIMIT)
    };
    let out = bare();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    for want in [
        "tunnel-client login --signer",
        "tunnel-client --config",
        "--help",
    ] {
        assert!(err.contains(want), "no {want:?} in: {err}");
    }
    assert!(
        !err.contains("missing"),
        "a usage error instead of guidance: {err}"
    );

    // Signed in, but the certificate has expired since.
    let pki = Pki::new();
    let key = tunnel_core::pki::new_key(tunnel_core::pki::KeyType::EcP256).unwrap();
    let now = tunnel_core::util::time::unix_now();
    let cert = tunnel_core::pki::build(
        &key,
        &tunnel_core::pki::CertSpec::client("alice@example.com"),
        (now - 7200, now - 3600),
        tunnel_core::pki::SignedBy::Ca(pki.ca()),
    )
    .unwrap();
    let dir = home.path().join("tunnel");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.to_pem().unwrap()).unwrap();
    std::fs::write(dir.join("key.pem"), key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let config = format!(
        "server = \"127.0.0.1:9\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\nca = {}\n",
        tunnel_tests::pki::toml_str(&pki.ca_crt)
    );
    std::fs::write(dir.join("client.toml"), config).unwrap();
    let err = text(&bare().stderr);
    assert!(
        err.contains("you are signed in") && err.contains("tunnel-client ls"),
        "{err}"
    );
    let mut ls = command(&bins::client());
    ls.env("XDG_CONFIG_HOME", home.path()).arg("ls");
    let out = process::run_to_end(ls, LIMIT);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(tunnel_core::EXIT_RUNTIME), "{err}");
    assert!(err.contains("certificate expired at"), "{err}");
    assert!(err.contains("run `tunnel-client login`"), "{err}");
}

/// Issue 25 item 4: each subcommand's help shows the flags it uses, with what they mean
/// there: `login --ca` is the signer's CA, the one-off tunnel's flags are not offered to
/// commands that ignore them, and `stdio` keeps its own.
#[test]
fn each_command_offers_its_own_flags_with_their_meaning_there() {
    let help = |args: &[&str]| {
        let out = run(&bins::client(), args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        text(&out.stdout)
    };
    let login = help(&["login", "--help"]);
    let ca = login.lines().find(|l| l.contains("--ca ")).unwrap_or("");
    assert!(ca.contains("signer's HTTPS certificate"), "{login}");
    for cmd in ["login", "ls", "open", "exec", "status"] {
        let h = help(&[cmd, "--help"]);
        for flag in [
            "--server ",
            "--cert ",
            "--key ",
            "--backend ",
            "--server-name ",
        ] {
            assert!(!h.contains(flag), "`{cmd} --help` offers {flag}: {h}");
        }
    }
    let stdio = help(&["stdio", "--help"]);
    for flag in ["--server ", "--cert ", "--key ", "--ca ", "--backend "] {
        assert!(stdio.contains(flag), "`stdio --help` lacks {flag}: {stdio}");
    }
    let top = help(&["--help"]);
    let ca = top.lines().find(|l| l.contains("--ca ")).unwrap_or("");
    assert!(ca.contains("gateway's certificate"), "{top}");
    // The gateway's --config is signer.toml for `signer`, with its own variable prefix.
    let out = run(&bins::server(), &["signer", "--help"]);
    let signer = text(&out.stdout);
    assert!(signer.contains("for `signer`, signer.toml"), "{signer}");
    assert!(signer.contains("TUNNEL_SIGNER_<KEY>"), "{signer}");
}
