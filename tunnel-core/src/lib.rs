//! Core of the mTLS tunnel: everything but argument parsing.
//!
//! The gateway ([`server`]) verifies client certificates ([`tls`]), extracts an
//! [`identity::Identity`], decides with [`policy`] which backend the client may reach, and
//! forwards bytes ([`proxy`]); the client agent ([`client`]) wraps local TCP ports in mTLS.
// Every `unsafe` block is in tls::ffi (OpenSSL calls the openssl crate does not wrap),
// with its invariants documented there.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod admission;
pub mod audit;
pub mod catalog;
pub mod check;
pub mod cidr;
pub mod cli;
pub mod client;
pub mod config;
pub mod crl;
pub mod crl_fetch;
pub mod demo;
mod der;
pub mod exec;
pub mod exit;
pub mod failover;
pub mod fleet;
pub mod http;
pub mod identity;
pub mod listeners;
pub mod logging;
pub mod login;
pub mod metrics;
pub mod ocsp;
pub mod oidc;
pub mod panic;
pub mod pki;
pub mod policy;
pub mod privileges;
pub mod proxy;
pub mod proxy_protocol;
pub mod refused;
pub mod reload;
pub mod server;
pub mod service;
pub mod signals;
pub mod signer;
pub mod start;
pub mod sync;
pub mod systemd;
pub mod time;
pub mod tls;
pub mod upstream;

pub use cli::{help_epilogue, version_line, EXIT_CODES};
pub use exit::{Exit, StartError, EXIT_CONFIG, EXIT_IOERR, EXIT_RUNTIME, EXIT_UNAVAILABLE};
