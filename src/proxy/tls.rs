//! HTTPS toward clients: the TLS handshake on a listener that has `tls`.
//!
//! rustls with the aws-lc-rs provider ([`crate::config::tls::provider`]). Each worker keeps, per
//! listener, a rustls `ServerConfig` made from the certificates of the snapshot in
//! force, and makes a new one when a reload brings new certificates (the listener's
//! `Arc<ListenerTls>` changes): new connections get the new certificate, connections
//! already open keep theirs. Session resumption survives reloads and is shared by every
//! worker: one ticket key set (rotated by rustls every 6 hours) and one session cache
//! for the whole process.
//!
//! Certificate choice (SNI): the first certificate whose names cover the server name
//! the client sent ([`crate::config::tls::covers`], wildcards included); no server
//! name, or none covers it: the first certificate. The same choice is made again
//! after the handshake to know which certificate a connection was opened for, so a
//! request whose `Host` that certificate does not cover gets 421 ([`ClientTls`]).
//!
//! ALPN: `h2` and `http/1.1` are offered; a client that picks `h2` is served HTTP/2,
//! any other (or none) HTTP/1.1.

use std::fmt;
use std::io;
use std::sync::{Arc, OnceLock};

use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::tls::{Certificate, ListenerTls, TlsVersion};

/// Sessions the process-wide resumption cache keeps (TLS 1.2 session IDs; TLS 1.3
/// uses stateless tickets).
const SESSION_CACHE: usize = 16 * 1024;

/// What a client's TLS connection was opened with.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The server name the client sent (SNI), lower case; `None`: it sent none.
    pub server_name: Option<String>,
    /// The certificate it was served.
    pub certificate: Arc<Certificate>,
    /// The protocol version agreed (`1.2`, `1.3`), for the access log.
    pub version: Option<&'static str>,
}

/// A TLS version as the access log names it.
pub fn version_name(version: Option<rustls::ProtocolVersion>) -> Option<&'static str> {
    match version? {
        rustls::ProtocolVersion::TLSv1_3 => Some("1.3"),
        rustls::ProtocolVersion::TLSv1_2 => Some("1.2"),
        _ => Some("other"),
    }
}

impl ClientTls {
    /// Whether a request for `host` may be served on this connection: always without
    /// SNI (clients that connect by IP address must keep working), else only when the
    /// connection's certificate covers `host` — a browser reusing a connection for
    /// another name it thinks the certificate covers gets 421 and opens a new one
    /// (RFC 9110 §15.5.20).
    pub fn may_serve(&self, host: &str) -> bool {
        self.server_name.is_none() || self.certificate.covers(host)
    }
}

/// The certificate served for `server_name` (see the module docs).
pub fn choose<'a>(
    certificates: &'a [Arc<Certificate>],
    server_name: Option<&str>,
) -> &'a Arc<Certificate> {
    server_name
        .and_then(|name| certificates.iter().find(|c| c.covers(name)))
        .unwrap_or(&certificates[0])
}

/// One listener's handshake settings, made from one snapshot's `tls`.
#[derive(Clone)]
pub struct ListenerAcceptor {
    /// What the acceptor was made from (compared by pointer to notice a reload).
    pub tls: Arc<ListenerTls>,
    /// The handshake.
    pub acceptor: TlsAcceptor,
}

impl ListenerAcceptor {
    /// The acceptor for `tls`.
    pub fn new(tls: &Arc<ListenerTls>) -> ListenerAcceptor {
        ListenerAcceptor {
            tls: Arc::clone(tls),
            acceptor: TlsAcceptor::from(server_config(tls)),
        }
    }
}

/// A rustls server config for `tls`.
pub fn server_config(tls: &ListenerTls) -> Arc<ServerConfig> {
    let versions: &[&rustls::SupportedProtocolVersion] = if tls.min_version >= TlsVersion::V1_3 {
        &[&rustls::version::TLS13]
    } else {
        // 1.0 and 1.1 are not offered at all (rustls has neither): the lint says so.
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let provider = crate::config::tls::provider();
    let builder =
        match ServerConfig::builder_with_provider(provider).with_protocol_versions(versions) {
            Ok(builder) => builder,
            // The provider supports both versions: this cannot fail.
            Err(e) => unreachable!("aws-lc-rs supports TLS 1.2 and 1.3: {e}"),
        };
    let mut config = builder
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ByServerName {
            certificates: tls.certificates.clone(),
        }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage =
        Arc::clone(shared_sessions()) as Arc<dyn rustls::server::StoresServerSessions>;
    if let Some(ticketer) = shared_ticketer() {
        config.ticketer = ticketer;
    }
    Arc::new(config)
}

fn shared_sessions() -> &'static Arc<ServerSessionMemoryCache> {
    static SESSIONS: OnceLock<Arc<ServerSessionMemoryCache>> = OnceLock::new();
    SESSIONS.get_or_init(|| ServerSessionMemoryCache::new(SESSION_CACHE))
}

fn shared_ticketer() -> Option<Arc<dyn rustls::server::ProducesTickets>> {
    static TICKETER: OnceLock<Option<Arc<dyn rustls::server::ProducesTickets>>> = OnceLock::new();
    TICKETER
        .get_or_init(|| match rustls::crypto::aws_lc_rs::Ticketer::new() {
            Ok(ticketer) => Some(ticketer),
            Err(e) => {
                // No system randomness for a ticket key: resume by session ID only.
                tracing::warn!(error = %e, "TLS session tickets are off: no ticket key could be made");
                None
            }
        })
        .clone()
}

/// Picks the certificate by the client's server name.
struct ByServerName {
    certificates: Vec<Arc<Certificate>>,
}

impl fmt::Debug for ByServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByServerName")
            .field("certificates", &self.certificates.len())
            .finish()
    }
}

impl ResolvesServerCert for ByServerName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &choose(&self.certificates, hello.server_name()).certified,
        ))
    }
}

/// The `reason` label of a failed handshake (see [`crate::runtime::TlsCounters`]).
pub fn failure_reason(error: &io::Error) -> &'static str {
    use rustls::{AlertDescription as Alert, Error, PeerIncompatible};
    match error.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => return "closed",
        io::ErrorKind::TimedOut => return "timeout",
        _ => {}
    }
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return "other";
    };
    match tls {
        Error::InvalidMessage(_) => "not_tls",
        Error::PeerIncompatible(PeerIncompatible::Tls12NotOffered)
        | Error::PeerIncompatible(PeerIncompatible::Tls12NotOfferedOrEnabled)
        | Error::PeerIncompatible(PeerIncompatible::SupportedVersionsExtensionRequired) => {
            "protocol_version"
        }
        Error::PeerIncompatible(_) => "no_shared_cipher",
        Error::NoApplicationProtocol => "no_application_protocol",
        Error::AlertReceived(
            Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateExpired
            | Alert::CertificateUnknown
            | Alert::CertificateRevoked
            | Alert::UnsupportedCertificate
            | Alert::AccessDenied,
        ) => "certificate_rejected",
        Error::AlertReceived(Alert::ProtocolVersion) => "protocol_version",
        Error::AlertReceived(Alert::HandshakeFailure | Alert::InsufficientSecurity) => {
            "no_shared_cipher"
        }
        _ => "other",
    }
}
