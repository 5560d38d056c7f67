//! The session ticket app-data calls (`SSL_CTX_set_session_ticket_cb`,
//! `SSL_SESSION_{set1,get0}_ticket_appdata`) that carry a client's intermediates in its
//! ticket; what goes in is the [`AppData`] given (`tls::ticket_chain`'s).

use foreign_types::ForeignTypeRef;
use openssl::ssl::SslSessionRef;
use openssl::ssl::{SslAcceptorBuilder, SslRef};
use openssl_sys as ffi;
use std::ffi::{c_int, c_void};

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

/// What goes into a ticket's app data.
pub(crate) trait AppData {
    /// The bytes for the ticket being made on `ssl`, if any.
    fn encode(ssl: &SslRef) -> Option<Vec<u8>>;
}

pub(crate) fn install<A: AppData>(
    b: &mut SslAcceptorBuilder,
) -> Result<(), openssl::error::ErrorStack> {
    // SAFETY: `b` owns a live SSL_CTX; a NULL decrypt callback keeps OpenSSL's own
    // handling of decrypted tickets; no argument pointer is used.
    let r = unsafe {
        SSL_CTX_set_session_ticket_cb(b.as_ptr(), Some(gen_cb::<A>), None, std::ptr::null_mut())
    };
    if r == 1 {
        Ok(())
    } else {
        Err(openssl::error::ErrorStack::get())
    }
}

/// Called before each ticket is sealed: attach the client's intermediates. A resumed
/// session already carries them from its own ticket (OpenSSL copies the app data).
unsafe extern "C" fn gen_cb<A: AppData>(ssl: *mut ffi::SSL, _arg: *mut c_void) -> c_int {
    // SAFETY: OpenSSL passes the live SSL the ticket is made for.
    let ssl = SslRef::from_ptr(ssl);
    let (Some(data), Some(sess)) = (A::encode(ssl), ssl.session()) else {
        return 1;
    };
    // SAFETY: the session belongs to `ssl`; OpenSSL copies `data`.
    SSL_SESSION_set1_ticket_appdata(sess.as_ptr(), data.as_ptr().cast(), data.len());
    1
}

pub(crate) fn appdata(sess: &SslSessionRef) -> Option<Vec<u8>> {
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
