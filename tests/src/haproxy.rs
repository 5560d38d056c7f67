//! A real HAProxy (Debian's `haproxy` package) in TCP mode in front of gateways, started from
//! a configuration the test writes, in the foreground, killed on drop.

use crate::process::Proc;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

/// A running HAProxy.
pub struct Haproxy {
    /// The process.
    pub proc: Proc,
    /// The frontend address clients connect to.
    pub addr: SocketAddr,
}

/// The `haproxy` binary, or a panic saying how to install it.
pub fn binary() -> String {
    for p in ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"] {
        if Path::new(p).exists() {
            return p.to_string();
        }
    }
    match Command::new("haproxy").arg("-v").output() {
        Ok(o) if o.status.success() => "haproxy".to_string(),
        _ => panic!("haproxy is not installed: apt-get install haproxy (scripts/test does it)"),
    }
}

impl Haproxy {
    /// Starts HAProxy with a frontend on a free loopback port whose default backend is the
    /// `backend` section text given (`server` lines and options), and waits until it accepts.
    pub fn start(dir: &Path, backend: &str) -> Haproxy {
        let port = crate::free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let cfg = format!(
            "global\n  maxconn 4096\n\
             defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n  \
             retries 3\n  option redispatch\n\
             frontend fe\n  bind {addr}\n  default_backend gateways\n\
             backend gateways\n{backend}\n"
        );
        let path = dir.join(format!("haproxy-{port}.cfg"));
        std::fs::write(&path, cfg).expect("write haproxy.cfg");
        let mut cmd = Command::new(binary());
        cmd.arg("-db").arg("-f").arg(&path);
        let proc = Proc::spawn("haproxy", cmd);
        crate::backend::wait_accepting(addr, crate::READY, "haproxy");
        Haproxy { proc, addr }
    }
}
