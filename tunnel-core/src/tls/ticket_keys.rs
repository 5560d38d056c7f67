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

use super::ffi::ticket::{self, Action, TicketKey, NAME_LEN};
use crate::config::ConfigError;
use openssl::ssl::{SslAcceptorBuilder, SslContext, SslRef};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::OnceLock;

/// Bytes in one key: name, HMAC key, AES key.
const KEY_LEN: usize = 80;
/// Upper bound on keys in one file (rotation needs two or three).
const MAX_KEYS: usize = 16;

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
        ticket::set_callback::<Decider>(b)
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

/// The ticket callback's decisions, made here in safe code.
struct Decider;

impl ticket::Decide for Decider {
    fn decide<'a>(ssl: &'a SslRef, name: &[u8], seal: bool) -> Action<'a> {
        decide(ssl, name, seal)
    }
}

/// Decides, in safe code, what the ticket callback (`tls::ffi::ticket`) does.
pub(crate) fn decide<'a>(ssl: &'a SslRef, name: &[u8], seal: bool) -> Action<'a> {
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
