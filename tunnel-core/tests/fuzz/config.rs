//! Config parsing and validation: arbitrary text, a valid file with random edits, and
//! structured values for every key never panic, and every error names the file; a config
//! generated valid loads and holds exactly the values written (listen, durations, backends).

use super::common::{config, edits, fixture, mutate};
use proptest::prelude::*;
use std::collections::HashMap;
use std::path::PathBuf;
use tunnel_core::config::{ClientConfig, ConfigError, ServerConfig};

fn server_path() -> PathBuf {
    fixture().dir.join("server.toml")
}

fn client_path() -> PathBuf {
    fixture().dir.join("client.toml")
}

/// Every error says which file it is about (`file: key: problem`).
fn names_file(e: &ConfigError, path: &std::path::Path) -> Result<(), TestCaseError> {
    let text = e.to_string();
    prop_assert!(
        text.starts_with(&path.display().to_string()),
        "error does not start with the file name: {text}"
    );
    prop_assert!(!e.message.is_empty(), "empty message: {text}");
    Ok(())
}

fn server(text: &str, env: HashMap<String, String>) -> Result<(), TestCaseError> {
    let path = server_path();
    match ServerConfig::from_toml(&path, text, env) {
        Ok(cfg) => {
            // Consistency: every backend is found under its own name.
            for b in &cfg.backends {
                prop_assert!(
                    cfg.backend(&b.name).is_some(),
                    "backend {} not found",
                    b.name
                );
            }
            Ok(())
        }
        Err(e) => names_file(&e, &path),
    }
}

fn client(text: &str) -> Result<(), TestCaseError> {
    let path = client_path();
    match ClientConfig::from_toml(&path, text, HashMap::new()) {
        Ok(_) => Ok(()),
        Err(e) => names_file(&e, &path),
    }
}

/// TOML-ish fragments that make edits land on interesting syntax.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "\"",
            "'",
            "[",
            "]",
            "[[backend]]",
            "[groups]",
            "=",
            "\n",
            ",",
            "{",
            "}",
            "#",
            "\\",
            "\"any\"",
            "\"cn=*\"",
            "\"group=nope\"",
            "\"ip=::/0\"",
            "\"sha256=zz\"",
            "-1",
            "99999999999999999999",
            "\"0s\"",
            "\"1ns\"",
            "\"584942417y\"",
            "\"\"",
            "true",
            "1e309",
            "\"127.0.0.1:99999\"",
            "\"[::1]:0\"",
            "\"unix:/x\"",
            "\u{2028}",
            "\u{0}",
            "\u{202e}",
            "é",
            "tls_min_version = \"1.0\"",
            "listen = []",
        ])
        .prop_map(str::to_string),
        "\\PC{0,12}",
    ]
}

/// A structured config with generated values for the usual keys.
fn structured() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        "\\PC{0,20}",
        "[0-9.:\\[\\]a-z]{0,24}",
        "[0-9]{1,6}(ms|s|m|h|d|)",
    ];
    let rule = prop_oneof![
        "(cn|o|ou|dns|uri|email|ip|sha256|group|any|x|CN)(=|)[*a-z0-9./:\\-]{0,20}",
        "\\PC{0,16}",
    ];
    (
        value.clone(),
        value.clone(),
        value.clone(),
        value,
        prop::collection::vec(
            (
                "[a-zA-Z0-9._\\-]{0,12}",
                "\\PC{0,24}",
                prop::collection::vec(rule, 0..4),
            ),
            0..4,
        ),
    )
        .prop_map(|(listen, timeout, maxc, default, backends)| {
            let q = |s: &str| format!("{s:?}");
            let mut t = format!(
                "listen = {}\ncert = \"server.crt\"\nkey = \"server.key\"\nclient_ca = \"ca.crt\"\n\
                 handshake_timeout = {}\nidle_timeout = {}\ndefault_backend = {}\n",
                q(&listen),
                q(&timeout),
                maxc.parse::<i64>().map(|n| n.to_string()).unwrap_or_else(|_| q(&maxc)),
                q(&default)
            );
            for (name, addr, rules) in backends {
                let rules: Vec<String> = rules.iter().map(|r| q(r)).collect();
                t += &format!(
                    "\n[[backend]]\nname = {}\naddress = {}\nallow = [{}]\n",
                    q(&name),
                    q(&addr),
                    rules.join(", ")
                );
            }
            t
        })
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        server(&text, HashMap::new())?;
        client(&text)?;
    }

    #[test]
    fn arbitrary_bytes_as_lossy_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        server(&text, HashMap::new())?;
        client(&text)?;
    }

    #[test]
    fn mutated_valid_server_config_never_panics(
        e in edits(6),
        tokens in prop::collection::vec((any::<usize>(), token()), 0..4),
    ) {
        let f = fixture();
        let mut text = String::from_utf8_lossy(&mutate(f.server_toml.as_bytes(), &e)).to_string();
        for (at, tok) in tokens {
            let mut at = at % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.insert_str(at, &tok);
        }
        server(&text, HashMap::new())?;
    }

    #[test]
    fn mutated_valid_client_config_never_panics(
        e in edits(6),
        tokens in prop::collection::vec((any::<usize>(), token()), 0..4),
    ) {
        let f = fixture();
        let mut text = String::from_utf8_lossy(&mutate(f.client_toml.as_bytes(), &e)).to_string();
        for (at, tok) in tokens {
            let mut at = at % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.insert_str(at, &tok);
        }
        client(&text)?;
    }

    #[test]
    fn structured_values_never_panic(text in structured()) {
        server(&text, HashMap::new())?;
    }

    #[test]
    fn environment_overrides_never_panic(
        env in prop::collection::hash_map(
            "TUNNEL_SERVER_(LISTEN|MAX_CONNECTIONS|HANDSHAKE_TIMEOUT|DEFAULT_BACKEND|TLS_MIN_VERSION|LOG_FORMAT|CRL|OCSP|[A-Z_]{1,12})",
            "\\PC{0,24}",
            0..4,
        )
    ) {
        server(&fixture().server_toml, env)?;
    }
}

/// A gateway config with generated values that should all be valid, and what each is.
#[derive(Debug, Clone)]
struct Written {
    listen: std::net::SocketAddr,
    handshake: (u64, &'static str),
    idle: (u64, &'static str),
    backends: Vec<(String, std::net::SocketAddr)>,
}

impl Written {
    fn toml(&self) -> String {
        let mut t = format!(
            "listen = \"{}\"\ncert = \"server.crt\"\nkey = \"server.key\"\nclient_ca = \"ca.crt\"\n\
             handshake_timeout = \"{}{}\"\nidle_timeout = \"{}{}\"\n",
            self.listen, self.handshake.0, self.handshake.1, self.idle.0, self.idle.1
        );
        for (name, addr) in &self.backends {
            t += &format!(
                "\n[[backend]]\nname = \"{name}\"\naddress = \"{addr}\"\nallow = [\"any\"]\n"
            );
        }
        t
    }
}

/// The duration a `N unit` value means, computed here.
fn duration_of((n, unit): (u64, &str)) -> std::time::Duration {
    let ms = match unit {
        "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        _ => n * 3_600_000,
    };
    std::time::Duration::from_millis(ms)
}

fn written() -> impl Strategy<Value = Written> {
    let dur = || (1u64..300, prop::sample::select(vec!["ms", "s", "m", "h"]));
    (
        any::<u16>(),
        dur(),
        dur(),
        prop::collection::btree_map("[a-z][a-z0-9]{0,7}", (1u16..=65535, any::<[u8; 4]>()), 1..4),
    )
        .prop_map(|(port, handshake, idle, backends)| Written {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            handshake,
            idle,
            backends: backends
                .into_iter()
                .map(|(n, (p, ip))| (n, std::net::SocketAddr::from((ip, p))))
                .collect(),
        })
}

proptest! {
    #![proptest_config(config(64))]

    /// A config that loads holds exactly the values written (a printed-back check against
    /// values known here, not against another reading of the same text).
    #[test]
    fn a_loaded_config_holds_the_values_written(w in written()) {
        let path = server_path();
        let cfg = ServerConfig::from_toml(&path, &w.toml(), HashMap::new());
        let cfg = cfg.map_err(|e| TestCaseError::fail(format!("valid config refused: {e}\n{}", w.toml())))?;
        prop_assert_eq!(&cfg.listen, &vec![w.listen]);
        prop_assert_eq!(cfg.handshake_timeout, duration_of(w.handshake));
        prop_assert_eq!(cfg.idle_timeout, duration_of(w.idle));
        let got: Vec<(String, String)> = cfg.backends.iter().map(|b| (b.name.clone(), b.address.clone())).collect();
        let want: Vec<(String, String)> = w.backends.iter().map(|(n, a)| (n.clone(), a.to_string())).collect();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn the_fixture_configs_are_valid() {
    let f = fixture();
    let cfg = ServerConfig::from_toml(&server_path(), &f.server_toml, HashMap::new())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.backends.len(), 2);
    ClientConfig::from_toml(&client_path(), &f.client_toml, HashMap::new())
        .unwrap_or_else(|e| panic!("{e}"));
}
