//! TLS to backends: a pool's `tls = { sni, ca, verify }`, its CA bundle, and the rustls
//! client config they make.
//!
//! ```text
//!  tls = { sni, ca, verify } ──validate──► BackendTls ──client_config──► rustls ClientConfig
//!  (raw, spans)                 (CA read and         (one per pool; kept        (aws-lc-rs, TLS 1.2/1.3,
//!                                parsed at check)     across reloads that       ALPN http/1.1,
//!                                                     leave `tls` alone)        session resumption)
//! ```
//!
//! - **Which name.** Each backend is verified against, and sent as SNI, one server
//!   name ([`server_name`]): the pool's `sni` when set, else the host of its `address`
//!   *as written* (a host name resolved at load keeps its name). An IP literal is
//!   never sent as SNI (RFC 6066 §3); its certificate must then name the IP address,
//!   or `sni` must name a host the certificate covers.
//! - **Which roots.** `ca` is a PEM bundle (relative to the config file) read through
//!   [`super::files`] (a regular file, 1 MiB at most) and parsed while the config is
//!   checked, so a CA that cannot be used is a located error before anything is
//!   applied. Its bytes are part of the config's identity ([`super::Config::identity`]):
//!   a CA rotated in place and SIGHUP make a new version. Without `ca`, the system's
//!   roots ([`system_roots`]): rustls-native-certs reads them (`SSL_CERT_FILE` /
//!   `SSL_CERT_DIR` when set, else the OpenSSL locations such as
//!   `/etc/ssl/certs/ca-certificates.crt`), once per process — the store the
//!   operator already maintains (private CAs added with `update-ca-certificates` work
//!   here as they do for curl), rather than a list compiled into the binary that ages
//!   with it (webpki-roots).
//! - **No verification.** `verify = false` accepts any certificate for any name (for
//!   labs; lint `backend-tls-unverified` warns). The handshake's signatures are still
//!   checked, so the connection is encrypted — but to whoever answers.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use pki_types::pem::PemObject;
use pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use super::files::{self, FileError};
use super::model::Span;

/// `tls = { ... }` on a pool, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendTls {
    /// The server name every backend of the pool is sent and verified against; `None`:
    /// each backend's host as written in its `address` (none for an IP literal).
    pub sni: Option<String>,
    /// The CA bundle backends' certificates must chain to; `None`: the system's roots.
    pub ca: Option<CaBundle>,
    /// Whether backends' certificates are verified. Default: true.
    pub verify: bool,
    /// Where `verify` is written, if it is.
    pub verify_span: Option<Span>,
    /// Where `tls` is written.
    pub span: Span,
}

impl BackendTls {
    /// Whether `other` asks for the same TLS: the same server name, verification and
    /// CA bytes. Where they are written in the file does not count, so a reload that
    /// only moves text keeps the pool's client config, its sessions and its idle
    /// connections.
    pub fn same_settings(&self, other: &BackendTls) -> bool {
        self.sni == other.sni
            && self.verify == other.verify
            && self.ca.as_ref().map(|c| (&c.path, &c.sha256))
                == other.ca.as_ref().map(|c| (&c.path, &c.sha256))
    }
}

/// Default for [`BackendTls::verify`].
pub const DEFAULT_VERIFY: bool = true;

/// A CA bundle a pool names, read and parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct CaBundle {
    /// The file as resolved.
    pub path: PathBuf,
    /// Its certificates (DER), in file order.
    pub certificates: Arc<Vec<CertificateDer<'static>>>,
    /// SHA-256 of the file's bytes, hex: part of the config's identity.
    pub sha256: String,
    /// Where `ca` is written.
    pub span: Span,
}

/// Why a CA bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The file could not be read.
    #[error("{0}")]
    File(FileError),
    /// It holds no PEM `CERTIFICATE` block.
    #[error("{} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)", .0.display())]
    NoCertificate(PathBuf),
    /// A block is not valid PEM, or a certificate cannot be a trust anchor.
    #[error("{}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Reads and parses the CA bundle at `path`: every certificate in it must be usable as
/// a trust anchor.
pub fn load_ca(path: &Path, span: Span) -> Result<CaBundle, CaError> {
    let bytes = files::read_limited_bytes(path, files::MAX_FILE_BYTES).map_err(CaError::File)?;
    let malformed = |reason: String| CaError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| malformed(format!("not valid PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(CaError::NoCertificate(path.to_path_buf()));
    }
    let mut roots = RootCertStore::empty();
    for (position, certificate) in certificates.iter().enumerate() {
        roots.add(certificate.clone()).map_err(|e| {
            malformed(format!(
                "certificate {} of {} is not a usable CA certificate: {e}",
                position + 1,
                certificates.len()
            ))
        })?;
    }
    Ok(CaBundle {
        path: path.to_path_buf(),
        certificates: Arc::new(certificates),
        sha256: Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        span,
    })
}

/// The `sni` setting as a server name: a DNS name (an IP address is refused: it would
/// never be sent as SNI, which the setting is for).
pub fn parse_sni(text: &str) -> Result<ServerName<'static>, String> {
    if text.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "{text:?} is an IP address, which is never sent as SNI"
        ));
    }
    match ServerName::try_from(text.to_string()) {
        Ok(name @ ServerName::DnsName(_)) => Ok(name),
        _ => Err(format!("{text:?} is not a DNS name")),
    }
}

/// The server name a backend written as `address` (`host:port`) is verified against
/// and sent as SNI (see the module docs): `sni` when set, else the host as written (an
/// IP address for an IP literal). `Err`: the host is not a name TLS can use.
pub fn server_name(sni: Option<&str>, address: &str) -> Result<ServerName<'static>, String> {
    if let Some(sni) = sni {
        return parse_sni(sni);
    }
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_string())
        .map_err(|_| format!("the host {host:?} of {address:?} is not a DNS name TLS can verify"))
}

/// How one backend is reached over TLS: its pool's client config and its server name.
#[derive(Debug)]
pub struct TlsTarget {
    /// The pool's client config (shared by its backends, and across reloads that leave
    /// the pool's `tls` unchanged, so sessions resume).
    pub client: Arc<ClientConfig>,
    /// What the certificate is verified against, and sent as SNI unless an IP address.
    pub server_name: ServerName<'static>,
}

impl TlsTarget {
    /// The `Host` a virtual-hosting backend expects when the request names none: the
    /// name the handshake sends (an IP address is sent as no name, so then `address`).
    pub fn host<'a>(&'a self, address: &'a str) -> &'a str {
        match &self.server_name {
            ServerName::DnsName(name) => name.as_ref(),
            _ => address,
        }
    }
}

/// The rustls client config for a pool's `tls`: the aws-lc-rs provider (as on listeners),
/// TLS 1.2 and 1.3, ALPN `http/1.1` only — `h2` only for a pool with `protocol = "h2"`
/// (`h2`) — the default session cache (resumption on), verification against `ca` or
/// the system's roots, or none, with `verify = false`.
pub fn client_config(tls: &BackendTls, h2: bool) -> Arc<ClientConfig> {
    let roots = match &tls.ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            // Parsed at check: every one is accepted.
            roots.add_parsable_certificates(ca.certificates.iter().cloned());
            Arc::new(roots)
        }
        None if tls.verify => Arc::clone(system_roots()),
        None => Arc::new(RootCertStore::empty()),
    };
    let mut config = with_roots(roots);
    if !tls.verify {
        let provider = Arc::clone(config.crypto_provider());
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)));
    }
    if h2 {
        config.alpn_protocols = vec![b"h2".to_vec()];
    }
    Arc::new(config)
}

/// A client config that verifies against `roots` (aws-lc-rs, TLS 1.2 and 1.3, ALPN
/// `http/1.1`, default session resumption): the alerts webhook's, with
/// [`system_roots`].
pub fn with_roots(roots: Arc<RootCertStore>) -> ClientConfig {
    let provider = super::tls::provider();
    let builder = match ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    {
        Ok(builder) => builder,
        // The provider supports both versions: this cannot fail.
        Err(e) => unreachable!("aws-lc-rs supports TLS 1.2 and 1.3: {e}"),
    };
    let mut config = builder.with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// The system's trust anchors, read once per process (see the module docs). Files
/// that cannot be read or parsed are logged and skipped; an empty store fails every
/// verification against it, and says so once in the log.
pub fn system_roots() -> &'static Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "a system CA certificate could not be read");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if ignored > 0 {
            tracing::debug!(ignored, "system CA certificates rustls cannot use");
        }
        if added == 0 {
            tracing::warn!(
                "no system CA certificates found (install ca-certificates, or set SSL_CERT_FILE): TLS to backends without `ca` and https webhooks will fail verification"
            );
        }
        Arc::new(roots)
    })
}

/// `verify = false`: any certificate, for any name, is accepted; the handshake's
/// signatures are still checked with the provider's algorithms.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// Review: a request without `Host` to a TLS backend named by its `sni` went out
    /// with the IP address as Host, while the handshake named the host.
    fn the_default_host_is_the_handshakes_name_else_the_address() {
        let tls = BackendTls {
            sni: None,
            ca: None,
            verify: false,
            verify_span: None,
            span: Span::default(),
        };
        let target = |sni: Option<&str>, address: &str| TlsTarget {
            client: client_config(&tls, false),
            server_name: server_name(sni, address).expect("name"),
        };
        let named = target(Some("api.internal"), "10.0.0.5:443");
        assert_eq!(named.host("10.0.0.5:443"), "api.internal");
        let by_address = target(None, "10.0.0.5:443");
        assert_eq!(by_address.host("10.0.0.5:443"), "10.0.0.5:443");
    }

    #[test]
    fn the_server_name_is_sni_else_the_host_as_written() {
        let name = |sni: Option<&str>, address: &str| {
            server_name(sni, address).map(|n| n.to_str().into_owned())
        };
        assert_eq!(name(None, "api.internal:443"), Ok("api.internal".into()));
        assert_eq!(name(None, "127.0.0.1:443"), Ok("127.0.0.1".into()));
        assert_eq!(name(None, "[::1]:443"), Ok("::1".into()));
        assert!(matches!(
            server_name(None, "10.0.0.1:443"),
            Ok(ServerName::IpAddress(_))
        ));
        assert_eq!(
            name(Some("api.internal"), "10.0.0.1:443"),
            Ok("api.internal".into())
        );
        assert!(parse_sni("10.0.0.1").is_err());
        assert!(parse_sni("not a name").is_err());
    }

    #[test]
    fn a_ca_bundle_loads_and_anything_else_is_refused_with_its_reason() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).expect("CA");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.pem()).expect("write");
        let bundle = load_ca(&path, 0..1).expect("loads");
        assert_eq!(bundle.certificates.len(), 1);
        assert_eq!(bundle.sha256.len(), 64);

        std::fs::write(&path, key.serialize_pem()).expect("write");
        let refused = load_ca(&path, 0..1).expect_err("a key, no certificate");
        assert!(matches!(refused, CaError::NoCertificate(_)), "{refused}");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let refused = load_ca(&path, 0..1).expect_err("not a certificate");
        assert!(
            refused.to_string().contains("not a usable CA certificate"),
            "{refused}"
        );
        let missing = load_ca(&dir.path().join("absent.pem"), 0..1).expect_err("missing");
        assert!(matches!(missing, CaError::File(_)), "{missing}");
    }
}
