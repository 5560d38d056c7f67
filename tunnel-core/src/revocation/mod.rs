//! Is a certificate still good: [`crl`] loads and checks certificate revocation lists,
//! [`crl_fetch`] fetches the ones given as URLs, [`ocsp`] asks responders and staples.

pub mod crl;
pub(crate) mod crl_fetch;
pub mod ocsp;
