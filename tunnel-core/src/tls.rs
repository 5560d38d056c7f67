//! OpenSSL contexts: the gateway's acceptor (client certificate required, verified against
//! `client_ca` and the CRLs, backend chosen by SNI) and the client agent's connector
//! (gateway verified against `ca` and `server_name`, backend sent as SNI).

use crate::authz::identity::{asn1_text, Identity};
use crate::authz::policy::Policy;
use crate::config::{ClientConfig, ConfigError, ServerConfig, TlsVersion};
use crate::gateway::refused::Refused;
pub use crate::revocation::crl::{CrlCheck, CrlSet};
use crate::util::time::unix_now;
use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::ssl::{
    Ssl, SslAcceptor, SslAcceptorBuilder, SslConnector, SslMethod, SslMode, SslOptions,
    SslSessionCacheMode, SslVerifyMode, SslVersion,
};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509Ref, X509StoreContext, X509};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

pub(crate) mod catalog_alpn;
mod ffi;
mod handshake;
pub(crate) mod keys;
mod lean;
mod reverified;
mod sessions;
pub(crate) mod settings;
mod staple;
mod ticket_chain;
mod ticket_keys;
pub use ffi::negotiated_group;
pub use lean::Lean;
pub use sessions::MAX_CHAIN_AGE;
pub use ticket_chain::resumed_intermediates;
pub use ticket_keys::TicketKeys;

/// Per-connection state shared with the OpenSSL callbacks: the refusal a callback decided
/// (and the client's identity when known), so the audit event says more than "handshake
/// failed".
#[derive(Debug, Default)]
pub struct HandshakeNotes {
    refusal: Mutex<Option<(Refused, Option<Identity>)>>,
}

impl HandshakeNotes {
    fn set(&self, r: Refused, identity: Option<Identity>) {
        crate::util::sync::lock(&self.refusal).get_or_insert((r, identity));
    }

    /// The refusal recorded during the handshake, with the identity when it was known.
    pub fn take(&self) -> Option<(Refused, Option<Identity>)> {
        crate::util::sync::lock(&self.refusal).take()
    }
}

fn notes_index() -> openssl::ex_data::Index<Ssl, Arc<HandshakeNotes>> {
    static IDX: OnceLock<openssl::ex_data::Index<Ssl, Arc<HandshakeNotes>>> = OnceLock::new();
    *IDX.get_or_init(|| Ssl::new_ex_index().expect("OpenSSL ex_data index"))
}

/// Reads a PEM bundle of certificates.
pub fn read_certs(file: &Path, key: &str, path: &Path) -> Result<Vec<X509>, ConfigError> {
    let pem = std::fs::read(path)
        .map_err(|e| ConfigError::new(file, key, format!("cannot read {}: {e}", path.display())))?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| {
        ConfigError::new(
            file,
            key,
            format!("{} is not a PEM certificate file: {e}", path.display()),
        )
    })?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            file,
            key,
            format!("{} holds no certificate", path.display()),
        ));
    }
    Ok(certs)
}

fn proto(v: TlsVersion) -> SslVersion {
    match v {
        TlsVersion::Tls12 => SslVersion::TLS1_2,
        TlsVersion::Tls13 => SslVersion::TLS1_3,
    }
}

/// OpenSSL's record read buffer: what one gathered write of the peer sends (at most
/// [`crate::relay::COALESCE_LIMIT`], four full records), taken with one recv instead of four.
/// Freed when empty (RELEASE_BUFFERS, tls::Lean), so idle connections hold none.
const READ_BUFFER: usize = crate::relay::COALESCE_LIMIT;

/// Sessions the gateway keeps for resumption (least recently used go first); each holds a
/// reference to its client certificate, shared along a chain of resumptions.
pub const SESSION_CACHE_SIZE: i32 = 20_000;

/// Everything the gateway needs to accept connections under one configuration.
pub struct ServerTls {
    acceptor: SslAcceptor,
    /// Revocation lists in force.
    pub crls: Arc<CrlSet>,
    /// The gateway's own leaf certificate.
    pub cert: X509,
    /// The rest of the gateway's certificate file (its chain).
    pub chain: Vec<X509>,
    /// The client CA bundle.
    pub cas: Vec<X509>,
    /// The same CAs, for verifying the certificate of a resumed session again.
    verify_store: openssl::x509::store::X509Store,
    /// Chains verified again recently, under these CAs and CRLs (see `tls/reverified.rs`).
    reverified: reverified::Reverified,
}

impl ServerTls {
    /// Verifies a client chain again (validity dates, CA, every CRL) and returns the verified
    /// chain (leaf first): OpenSSL does not run the verify callback when a session resumes,
    /// the certificate may have expired or been revoked since the session was created, and a
    /// connection accepted before a reload is decided under the configuration after it.
    /// The same chain verified again under this configuration within the last minute (and
    /// before any of its notAfter or a CRL's nextUpdate) is not verified a third time: see
    /// `tls/reverified.rs`.
    pub fn reverify(
        &self,
        leaf: &X509,
        sent: &[X509],
        crl_expired: crate::config::CrlExpired,
    ) -> Result<Vec<X509>, Refused> {
        let now = unix_now();
        let key = reverified::Reverified::key(leaf, sent);
        if let Some(chain) = key.as_ref().and_then(|k| self.reverified.get(k, now)) {
            return Ok(chain);
        }
        let verified = self.verify_chain(leaf, sent, crl_expired, now)?;
        if let Some(k) = key {
            self.reverified
                .put(k, &verified, now, self.crls.earliest_next_update());
        }
        Ok(verified)
    }

    /// [`ServerTls::reverify`] without the cache: the chain up to a trusted CA at `now`, then
    /// every CRL.
    fn verify_chain(
        &self,
        leaf: &X509,
        sent: &[X509],
        crl_expired: crate::config::CrlExpired,
        now: i64,
    ) -> Result<Vec<X509>, Refused> {
        let fail = |e: ErrorStack| Refused::Setup(e.to_string());
        let mut untrusted = openssl::stack::Stack::new().map_err(fail)?;
        for c in sent {
            untrusted.push(c.clone()).map_err(fail)?;
        }
        let mut ctx = X509StoreContext::new().map_err(fail)?;
        let verified = ctx
            .init(&self.verify_store, leaf, &untrusted, |c| {
                if !c.verify_cert()? {
                    return Ok(Err(Refused::HandshakeFailed(format!(
                        "client certificate no longer valid: {}",
                        c.error().error_string()
                    ))));
                }
                Ok(Ok(c
                    .chain()
                    .map(|ch| ch.iter().map(|x| x.to_owned()).collect::<Vec<_>>())
                    .unwrap_or_default()))
            })
            .map_err(fail)??;
        match Refused::from_crl(self.crls.check_chain(&verified, now), crl_expired) {
            None => Ok(verified),
            Some(r) => Err(r),
        }
    }

    /// Builds the acceptor for `cfg`; `policy` is consulted during full handshakes so that a
    /// refused client gets a TLS alert rather than a silent close. `previous_crls` (the set
    /// in force, on reload) keeps a list in force when its file now holds an older one.
    pub fn new(
        cfg: &ServerConfig,
        policy: Arc<Policy>,
        staple: Arc<crate::revocation::ocsp::Staple>,
        previous_crls: Option<&CrlSet>,
    ) -> Result<ServerTls, ConfigError> {
        let file = cfg.file.as_path();
        let tls_err = |e: ErrorStack| ConfigError::new(file, "", format!("OpenSSL: {e}"));
        let mut b =
            SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(tls_err)?;
        b.set_min_proto_version(Some(proto(cfg.tls_min_version)))
            .map_err(tls_err)?;
        b.set_options(SslOptions::NO_RENEGOTIATION | SslOptions::CIPHER_SERVER_PREFERENCE);
        b.set_mode(SslMode::RELEASE_BUFFERS);
        // Read a record's header and body (and what follows) with one recv, not two.
        b.set_read_ahead(true);
        ffi::set_read_buffer_len(&mut b, READ_BUFFER);
        let creds = cfg.keys.load(file)?;
        keys::install(&mut b, file, &cfg.keys, &creds)?;
        let (own, chain) = (creds.leaf, creds.chain);
        cfg.tls.apply(&mut b).map_err(tls_err)?;
        staple::serve_staple(&mut b, cfg, &own, staple)?;
        let (cas, verify_store) = trust_client_cas(&mut b, cfg)?;
        b.set_verify_depth(cfg.verify_depth);
        resumption(&mut b, cfg)?;
        let crls = Arc::new(CrlSet::load(
            file,
            &cfg.crl,
            &cas,
            cfg.crl_check,
            previous_crls,
        )?);
        b.set_alpn_select_callback(catalog_alpn::select_alpn);
        handshake::route_by_sni(&mut b, policy.clone());
        let vcrls = crls.clone();
        let crl_expired = cfg.crl_expired;
        b.set_verify_callback(
            SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
            move |ok, ctx| handshake::verify_client(ok, ctx, &policy, &vcrls, crl_expired),
        );
        Ok(ServerTls {
            acceptor: b.build(),
            crls,
            cert: own,
            chain,
            cas,
            verify_store,
            reverified: Default::default(),
        })
    }

    /// A new server-side `Ssl` for one connection, with its notes attached.
    pub fn new_ssl(&self) -> Result<(Ssl, Arc<HandshakeNotes>), ErrorStack> {
        let mut ssl = Ssl::new(self.acceptor.context())?;
        let notes = Arc::new(HandshakeNotes::default());
        ssl.set_ex_data(notes_index(), notes.clone());
        Ok((ssl, notes))
    }

    /// The underlying context.
    pub fn context(&self) -> &openssl::ssl::SslContextRef {
        self.acceptor.context()
    }
}

/// `client_ca`: the CAs client certificates must chain to, announced to clients; returns
/// them and a store for verifying resumed sessions again.
fn trust_client_cas(
    b: &mut SslAcceptorBuilder,
    cfg: &ServerConfig,
) -> Result<(Vec<X509>, openssl::x509::store::X509Store), ConfigError> {
    let file = cfg.file.as_path();
    let tls_err = |e: ErrorStack| ConfigError::new(file, "", format!("OpenSSL: {e}"));
    let cas = read_certs(file, "client_ca", &cfg.client_ca)?;
    let mut store = X509StoreBuilder::new().map_err(tls_err)?;
    let mut names = openssl::stack::Stack::new().map_err(tls_err)?;
    for ca in &cas {
        store.add_cert(ca.clone()).map_err(|e| {
            ConfigError::new(
                file,
                "client_ca",
                format!("{}: {e}", cfg.client_ca.display()),
            )
        })?;
        names
            .push(ca.subject_name().to_owned().map_err(tls_err)?)
            .map_err(tls_err)?;
    }
    b.set_verify_cert_store(store.build()).map_err(tls_err)?;
    b.set_client_ca_list(names);
    let verify_store = crate::revocation::ocsp::store_of(&cas).map_err(tls_err)?;
    Ok((cas, verify_store))
}

/// Session resumption: a per-context cache of single-use sessions, none with TLS 1.2.
fn resumption(b: &mut SslAcceptorBuilder, cfg: &ServerConfig) -> Result<(), ConfigError> {
    let tls_err = |e: ErrorStack| ConfigError::new(&cfg.file, "", format!("OpenSSL: {e}"));
    // Sessions resume only within this product; authorization is re-checked after every
    // handshake anyway (see server/conn.rs).
    b.set_session_id_context(b"mtls-tunnel-gateway")
        .map_err(tls_err)?;
    // Sessions are kept in this context's cache (stateful TLS 1.3 tickets, each usable
    // once) rather than sealed into stateless tickets: resuming a stateless ticket
    // decodes the whole session, client certificate included, which OpenSSL 3.0 makes
    // costlier than the rest of the resumed handshake. A reload starts a new cache.
    match &cfg.session_ticket_keys {
        None => {
            b.set_options(SslOptions::NO_TICKET);
            b.set_session_cache_size(SESSION_CACHE_SIZE);
        }
        // Shared keys: stateless tickets any gateway of the fleet can open.
        Some(p) => {
            b.set_session_cache_mode(SslSessionCacheMode::OFF);
            TicketKeys::load(&cfg.file, "session_ticket_keys", p)?
                .install(b)
                .map_err(tls_err)?;
            ticket_chain::install(b).map_err(tls_err)?;
        }
    }
    if cfg.tls_min_version == TlsVersion::Tls12 {
        // In TLS 1.2 the SNI belongs to the session (RFC 6066): on resumption OpenSSL
        // reports the first handshake's name, not the one the client sends now, so a
        // resumed session would reach the backend of its first connection whatever it asks
        // for. With TLS 1.2 allowed, do not resume at all (no cache, no tickets).
        b.set_session_cache_mode(SslSessionCacheMode::OFF);
        b.set_num_tickets(0).map_err(tls_err)?;
    }
    // `[tls] session_resumption = false`: no cache, no tickets.
    cfg.tls.apply_server_resumption(b).map_err(tls_err)?;
    Ok(())
}

/// The client agent's connector.
pub struct ClientTls {
    connector: SslConnector,
    /// The agent's own certificate.
    pub cert: X509,
    /// The CAs trusted for the gateway.
    pub cas: Vec<X509>,
    require_staple: bool,
    server_name: String,
    /// Sessions to resume, per backend (none with `require_staple`: a resumed handshake
    /// carries no OCSP staple).
    sessions: Option<Arc<sessions::SessionCache>>,
}

impl ClientTls {
    /// Builds the connector for `cfg`.
    pub fn new(cfg: &ClientConfig) -> Result<ClientTls, ConfigError> {
        let file = cfg.file.as_path();
        let tls_err = |e: ErrorStack| ConfigError::new(file, "", format!("OpenSSL: {e}"));
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(tls_err)?;
        b.set_min_proto_version(Some(proto(cfg.tls_min_version)))
            .map_err(tls_err)?;
        b.set_options(SslOptions::NO_RENEGOTIATION);
        // NO_AUTO_CHAIN: send the chain of the cert file as it is. Otherwise OpenSSL rebuilds
        // our chain on every full handshake from the context's store, which SslConnector
        // points at the system CA directory: for a private CA that means a scan of that
        // directory per connection, finding nothing.
        b.set_mode(SslMode::RELEASE_BUFFERS | SslMode::NO_AUTO_CHAIN);
        // Read a record's header and body (and what follows) with one recv, not two.
        b.set_read_ahead(true);
        ffi::set_read_buffer_len(&mut b, READ_BUFFER);
        let creds = cfg.keys.load(file)?;
        keys::install(&mut b, file, &cfg.keys, &creds)?;
        let own = creds.leaf;
        cfg.tls.apply(&mut b).map_err(tls_err)?;
        let cas = read_certs(file, "ca", &cfg.ca)?;
        let mut store = X509StoreBuilder::new().map_err(tls_err)?;
        for ca in cas.iter().cloned() {
            store
                .add_cert(ca)
                .map_err(|e| ConfigError::new(file, "ca", format!("{}: {e}", cfg.ca.display())))?;
        }
        b.set_verify_cert_store(store.build()).map_err(tls_err)?;
        b.set_verify(SslVerifyMode::PEER);
        let mut sessions = None;
        if cfg.require_staple {
            let staple_cas = cas.clone();
            let store = crate::revocation::ocsp::store_of(&cas).map_err(tls_err)?;
            b.set_status_callback(move |ssl| Ok(staple::staple_is_good(ssl, &staple_cas, &store)))
                .map_err(tls_err)?;
        } else if cfg.tls.session_resumption {
            sessions = Some(sessions::SessionCache::install(&mut b));
        }
        Ok(ClientTls {
            connector: b.build(),
            cert: own,
            require_staple: cfg.require_staple,
            cas,
            server_name: cfg.server_name.clone(),
            sessions,
        })
    }

    /// A client `Ssl` that sends `backend` as SNI and verifies the gateway as `server_name`,
    /// offering an unused session obtained for `backend` (see [`MAX_CHAIN_AGE`]).
    pub fn new_ssl(&self, backend: &str) -> Result<Ssl, ErrorStack> {
        let mut cfg = self.connector.configure()?;
        cfg.set_use_server_name_indication(false);
        cfg.set_verify_hostname(false);
        let mut ssl = cfg.into_ssl(&self.server_name)?;
        ssl.set_hostname(backend)?;
        if self.require_staple {
            ssl.set_status_type(openssl::ssl::StatusType::OCSP)?;
        }
        let param = ssl.param_mut();
        param.set_hostflags(openssl::x509::verify::X509CheckFlags::NO_PARTIAL_WILDCARDS);
        match self.server_name.parse::<std::net::IpAddr>() {
            Ok(ip) => param.set_ip(ip)?,
            Err(_) => param.set_host(&self.server_name)?,
        }
        if let Some(cache) = &self.sessions {
            cache.prepare(&mut ssl, backend)?;
        }
        Ok(ssl)
    }
}

/// The first common name of a certificate, for logs.
pub fn common_name(cert: &X509Ref) -> String {
    cert.subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .map(|e| asn1_text(e.data()))
        .unwrap_or_default()
}
