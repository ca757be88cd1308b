//! Raw model → validated model.
//!
//! Every value is checked with its own located message; validation goes on after an
//! error so one run of `check` shows every problem in the file. Omitted fields take the
//! defaults from [`super::model`]. The result is a [`Config`] only when no error was
//! found.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use crate::balance::Algorithm;

use super::backend_tls;
use super::diagnostic::{Finding, Source};
use super::files;
use super::lint;
use super::model::*;
use super::raw::*;
use super::suggest;
use super::tls::{self, ListenerTls, TlsVersion, DEFAULT_MIN_VERSION};
use super::values::{parse_address, parse_duration, parse_status_range};

mod protocol;
mod store;
mod tcp;

/// Validates `raw` (read from `source`); relative paths resolve against `base_dir`.
pub fn validate(
    raw: RawConfig,
    source: Arc<Source>,
    base_dir: &Path,
) -> (Option<Config>, Vec<Finding>) {
    let mut v = Validator::default();
    let state_dir = base_dir.join(
        raw.state_dir
            .as_ref()
            .map_or(DEFAULT_STATE_DIR, |s| s.get_ref().as_str()),
    );
    let drain_timeout = v.duration(
        "drain_timeout",
        raw.drain_timeout.as_ref(),
        DEFAULT_DRAIN_TIMEOUT,
    );
    let admin = raw.admin.as_ref().and_then(|a| v.admin(a, base_dir));
    let listeners = v.listeners(&raw.listener, base_dir);
    if raw.listener.is_empty() {
        v.findings.push(
            Finding::error(
                "no-listener",
                Some(0..0),
                "the config defines no [[listener]], so it would serve nothing",
            )
            .with_help("add [[listener]] with name = \"public\" and listen = \"127.0.0.1:8080\""),
        );
    }
    let admin_addr = admin.as_ref().map(|a| (a.listen, a.span.clone()));
    v.no_shared_addresses(&listeners, admin_addr);
    let pools = v.pools(&raw.pool, base_dir);
    v.one_capacity_per_server(&pools, &source);
    // Names as written, valid or not: a route to a pool that has its own errors is not
    // also "to an unknown pool".
    let defined = Defined {
        listeners: raw
            .listener
            .iter()
            .filter_map(|l| l.get_ref().name.as_ref())
            .map(|n| n.get_ref().clone())
            .collect(),
        pools: raw.pool.keys().map(|k| k.get_ref().clone()).collect(),
    };
    let mut routes = v.routes(&raw.route, &defined);
    let mut pools = pools;
    v.tcp(&listeners, &mut pools, &mut routes, &defined);
    v.protocols(&pools);
    let guard = raw
        .guard
        .as_ref()
        .map_or_else(Guard::default, |g| v.guard(g.get_ref()));
    let lint_allow = raw
        .lint
        .as_ref()
        .map_or_else(Vec::new, |l| v.lint_allow(&l.allow));
    let alerts = Alerts {
        webhook: raw
            .alerts
            .as_ref()
            .and_then(|a| a.webhook.as_ref())
            .and_then(|w| v.webhook(w)),
    };
    let store = raw
        .store
        .as_ref()
        .map_or_else(Default::default, |s| v.store(s, base_dir));
    if !v.findings.is_empty() {
        return (None, v.findings);
    }
    let config = Config {
        source,
        state_dir,
        drain_timeout,
        drain_timeout_span: raw.drain_timeout.as_ref().map(|d| d.span()),
        state_dir_written: raw.state_dir.is_some(),
        admin,
        listeners,
        routes,
        pools,
        guard,
        lint_allow,
        alerts,
        store,
    };
    (Some(config), v.findings)
}

/// Names defined in the file, whether or not their definitions are valid.
struct Defined {
    listeners: Vec<String>,
    pools: Vec<String>,
}

#[derive(Default)]
struct Validator {
    findings: Vec<Finding>,
    /// Each TCP listener's name and its `pool` as written, for [`Validator::tcp`].
    tcp_pools: Vec<(String, Str)>,
}

impl Validator {
    fn error(
        &mut self,
        rule: &'static str,
        span: std::ops::Range<usize>,
        message: String,
        help: impl Into<String>,
    ) {
        self.findings
            .push(Finding::error(rule, Some(span), message).with_help(help));
    }

    fn duration(&mut self, field: &str, value: Option<&Str>, default: Duration) -> Duration {
        let Some(value) = value else { return default };
        match parse_duration(value.get_ref()) {
            Ok(d) => d,
            Err(expected) => {
                self.error(
                    "invalid-duration",
                    value.span(),
                    format!("`{field}` is not a valid duration"),
                    format!("expected {expected}"),
                );
                default
            }
        }
    }

    /// A duration that must be above zero.
    fn positive_duration(
        &mut self,
        field: &str,
        value: Option<&Str>,
        default: Duration,
    ) -> Duration {
        let d = self.duration(field, value, default);
        if let (Some(value), true) = (value, d.is_zero()) {
            self.error(
                "out-of-range",
                value.span(),
                format!("`{field}` must be longer than zero"),
                "give a positive duration such as \"1s\"",
            );
            return default;
        }
        d
    }

    fn int<T: TryFrom<i64> + Copy>(
        &mut self,
        field: &str,
        value: Option<&Int>,
        range: RangeInclusive<i64>,
        default: T,
    ) -> T {
        let Some(value) = value else { return default };
        let n = *value.get_ref();
        match T::try_from(n) {
            Ok(t) if range.contains(&n) => t,
            _ => {
                self.error(
                    "out-of-range",
                    value.span(),
                    format!(
                        "`{field}` is {n}, outside {}..={}",
                        range.start(),
                        range.end()
                    ),
                    format!(
                        "use a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
                default
            }
        }
    }

    fn num(
        &mut self,
        field: &str,
        value: Option<&Num>,
        valid: fn(f64) -> bool,
        expected: &str,
        default: f64,
    ) -> f64 {
        let Some(value) = value else { return default };
        let n = *value.get_ref();
        if n.is_finite() && valid(n) {
            n
        } else {
            self.error(
                "out-of-range",
                value.span(),
                format!("`{field}` is {n}, which is out of range"),
                format!("use {expected}"),
            );
            default
        }
    }

    fn address(&mut self, field: &str, value: &Str, allow_port_zero: bool) -> Option<SocketAddr> {
        match parse_address(value.get_ref(), allow_port_zero) {
            Ok(addr) => Some(addr),
            Err(expected) => {
                self.error(
                    "invalid-address",
                    value.span(),
                    format!("`{field}` is not a usable address"),
                    format!("expected {expected}"),
                );
                None
            }
        }
    }

    fn required<'a, T>(
        &mut self,
        field: &str,
        value: Option<&'a T>,
        at: std::ops::Range<usize>,
        example: &str,
    ) -> Option<&'a T> {
        if value.is_none() {
            self.error(
                "missing-field",
                at,
                format!("`{field}` is required"),
                format!("add it, for example: {example}"),
            );
        }
        value
    }

    fn name(&mut self, what: &str, value: &Str) -> bool {
        let name = value.get_ref();
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            self.error(
                "invalid-name",
                value.span(),
                format!("{what} name {name:?} is not a valid name"),
                "use 1 to 64 letters, digits, `_` or `-` (names appear in URLs and metrics)",
            );
        }
        ok
    }

    fn admin(&mut self, admin: &Spanned<RawAdmin>, base_dir: &Path) -> Option<Admin> {
        let raw = admin.get_ref();
        // The limits first, so their errors show even when the address is wrong too.
        let max_connections = self.int(
            "admin.max_connections",
            raw.max_connections.as_ref(),
            1..=1_000_000,
            DEFAULT_ADMIN_MAX_CONNECTIONS,
        );
        let header_timeout = self.positive_duration(
            "admin.header_timeout",
            raw.header_timeout.as_ref(),
            DEFAULT_ADMIN_HEADER_TIMEOUT,
        );
        let idle_timeout = self.positive_duration(
            "admin.idle_timeout",
            raw.idle_timeout.as_ref(),
            DEFAULT_ADMIN_IDLE_TIMEOUT,
        );
        let metrics_require_token = raw
            .metrics_require_token
            .as_ref()
            .is_some_and(|b| *b.get_ref());
        let listen = match &raw.listen {
            Some(listen) => self.address("admin.listen", listen, true)?,
            None => parse_address(DEFAULT_ADMIN_LISTEN, false).ok()?,
        };
        let token_file = self.required(
            "admin.token_file",
            raw.token_file.as_ref(),
            admin.span(),
            "token_file = \"admin.token\"",
        )?;
        let path = base_dir.join(token_file.get_ref());
        // Metadata only, never opened: a FIFO would block the check, a device or a huge
        // file would never end it (issue 12, defect 7). An absent file is the
        // `admin-token-missing` lint's business: the deploy may still put it in place.
        if let Err(e) = files::inspect(&path, files::MAX_FILE_BYTES) {
            if matches!(
                e,
                files::FileError::NotRegular { .. } | files::FileError::TooLarge { .. }
            ) {
                self.error(
                    "invalid-file",
                    token_file.span(),
                    format!("`admin.token_file` {}: {}", path.display(), e.reason()),
                    "point it at a regular file holding the token (at least 16 characters, at most 1 MiB)",
                );
                return None;
            }
        }
        Some(Admin {
            listen,
            token_file: path,
            token_file_span: token_file.span(),
            max_connections,
            header_timeout,
            idle_timeout,
            metrics_require_token,
            span: admin.span(),
        })
    }

    fn listeners(&mut self, raw: &[Spanned<RawListener>], base_dir: &Path) -> Vec<Listener> {
        let mut seen: HashMap<String, ()> = HashMap::new();
        let mut listeners = Vec::new();
        for item in raw {
            let l = item.get_ref();
            let at = item.span();
            let name = self.required(
                "listener.name",
                l.name.as_ref(),
                at.clone(),
                "name = \"public\"",
            );
            let listen = self.required(
                "listener.listen",
                l.listen.as_ref(),
                at.clone(),
                "listen = \"127.0.0.1:8080\"",
            );
            let header_timeout = self.positive_duration(
                "listener.header_timeout",
                l.header_timeout.as_ref(),
                DEFAULT_HEADER_TIMEOUT,
            );
            let max_connections = self.int(
                "listener.max_connections",
                l.max_connections.as_ref(),
                1..=10_000_000,
                DEFAULT_LISTENER_MAX_CONNECTIONS,
            );
            let max_tunnels = self.int(
                "listener.max_tunnels",
                l.max_tunnels.as_ref(),
                0..=10_000_000,
                DEFAULT_MAX_TUNNELS,
            );
            let tls = l.tls.as_ref().map(|tls| self.listener_tls(tls, base_dir));
            let redirect_https = l.redirect_https.as_ref().is_some_and(|r| *r.get_ref());
            let (mode, accept_proxy_protocol) = self.listener_mode(l);
            if let (Some(Some(_)), Some(redirect)) = (&tls, &l.redirect_https) {
                if *redirect.get_ref() {
                    self.error(
                        "redirect-loop",
                        redirect.span(),
                        "`redirect_https` on a listener that serves HTTPS itself would redirect every request to itself".to_string(),
                        "set redirect_https on the plain-HTTP listener, or remove it here",
                    );
                }
            }
            let (Some(name), Some(listen)) = (name, listen) else {
                continue;
            };
            if !self.name("listener", name) {
                continue;
            }
            if seen.insert(name.get_ref().clone(), ()).is_some() {
                self.error(
                    "duplicate-name",
                    name.span(),
                    format!("listener name {:?} is used twice", name.get_ref()),
                    "give every [[listener]] its own name",
                );
                continue;
            }
            let Some(addr) = self.address("listener.listen", listen, true) else {
                continue;
            };
            listeners.push(Listener {
                name: name.get_ref().clone(),
                listen: addr,
                header_timeout,
                max_connections,
                tls: tls.flatten().map(Arc::new),
                redirect_https,
                max_tunnels,
                mode,
                pool: l
                    .pool
                    .as_ref()
                    .filter(|_| mode == ListenerMode::Tcp)
                    .map(|p| p.get_ref().clone()),
                accept_proxy_protocol,
                span: at,
            });
            if let (ListenerMode::Tcp, Some(pool)) = (mode, &l.pool) {
                self.tcp_pools.push((name.get_ref().clone(), pool.clone()));
            }
        }
        listeners
    }

    /// `tls = { certificates = [...], min_version }`: every certificate read and parsed
    /// now, so a config that names an unusable one is refused before it is applied.
    fn listener_tls(
        &mut self,
        raw: &Spanned<RawListenerTls>,
        base_dir: &Path,
    ) -> Option<ListenerTls> {
        let tls = raw.get_ref();
        let min_version = match &tls.min_version {
            None => DEFAULT_MIN_VERSION,
            Some(text) => match TlsVersion::parse(text.get_ref()) {
                Some(version) => version,
                None => {
                    self.error(
                        "invalid-value",
                        text.span(),
                        format!(
                            "`tls.min_version` {:?} is not a TLS version",
                            text.get_ref()
                        ),
                        "use \"1.2\" (the default) or \"1.3\"",
                    );
                    DEFAULT_MIN_VERSION
                }
            },
        };
        let example = "certificates = [{ cert = \"site.pem\", key = \"site.key\" }]";
        let list = self.required(
            "tls.certificates",
            tls.certificates.as_ref(),
            raw.span(),
            example,
        )?;
        if list.get_ref().is_empty() {
            self.error(
                "missing-field",
                list.span(),
                "`tls.certificates` is empty: a TLS listener needs at least one certificate"
                    .to_string(),
                format!("add one, for example: {example}"),
            );
            return None;
        }
        let mut certificates = Vec::new();
        for entry in list.get_ref() {
            let pair = entry.get_ref();
            let cert = self.required(
                "tls.certificates.cert",
                pair.cert.as_ref(),
                entry.span(),
                "cert = \"site.pem\"",
            );
            let key = self.required(
                "tls.certificates.key",
                pair.key.as_ref(),
                entry.span(),
                "key = \"site.key\"",
            );
            let (Some(cert), Some(key)) = (cert, key) else {
                continue;
            };
            let (cert_path, key_path) =
                (base_dir.join(cert.get_ref()), base_dir.join(key.get_ref()));
            match tls::load(&cert_path, &key_path, entry.span()) {
                Ok(loaded) => certificates.push(Arc::new(loaded)),
                Err(e) => {
                    let (span, help) = if e.is_key_error() {
                        (key.span(), "point `key` at the PEM private key of the certificate (PKCS#8, SEC1 or PKCS#1)")
                    } else {
                        (cert.span(), "point `cert` at a PEM certificate chain, the server's certificate first")
                    };
                    self.error(
                        "invalid-certificate",
                        span,
                        format!("cannot use this certificate: {e}"),
                        help,
                    );
                }
            }
        }
        (certificates.len() == list.get_ref().len()).then(|| ListenerTls {
            certificates,
            min_version,
            min_version_span: tls.min_version.as_ref().map(|m| m.span()),
            span: raw.span(),
        })
    }

    fn no_shared_addresses(
        &mut self,
        listeners: &[Listener],
        admin: Option<(SocketAddr, std::ops::Range<usize>)>,
    ) {
        // Address → the first listener that binds it (port 0 binds a fresh port each time).
        let mut bound: HashMap<SocketAddr, &str> = HashMap::new();
        for l in listeners {
            if l.listen.port() != 0 {
                if let Some(other) = bound.get(&l.listen) {
                    let message = format!(
                        "listener {:?} binds {}, which listener {:?} already binds",
                        l.name, l.listen, other
                    );
                    self.error(
                        "duplicate-listen",
                        l.span.clone(),
                        message,
                        "give each listener its own address or port",
                    );
                } else {
                    bound.insert(l.listen, &l.name);
                }
            }
        }
        if let Some((addr, span)) = admin {
            if let Some(other) = bound.get(&addr).filter(|_| addr.port() != 0) {
                let message = format!(
                    "the admin listener binds {addr}, which listener {other:?} already binds"
                );
                self.error(
                    "duplicate-listen",
                    span,
                    message,
                    "give [admin] its own port",
                );
            }
        }
    }

    fn pools(&mut self, raw: &BTreeMap<Str, Spanned<RawPool>>, base_dir: &Path) -> Vec<Pool> {
        // File order, not name order: findings and status follow the file.
        let mut entries: Vec<_> = raw.iter().collect();
        entries.sort_by_key(|(name, _)| name.span().start);
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.get_ref().as_str()).collect();
        let set: HashSet<&str> = names.iter().copied().collect();
        let mut pools = Vec::new();
        for (name, pool) in &entries {
            let valid_name = self.name("pool", name);
            if let Some(pool) = self.pool(name, pool.get_ref(), &names, &set, base_dir) {
                if valid_name {
                    pools.push(pool);
                }
            }
        }
        pools
    }

    fn pool(
        &mut self,
        name: &Str,
        raw: &RawPool,
        pool_names: &[&str],
        pool_set: &HashSet<&str>,
        base_dir: &Path,
    ) -> Option<Pool> {
        let field = |f: &str| format!("pool.{}.{f}", name.get_ref());
        let before = self.findings.len();
        let algorithm = match &raw.algorithm {
            None => Algorithm::RoundRobin,
            Some(a) => match a.get_ref().parse::<Algorithm>() {
                Ok(alg) => alg,
                Err(()) => {
                    let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
                    let help = match suggest(a.get_ref(), &names) {
                        Some(s) => {
                            format!("did you mean \"{s}\"? algorithms: {}", names.join(", "))
                        }
                        None => format!("use one of: {}", names.join(", ")),
                    };
                    self.error(
                        "invalid-value",
                        a.span(),
                        format!("`{}` is not a known algorithm", field("algorithm")),
                        help,
                    );
                    Algorithm::RoundRobin
                }
            },
        };
        let hash_key = self.hash_key(
            name.get_ref(),
            algorithm,
            raw.hash_key.as_ref(),
            name.span(),
        );
        let backup = raw.backup.as_ref().and_then(|b| {
            let target = b.get_ref().as_str();
            if target == name.get_ref() {
                self.error(
                    "unknown-backup",
                    b.span(),
                    format!("pool {:?} names itself as its backup", target),
                    "name another pool, or remove `backup`",
                );
                None
            } else if !pool_set.contains(target) {
                let help = unknown_help("pool", target, pool_names);
                self.error(
                    "unknown-backup",
                    b.span(),
                    format!(
                        "backup pool {target:?} of pool {:?} is not defined",
                        name.get_ref()
                    ),
                    help,
                );
                None
            } else {
                Some(target.to_string())
            }
        });
        let panic_threshold = self.int(
            &field("panic_threshold"),
            raw.panic_threshold.as_ref(),
            0..=100,
            DEFAULT_PANIC_THRESHOLD,
        );
        let slow_start = self.duration(
            &field("slow_start"),
            raw.slow_start.as_ref(),
            Duration::ZERO,
        );
        let timeouts = raw.timeouts.as_ref().map_or_else(Timeouts::default, |t| {
            self.timeouts(&field("timeouts"), t.get_ref())
        });
        let retries = raw.retries.as_ref().map_or_else(Retries::default, |r| {
            let r = r.get_ref();
            let d = Retries::default();
            Retries {
                attempts: self.int(
                    &field("retries.attempts"),
                    r.attempts.as_ref(),
                    0..=10,
                    d.attempts,
                ),
                budget_percent: self.int(
                    &field("retries.budget_percent"),
                    r.budget_percent.as_ref(),
                    0..=100,
                    d.budget_percent,
                ),
            }
        });
        let limits = raw.limits.as_ref().map_or_else(Limits::default, |l| {
            let l = l.get_ref();
            let d = Limits::default();
            Limits {
                max_connections: self.int(
                    &field("limits.max_connections"),
                    l.max_connections.as_ref(),
                    1..=1_000_000,
                    d.max_connections,
                ),
                max_streams: self.int(
                    &field("limits.max_streams"),
                    l.max_streams.as_ref(),
                    1..=1_000_000,
                    d.max_streams,
                ),
                max_pending: self.int(
                    &field("limits.max_pending"),
                    l.max_pending.as_ref(),
                    0..=1_000_000,
                    d.max_pending,
                ),
                body_buffer: self.int(
                    &field("limits.body_buffer"),
                    l.body_buffer.as_ref(),
                    0..=16 * 1024 * 1024,
                    d.body_buffer,
                ),
                body_spill: self.int(
                    &field("limits.body_spill"),
                    l.body_spill.as_ref(),
                    0..=1 << 40,
                    d.body_spill,
                ),
            }
        });
        let mut backends = self.backends(name, raw.backends.as_ref());
        let tls = raw
            .tls
            .as_ref()
            .and_then(|t| self.backend_tls(&field("tls"), t, base_dir));
        if let Some(tls) = &tls {
            self.tls_names(name.get_ref(), tls, &mut backends);
        }
        let health = raw
            .health
            .as_ref()
            .map(|h| self.health(&field("health"), h));
        let outlier = raw.outlier.as_ref().map_or_else(Outlier::default, |o| {
            self.outlier(&field("outlier"), o.get_ref())
        });
        if self.findings.len() > before {
            return None;
        }
        Some(Pool {
            name: name.get_ref().clone(),
            span: name.span(),
            algorithm,
            hash_key,
            backup,
            panic_threshold,
            slow_start,
            timeouts,
            retries,
            limits,
            backends,
            health: health.flatten(),
            outlier,
            tls: tls.map(Arc::new),
            tcp: false,
            proxy_protocol: self.proxy_protocol(raw.proxy_protocol.as_ref()),
            protocol: self.protocol(raw.protocol.as_ref()),
            spans: PoolSpans {
                protocol: raw.protocol.as_ref().map(|p| p.span()),
                hash_key: raw.hash_key.as_ref().map(|k| k.span()),
                backup: raw.backup.as_ref().map(|b| b.span()),
                request_timeout: raw
                    .timeouts
                    .as_ref()
                    .and_then(|t| t.get_ref().request.as_ref())
                    .map(|r| r.span()),
                tunnel_idle: raw
                    .timeouts
                    .as_ref()
                    .and_then(|t| t.get_ref().tunnel_idle.as_ref())
                    .map(|t| t.span()),
                budget_percent: raw
                    .retries
                    .as_ref()
                    .and_then(|r| r.get_ref().budget_percent.as_ref())
                    .map(|b| b.span()),
                max_ejected_percent: raw
                    .outlier
                    .as_ref()
                    .and_then(|o| o.get_ref().max_ejected_percent.as_ref())
                    .map(|m| m.span()),
            },
        })
    }

    fn hash_key(
        &mut self,
        pool: &str,
        algorithm: Algorithm,
        raw: Option<&Str>,
        pool_span: std::ops::Range<usize>,
    ) -> Option<HashKey> {
        let Some(raw) = raw else {
            if algorithm == Algorithm::ConsistentHash {
                self.error(
                    "missing-hash-key",
                    pool_span,
                    format!("pool {pool:?} uses consistent_hash but has no `hash_key`"),
                    "add hash_key = \"header:NAME\", \"cookie:NAME\", \"client_ip\" or \"path\"",
                );
            }
            return None;
        };
        if algorithm != Algorithm::ConsistentHash {
            self.error(
                "hash-key-unused",
                raw.span(),
                format!("pool {pool:?} sets `hash_key` but its algorithm is {algorithm}, which ignores it"),
                "set algorithm = \"consistent_hash\", or remove `hash_key`",
            );
            return None;
        }
        let text = raw.get_ref().as_str();
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        };
        let key = match text.split_once(':') {
            Some(("header", name)) if token(name) => {
                Some(HashKey::Header(name.to_ascii_lowercase()))
            }
            Some(("cookie", name)) if token(name) => Some(HashKey::Cookie(name.to_string())),
            None if text == "client_ip" => Some(HashKey::ClientIp),
            None if text == "path" => Some(HashKey::Path),
            _ => None,
        };
        if key.is_none() {
            self.error(
                "invalid-hash-key",
                raw.span(),
                format!("`hash_key` {text:?} of pool {pool:?} is not a key evenkeel can read"),
                "use \"header:NAME\", \"cookie:NAME\", \"client_ip\" or \"path\"",
            );
        }
        key
    }

    fn timeouts(&mut self, field: &str, raw: &RawTimeouts) -> Timeouts {
        let d = Timeouts::default();
        let t = Timeouts {
            connect: self.positive_duration(
                &format!("{field}.connect"),
                raw.connect.as_ref(),
                d.connect,
            ),
            request: self.positive_duration(
                &format!("{field}.request"),
                raw.request.as_ref(),
                d.request,
            ),
            idle: self.positive_duration(&format!("{field}.idle"), raw.idle.as_ref(), d.idle),
            per_try: self.positive_duration(
                &format!("{field}.per_try"),
                raw.per_try.as_ref(),
                d.per_try,
            ),
            body_idle: self.positive_duration(
                &format!("{field}.body_idle"),
                raw.body_idle.as_ref(),
                d.body_idle,
            ),
            tunnel_idle: self.positive_duration(
                &format!("{field}.tunnel_idle"),
                raw.tunnel_idle.as_ref(),
                d.tunnel_idle,
            ),
        };
        // Omitted fields are placed at the table, so the caret still points somewhere useful.
        let at =
            |v: &Option<Str>, other: &Option<Str>| v.as_ref().or(other.as_ref()).map(|s| s.span());
        if t.per_try > t.request {
            if let Some(span) = at(&raw.per_try, &raw.request) {
                self.error(
                    "impossible-timeouts",
                    span,
                    format!("`{field}.per_try` ({:?}) is longer than `{field}.request` ({:?}): a try can never use its full time", t.per_try, t.request),
                    "make per_try at most request (request covers every try of a request)",
                );
            }
        }
        if t.connect > t.per_try {
            if let Some(span) = at(&raw.connect, &raw.per_try) {
                self.error(
                    "impossible-timeouts",
                    span,
                    format!("`{field}.connect` ({:?}) is longer than `{field}.per_try` ({:?}): the try ends before the connect can time out", t.connect, t.per_try),
                    "make connect shorter than per_try (a try includes its connect)",
                );
            }
        }
        t
    }

    /// A server (an address after resolution) has one capacity, whichever pools list
    /// it: the failure analysis adds up what every pool sends it, against that one
    /// figure (`sim::servers`).
    fn one_capacity_per_server(&mut self, pools: &[Pool], source: &Source) {
        let mut first: HashMap<SocketAddr, (&Pool, &Backend)> = HashMap::new();
        for pool in pools {
            for backend in &pool.backends {
                let Some(&(other_pool, other)) = first.get(&backend.socket_addr) else {
                    first.insert(backend.socket_addr, (pool, backend));
                    continue;
                };
                if other.capacity == backend.capacity {
                    continue;
                }
                let same = if other.address == backend.address {
                    String::new()
                } else {
                    format!(", as {:?}", other.address)
                };
                self.error(
                    "capacity-conflict",
                    backend.span.clone(),
                    format!(
                        "server {} ({}) has capacity {} here but {} in pool {:?} (line {}{same}): a server's capacity is one fact about it",
                        backend.address,
                        backend.socket_addr,
                        backend.capacity,
                        other.capacity,
                        other_pool.name,
                        source.locate(other.span.start).line,
                    ),
                    "give the server the same capacity everywhere it is listed",
                );
            }
        }
    }

    fn backends(
        &mut self,
        pool: &Str,
        raw: Option<&Spanned<Vec<Spanned<RawBackend>>>>,
    ) -> Vec<Backend> {
        let name = pool.get_ref();
        let Some(raw) = raw.filter(|r| !r.get_ref().is_empty()) else {
            let span = raw.map_or(pool.span(), |r| r.span());
            self.error(
                "empty-pool",
                span,
                format!("pool {name:?} has no backends"),
                "add backends = [{ address = \"127.0.0.1:9001\" }], or remove the pool and its routes",
            );
            return Vec::new();
        };
        let mut backends: Vec<Backend> = Vec::new();
        // Address → position in `backends`: one lookup per backend, so a pool of n
        // backends is checked in O(n), not O(n²) (issue 12, defect 10).
        let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
        for (position, item) in raw.get_ref().iter().enumerate() {
            let b = item.get_ref();
            let field = |f: &str| format!("pool.{name}.backends[{}].{f}", position + 1);
            let Some(address) = self.required(
                &field("address"),
                b.address.as_ref(),
                item.span(),
                "{ address = \"127.0.0.1:9001\" }",
            ) else {
                continue;
            };
            let weight = self.int(
                &field("weight"),
                b.weight.as_ref(),
                0..=i64::from(MAX_WEIGHT),
                DEFAULT_WEIGHT,
            );
            let capacity = self.num(
                &field("capacity"),
                b.capacity.as_ref(),
                |c| c > 0.0 && c <= 1e6,
                "a positive number (relative to the other backends; one figure per server)",
                DEFAULT_CAPACITY,
            );
            let Some(socket_addr) = self.address(&field("address"), address, false) else {
                continue;
            };
            if let Some(&first) = seen.get(&socket_addr) {
                let message = format!(
                    "backend {} appears twice in pool {name:?} (as {:?} already)",
                    address.get_ref(),
                    backends[first].address
                );
                self.error(
                    "duplicate-backend",
                    address.span(),
                    message,
                    "list each backend once; use `weight` to give it more traffic",
                );
                continue;
            }
            seen.insert(socket_addr, backends.len());
            backends.push(Backend {
                address: address.get_ref().clone(),
                socket_addr,
                weight,
                capacity,
                span: item.span(),
                weight_span: b.weight.as_ref().map_or(item.span(), |w| w.span()),
                tls_name: None,
            });
        }
        if !backends.is_empty() && backends.iter().all(|b| b.weight == 0) {
            self.error(
                "zero-total-weight",
                raw.span(),
                format!(
                    "every backend of pool {name:?} has weight 0, so the pool can serve nothing"
                ),
                "give at least one backend a weight above 0",
            );
        }
        backends
    }

    /// A pool's `tls = { sni, ca, verify }`: the CA bundle read and parsed now, so a
    /// config whose backends could never be verified is refused before it is applied.
    fn backend_tls(
        &mut self,
        field: &str,
        raw: &Spanned<RawBackendTls>,
        base_dir: &Path,
    ) -> Option<BackendTls> {
        let tls = raw.get_ref();
        let before = self.findings.len();
        if let Some(sni) = &tls.sni {
            if let Err(reason) = backend_tls::parse_sni(sni.get_ref()) {
                self.error(
                    "invalid-value",
                    sni.span(),
                    format!("`{field}.sni`: {reason}"),
                    "name the host the backends' certificates cover, such as \"api.internal\" (without `sni`, each backend's host as written in `address` is used)",
                );
            }
        }
        let ca = tls.ca.as_ref().and_then(|ca| {
            match backend_tls::load_ca(&base_dir.join(ca.get_ref()), ca.span()) {
                Ok(bundle) => Some(bundle),
                Err(e) => {
                    self.error(
                        "invalid-ca",
                        ca.span(),
                        format!("cannot use this CA bundle: {e}"),
                        "point `ca` at a PEM file of the CA certificates that signed the backends' certificates",
                    );
                    None
                }
            }
        });
        if self.findings.len() > before {
            return None;
        }
        Some(BackendTls {
            sni: tls.sni.as_ref().map(|s| s.get_ref().clone()),
            ca,
            verify: tls
                .verify
                .as_ref()
                .map_or(backend_tls::DEFAULT_VERIFY, |v| *v.get_ref()),
            verify_span: tls.verify.as_ref().map(|v| v.span()),
            span: raw.span(),
        })
    }

    /// Each backend's TLS server name (see [`Backend::tls_name`]): a host that TLS
    /// cannot name is an error at the backend, unless `sni` names one for the pool.
    fn tls_names(&mut self, pool: &str, tls: &BackendTls, backends: &mut [Backend]) {
        for backend in backends {
            match backend_tls::server_name(tls.sni.as_deref(), &backend.address) {
                Ok(name) => backend.tls_name = Some(name),
                Err(reason) => self.error(
                    "invalid-address",
                    backend.span.clone(),
                    format!("backend of pool {pool:?} cannot be reached over TLS: {reason}"),
                    "set `tls.sni` to the name the backends' certificates cover",
                ),
            }
        }
    }

    fn health(&mut self, field: &str, raw: &Spanned<RawHealth>) -> Option<HealthCheck> {
        let h = raw.get_ref();
        let kind = h.kind.as_ref().map_or("http", |k| k.get_ref().as_str());
        let probe = match kind {
            "http" => {
                let method = h
                    .method
                    .as_ref()
                    .map_or(health_defaults::METHOD.to_string(), |m| m.get_ref().clone());
                if !method.bytes().all(|b| b.is_ascii_uppercase()) || method.is_empty() {
                    if let Some(m) = &h.method {
                        self.error(
                            "invalid-value",
                            m.span(),
                            format!("`{field}.method` {method:?} is not an HTTP method"),
                            "use an upper-case method such as \"GET\" or \"HEAD\"",
                        );
                    }
                }
                let path = h
                    .path
                    .as_ref()
                    .map_or(health_defaults::PATH.to_string(), |p| p.get_ref().clone());
                if !path.starts_with('/') || path.contains(char::is_whitespace) {
                    if let Some(p) = &h.path {
                        self.error(
                            "invalid-value",
                            p.span(),
                            format!("`{field}.path` {path:?} is not a request path"),
                            "use a path starting with `/`, such as \"/healthz\"",
                        );
                    }
                }
                let expect_status = match &h.expect_status {
                    None => health_defaults::EXPECT_STATUS,
                    Some(s) => parse_status_range(s.get_ref()).unwrap_or_else(|expected| {
                        self.error(
                            "invalid-value",
                            s.span(),
                            format!("`{field}.expect_status` is not a status range"),
                            format!("expected {expected}"),
                        );
                        health_defaults::EXPECT_STATUS
                    }),
                };
                Probe::Http {
                    method,
                    path,
                    host: h.host.as_ref().map(|s| s.get_ref().clone()),
                    expect_status,
                }
            }
            "tcp" | "grpc" => {
                for (key, value) in [
                    ("path", &h.path),
                    ("method", &h.method),
                    ("host", &h.host),
                    ("expect_status", &h.expect_status),
                ] {
                    if let Some(v) = value {
                        self.error(
                            "invalid-health-check",
                            v.span(),
                            format!("`{field}.{key}` only applies to type = \"http\" checks, and this one is {kind:?}"),
                            format!("remove `{key}`, or set type = \"http\""),
                        );
                    }
                }
                if kind == "tcp" {
                    Probe::Tcp
                } else {
                    Probe::Grpc {
                        service: h
                            .service
                            .as_ref()
                            .map_or_else(String::new, |s| s.get_ref().clone()),
                    }
                }
            }
            other => {
                let span = h.kind.as_ref().map_or(raw.span(), |k| k.span());
                self.error(
                    "invalid-value",
                    span,
                    format!("`{field}.type` {other:?} is not a check type"),
                    "use \"http\", \"tcp\" or \"grpc\"",
                );
                return None;
            }
        };
        if let (Some(service), false) = (&h.service, matches!(probe, Probe::Grpc { .. })) {
            self.error(
                "invalid-health-check",
                service.span(),
                format!("`{field}.service` only applies to type = \"grpc\" checks, and this one is {kind:?}"),
                "remove `service`, or set type = \"grpc\"",
            );
        }
        let interval = self.positive_duration(
            &format!("{field}.interval"),
            h.interval.as_ref(),
            health_defaults::INTERVAL,
        );
        let timeout = self.positive_duration(
            &format!("{field}.timeout"),
            h.timeout.as_ref(),
            health_defaults::TIMEOUT,
        );
        if timeout > interval {
            let span = h
                .timeout
                .as_ref()
                .or(h.interval.as_ref())
                .map_or(raw.span(), |s| s.span());
            self.error(
                "invalid-health-check",
                span,
                format!("`{field}.timeout` ({timeout:?}) is longer than its interval ({interval:?}), so probes of one backend would overlap"),
                "make the timeout at most the interval",
            );
        }
        Some(HealthCheck {
            probe,
            interval,
            timeout,
            healthy_after: self.int(
                &format!("{field}.healthy_after"),
                h.healthy_after.as_ref(),
                1..=100,
                health_defaults::HEALTHY_AFTER,
            ),
            unhealthy_after: self.int(
                &format!("{field}.unhealthy_after"),
                h.unhealthy_after.as_ref(),
                1..=100,
                health_defaults::UNHEALTHY_AFTER,
            ),
            span: raw.span(),
        })
    }

    fn outlier(&mut self, field: &str, raw: &RawOutlier) -> Outlier {
        let d = Outlier::default();
        let o = Outlier {
            consecutive_failures: self.int(
                &format!("{field}.consecutive_failures"),
                raw.consecutive_failures.as_ref(),
                0..=1000,
                d.consecutive_failures,
            ),
            ejection: self.positive_duration(
                &format!("{field}.ejection"),
                raw.ejection.as_ref(),
                d.ejection,
            ),
            max_ejection: self.positive_duration(
                &format!("{field}.max_ejection"),
                raw.max_ejection.as_ref(),
                d.max_ejection,
            ),
            max_ejected_percent: self.int(
                &format!("{field}.max_ejected_percent"),
                raw.max_ejected_percent.as_ref(),
                0..=100,
                d.max_ejected_percent,
            ),
        };
        if o.max_ejection < o.ejection {
            if let Some(span) = raw
                .max_ejection
                .as_ref()
                .or(raw.ejection.as_ref())
                .map(|s| s.span())
            {
                self.error(
                    "out-of-range",
                    span,
                    format!(
                        "`{field}.max_ejection` ({:?}) is shorter than `{field}.ejection` ({:?})",
                        o.max_ejection, o.ejection
                    ),
                    "make max_ejection at least ejection (it caps ejection × count)",
                );
            }
        }
        o
    }

    fn routes(&mut self, raw: &[Spanned<RawRoute>], defined: &Defined) -> Vec<Route> {
        let listener_names: Vec<&str> = defined.listeners.iter().map(String::as_str).collect();
        let pool_names: Vec<&str> = defined.pools.iter().map(String::as_str).collect();
        let listener_set: HashSet<&str> = listener_names.iter().copied().collect();
        let pool_set: HashSet<&str> = pool_names.iter().copied().collect();
        let mut routes = Vec::new();
        for item in raw {
            let r = item.get_ref();
            let at = item.span();
            let listener = match &r.listener {
                Some(l) if listener_set.contains(l.get_ref().as_str()) => Some(l.get_ref().clone()),
                Some(l) => {
                    let help = unknown_help("listener", l.get_ref(), &listener_names);
                    self.error(
                        "unknown-listener",
                        l.span(),
                        format!(
                            "route is on listener {:?}, which is not defined",
                            l.get_ref()
                        ),
                        help,
                    );
                    None
                }
                // One listener: routes may leave it implicit.
                None if defined.listeners.len() == 1 => Some(defined.listeners[0].clone()),
                None => {
                    let help = if defined.listeners.is_empty() {
                        "define a [[listener]] with a name and a listen address".to_string()
                    } else {
                        format!(
                            "add listener = \"NAME\"; listeners: {}",
                            listener_names.join(", ")
                        )
                    };
                    self.error(
                        "missing-field",
                        at.clone(),
                        "`route.listener` is required when there is not exactly one listener"
                            .into(),
                        help,
                    );
                    None
                }
            };
            let pool =
                match self.required("route.pool", r.pool.as_ref(), at.clone(), "pool = \"web\"") {
                    Some(p) if pool_set.contains(p.get_ref().as_str()) => Some(p.get_ref().clone()),
                    Some(p) => {
                        let help = unknown_help("pool", p.get_ref(), &pool_names);
                        self.error(
                            "unknown-pool",
                            p.span(),
                            format!(
                                "route sends traffic to pool {:?}, which is not defined",
                                p.get_ref()
                            ),
                            help,
                        );
                        None
                    }
                    None => None,
                };
            let path_prefix = match &r.path_prefix {
                None => "/".to_string(),
                Some(p)
                    if p.get_ref().starts_with('/') && !p.get_ref().contains(['?', '#', ' ']) =>
                {
                    p.get_ref().clone()
                }
                Some(p) => {
                    self.error(
                        "invalid-value",
                        p.span(),
                        format!("`route.path_prefix` {:?} is not a path prefix", p.get_ref()),
                        "start it with `/`, without a query or fragment, as in \"/api\"",
                    );
                    continue;
                }
            };
            let host = match &r.host {
                None => None,
                Some(h) => {
                    let host = h.get_ref();
                    if !super::values::is_route_host(host) {
                        self.error(
                            "invalid-value",
                            h.span(),
                            format!("`route.host` {host:?} is not a host name"),
                            "give a host name without scheme or port, as in \"api.example.com\"",
                        );
                        continue;
                    }
                    Some(host.to_ascii_lowercase())
                }
            };
            if let (Some(listener), Some(pool)) = (listener, pool) {
                routes.push(Route {
                    listener,
                    host,
                    path_prefix,
                    pool,
                    span: at,
                });
            }
        }
        routes
    }

    fn guard(&mut self, raw: &RawGuard) -> Guard {
        let d = Guard::default();
        Guard {
            watch: self.positive_duration("guard.watch", raw.watch.as_ref(), d.watch),
            min_requests: self.int(
                "guard.min_requests",
                raw.min_requests.as_ref(),
                1..=1_000_000_000,
                d.min_requests,
            ),
            max_error_rate: self.num(
                "guard.max_error_rate",
                raw.max_error_rate.as_ref(),
                |x| x > 0.0 && x <= 1.0,
                "a fraction above 0 and at most 1, such as 0.02",
                d.max_error_rate,
            ),
            max_latency_ratio: self.num(
                "guard.max_latency_ratio",
                raw.max_latency_ratio.as_ref(),
                |x| x > 1.0,
                "a ratio above 1, such as 2.0",
                d.max_latency_ratio,
            ),
            latency_floor: self.duration(
                "guard.latency_floor",
                raw.latency_floor.as_ref(),
                d.latency_floor,
            ),
            max_backend_latency_ratio: self.num(
                "guard.max_backend_latency_ratio",
                raw.max_backend_latency_ratio.as_ref(),
                |x| x > 1.0,
                "a ratio above 1, such as 3.0",
                d.max_backend_latency_ratio,
            ),
            max_skew: self.num(
                "guard.max_skew",
                raw.max_skew.as_ref(),
                |x| x > 0.0,
                "a positive fraction, such as 0.25",
                d.max_skew,
            ),
            max_load_ratio: self.num(
                "guard.max_load_ratio",
                raw.max_load_ratio.as_ref(),
                |x| x > 1.0,
                "a ratio above 1, such as 2.0",
                d.max_load_ratio,
            ),
            max_shift: self.num(
                "guard.max_shift",
                raw.max_shift.as_ref(),
                |x| x > 1.0,
                "a ratio above 1, such as 2.0",
                d.max_shift,
            ),
            deny_warnings: raw.deny_warnings.as_ref().is_some_and(|b| *b.get_ref()),
        }
    }

    fn lint_allow(&mut self, raw: &BTreeMap<Str, Str>) -> Vec<LintAllow> {
        let known: Vec<&str> = lint::RULES.iter().map(|r| r.name).collect();
        let mut allow = Vec::new();
        for (rule, reason) in raw {
            if !known.contains(&rule.get_ref().as_str()) {
                let help = unknown_help("lint rule", rule.get_ref(), &known);
                self.error(
                    "unknown-lint-rule",
                    rule.span(),
                    format!(
                        "[lint.allow] names {:?}, which is not a lint rule",
                        rule.get_ref()
                    ),
                    help,
                );
                continue;
            }
            if reason.get_ref().trim().is_empty() {
                self.error(
                    "invalid-value",
                    reason.span(),
                    format!(
                        "[lint.allow] silences {:?} without a reason",
                        rule.get_ref()
                    ),
                    "say why, e.g. single-backend-pool = \"legacy API has one host until Q3\"",
                );
                continue;
            }
            allow.push(LintAllow {
                rule: rule.get_ref().clone(),
                reason: reason.get_ref().clone(),
            });
        }
        allow
    }

    fn webhook(&mut self, raw: &Str) -> Option<String> {
        let url = raw.get_ref();
        // https is verified against the system's roots (config::backend_tls).
        let authority = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .map(|r| r.split('/').next().unwrap_or(""));
        let valid = authority.is_some_and(|a| {
            !a.is_empty()
                && !a.contains(char::is_whitespace)
                && a.parse::<http::uri::Authority>().is_ok()
        });
        if !valid {
            self.error(
                "invalid-value",
                raw.span(),
                format!("`alerts.webhook` {url:?} is not an http:// or https:// URL"),
                "use a URL such as \"http://127.0.0.1:9099/hook\" or \"https://alerts.example.com/hook\"",
            );
            return None;
        }
        Some(url.clone())
    }
}

fn unknown_help(what: &str, name: &str, known: &[&str]) -> String {
    match (suggest(name, known), known.is_empty()) {
        (Some(s), _) => format!("did you mean {s:?}? defined {what}s: {}", known.join(", ")),
        (None, true) => format!("no {what} is defined yet"),
        (None, false) => format!("defined {what}s: {}", known.join(", ")),
    }
}
