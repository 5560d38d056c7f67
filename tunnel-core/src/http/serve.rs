//! The one HTTP/1.1 server of the crate, on hyper: the signer's HTTPS API, the loopback
//! redirect listener of `tunnel-client login`, and test fixtures. hyper parses the request
//! (it refuses conflicting `Content-Length` headers, signed lengths and heads over
//! [`Limits::max_head`]); this module owns what hyper leaves to its user: TLS through the
//! openssl crate, per-phase deadlines, the body limit, and which connections may stay open.
//!
//! Idle sockets must not starve real clients: at most [`Limits::max_open`] connections are
//! open at once and at most [`Limits::max_per_source`] from one address. When a new
//! connection would pass either cap, the oldest connection (of that address, or overall)
//! that has not yet sent a complete request is closed to make room; a request in progress
//! is never cut for a newcomer. If every open connection is serving a request, the newcomer
//! is closed instead. The accept loop never waits: a full server still drains the backlog.

use super::registry::{Registry, Slot};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use openssl::ssl::{Ssl, SslAcceptor};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

/// Where a server's TLS identity comes from for each new connection: the one in force,
/// so a reload can replace the certificate without closing the listener.
pub(crate) type TlsSource = Arc<dyn Fn() -> Arc<SslAcceptor> + Send + Sync>;

/// A response: status, headers and a body held in memory.
pub(crate) type Reply = hyper::Response<Full<Bytes>>;

/// What a server accepts, defined once per use.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub max_open: usize,
    /// Connections open at once from one IP address.
    pub max_per_source: usize,
    /// Time for the TLS handshake.
    pub handshake: Duration,
    /// Time for the request head once the connection is up.
    pub head: Duration,
    /// Time for the whole connection, body and response included.
    pub total: Duration,
    /// Largest request head (hyper's read buffer; at least 8 KiB).
    pub max_head: usize,
    /// Largest request body.
    pub max_body: usize,
}

/// A request as the handler sees it: the head, and the body read within the limits.
#[derive(Debug)]
pub(crate) struct Request {
    /// Method, URI, headers.
    pub head: hyper::http::request::Parts,
    /// The body, or why it could not be read.
    pub body: Result<Bytes, BodyError>,
    /// The connection's peer.
    pub peer: SocketAddr,
    /// The client certificate the peer proved it holds (TLS servers that ask for one), and
    /// whether its chain verified against the server's trust store. The handler decides what
    /// an unverified or absent one means.
    pub peer_cert: Option<PeerCert>,
}

/// A client certificate presented in the handshake.
#[derive(Debug, Clone)]
pub(crate) struct PeerCert {
    /// The leaf certificate.
    pub cert: openssl::x509::X509,
    /// OpenSSL's verdict on its chain (`X509VerifyResult::OK` when it verified).
    pub verify: openssl::x509::X509VerifyResult,
}

impl Request {
    /// The path without the query.
    pub(crate) fn path(&self) -> &str {
        self.head.uri.path()
    }

    /// The query string (empty when none).
    pub(crate) fn query(&self) -> &str {
        self.head.uri.query().unwrap_or("")
    }

    /// A request header as text (absent when missing or not visible ASCII).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.head.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why a request body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BodyError {
    /// Over [`Limits::max_body`].
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The client stopped sending or the connection failed.
    #[error("the request body could not be read")]
    Unreadable,
}

/// Answers requests. Implemented for `Fn(Request) -> impl Future<Output = Reply>` closures.
pub(crate) trait Handler: Send + Sync + 'static {
    /// The response to `req`.
    fn call(&self, req: Request) -> Pin<Box<dyn Future<Output = Reply> + Send + '_>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    fn call(&self, req: Request) -> Pin<Box<dyn Future<Output = Reply> + Send + '_>> {
        Box::pin(self(req))
    }
}

/// A response with `body`, `content_type` and `Cache-Control: no-store` (nothing we serve
/// is cacheable: certificates, tokens' outcomes, sign-in pages).
pub(crate) fn reply(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut r = hyper::Response::new(Full::new(body.into()));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        h.insert(hyper::header::CONTENT_TYPE, v);
    }
    h.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    r
}

/// Decides from the peer's address whether a connection is served at all.
type Admit = Box<dyn Fn(SocketAddr) -> bool + Send + Sync>;

/// A server: where it listens, its TLS identity (plain HTTP when `None`), its limits.
pub(crate) struct Server {
    listener: TcpListener,
    tls: Option<TlsSource>,
    limits: Limits,
    admit: Option<Admit>,
}

impl Server {
    /// A server on an already-bound `listener`.
    pub(crate) fn new(listener: TcpListener, tls: Option<TlsSource>, limits: Limits) -> Server {
        Server {
            listener,
            tls,
            limits,
            admit: None,
        }
    }

    /// Closes at once the connections from peers `admit` refuses (an address allow-list).
    pub(crate) fn admit(
        mut self,
        admit: impl Fn(SocketAddr) -> bool + Send + Sync + 'static,
    ) -> Server {
        self.admit = Some(Box::new(admit));
        self
    }

    /// Serves `handler` until `stop` is cancelled; then closes the connections that have
    /// not sent a request and waits up to `grace` for the requests in progress.
    pub(crate) async fn run(
        mut self,
        handler: Arc<dyn Handler>,
        stop: CancellationToken,
        grace: Duration,
    ) {
        let registry = Registry::new(self.limits.max_open, self.limits.max_per_source);
        let tracker = TaskTracker::new();
        let conn = Arc::new(Conn {
            tls: self.tls,
            limits: self.limits,
            handler,
        });
        let admit = self.admit.take();
        crate::service::listeners::accept_until(&self.listener, &stop, |sock, peer| {
            if admit.as_ref().is_some_and(|a| !a(peer)) {
                return;
            }
            match registry.admit(peer.ip()) {
                Some(slot) => drop(tracker.spawn(conn.clone().serve(sock, peer, slot))),
                None => {
                    debug!(%peer, "HTTP connection closed: every open connection is mid-request")
                }
            }
        })
        .await;
        drop(self.listener);
        registry.close_idle();
        tracker.close();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            debug!("HTTP requests still running after the grace period; closing them");
        }
    }
}

/// What every connection of one server shares.
struct Conn {
    tls: Option<TlsSource>,
    limits: Limits,
    handler: Arc<dyn Handler>,
}

impl Conn {
    async fn serve(self: Arc<Self>, sock: TcpStream, peer: SocketAddr, slot: Slot) {
        let cut = slot.cut.clone();
        let work = async {
            match &self.tls {
                None => self.http(sock, peer, None, &slot).await,
                Some(tls) => match self.handshake(&tls(), sock).await {
                    Ok(tls) => {
                        let cert = tls.ssl().peer_certificate().map(|cert| PeerCert {
                            cert,
                            verify: tls.ssl().verify_result(),
                        });
                        self.http(tls, peer, cert, &slot).await
                    }
                    Err(why) => debug!(%peer, "HTTPS handshake failed: {why}"),
                },
            }
        };
        tokio::select! {
            _ = cut.cancelled() => debug!(%peer, "HTTP connection closed to make room"),
            r = tokio::time::timeout(self.limits.total, work) => if r.is_err() {
                debug!(%peer, "HTTP connection timed out");
            },
        }
    }

    async fn handshake(
        &self,
        acc: &SslAcceptor,
        sock: TcpStream,
    ) -> Result<tokio_openssl::SslStream<TcpStream>, String> {
        let ssl = Ssl::new(acc.context()).map_err(|e| e.to_string())?;
        let mut tls = tokio_openssl::SslStream::new(ssl, sock).map_err(|e| e.to_string())?;
        match tokio::time::timeout(self.limits.handshake, Pin::new(&mut tls).accept()).await {
            Ok(Ok(())) => Ok(tls),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    async fn http<S>(&self, io: S, peer: SocketAddr, peer_cert: Option<PeerCert>, slot: &Slot)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limits = self.limits;
        let service = hyper::service::service_fn(|req: hyper::Request<Incoming>| {
            let peer_cert = peer_cert.clone();
            async move {
                let (head, body) = req.into_parts();
                let body = read_body(body, limits.max_body).await;
                // A complete request: from now on this connection is never closed for a newcomer.
                slot.requested();
                let reply = self
                    .handler
                    .call(Request {
                        head,
                        body,
                        peer,
                        peer_cert,
                    })
                    .await;
                Ok::<_, std::convert::Infallible>(reply)
            }
        });
        let served = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.head)
            .max_buf_size(limits.max_head.max(8192))
            .keep_alive(false)
            .serve_connection(TokioIo::new(io), service)
            .await;
        if let Err(e) = served {
            debug!(%peer, error = %e, "HTTP connection ended with an error");
        }
    }
}

async fn read_body(body: Incoming, max: usize) -> Result<Bytes, BodyError> {
    match Limited::new(body, max).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge(max)),
        Err(_) => Err(BodyError::Unreadable),
    }
}
