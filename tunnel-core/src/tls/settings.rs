//! Applying the `[tls]` settings ([`TlsPolicy`], read and checked in `config::tls`) to an
//! OpenSSL context, on either side.

use crate::config::tls::TlsPolicy;
use openssl::ssl::{SslContextBuilder, SslSessionCacheMode};

impl TlsPolicy {
    /// Applies the knobs that are set to a context (either side).
    pub fn apply(&self, b: &mut SslContextBuilder) -> Result<(), openssl::error::ErrorStack> {
        if !self.tls13_ciphersuites.is_empty() {
            b.set_ciphersuites(&self.tls13_ciphersuites.join(":"))?;
        }
        if !self.tls12_ciphers.is_empty() {
            b.set_cipher_list(&self.tls12_ciphers.join(":"))?;
        }
        if !self.groups.is_empty() {
            b.set_groups_list(&self.groups.join(":"))?;
        }
        if !self.signature_algorithms.is_empty() {
            b.set_sigalgs_list(&self.signature_algorithms.join(":"))?;
        }
        Ok(())
    }

    /// On the gateway, `session_resumption = false`: no session cache and no tickets.
    pub fn apply_server_resumption(
        &self,
        b: &mut SslContextBuilder,
    ) -> Result<(), openssl::error::ErrorStack> {
        if !self.session_resumption {
            b.set_session_cache_mode(SslSessionCacheMode::OFF);
            b.set_num_tickets(0)?;
        }
        Ok(())
    }
}
