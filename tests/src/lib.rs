//! Harness for the black-box integration tests in `tests/tests/`.
//!
//! The tests spawn the real `tunnel-server` and `tunnel-client` binaries (built once per test
//! process by [`bins`]), with a PKI generated at test time ([`pki`]), ephemeral ports only, and
//! JSON logs read back from stderr ([`process`]) for readiness and for audit events. Backends
//! ([`backend`]) and raw TLS clients ([`tls`]) run in the test process; [`data`] makes and
//! hashes deterministic byte streams so every transfer is checked byte for byte; [`ocsp`] runs
//! a real `openssl ocsp` responder.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod bins;
pub mod browser;
pub mod data;
pub mod haproxy;
pub mod http;
pub mod ocsp;
pub mod oidc;
pub mod pki;
pub mod process;
pub mod tls;

pub use backend::{free_port, Backend, Transfer};
pub use data::{hash_reader, send_pattern, sha256_hex, Digest};
pub use pki::{Creds, Pki};
pub use process::{client_toml, command, field, run_server, Agent, AgentSpec, Gateway, Proc};

use std::time::Duration;

/// Upper bound for anything that should happen "promptly" on a loaded 2-core CI machine.
pub const PROMPT: Duration = Duration::from_secs(10);

/// Upper bound for a process to become ready.
pub const READY: Duration = Duration::from_secs(30);

/// A `[[backend]]` table: `allow` is the TOML inside the brackets, e.g. `"\"cn=alice\""`.
pub fn backend_toml(name: &str, address: impl std::fmt::Display, allow: &str) -> String {
    format!("\n[[backend]]\nname = \"{name}\"\naddress = \"{address}\"\nallow = [{allow}]\n")
}
