//! Certificates a config names: read, parsed and judged while the config is checked,
//! so a listener never starts (or reloads) onto a certificate nobody looked at.
//!
//! A `[[listener]]`'s `tls = { certificates = [{ cert, key }], min_version }` names PEM
//! files (a certificate chain, leaf first, and its private key; paths relative to the
//! config file). Each pair is read through [`super::files`] (regular files only, 1 MiB
//! each), parsed into what rustls serves ([`rustls::sign::CertifiedKey`]) and what
//! `check`, the lints, `status` and the history need to know about it: the names it
//! covers, its validity window, the SHA-256 fingerprint of the leaf, and a digest of
//! both files' bytes.
//!
//! That digest is part of the config's identity ([`super::Config::identity`]):
//! overwriting `site.pem` and `site.key` in place (certbot, a Kubernetes secret) and
//! sending SIGHUP is a new version even though the TOML is byte-identical.
//!
//! What makes a certificate unfit to serve but still parseable — expired, not yet
//! valid, a key that is not the certificate's — is left to the lints
//! (`certificate-expired`, `certificate-key-mismatch`), so the finding names the rule
//! and `explain` can say why. What cannot be parsed at all is a validation error here.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pki_types::pem::PemObject;
use pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

use super::files::{self, FileError};
use super::model::Span;

/// `tls = { ... }` on a listener, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerTls {
    /// The certificates, in config order; the first is served when no other's names
    /// cover the client's server name (or it sent none).
    pub certificates: Vec<Arc<Certificate>>,
    /// The oldest protocol version offered. Default: TLS 1.2.
    pub min_version: TlsVersion,
    /// Where `min_version` is written, if it is.
    pub min_version_span: Option<Span>,
    /// Where `tls` is written.
    pub span: Span,
}

/// A TLS protocol version a config may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.0: accepted in a config (with a lint warning) but never offered.
    V1_0,
    /// TLS 1.1: accepted in a config (with a lint warning) but never offered.
    V1_1,
    /// TLS 1.2.
    V1_2,
    /// TLS 1.3.
    V1_3,
}

impl TlsVersion {
    /// The version written as `"1.2"`.
    pub fn parse(text: &str) -> Option<TlsVersion> {
        match text {
            "1.0" => Some(TlsVersion::V1_0),
            "1.1" => Some(TlsVersion::V1_1),
            "1.2" => Some(TlsVersion::V1_2),
            "1.3" => Some(TlsVersion::V1_3),
            _ => None,
        }
    }

    /// The version as a config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V1_0 => "1.0",
            TlsVersion::V1_1 => "1.1",
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }
}

/// Default for [`ListenerTls::min_version`].
pub const DEFAULT_MIN_VERSION: TlsVersion = TlsVersion::V1_2;

/// One certificate chain and its key, read and parsed.
pub struct Certificate {
    /// The chain file as resolved.
    pub cert_path: PathBuf,
    /// The key file as resolved.
    pub key_path: PathBuf,
    /// Where the `{ cert, key }` entry is written.
    pub span: Span,
    /// The DNS names (lower case; `*.example.com` for a wildcard) and IP addresses
    /// the leaf covers: its subject alternative names, or its common name when it
    /// has none.
    pub names: Vec<String>,
    /// Start of the leaf's validity, in seconds since the Unix epoch.
    pub not_before: i64,
    /// End of the leaf's validity, in seconds since the Unix epoch.
    pub not_after: i64,
    /// SHA-256 of the leaf certificate (DER), in lower-case hex: what `openssl x509
    /// -fingerprint -sha256` prints, without the colons.
    pub fingerprint: String,
    /// SHA-256 over both files' bytes: part of the config's identity.
    pub files_sha256: String,
    /// Whether the private key is the leaf's (its public key is the certificate's).
    pub key_matches: bool,
    /// What rustls serves.
    pub certified: Arc<CertifiedKey>,
}

impl std::fmt::Debug for Certificate {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("cert_path", &self.cert_path)
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Certificate) -> bool {
        self.cert_path == other.cert_path
            && self.key_path == other.key_path
            && self.files_sha256 == other.files_sha256
    }
}

impl Certificate {
    /// Whether the certificate covers `host` (a DNS name or an IP address, without a
    /// port): see [`covers`].
    pub fn covers(&self, host: &str) -> bool {
        covers(&self.names, host)
    }

    /// Whether the certificate is valid at `now` (seconds since the Unix epoch).
    pub fn is_valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// Whether a certificate with `names` covers `host`: a name equal to it (ASCII case
/// ignored, a trailing dot ignored), or a wildcard `*.rest` where `host` is one more
/// label in front of `rest` (RFC 6125 §6.4.3: the wildcard stands for exactly one
/// whole label, so `*.example.com` covers `a.example.com` but neither `example.com`
/// nor `a.b.example.com`).
pub fn covers(names: &[String], host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return false;
    }
    names.iter().any(|name| {
        if let Some(rest) = name.strip_prefix("*.") {
            host.split_once('.').is_some_and(|(label, tail)| {
                !label.is_empty() && label != "*" && tail.eq_ignore_ascii_case(rest)
            })
        } else {
            name.eq_ignore_ascii_case(host)
        }
    })
}

/// Why a certificate pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// The chain file could not be read.
    #[error("{0}")]
    CertFile(FileError),
    /// The key file could not be read.
    #[error("{0}")]
    KeyFile(FileError),
    /// The chain file holds no PEM `CERTIFICATE` block.
    #[error("{} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)", .0.display())]
    NoCertificate(PathBuf),
    /// A PEM block could not be decoded, or the leaf is not X.509.
    #[error("{}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
        /// Whether the file is the key (else the chain).
        key: bool,
    },
    /// The key file holds no private key.
    #[error("{} holds no PEM private key (expected -----BEGIN PRIVATE KEY-----, EC PRIVATE KEY or RSA PRIVATE KEY)", .0.display())]
    NoKey(PathBuf),
    /// The key is of a kind rustls cannot sign with.
    #[error("{}: unsupported private key: {reason}", path.display())]
    UnsupportedKey {
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        reason: String,
    },
}

impl CertificateError {
    /// Whether the key file, rather than the chain, is at fault.
    pub fn is_key_error(&self) -> bool {
        match self {
            CertificateError::KeyFile(_)
            | CertificateError::NoKey(_)
            | CertificateError::UnsupportedKey { .. } => true,
            CertificateError::Malformed { key, .. } => *key,
            CertificateError::CertFile(_) | CertificateError::NoCertificate(_) => false,
        }
    }
}

/// Reads and parses the chain at `cert_path` and the key at `key_path`. A key that
/// does not match is loaded anyway (`key_matches` false) so the lint can say so.
pub fn load(
    cert_path: &Path,
    key_path: &Path,
    span: Span,
) -> Result<Certificate, CertificateError> {
    let cert_bytes = files::read_limited_bytes(cert_path, files::MAX_FILE_BYTES)
        .map_err(CertificateError::CertFile)?;
    let key_bytes = files::read_limited_bytes(key_path, files::MAX_FILE_BYTES)
        .map_err(CertificateError::KeyFile)?;
    let malformed = |path: &Path, reason: String| CertificateError::Malformed {
        path: path.to_path_buf(),
        reason,
        key: path == key_path,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| malformed(cert_path, format!("not valid PEM: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(CertificateError::NoCertificate(cert_path.to_path_buf()));
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| malformed(cert_path, format!("not an X.509 certificate: {e}")))?;
    let names = names_of(&parsed);
    let not_before = parsed.validity().not_before.timestamp();
    let not_after = parsed.validity().not_after.timestamp();
    let fingerprint = hex(&Sha256::digest(leaf));
    drop(parsed);
    let key = match PrivateKeyDer::from_pem_slice(&key_bytes) {
        Ok(key) => key,
        Err(pki_types::pem::Error::NoItemsFound) => {
            return Err(CertificateError::NoKey(key_path.to_path_buf()))
        }
        Err(e) => return Err(malformed(key_path, format!("not valid PEM: {e}"))),
    };
    let signing = provider().key_provider.load_private_key(key).map_err(|e| {
        CertificateError::UnsupportedKey {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        }
    })?;
    let certified = CertifiedKey::new(chain, signing);
    let key_matches = certified.keys_match().is_ok();
    let mut files = Sha256::new();
    files.update((cert_bytes.len() as u64).to_be_bytes());
    files.update(&cert_bytes);
    files.update(&key_bytes);
    Ok(Certificate {
        cert_path: cert_path.to_path_buf(),
        key_path: key_path.to_path_buf(),
        span,
        names,
        not_before,
        not_after,
        fingerprint,
        files_sha256: hex(&files.finalize()),
        key_matches,
        certified: Arc::new(certified),
    })
}

/// The names a leaf covers: DNS and IP subject alternative names, else the common
/// name (which clients have stopped trusting, but `check` should still show it).
fn names_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push(dns.to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    names
}

/// The crypto rustls uses everywhere in evenkeel (listeners, backends, the webhook):
/// aws-lc-rs. Measured against ring here (docs/tls.md): as fast or faster at every
/// handshake and at bulk encryption, and 0.65x ring's server CPU per full handshake
/// with an RSA 2048 certificate, where ring was 1.11x OpenSSL 3.0's; the price is
/// about 30 s more CPU for a clean build. Named explicitly, never rustls's process
/// default, so no dependency can switch it.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<rustls::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())))
}

/// Seconds since the Unix epoch now: what certificate windows (`not_before`,
/// `not_after`) are compared with.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_wildcard_covers_exactly_one_label() {
        let wildcard = names(&["*.example.com"]);
        assert!(covers(&wildcard, "a.example.com"));
        assert!(covers(&wildcard, "A.Example.COM."));
        assert!(!covers(&wildcard, "example.com"));
        assert!(!covers(&wildcard, "a.b.example.com"));
        assert!(!covers(&wildcard, ".example.com"));
        assert!(!covers(&wildcard, "a.example.org"));
        let exact = names(&["example.com", "127.0.0.1"]);
        assert!(covers(&exact, "EXAMPLE.com"));
        assert!(covers(&exact, "127.0.0.1"));
        assert!(!covers(&exact, "www.example.com"));
        assert!(!covers(&exact, ""));
    }

    #[test]
    fn a_generated_pair_loads_with_its_names_window_and_a_matching_key() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec![
            "shop.example".to_string(),
            "*.shop.example".to_string(),
        ])
        .expect("params");
        let cert = params.self_signed(&key).expect("certificate");
        std::fs::write(dir.path().join("site.pem"), cert.pem()).expect("write");
        std::fs::write(dir.path().join("site.key"), key.serialize_pem()).expect("write");
        let loaded = load(
            &dir.path().join("site.pem"),
            &dir.path().join("site.key"),
            0..1,
        )
        .expect("loads");
        assert_eq!(loaded.names, names(&["shop.example", "*.shop.example"]));
        assert!(loaded.key_matches);
        assert!(loaded.not_before < loaded.not_after);
        assert_eq!(loaded.fingerprint, hex(&Sha256::digest(cert.der())));

        // Another key: loaded, but marked as not the certificate's.
        let other = rcgen::KeyPair::generate().expect("key");
        std::fs::write(dir.path().join("other.key"), other.serialize_pem()).expect("write");
        let mismatched = load(
            &dir.path().join("site.pem"),
            &dir.path().join("other.key"),
            0..1,
        )
        .expect("loads");
        assert!(!mismatched.key_matches);
        assert_ne!(mismatched.files_sha256, loaded.files_sha256);

        // The key where the chain should be.
        let refused = load(
            &dir.path().join("site.key"),
            &dir.path().join("site.key"),
            0..1,
        )
        .expect_err("no certificate");
        assert!(
            matches!(refused, CertificateError::NoCertificate(_)),
            "{refused}"
        );
    }
}
