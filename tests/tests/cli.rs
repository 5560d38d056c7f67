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
