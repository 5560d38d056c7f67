//! The session ticket key callback (`SSL_CTX_set_tlsext_ticket_key_cb`, which the openssl
//! crate does not wrap): OpenSSL calls it to seal and open tickets; what it does is decided
//! in safe code by the [`Decide`] given (`tls::ticket_keys`'s).

use foreign_types::ForeignTypeRef;
use openssl::ssl::{SslAcceptorBuilder, SslRef};
use openssl_sys as ffi;
use std::ffi::{c_int, c_uchar};

pub(crate) const NAME_LEN: usize = 16;

/// One ticket key.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct TicketKey {
    pub(crate) name: [u8; NAME_LEN],
    pub(crate) hmac: [u8; 32],
    pub(crate) aes: [u8; 32],
}

/// What the callback does for one ticket, decided in safe code.
pub(crate) enum Action<'a> {
    /// Seal a new ticket with this key and IV.
    Seal(&'a TicketKey, [u8; 16]),
    /// Open a ticket with this key; `renew` when it is not the newest.
    Open(&'a TicketKey, bool),
    /// Unknown key: full handshake.
    Unknown,
    /// No keys or no randomness: fail.
    Fail,
}

/// Who decides what the callback does.
pub(crate) trait Decide {
    /// For a ticket to seal (`seal`) or to open (named `name`) on `ssl`.
    fn decide<'a>(ssl: &'a SslRef, name: &[u8], seal: bool) -> Action<'a>;
}

/// `SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB` in `ssl.h` (not exported by openssl-sys).
const SET_TICKET_KEY_CB: c_int = 72;

type TicketCb = unsafe extern "C" fn(
    *mut ffi::SSL,
    *mut c_uchar,
    *mut c_uchar,
    *mut ffi::EVP_CIPHER_CTX,
    *mut ffi::HMAC_CTX,
    c_int,
) -> c_int;

pub(crate) fn set_callback<D: Decide>(
    b: &mut SslAcceptorBuilder,
) -> Result<(), openssl::error::ErrorStack> {
    let cb: TicketCb = ticket_cb::<D>;
    // SAFETY: OpenSSL stores the pointer and calls it with the six arguments of
    // `TicketCb` (SSL_CTX_set_tlsext_ticket_key_cb); transmuting between function
    // pointer types is how the C macro passes it through the untyped callback_ctrl.
    let r = unsafe {
        ffi::SSL_CTX_callback_ctrl__fixed_rust(
            b.as_ptr(),
            SET_TICKET_KEY_CB,
            Some(std::mem::transmute::<TicketCb, unsafe extern "C" fn()>(cb)),
        )
    };
    if r == 1 {
        Ok(())
    } else {
        Err(openssl::error::ErrorStack::get())
    }
}

/// OpenSSL's ticket key callback: `enc` 1 seals a new ticket (fill `name` and `iv`, set up
/// both contexts), 0 opens one (`name` and `iv` read from the ticket). Returns 1 (done),
/// 2 (done; issue a fresh ticket), 0 (unknown key: full handshake) or -1 (error).
unsafe extern "C" fn ticket_cb<D: Decide>(
    ssl: *mut ffi::SSL,
    name: *mut c_uchar,
    iv: *mut c_uchar,
    cctx: *mut ffi::EVP_CIPHER_CTX,
    hctx: *mut ffi::HMAC_CTX,
    enc: c_int,
) -> c_int {
    // SAFETY: OpenSSL passes a live SSL for the duration of the call, and a 16-byte key
    // name and 16-byte IV buffer (EVP_MAX_IV_LENGTH) for AES-CBC.
    let ssl = SslRef::from_ptr(ssl);
    let name = std::slice::from_raw_parts_mut(name, NAME_LEN);
    let iv = std::slice::from_raw_parts_mut(iv, 16);
    let (key, init_ok, ret) = match D::decide(ssl, name, enc == 1) {
        Action::Fail => return -1,
        Action::Unknown => return 0,
        Action::Seal(k, fresh) => {
            name.copy_from_slice(&k.name);
            iv.copy_from_slice(&fresh);
            let ok = ffi::EVP_EncryptInit_ex(
                cctx,
                ffi::EVP_aes_256_cbc(),
                std::ptr::null_mut(),
                k.aes.as_ptr(),
                iv.as_ptr(),
            );
            (k, ok, 1)
        }
        Action::Open(k, renew) => {
            let ok = ffi::EVP_DecryptInit_ex(
                cctx,
                ffi::EVP_aes_256_cbc(),
                std::ptr::null_mut(),
                k.aes.as_ptr(),
                iv.as_ptr(),
            );
            (k, ok, if renew { 2 } else { 1 })
        }
    };
    // SAFETY: the key buffer lives in the context's ex_data for as long as the context.
    let hmac_ok = ffi::HMAC_Init_ex(
        hctx,
        key.hmac.as_ptr().cast(),
        key.hmac.len() as c_int,
        ffi::EVP_sha256(),
        std::ptr::null_mut(),
    );
    if init_ok == 1 && hmac_ok == 1 {
        ret
    } else {
        -1
    }
}
