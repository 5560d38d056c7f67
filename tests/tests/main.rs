//! The black-box integration tests, one module per area, linked as one test binary (one
//! link instead of one per file: minutes of CI on two cores, and one `cargo build` of the
//! product per run instead of one per file). Run one area with
//! `cargo test -p tunnel-tests --test main signer::`.

mod access;
mod agent_status;
mod authz;
mod backends;
mod cli;
mod config;
mod crl_rollback;
mod crl_url;
mod fleet;
mod haproxy_fleet;
mod harness;
mod hostile_input;
mod identity_rules;
mod interop;
mod keys;
mod lifecycle;
mod log_flood;
mod metrics_endpoint;
mod observability;
mod ocsp;
mod ocsp_hardening;
mod pki;
mod pki_permissions;
mod post_quantum;
mod proxy_protocol;
mod reload;
mod resilience;
mod resumption;
mod revocation;
mod revocation_chain;
mod service;
mod sessions;
mod signer;
mod signer_ha;
mod signer_load;
mod signer_store;
mod signin;
mod sni;
mod tls_audit;
mod tls_policy;
mod transfer;
mod trust;
