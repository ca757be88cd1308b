//! The configuration file as written: serde types that mirror the TOML, with the
//! source span of every value a later stage may need to point at.
//!
//! Nothing is interpreted here — durations and addresses stay strings, numbers stay
//! wide — so that validation can reject a bad value with its own located message
//! rather than a generic type error. Unknown fields are rejected by serde
//! (`deny_unknown_fields`); the loader turns that into a "did you mean" finding.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A string value with its span.
pub type Str = Spanned<String>;
/// An integer value with its span (wide, so negative or huge values reach validation).
pub type Int = Spanned<i64>;
/// A number value with its span (integers are accepted too).
pub type Num = Spanned<f64>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub state_dir: Option<Str>,
    pub drain_timeout: Option<Str>,
    pub admin: Option<Spanned<RawAdmin>>,
    #[serde(default)]
    pub listener: Vec<Spanned<RawListener>>,
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub pool: BTreeMap<Str, Spanned<RawPool>>,
    pub guard: Option<Spanned<RawGuard>>,
    pub lint: Option<RawLint>,
    pub alerts: Option<RawAlerts>,
    pub store: Option<Spanned<RawStore>>,
}

/// `[store]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub kind: Option<Str>,
    pub endpoints: Option<Spanned<Vec<Str>>>,
    pub prefix: Option<Str>,
    pub node: Option<Str>,
    pub user: Option<Str>,
    pub password_file: Option<Str>,
    pub ca: Option<Str>,
    pub cert: Option<Str>,
    pub key: Option<Str>,
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<Str>,
    pub token_file: Option<Str>,
    pub max_connections: Option<Int>,
    pub header_timeout: Option<Str>,
    pub idle_timeout: Option<Str>,
    pub metrics_require_token: Option<Spanned<bool>>,
}

/// `[[listener]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<Str>,
    pub listen: Option<Str>,
    pub header_timeout: Option<Str>,
    pub max_connections: Option<Int>,
    pub tls: Option<Spanned<RawListenerTls>>,
    pub redirect_https: Option<Spanned<bool>>,
    pub max_tunnels: Option<Int>,
    pub mode: Option<Str>,
    pub pool: Option<Str>,
    pub accept_proxy_protocol: Option<Spanned<bool>>,
}

/// `tls = { ... }` on a listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub certificates: Option<Spanned<Vec<Spanned<RawCertificate>>>>,
    pub min_version: Option<Str>,
}

/// One entry of `certificates = [ ... ]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: Option<Str>,
    pub key: Option<Str>,
}

/// `[[route]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub listener: Option<Str>,
    pub host: Option<Str>,
    pub path_prefix: Option<Str>,
    pub pool: Option<Str>,
}

/// `[pool.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub algorithm: Option<Str>,
    pub hash_key: Option<Str>,
    pub backup: Option<Str>,
    pub panic_threshold: Option<Int>,
    pub slow_start: Option<Str>,
    pub timeouts: Option<Spanned<RawTimeouts>>,
    pub retries: Option<Spanned<RawRetries>>,
    pub limits: Option<Spanned<RawLimits>>,
    pub backends: Option<Spanned<Vec<Spanned<RawBackend>>>>,
    pub health: Option<Spanned<RawHealth>>,
    pub outlier: Option<Spanned<RawOutlier>>,
    pub tls: Option<Spanned<RawBackendTls>>,
    pub proxy_protocol: Option<Str>,
    pub protocol: Option<Str>,
}

/// `tls = { ... }` on a pool: TLS to its backends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackendTls {
    pub sni: Option<Str>,
    pub ca: Option<Str>,
    pub verify: Option<Spanned<bool>>,
}

/// `timeouts = { ... }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<Str>,
    pub request: Option<Str>,
    pub idle: Option<Str>,
    pub per_try: Option<Str>,
    pub body_idle: Option<Str>,
    pub tunnel_idle: Option<Str>,
}

/// `retries = { ... }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    pub attempts: Option<Int>,
    pub budget_percent: Option<Int>,
}

/// `limits = { ... }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_connections: Option<Int>,
    pub max_pending: Option<Int>,
    pub max_streams: Option<Int>,
    pub body_buffer: Option<Int>,
    pub body_spill: Option<Int>,
}

/// One entry of `backends = [ ... ]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub address: Option<Str>,
    pub weight: Option<Int>,
    pub capacity: Option<Num>,
}

/// `[pool.NAME.health]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    #[serde(rename = "type")]
    pub kind: Option<Str>,
    pub path: Option<Str>,
    pub method: Option<Str>,
    pub host: Option<Str>,
    pub expect_status: Option<Str>,
    pub service: Option<Str>,
    pub interval: Option<Str>,
    pub timeout: Option<Str>,
    pub healthy_after: Option<Int>,
    pub unhealthy_after: Option<Int>,
}

/// `[pool.NAME.outlier]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub consecutive_failures: Option<Int>,
    pub ejection: Option<Str>,
    pub max_ejection: Option<Str>,
    pub max_ejected_percent: Option<Int>,
}

/// `[guard]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    pub watch: Option<Str>,
    pub min_requests: Option<Int>,
    pub max_error_rate: Option<Num>,
    pub max_latency_ratio: Option<Num>,
    pub latency_floor: Option<Str>,
    pub max_backend_latency_ratio: Option<Num>,
    pub max_skew: Option<Num>,
    pub max_load_ratio: Option<Num>,
    pub max_shift: Option<Num>,
    pub deny_warnings: Option<Spanned<bool>>,
}

/// `[lint]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLint {
    #[serde(default)]
    pub allow: BTreeMap<Str, Str>,
}

/// `[alerts]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    pub webhook: Option<Str>,
}
