//! NGINX (open source) configs translated into evenkeel's model, for `check --from
//! nginx`: `upstream` blocks become pools, `server` blocks listeners and routes,
//! `location` prefixes with `proxy_pass` routes to pools.
//!
//! What is translated, and how closely:
//! - `upstream`: `server ADDR` with `weight=`, `max_fails=`, `fail_timeout=`, `backup`
//!   (a backup pool), `down` (weight 0); `least_conn`; `ip_hash`, `hash KEY
//!   [consistent]` (consistent hashing on the client address, the path, a header or a
//!   cookie: NGINX maps keys to other servers than evenkeel does); `random` (and
//!   `random two`, as least requests). `max_fails`/`fail_timeout` (NGINX's defaults 1
//!   and 10 s when unset) become passive checks: NGINX counts failures within
//!   `fail_timeout`, evenkeel counts consecutive ones.
//! - `server`: `listen` (address and port), `server_name` (exact names; the default
//!   server of a port takes what no name matches), `location` prefixes (and `^~`) with
//!   `proxy_pass http://UPSTREAM` or `http://HOST:PORT`; `proxy_connect_timeout`,
//!   `proxy_read_timeout` (as the per-try timeout), `proxy_next_upstream off` and
//!   `proxy_next_upstream_tries`, inherited from `http` and `server` as NGINX does.
//! - Anything else that steers traffic (regex and exact locations, wildcard names,
//!   `ssl`, variables in `proxy_pass`, unix sockets, NGINX Plus parameters...) is a
//!   `not-translated` note at its line — never dropped in silence. Directives with no
//!   bearing on balancing (logging, MIME types, buffers, gzip...) are skipped.

pub mod parse;

use std::collections::BTreeMap;
use std::ops::Range;

use super::{duration_text, listener_name, quoted, unique_name, Translated, Writer};
use crate::config::diagnostic::Finding;
use parse::{Directive, Parsed};

/// Rule name of what could not be translated.
pub const NOT_TRANSLATED: &str = "not-translated";
/// Rule name of what was translated only approximately.
pub const APPROXIMATE: &str = "approximate";

/// Puts `finding` in NGINX's terms where evenkeel's would mislead: what NGINX does, and
/// what to change in the NGINX file.
pub fn reword(finding: &mut Finding) {
    if finding.rule == "hash-key-may-be-missing" {
        // evenkeel spreads requests without the key; NGINX hashes an empty key.
        finding.message = finding.message.replace(
            "are spread at random instead of sticking to one backend",
            "all hash alike in NGINX (an empty key) and land on one server",
        );
    }
    if let Some(help) = help(finding.rule) {
        finding.help = Some(help.to_string());
    }
}

/// NGINX's words for what to do, for the rules whose evenkeel help would not help.
fn help(rule: &str) -> Option<&'static str> {
    Some(match rule {
        "no-health-check" => "NGINX open source checks backends only passively (max_fails within fail_timeout, on by default): keep max_fails above 0, and put a balancer with active checks in front for failures requests do not show (`health_check` is NGINX Plus only; Debian's nginx -t rejects it)",
        "single-backend-pool" => "add another server to the upstream, or a `backup` server",
        "load-ratio" => "this server's weight= sends it more than its share of the capacity: check the upstream's weight= values against what each server can take",
        "near-zero-weight" => "this server's weight= is so far below the others' that it gets almost nothing: raise it, or mark the server `down`",
        "hash-key-may-be-missing" => "requests without this header or cookie all hash alike and land on one server: hash on a key every request has ($remote_addr, $request_uri)",
        "undetected-failure" | "slow-failure-detection" => "NGINX notices a failing server only when requests fail (max_fails within fail_timeout): lower fail_timeout, and put active checks in front for failures requests do not show",
        "retries-never-allowed" => "proxy_next_upstream off: a failed request is never tried on another server",
        _ => return None,
    })
}

/// Directives with no bearing on balancing: skipped without a note.
const IRRELEVANT: &[&str] = &[
    "daemon",
    "master_process",
    "client_body_temp_path",
    "proxy_temp_path",
    "fastcgi_temp_path",
    "uwsgi_temp_path",
    "scgi_temp_path",
    "user",
    "worker_shutdown_timeout",
    "worker_processes",
    "worker_rlimit_nofile",
    "pid",
    "error_log",
    "access_log",
    "log_format",
    "events",
    "worker_connections",
    "multi_accept",
    "use",
    "types",
    "default_type",
    "sendfile",
    "tcp_nopush",
    "tcp_nodelay",
    "keepalive_timeout",
    "keepalive_requests",
    "gzip",
    "gzip_types",
    "gzip_vary",
    "gzip_proxied",
    "gzip_comp_level",
    "gzip_min_length",
    "server_tokens",
    "charset",
    "client_max_body_size",
    "client_body_buffer_size",
    "proxy_buffering",
    "proxy_buffers",
    "proxy_buffer_size",
    "proxy_busy_buffers_size",
    "proxy_set_header",
    "proxy_http_version",
    "proxy_redirect",
    "add_header",
    "root",
    "index",
    "include_types",
    "types_hash_max_size",
    "server_names_hash_bucket_size",
    "open_file_cache",
    "load_module",
    "zone",
    "keepalive",
    "proxy_send_timeout",
    "resolver",
    "resolver_timeout",
    "large_client_header_buffers",
    "client_header_timeout",
    "client_body_timeout",
    "send_timeout",
    "reset_timedout_connection",
    "proxy_intercept_errors",
    "error_page",
    "expires",
    "etag",
    "ssl_protocols",
    "ssl_ciphers",
    "ssl_prefer_server_ciphers",
    "ssl_session_cache",
    "ssl_session_timeout",
    "real_ip_header",
    "set_real_ip_from",
    "proxy_cache_path",
    "limit_req_zone",
    "limit_conn_zone",
    "map_hash_bucket_size",
    "variables_hash_max_size",
];

#[derive(Debug, Default)]
struct Upstream {
    directive: Option<Directive>,
    algorithm: Option<&'static str>,
    hash_key: Option<String>,
    servers: Vec<Server>,
}

#[derive(Debug)]
struct Server {
    address: String,
    weight: u64,
    max_fails: u64,
    fail_timeout: String,
    backup: bool,
    down: bool,
    file: usize,
    span: Range<usize>,
}

impl Server {
    /// A server at `address` written by `d`, with NGINX's defaults (weight 1,
    /// max_fails 1, fail_timeout 10 s).
    fn new(address: String, d: &Directive) -> Server {
        Server {
            address,
            weight: 1,
            max_fails: 1,
            fail_timeout: "10s".into(),
            backup: false,
            down: false,
            file: d.file,
            span: d.span.clone(),
        }
    }
}

/// Proxy settings, inherited http → server → location.
#[derive(Clone, Debug, Default)]
struct Proxy {
    connect: Option<String>,
    read: Option<String>,
    /// Where the last timeout was set (findings about timeouts point there).
    at: Option<(usize, Range<usize>)>,
    no_retries: bool,
    tries: Option<u64>,
}

#[derive(Debug)]
struct Route {
    listener: String,
    host: Option<String>,
    prefix: String,
    pool: String,
    file: usize,
    span: Range<usize>,
}

struct Translator {
    notes: Vec<(usize, Finding)>,
    upstreams: BTreeMap<String, Upstream>,
    /// Listener name → (address, file, span of its first listen).
    listeners: BTreeMap<String, (String, usize, Range<usize>)>,
    routes: Vec<Route>,
    /// Pool → proxy settings of the first location using it.
    pool_proxy: BTreeMap<String, Proxy>,
    /// Listener → its default server (file, start of its `server`): the one marked
    /// `default_server`, else the first.
    defaults: BTreeMap<String, (usize, usize)>,
    /// Pools some `proxy_pass` names (judged even when no route reaches them).
    judged: std::collections::BTreeSet<String>,
    /// Listeners whose default server is marked `default_server`.
    marked: std::collections::BTreeSet<String>,
    /// `worker_shutdown_timeout`, as an evenkeel duration.
    shutdown: Option<String>,
}

/// Translates a parsed NGINX config (the `http` context; a file with no `http` block is
/// read as one, as a `conf.d` file is).
pub fn translate(parsed: &Parsed) -> Translated {
    let mut t = Translator {
        notes: Vec::new(),
        upstreams: BTreeMap::new(),
        listeners: BTreeMap::new(),
        routes: Vec::new(),
        pool_proxy: BTreeMap::new(),
        defaults: BTreeMap::new(),
        judged: std::collections::BTreeSet::new(),
        marked: std::collections::BTreeSet::new(),
        shutdown: parsed
            .directives
            .iter()
            .find(|d| d.name == "worker_shutdown_timeout")
            .and_then(|d| duration(d.arg(0))),
    };
    let http: Vec<&Directive> = parsed
        .directives
        .iter()
        .filter(|d| d.name == "http")
        .collect();
    let context: Vec<&Directive> = if http.is_empty() {
        parsed.directives.iter().collect()
    } else {
        for other in parsed.directives.iter().filter(|d| d.name != "http") {
            if other.name == "stream" {
                t.note(
                    other,
                    NOT_TRANSLATED,
                    "the stream (TCP/UDP) context is not translated: only http is",
                );
            } else if !IRRELEVANT.contains(&other.name.as_str()) {
                t.skip(other);
            }
        }
        http.iter().flat_map(|d| d.block.iter().flatten()).collect()
    };
    let mut proxy = Proxy::default();
    for d in &context {
        t.proxy_setting(d, &mut proxy);
    }
    for d in &context {
        match d.name.as_str() {
            "upstream" => t.upstream(d),
            "server"
            | "proxy_connect_timeout"
            | "proxy_read_timeout"
            | "proxy_next_upstream"
            | "proxy_next_upstream_tries" => {}
            name if IRRELEVANT.contains(&name) => {}
            _ => t.skip(d),
        }
    }
    let servers: Vec<&&Directive> = context
        .iter()
        .filter(|d| d.name == "server" && d.block.is_some())
        .collect();
    for d in &servers {
        let mut listens = d
            .block
            .iter()
            .flatten()
            .filter(|l| l.name == "listen")
            .peekable();
        if listens.peek().is_none() {
            t.defaults
                .entry("listen-0-0-0-0-80".into())
                .or_insert((d.file, d.span.start));
        }
        for listen in listens {
            let Some(address) = listen_address(listen.arg(0)) else {
                continue;
            };
            let marked = listen
                .args
                .iter()
                .any(|(a, _)| a == "default_server" || a == "default");
            let name = listener_name(&address);
            if marked && t.marked.insert(name.clone()) {
                t.defaults.insert(name, (d.file, d.span.start));
            } else {
                t.defaults.entry(name).or_insert((d.file, d.span.start));
            }
        }
    }
    for d in servers {
        t.server(d, &proxy);
    }
    t.write(parsed)
}

impl Translator {
    fn note(&mut self, d: &Directive, rule: &'static str, message: impl Into<String>) {
        self.notes
            .push((d.file, Finding::note(rule, Some(d.span.clone()), message)));
    }

    fn skip(&mut self, d: &Directive) {
        let message = format!(
            "`{}` is not translated: evenkeel judges the config without it",
            d.name
        );
        self.note(d, NOT_TRANSLATED, message);
    }

    fn proxy_setting(&mut self, d: &Directive, proxy: &mut Proxy) {
        match d.name.as_str() {
            "proxy_connect_timeout" => {
                proxy.connect = Some(d.arg(0).to_string());
                proxy.at = Some((d.file, d.span.clone()));
            }
            "proxy_read_timeout" => {
                proxy.read = Some(d.arg(0).to_string());
                proxy.at = Some((d.file, d.span.clone()));
                self.note(d, APPROXIMATE, "proxy_read_timeout (between two reads) is taken as evenkeel's per-try timeout (the whole try)");
            }
            "proxy_next_upstream" => proxy.no_retries = d.arg(0) == "off",
            // 0: no limit (every server may be tried), evenkeel's default.
            "proxy_next_upstream_tries" => proxy.tries = d.arg(0).parse().ok().filter(|t| *t > 0),
            _ => {}
        }
    }

    fn upstream(&mut self, d: &Directive) {
        let name = d.arg(0).to_string();
        let mut upstream = Upstream {
            directive: Some(d.clone()),
            ..Upstream::default()
        };
        for inner in d.block.iter().flatten() {
            match inner.name.as_str() {
                "server" => {
                    if let Some(server) = self.server_line(inner) {
                        upstream.servers.push(server);
                    }
                }
                "least_conn" => upstream.algorithm = Some("least_connections"),
                "ip_hash" => {
                    upstream.algorithm = Some("consistent_hash");
                    upstream.hash_key = Some("client_ip".into());
                    self.note(inner, APPROXIMATE, "ip_hash (on the first three octets of an IPv4 address) is taken as consistent hashing on the client address: clients land on other servers than NGINX's");
                }
                "hash" => match hash_key(inner.arg(0)) {
                    Some(key) => {
                        upstream.algorithm = Some("consistent_hash");
                        upstream.hash_key = Some(key);
                        let how = if inner.arg(1) == "consistent" {
                            "ketama"
                        } else {
                            "plain modulo (most keys move when a server is added or removed)"
                        };
                        self.note(inner, APPROXIMATE, format!("hash {} ({how}) is taken as evenkeel's consistent hashing on the same key: keys land on other servers than NGINX's", inner.arg(0)));
                    }
                    None => self.note(inner, NOT_TRANSLATED, format!("hash on {:?} is not translated (evenkeel hashes the client address, the path, a header or a cookie): judged as round robin", inner.arg(0))),
                },
                "random" => {
                    if inner.arg(0) == "two" {
                        upstream.algorithm = Some("least_request");
                        self.note(inner, APPROXIMATE, "random two is taken as evenkeel's least_request (the power of two choices)");
                    } else {
                        upstream.algorithm = Some("random");
                    }
                }
                name if IRRELEVANT.contains(&name) || name == "keepalive_time" => {}
                _ => self.skip(inner),
            }
        }
        // NGINX finds upstreams by name without regard to case.
        self.upstreams.insert(name.to_lowercase(), upstream);
    }

    fn server_line(&mut self, d: &Directive) -> Option<Server> {
        let address = d.arg(0);
        if address.starts_with("unix:") {
            self.note(
                d,
                NOT_TRANSLATED,
                "a unix socket server is not translated (evenkeel balances TCP addresses)",
            );
            return None;
        }
        let address = with_port(address);
        let mut server = Server::new(address, d);
        for (arg, _) in d.args.iter().skip(1) {
            let (key, value) = arg.split_once('=').unwrap_or((arg.as_str(), ""));
            match key {
                "weight" => server.weight = value.parse().unwrap_or(1),
                "max_fails" => server.max_fails = value.parse().unwrap_or(1),
                "fail_timeout" => {
                    server.fail_timeout = duration(value).unwrap_or_else(|| "10s".into())
                }
                "backup" => server.backup = true,
                "down" => server.down = true,
                other => self.note(
                    d,
                    NOT_TRANSLATED,
                    format!("server parameter {other} is not translated"),
                ),
            }
        }
        Some(server)
    }

    fn server(&mut self, d: &Directive, http: &Proxy) {
        let block = d.block.as_deref().unwrap_or_default();
        let mut proxy = http.clone();
        for inner in block {
            self.proxy_setting(inner, &mut proxy);
        }
        let mut listens = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for inner in block {
            match inner.name.as_str() {
                "listen" => {
                    if let Some(address) = listen_address(inner.arg(0)) {
                        if inner.args.iter().any(|(a, _)| a == "ssl") {
                            self.note(
                                inner,
                                NOT_TRANSLATED,
                                "ssl is not translated: judged as a plain HTTP listener",
                            );
                        }
                        let default = inner
                            .args
                            .iter()
                            .any(|(a, _)| a == "default_server" || a == "default");
                        listens.push((address, default, inner.clone()));
                    } else {
                        self.note(
                            inner,
                            NOT_TRANSLATED,
                            format!("listen {} is not translated", inner.arg(0)),
                        );
                    }
                }
                "server_name" => {
                    for (name, _) in &inner.args {
                        if name.starts_with('~') || name.contains('*') || name.starts_with('.') {
                            self.note(inner, NOT_TRANSLATED, format!("server_name {name} (a wildcard or regular expression) is not translated: evenkeel matches exact host names"));
                        } else if !name.is_empty() && name != "_" && !super::routable_host(name) {
                            self.note(inner, NOT_TRANSLATED, format!("server_name {name} is not a host name evenkeel routes on (letters, digits, . and -)"));
                        } else if !name.is_empty() && name != "_" {
                            names.push(name.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        if listens.is_empty() {
            listens.push(("0.0.0.0:80".to_string(), false, d.clone()));
        }
        for (address, default_server, listen) in listens {
            let listener = listener_name(&address);
            self.listeners.entry(listener.clone()).or_insert((
                address,
                listen.file,
                listen.span.clone(),
            ));
            // The first server of a port, or the one marked default_server, takes the
            // hosts no server_name matches: its routes carry no host.
            let _ = default_server;
            let is_default = self.defaults.get(&listener) == Some(&(d.file, d.span.start));
            let hosts: Vec<Option<String>> = if is_default {
                vec![None]
            } else if names.is_empty() {
                // Not the default, and no name evenkeel can match: no request reaches it.
                self.note(d, NOT_TRANSLATED, format!("this server on {listener} has no server_name evenkeel matches and is not the default server: its locations are not judged"));
                vec![]
            } else {
                names.iter().cloned().map(Some).collect()
            };
            for host in hosts {
                self.locations(block, &listener, host.as_deref(), &proxy);
            }
        }
        for inner in block {
            match inner.name.as_str() {
                "listen"
                | "server_name"
                | "location"
                | "proxy_connect_timeout"
                | "proxy_read_timeout"
                | "proxy_next_upstream"
                | "proxy_next_upstream_tries" => {}
                name if IRRELEVANT.contains(&name) => {}
                _ => self.skip(inner),
            }
        }
    }

    fn locations(
        &mut self,
        block: &[Directive],
        listener: &str,
        host: Option<&str>,
        server: &Proxy,
    ) {
        for location in block.iter().filter(|d| d.name == "location") {
            let (modifier, prefix) = match location.arg(0) {
                "=" | "~" | "~*" | "^~" => (location.arg(0), location.arg(1)),
                other => ("", other),
            };
            if matches!(modifier, "=" | "~" | "~*") || prefix.starts_with('@') {
                // Not a route, but its upstream is judged (a weight typo there is one).
                if let Some(pass) = location
                    .block
                    .iter()
                    .flatten()
                    .find(|d| d.name == "proxy_pass")
                {
                    self.pool_of(pass);
                }
                self.note(
                    location,
                    NOT_TRANSLATED,
                    format!("location {modifier} {prefix} is not translated: evenkeel routes on path prefixes"),
                );
                continue;
            }
            let mut proxy = server.clone();
            for inner in location.block.iter().flatten() {
                self.proxy_setting(inner, &mut proxy);
                if matches!(inner.name.as_str(), "location" | "if" | "limit_except") {
                    self.note(
                        inner,
                        NOT_TRANSLATED,
                        format!("a nested `{}` block is not translated", inner.name),
                    );
                }
            }
            let Some(pass) = location
                .block
                .iter()
                .flatten()
                .find(|d| d.name == "proxy_pass")
            else {
                self.note(location, NOT_TRANSLATED, format!("location {prefix} answers by itself (no proxy_pass): not a route to a pool"));
                continue;
            };
            let Some(pool) = self.pool_of(pass) else {
                continue;
            };
            self.pool_proxy.entry(pool.clone()).or_insert(proxy);
            self.routes.push(Route {
                listener: listener.to_string(),
                host: host.map(str::to_string),
                prefix: prefix.to_string(),
                pool,
                file: location.file,
                span: location.span.clone(),
            });
        }
    }

    /// The pool a `proxy_pass` sends to: its upstream, or a pool of one for an address.
    fn pool_of(&mut self, pass: &Directive) -> Option<String> {
        let target = pass.arg(0);
        let rest = match (
            target.strip_prefix("http://"),
            target.strip_prefix("https://"),
        ) {
            (Some(rest), _) => rest,
            (None, Some(rest)) => {
                self.note(
                    pass,
                    NOT_TRANSLATED,
                    "TLS to the upstream (https://) is not translated: judged as plain HTTP",
                );
                rest
            }
            _ => {
                self.note(
                    pass,
                    NOT_TRANSLATED,
                    format!("proxy_pass {target} is not translated"),
                );
                return None;
            }
        };
        if rest.contains('$') {
            self.note(
                pass,
                NOT_TRANSLATED,
                format!("proxy_pass {target} names its target with variables: not translated"),
            );
            return None;
        }
        let (authority, uri) = match rest.split_once('/') {
            Some((a, u)) => (a, Some(u)),
            None => (rest, None),
        };
        // Any URI, `/` included, replaces the matched prefix: a rewrite.
        if let Some(uri) = uri {
            self.note(
                pass,
                NOT_TRANSLATED,
                format!("the URI part /{uri} of proxy_pass (a rewrite) is not translated"),
            );
        }
        if self.upstreams.contains_key(&authority.to_lowercase()) {
            let key = authority.to_lowercase();
            self.judged.insert(key.clone());
            return Some(key);
        }
        if authority.starts_with("unix:") {
            self.note(
                pass,
                NOT_TRANSLATED,
                "a unix socket upstream is not translated (evenkeel balances TCP addresses)",
            );
            return None;
        }
        let address = with_port(authority);
        // Keyed on the whole address: two addresses never share a pool.
        let name = format!("direct:{address}");
        self.judged.insert(name.clone());
        self.upstreams
            .entry(name.clone())
            .or_insert_with(|| Upstream {
                directive: Some(pass.clone()),
                servers: vec![Server::new(address, pass)],
                ..Upstream::default()
            });
        Some(name)
    }

    fn write(mut self, parsed: &Parsed) -> Translated {
        // evenkeel's names: letters, digits, - and _, unique (NGINX allows more).
        let mut taken = std::collections::HashSet::new();
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for key in &self.judged {
            let Some(upstream) = self.upstreams.get(key) else {
                continue;
            };
            if upstream.servers.iter().all(|s| s.backup) {
                if let Some(d) = &upstream.directive {
                    self.notes.push((d.file, Finding::note(NOT_TRANSLATED, Some(d.span.clone()), format!("upstream {} has no server evenkeel can balance (unix sockets, or backups only): not judged", d.arg(0)))));
                }
                continue;
            }
            let shown = match key.strip_prefix("direct:") {
                Some(address) => format!("direct-{address}"),
                None => upstream
                    .directive
                    .as_ref()
                    .map_or(key.clone(), |d| d.arg(0).to_string()),
            };
            let name = unique_name(&shown, &mut taken);
            if upstream.servers.iter().any(|s| s.backup) {
                let backup = unique_name(&format!("{name}-backup"), &mut taken);
                names.insert(format!("{key}\0backup"), backup);
            }
            names.insert(key.clone(), name);
        }
        let mut w = Writer::default();
        w.line(
            &format!(
                "# Translated from NGINX ({}) by evenkeel.",
                super::comment(&parsed.sources[0].path.display().to_string())
            ),
            None,
        );
        // NGINX lets requests finish at a graceful stop as long as they take (unless
        // worker_shutdown_timeout says otherwise): never shorter than a request.
        let longest = self
            .pool_proxy
            .values()
            .map(|p| {
                let read = p.read.as_deref().and_then(millis).unwrap_or(60_000);
                read.max(p.connect.as_deref().and_then(millis).unwrap_or(0))
                    .max(30_000)
            })
            .max()
            .unwrap_or(30_000);
        let drain = self
            .shutdown
            .clone()
            .unwrap_or_else(|| duration_text(longest));
        w.line(&format!("drain_timeout = {}", quoted(&drain)), None);
        for (name, (address, file, span)) in &self.listeners {
            w.line("[[listener]]", Some((*file, span)));
            w.line(&format!("name = {}", quoted(name)), Some((*file, span)));
            w.line(
                &format!("listen = {}", quoted(address)),
                Some((*file, span)),
            );
            w.line("", None);
        }
        for route in &self.routes {
            let origin = Some((route.file, &route.span));
            let Some(pool) = names.get(&route.pool) else {
                continue;
            };
            w.line("[[route]]", origin);
            w.line(&format!("listener = {}", quoted(&route.listener)), origin);
            if let Some(host) = &route.host {
                w.line(&format!("host = {}", quoted(host)), origin);
            }
            w.line(&format!("path_prefix = {}", quoted(&route.prefix)), origin);
            w.line(&format!("pool = {}", quoted(pool)), origin);
            w.line("", None);
        }
        let upstreams = std::mem::take(&mut self.upstreams);
        for (key, upstream) in &upstreams {
            let Some(d) = &upstream.directive else {
                continue;
            };
            if !self.judged.contains(key) {
                // An upstream no proxy_pass names: NGINX does not use it either.
                continue;
            }
            let Some(name) = names.get(key) else {
                continue;
            };
            let (main, backup): (Vec<&Server>, Vec<&Server>) =
                upstream.servers.iter().partition(|s| !s.backup);
            let proxy = self.pool_proxy.get(key).cloned().unwrap_or_default();
            self.pool(
                &mut w,
                name,
                d,
                upstream,
                &main,
                names.get(&format!("{key}\0backup")).map(String::as_str),
                &proxy,
            );
            if let Some(backup_name) = names
                .get(&format!("{key}\0backup"))
                .filter(|_| !backup.is_empty())
            {
                self.pool(&mut w, backup_name, d, upstream, &backup, None, &proxy);
            }
        }
        // A location read once per host and per listen says its note once.
        let mut seen = std::collections::HashSet::new();
        self.notes
            .retain(|(file, f)| seen.insert((*file, f.span.clone(), f.message.clone())));
        Translated {
            product: "NGINX",
            text: w.text,
            origins: w.origins,
            sources: parsed.sources.clone(),
            notes: self.notes,
            made_up: names
                .iter()
                .filter(|(key, _)| key.ends_with("\0backup"))
                .map(|(_, name)| name.clone())
                .collect(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn pool(
        &mut self,
        w: &mut Writer,
        name: &str,
        d: &Directive,
        upstream: &Upstream,
        servers: &[&Server],
        backup: Option<&str>,
        proxy: &Proxy,
    ) {
        let origin = Some((d.file, &d.span));
        w.line(&format!("[pool.{}]", quoted(name)), origin);
        let weighted = servers
            .iter()
            .any(|s| s.weight != servers[0].weight || s.down);
        let algorithm = upstream.algorithm.unwrap_or(if weighted {
            "weighted_round_robin"
        } else {
            "round_robin"
        });
        w.line(&format!("algorithm = {}", quoted(algorithm)), origin);
        if let Some(key) = &upstream.hash_key {
            w.line(&format!("hash_key = {}", quoted(key)), origin);
        }
        if let Some(backup) = backup {
            w.line(&format!("backup = {}", quoted(backup)), origin);
        }
        // NGINX has no timeout on a whole request; its defaults are 60 s to connect and
        // 60 s between reads. evenkeel wants connect <= per_try <= request.
        if proxy.connect.is_some() || proxy.read.is_some() {
            let connect = proxy.connect.as_deref().and_then(millis);
            let read = proxy.read.as_deref().and_then(millis).unwrap_or(60_000);
            let per_try = read.max(connect.unwrap_or(0));
            let request = per_try.max(30_000);
            let mut timeouts = Vec::new();
            if let Some(connect) = connect {
                timeouts.push(format!("connect = {}", quoted(&duration_text(connect))));
            }
            timeouts.push(format!("per_try = {}", quoted(&duration_text(per_try))));
            timeouts.push(format!("request = {}", quoted(&duration_text(request))));
            let at = proxy
                .at
                .as_ref()
                .map(|(file, span)| (*file, span))
                .or(origin);
            w.line(&format!("timeouts = {{ {} }}", timeouts.join(", ")), at);
        }
        if proxy.no_retries || proxy.tries.is_some() {
            let attempts = if proxy.no_retries {
                0
            } else {
                proxy.tries.map_or(1, |t| t.saturating_sub(1))
            };
            w.line(&format!("retries = {{ attempts = {attempts} }}"), origin);
        }
        w.line("backends = [", origin);
        for s in servers {
            let weight = if s.down { 0 } else { s.weight };
            w.line(
                &format!(
                    "  {{ address = {}, weight = {weight} }},",
                    quoted(&s.address)
                ),
                Some((s.file, &s.span)),
            );
        }
        w.line("]", origin);
        if let Some(first) = servers.first() {
            if servers
                .iter()
                .any(|s| s.max_fails != first.max_fails || s.fail_timeout != first.fail_timeout)
            {
                self.note(d, APPROXIMATE, format!("the servers of upstream {name} differ in max_fails or fail_timeout: judged with the first server's"));
            }
            w.line(
                &format!("[pool.{}.outlier]", quoted(name)),
                Some((first.file, &first.span)),
            );
            w.line(
                &format!("consecutive_failures = {}", first.max_fails),
                Some((first.file, &first.span)),
            );
            if first.fail_timeout == "0s" {
                // fail_timeout=0: NGINX takes the server out for no time at all.
                self.note(
                    d,
                    APPROXIMATE,
                    format!(
                        "fail_timeout=0 in upstream {name}: evenkeel ejects for its default 30 s"
                    ),
                );
            } else {
                w.line(
                    &format!("ejection = {}", quoted(&first.fail_timeout)),
                    Some((first.file, &first.span)),
                );
            }
        }
        w.line("", None);
    }
}

/// An NGINX time (`10s`, `1m30s`, `500ms`, `1d`, `30`: seconds) in milliseconds.
fn millis(value: &str) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    if value.chars().all(|c| c.is_ascii_digit()) {
        return value.parse::<u64>().ok()?.checked_mul(1000);
    }
    let mut total: u64 = 0;
    let mut rest = value;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = [
            ("ms", 1, 2),
            ("s", 1000, 1),
            ("m", 60_000, 1),
            ("h", 3_600_000, 1),
            ("d", 86_400_000, 1),
            ("w", 604_800_000, 1),
            ("M", 2_592_000_000, 1),
            ("y", 31_536_000_000, 1),
        ]
        .iter()
        .find(|(u, _, _)| rest.starts_with(u))
        .map(|(_, unit, len)| (*unit, *len))?;
        rest = &rest[len..];
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    Some(total)
}

/// An NGINX time as an evenkeel duration.
fn duration(value: &str) -> Option<String> {
    millis(value).map(duration_text)
}

/// An upstream address as `host:port`: NGINX's port 80 when it names none.
fn with_port(address: &str) -> String {
    if address.contains(':') && !address.ends_with(']') {
        address.to_string()
    } else {
        format!("{address}:80")
    }
}

/// `listen`'s address as `host:port`.
fn listen_address(value: &str) -> Option<String> {
    if value.starts_with("unix:") {
        return None;
    }
    if value.chars().all(|c| c.is_ascii_digit()) {
        return Some(format!("0.0.0.0:{value}"));
    }
    if let Some(port) = value.strip_prefix("*:") {
        return Some(format!("0.0.0.0:{port}"));
    }
    if value.ends_with(']') {
        return Some(format!("{value}:80"));
    }
    if value.contains(':') {
        return Some(value.to_string());
    }
    Some(format!("{value}:80"))
}

/// An NGINX hash key as an evenkeel `hash_key`.
fn hash_key(key: &str) -> Option<String> {
    Some(match key {
        "$remote_addr" | "$binary_remote_addr" => "client_ip".into(),
        "$request_uri" | "$uri" => "path".into(),
        _ => {
            if let Some(header) = key.strip_prefix("$http_") {
                format!("header:{}", header.replace('_', "-"))
            } else if let Some(cookie) = key.strip_prefix("$cookie_") {
                format!("cookie:{cookie}")
            } else {
                return None;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translated(text: &str) -> Translated {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, text).expect("write");
        translate(&parse::read(&path).expect("parses"))
    }

    #[test]
    fn a_location_read_for_several_hosts_and_ports_is_noted_once() {
        let t = translated(
            "upstream a { server 127.0.0.1:9001; }\n\
             server { listen 80; location / { proxy_pass http://a; } }\n\
             server { listen 80; listen 8080; server_name x.example y.example;\n\
               location ~ \\.php$ { proxy_pass http://a; } location / { proxy_pass http://a; } }\n",
        );
        let regex = t
            .notes
            .iter()
            .filter(|(_, f)| f.message.contains(".php"))
            .count();
        assert_eq!(regex, 1, "{:?}", t.notes);
        assert!(t.text.contains("host = \"y.example\""), "{}", t.text);
        assert!(t.text.contains("listen = \"0.0.0.0:8080\""), "{}", t.text);
    }

    #[test]
    fn nginx_values_become_evenkeel_values() {
        assert_eq!(duration("30").as_deref(), Some("30s"));
        assert_eq!(duration("500ms").as_deref(), Some("500ms"));
        assert_eq!(duration("1m").as_deref(), Some("60s"));
        assert_eq!(duration("1m30s").as_deref(), Some("90s"));
        assert_eq!(duration("1d").as_deref(), Some("86400s"));
        assert_eq!(duration("1s500ms").as_deref(), Some("1500ms"));
        assert_eq!(duration("5x"), None);
        assert_eq!(duration("1x"), None);
        assert_eq!(listen_address("80").as_deref(), Some("0.0.0.0:80"));
        assert_eq!(listen_address("*:8080").as_deref(), Some("0.0.0.0:8080"));
        assert_eq!(
            listen_address("127.0.0.1:8080").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(listen_address("[::]:80").as_deref(), Some("[::]:80"));
        assert_eq!(listen_address("unix:/run/x.sock"), None);
        assert_eq!(
            hash_key("$http_x_user_id").as_deref(),
            Some("header:x-user-id")
        );
        assert_eq!(
            hash_key("$cookie_session").as_deref(),
            Some("cookie:session")
        );
        assert_eq!(hash_key("$remote_addr").as_deref(), Some("client_ip"));
        assert_eq!(hash_key("$arg_x"), None);
    }
}
