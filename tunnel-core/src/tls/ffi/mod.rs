//! The few OpenSSL calls the `openssl` crate does not wrap: the key exchange group a
//! connection negotiated (for the audit event), and loading a private key from a PKCS#11 token
//! through the ENGINE API (Debian's libp11 engine, `libengine-pkcs11-openssl`).
//!
//! Invariants of the `unsafe` blocks: every pointer passed comes from a live Rust wrapper
//! (`SslRef`) or a `CString` that outlives the call; pointers returned by OpenSSL are checked
//! for NULL before use and owned exactly once (an `EVP_PKEY` is handed to `PKey::from_ptr`).
#![allow(unsafe_code)]

pub(crate) mod ticket;
pub(crate) mod ticket_chain;

use openssl::ssl::SslRef;
use std::ffi::{c_char, c_int, c_long, c_void, CStr};

extern "C" {
    fn SSL_group_to_name(s: *mut openssl_sys::SSL, id: c_int) -> *const c_char;
    fn SSL_free_buffers(s: *mut openssl_sys::SSL) -> c_int;
    fn SSL_CTX_set_default_read_buffer_len(ctx: *mut openssl_sys::SSL_CTX, len: usize);
}

/// Offers `session` for resumption on `ssl` (`SSL_set_session`).
///
/// SSL_set_session requires a session of the same SSL_CTX. Its one caller,
/// `tls::sessions`, keeps that invariant: sessions only enter a SessionCache through the
/// new-session callback of the context it was installed in, and ClientTls (which owns both
/// and is rebuilt as a whole on reload) only offers them to `Ssl`s made from that context.
pub(crate) fn set_session(
    ssl: &mut SslRef,
    session: &openssl::ssl::SslSessionRef,
) -> Result<(), openssl::error::ErrorStack> {
    // SAFETY: see above: the session belongs to the context `ssl` was made from.
    unsafe { ssl.set_session(session) }
}

/// Record read buffer of every connection of the context being built
/// (`SSL_CTX_set_default_read_buffer_len`): with read-ahead, one `recv` fills it.
pub(super) fn set_read_buffer_len(b: &mut openssl::ssl::SslContextBuilder, len: usize) {
    // SAFETY: `b` holds a live SSL_CTX, exclusively borrowed; the call stores a length.
    unsafe { SSL_CTX_set_default_read_buffer_len(b.as_ptr(), len) }
}

/// Frees the connection's record buffers (`SSL_free_buffers`) unless they hold data not yet
/// processed or sent, in which case nothing happens. OpenSSL allocates them again when the
/// connection next reads or writes. Call only with the connection exclusively held (the
/// caller has its stream by `&mut`), between reads and writes.
pub(super) fn free_idle_buffers(ssl: &SslRef) {
    use foreign_types::ForeignTypeRef;
    // SAFETY: `ssl` is a live SSL, not used elsewhere during this call (see above); OpenSSL
    // checks that no buffered data is pending before it frees anything.
    unsafe {
        SSL_free_buffers(ssl.as_ptr());
    }
}

/// `SSL_CTRL_GET_NEGOTIATED_GROUP` (ssl.h; `SSL_get_negotiated_group` is a macro over it).
const SSL_CTRL_GET_NEGOTIATED_GROUP: c_int = 134;

/// The key exchange group of the connection's handshake (`X25519`, `X25519MLKEM768`...).
pub fn negotiated_group(ssl: &SslRef) -> Option<String> {
    use foreign_types::ForeignTypeRef;
    let ptr = ssl.as_ptr();
    // SAFETY: `ptr` is a live SSL for the borrow of `ssl`; the ctrl only reads its state.
    let id = unsafe {
        openssl_sys::SSL_ctrl(
            ptr,
            SSL_CTRL_GET_NEGOTIATED_GROUP,
            0,
            std::ptr::null_mut::<c_void>(),
        )
    };
    if id <= 0 || id > c_long::from(c_int::MAX) {
        return None;
    }
    // SAFETY: as above; the returned name is a static string or NULL.
    let name = unsafe { SSL_group_to_name(ptr, id as c_int) };
    if name.is_null() {
        return None;
    }
    // SAFETY: non-NULL, NUL-terminated, static in OpenSSL.
    Some(
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned(),
    )
}

#[cfg(not(feature = "vendored-openssl"))]
pub(super) use engine::pkcs11_private_key;

/// Why a key in a PKCS#11 token cannot be used; each says what to do.
#[derive(Debug, thiserror::Error)]
#[allow(dead_code)] // each build constructs either Vendored or the others
pub(crate) enum Pkcs11Error {
    /// The vendored (static) OpenSSL cannot load the system's engines.
    #[error("PKCS#11 keys need the default build (system OpenSSL with the libp11 engine); the vendored-openssl build cannot load engines")]
    Vendored,
    /// A string for the engine holds a NUL byte.
    #[error("the {0} contains a NUL byte")]
    NulByte(&'static str),
    /// `pkcs11_module` differs from the one the engine was set up with.
    #[error("pkcs11_module changed since the engine was loaded; restart the service to use another module")]
    ModuleChanged,
    /// OpenSSL has no pkcs11 engine.
    #[error("OpenSSL has no \"pkcs11\" engine ({0}); install libengine-pkcs11-openssl")]
    NoEngine(openssl::error::ErrorStack),
    /// The engine refused the module path.
    #[error("the pkcs11 engine refused MODULE_PATH {}", .0.display())]
    ModulePath(std::path::PathBuf),
    /// The engine or module did not initialize.
    #[error("cannot initialize the pkcs11 engine and module: {0}")]
    Init(openssl::error::ErrorStack),
    /// The engine refused the PIN.
    #[error("the pkcs11 engine refused the PIN")]
    Pin,
    /// No key was loaded.
    #[error("no such key, token absent or PIN wrong ({0})")]
    NoKey(openssl::error::ErrorStack),
}

/// With the vendored (static) OpenSSL, the system's engines (built against the system's
/// libcrypto) cannot be loaded.
#[cfg(feature = "vendored-openssl")]
pub(super) fn pkcs11_private_key(
    _uri: &str,
    _module: Option<&std::path::Path>,
    _pin: Option<&[u8]>,
) -> Result<openssl::pkey::PKey<openssl::pkey::Private>, Pkcs11Error> {
    Err(Pkcs11Error::Vendored)
}

#[cfg(not(feature = "vendored-openssl"))]
mod engine {
    use super::Pkcs11Error;
    use crate::util::sync::lock;
    use foreign_types::ForeignType;
    use openssl::pkey::{PKey, Private};
    use std::ffi::{c_char, c_int, c_void, CString};
    use std::path::Path;
    use std::sync::Mutex;

    #[repr(C)]
    struct Engine {
        _p: [u8; 0],
    }

    extern "C" {
        fn ENGINE_by_id(id: *const c_char) -> *mut Engine;
        fn ENGINE_init(e: *mut Engine) -> c_int;
        fn ENGINE_free(e: *mut Engine) -> c_int;
        fn ENGINE_ctrl_cmd_string(
            e: *mut Engine,
            cmd: *const c_char,
            arg: *const c_char,
            optional: c_int,
        ) -> c_int;
        fn ENGINE_load_private_key(
            e: *mut Engine,
            key_id: *const c_char,
            ui: *mut c_void,
            cb_data: *mut c_void,
        ) -> *mut openssl_sys::EVP_PKEY;
        fn UI_null() -> *mut c_void;
    }

    /// The initialized engine (its address) and the module it was set up with: the engine and
    /// the PKCS#11 module are initialized once per process and kept, since keys loaded from
    /// it keep referring to it and re-initializing a module on every reload is not supported
    /// by every module.
    static ENGINE: Mutex<Option<(usize, Option<std::path::PathBuf>)>> = Mutex::new(None);

    fn cstring(what: &'static str, s: &[u8]) -> Result<CString, Pkcs11Error> {
        CString::new(s).map_err(|_| Pkcs11Error::NulByte(what))
    }

    fn engine(module: Option<&Path>) -> Result<*mut Engine, Pkcs11Error> {
        let mut g = lock(&ENGINE);
        if let Some((e, m)) = g.as_ref() {
            if m.as_deref() != module {
                return Err(Pkcs11Error::ModuleChanged);
            }
            return Ok(*e as *mut Engine);
        }
        let id = cstring("engine id", b"pkcs11")?;
        // SAFETY: id is a valid C string; the result is checked for NULL.
        let e = unsafe { ENGINE_by_id(id.as_ptr()) };
        if e.is_null() {
            return Err(Pkcs11Error::NoEngine(openssl::error::ErrorStack::get()));
        }
        if let Some(m) = module {
            let cmd = cstring("command", b"MODULE_PATH")?;
            let arg = cstring("pkcs11_module path", m.as_os_str().as_encoded_bytes())?;
            // SAFETY: e is a live structural reference; both strings outlive the call.
            if unsafe { ENGINE_ctrl_cmd_string(e, cmd.as_ptr(), arg.as_ptr(), 0) } != 1 {
                // SAFETY: releases the structural reference taken above.
                unsafe { ENGINE_free(e) };
                return Err(Pkcs11Error::ModulePath(m.to_path_buf()));
            }
        }
        // SAFETY: e is a live structural reference; init takes a functional one, kept forever.
        if unsafe { ENGINE_init(e) } != 1 {
            let why = openssl::error::ErrorStack::get();
            // SAFETY: releases the structural reference.
            unsafe { ENGINE_free(e) };
            return Err(Pkcs11Error::Init(why));
        }
        *g = Some((e as usize, module.map(Path::to_path_buf)));
        Ok(e)
    }

    /// Loads the private key `uri` from its token; `pin` is the user PIN. `uri` must carry no
    /// `pin-value` (see `keys::pkcs11_uri`): the engine prints the URI when it finds no key.
    pub(crate) fn pkcs11_private_key(
        uri: &str,
        module: Option<&Path>,
        pin: Option<&[u8]>,
    ) -> Result<PKey<Private>, Pkcs11Error> {
        let e = engine(module)?;
        let key_id = cstring("URI", uri.as_bytes())?;
        if let Some(pin) = pin {
            let cmd = cstring("command", b"PIN")?;
            let arg = cstring("PIN", pin)?;
            // SAFETY: e is the live, initialized engine; strings outlive the call (the engine
            // copies the PIN).
            if unsafe { ENGINE_ctrl_cmd_string(e, cmd.as_ptr(), arg.as_ptr(), 0) } != 1 {
                return Err(Pkcs11Error::Pin);
            }
        }
        let _guard = lock(&ENGINE);
        // SAFETY: e is live; UI_null() never prompts (no terminal interaction from a service).
        let pkey =
            unsafe { ENGINE_load_private_key(e, key_id.as_ptr(), UI_null(), std::ptr::null_mut()) };
        if pkey.is_null() {
            let why = openssl::error::ErrorStack::get();
            return Err(Pkcs11Error::NoKey(why));
        }
        // SAFETY: a new EVP_PKEY owned by us from here on.
        Ok(unsafe { PKey::from_ptr(pkey) })
    }
}
