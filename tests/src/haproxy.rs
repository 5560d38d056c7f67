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

/// The reference configuration `deploy/haproxy/haproxy.cfg`, with its `bind` line and
/// `server` lines replaced: the frontend on `frontend`, one server per (TLS address, metrics
/// address) of `gateways`. Everything else (options, health checks, PROXY v2) is kept as is.
pub fn deploy_config(frontend: SocketAddr, gateways: &[(SocketAddr, SocketAddr)]) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/haproxy/haproxy.cfg");
    let text = std::fs::read_to_string(path).expect("read deploy/haproxy/haproxy.cfg");
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("bind ") {
            out += &format!("    bind {frontend}\n");
        } else if t.starts_with("server ") {
            continue;
        } else {
            out += line;
            out.push('\n');
        }
    }
    for (i, (tls, metrics)) in gateways.iter().enumerate() {
        out += &format!(
            "    server gw{} {tls} check addr {} port {}\n",
            i + 1,
            metrics.ip(),
            metrics.port()
        );
    }
    out
}

impl Haproxy {
    /// Starts HAProxy on the full configuration `cfg` whose frontend listens on `addr`.
    pub fn start_config(dir: &Path, cfg: &str, addr: SocketAddr) -> Haproxy {
        let path = dir.join(format!("haproxy-{}.cfg", addr.port()));
        std::fs::write(&path, cfg).expect("write haproxy.cfg");
        let mut cmd = Command::new(binary());
        cmd.arg("-db").arg("-f").arg(&path);
        let proc = Proc::spawn("haproxy", cmd);
        crate::backend::wait_accepting(addr, crate::READY, "haproxy");
        Haproxy { proc, addr }
    }

    /// Starts HAProxy with a frontend on a free loopback port whose default backend is the
    /// `backend` section text given (`server` lines and options), and waits until it accepts.
    pub fn start(dir: &Path, backend: &str) -> Haproxy {
        let addr: SocketAddr = format!("127.0.0.1:{}", crate::free_port())
            .parse()
            .expect("addr");
        let cfg = format!(
            "global\n  maxconn 4096\n\
             defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n  \
             retries 3\n  option redispatch\n\
             frontend fe\n  bind {addr}\n  default_backend gateways\n\
             backend gateways\n{backend}\n"
        );
        Haproxy::start_config(dir, &cfg, addr)
    }
}
