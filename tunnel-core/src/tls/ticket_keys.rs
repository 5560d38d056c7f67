//! Stateless TLS session tickets sealed with keys shared by a fleet of gateways
//! (`session_ticket_keys = "FILE"`), so that a client resumes on any gateway, not only on the
//! one that issued its ticket.
//!
//! The file holds one key per line, newest first: 80 bytes written as 160 hex digits
//! (`openssl rand -hex 80`): a 16-byte key name, a 32-byte HMAC-SHA256 key and a 32-byte
//! AES-256 key. New tickets are sealed with the first key; a ticket sealed with any listed key
//! is accepted, and one sealed with an older key is replaced by a ticket under the first.
//! Blank lines and `#` comments are ignored. The file must not be readable by group or others.
//!
//! A resumed session is only a shortcut for the key exchange: the gateway verifies the
//! session's client certificate and authorizes it for this connection's SNI again, exactly
//! as with its own session cache.
//!
//! OpenSSL's ticket key callback has no wrapper in the `openssl` crate; this module holds the
//! `unsafe` FFI for it and nothing else does. Its invariants are written beside each call.

use crate::config::ConfigError;
use openssl::ssl::{SslAcceptorBuilder, SslContext, SslRef};
use std::ffi::{c_int, c_uchar};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::OnceLock;

/// Bytes in one key: name, HMAC key, AES key.
const KEY_LEN: usize = 80;
const NAME_LEN: usize = 16;
/// Upper bound on keys in one file (rotation needs two or three).
const MAX_KEYS: usize = 16;

/// One ticket key.
#[derive(Clone, PartialEq, Eq)]
pub struct TicketKey {
    name: [u8; NAME_LEN],
    hmac: [u8; 32],
    aes: [u8; 32],
}

impl std::fmt::Debug for TicketKey {
    // Never print the secret halves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TicketKey({})", hex(&self.name))
    }
}

/// The keys of one file, newest first (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketKeys {
    keys: Vec<TicketKey>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

impl TicketKeys {
    /// Parses the text of a key file; the error says which line is wrong and how.
    pub fn parse(text: &str) -> Result<TicketKeys, String> {
        let mut keys: Vec<TicketKey> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = unhex(line).filter(|b| b.len() == KEY_LEN).ok_or_else(|| {
                format!(
                    "line {}: not a key of {KEY_LEN} bytes in hex ({} hex digits); make one with `openssl rand -hex {KEY_LEN}`",
                    i + 1,
                    2 * KEY_LEN
                )
            })?;
            let mut k = TicketKey {
                name: [0; NAME_LEN],
                hmac: [0; 32],
                aes: [0; 32],
            };
            k.name.copy_from_slice(&bytes[..16]);
            k.hmac.copy_from_slice(&bytes[16..48]);
            k.aes.copy_from_slice(&bytes[48..]);
            if keys.iter().any(|o| o.name == k.name) {
                return Err(format!(
                    "line {}: the key name (first 16 bytes) repeats an earlier key's",
                    i + 1
                ));
            }
            keys.push(k);
        }
        if keys.is_empty() {
            return Err(format!(
                "holds no key; write one per line with `openssl rand -hex {KEY_LEN}`"
            ));
        }
        if keys.len() > MAX_KEYS {
            return Err(format!(
                "holds {} keys; keep at most {MAX_KEYS} (newest first)",
                keys.len()
            ));
        }
        Ok(TicketKeys { keys })
    }

    /// Reads `path` (named by `key` in config `file`), refusing a file that group or others
    /// may read.
    pub fn load(file: &Path, key: &str, path: &Path) -> Result<TicketKeys, ConfigError> {
        let err = |m: String| ConfigError::new(file, key, m);
        let meta = std::fs::metadata(path)
            .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "{} has mode {mode:04o}: session ticket keys decrypt every resumed session; chmod 600 {}",
                path.display(),
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
        TicketKeys::parse(&text).map_err(|m| err(format!("{}: {m}", path.display())))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key (never true for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key that seals new tickets.
    fn newest(&self) -> &TicketKey {
        &self.keys[0]
    }

    /// The key named `name` and whether it is the newest.
    fn find(&self, name: &[u8]) -> Option<(&TicketKey, bool)> {
        self.keys
            .iter()
            .enumerate()
            .find(|(_, k)| k.name[..] == *name)
            .map(|(i, k)| (k, i == 0))
    }

    /// Makes the context being built seal and open session tickets with these keys.
    pub fn install(self, b: &mut SslAcceptorBuilder) -> Result<(), openssl::error::ErrorStack> {
        b.set_ex_data(keys_index()?, self);
        ffi_glue::set_callback(b)
    }
}

fn keys_index(
) -> Result<openssl::ex_data::Index<SslContext, TicketKeys>, openssl::error::ErrorStack> {
    static IDX: OnceLock<openssl::ex_data::Index<SslContext, TicketKeys>> = OnceLock::new();
    if let Some(i) = IDX.get() {
        return Ok(*i);
    }
    let i = SslContext::new_ex_index()?;
    Ok(*IDX.get_or_init(|| i))
}

/// What the callback does for one ticket, decided in safe code.
enum Action<'a> {
    /// Seal a new ticket with this key and IV.
    Seal(&'a TicketKey, [u8; 16]),
    /// Open a ticket with this key; `renew` when it is not the newest.
    Open(&'a TicketKey, bool),
    /// Unknown key: full handshake.
    Unknown,
    /// No keys or no randomness: fail.
    Fail,
}

fn decide<'a>(ssl: &'a SslRef, name: &[u8], seal: bool) -> Action<'a> {
    let Some(keys) = keys_index().ok().and_then(|i| ssl.ssl_context().ex_data(i)) else {
        return Action::Fail;
    };
    if seal {
        let mut iv = [0u8; 16];
        if openssl::rand::rand_bytes(&mut iv).is_err() {
            return Action::Fail;
        }
        return Action::Seal(keys.newest(), iv);
    }
    match keys.find(name) {
        Some((k, newest)) => Action::Open(k, !newest),
        None => Action::Unknown,
    }
}

#[allow(unsafe_code)]
mod ffi_glue {
    use super::*;
    use foreign_types::ForeignTypeRef;
    use openssl_sys as ffi;

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

    pub(super) fn set_callback(
        b: &mut SslAcceptorBuilder,
    ) -> Result<(), openssl::error::ErrorStack> {
        let cb: TicketCb = ticket_cb;
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
    unsafe extern "C" fn ticket_cb(
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
        let (key, init_ok, ret) = match decide(ssl, name, enc == 1) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fill: u8) -> String {
        hex(&[fill; KEY_LEN])
    }

    #[test]
    fn parses_keys_newest_first_and_refuses_bad_files() {
        let text = format!("# rotated daily\n{}\n\n{}\n", key(1), key(2));
        let k = TicketKeys::parse(&text).unwrap();
        assert_eq!(k.len(), 2);
        assert_eq!(k.newest().name, [1; 16]);
        assert_eq!(k.find(&[2; 16]).map(|(_, newest)| newest), Some(false));
        assert!(k.find(&[3; 16]).is_none());
        for (bad, why) in [
            ("", "holds no key"),
            ("# only a comment\n", "holds no key"),
            ("abcd\n", "line 1: not a key"),
            (&format!("{}zz\n", &key(1)[..158]), "line 1: not a key"),
            (&format!("{}\n{}\n", key(1), key(1)), "line 2: the key name"),
        ] {
            let e = TicketKeys::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(
            !format!("{k:?}").contains(&"02".repeat(40)),
            "secret in Debug"
        );
    }

    #[test]
    fn refuses_a_key_file_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys");
        std::fs::write(&p, key(7)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = TicketKeys::load(Path::new("s.toml"), "session_ticket_keys", &p).unwrap_err();
        assert!(e.to_string().contains("mode 0644"), "{e}");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            TicketKeys::load(Path::new("s.toml"), "session_ticket_keys", &p)
                .unwrap()
                .len(),
            1
        );
    }
}
