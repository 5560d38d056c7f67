//! `tunnel-server demo`: a throwaway CA, a gateway, a client agent and an echo backend on
//! loopback, all with real sockets and real TLS through the production code paths. Shows one
//! allowed and one denied connection, then serves until Ctrl-C.

use crate::agent::{self, ClientAgent};
use crate::config::{ClientConfig, ServerConfig};
use crate::gateway::{self, Gateway};
use crate::pki::{self, CertSpec};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type DemoResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Runs the demo. With `exit_after_checks`, returns after the two demonstration connections
/// instead of serving until `shutdown`. Returns whether both behaved as expected.
pub async fn run<F: std::future::Future<Output = ()>>(
    exit_after_checks: bool,
    shutdown: F,
) -> DemoResult<bool> {
    let dir = tempfile::Builder::new().prefix("tunnel-demo-").tempdir()?;
    let d = dir.path();
    write_pki(d)?;
    let echo_addr = spawn_echo().await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.changed().await;
    };
    let (gateway, listeners, gw_addr) = start_gateway(d, echo_addr).await?;
    let gw_task = tokio::spawn(gateway.serve(listeners, stopped(stop_rx.clone())));
    let (agent, clisteners, addrs) = start_agent(d, gw_addr).await?;
    let cl_task = tokio::spawn(agent.serve(clisteners, stopped(stop_rx)));

    println!("\n== mTLS tunnel demo (files in {}) ==", d.display());
    println!("gateway      {gw_addr}   (TLS 1.3, client certificate required)");
    println!("echo backend {echo_addr}");
    println!(
        "tunnel       {} -> backend \"echo\"        (allowed: cn=demo-client)",
        addrs[0]
    );
    println!(
        "tunnel       {} -> backend \"admin-only\"  (allowed: cn=admin only)\n",
        addrs[1]
    );
    let ok = demonstrate(&addrs).await;
    if !exit_after_checks {
        print_try_it(d, gw_addr, &addrs);
        shutdown.await;
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = gw_task.await;
        let _ = cl_task.await;
    })
    .await;
    Ok(ok)
}

/// An echo server on loopback; returns its address.
async fn spawn_echo() -> DemoResult<SocketAddr> {
    let echo = TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = echo.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    Ok(echo_addr)
}

/// The gateway: "echo" is open to the demo client; "admin-only" only to cn=admin.
async fn start_gateway(
    d: &Path,
    echo_addr: SocketAddr,
) -> DemoResult<(Arc<Gateway>, Vec<TcpListener>, SocketAddr)> {
    let server_toml = format!(
        r#"listen = "127.0.0.1:0"
cert = "server.crt"
key = "server.key"
client_ca = "ca.crt"

[[backend]]
name = "echo"
address = "{echo_addr}"
allow = ["cn=demo-client"]

[[backend]]
name = "admin-only"
address = "{echo_addr}"
allow = ["cn=admin"]
"#
    );
    let server_path = d.join("server.toml");
    std::fs::write(&server_path, server_toml)?;
    let scfg = ServerConfig::load(&server_path)?;
    let listeners = gateway::bind_all(&scfg).await?;
    let gw_addr = listeners[0].local_addr()?;
    let gateway = Gateway::new(scfg, Arc::new(crate::metrics::Metrics::new()))?;
    Ok((gateway, listeners, gw_addr))
}

/// The client agent with one tunnel per backend.
async fn start_agent(
    d: &Path,
    gw_addr: SocketAddr,
) -> DemoResult<(Arc<ClientAgent>, Vec<TcpListener>, Vec<SocketAddr>)> {
    let client_toml = format!(
        r#"server = "{gw_addr}"
server_name = "localhost"
cert = "demo-client.crt"
key = "demo-client.key"
ca = "ca.crt"

[[tunnel]]
listen = "127.0.0.1:0"
backend = "echo"

[[tunnel]]
listen = "127.0.0.1:0"
backend = "admin-only"
"#
    );
    let client_path = d.join("client.toml");
    std::fs::write(&client_path, client_toml)?;
    let ccfg = ClientConfig::load(&client_path)?;
    let clisteners = agent::bind_all(&ccfg).await?;
    let addrs = agent::local_addrs(&clisteners);
    let agent = ClientAgent::new(ccfg, Arc::new(crate::metrics::Metrics::new()))?;
    Ok((agent, clisteners, addrs))
}

/// One allowed and one denied connection; returns whether both behaved.
async fn demonstrate(addrs: &[SocketAddr]) -> bool {
    let msg = b"hello through the tunnel\n";
    let allowed = exchange(addrs[0], msg).await;
    let ok1 = allowed.as_deref() == Some(&msg[..]);
    println!(
        "[{}] allowed connection via {}: sent {:?}, got back {:?}",
        if ok1 { "ok" } else { "FAIL" },
        addrs[0],
        String::from_utf8_lossy(msg),
        allowed.as_deref().map(String::from_utf8_lossy)
    );
    let denied = exchange(addrs[1], msg).await;
    let ok2 = denied.as_deref().map(|b| b.is_empty()).unwrap_or(true);
    println!(
        "[{}] denied connection via {}: the gateway refused demo-client for \"admin-only\" (got {} bytes back; see the audit line above)",
        if ok2 { "ok" } else { "FAIL" },
        addrs[1],
        denied.map(|b| b.len()).unwrap_or(0)
    );
    ok1 && ok2
}

fn print_try_it(d: &Path, gw_addr: SocketAddr, addrs: &[SocketAddr]) {
    println!(
        "\nTry it by hand:  nc {} {}   (type a line, it comes back)",
        addrs[0].ip(),
        addrs[0].port()
    );
    println!(
        "                 nc {} {}   (closed: not allowed)",
        addrs[1].ip(),
        addrs[1].port()
    );
    println!(
        "                 openssl s_client -connect {gw_addr} -servername echo -cert {0}/demo-client.crt -key {0}/demo-client.key -CAfile {0}/ca.crt -quiet",
        d.display()
    );
    println!("Press Ctrl-C to stop.");
}

/// Sends `msg`, half-closes, and reads until EOF (5 s at most).
async fn exchange(addr: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let _ = s.write_all(msg).await;
        let _ = s.shutdown().await;
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got).await;
        Some(got)
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()
        .flatten()
}

fn write_pki(d: &Path) -> DemoResult<()> {
    let ca = pki::new_ca("Tunnel Demo CA", 2)?;
    pki::write_issued(&ca, &d.join("ca.crt"), &d.join("ca.key"))?;
    let mut s = CertSpec::server("localhost");
    s.ip.push("127.0.0.1".parse()?);
    let server = pki::new_leaf(&ca, &s)?;
    pki::write_issued(&server, &d.join("server.crt"), &d.join("server.key"))?;
    for cn in ["demo-client", "admin"] {
        let c = pki::new_leaf(&ca, &CertSpec::client(cn))?;
        pki::write_issued(
            &c,
            &d.join(format!("{cn}.crt")),
            &d.join(format!("{cn}.key")),
        )?;
    }
    Ok(())
}
