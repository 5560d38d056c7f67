//! A throwaway PostgreSQL cluster for the store's tests, as tests/tests/backends.rs starts
//! one: initdb in a temporary directory, `postgres` in the foreground on a free loopback
//! port, as user `nobody` when the tests run as root (PostgreSQL refuses root). Password
//! authentication (SCRAM) over TCP and TLS with a certificate from a test CA, so that the
//! store's password_file and sslmode=verify-full are exercised. Stopped on drop (also when a
//! test fails).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;
/// The database user initdb creates, and its password.
pub(super) const USER: &str = "signer";
const PASSWORD: &str = "correct horse battery staple";

pub(super) struct Cluster {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

/// The PostgreSQL binaries' directory: `initdb` on PATH, else Debian's
/// /usr/lib/postgresql/N/bin (the newest). Panics when there is none: these tests need a
/// real server, never skip them.
fn bin_dir() -> PathBuf {
    // Where initdb really is (on PATH it may be a symbolic link): createdb and psql are
    // beside it there.
    if let Some(dir) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .filter_map(|d| d.join("initdb").canonicalize().ok())
            .find_map(|i| i.parent().map(Path::to_path_buf))
    }) {
        return dir;
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .filter(|p| p.join("initdb").is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().expect(
        "the PostgreSQL store tests need a PostgreSQL server: install it \
         (apt-get install postgresql); no initdb on PATH or under /usr/lib/postgresql/*/bin",
    )
}

/// `program` as nobody when we are root.
fn unprivileged(program: PathBuf) -> Command {
    let mut c = Command::new(program);
    if nix::unistd::Uid::effective().is_root() {
        c.uid(NOBODY).gid(NOBODY);
    }
    c
}

fn give_to_nobody(path: &Path) {
    if nix::unistd::Uid::effective().is_root() {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).expect("chown to nobody");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Cluster {
    /// initdb and start; returns once the server accepts connections.
    pub(super) fn start() -> Cluster {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("temporary directory");
        give_to_nobody(dir.path());
        let write = |name: &str, data: &[u8], mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            let p = dir.path().join(name);
            std::fs::write(&p, data).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            give_to_nobody(&p);
            p
        };
        let pwfile = write("pw", PASSWORD.as_bytes(), 0o600);
        // The server's certificate for 127.0.0.1, from a test CA (ca.crt: the client's
        // sslrootcert).
        let ca = crate::pki::new_ca("store test CA", 2).unwrap();
        let server = crate::pki::new_leaf(&ca, &crate::pki::CertSpec::server("127.0.0.1")).unwrap();
        write("ca.crt", &ca.cert.to_pem().unwrap(), 0o644);
        write("server.crt", &server.cert.to_pem().unwrap(), 0o644);
        write(
            "server.key",
            &server.key.private_key_to_pem_pkcs8().unwrap(),
            0o600,
        );
        let data = dir.path().join("data");
        let out = unprivileged(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "-E", "UTF8", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("postgres.log")).unwrap();
        let child = unprivileged(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-c", "fsync=off", "-c", "ssl=on"])
            .arg("-c")
            .arg(format!(
                "ssl_cert_file={}",
                dir.path().join("server.crt").display()
            ))
            .arg("-c")
            .arg(format!(
                "ssl_key_file={}",
                dir.path().join("server.key").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let mut cluster = Cluster { child, port, dir };
        cluster.wait_ready();
        cluster
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // A listening port is not enough: until recovery ends the server answers "the
            // database system is starting up". pg_isready exits 0 once it accepts sessions.
            let ready = Command::new(bin_dir().join("pg_isready"))
                .arg("-h")
                .arg(self.dir.path())
                .args(["-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("postgres exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres does not accept connections: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// A file holding the user's password, readable by the tests' user only.
    pub(super) fn password_file(&self) -> PathBuf {
        self.dir.path().join("pw")
    }

    /// The test CA's certificate (the server's issuer).
    pub(super) fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A store URL for database `db` over TLS, server checked (`verify-full`).
    pub(super) fn url(&self, db: &str) -> String {
        format!(
            "postgresql://{USER}@127.0.0.1:{}/{db}?sslmode=verify-full&sslrootcert={}",
            self.port,
            self.ca_file().display()
        )
    }

    /// Creates database `db` (through the unix socket, trusted).
    pub(super) fn create_db(&self, db: &str) {
        let out = unprivileged(bin_dir().join("createdb"))
            .args(["-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", USER, db])
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `sql` in `db` as the superuser, through psql over the unix socket.
    pub(super) fn psql(&self, db: &str, sql: &str) -> String {
        let out = unprivileged(bin_dir().join("psql"))
            .args(["-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", USER, "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Cluster {
    /// Fast shutdown (SIGINT), then SIGKILL if it lingers; the directory goes with `dir`.
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
