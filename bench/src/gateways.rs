//! Configuration and start of each side under test: our gateway and client agent, stunnel's
//! server and client, and HAProxy and nginx (stream) as gateways. Every gateway is configured
//! the same way: TLS 1.3 only, the bench gateway certificate, a client certificate required and
//! verified against the bench CA, the backend chosen by SNI (`http`, `bulk`, `echo`); their
//! own defaults otherwise.

use crate::pairs::{Bins, Options, Pki, Ports, CLIENT_CN, SERVER_NAME};
use crate::procs::Proc;
use std::path::Path;
use std::process::Command;

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn q(p: &Path) -> String {
    // TOML basic string: escape backslashes and quotes.
    p.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

fn level(opts: &Options, ours: bool) -> &'static str {
    match (ours, opts.verbose) {
        (true, true) => "info",
        (true, false) => "warn",
        (false, true) => "notice",
        (false, false) => "warning",
    }
}

/// Our gateway, one backend per name, each allowing the bench client.
pub fn ours_server(
    bins: &Bins,
    pki: &Pki,
    backends: &Ports,
    gw: u16,
    dir: &Path,
    opts: &Options,
) -> Result<Proc, String> {
    let mut server = format!(
        "listen = \"127.0.0.1:{gw}\"\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\
         log_level = \"{}\"\n",
        q(&pki.server_crt),
        q(&pki.server_key),
        q(&pki.ca),
        level(opts, true)
    );
    for (name, port) in backends.named() {
        server += &format!(
            "\n[[backend]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\n\
             allow = [\"cn={CLIENT_CN}\"]\n"
        );
    }
    let conf = dir.join("server.toml");
    write(&conf, &server)?;
    let mut cmd = Command::new(&bins.server);
    cmd.arg("--config").arg(&conf).env_remove("RUST_LOG");
    Proc::spawn("tunnel-server", cmd, &dir.join("server.log"))
}

/// Our client agent, one local listener per backend.
pub fn ours_client(
    bins: &Bins,
    pki: &Pki,
    gw: u16,
    local: &Ports,
    dir: &Path,
    opts: &Options,
) -> Result<Proc, String> {
    let mut client = format!(
        "server = \"127.0.0.1:{gw}\"\nserver_name = \"{SERVER_NAME}\"\ncert = \"{}\"\n\
         key = \"{}\"\nca = \"{}\"\nlog_level = \"{}\"\n",
        q(&pki.client_crt),
        q(&pki.client_key),
        q(&pki.ca),
        level(opts, true)
    );
    for (name, port) in local.named() {
        client += &format!("\n[[tunnel]]\nlisten = \"127.0.0.1:{port}\"\nbackend = \"{name}\"\n");
    }
    let conf = dir.join("client.toml");
    write(&conf, &client)?;
    let mut cmd = Command::new(&bins.client);
    cmd.arg("--config").arg(&conf).env_remove("RUST_LOG");
    Proc::spawn("tunnel-client", cmd, &dir.join("client.log"))
}

fn suites(opts: &Options) -> String {
    match &opts.stunnel_ciphersuites {
        Some(c) => format!("ciphersuites = {c}\n"),
        None => String::new(),
    }
}

/// stunnel's server, one service per backend selected by SNI.
pub fn stunnel_server(
    bins: &Bins,
    pki: &Pki,
    backends: &Ports,
    gw: u16,
    dir: &Path,
    opts: &Options,
) -> Result<Proc, String> {
    // Service-level options in the global section are defaults for every service.
    let mut server = format!(
        "foreground = yes\npid =\ndebug = {}\n\
         cert = {}\nkey = {}\nCAfile = {}\nverifyChain = yes\nrequireCert = yes\n\
         sslVersion = TLSv1.3\n{}\n[gateway]\naccept = 127.0.0.1:{gw}\nconnect = 127.0.0.1:{}\n",
        level(opts, false),
        pki.server_crt.display(),
        pki.server_key.display(),
        pki.ca.display(),
        suites(opts),
        backends.http
    );
    for (name, port) in backends.named() {
        server += &format!("\n[{name}]\nsni = gateway:{name}\nconnect = 127.0.0.1:{port}\n");
    }
    let conf = dir.join("stunnel-server.conf");
    write(&conf, &server)?;
    let mut cmd = Command::new(&bins.stunnel);
    cmd.arg(&conf);
    Proc::spawn("stunnel server", cmd, &dir.join("stunnel-server.log"))
}

/// stunnel's client, one service per backend sending its name as SNI; the client in front
/// of every gateway but ours in our pair.
pub fn stunnel_client(
    bins: &Bins,
    pki: &Pki,
    gw: u16,
    local: &Ports,
    dir: &Path,
    opts: &Options,
) -> Result<Proc, String> {
    let mut client = format!(
        "foreground = yes\npid =\ndebug = {}\nclient = yes\n\
         cert = {}\nkey = {}\nCAfile = {}\nverifyChain = yes\ncheckHost = {SERVER_NAME}\n\
         sslVersion = TLSv1.3\n{}",
        level(opts, false),
        pki.client_crt.display(),
        pki.client_key.display(),
        pki.ca.display(),
        suites(opts)
    );
    for (name, port) in local.named() {
        client += &format!(
            "\n[{name}]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{gw}\nsni = {name}\n"
        );
    }
    let conf = dir.join("stunnel-client.conf");
    write(&conf, &client)?;
    let mut cmd = Command::new(&bins.stunnel);
    cmd.arg(&conf);
    Proc::spawn("stunnel client", cmd, &dir.join("stunnel-client.log"))
}

/// The HAProxy configuration: one TLS-terminating TCP frontend, a backend per SNI name,
/// connections with another name refused; timeouts are set because HAProxy has none by
/// default (1 h for client and server, so that idle tunnels stay open as with the others).
pub fn haproxy_conf(pki: &Pki, pem: &Path, backends: &Ports, gw: u16) -> String {
    let mut c = format!(
        "global\n    log stderr format raw local0 warning\n\n\
         defaults\n    mode tcp\n    log global\n    timeout connect 5s\n    \
         timeout client 1h\n    timeout server 1h\n\n\
         frontend gateway\n    \
         bind 127.0.0.1:{gw} ssl crt {} ca-file {} verify required ssl-min-ver TLSv1.3\n",
        pem.display(),
        pki.ca.display()
    );
    for (name, _) in backends.named() {
        c += &format!("    use_backend {name} if {{ ssl_fc_sni -m str {name} }}\n");
    }
    for (name, port) in backends.named() {
        c += &format!("\nbackend {name}\n    server {name} 127.0.0.1:{port}\n");
    }
    c
}

/// HAProxy as the gateway (`-db`: foreground, one process, threads by CPU count).
pub fn haproxy(
    bins: &Bins,
    pki: &Pki,
    backends: &Ports,
    gw: u16,
    dir: &Path,
) -> Result<Proc, String> {
    let haproxy = bins
        .haproxy
        .as_ref()
        .ok_or("haproxy not found (bench/run installs the Debian package haproxy)")?;
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let pem = dir.join("gateway.pem");
    write(
        &pem,
        &format!("{}{}", read(&pki.server_crt)?, read(&pki.server_key)?),
    )?;
    let conf = dir.join("haproxy.cfg");
    write(&conf, &haproxy_conf(pki, &pem, backends, gw))?;
    let mut cmd = Command::new(haproxy);
    cmd.arg("-db").arg("-f").arg(&conf);
    Proc::spawn("haproxy", cmd, &dir.join("haproxy.log"))
}

/// The nginx configuration: the stream module terminating TLS, the upstream chosen by SNI
/// through a map (no upstream for another name: refused). `worker_processes auto`; the
/// connection limits are raised from Debian's 768 for the idle-memory and scale tests.
pub fn nginx_conf(
    pki: &Pki,
    module: Option<&Path>,
    backends: &Ports,
    gw: u16,
    dir: &Path,
) -> String {
    let d = dir.display();
    let load = module
        .map(|m| format!("load_module {};\n", m.display()))
        .unwrap_or_default();
    let mut c = format!(
        "{load}daemon off;\nworker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         worker_rlimit_nofile 40000;\nevents {{ worker_connections 20000; }}\n\
         stream {{\n  map $ssl_server_name $backend {{\n"
    );
    for (name, _) in backends.named() {
        c += &format!("    {name} {name};\n");
    }
    c += "  }\n";
    for (name, port) in backends.named() {
        c += &format!("  upstream {name} {{ server 127.0.0.1:{port}; }}\n");
    }
    c += &format!(
        "  server {{\n    listen 127.0.0.1:{gw} ssl;\n    ssl_protocols TLSv1.3;\n    \
         ssl_certificate {};\n    ssl_certificate_key {};\n    \
         ssl_client_certificate {};\n    ssl_verify_client on;\n    proxy_pass $backend;\n  }}\n}}\n",
        pki.server_crt.display(),
        pki.server_key.display(),
        pki.ca.display()
    );
    c
}

/// nginx (stream) as the gateway: a master and `auto` workers.
pub fn nginx(
    bins: &Bins,
    pki: &Pki,
    backends: &Ports,
    gw: u16,
    dir: &Path,
) -> Result<Proc, String> {
    let conf = dir.join("nginx-gateway.conf");
    let module = bins.nginx_stream.as_deref();
    write(&conf, &nginx_conf(pki, module, backends, gw, dir))?;
    let mut cmd = Command::new(&bins.nginx);
    cmd.arg("-e")
        .arg(dir.join("error.log"))
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf);
    Proc::spawn("nginx gateway", cmd, &dir.join("nginx-gateway.log"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn pki() -> Pki {
        let p = |n: &str| PathBuf::from("pki").join(n);
        Pki {
            ca: p("ca.crt"),
            server_crt: p("s.crt"),
            server_key: p("s.key"),
            client_crt: p("c.crt"),
            client_key: p("c.key"),
        }
    }

    const BACKENDS: Ports = Ports {
        http: 1001,
        bulk: 1002,
        echo: 1003,
    };

    #[test]
    fn haproxy_requires_and_verifies_client_certificates_and_routes_by_sni() {
        let c = haproxy_conf(&pki(), Path::new("gw.pem"), &BACKENDS, 2000);
        assert!(c.contains(
            "bind 127.0.0.1:2000 ssl crt gw.pem ca-file pki/ca.crt verify required ssl-min-ver TLSv1.3"
        ));
        assert!(c.contains("use_backend echo if { ssl_fc_sni -m str echo }"));
        assert!(c.contains("backend bulk\n    server bulk 127.0.0.1:1002\n"));
        assert!(
            !c.contains("default_backend"),
            "unknown SNI must be refused"
        );
    }

    #[test]
    fn nginx_requires_and_verifies_client_certificates_and_routes_by_sni() {
        let m = PathBuf::from("mods/ngx_stream_module.so");
        let c = nginx_conf(&pki(), Some(&m), &BACKENDS, 2000, Path::new("d"));
        assert!(c.starts_with("load_module mods/ngx_stream_module.so;\n"));
        assert!(c.contains("worker_processes auto;"));
        assert!(c.contains("ssl_verify_client on;"));
        assert!(c.contains("ssl_client_certificate pki/ca.crt;"));
        assert!(c.contains("ssl_protocols TLSv1.3;"));
        assert!(c.contains("    http http;\n"));
        assert!(c.contains("upstream echo { server 127.0.0.1:1003; }"));
        assert!(!c.contains("default"), "unknown SNI must be refused");
        let without = nginx_conf(&pki(), None, &BACKENDS, 2000, Path::new("d"));
        assert!(!without.contains("load_module"));
    }
}
