//! Load we generate ourselves: the echo backend, many concurrent echo-checked connections
//! (idle memory and scale), and a loop of full mTLS handshakes against a gateway.

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode, SslVersion};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Echo server: every byte read is written back; EOF is answered with EOF.
pub async fn echo_server(port: u16) -> std::io::Result<()> {
    let l = TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (mut s, _) = match l.accept().await {
            Ok(x) => x,
            Err(_) => {
                // EMFILE and the like: wait rather than spin.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let (mut r, mut w) = s.split();
            if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                let _ = w.shutdown().await;
            }
        });
    }
}

/// Deterministic test bytes for connection `id`, round `round`.
fn pattern(id: u64, round: u64, len: usize) -> Vec<u8> {
    let mut x = (id << 20) ^ (round << 56) ^ 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn echo_round(s: &mut TcpStream, id: u64, round: u64, len: usize) -> Result<(), String> {
    let out = pattern(id, round, len);
    let (mut r, mut w) = s.split();
    let write = async { w.write_all(&out).await.map_err(|e| format!("write: {e}")) };
    let read = async {
        let mut back = vec![0u8; len];
        r.read_exact(&mut back)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if back != out {
            return Err("echoed bytes differ".to_string());
        }
        Ok(())
    };
    let (a, b) = tokio::join!(write, read);
    a.and(b)
}

/// Result of holding many connections.
#[derive(Debug, Default)]
pub struct Held {
    /// Connections open and echo-checked.
    pub streams: Vec<(u64, TcpStream)>,
    /// Connections that failed (connect, echo mismatch, timeout...).
    pub failed: usize,
    /// The first few failure reasons.
    pub errors: Vec<String>,
    /// Time to open and check all of them.
    pub secs: f64,
}

/// Opens `n` connections to `addr`, at most `parallel` being set up at a time, each checked
/// with a 64-byte echo; keeps the good ones open.
pub async fn open_many(addr: SocketAddr, n: usize, parallel: usize, timeout: Duration) -> Held {
    let start = Instant::now();
    let sem = Arc::new(Semaphore::new(parallel));
    let mut set = tokio::task::JoinSet::new();
    for id in 0..n as u64 {
        let permit = sem.clone().acquire_owned().await;
        set.spawn(async move {
            let _permit = permit;
            let fut = async {
                let mut s = TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                let _ = s.set_nodelay(true);
                echo_round(&mut s, id, 0, 64).await?;
                Ok::<_, String>(s)
            };
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => (id, r),
                Err(_) => (id, Err("timeout".to_string())),
            }
        });
    }
    let mut held = Held::default();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((id, Ok(s))) => held.streams.push((id, s)),
            Ok((_, Err(e))) => held.fail(e),
            Err(e) => held.fail(format!("task: {e}")),
        }
    }
    held.secs = start.elapsed().as_secs_f64();
    held.streams.sort_by_key(|(id, _)| *id);
    held
}

impl Held {
    fn fail(&mut self, e: String) {
        self.failed += 1;
        if self.errors.len() < 5 {
            self.errors.push(e);
        }
    }
}

/// Outcome of the final check of held connections.
#[derive(Debug, Default)]
pub struct Closed {
    /// Connections whose `len` bytes came back intact and whose half-close came back as EOF.
    pub ok: usize,
    /// The others.
    pub failed: usize,
    /// The first few failure reasons.
    pub errors: Vec<String>,
    /// Bytes checked (both ways).
    pub bytes: u64,
    /// Time for the whole round.
    pub secs: f64,
}

/// On every held connection at once: send `len` more bytes and check the echo, then
/// half-close and expect EOF back (the half-close travelled through both agents).
pub async fn check_and_close(
    streams: Vec<(u64, TcpStream)>,
    len: usize,
    timeout: Duration,
) -> Closed {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (id, mut s) in streams {
        set.spawn(async move {
            let fut = async {
                echo_round(&mut s, id, 1, len).await?;
                s.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
                let mut rest = Vec::new();
                s.read_to_end(&mut rest)
                    .await
                    .map_err(|e| format!("read to EOF: {e}"))?;
                if !rest.is_empty() {
                    return Err(format!("{} unexpected bytes before EOF", rest.len()));
                }
                Ok(())
            };
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err("timeout".to_string()),
            }
        });
    }
    let mut c = Closed::default();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(())) => {
                c.ok += 1;
                c.bytes += 2 * len as u64;
            }
            Ok(Err(e)) => c.fail(e),
            Err(e) => c.fail(format!("task: {e}")),
        }
    }
    c.secs = start.elapsed().as_secs_f64();
    c
}

impl Closed {
    fn fail(&mut self, e: String) {
        self.failed += 1;
        if self.errors.len() < 5 {
            self.errors.push(e);
        }
    }
}

/// TLS settings of a client like ours: client certificate, gateway verified against the CA
/// and `server_name`, TLS 1.3, no session reuse (every handshake is a full one), X25519 key
/// exchange: the group the crypto floor counts, and the one stunnel's client (system OpenSSL)
/// negotiates with every gateway. A build against OpenSSL 3.5+ would otherwise offer the
/// ML-KEM hybrid first and its gateway would do more work than the others.
pub fn connector(
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<SslConnector, String> {
    let e = |e: openssl::error::ErrorStack| e.to_string();
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(e)?;
    b.set_min_proto_version(Some(SslVersion::TLS1_3))
        .map_err(e)?;
    b.set_groups_list("X25519").map_err(e)?;
    b.set_ca_file(ca).map_err(e)?;
    b.set_certificate_chain_file(cert).map_err(e)?;
    b.set_private_key_file(key, SslFiletype::PEM).map_err(e)?;
    b.set_verify(SslVerifyMode::PEER);
    Ok(b.build())
}

/// Result of the handshake loop.
#[derive(Debug, Default)]
pub struct Handshakes {
    /// Full handshakes that ended in a working tunnel (1-byte echo through the backend).
    pub ok: u64,
    /// Failures.
    pub failed: u64,
    /// Handshakes that resumed a session (should be 0).
    pub resumed: u64,
    /// First failure reason.
    pub error: Option<String>,
    /// Protocol and cipher suite negotiated.
    pub cipher: String,
    /// Measured time.
    pub secs: f64,
}

/// For `dur`, `parallel` loops each connect to the gateway at `addr`, do a full mTLS
/// handshake sending `sni`, prove the tunnel with a 1-byte echo, and close.
pub async fn handshake_loop(
    tls: Arc<SslConnector>,
    addr: SocketAddr,
    sni: &str,
    server_name: &str,
    parallel: usize,
    dur: Duration,
) -> Handshakes {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let first = Arc::new(std::sync::Mutex::new((None::<String>, String::new())));
    let start = Instant::now();
    let deadline = start + dur;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..parallel {
        let (tls, ok, failed, resumed, first) = (
            tls.clone(),
            ok.clone(),
            failed.clone(),
            resumed.clone(),
            first.clone(),
        );
        let sni = sni.to_string();
        let server_name = server_name.to_string();
        set.spawn(async move {
            while Instant::now() < deadline {
                match one_handshake(&tls, addr, &sni, &server_name).await {
                    Ok((reused, cipher)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if reused {
                            resumed.fetch_add(1, Ordering::Relaxed);
                        }
                        if let Ok(mut f) = first.lock() {
                            if f.1.is_empty() {
                                f.1 = cipher;
                            }
                        }
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut f) = first.lock() {
                            f.0.get_or_insert(e);
                        }
                    }
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    let secs = start.elapsed().as_secs_f64();
    let (error, cipher) = first.lock().map(|f| f.clone()).unwrap_or_default();
    Handshakes {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        resumed: resumed.load(Ordering::Relaxed),
        error,
        cipher,
        secs,
    }
}

async fn one_handshake(
    tls: &SslConnector,
    addr: SocketAddr,
    sni: &str,
    server_name: &str,
) -> Result<(bool, String), String> {
    let fut = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let mut cfg = tls.configure().map_err(|e| e.to_string())?;
        cfg.set_use_server_name_indication(false);
        cfg.set_verify_hostname(false);
        let mut ssl = cfg.into_ssl(server_name).map_err(|e| e.to_string())?;
        ssl.set_hostname(sni).map_err(|e| e.to_string())?;
        ssl.param_mut()
            .set_host(server_name)
            .map_err(|e| e.to_string())?;
        let mut s = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
        Pin::new(&mut s)
            .connect()
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        s.write_all(b"x").await.map_err(|e| format!("write: {e}"))?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)
            .await
            .map_err(|e| format!("read (refused by the gateway?): {e}"))?;
        let reused = s.ssl().session_reused();
        let cipher = format!(
            "{} {}",
            s.ssl().version_str(),
            s.ssl().current_cipher().map(|c| c.name()).unwrap_or("?")
        );
        let _ = s.shutdown().await;
        Ok((reused, cipher))
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| "timeout".to_string())?
}
