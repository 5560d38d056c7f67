//! Configuration errors and `tunnel-server check`: broken files make both `check` and the
//! gateway itself exit 64 with `file: key: message` and no panic; `check --explain CERT` lists
//! the backends a certificate may reach and the rule for each.

use std::path::Path;
use std::process::Output;
use tunnel_core::pki::CertSpec;
use tunnel_tests::pki::toml_str;
use tunnel_tests::*;

const EXIT_CONFIG: i32 = 64;
const RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_no_panic(out: &Output) {
    let all = text(&out.stderr) + &text(&out.stdout);
    for bad in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
        assert!(!all.contains(bad), "{bad:?} in output:\n{all}");
    }
}

/// A config that `check` accepts, from which each case breaks one thing.
fn good() -> String {
    Gateway::header()
        + "\n[groups]\nops = [\"ou=ops\"]\n"
        + &backend_toml("db", "127.0.0.1:5432", "\"group=ops\", \"cn=alice\"")
}

struct Case {
    what: &'static str,
    toml: String,
    /// `None` for errors about the whole file (no key).
    key: Option<&'static str>,
    message: &'static str,
}

fn cases(pki: &Pki, rogue: &Pki) -> Vec<Case> {
    let g = good();
    let foreign_crl = rogue.crl(&[]);
    let other_key = pki.client("someone-else").key;
    vec![
        Case {
            what: "unknown key",
            toml: g.replace("log_format", "lisen = \"x\"\nlog_format"),
            key: Some("lisen"),
            message: "unknown field",
        },
        Case {
            what: "listen missing",
            toml: g.replace("listen = \"127.0.0.1:0\"\n", ""),
            key: Some("listen"),
            message: "missing",
        },
        Case {
            what: "listen not an address",
            toml: g.replace("\"127.0.0.1:0\"", "\"localhost:8443\""),
            key: Some("listen[0]"),
            message: "is not an IP:port address",
        },
        Case {
            what: "certificate file missing",
            toml: g.replace("\"server.crt\"", "\"missing.crt\""),
            key: Some("cert"),
            message: "missing.crt",
        },
        Case {
            what: "key does not match the certificate",
            toml: g.replace("\"server.key\"", &toml_str(&other_key)),
            key: Some("key"),
            message: "does not match",
        },
        Case {
            what: "CRL under the CA's name, signed by another key",
            toml: g.replace(
                "log_format",
                &format!("crl = [{}]\nlog_format", toml_str(&foreign_crl)),
            ),
            key: Some("crl[0]"),
            message: "is not signed by the CA of that name in client_ca",
        },
        Case {
            what: "unknown rule attribute",
            toml: g.replace("\"cn=alice\"", "\"cx=alice\""),
            key: Some("backend[0].allow[1]"),
            message: "unknown attribute \"cx\"",
        },
        Case {
            what: "undefined group",
            toml: g.replace("group=ops", "group=dba"),
            key: Some("backend[0].allow[0]"),
            message: "group \"dba\" is not defined",
        },
        Case {
            what: "bad sha256 pin",
            toml: g.replace("\"cn=alice\"", "\"sha256=abc\""),
            key: Some("backend[0].allow[1]"),
            message: "not a SHA-256 fingerprint",
        },
        Case {
            what: "bad duration",
            toml: g.replace("log_format", "handshake_timeout = \"soon\"\nlog_format"),
            key: Some("handshake_timeout"),
            message: "is not a duration",
        },
        Case {
            what: "default_backend names no backend",
            toml: g.replace("log_format", "default_backend = \"web\"\nlog_format"),
            key: Some("default_backend"),
            message: "is not the name of any [[backend]]",
        },
        Case {
            what: "backend without rules",
            toml: g.replace("allow = [\"group=ops\", \"cn=alice\"]", "allow = []"),
            key: Some("backend[0].allow"),
            message: "has no rule",
        },
        Case {
            what: "duplicate backend",
            toml: g.clone() + &backend_toml("DB", "127.0.0.1:1", "\"any\""),
            key: Some("backend[1].name"),
            message: "duplicate backend name",
        },
        Case {
            what: "max_connections out of range",
            toml: g.replace("log_format", "max_connections = 0\nlog_format"),
            key: Some("max_connections"),
            message: "out of range",
        },
        Case {
            what: "not TOML",
            toml: g.replace("[groups]", "[groups"),
            key: None,
            message: "not valid TOML",
        },
    ]
}

fn assert_config_error(out: &Output, file: &Path, case: &Case, how: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(EXIT_CONFIG),
        "{how}, {}: exit status; stderr:\n{stderr}",
        case.what
    );
    let prefix = match case.key {
        Some(k) => format!("{}: {k}: ", file.display()),
        None => format!("{}: ", file.display()),
    };
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| {
            panic!(
                "{how}, {}: no line starting with {prefix:?} in:\n{stderr}",
                case.what
            )
        });
    assert!(
        line.contains(case.message),
        "{how}, {}: {line:?} does not say {:?}",
        case.what,
        case.message
    );
    assert_no_panic(out);
}

#[test]
fn broken_files_exit_64_with_file_key_and_message() {
    let pki = Pki::new();
    // The good file passes, so each case fails for its own reason.
    let good_path = pki.write("good", "toml", &good());
    let out = run_server(
        &["check", "--config", good_path.to_str().unwrap()],
        RUN_LIMIT,
    );
    assert!(out.status.success(), "good config: {}", text(&out.stderr));

    // Named like the fixture's CA: a CRL of an unknown issuer may be an intermediate CA's
    // (checked against clients' chains), one naming a CA of client_ca must be its own.
    let rogue = Pki::named("Tunnel Test CA");
    for case in cases(&pki, &rogue) {
        let path = pki.write("broken", "toml", &case.toml);
        let p = path.to_str().unwrap();
        let out = run_server(&["check", "--config", p], RUN_LIMIT);
        assert_config_error(&out, &path, &case, "check");
        let out = run_server(&["--config", p], RUN_LIMIT);
        assert_config_error(&out, &path, &case, "run");
    }
}

#[test]
fn missing_config_file_and_missing_flag_exit_64() {
    let pki = Pki::new();
    let path = pki.dir().join("nope.toml");
    let p = path.to_str().unwrap();
    for args in [vec!["--config", p], vec!["check", "--config", p]] {
        let out = run_server(&args, RUN_LIMIT);
        assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with(&format!("{p}: cannot read the config file")),
            "{args:?}: {stderr}"
        );
        assert_no_panic(&out);
    }
    let out = run_server(&[], RUN_LIMIT);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG));
    assert!(text(&out.stderr).contains("--config"));
    assert_no_panic(&out);
}

#[test]
fn client_config_errors_exit_64_too() {
    let pki = Pki::new();
    let alice = pki.client("alice");
    let base = format!(
        "server = \"127.0.0.1:1\"\ncert = {}\nkey = {}\nca = {}\n",
        toml_str(&alice.cert),
        toml_str(&alice.key),
        toml_str(&pki.ca_crt)
    );
    let cases = [
        (base.clone(), "tunnel", "no [[tunnel]]"),
        (
            base.clone() + "\n[[tunnel]]\nlisten = \"nowhere\"\nbackend = \"db\"\n",
            "tunnel[0].listen",
            "is not an IP:port address",
        ),
        (
            base.replace("127.0.0.1:1", "no-port")
                + "\n[[tunnel]]\nlisten = \"127.0.0.1:0\"\nbackend = \"db\"\n",
            "server",
            "is not host:port",
        ),
    ];
    for (toml, key, message) in cases {
        let path = pki.write("client", "toml", &toml);
        let mut cmd = command(&bins::client());
        cmd.arg("--config").arg(&path);
        let out = tunnel_tests::process::run_to_end(cmd, RUN_LIMIT);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{key}: {stderr}");
        let prefix = format!("{}: {key}: ", path.display());
        assert!(
            stderr.starts_with(&prefix) && stderr.contains(message),
            "{key}: {stderr}"
        );
        assert_no_panic(&out);
    }
}

#[test]
fn check_explain_lists_reachable_backends_and_rules() {
    let pki = Pki::new();
    let body = "[groups]\nops = [\"ou=ops\", \"cn=root\"]\n".to_string()
        + &backend_toml("db", "127.0.0.1:5432", "\"group=ops\", \"cn=alice\"")
        + &backend_toml("web", "127.0.0.1:8080", "{ ou = \"web\", o = \"Example\" }")
        + &backend_toml("ssh", "127.0.0.1:22", "\"uri=spiffe://example.org/*\"")
        + &backend_toml("admin", "127.0.0.1:9000", "\"cn=root\"");
    let cfg = pki.write("server", "toml", &(Gateway::header() + &body));
    let alice = pki.issue(
        "alice",
        &CertSpec {
            ou: vec!["ops".into()],
            uri: vec!["spiffe://example.org/ns/a".into()],
            ..CertSpec::client("alice")
        },
    );
    let nobody = pki.client("nobody");
    let rogue_ca = Pki::named("Rogue CA");
    let rogue = rogue_ca.client("alice");

    let explain = |cert: &Path| -> String {
        let out = run_server(
            &[
                "check",
                "--config",
                cfg.to_str().unwrap(),
                "--explain",
                cert.to_str().unwrap(),
            ],
            RUN_LIMIT,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_no_panic(&out);
        text(&out.stdout)
    };

    let out = explain(&alice.cert);
    let reach: Vec<&str> = out.lines().filter(|l| l.contains("may reach")).collect();
    assert_eq!(
        reach,
        [
            "  may reach db: allowed by group=ops",
            "  may reach ssh: allowed by uri=spiffe://example.org/*",
        ],
        "{out}"
    );
    assert!(out.contains(&alice.sha256()), "{out}");
    assert!(!out.contains("WARNING"), "{out}");

    let out = explain(&nobody.cert);
    let reach: Vec<&str> = out.lines().filter(|l| l.contains("may reach")).collect();
    assert_eq!(reach, ["  may reach no backend"], "{out}");

    // A certificate the gateway would not even verify is flagged.
    let out = explain(&rogue.cert);
    assert!(
        out.contains("WARNING: the gateway would refuse this certificate"),
        "{out}"
    );
}

#[test]
fn environment_variables_override_keys() {
    let pki = Pki::new();
    let body = backend_toml("db", "127.0.0.1:5432", "\"any\"")
        + &backend_toml("web", "127.0.0.1:8080", "\"any\"");
    let cfg = pki.write("server", "toml", &(Gateway::header() + &body));
    let check = |env: &[(&str, &str)]| {
        let mut cmd = command(&bins::server());
        cmd.args(["check", "--config"])
            .arg(&cfg)
            .envs(env.iter().copied());
        let out = tunnel_tests::process::run_to_end(cmd, RUN_LIMIT);
        assert_no_panic(&out);
        out
    };
    let out = check(&[
        ("TUNNEL_SERVER_DEFAULT_BACKEND", "web"),
        ("TUNNEL_SERVER_LISTEN", "127.0.0.2:0,127.0.0.1:0"),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("  listen: 127.0.0.2:0, 127.0.0.1:0\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  backend web (default) -> 127.0.0.1:8080\n"),
        "{stdout}"
    );

    let out = check(&[("TUNNEL_SERVER_MAX_CONNECTIONS", "0")]);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{}: max_connections: ", cfg.display())),
        "{stderr}"
    );
}
