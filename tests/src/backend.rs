//! Backends in the test process (plain TCP on an ephemeral port, one thread per connection):
//! echo, banner + echo, and streams of known bytes whose hashes are reported on a channel.

use crate::data::{hash_reader, send_pattern};
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a backend connection received and sent, reported when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Bytes received from the tunnel.
    pub received: u64,
    /// Their SHA-256 (hex).
    pub received_sha256: String,
    /// SHA-256 (hex) of what the backend sent.
    pub sent_sha256: String,
    /// An I/O error, if one ended the connection.
    pub error: Option<String>,
}

/// A TCP server on 127.0.0.1:<ephemeral> running `handler` on a thread per connection.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Backend {
    /// Starts a backend that runs `handler` for every connection.
    pub fn spawn<F>(handler: F) -> Backend
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = l.local_addr().expect("local_addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let (acc, st) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                acc.fetch_add(1, Ordering::SeqCst);
                let h = handler.clone();
                std::thread::spawn(move || h(s));
            }
        });
        Backend {
            addr,
            accepted,
            stop,
        }
    }

    /// Echoes every byte back; closes its write side after the client's EOF.
    pub fn echo() -> Backend {
        Backend::spawn(echo)
    }

    /// Sends `banner` as soon as a connection arrives, then echoes. A client that must not
    /// reach this backend can tell that it did by the banner alone.
    pub fn banner(banner: &'static [u8]) -> Backend {
        Backend::spawn(move |mut s| {
            if s.write_all(banner).is_ok() {
                echo(s);
            }
        })
    }

    /// Sends `len` bytes of pattern `seed` while reading everything the client sends, both at
    /// once; closes its write side when done sending. Reports each connection's [`Transfer`].
    pub fn source_sink(seed: u64, len: u64) -> (Backend, Receiver<Transfer>) {
        let (tx, rx) = channel();
        let b = Backend::spawn(move |s| {
            let mut w = s.try_clone().expect("clone");
            let writer = std::thread::spawn(move || {
                let r = send_pattern(&mut w, seed, len);
                let _ = w.shutdown(Shutdown::Write);
                r
            });
            let mut r = s;
            let (received, received_sha256, err) = hash_reader(&mut r);
            let sent = writer.join().expect("writer thread");
            let error = err
                .map(|e| e.to_string())
                .or_else(|| sent.as_ref().err().map(|e| e.to_string()));
            let _ = tx.send(Transfer {
                received,
                received_sha256,
                sent_sha256: sent.unwrap_or_default(),
                error,
            });
        });
        (b, rx)
    }

    /// Reads until the client's EOF, and only then sends `len` bytes of pattern `seed` and
    /// closes. A client gets the answer only if its half-close reached the backend and the
    /// other direction stayed open.
    pub fn respond_after_eof(seed: u64, len: u64) -> (Backend, Receiver<Transfer>) {
        let (tx, rx) = channel();
        let b = Backend::spawn(move |mut s| {
            let (received, received_sha256, err) = hash_reader(&mut s);
            let (sent_sha256, error) = match err {
                Some(e) => (String::new(), Some(e.to_string())),
                None => match send_pattern(&mut s, seed, len) {
                    Ok(h) => (h, None),
                    Err(e) => (String::new(), Some(e.to_string())),
                },
            };
            let _ = s.shutdown(Shutdown::Write);
            let _ = tx.send(Transfer {
                received,
                received_sha256,
                sent_sha256,
                error,
            });
        });
        (b, rx)
    }

    /// How many connections reached this backend.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn echo(s: TcpStream) {
    let Ok(mut r) = s.try_clone() else { return };
    let mut w = s;
    let _ = std::io::copy(&mut r, &mut w);
    let _ = w.shutdown(Shutdown::Write);
}

/// An address on 127.0.0.1 where nothing listens, reserved for as long as the value lives: a
/// TCP socket bound there but not listening, so connections are refused (RST) and no other
/// program can take the port meanwhile (unlike [`free_port`]). For "backend down", "gateway
/// down" and "`listen` must be ignored".
pub struct ClosedPort {
    _socket: std::os::fd::OwnedFd,
    /// The reserved address.
    pub addr: SocketAddr,
}

/// A fresh [`ClosedPort`].
pub fn closed_port() -> ClosedPort {
    use nix::sys::socket::{
        bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket(2)");
    let any = SockaddrIn::from(std::net::SocketAddrV4::new([127, 0, 0, 1].into(), 0));
    bind(fd.as_raw_fd(), &any).expect("bind(2)");
    let bound: SockaddrIn = getsockname(fd.as_raw_fd()).expect("getsockname(2)");
    ClosedPort {
        _socket: fd,
        addr: SocketAddr::from(std::net::SocketAddrV4::from(bound)),
    }
}

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0, then released): racy, for
/// programs that bind the port themselves and cannot report it or be handed a listener:
/// stunnel, `systemd-socket-activate`, and addresses a gateway adds on reload. Everything else
/// binds port 0 ([`Backend`], the gateway's and agent's `listen`) or uses [`closed_port`].
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("local_addr").port()
}

/// Polls until something accepts TCP connections on `addr`; panics after `timeout`.
pub fn wait_accepting(addr: SocketAddr, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not accept connections on {addr} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A plain TCP connection with read/write timeouts, so a test can never hang on it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(crate::IO_TIMEOUT))
        .expect("timeout");
    s.set_write_timeout(Some(crate::IO_TIMEOUT))
        .expect("timeout");
    s
}

/// Writes `msg`, half-closes, and reads until EOF or an error; returns what arrived and the
/// error, if any.
pub fn round_trip(s: &mut TcpStream, msg: &[u8]) -> (Vec<u8>, Option<std::io::Error>) {
    let _ = s.write_all(msg);
    let _ = s.shutdown(Shutdown::Write);
    crate::data::read_all(s)
}
