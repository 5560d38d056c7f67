//! Property tests ("fuzzing on stable"): arbitrary and mutated input for every parser that sees
//! operator or peer data — config files, rules, certificates (DER), CRLs, OCSP responses,
//! SNI, admin socket requests, PROXY headers and ID tokens — must never panic, and where a
//! round trip or a reference definition exists, the code must agree with it.
//!
//! `cargo test` runs few cases per property (fast); `scripts/fuzz SECONDS` runs rounds with
//! many cases (`PROPTEST_CASES`) and fresh random seeds until the time budget is spent. A
//! failure found that way becomes an ordinary `#[test]` in `regressions`.

mod fuzz {
    pub mod admin_protocol;
    pub mod common;
    pub mod config;
    pub mod der;
    pub mod policy;
    pub mod proxy_header;
    pub mod regressions;
    pub mod revocation;
    pub mod sni;
    pub mod token;
}
