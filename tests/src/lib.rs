//! Harness for the black-box integration tests in `tests/tests/`.
//!
//! The tests spawn the real `tunnel-server` and `tunnel-client` binaries (built once per test
//! process by [`bins`]), with a PKI generated at test time ([`pki`]), ephemeral ports only, and
//! JSON logs read back from stderr ([`process`]) for readiness and for audit events. Backends
//! ([`backend`]) and raw TLS clients ([`tls`]) run in the test process; [`data`] makes and
//! hashes deterministic byte streams so every transfer is checked byte for byte; [`ocsp`] runs
//! a real `openssl ocsp` responder; [`http`] reads the metrics endpoint.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod bins;
pub mod browser;
pub mod control;
pub mod data;
pub mod haproxy;
pub mod http;
pub mod ocsp;
pub mod oidc;
pub mod pki;
pub mod postgres;
pub mod process;
pub mod tls;

pub use backend::{closed_port, free_port, Backend, ClosedPort, Transfer};
pub use control::assert_serves;
pub use data::{hash_reader, send_pattern, sha256_hex, Digest};
pub use pki::{Creds, Pki};
pub use process::{client_toml, command, field, run_server, Agent, AgentSpec, Gateway, Proc};

use std::time::Duration;

/// Upper bound for anything that should happen "promptly" on a loaded 2-core CI machine
/// (measured: with eight builds and test suites sharing two cores, one tunnelled echo among
/// 50 busy streams took 19 s).
pub const PROMPT: Duration = Duration::from_secs(20);

/// Read/write timeout of the tests' sockets: longer than [`PROMPT`], so that a slow answer
/// still arrives and a missing one still fails (the assertions use PROMPT).
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound for a process to become ready.
pub const READY: Duration = Duration::from_secs(30);

/// A `[[backend]]` table: `allow` is the TOML inside the brackets, e.g. `"\"cn=alice\""`.
pub fn backend_toml(name: &str, address: impl std::fmt::Display, allow: &str) -> String {
    format!("\n[[backend]]\nname = \"{name}\"\naddress = \"{address}\"\nallow = [{allow}]\n")
}
