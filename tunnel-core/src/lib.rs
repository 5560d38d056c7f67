//! Core of the mTLS tunnel: everything but argument parsing.
//!
//! The gateway ([`gateway`]) accepts TLS ([`tls`]), checks revocation ([`revocation`]), reads
//! the client's [`authz::identity::Identity`], decides with [`authz::policy`] which backend it
//! may reach, and forwards bytes ([`relay`]); the client agent ([`agent`]) wraps local TCP
//! ports in mTLS. [`signin`] turns a sign-in with the identity provider into a short-lived
//! certificate; [`pki`] is the small CA. Both long-running agents share [`service`] (start,
//! reload, signals, systemd), [`config`], [`metrics`], [`admin`] (the control socket),
//! [`http`] and [`proxy_protocol`]; [`util`] holds the small helpers; [`exit`] every exit
//! status.
// Every `unsafe` block is in tls::ffi (OpenSSL calls the openssl crate does not wrap),
// with its invariants documented there.
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![warn(unreachable_pub)]
// The crate serves its two binaries; its docs are read with --document-private-items.
#![allow(rustdoc::private_intra_doc_links)]

pub mod admin;
pub mod agent;
pub mod authz;
pub(crate) mod cli;
pub mod config;
pub mod demo;
pub(crate) mod exit;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod pki;
pub mod proxy_protocol;
pub(crate) mod relay;
pub mod revocation;
pub mod service;
pub mod signin;
pub mod tls;
pub mod util;

pub use cli::{help_epilogue, version_line, EXIT_CODES};
pub use exit::{Exit, StartError, EXIT_CONFIG, EXIT_IOERR, EXIT_RUNTIME, EXIT_UNAVAILABLE};
