//! `tunnel-bench fleet`: the cost and the reach of TLS session resumption for a fleet of
//! gateways. For each session mode of the gateway (the default per-process cache, and shared
//! `session_ticket_keys`) and each topology (one gateway; two gateways behind HAProxy with
//! PROXY v2, `balance roundrobin`), clients make one short connection after another for a
//! while, each offering the session of its previous connection, and the table gives the share
//! of connections that resumed and the gateways' CPU time per connection. A row with no
//! session offered gives the cost of a full handshake.

use crate::pairs::{Pki, CLIENT_CN, SERVER_NAME};
use crate::procs::{self, Proc};
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslSession, SslVerifyMode, SslVersion};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Session handling of one measured row.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Clients offer nothing: every handshake is full (cache mode gateway).
    Full,
    /// Gateway default: per-process session cache.
    Cache,
    /// Gateways share `session_ticket_keys`.
    Tickets,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Full => "no resumption (full handshakes)",
            Mode::Cache => "session cache (default)",
            Mode::Tickets => "session_ticket_keys",
        }
    }
}

/// Runs every row and prints a Markdown table.
pub fn run(bin_dir: &Path, secs: u64, parallel: usize) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let server_bin = bin_dir.join("tunnel-server");
    let pki = Pki::create(&server_bin, dir.path())?;
    let keys = dir.path().join("ticket.keys");
    let mut k = [0u8; 80];
    openssl::rand::rand_bytes(&mut k).map_err(|e| e.to_string())?;
    std::fs::write(
        &keys,
        k.iter().map(|b| format!("{b:02x}")).collect::<String>() + "\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::set_permissions(&keys, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    let echo = echo_backend()?;
    let haproxy = procs::find_program(&["haproxy"])
        .ok_or("haproxy is not installed (apt-get install haproxy)")?;
    println!("| gateways | session mode | connections/s | resumed | gateway CPU per connection |");
    println!("| --- | --- | ---: | ---: | ---: |");
    for gateways in [1usize, 2] {
        for mode in [Mode::Full, Mode::Cache, Mode::Tickets] {
            let setup = Setup {
                dir: dir.path(),
                server_bin: &server_bin,
                pki: &pki,
                keys: &keys,
                echo,
                haproxy: &haproxy,
            };
            let row = setup.measure(gateways, mode, Duration::from_secs(secs), parallel)?;
            let topo = if gateways == 1 {
                "1".to_string()
            } else {
                "2 behind HAProxy".to_string()
            };
            println!(
                "| {topo} | {} | {:.0} | {:.0}% | {:.2} ms |",
                mode.name(),
                row.rate,
                row.resumed * 100.0,
                row.cpu_ms
            );
        }
    }
    Ok(())
}

struct Setup<'a> {
    dir: &'a Path,
    server_bin: &'a Path,
    pki: &'a Pki,
    keys: &'a Path,
    echo: SocketAddr,
    haproxy: &'a Path,
}

struct Row {
    rate: f64,
    resumed: f64,
    cpu_ms: f64,
}

impl Setup<'_> {
    fn gateway(&self, name: &str, mode: Mode, proxied: bool) -> Result<(Proc, SocketAddr), String> {
        let port = procs::free_ports(1)?[0];
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().map_err(|_| "addr")?;
        let listen = if proxied {
            format!("[[listener]]\naddress = \"{addr}\"\nproxy_protocol = true\nproxy_protocol_from = [\"127.0.0.1/32\"]\n")
        } else {
            format!("listen = \"{addr}\"\n")
        };
        let tickets = match mode {
            Mode::Tickets => format!("session_ticket_keys = \"{}\"\n", self.keys.display()),
            _ => String::new(),
        };
        let cfg = format!(
            "cert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nlog_level = \"warn\"\n{tickets}{listen}\
             [[backend]]\nname = \"echo\"\naddress = \"{}\"\nallow = [\"cn={CLIENT_CN}\"]\n",
            self.pki.server_crt.display(),
            self.pki.server_key.display(),
            self.pki.ca.display(),
            self.echo
        );
        let path = self.dir.join(format!("{name}.toml"));
        std::fs::write(&path, cfg).map_err(|e| e.to_string())?;
        let mut cmd = std::process::Command::new(self.server_bin);
        cmd.arg("--config").arg(&path);
        let mut p = Proc::spawn(name, cmd, &self.dir.join(format!("{name}.log")))?;
        procs::wait_port(port, &mut [&mut p], Duration::from_secs(30))?;
        Ok((p, addr))
    }

    fn measure(&self, n: usize, mode: Mode, dur: Duration, parallel: usize) -> Result<Row, String> {
        let mut gws = Vec::new();
        for i in 0..n {
            gws.push(self.gateway(&format!("gw{i}"), mode, n > 1)?);
        }
        let _lb;
        let target = if n == 1 {
            gws[0].1
        } else {
            let port = procs::free_ports(1)?[0];
            let mut cfg = format!(
                "global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  \
                 timeout server 30s\nfrontend fe\n  bind 127.0.0.1:{port}\n  default_backend gws\n\
                 backend gws\n  balance roundrobin\n"
            );
            for (i, (_, a)) in gws.iter().enumerate() {
                cfg += &format!("  server gw{i} {a} send-proxy-v2\n");
            }
            let path = self.dir.join("haproxy.cfg");
            std::fs::write(&path, cfg).map_err(|e| e.to_string())?;
            let mut cmd = std::process::Command::new(self.haproxy);
            cmd.arg("-db").arg("-f").arg(&path);
            let mut p = Proc::spawn("haproxy", cmd, &self.dir.join("haproxy.log"))?;
            procs::wait_port(port, &mut [&mut p], Duration::from_secs(30))?;
            _lb = p;
            format!("127.0.0.1:{port}").parse().map_err(|_| "addr")?
        };
        let tls = Arc::new(connector(self.pki)?);
        let cpu0: f64 = gws.iter().map(|(p, _)| procs::cpu_secs(p.pid())).sum();
        let (ok, resumed, secs) = drive(&tls, target, mode != Mode::Full, dur, parallel)?;
        let cpu1: f64 = gws.iter().map(|(p, _)| procs::cpu_secs(p.pid())).sum();
        Ok(Row {
            rate: ok as f64 / secs,
            resumed: resumed as f64 / ok.max(1) as f64,
            cpu_ms: (cpu1 - cpu0) * 1000.0 / ok.max(1) as f64,
        })
    }
}

fn connector(pki: &Pki) -> Result<SslConnector, String> {
    let e = |e: openssl::error::ErrorStack| e.to_string();
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(e)?;
    b.set_min_proto_version(Some(SslVersion::TLS1_3))
        .map_err(e)?;
    b.set_ca_file(&pki.ca).map_err(e)?;
    b.set_certificate_chain_file(&pki.client_crt).map_err(e)?;
    b.set_private_key_file(&pki.client_key, SslFiletype::PEM)
        .map_err(e)?;
    b.set_verify(SslVerifyMode::PEER);
    Ok(b.build())
}

/// `parallel` threads each connect again and again for `dur`, offering their previous session
/// when `resume`; returns (connections that echoed a byte, of which resumed, seconds).
fn drive(
    tls: &Arc<SslConnector>,
    target: SocketAddr,
    resume: bool,
    dur: Duration,
    parallel: usize,
) -> Result<(u64, u64, f64), String> {
    let ok = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..parallel)
        .map(|_| {
            let (tls, ok, resumed) = (tls.clone(), ok.clone(), resumed.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let mut last: Option<SslSession> = None;
                while start.elapsed() < dur {
                    let (r, s) = one(&tls, target, last.as_ref())?;
                    ok.fetch_add(1, Ordering::Relaxed);
                    resumed.fetch_add(r as u64, Ordering::Relaxed);
                    if resume {
                        last = Some(s);
                    }
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "client thread panicked")??;
    }
    Ok((
        ok.load(Ordering::Relaxed),
        resumed.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
    ))
}

fn one(
    tls: &SslConnector,
    target: SocketAddr,
    offer: Option<&SslSession>,
) -> Result<(bool, SslSession), String> {
    let tcp = TcpStream::connect(target).map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let mut cfg = tls.configure().map_err(|e| e.to_string())?;
    cfg.set_use_server_name_indication(false);
    let mut ssl = cfg.into_ssl(SERVER_NAME).map_err(|e| e.to_string())?;
    ssl.set_hostname("echo").map_err(|e| e.to_string())?;
    if let Some(s) = offer {
        // SAFETY: every session offered comes from a connection of this same connector.
        #[allow(unsafe_code)]
        unsafe {
            ssl.set_session(s).map_err(|e| e.to_string())?
        };
    }
    let mut s = ssl.connect(tcp).map_err(|e| format!("handshake: {e}"))?;
    s.write_all(b"x").map_err(|e| format!("write: {e}"))?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)
        .map_err(|e| format!("read (refused?): {e}"))?;
    let reused = s.ssl().session_reused();
    let sess = s.ssl().session().ok_or("no session")?.to_owned();
    let _ = s.shutdown();
    Ok((reused, sess))
}

/// An echo backend on a thread of this process.
fn echo_backend() -> Result<SocketAddr, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = match s.try_clone() {
                    Ok(r) => r,
                    Err(_) => return,
                };
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    Ok(addr)
}
