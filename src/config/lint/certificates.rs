//! Lints about TLS: the certificates a listener serves and the TLS it offers, and TLS
//! to backends that verifies nothing.
//!
//! Certificates were read and parsed by validation ([`crate::config::tls`]); these
//! rules judge them against the clock and against the routes. An expired certificate
//! or a key that is not the certificate's is an error: serving it fails every
//! handshake, the "site is down for some users" outage. (A certificate that expired
//! while in force is tolerated by a reload or restart that keeps it, with an alarm:
//! [`crate::config::Checked::tolerate_expired`].)

use super::{Finding, Rule, Severity};
use crate::config::tls::{unix_now, Certificate, TlsVersion};

/// A certificate this close to its end is a warning.
pub const EXPIRING_WITHIN_DAYS: i64 = 14;

/// A finding at `cert`'s entry.
fn at(cert: &Certificate, message: String, help: &str) -> Finding {
    Finding::warning("", Some(cert.span.clone()), message).with_help(help)
}

/// A time as a date for messages (`2026-11-30`).
fn date(seconds: i64) -> String {
    crate::store::rfc3339(seconds)[..10].to_string()
}

pub const CERTIFICATE_EXPIRED: Rule = Rule {
    name: "certificate-expired",
    severity: Severity::Error,
    summary: "a certificate that has expired or is not valid yet",
    explain: "Clients refuse a certificate outside its validity window: every HTTPS \
handshake fails, so the site is down for every client that checks (browsers, curl, \
mobile apps) while plain health checks still pass. evenkeel refuses to start serving \
such a certificate: `check`, and any apply that brings it in, fail with this error and the \
running config keeps its certificate. A certificate that was valid when it was applied and \
has expired since is still served after a reload or restart that keeps it (refusing would \
only add an outage), with this finding as a warning and the certificate-expiry alarm. \
Renew the certificate (e.g. `certbot renew`), write the new files over the old ones and \
reload (SIGHUP or `evenkeel apply`): new files under the same config are a new version.",
    check: |config, out| {
        let now = unix_now();
        for (listener, cert) in config.certificates() {
            let problem = if now > cert.not_after {
                format!("expired on {}", date(cert.not_after))
            } else if now < cert.not_before {
                format!("is not valid before {}", date(cert.not_before))
            } else {
                continue;
            };
            out.push(at(
                cert,
                format!(
                    "the certificate {} of listener {:?} {problem}: clients will refuse it",
                    cert.cert_path.display(),
                    listener.name
                ),
                "renew it and write the new certificate and key over these files",
            ));
        }
    },
};

pub const CERTIFICATE_KEY_MISMATCH: Rule = Rule {
    name: "certificate-key-mismatch",
    severity: Severity::Error,
    summary: "a private key that is not the certificate's",
    explain: "A TLS server proves it owns its certificate by signing with the matching \
private key. With another key every handshake fails. It happens when a renewal writes the \
new certificate but the old key (or the other way round), or when two sites' files are \
swapped. The key's public half must be the one in the certificate: compare \
`openssl x509 -noout -pubkey -in site.pem` with `openssl pkey -pubout -in site.key`.",
    check: |config, out| {
        for (listener, cert) in config.certificates() {
            if !cert.key_matches {
                out.push(at(
                    cert,
                    format!(
                        "the key {} is not the key of the certificate {} (listener {:?}): every handshake would fail",
                        cert.key_path.display(),
                        cert.cert_path.display(),
                        listener.name
                    ),
                    "point `key` at the private key the certificate was issued for",
                ));
            }
        }
    },
};

pub const CERTIFICATE_EXPIRING: Rule = Rule {
    name: "certificate-expiring",
    severity: Severity::Warning,
    summary: "a certificate that expires within 14 days",
    explain: "Automated renewal (certbot, cert-manager) renews 30 days ahead; a \
certificate with less than 14 days left usually means renewal is broken, and the site \
goes down for every client on the day it expires. Renew now and check why renewal did not \
run. evenkeel also raises an alarm (journal, webhook, `evenkeel_alarm_active`) while a \
served certificate is within 7 days of its end.",
    check: |config, out| {
        let now = unix_now();
        for (listener, cert) in config.certificates() {
            let left = cert.not_after - now;
            if !(0..=EXPIRING_WITHIN_DAYS * 86_400).contains(&left) || now < cert.not_before {
                continue;
            }
            out.push(at(
                cert,
                format!(
                    "the certificate {} of listener {:?} expires on {} ({} days from now)",
                    cert.cert_path.display(),
                    listener.name,
                    date(cert.not_after),
                    left / 86_400
                ),
                "renew it now, and find out why automatic renewal did not",
            ));
        }
    },
};

pub const CERTIFICATE_HOST_UNCOVERED: Rule = Rule {
    name: "certificate-host-uncovered",
    severity: Severity::Warning,
    summary: "a route host on an HTTPS listener that no certificate covers",
    explain: "A route with `host` on a TLS listener expects clients to ask for that name; \
if none of the listener's certificates covers it (as a name or a `*.` wildcard of one \
label), the client is served the first certificate and refuses it, so the route can never \
be reached over HTTPS. Add a certificate for the host, or add the host to a certificate's \
names (subject alternative names).",
    check: |config, out| {
        for route in &config.routes {
            let Some(host) = &route.host else { continue };
            let Some(tls) = config
                .listener(&route.listener)
                .and_then(|l| l.tls.as_ref())
            else {
                continue;
            };
            if tls.certificates.iter().any(|c| c.covers(host)) {
                continue;
            }
            out.push(
                Finding::warning(
                    "",
                    Some(route.span.clone()),
                    format!(
                        "no certificate of listener {:?} covers the route's host {host:?}: clients asking for it will refuse the certificate",
                        route.listener
                    ),
                )
                .with_help(format!("add a certificate whose names include {host:?}")),
            );
        }
    },
};

pub const TLS_MIN_VERSION: Rule = Rule {
    name: "tls-min-version",
    severity: Severity::Warning,
    summary: "`min_version` below TLS 1.2",
    explain: "TLS 1.0 and 1.1 are deprecated (RFC 8996) and refused by current browsers; \
evenkeel (rustls) does not implement them, so a `min_version` of \"1.0\" or \"1.1\" still \
offers only TLS 1.2 and 1.3. The setting suggests clients that can no longer connect are \
expected to: find out which clients need the old versions, and terminate them elsewhere \
if they must be served. Set min_version = \"1.2\" (the default) or \"1.3\".",
    check: |config, out| {
        for listener in &config.listeners {
            let Some(tls) = &listener.tls else { continue };
            if tls.min_version >= TlsVersion::V1_2 {
                continue;
            }
            out.push(
                Finding::warning(
                    "",
                    tls.min_version_span.clone().or(Some(tls.span.clone())),
                    format!(
                        "listener {:?} asks for TLS {} and up, but only TLS 1.2 and 1.3 are offered",
                        listener.name,
                        tls.min_version.as_str()
                    ),
                )
                .with_help("use min_version = \"1.2\""),
            );
        }
    },
};

pub const BACKEND_TLS_UNVERIFIED: Rule = Rule {
    name: "backend-tls-unverified",
    severity: Severity::Warning,
    summary: "TLS to backends with `verify = false`",
    explain: "With `tls = { verify = false }` a pool accepts any certificate its backends \
present, for any name: the traffic is encrypted, but to whoever answers at the backend's \
address — a host that took over the IP, or anything in the path that can intercept the \
connection, reads and changes every request, cookies and tokens included. It is meant for \
labs with throwaway certificates. Give the pool the CA that signed the backends' \
certificates instead (`tls = { ca = \"internal-ca.pem\" }`, relative to the config file), \
or leave `ca` out when they chain to a CA the system trusts, and set `sni` when the \
certificates name a host other than the one in `address`.",
    check: |config, out| {
        for pool in &config.pools {
            let Some(tls) = pool.tls.as_ref().filter(|t| !t.verify) else {
                continue;
            };
            out.push(
                Finding::warning(
                    "",
                    tls.verify_span.clone().or(Some(tls.span.clone())),
                    format!(
                        "pool {:?} accepts any certificate from its backends: anyone who can answer at their addresses gets its traffic",
                        pool.name
                    ),
                )
                .with_help("verify against the CA that signed the backends' certificates: tls = { ca = \"ca.pem\" }"),
            );
        }
    },
};
