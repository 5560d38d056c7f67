//! The things under test and in front of which they sit: one PKI, the backends (nginx for
//! HTTP, iperf3 for bulk, our echo server), and the setups measured: our pair, and stunnel's
//! client in front of each gateway (ours, stunnel's server, HAProxy, nginx).

use crate::gateways;
use crate::procs::{free_ports, wait_port, Proc};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The name the gateway certificate carries and both clients verify.
pub const SERVER_NAME: &str = "gateway.bench";
/// Common name of the client certificate both clients present.
pub const CLIENT_CN: &str = "bench-client";
const READY: Duration = Duration::from_secs(15);

/// Programs used.
pub struct Bins {
    /// Our gateway.
    pub server: PathBuf,
    /// Our client agent.
    pub client: PathBuf,
    /// stunnel (Debian's stunnel4).
    pub stunnel: PathBuf,
    /// nginx (the HTTP backend, and a gateway with its stream module).
    pub nginx: PathBuf,
    /// nginx's dynamic stream module, when it is not built in (Debian: libnginx-mod-stream).
    pub nginx_stream: Option<PathBuf>,
    /// HAProxy (a gateway), when installed.
    pub haproxy: Option<PathBuf>,
    /// iperf3 (the bulk backend and load).
    pub iperf3: PathBuf,
    /// wrk (HTTP load).
    pub wrk: PathBuf,
    /// This program (its `echo` subcommand is the echo backend).
    pub me: PathBuf,
}

/// Certificate files shared by both pairs.
pub struct Pki {
    /// CA certificate (trusted by both sides).
    pub ca: PathBuf,
    /// Gateway certificate and key.
    pub server_crt: PathBuf,
    /// Gateway key.
    pub server_key: PathBuf,
    /// Client certificate.
    pub client_crt: PathBuf,
    /// Client key.
    pub client_key: PathBuf,
}

impl Pki {
    /// Issues a CA, the gateway certificate and a client certificate with `tunnel-server pki`.
    pub fn create(server_bin: &Path, dir: &Path) -> Result<Pki, String> {
        let d = dir.join("pki");
        let ds = d.to_string_lossy().to_string();
        let runs: [&[&str]; 3] = [
            &["pki", "init", "--dir", &ds, "--name", "Bench CA"],
            &["pki", "issue", "--dir", &ds, "--server", SERVER_NAME],
            &[
                "pki", "issue", "--dir", &ds, "--client", CLIENT_CN, "--ou", "bench",
            ],
        ];
        for args in runs {
            let out = Command::new(server_bin)
                .args(args)
                .output()
                .map_err(|e| format!("{}: {e}", server_bin.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "tunnel-server {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        Ok(Pki {
            ca: d.join("ca.crt"),
            server_crt: d.join(format!("{SERVER_NAME}.crt")),
            server_key: d.join(format!("{SERVER_NAME}.key")),
            client_crt: d.join(format!("{CLIENT_CN}.crt")),
            client_key: d.join(format!("{CLIENT_CN}.key")),
        })
    }
}

/// Ports of the three backends, or of the three local listeners of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// Tiny HTTP responses (nginx).
    pub http: u16,
    /// iperf3 server.
    pub bulk: u16,
    /// Echo server.
    pub echo: u16,
}

impl Ports {
    /// (name, port) of each: the backend names the gateways select by SNI.
    pub fn named(&self) -> [(&'static str, u16); 3] {
        [
            ("http", self.http),
            ("bulk", self.bulk),
            ("echo", self.echo),
        ]
    }
}

/// The backends, shared by both pairs.
pub struct Backends {
    /// Their ports.
    pub ports: Ports,
    procs: Vec<Proc>,
}

impl Backends {
    /// Starts nginx, iperf3 and the echo server on free ports and waits for them.
    pub fn start(bins: &Bins, dir: &Path) -> Result<Backends, String> {
        let p = free_ports(3)?;
        let ports = Ports {
            http: p[0],
            bulk: p[1],
            echo: p[2],
        };
        let ngx = dir.join("nginx");
        std::fs::create_dir_all(ngx.join("tmp")).map_err(|e| e.to_string())?;
        let n = ngx.display();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {n}/nginx.pid;\nerror_log {n}/error.log warn;\n\
             worker_rlimit_nofile 20000;\nevents {{ worker_connections 16384; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 10000000;\n  keepalive_timeout 60s;\n\
             client_body_temp_path {n}/tmp/body;\n  proxy_temp_path {n}/tmp/proxy;\n\
             fastcgi_temp_path {n}/tmp/fastcgi;\n  uwsgi_temp_path {n}/tmp/uwsgi;\n\
             scgi_temp_path {n}/tmp/scgi;\n\
             server {{\n    listen 127.0.0.1:{};\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
            ports.http
        );
        let conf_path = ngx.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let mut nginx_cmd = Command::new(&bins.nginx);
        nginx_cmd
            .arg("-e")
            .arg(ngx.join("error.log"))
            .arg("-p")
            .arg(&ngx)
            .arg("-c")
            .arg(&conf_path);
        let mut nginx = Proc::spawn("nginx", nginx_cmd, &dir.join("nginx.log"))?;
        let mut iperf_cmd = Command::new(&bins.iperf3);
        iperf_cmd
            .args(["-s", "-B", "127.0.0.1", "-p"])
            .arg(ports.bulk.to_string());
        let mut iperf = Proc::spawn("iperf3 server", iperf_cmd, &dir.join("iperf3.log"))?;
        let mut echo_cmd = Command::new(&bins.me);
        echo_cmd.args(["echo", "--port", &ports.echo.to_string()]);
        let mut echo = Proc::spawn("echo server", echo_cmd, &dir.join("echo.log"))?;
        wait_port(ports.http, &mut [&mut nginx], READY)?;
        wait_port(ports.bulk, &mut [&mut iperf], READY)?;
        wait_port(ports.echo, &mut [&mut echo], READY)?;
        Ok(Backends {
            ports,
            procs: vec![nginx, iperf, echo],
        })
    }

    /// Fails when a backend has died.
    pub fn check(&mut self) -> Result<(), String> {
        self.procs.iter_mut().try_for_each(|p| p.check_alive())
    }
}

/// How the pairs are configured beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Per-connection logs (ours: info, stunnel: notice) instead of warn/warning.
    pub verbose: bool,
    /// stunnel `ciphersuites` (TLS 1.3), for checking how much the cipher choice matters;
    /// stunnel's default otherwise.
    pub stunnel_ciphersuites: Option<String>,
}

/// Which client + gateway combination a setup is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Our pair: tunnel-client + tunnel-server.
    Ours,
    /// stunnel's client + tunnel-server (our gateway alone).
    OursGw,
    /// stunnel's client + stunnel's server (stunnel's pair, and its gateway alone).
    Stunnel,
    /// stunnel's client + HAProxy.
    Haproxy,
    /// stunnel's client + nginx (stream module).
    Nginx,
}

impl Kind {
    /// Every setup, in table order.
    pub const ALL: [Kind; 5] = [
        Kind::Ours,
        Kind::OursGw,
        Kind::Stunnel,
        Kind::Haproxy,
        Kind::Nginx,
    ];

    /// Short name for tables, files and `--pairs`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::OursGw => "ours-gw",
            Kind::Stunnel => "stunnel",
            Kind::Haproxy => "haproxy",
            Kind::Nginx => "nginx",
        }
    }

    /// Position in [`Kind::ALL`].
    pub fn index(self) -> usize {
        Kind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }

    /// What runs on each side, for the table.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Ours => "tunnel-client + tunnel-server",
            Kind::OursGw => "stunnel client + tunnel-server",
            Kind::Stunnel => "stunnel client + stunnel server",
            Kind::Haproxy => "stunnel client + HAProxy",
            Kind::Nginx => "stunnel client + nginx stream",
        }
    }
}

/// A running client + gateway pair.
pub struct Pair {
    /// Which one.
    pub kind: Kind,
    /// The client side (local listeners).
    pub client: Proc,
    /// The gateway side.
    pub gateway: Proc,
    /// The gateway's TLS port.
    pub gateway_port: u16,
    /// The client's local listeners, one per backend.
    pub local: Ports,
}

impl Pair {
    /// Starts a pair in `dir` (a fresh sub-directory per start) in front of `backends`.
    pub fn start(
        kind: Kind,
        bins: &Bins,
        pki: &Pki,
        backends: &Ports,
        dir: &Path,
        opts: &Options,
    ) -> Result<Pair, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let p = free_ports(4)?;
        let gateway_port = p[0];
        let local = Ports {
            http: p[1],
            bulk: p[2],
            echo: p[3],
        };
        let gw = gateway_port;
        let mut gateway = match kind {
            Kind::Ours | Kind::OursGw => gateways::ours_server(bins, pki, backends, gw, dir, opts)?,
            Kind::Stunnel => gateways::stunnel_server(bins, pki, backends, gw, dir, opts)?,
            Kind::Haproxy => gateways::haproxy(bins, pki, backends, gw, dir)?,
            Kind::Nginx => gateways::nginx(bins, pki, backends, gw, dir)?,
        };
        let mut client = match kind {
            Kind::Ours => gateways::ours_client(bins, pki, gw, &local, dir, opts)?,
            _ => gateways::stunnel_client(bins, pki, gw, &local, dir, opts)?,
        };
        wait_port(gateway_port, &mut [&mut gateway], READY)?;
        for (_, port) in local.named() {
            wait_port(port, &mut [&mut client], READY)?;
        }
        Ok(Pair {
            kind,
            client,
            gateway,
            gateway_port,
            local,
        })
    }

    /// Process ids (client, gateway).
    pub fn pids(&self) -> (u32, u32) {
        (self.client.pid(), self.gateway.pid())
    }

    /// Fails when either side has died.
    pub fn check(&mut self) -> Result<(), String> {
        self.client.check_alive()?;
        self.gateway.check_alive()
    }

    /// CPU seconds used so far by (client, gateway), child processes included (nginx's
    /// workers).
    pub fn cpu(&self) -> (f64, f64) {
        (
            crate::procs::tree_cpu_secs(self.client.pid()),
            crate::procs::tree_cpu_secs(self.gateway.pid()),
        )
    }

    /// RSS of (client, gateway) in KiB, child processes included.
    pub fn rss_kib(&self) -> Result<(u64, u64), String> {
        Ok((
            crate::procs::tree_rss_kib(self.client.pid())?,
            crate::procs::tree_rss_kib(self.gateway.pid())?,
        ))
    }
}
