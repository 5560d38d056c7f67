//! CRL rollback: once the gateway has accepted a CRL, an older one of the same CA (lower CRL
//! Number), still within its nextUpdate and validly signed, must not bring a revoked client
//! back, whether a CRL distribution point serves it (`crl = ["http://…"]`, on reload and
//! after a restart from the copy in `state_dir`) or it is written over a `crl` file
//! (SIGHUP). The gateway keeps the newer list and logs a WARN naming the source and both
//! numbers. The CRL Numbers the test expects are read with `openssl crl`, not by the gateway.

use openssl::x509::X509Crl;
use std::path::{Path, PathBuf};
use std::process::Command;
use tunnel_core::pki::make_crl;
use tunnel_tests::process::count_reloads;
use tunnel_tests::process::Proc;
use tunnel_tests::*;

/// Message of the warning about a refused older CRL.
const ROLLBACK: &str =
    "refused a CRL older than the one in force (rollback); keeping the newer one";

/// An older CRL of `pki`'s CA revoking nobody, and a newer one revoking `revoked`, with
/// their CRL Numbers as `openssl crl -crlnumber` reads them.
struct Lists {
    older: X509Crl,
    newer: X509Crl,
    older_number: u128,
    newer_number: u128,
}

fn lists(pki: &Pki, revoked: &Creds) -> Lists {
    let older = make_crl(pki.ca(), &[], -1, 7).expect("CRL");
    let older_number = crl_number(pki, &older);
    // Numbers are issue times in milliseconds: issue until the clock has moved on.
    loop {
        let newer = make_crl(pki.ca(), &[&revoked.issued.cert], -1, 7).expect("CRL");
        let newer_number = crl_number(pki, &newer);
        if newer_number > older_number {
            return Lists {
                older,
                newer,
                older_number,
                newer_number,
            };
        }
    }
}

/// The cRLNumber of `crl`, read by `openssl crl -noout -crlnumber` ("crlNumber=0x…").
fn crl_number(pki: &Pki, crl: &X509Crl) -> u128 {
    let path = pki.unique_path("crl-number", "pem");
    std::fs::write(&path, crl.to_pem().expect("PEM")).expect("write CRL");
    let out = Command::new("openssl")
        .args(["crl", "-noout", "-crlnumber", "-in"])
        .arg(&path)
        .output()
        .expect("run openssl crl");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text
        .trim()
        .strip_prefix("crlNumber=0x")
        .unwrap_or_else(|| panic!("openssl crl -crlnumber said {text:?}"));
    u128::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{hex:?}: {e}"))
}

/// The audit result of one connection of `who` to "echo".
fn result_for(gw: &Gateway, pki: &Pki, who: &Creds) -> String {
    tunnel_tests::control::audit_result(gw, &pki.ca_crt, who, "echo")
}

/// Sends SIGHUP and waits for the next successful reload.
fn reload(gw: &Gateway) {
    let before = count_reloads(&gw.events());
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    gw.wait_until("a reload", PROMPT, |evs| {
        (count_reloads(evs) > before).then_some(())
    });
}

/// Waits until `who` is refused as revoked (a fetched copy may take a second reload).
fn wait_revoked(gw: &Gateway, pki: &Pki, who: &Creds) {
    let deadline = std::time::Instant::now() + PROMPT;
    while result_for(gw, pki, who) != "revoked" {
        assert!(std::time::Instant::now() < deadline, "never refused");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Waits for the rollback warning naming `source`, and checks it names both numbers.
fn assert_rollback_warned(gw: &Gateway, source: &str, l: &Lists) {
    let ev = gw.wait_for("the rollback warning", PROMPT, |e| {
        field(e, "message") == ROLLBACK && field(e, "source") == source
    });
    assert_eq!(field(&ev, "level"), "WARN", "{ev}");
    let (current, offered) = (field(&ev, "current"), field(&ev, "offered"));
    assert_eq!(current, format!("CRL number {}", l.newer_number), "{ev}");
    assert_eq!(offered, format!("CRL number {}", l.older_number), "{ev}");
}

/// `python3 -m http.server` serving `dir` on loopback `port`.
fn http_server(dir: &Path, port: u16) -> Proc {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "http.server", "--bind", "127.0.0.1"])
        .arg(port.to_string())
        .arg("--directory")
        .arg(dir);
    let p = Proc::spawn("python3 -m http.server (install python3)", cmd);
    let addr = format!("127.0.0.1:{port}").parse().expect("address");
    backend::wait_accepting(addr, READY, "http.server");
    p
}

/// A distribution point on loopback: `serve` puts a CRL (DER) where `url` finds it.
struct Distribution {
    web: PathBuf,
    url: String,
    _server: Proc,
}

impl Distribution {
    fn start(pki: &Pki) -> Distribution {
        let web = pki.dir().join("web");
        std::fs::create_dir_all(&web).expect("web dir");
        let port = free_port();
        let server = http_server(&web, port);
        Distribution {
            url: format!("http://127.0.0.1:{port}/ca.crl"),
            web,
            _server: server,
        }
    }

    fn serve(&self, crl: &X509Crl) {
        let tmp = self.web.join("ca.crl.next");
        std::fs::write(&tmp, crl.to_der().expect("DER")).expect("write CRL");
        std::fs::rename(&tmp, self.web.join("ca.crl")).expect("rename CRL");
    }

    /// A gateway config fetching this URL, its copy kept in `pki`'s `state`.
    fn config(&self, pki: &Pki, echo: &Backend) -> PathBuf {
        let state = pki.dir().join("state");
        std::fs::create_dir_all(&state).expect("state dir");
        let body = format!(
            "crl = [\"{}\"]\nstate_dir = {}\n{}",
            self.url,
            pki::toml_str(&state),
            backend_toml("echo", echo.addr, "\"any\"")
        );
        pki.write("server", "toml", &(Gateway::header() + &body))
    }
}

#[test]
fn an_older_crl_served_by_the_distribution_point_does_not_unrevoke_on_reload() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let (alice, mallory) = (pki.client("alice"), pki.client("mallory"));
    let l = lists(&pki, &mallory);
    let dp = Distribution::start(&pki);
    dp.serve(&l.older);
    let gw = Gateway::start_file(&dp.config(&pki, &echo));
    assert_eq!(result_for(&gw, &pki, &mallory), "ok");
    assert_eq!(result_for(&gw, &pki, &alice), "ok");

    // The CA revokes mallory; a reload fetches the newer list.
    dp.serve(&l.newer);
    reload(&gw);
    wait_revoked(&gw, &pki, &mallory);
    assert_eq!(result_for(&gw, &pki, &alice), "ok");

    // Yesterday's list comes back (replayed, or a stale mirror): still valid, lower number.
    dp.serve(&l.older);
    reload(&gw);
    assert_eq!(result_for(&gw, &pki, &mallory), "revoked");
    assert_rollback_warned(&gw, &dp.url, &l);
    assert_eq!(result_for(&gw, &pki, &alice), "ok");
    // A later reload still keeps the newer list.
    reload(&gw);
    assert_eq!(result_for(&gw, &pki, &mallory), "revoked");
    assert_eq!(result_for(&gw, &pki, &alice), "ok");
}

#[test]
fn an_older_crl_served_after_a_restart_does_not_replace_the_newer_copy() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let (alice, mallory) = (pki.client("alice"), pki.client("mallory"));
    let l = lists(&pki, &mallory);
    let dp = Distribution::start(&pki);
    dp.serve(&l.newer);
    let cfg = dp.config(&pki, &echo);
    let mut gw = Gateway::start_file(&cfg);
    assert_eq!(result_for(&gw, &pki, &mallory), "revoked");
    assert_eq!(result_for(&gw, &pki, &alice), "ok");
    gw.terminate();
    gw.wait_exit(PROMPT);

    // Restarted while the distribution point serves the older list: the copy in state_dir
    // is newer and stays in force.
    dp.serve(&l.older);
    let gw = Gateway::start_file(&cfg);
    assert_eq!(result_for(&gw, &pki, &mallory), "revoked");
    assert_rollback_warned(&gw, &dp.url, &l);
    assert_eq!(result_for(&gw, &pki, &alice), "ok");
}

#[test]
fn an_older_crl_written_over_the_file_does_not_unrevoke_on_sighup() {
    let pki = Pki::new();
    let echo = Backend::echo();
    let (alice, mallory) = (pki.client("alice"), pki.client("mallory"));
    let l = lists(&pki, &mallory);
    let path = pki.dir().join("crl.pem");
    let put = |crl: &X509Crl| {
        let tmp = pki.unique_path("crl-next", "tmp");
        std::fs::write(&tmp, crl.to_pem().expect("PEM")).expect("write CRL");
        std::fs::rename(&tmp, &path).expect("rename CRL");
    };
    put(&l.older);
    let gw = Gateway::start(
        &pki,
        &format!(
            "crl = [\"crl.pem\"]\n{}",
            backend_toml("echo", echo.addr, "\"any\"")
        ),
    );
    assert_eq!(result_for(&gw, &pki, &mallory), "ok");
    assert_eq!(result_for(&gw, &pki, &alice), "ok");

    put(&l.newer);
    reload(&gw);
    assert_eq!(result_for(&gw, &pki, &mallory), "revoked");
    assert_eq!(result_for(&gw, &pki, &alice), "ok");

    // The older list written back over the file (a restored backup, a stale sync).
    put(&l.older);
    reload(&gw);
    assert_eq!(result_for(&gw, &pki, &mallory), "revoked");
    assert_rollback_warned(&gw, &path.display().to_string(), &l);
    assert_eq!(result_for(&gw, &pki, &alice), "ok");
}
