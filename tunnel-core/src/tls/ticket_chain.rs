//! The client's intermediate certificates carried inside stateless session tickets.
//!
//! A ticket holds the session's client certificate but not the intermediates the client sent
//! in its full handshake, and the gateway verifies a resumed session's chain again. A gateway
//! that opens another gateway's ticket has never seen those intermediates, so they travel in
//! the ticket's application data (sealed and authenticated with the ticket itself). They are
//! only candidates for chain building: trust still comes from `client_ca` alone.
//!
//! Holds the `unsafe` FFI for `SSL_CTX_set_session_ticket_cb` and the ticket app data, which
//! the `openssl` crate does not wrap.

use foreign_types::ForeignTypeRef;
use openssl::ssl::{SslAcceptorBuilder, SslRef};
use openssl::x509::X509;
use std::ffi::{c_int, c_void};

/// Length-prefixed DER of the certificates the client sent besides its own.
fn encode(ssl: &SslRef) -> Option<Vec<u8>> {
    let leaf = ssl.peer_certificate()?.to_der().ok()?;
    let mut out = Vec::new();
    for c in ssl.peer_cert_chain()?.iter() {
        let der = c.to_der().ok()?;
        if der != leaf {
            out.extend_from_slice(&(der.len() as u32).to_be_bytes());
            out.extend_from_slice(&der);
        }
    }
    (!out.is_empty()).then_some(out)
}

fn decode(mut data: &[u8]) -> Vec<X509> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let n = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let Some(der) = data.get(4..4 + n) else { break };
        match X509::from_der(der) {
            Ok(c) => out.push(c),
            Err(_) => break,
        }
        data = &data[4 + n..];
    }
    out
}

/// Makes the context being built put the client's intermediates into every ticket it seals.
pub(super) fn install(b: &mut SslAcceptorBuilder) -> Result<(), openssl::error::ErrorStack> {
    ffi_glue::install(b)
}

/// The intermediates a resumed session's ticket carried (empty for a full handshake or a
/// ticket without any).
pub fn resumed_intermediates(ssl: &SslRef) -> Vec<X509> {
    if !ssl.session_reused() {
        return Vec::new();
    }
    ssl.session()
        .and_then(ffi_glue::appdata)
        .map(|d| decode(&d))
        .unwrap_or_default()
}

#[allow(unsafe_code)]
mod ffi_glue {
    use super::*;
    use openssl::ssl::SslSessionRef;
    use openssl_sys as ffi;

    type GenCb = unsafe extern "C" fn(*mut ffi::SSL, *mut c_void) -> c_int;
    type DecCb = unsafe extern "C" fn(
        *mut ffi::SSL,
        *mut ffi::SSL_SESSION,
        *const u8,
        usize,
        c_int,
        *mut c_void,
    ) -> c_int;

    extern "C" {
        // ssl.h (OpenSSL 1.1.1 and later); not bound by openssl-sys.
        fn SSL_CTX_set_session_ticket_cb(
            ctx: *mut ffi::SSL_CTX,
            gen_cb: Option<GenCb>,
            dec_cb: Option<DecCb>,
            arg: *mut c_void,
        ) -> c_int;
        fn SSL_SESSION_set1_ticket_appdata(
            ss: *mut ffi::SSL_SESSION,
            data: *const c_void,
            len: usize,
        ) -> c_int;
        fn SSL_SESSION_get0_ticket_appdata(
            ss: *mut ffi::SSL_SESSION,
            data: *mut *mut c_void,
            len: *mut usize,
        ) -> c_int;
    }

    pub(super) fn install(b: &mut SslAcceptorBuilder) -> Result<(), openssl::error::ErrorStack> {
        // SAFETY: `b` owns a live SSL_CTX; a NULL decrypt callback keeps OpenSSL's own
        // handling of decrypted tickets; no argument pointer is used.
        let r = unsafe {
            SSL_CTX_set_session_ticket_cb(b.as_ptr(), Some(gen_cb), None, std::ptr::null_mut())
        };
        if r == 1 {
            Ok(())
        } else {
            Err(openssl::error::ErrorStack::get())
        }
    }

    /// Called before each ticket is sealed: attach the client's intermediates. A resumed
    /// session already carries them from its own ticket (OpenSSL copies the app data).
    unsafe extern "C" fn gen_cb(ssl: *mut ffi::SSL, _arg: *mut c_void) -> c_int {
        // SAFETY: OpenSSL passes the live SSL the ticket is made for.
        let ssl = SslRef::from_ptr(ssl);
        let (Some(data), Some(sess)) = (encode(ssl), ssl.session()) else {
            return 1;
        };
        // SAFETY: the session belongs to `ssl`; OpenSSL copies `data`.
        SSL_SESSION_set1_ticket_appdata(sess.as_ptr(), data.as_ptr().cast(), data.len());
        1
    }

    pub(super) fn appdata(sess: &SslSessionRef) -> Option<Vec<u8>> {
        let mut data: *mut c_void = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: `sess` is live for this call; the returned pointer is owned by the session
        // and copied out before the borrow ends.
        unsafe {
            if SSL_SESSION_get0_ticket_appdata(sess.as_ptr(), &mut data, &mut len) != 1
                || data.is_null()
                || len == 0
            {
                return None;
            }
            Some(std::slice::from_raw_parts(data.cast::<u8>(), len).to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_stops_at_anything_malformed() {
        let ca = crate::pki::new_ca("T", 1).unwrap();
        let der = ca.cert.to_der().unwrap();
        let mut data = (der.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(&der);
        assert_eq!(decode(&data).len(), 1);
        data.extend_from_slice(&[0, 0, 0, 9, 1, 2]);
        assert_eq!(decode(&data).len(), 1);
        assert!(decode(&[0xff, 0xff, 0xff, 0xff]).is_empty());
        assert!(decode(&[0, 0, 0, 2, 0x30, 0x00]).is_empty());
    }
}
