use super::*;
use crate::pki::{self, CertSpec};
use std::collections::HashMap;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ca = pki::new_ca("CA", 10).unwrap();
        pki::write_issued(&ca, &dir.path().join("ca.crt"), &dir.path().join("ca.key")).unwrap();
        let s = pki::new_leaf(&ca, &CertSpec::server("gw")).unwrap();
        pki::write_issued(&s, &dir.path().join("s.crt"), &dir.path().join("s.key")).unwrap();
        Fixture { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("server.toml")
    }

    fn parse(&self, body: &str) -> Result<ServerConfig, ConfigError> {
        self.parse_env(body, &[])
    }

    fn parse_env(&self, body: &str, env: &[(&str, &str)]) -> Result<ServerConfig, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ServerConfig::from_toml(&self.path(), body, env)
    }
}

const HEAD: &str = r#"listen = "127.0.0.1:8443"
cert = "s.crt"
key = "s.key"
client_ca = "ca.crt"
"#;

const BACKEND: &str = r#"
[[backend]]
name = "db"
address = "127.0.0.1:5432"
allow = ["cn=alice"]
"#;

#[test]
fn full_example_parses_with_defaults() {
    let f = Fixture::new();
    let body = format!(
        "{HEAD}default_backend = \"web\"\nhandshake_timeout = \"3s\"\nlisten_extra_is_not_here = 1\n"
    );
    // Unknown keys are refused...
    let e = f.parse(&body).unwrap_err();
    assert!(e.message.contains("unknown field"), "{e}");
    assert!(e.to_string().contains("listen_extra_is_not_here"), "{e}");
    // ...and the documented example works.
    let body = r#"listen = ["127.0.0.1:8443", "[::1]:8443"]
cert = "s.crt"
key = "s.key"
client_ca = "ca.crt"
default_backend = "web"
handshake_timeout = "3s"
log_format = "json"

[groups]
dba = ["ou=dba", "cn=carol"]

[[backend]]
name = "Postgres"
address = "10.0.0.5:5432"
allow = ["group=dba", "uri=spiffe://example.org/ns/prod/sa/*"]

[[backend]]
name = "web"
address = "localhost:8080"
allow = [{ ou = "web", o = "Example" }]
"#;
    let c = f.parse(body).unwrap();
    assert_eq!(c.listen.len(), 2);
    assert_eq!(c.backends[0].name, "postgres");
    assert_eq!(c.handshake_timeout, Duration::from_secs(3));
    assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(c.crl_refresh, None, "default: halfway to nextUpdate");
    assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.tls_min_version, TlsVersion::Tls13);
    assert_eq!(c.policy.default_backend(), Some("web"));
    assert_eq!(c.keys.files()[0], f.dir.path().join("s.crt"));
}

#[test]
fn errors_name_file_key_and_problem() {
    let f = Fixture::new();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("{HEAD}bogus = 1\n{BACKEND}"),
            "bogus",
            "unknown field `bogus`",
        ),
        (
            format!("{HEAD}{BACKEND}bogus = 1\n"),
            "backend[0].bogus",
            "unknown field `bogus`",
        ),
        (
            HEAD.replace("s.crt", "missing.crt") + BACKEND,
            "cert",
            "cannot read",
        ),
        (
            HEAD.replace("ca.crt", "nope.crt") + BACKEND,
            "client_ca",
            "cannot read",
        ),
        (
            HEAD.replace("127.0.0.1:8443", "localhost") + BACKEND,
            "listen[0]",
            "not an IP:port",
        ),
        (
            format!("{HEAD}handshake_timeout = \"soon\"\n{BACKEND}"),
            "handshake_timeout",
            "not a duration",
        ),
        (
            format!("{HEAD}idle_timeout = \"0s\"\n{BACKEND}"),
            "idle_timeout",
            "greater than zero",
        ),
        (
            format!("{HEAD}crl_refresh = \"0s\"\n{BACKEND}"),
            "crl_refresh",
            "greater than zero",
        ),
        (
            format!("{HEAD}crl_refresh = \"often\"\n{BACKEND}"),
            "crl_refresh",
            "not a duration",
        ),
        (
            format!("{HEAD}max_connections = 0\n{BACKEND}"),
            "max_connections",
            "out of range",
        ),
        (
            format!("{HEAD}log_format = \"xml\"\n{BACKEND}"),
            "log_format",
            "not a log format",
        ),
        (
            format!("{HEAD}tls_min_version = \"1.0\"\n{BACKEND}"),
            "tls_min_version",
            "not supported",
        ),
        (
            format!("{HEAD}default_backend = \"nope\"\n{BACKEND}"),
            "default_backend",
            "not the name",
        ),
        (HEAD.to_string(), "backend", "no [[backend]]"),
        (
            format!("{HEAD}{BACKEND}{BACKEND}"),
            "backend[1].name",
            "duplicate backend name",
        ),
        (
            format!(
                "{HEAD}{}",
                BACKEND.replace("allow = [\"cn=alice\"]", "allow = []")
            ),
            "backend[0].allow",
            "no rule",
        ),
        (
            format!("{HEAD}{}", BACKEND.replace("cn=alice", "cx=alice")),
            "backend[0].allow[0]",
            "unknown attribute",
        ),
        (
            format!("{HEAD}{}", BACKEND.replace("cn=alice", "group=nobody")),
            "backend[0].allow[0]",
            "not defined under [groups]",
        ),
        (
            format!("{HEAD}{}", BACKEND.replace("127.0.0.1:5432", "nowhere")),
            "backend[0].address",
            "not host:port",
        ),
        (
            format!(
                "{HEAD}{}",
                BACKEND.replace("name = \"db\"", "name = \"a b\"")
            ),
            "backend[0].name",
            "not a valid SNI",
        ),
        (
            format!(
                "{HEAD}{}",
                BACKEND.replace("address = \"127.0.0.1:5432\"\n", "")
            ),
            "backend[0].address",
            "missing",
        ),
        (
            format!("{HEAD}max_connections = \"many\"\n{BACKEND}"),
            "max_connections",
            "invalid type",
        ),
        ("listen = [".to_string(), "", "not valid TOML"),
        (
            format!("{HEAD}group = \"tunnel\"\n{BACKEND}"),
            "group",
            "without user",
        ),
        (
            format!("{HEAD}log_level = \"audit=loud\"\n{BACKEND}"),
            "log_level",
            "not a log filter",
        ),
        (
            format!("{HEAD}max_handshakes = 0\n{BACKEND}"),
            "max_handshakes",
            "out of range",
        ),
    ];
    for (body, key, msg) in cases {
        let e = f.parse(&body).expect_err(&format!("should fail: {body}"));
        assert_eq!(e.key, key, "{e}");
        assert!(e.message.contains(msg), "want {msg:?} in {e}");
        assert!(
            e.to_string().starts_with(&f.path().display().to_string()),
            "{e}"
        );
    }
}

#[test]
fn environment_overrides_keys() {
    let f = Fixture::new();
    let body = format!("{HEAD}{BACKEND}");
    let c = f
        .parse_env(
            &body,
            &[
                ("TUNNEL_SERVER_MAX_CONNECTIONS", "7"),
                ("TUNNEL_SERVER_LISTEN", "127.0.0.1:1,127.0.0.1:2"),
                ("TUNNEL_SERVER_IDLE_TIMEOUT", "5m"),
            ],
        )
        .unwrap();
    assert_eq!(c.max_connections, 7);
    assert_eq!(c.listen.len(), 2);
    assert_eq!(c.idle_timeout, Duration::from_secs(300));
    let e = f
        .parse_env(&body, &[("TUNNEL_SERVER_MAX_CONNECTIONS", "-1")])
        .unwrap_err();
    assert_eq!(e.key, "max_connections");
}

#[test]
fn missing_file_is_reported() {
    let e = ServerConfig::load(Path::new("/nonexistent/dir/server.toml")).unwrap_err();
    assert!(e.message.contains("cannot read the config file"), "{e}");
}
