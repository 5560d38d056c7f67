//! A throwaway PostgreSQL cluster (Debian's `postgresql`) for the signer's store: initdb in
//! a temporary directory, `postgres` in the foreground on a free loopback port, as user
//! `nobody` when the tests run as root (PostgreSQL refuses root), password (SCRAM) over TCP
//! with TLS from a test CA, so the signer uses `store_password_file` and
//! `sslmode=verify-full` as in production. fsync stays on: latencies measured against it
//! are those of a real server. Stopped on drop.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;
/// The database user initdb creates.
pub const USER: &str = "signer";
const PASSWORD: &str = "a test password";

/// A running cluster.
pub struct Cluster {
    child: Child,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

/// The PostgreSQL binaries' directory: the newest /usr/lib/postgresql/N/bin, else where
/// `initdb` is on PATH.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .filter(|p| p.join("initdb").is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    if let Some(d) = found.pop() {
        return d;
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .filter_map(|d| d.join("initdb").canonicalize().ok())
                .find_map(|i| i.parent().map(Path::to_path_buf))
        })
        .expect("PostgreSQL is not installed: apt-get install postgresql (scripts/test does)")
}

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

impl Cluster {
    /// initdb, start, and create database `db`; returns once it accepts connections.
    pub fn start(db: &str) -> Cluster {
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
        let ca = tunnel_core::pki::new_ca("PostgreSQL test CA", 2).unwrap();
        let spec = tunnel_core::pki::CertSpec::server("127.0.0.1");
        let server = tunnel_core::pki::new_leaf(&ca, &spec).unwrap();
        write("ca.crt", &ca.cert.to_pem().unwrap(), 0o644);
        write("server.crt", &server.cert.to_pem().unwrap(), 0o644);
        let key = server.key.private_key_to_pem_pkcs8().unwrap();
        write("server.key", &key, 0o600);
        let data = dir.path().join("data");
        let out = unprivileged(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "-E", "UTF8", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb: {out:?}");
        let port = crate::free_port();
        let log = std::fs::File::create(dir.path().join("postgres.log")).unwrap();
        let d = dir.path();
        let child = unprivileged(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(d)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-c", "ssl=on", "-c", "max_connections=200"])
            .arg("-c")
            .arg(format!("ssl_cert_file={}", d.join("server.crt").display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", d.join("server.key").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let mut c = Cluster { child, port, dir };
        c.wait_ready();
        // The port accepts before the server takes queries ("starting up"): retry.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = unprivileged(bin.join("createdb"))
                .arg("-h")
                .arg(c.dir.path())
                .args(["-p", &port.to_string(), "-U", USER, db])
                .output()
                .expect("run createdb");
            if out.status.success() {
                return c;
            }
            let starting = String::from_utf8_lossy(&out.stderr).contains("starting up");
            assert!(starting && Instant::now() < deadline, "createdb: {out:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("postgres exited ({status}): {}", self.log());
            }
            assert!(Instant::now() < deadline, "postgres: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// signer.toml lines for a store in database `db`: the URL (TLS, server checked against
    /// the test CA) and the password file.
    pub fn signer_keys(&self, db: &str) -> String {
        format!(
            "store = \"postgresql://{USER}@127.0.0.1:{}/{db}?sslmode=verify-full&sslrootcert={}\"\n\
             store_password_file = {}\n",
            self.port,
            self.dir.path().join("ca.crt").display(),
            crate::pki::toml_str(&self.dir.path().join("pw")),
        )
    }

    /// Runs `sql` in `db` through psql over the unix socket; its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = unprivileged(bin_dir().join("psql"))
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", USER, "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-F", " ", "-c", sql])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Cluster {
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
