//! File modes of the CA directory and of private keys: `tunnel-server pki` refuses a CA
//! directory others may write to, tightens one they may only read (and a readable `ca.key`),
//! refuses a `ca.key` others may write; the agents' key-mode warning accepts what README
//! recommends (`0640` with the service's group) and nothing looser.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use tunnel_tests::*;

fn pki_cmd(args: &[&str]) -> Output {
    let mut all = vec!["pki"];
    all.extend_from_slice(args);
    let out = run_server(&all, PROMPT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    out
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
}

/// A fresh CA in `<tmp>/ca`.
fn new_ca() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("ca");
    let out = pki_cmd(&["init", "--dir", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(mode(&dir), 0o700);
    (tmp, dir)
}

fn issue(dir: &Path, name: &str) -> Output {
    pki_cmd(&["issue", "--dir", dir.to_str().unwrap(), "--client", name])
}

#[test]
fn pki_refuses_a_ca_directory_others_may_write() {
    let (_tmp, dir) = new_ca();
    for (m, who) in [(0o770, "group"), (0o707, "others"), (0o1777, "others")] {
        chmod(&dir, m);
        let out = issue(&dir, "alice");
        let all = text(&out);
        assert_eq!(out.status.code(), Some(74), "mode {m:o}: {all}");
        assert!(
            all.contains(dir.to_str().unwrap()) && all.contains(who) && all.contains("chmod 700"),
            "mode {m:o}: unclear refusal: {all}"
        );
        assert!(!dir.join("alice.crt").exists(), "mode {m:o}: issued anyway");
        assert_eq!(
            mode(&dir),
            m & 0o777,
            "a refused directory is left as it was"
        );
    }
    // The same for init on an existing directory.
    let open = dir.parent().unwrap().join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let out = pki_cmd(&["init", "--dir", open.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(74), "{}", text(&out));
    assert!(!open.join("ca.key").exists());
    // Positive control: back to 0700, the CA works.
    chmod(&dir, 0o700);
    let out = issue(&dir, "alice");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn pki_tightens_a_ca_directory_others_may_read() {
    let (_tmp, dir) = new_ca();
    chmod(&dir, 0o755);
    let out = issue(&dir, "alice");
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert_eq!(mode(&dir), 0o700, "not tightened: {all}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("0755")
            && String::from_utf8_lossy(&out.stderr).contains("0700"),
        "the tightening is not reported: {all}"
    );
    // init in an existing readable directory tightens it too.
    let fresh = dir.parent().unwrap().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    chmod(&fresh, 0o750);
    let out = pki_cmd(&["init", "--dir", fresh.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(mode(&fresh), 0o700);
}

#[test]
fn pki_tightens_a_readable_ca_key_and_refuses_a_writable_one() {
    let (_tmp, dir) = new_ca();
    let key = dir.join("ca.key");
    chmod(&key, 0o644);
    let out = issue(&dir, "alice");
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert_eq!(mode(&key), 0o600, "ca.key not tightened: {all}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ca.key"),
        "the tightening is not reported: {all}"
    );
    for m in [0o620, 0o602, 0o666] {
        chmod(&key, m);
        let out = issue(&dir, &format!("bob{m:o}"));
        let all = text(&out);
        assert_eq!(out.status.code(), Some(74), "ca.key mode {m:o}: {all}");
        assert!(all.contains("ca.key") && all.contains("write"), "{all}");
        assert_eq!(mode(&key), m, "a refused key is left as it was");
    }
    chmod(&key, 0o600);
    let out = issue(&dir, "carol");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// Starts a gateway whose key file has mode `m`; returns whether it warned about the key.
fn key_warning(m: u32) -> Option<serde_json::Value> {
    let pki = Pki::new();
    let echo = Backend::echo();
    chmod(&pki.server.key, m);
    let gw = Gateway::start(&pki, &backend_toml("data", echo.addr, "\"any\""));
    // The check runs before the readiness line.
    gw.events()
        .into_iter()
        .find(|e| field(e, "level") == "WARN" && field(e, "message").contains("private key"))
}

#[test]
fn key_mode_warning_accepts_0640_for_the_service_group_only() {
    // README: keys 0640 root:tunnel are fine (the gateway runs with the file's group here).
    for m in [0o600, 0o640, 0o400, 0o440] {
        assert!(key_warning(m).is_none(), "mode {m:o} was warned about");
    }
    for m in [0o644, 0o660, 0o604, 0o620] {
        let ev = key_warning(m).unwrap_or_else(|| panic!("mode {m:o} was not warned about"));
        assert_eq!(field(&ev, "mode"), format!("{m:o}"), "{ev}");
    }
}
