//! Core of the mTLS tunnel: everything but argument parsing.
//!
//! The gateway ([`server`]) verifies client certificates ([`tls`]), extracts an
//! [`identity::Identity`], decides with [`policy`] which backend the client may reach, and
//! forwards bytes ([`proxy`]); the client agent ([`client`]) wraps local TCP ports in mTLS.
// The one exception is tls::sessions (SSL_set_session), documented there.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod catalog;
pub mod check;
pub mod cli;
pub mod client;
pub mod config;
pub mod crl;
pub mod demo;
mod der;
pub mod http;
pub mod identity;
pub mod listeners;
pub mod logging;
pub mod login;
pub mod metrics;
pub mod ocsp;
pub mod oidc;
pub mod pki;
pub mod policy;
pub mod privileges;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod service;
pub mod signals;
pub mod signer;
pub mod systemd;
pub mod tls;

/// Exit code for bad usage or configuration (BSD `EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;
/// Exit code for a runtime failure that no other code describes.
pub const EXIT_RUNTIME: i32 = 1;
/// Exit code when a needed service is unavailable: an address cannot be listened on
/// (BSD `EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: i32 = 69;
/// Exit code for an I/O error on a file the command works on (BSD `EX_IOERR`).
pub const EXIT_IOERR: i32 = 74;

pub use cli::{help_epilogue, version_line, EXIT_CODES};
