//! HAProxy configs translated into evenkeel's model, for `check --from haproxy`:
//! backends become pools, frontends listeners with routes, `listen` sections both.
//!
//! What is translated, and how closely:
//! - Settings are inherited as HAProxy inherits them: each proxy starts from the last
//!   `defaults` section before it (or the one `from NAME` names), and a `default-server`
//!   line gives the server lines after it their defaults.
//! - `balance`: `roundrobin` and `static-rr` (weighted when weights differ),
//!   `leastconn`, `source`, `uri`, `hdr(NAME)` (consistent hashing on the client address,
//!   the path, a header: HAProxy maps keys to other servers than evenkeel does, and with
//!   `hash-type map-based`, its default, most keys move when a server comes or goes),
//!   `random` (`random(2)` and more draws as least requests). Anything else is noted
//!   and judged as round robin.
//! - `server ADDR`: `weight`, `disabled` (weight 0), `backup` (a backup pool: HAProxy
//!   sends to the first backup only, unless `option allbackups`), `check` with `inter`,
//!   `fall`, `rise` (active checks: HTTP with `option httpchk` / `http-check send` and
//!   `http-check expect status`, else TCP), `observe` with `error-limit` (passive
//!   checks; without `observe` HAProxy has none), `maxconn`, `slowstart`, `ssl` with
//!   `verify none`, `sni str(NAME)`, `proto h2`, `send-proxy-v2` (TCP backends).
//! - `timeout connect` and `timeout server` (as the per-try timeout: HAProxy's is an
//!   inactivity timeout and it has no whole-request one), `timeout check`,
//!   `timeout http-request` (the listener's header timeout), `timeout tunnel`;
//!   `retries` with `option redispatch` (HAProxy retries a failed connection on the
//!   same server, and on another only with `redispatch`).
//! - Frontends: `bind` addresses (TCP listeners for `mode tcp`, with `accept-proxy`),
//!   `maxconn`, `default_backend`, and `use_backend NAME if COND` where the condition
//!   is made of ACLs on `path_beg` (or `path -m beg`) and `hdr(host)`, joined by AND,
//!   OR and `||`. HAProxy takes the first rule that matches, evenkeel the most specific
//!   route: a rule an earlier one always wins over is left out (noted), and where
//!   evenkeel would prefer a later rule with a host, a route that keeps HAProxy's choice
//!   is added.
//! - Anything else that steers traffic (`http-request` actions, `cookie` and stick
//!   tables, other ACL criteria, `unless`, unix sockets, environment variables...) is a
//!   `not-translated` note at its line — never dropped in silence. Statements with no
//!   bearing on balancing (logging, stats, headers, buffers...) are skipped.

pub mod parse;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use super::{duration_text, quoted, unique_name, Translated, Writer};
use crate::config::diagnostic::Finding;
use parse::{Line, Parsed, Section};

pub use super::nginx::{APPROXIMATE, NOT_TRANSLATED};

/// Puts `finding` in HAProxy's terms where evenkeel's would not help.
pub fn reword(finding: &mut Finding) {
    if finding.rule == "hash-key-may-be-missing" {
        // HAProxy balances requests without the header round robin.
        finding.message = finding.message.replace(
            "are spread at random instead of sticking to one backend",
            "are balanced round robin by HAProxy instead of sticking to one server",
        );
    }
    let rule = if finding.rule == "undetected-failure"
        && finding.message.contains("no active health check")
    {
        "no-health-check"
    } else {
        finding.rule
    };
    if let Some(help) = help(rule) {
        finding.help = Some(help.to_string());
    }
}

fn help(rule: &str) -> Option<&'static str> {
    Some(match rule {
        "no-health-check" => "add `check` to the backend's servers (and `option httpchk GET /healthz` for an HTTP check): without it HAProxy keeps sending to a dead server",
        "single-backend-pool" => "add another server to the backend, or a `backup` server",
        "load-ratio" => "this server's `weight` sends it more than its share of the capacity: check the backend's weight values against what each server can take",
        "near-zero-weight" => "this server's `weight` is so far below the others' that it gets almost nothing: raise it, or mark the server `disabled`",
        "hash-key-may-be-missing" => "requests without this header are balanced round robin by HAProxy, not hashed: hash on something every request has (`balance source`, `balance uri`)",
        "undetected-failure" | "slow-failure-detection" => "lower the servers' `inter` and `fall`, and add `observe layer7 error-limit N on-error mark-down` so failing requests take a server out too",
        "retries-never-allowed" => "add `option redispatch` (and `retries`): without it a failed connection is retried on the same server only",
        "tunnel-idle-long" => "lower `timeout tunnel`",
        _ => return None,
    })
}

/// Statements with no bearing on balancing: skipped without a note.
const IRRELEVANT: &[&str] = &[
    "log",
    "log-format",
    "log-format-sd",
    "error-log-format",
    "log-tag",
    "capture",
    "errorfile",
    "errorfiles",
    "errorloc",
    "errorloc302",
    "errorloc303",
    "stats",
    "monitor-uri",
    "monitor",
    "compression",
    "description",
    "id",
    "unique-id-format",
    "unique-id-header",
    "http-response",
    "http-after-response",
    "http-reuse",
    "email-alert",
    "max-keep-alive-queue",
    "source",
    "rate-limit",
    "backlog",
    "grace",
    "fullconn",
    "declare",
    "filter",
    "enabled",
    "bind-process",
    "external-check",
    "load-server-state-from-file",
    "server-state-file-name",
    "http-send-name-header",
    "dispatch",
    "persist",
    "ignore-persist",
    "force-persist",
    "tcp-response",
];

/// `option` names with no bearing on balancing.
const IRRELEVANT_OPTIONS: &[&str] = &[
    "httplog",
    "tcplog",
    "httpslog",
    "dontlognull",
    "dontlog-normal",
    "log-separate-errors",
    "log-health-checks",
    "logasap",
    "forwardfor",
    "originalto",
    "http-server-close",
    "http-keep-alive",
    "httpclose",
    "http-pretend-keepalive",
    "http-no-delay",
    "http-buffer-request",
    "http-ignore-probes",
    "http-use-proxy-header",
    "abortonclose",
    "splice-auto",
    "splice-request",
    "splice-response",
    "tcpka",
    "clitcpka",
    "srvtcpka",
    "contstats",
    "socket-stats",
    "nolinger",
    "checkcache",
    "disable-h2-upgrade",
    "independent-streams",
    "accept-invalid-http-request",
    "accept-invalid-http-response",
    "h1-case-adjust-bogus-client",
    "h1-case-adjust-bogus-server",
    "tcp-smart-accept",
    "tcp-smart-connect",
    "transparent",
    "allbackups",
    "redispatch",
    "httpchk",
    "http-restrict-req-hdr-names",
    "idle-close-on-response",
];

/// Server parameters that take a value.
const SERVER_VALUES: &[&str] = &[
    "weight",
    "inter",
    "fastinter",
    "downinter",
    "fall",
    "rise",
    "maxconn",
    "maxqueue",
    "minconn",
    "slowstart",
    "port",
    "addr",
    "error-limit",
    "on-error",
    "on-marked-down",
    "on-marked-up",
    "observe",
    "cookie",
    "id",
    "ca-file",
    "crt",
    "crl-file",
    "sni",
    "verify",
    "verifyhost",
    "alpn",
    "check-alpn",
    "check-sni",
    "check-proto",
    "proto",
    "resolvers",
    "resolve-prefer",
    "resolve-net",
    "resolve-opts",
    "init-addr",
    "track",
    "agent-port",
    "agent-inter",
    "agent-addr",
    "agent-send",
    "namespace",
    "pool-max-conn",
    "pool-low-conn",
    "pool-purge-delay",
    "proxy-v2-options",
    "source",
    "usesrc",
    "tcp-ut",
    "max-reuse",
    "ciphers",
    "ciphersuites",
    "curves",
    "sigalgs",
    "client-sigalgs",
    "ssl-min-ver",
    "ssl-max-ver",
    "set-proxy-v2-tlv-fmt",
    "shard",
    "log-proto",
    "hash-key",
    "redir",
    "socks4",
    "guid",
    "ws",
];

/// Server parameters with no bearing on what evenkeel judges.
const IRRELEVANT_SERVER: &[&str] = &[
    "id",
    "resolvers",
    "resolve-prefer",
    "resolve-net",
    "resolve-opts",
    "init-addr",
    "pool-max-conn",
    "pool-low-conn",
    "pool-purge-delay",
    "tfo",
    "check-sni",
    "check-ssl",
    "no-check-ssl",
    "verifyhost",
    "ciphers",
    "ciphersuites",
    "curves",
    "sigalgs",
    "client-sigalgs",
    "ssl-min-ver",
    "ssl-max-ver",
    "source",
    "usesrc",
    "namespace",
    "tcp-ut",
    "max-reuse",
    "log-proto",
    "hash-key",
    "shard",
    "guid",
    "fastinter",
    "downinter",
    "maxqueue",
    "on-marked-up",
    "non-stick",
    "stick",
    "allow-0rtt",
    "enabled",
    "no-backup",
    "no-check",
    "no-ssl",
    "no-send-proxy",
    "no-send-proxy-v2",
    "no-agent-check",
    "no-tfo",
    "no-verifyhost",
    "check-alpn",
    "check-proto",
    "alpn",
    "proto",
    "verify",
    "sni",
    "ca-file",
    "check",
    "backup",
    "disabled",
    "ssl",
    "weight",
    "inter",
    "fall",
    "rise",
    "maxconn",
    "slowstart",
    "observe",
    "error-limit",
    "on-error",
    "send-proxy-v2",
    "ws",
];

/// A time in milliseconds, written where.
type At = (u64, usize, Range<usize>);

/// What a proxy inherits from `defaults` and may override.
#[derive(Clone, Debug, Default)]
struct Settings {
    mode: Option<String>,
    balance: Option<Line>,
    hash_type: Option<Line>,
    /// `option httpchk` / `http-check send`: method, path, Host.
    http_check: Option<(String, String, Option<String>, Line)>,
    expect_status: Option<String>,
    connect: Option<At>,
    server: Option<At>,
    check: Option<At>,
    http_request: Option<At>,
    tunnel: Option<At>,
    retries: Option<u64>,
    redispatch: bool,
    allbackups: bool,
    /// `default-server` parameters, in order.
    default_server: Vec<parse::Word>,
    default_backend: Option<(String, Line)>,
    maxconn: Option<u64>,
}

#[derive(Clone, Debug)]
struct Server {
    address: String,
    weight: u64,
    check: bool,
    inter: u64,
    fall: u64,
    rise: u64,
    backup: bool,
    maxconn: Option<u64>,
    slowstart: Option<u64>,
    ssl: bool,
    verify_none: bool,
    sni: Option<String>,
    h2: bool,
    proxy_v2: bool,
    observe: bool,
    error_limit: u64,
    file: usize,
    span: Range<usize>,
}

/// One way a request may match an ACL.
#[derive(Clone, Debug, PartialEq)]
enum Match {
    Any,
    Prefix(String),
    Host(String),
}

#[derive(Clone, Debug)]
struct Route {
    host: Option<String>,
    prefix: String,
    backend: String,
    file: usize,
    span: Range<usize>,
}

/// A frontend or listen section, read.
struct Frontend {
    name: String,
    tcp: bool,
    /// (address, accept-proxy, file, span of the bind).
    binds: Vec<(String, bool, usize, Range<usize>)>,
    routes: Vec<Route>,
    header_timeout: Option<At>,
    maxconn: Option<u64>,
}

/// A backend or listen section, read.
struct Backend {
    settings: Settings,
    servers: Vec<Server>,
    header: Line,
    tcp: bool,
}

struct Translator<'a> {
    parsed: &'a Parsed,
    notes: Vec<(usize, Finding)>,
    backends: BTreeMap<String, Backend>,
    frontends: Vec<Frontend>,
    hard_stop: Option<u64>,
    verify_none: bool,
}

/// Translates a parsed HAProxy config.
pub fn translate(parsed: &Parsed) -> Translated {
    let mut t = Translator {
        parsed,
        notes: Vec::new(),
        backends: BTreeMap::new(),
        frontends: Vec::new(),
        hard_stop: None,
        verify_none: false,
    };
    for (line, held) in &parsed.conditional {
        t.note(line, NOT_TRANSLATED, format!("a conditional block ({}) is not evaluated: evenkeel cannot know the environment it tests, so its {held} statement(s) are not translated", line.rest(0).collect::<Vec<_>>().join(" ")));
    }
    let mut last_defaults = Settings::default();
    let mut named: HashMap<String, Settings> = HashMap::new();
    for section in &parsed.sections {
        let from = from_name(section);
        let inherited = |last: &Settings| match from.as_deref() {
            Some(name) => named.get(name).cloned().unwrap_or_default(),
            None => last.clone(),
        };
        match section.kind() {
            "global" => t.global(section),
            "defaults" => {
                let mut settings = if from.is_some() {
                    inherited(&last_defaults)
                } else {
                    Settings::default()
                };
                for line in &section.lines {
                    if !t.setting(line, &mut settings) {
                        t.skip(line);
                    }
                }
                if !section.name().is_empty() && section.name() != "from" {
                    named.insert(section.name().to_string(), settings.clone());
                }
                last_defaults = settings;
            }
            "frontend" | "backend" | "listen" => {
                let settings = inherited(&last_defaults);
                t.proxy(section, settings);
            }
            _ => {}
        }
    }
    t.write()
}

/// The `from NAME` of a section header, if any.
fn from_name(section: &Section) -> Option<String> {
    let words: Vec<&str> = section.header.rest(1).collect();
    words
        .iter()
        .position(|w| *w == "from")
        .and_then(|i| words.get(i + 1))
        .map(|s| s.to_string())
}

impl Translator<'_> {
    fn note(&mut self, line: &Line, rule: &'static str, message: impl Into<String>) {
        self.notes.push((
            line.file,
            Finding::note(rule, Some(line.span.clone()), message),
        ));
    }

    fn skip(&mut self, line: &Line) {
        let message = format!(
            "`{}` is not translated: evenkeel judges the config without it",
            line.rest(0).take(2).collect::<Vec<_>>().join(" ")
        );
        self.note(line, NOT_TRANSLATED, message);
    }

    fn global(&mut self, section: &Section) {
        for line in &section.lines {
            match line.word(0) {
                "hard-stop-after" => self.hard_stop = millis(line.word(1)),
                "ssl-server-verify" => self.verify_none = line.word(1) == "none",
                _ => {}
            }
        }
    }

    /// Applies a statement that `defaults` may hold; false when it is none of those.
    fn setting(&mut self, line: &Line, s: &mut Settings) -> bool {
        let at = |ms: u64| Some((ms, line.file, line.span.clone()));
        match line.word(0) {
            "mode" => s.mode = Some(line.word(1).to_string()),
            "balance" => s.balance = Some(line.clone()),
            "hash-type" => s.hash_type = Some(line.clone()),
            "retries" => s.retries = line.word(1).parse().ok(),
            "maxconn" => s.maxconn = line.word(1).parse().ok(),
            "default-server" => s.default_server.extend(line.words.iter().skip(1).cloned()),
            "default_backend" => {
                s.default_backend = Some((line.word(1).to_string(), line.clone()));
            }
            "timeout" => {
                let value = millis(line.word(2));
                if value.is_none() {
                    self.note(line, NOT_TRANSLATED, format!("the time {:?} is not translated", line.word(2)));
                    return true;
                }
                match line.word(1) {
                    "connect" => s.connect = at(value.unwrap_or_default()),
                    "server" => s.server = at(value.unwrap_or_default()),
                    "check" => s.check = at(value.unwrap_or_default()),
                    "http-request" => s.http_request = at(value.unwrap_or_default()),
                    "tunnel" => s.tunnel = at(value.unwrap_or_default()),
                    "client" | "queue" | "http-keep-alive" | "client-fin" | "server-fin"
                    | "tarpit" => {}
                    _ => self.skip(line),
                }
            }
            "option" => match line.word(1) {
                "redispatch" => s.redispatch = true,
                "allbackups" => s.allbackups = true,
                "httpchk" => {
                    let args: Vec<&str> = line.rest(2).collect();
                    let (method, path) = match args.as_slice() {
                        [] => ("OPTIONS", "/"),
                        [path] => ("OPTIONS", *path),
                        [method, path, ..] => (*method, *path),
                    };
                    s.http_check = Some((method.to_string(), path.to_string(), None, line.clone()));
                }
                "ssl-hello-chk" | "mysql-check" | "pgsql-check" | "redis-check" | "smtpchk"
                | "ldap-check" | "spop-check" | "tcp-check" => {
                    self.note(line, APPROXIMATE, format!("option {} is taken as a TCP connect check", line.word(1)));
                }
                "prefer-last-server" => {
                    self.note(line, APPROXIMATE, "option prefer-last-server is not translated: evenkeel balances each request");
                }
                name if IRRELEVANT_OPTIONS.contains(&name) => {}
                _ => self.skip(line),
            },
            "no" if line.word(1) == "option" => match line.word(2) {
                "redispatch" => s.redispatch = false,
                "allbackups" => s.allbackups = false,
                _ => {}
            },
            "http-check" => match line.word(1) {
                "send" => {
                    let words: Vec<&str> = line.rest(2).collect();
                    let value = |key: &str| {
                        words
                            .iter()
                            .position(|w| *w == key)
                            .and_then(|i| words.get(i + 1))
                            .map(|s| s.to_string())
                    };
                    let host = words
                        .iter()
                        .position(|w| *w == "hdr")
                        .filter(|&i| words.get(i + 1).is_some_and(|h| h.eq_ignore_ascii_case("host")))
                        .and_then(|i| words.get(i + 2))
                        .map(|s| s.to_string());
                    let (method, path) = match &s.http_check {
                        Some((m, p, _, _)) => (m.clone(), p.clone()),
                        None => ("GET".to_string(), "/".to_string()),
                    };
                    s.http_check = Some((
                        value("meth").unwrap_or(method),
                        value("uri").unwrap_or(path),
                        host,
                        line.clone(),
                    ));
                }
                "expect" => {
                    let status = (line.word(2) == "status")
                        .then(|| line.word(3))
                        .filter(|v| {
                            let mut parts = v.splitn(2, '-');
                            parts.all(|p| p.len() == 3 && p.bytes().all(|b| b.is_ascii_digit()))
                        });
                    match status {
                        Some(status) => s.expect_status = Some(status.to_string()),
                        None => self.note(line, NOT_TRANSLATED, "only `http-check expect status CODE` (or a range) is translated: judged as expecting 200-399"),
                    }
                }
                "disable-on-404" | "comment" => {}
                _ => self.skip(line),
            },
            "retry-on" => self.note(line, APPROXIMATE, "retry-on is not translated: evenkeel retries connect failures, resets and 5xx of idempotent requests"),
            name if IRRELEVANT.contains(&name) => {}
            _ => return false,
        }
        true
    }

    fn proxy(&mut self, section: &Section, mut settings: Settings) {
        let kind = section.kind();
        let name = section.name().to_string();
        let mut servers = Vec::new();
        let mut acls: HashMap<String, Vec<Match>> = HashMap::new();
        let mut rules: Vec<(Vec<Route>, Line)> = Vec::new();
        let mut binds = Vec::new();
        // `listen NAME ADDR`: the old way to write a bind.
        if kind == "listen" {
            if let Some(word) = section.header.words.get(2).filter(|w| w.text != "from") {
                binds.push((word.text.clone(), section.header.clone()));
            }
        }
        let is_front = kind != "backend";
        let is_back = kind != "frontend";
        for line in &section.lines {
            if self.setting(line, &mut settings) {
                continue;
            }
            match line.word(0) {
                "server" if is_back => {
                    if let Some(server) = self.server(line, &settings) {
                        servers.push(server);
                    }
                }
                "bind" if is_front => binds.push((line.word(1).to_string(), line.clone())),
                "acl" if is_front => {
                    let matches = self.acl(line);
                    acls.entry(line.word(1).to_string())
                        .or_default()
                        .extend(matches.unwrap_or_default());
                }
                "use_backend" if is_front => {
                    if let Some(routes) = self.use_backend(line, &acls) {
                        rules.push((routes, line.clone()));
                    }
                }
                "cookie" => self.note(line, NOT_TRANSLATED, "cookie persistence is not translated: evenkeel judges the split without it (a client sticks to one server in HAProxy)"),
                "stick-table" | "stick" | "stick-on" => self.note(line, NOT_TRANSLATED, "stick tables are not translated: evenkeel judges the split without them"),
                "http-request" => {
                    if !matches!(line.word(1), "set-header" | "add-header" | "del-header" | "replace-header" | "set-var" | "unset-var" | "capture" | "set-log-level" | "track-sc0" | "track-sc1" | "track-sc2") {
                        self.skip(line);
                    }
                }
                "server-template" => self.note(line, NOT_TRANSLATED, "server-template (servers found through DNS) is not translated"),
                _ => self.skip(line),
            }
        }
        let tcp = settings.mode.as_deref() != Some("http");
        if is_back && !servers.is_empty() {
            self.backends.insert(
                name.clone(),
                Backend {
                    settings: settings.clone(),
                    servers,
                    header: section.header.clone(),
                    tcp,
                },
            );
        }
        if !is_front {
            return;
        }
        let mut listeners = Vec::new();
        for (value, line) in &binds {
            let accept_proxy = line.rest(2).any(|w| w == "accept-proxy");
            if line.rest(2).any(|w| w == "ssl") {
                self.note(line, NOT_TRANSLATED, "ssl on a bind is not translated (HAProxy's certificate files hold the key too): judged as a plain listener");
            }
            if accept_proxy && !tcp {
                self.note(line, NOT_TRANSLATED, "accept-proxy on an HTTP frontend is not translated (evenkeel accepts the PROXY protocol on TCP listeners)");
            }
            for address in value.split(',') {
                match bind_address(address) {
                    Some(address) => listeners.push((address, accept_proxy && tcp, line.file, line.span.clone())),
                    None => self.note(line, NOT_TRANSLATED, format!("bind {address} is not translated (evenkeel listens on one TCP address and port per listener)")),
                }
            }
        }
        if listeners.is_empty() {
            self.note(
                &section.header,
                NOT_TRANSLATED,
                format!(
                    "{kind} {name} has no bind evenkeel can translate: its rules are not judged"
                ),
            );
        }
        // The default: default_backend, else a listen section's own servers.
        let default = settings
            .default_backend
            .clone()
            .or_else(|| (kind == "listen").then(|| (name.clone(), section.header.clone())));
        if tcp {
            for (_, line) in &rules {
                self.note(line, NOT_TRANSLATED, "use_backend in a TCP frontend is not translated: its connections are judged as going to the default backend");
            }
            rules.clear();
        }
        if let Some((backend, line)) = default {
            rules.push((
                vec![Route {
                    host: None,
                    prefix: "/".into(),
                    backend,
                    file: line.file,
                    span: line.span.clone(),
                }],
                line,
            ));
        }
        let routes = self.ordered(rules);
        self.frontends.push(Frontend {
            name,
            tcp,
            binds: listeners,
            routes,
            header_timeout: settings.http_request.clone(),
            maxconn: settings.maxconn,
        });
    }

    /// HAProxy's first-match order made into evenkeel's most-specific routes: a route
    /// an earlier one always wins over is left out, and where evenkeel would prefer a
    /// later route with a host over an earlier one without, a route keeping HAProxy's
    /// choice is added.
    fn ordered(&mut self, rules: Vec<(Vec<Route>, Line)>) -> Vec<Route> {
        let mut kept: Vec<Route> = Vec::new();
        for (routes, line) in rules {
            for route in routes {
                let covered = kept.iter().find(|k| {
                    (k.host.is_none() || k.host == route.host)
                        && route.prefix.starts_with(&k.prefix)
                });
                if let Some(earlier) = covered {
                    let at = self.parsed.sources[earlier.file]
                        .locate(earlier.span.start)
                        .line;
                    self.note(&line, NOT_TRANSLATED, format!("never reached for {}{}: HAProxy sends those requests to {} by the rule at line {at}", route.host.as_deref().unwrap_or("any host"), route.prefix, earlier.backend));
                    continue;
                }
                let mut added = Vec::new();
                if route.host.is_some() {
                    for earlier in kept
                        .iter()
                        .filter(|k| k.host.is_none() && k.prefix.starts_with(&route.prefix))
                    {
                        let keep = Route {
                            host: route.host.clone(),
                            ..earlier.clone()
                        };
                        if !kept
                            .iter()
                            .any(|k| k.host == keep.host && k.prefix == keep.prefix)
                        {
                            added.push(keep);
                        }
                    }
                }
                kept.extend(added);
                kept.push(route);
            }
        }
        kept
    }

    /// The matches of an `acl` line; None (noted) when evenkeel cannot route on it.
    fn acl(&mut self, line: &Line) -> Option<Vec<Match>> {
        let criterion = line.word(2).to_ascii_lowercase();
        let mut words = line.rest(3).peekable();
        let mut method = None;
        while let Some(flag) = words.peek().copied().filter(|w| w.starts_with('-')) {
            words.next();
            match flag {
                "--" => break,
                "-i" | "-n" | "-M" => {}
                "-m" => method = words.next().map(str::to_string),
                "-f" | "-u" => {
                    self.note(
                        line,
                        NOT_TRANSLATED,
                        format!(
                            "acl {} reads its values from a file or by id ({flag}): not translated",
                            line.word(1)
                        ),
                    );
                    return None;
                }
                _ => break,
            }
        }
        let values: Vec<String> = words.map(str::to_string).collect();
        let host_header = matches!(
            criterion.as_str(),
            "hdr(host)" | "req.hdr(host)" | "hdr(host,-1)" | "req.hdr(host,-1)"
        );
        let matches: Vec<Match> = match (criterion.as_str(), method.as_deref()) {
            ("path_beg", None) | ("path", Some("beg")) => {
                for value in values.iter().filter(|v| !v.ends_with('/')) {
                    self.note(line, APPROXIMATE, format!("path_beg {value} also matches {value}x...; evenkeel's prefix {value} matches only at a / ({value} and {value}/...)"));
                }
                values.iter().map(|v| Match::Prefix(v.clone())).collect()
            }
            (_, None | Some("str")) if host_header => values
                .iter()
                .map(|v| Match::Host(v.to_ascii_lowercase()))
                .collect(),
            ("always_true" | "true", _) => vec![Match::Any],
            _ => {
                self.note(line, NOT_TRANSLATED, format!("acl {} on {criterion} is not translated (evenkeel routes on path prefixes and exact host names)", line.word(1)));
                return None;
            }
        };
        if matches
            .iter()
            .any(|m| matches!(m, Match::Prefix(p) if !p.starts_with('/')))
        {
            self.note(
                line,
                NOT_TRANSLATED,
                format!("acl {}: a path prefix must start with /", line.word(1)),
            );
            return None;
        }
        Some(matches)
    }

    /// The routes of a `use_backend` rule; None (noted) when its condition cannot be
    /// routed on.
    fn use_backend(
        &mut self,
        line: &Line,
        acls: &HashMap<String, Vec<Match>>,
    ) -> Option<Vec<Route>> {
        let backend = line.word(1).to_string();
        if backend.contains("%[") || line.words.get(1).is_some_and(|w| w.env) {
            self.note(
                line,
                NOT_TRANSLATED,
                "use_backend with a dynamic name is not translated",
            );
            return None;
        }
        let condition: Vec<&str> = line.rest(3).collect();
        let untranslated = |t: &mut Self, why: &str| {
            t.note(line, NOT_TRANSLATED, format!("this use_backend rule is not translated ({why}): requests it sends to {backend} are judged as going elsewhere"));
            None
        };
        match line.word(2) {
            "if" => {}
            "" => {
                return Some(vec![Route {
                    host: None,
                    prefix: "/".into(),
                    backend: backend.clone(),
                    file: line.file,
                    span: line.span.clone(),
                }]);
            }
            "unless" => return untranslated(self, "an `unless` condition"),
            _ => return untranslated(self, "an unknown condition"),
        }
        // OR of terms, each an AND of ACLs: every combination is a route.
        let mut routes = Vec::new();
        let mut term: Vec<Vec<Match>> = Vec::new();
        let mut words = condition.iter().peekable();
        let mut terms = Vec::new();
        while let Some(word) = words.next() {
            match *word {
                "||" | "or" => terms.push(std::mem::take(&mut term)),
                "{" => {
                    let mut inner = Vec::new();
                    for w in words.by_ref() {
                        if *w == "}" {
                            break;
                        }
                        inner.push(*w);
                    }
                    let anonymous = Line {
                        words: ["acl", "-"]
                            .iter()
                            .chain(inner.iter())
                            .map(|w| parse::Word {
                                text: w.to_string(),
                                span: line.span.clone(),
                                env: false,
                            })
                            .collect(),
                        file: line.file,
                        span: line.span.clone(),
                    };
                    match self.acl(&anonymous) {
                        Some(m) => term.push(m),
                        None => {
                            return untranslated(self, "an anonymous ACL evenkeel cannot route on")
                        }
                    }
                }
                name if name.starts_with('!') => return untranslated(self, "a negated ACL"),
                name => match acls.get(name) {
                    Some(m) if !m.is_empty() => term.push(m.clone()),
                    _ => {
                        return untranslated(
                            self,
                            &format!("ACL {name} is not one evenkeel can route on"),
                        )
                    }
                },
            }
        }
        terms.push(term);
        for term in terms {
            let mut combos: Vec<(Option<String>, Option<String>, bool)> = vec![(None, None, true)];
            for alternatives in term {
                let mut next = Vec::new();
                for (host, prefix, ok) in &combos {
                    for m in &alternatives {
                        let (mut host, mut prefix, mut ok) = (host.clone(), prefix.clone(), *ok);
                        match m {
                            Match::Any => {}
                            Match::Host(h) => {
                                ok &= host.as_ref().is_none_or(|x| x == h);
                                host = Some(h.clone());
                            }
                            Match::Prefix(p) => match &prefix {
                                Some(q) if p.starts_with(q.as_str()) => prefix = Some(p.clone()),
                                Some(q) if q.starts_with(p.as_str()) => {}
                                Some(_) => ok = false,
                                None => prefix = Some(p.clone()),
                            },
                        }
                        next.push((host, prefix, ok));
                    }
                }
                combos = next;
                if combos.len() > 1000 {
                    return untranslated(self, "more than 1000 combinations of hosts and paths");
                }
            }
            for (host, prefix, ok) in combos {
                if !ok {
                    continue;
                }
                let host = host.map(|h| h.split(':').next().unwrap_or_default().to_string());
                routes.push(Route {
                    host,
                    prefix: prefix.unwrap_or_else(|| "/".into()),
                    backend: backend.clone(),
                    file: line.file,
                    span: line.span.clone(),
                });
            }
        }
        Some(routes)
    }

    /// A `server` line with the `default-server` parameters before it.
    fn server(&mut self, line: &Line, settings: &Settings) -> Option<Server> {
        let address_word = line.words.get(2)?;
        if address_word.env {
            self.note(
                line,
                NOT_TRANSLATED,
                "a server address from an environment variable is not translated",
            );
            return None;
        }
        let Some((address, port_known)) = server_address(&address_word.text) else {
            self.note(
                line,
                NOT_TRANSLATED,
                format!(
                    "server address {} is not translated (evenkeel balances TCP addresses)",
                    address_word.text
                ),
            );
            return None;
        };
        if !port_known {
            self.note(line, APPROXIMATE, format!("server {} has no fixed port (HAProxy connects to the port the client connected to): judged at {address}", line.word(1)));
        }
        let mut server = Server {
            address,
            weight: 1,
            check: false,
            inter: 2000,
            fall: 3,
            rise: 2,
            backup: false,
            maxconn: None,
            slowstart: None,
            ssl: false,
            verify_none: self.verify_none,
            sni: None,
            h2: false,
            proxy_v2: false,
            observe: false,
            error_limit: 10,
            file: line.file,
            span: line.span.clone(),
        };
        let params: Vec<&parse::Word> = settings
            .default_server
            .iter()
            .chain(line.words.iter().skip(3))
            .collect();
        let mut i = 0;
        while i < params.len() {
            let key = params[i].text.as_str();
            let value = params.get(i + 1).map_or("", |w| w.text.as_str());
            i += if SERVER_VALUES.contains(&key) { 2 } else { 1 };
            let number = || value.parse::<u64>().ok();
            match key {
                "weight" => server.weight = number().unwrap_or(1).min(256),
                "check" => server.check = true,
                "no-check" => server.check = false,
                "inter" => server.inter = millis(value).unwrap_or(2000),
                "fall" => server.fall = number().unwrap_or(3),
                "rise" => server.rise = number().unwrap_or(2),
                "backup" => server.backup = true,
                "no-backup" => server.backup = false,
                "disabled" => server.weight = 0,
                "maxconn" => server.maxconn = number().filter(|n| *n > 0),
                "slowstart" => server.slowstart = millis(value),
                "ssl" => server.ssl = true,
                "no-ssl" => server.ssl = false,
                "verify" => server.verify_none = value == "none",
                "sni" => match value.strip_prefix("str(").and_then(|v| v.strip_suffix(')')) {
                    Some(name) => server.sni = Some(name.to_string()),
                    None => self.note(
                        line,
                        NOT_TRANSLATED,
                        format!("sni {value} is not translated (evenkeel sends a fixed name)"),
                    ),
                },
                "proto" => server.h2 = value == "h2",
                "alpn" => server.h2 = value.split(',').next() == Some("h2"),
                "send-proxy-v2" => server.proxy_v2 = true,
                "observe" => server.observe = matches!(value, "layer4" | "layer7"),
                "error-limit" => server.error_limit = number().unwrap_or(10),
                "on-error" => {}
                "ca-file" => self.note(
                    line,
                    APPROXIMATE,
                    format!("ca-file {value} is not translated: judged against the system's roots"),
                ),
                "send-proxy" | "send-proxy-v2-ssl" | "send-proxy-v2-ssl-cn" => self.note(
                    line,
                    NOT_TRANSLATED,
                    format!("{key} is not translated (evenkeel sends PROXY v2 to TCP pools)"),
                ),
                "track" | "agent-check" | "port" | "addr" | "cookie" | "crt" | "redir"
                | "minconn" | "on-marked-down" | "socks4" | "ws" => {
                    self.note(
                        line,
                        NOT_TRANSLATED,
                        format!("server parameter {key} is not translated"),
                    );
                }
                _ if IRRELEVANT_SERVER.contains(&key) || SERVER_VALUES.contains(&key) => {}
                other => self.note(
                    line,
                    NOT_TRANSLATED,
                    format!("server parameter {other} is not translated"),
                ),
            }
        }
        Some(server)
    }

    fn write(mut self) -> Translated {
        let mut taken = HashSet::new();
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        let mut backups: BTreeMap<String, String> = BTreeMap::new();
        for (key, backend) in &self.backends {
            if backend.servers.iter().all(|s| s.backup) {
                self.notes.push((
                    backend.header.file,
                    Finding::note(
                        NOT_TRANSLATED,
                        Some(backend.header.span.clone()),
                        format!("backend {key} has backup servers only: not judged"),
                    ),
                ));
                continue;
            }
            let name = unique_name(key, &mut taken);
            if backend.servers.iter().any(|s| s.backup) {
                backups.insert(
                    key.clone(),
                    unique_name(&format!("{name}-backup"), &mut taken),
                );
            }
            names.insert(key.clone(), name);
        }
        let mut w = Writer::default();
        w.line(
            &format!(
                "# Translated from HAProxy ({}) by evenkeel.",
                self.parsed.sources[0].path.display()
            ),
            None,
        );
        // HAProxy lets connections finish at a soft stop (unless hard-stop-after):
        // never shorter than the longest request.
        let longest = self
            .backends
            .values()
            .map(|b| request_timeout(&b.settings))
            .max()
            .unwrap_or(30_000);
        let drain = self.hard_stop.unwrap_or(longest);
        w.line(
            &format!("drain_timeout = {}", quoted(&duration_text(drain))),
            None,
        );
        let mut listener_names = HashSet::new();
        let frontends = std::mem::take(&mut self.frontends);
        for frontend in &frontends {
            let mut listeners = Vec::new();
            for (address, accept_proxy, file, span) in &frontend.binds {
                let origin = Some((*file, span));
                let name = unique_name(&frontend.name, &mut listener_names);
                w.line("[[listener]]", origin);
                w.line(&format!("name = {}", quoted(&name)), origin);
                w.line(&format!("listen = {}", quoted(address)), origin);
                if let Some((ms, file, span)) = &frontend.header_timeout {
                    w.line(
                        &format!("header_timeout = {}", quoted(&duration_text(*ms))),
                        Some((*file, span)),
                    );
                }
                if let Some(maxconn) = frontend.maxconn {
                    w.line(&format!("max_connections = {maxconn}"), origin);
                }
                if frontend.tcp {
                    w.line("mode = \"tcp\"", origin);
                    let pool = frontend.routes.first().and_then(|r| names.get(&r.backend));
                    match pool {
                        Some(pool) => w.line(&format!("pool = {}", quoted(pool)), origin),
                        None => {
                            // A TCP listener needs its pool: without one nothing is judged.
                            w.text
                                .truncate(w.text.rfind("[[listener]]").unwrap_or(w.text.len()));
                            w.origins.retain(|(range, _, _)| range.end <= w.text.len());
                            continue;
                        }
                    }
                    if *accept_proxy {
                        w.line("accept_proxy_protocol = true", origin);
                    }
                }
                w.line("", None);
                listeners.push(name);
            }
            if frontend.tcp {
                continue;
            }
            for listener in &listeners {
                for route in &frontend.routes {
                    let Some(pool) = names.get(&route.backend) else {
                        continue;
                    };
                    let origin = Some((route.file, &route.span));
                    w.line("[[route]]", origin);
                    w.line(&format!("listener = {}", quoted(listener)), origin);
                    if let Some(host) = &route.host {
                        w.line(&format!("host = {}", quoted(host)), origin);
                    }
                    w.line(&format!("path_prefix = {}", quoted(&route.prefix)), origin);
                    w.line(&format!("pool = {}", quoted(pool)), origin);
                    w.line("", None);
                }
            }
        }
        for frontend in &frontends {
            for route in &frontend.routes {
                if !self.backends.contains_key(&route.backend) {
                    self.notes.push((route.file, Finding::note(NOT_TRANSLATED, Some(route.span.clone()), format!("backend {} has no server evenkeel can balance: these requests are not judged", route.backend))));
                }
            }
        }
        let backends = std::mem::take(&mut self.backends);
        for (key, backend) in &backends {
            let Some(name) = names.get(key) else {
                continue;
            };
            let (main, backup): (Vec<&Server>, Vec<&Server>) =
                backend.servers.iter().partition(|s| !s.backup);
            let backup_name = backups.get(key);
            self.pool(
                &mut w,
                name,
                backend,
                &main,
                backup_name.map(String::as_str),
            );
            if let Some(backup_name) = backup_name {
                if !backend.settings.allbackups && backup.len() > 1 {
                    self.notes.push((backend.header.file, Finding::note(APPROXIMATE, Some(backend.header.span.clone()), format!("HAProxy sends to the first usable backup server of {key} only (no `option allbackups`); evenkeel's backup pool balances over all of them"))));
                }
                self.pool(&mut w, backup_name, backend, &backup, None);
            }
        }
        let mut seen = HashSet::new();
        self.notes
            .retain(|(file, f)| seen.insert((*file, f.span.clone(), f.message.clone())));
        Translated {
            product: "HAProxy",
            text: w.text,
            origins: w.origins,
            sources: self.parsed.sources.clone(),
            notes: self.notes,
            made_up: backups.into_values().collect(),
        }
    }

    fn pool(
        &mut self,
        w: &mut Writer,
        name: &str,
        backend: &Backend,
        servers: &[&Server],
        backup: Option<&str>,
    ) {
        let header = &backend.header;
        let origin = Some((header.file, &header.span));
        let s = &backend.settings;
        w.line(&format!("[pool.{}]", quoted(name)), origin);
        let (algorithm, hash_key) = self.algorithm(s, servers);
        let balance_origin = s.balance.as_ref().map(|l| (l.file, &l.span)).or(origin);
        w.line(
            &format!("algorithm = {}", quoted(algorithm)),
            balance_origin,
        );
        if let Some(key) = hash_key {
            w.line(&format!("hash_key = {}", quoted(&key)), balance_origin);
        }
        if let Some(backup) = backup {
            w.line(&format!("backup = {}", quoted(backup)), origin);
        }
        let first = servers[0];
        let differ = |f: &dyn Fn(&Server) -> String| servers.iter().any(|x| f(x) != f(first));
        if first.slowstart.is_some() {
            w.line(
                &format!(
                    "slow_start = {}",
                    quoted(&duration_text(first.slowstart.unwrap_or_default()))
                ),
                Some((first.file, &first.span)),
            );
        }
        if first.h2 {
            let protocol = if first.ssl { "h2" } else { "h2c" };
            w.line(
                &format!("protocol = {}", quoted(protocol)),
                Some((first.file, &first.span)),
            );
        }
        if first.proxy_v2 {
            if backend.tcp {
                w.line("proxy_protocol = \"v2\"", Some((first.file, &first.span)));
            } else {
                self.notes.push((first.file, Finding::note(NOT_TRANSLATED, Some(first.span.clone()), "send-proxy-v2 to an HTTP backend is not translated (evenkeel sends PROXY v2 to TCP pools)")));
            }
        }
        if first.ssl {
            let mut tls = Vec::new();
            if let Some(sni) = &first.sni {
                tls.push(format!("sni = {}", quoted(sni)));
            }
            if first.verify_none {
                tls.push("verify = false".to_string());
            }
            w.line(
                &format!("tls = {{ {} }}", tls.join(", ")),
                Some((first.file, &first.span)),
            );
        }
        // HAProxy has no whole-request timeout; evenkeel wants connect <= per_try <=
        // request.
        if s.connect.is_some() || s.server.is_some() {
            let connect = s.connect.as_ref().map(|(ms, _, _)| *ms);
            let per_try = s
                .server
                .as_ref()
                .map_or(30_000, |(ms, _, _)| *ms)
                .max(connect.unwrap_or(0));
            let mut timeouts = Vec::new();
            if let Some(connect) = connect {
                timeouts.push(format!("connect = {}", quoted(&duration_text(connect))));
            }
            timeouts.push(format!("per_try = {}", quoted(&duration_text(per_try))));
            timeouts.push(format!(
                "request = {}",
                quoted(&duration_text(request_timeout(s)))
            ));
            if let Some((ms, _, _)) = &s.tunnel {
                timeouts.push(format!("tunnel_idle = {}", quoted(&duration_text(*ms))));
            }
            let at = s
                .server
                .as_ref()
                .or(s.connect.as_ref())
                .map(|(_, f, span)| (*f, span))
                .or(origin);
            w.line(&format!("timeouts = {{ {} }}", timeouts.join(", ")), at);
        } else if let Some((ms, file, span)) = &s.tunnel {
            w.line(
                &format!(
                    "timeouts = {{ tunnel_idle = {} }}",
                    quoted(&duration_text(*ms))
                ),
                Some((*file, span)),
            );
        }
        // HAProxy retries a failed connection on the same server; `option redispatch`
        // lets a retry go to another.
        let attempts = match (s.retries.unwrap_or(3), s.redispatch) {
            (0, _) | (_, false) => 0,
            (_, true) => 1,
        };
        w.line(&format!("retries = {{ attempts = {attempts} }}"), origin);
        if let Some(maxconn) = first.maxconn {
            w.line(
                &format!(
                    "limits = {{ max_connections = {} }}",
                    maxconn.min(1_000_000)
                ),
                Some((first.file, &first.span)),
            );
        }
        w.line("backends = [", origin);
        for server in servers {
            w.line(
                &format!(
                    "  {{ address = {}, weight = {} }},",
                    quoted(&server.address),
                    server.weight
                ),
                Some((server.file, &server.span)),
            );
        }
        w.line("]", origin);
        if differ(&|x| {
            format!(
                "{}/{}/{}/{}/{:?}/{:?}/{}",
                x.check, x.inter, x.fall, x.rise, x.maxconn, x.slowstart, x.observe
            )
        }) {
            self.notes.push((header.file, Finding::note(APPROXIMATE, Some(header.span.clone()), format!("the servers of backend {} differ in check, inter, fall, rise, maxconn, slowstart or observe: judged with the first server's", header.word(1)))));
        }
        let checked = servers.iter().find(|x| x.check);
        if let Some(checked) = checked {
            let at = Some((checked.file, &checked.span));
            w.line(&format!("[pool.{}.health]", quoted(name)), at);
            match &s.http_check {
                Some((method, path, host, line)) => {
                    let at = Some((line.file, &line.span));
                    w.line("type = \"http\"", at);
                    w.line(&format!("method = {}", quoted(method)), at);
                    w.line(&format!("path = {}", quoted(path)), at);
                    if let Some(host) = host {
                        w.line(&format!("host = {}", quoted(host)), at);
                    }
                    if let Some(status) = &s.expect_status {
                        w.line(&format!("expect_status = {}", quoted(status)), at);
                    }
                }
                _ => w.line("type = \"tcp\"", at),
            }
            let timeout = s
                .check
                .as_ref()
                .map_or(checked.inter, |(ms, _, _)| *ms)
                .min(checked.inter);
            w.line(
                &format!(
                    "interval = {}",
                    quoted(&duration_text(checked.inter.max(1)))
                ),
                at,
            );
            w.line(
                &format!("timeout = {}", quoted(&duration_text(timeout.max(1)))),
                at,
            );
            w.line(&format!("healthy_after = {}", checked.rise.max(1)), at);
            w.line(&format!("unhealthy_after = {}", checked.fall.max(1)), at);
        }
        w.line(
            &format!("[pool.{}.outlier]", quoted(name)),
            Some((first.file, &first.span)),
        );
        if first.observe {
            w.line(
                &format!("consecutive_failures = {}", first.error_limit.max(1)),
                Some((first.file, &first.span)),
            );
            let ejection = first.rise.max(1).saturating_mul(first.inter).max(1000);
            w.line(
                &format!("ejection = {}", quoted(&duration_text(ejection))),
                Some((first.file, &first.span)),
            );
            self.notes.push((first.file, Finding::note(APPROXIMATE, Some(first.span.clone()), "observe with error-limit is taken as evenkeel's passive checks: ejected after that many consecutive errors, for rise × inter")));
        } else {
            // Without `observe`, HAProxy takes no server out for failing requests.
            w.line("consecutive_failures = 0", Some((first.file, &first.span)));
        }
        w.line("", None);
    }

    /// evenkeel's algorithm (and hash key) for a backend's `balance`.
    fn algorithm(&mut self, s: &Settings, servers: &[&Server]) -> (&'static str, Option<String>) {
        let weighted = servers.iter().any(|x| x.weight != servers[0].weight);
        let round_robin = if weighted {
            "weighted_round_robin"
        } else {
            "round_robin"
        };
        let Some(line) = s.balance.clone() else {
            return (round_robin, None);
        };
        let map_based = s
            .hash_type
            .as_ref()
            .is_none_or(|l| l.word(1) != "consistent");
        let hashed = |t: &mut Self, key: &str| {
            let how = if map_based {
                "map-based, HAProxy's default: most keys move when a server comes or goes"
            } else {
                "consistent"
            };
            t.note(&line, APPROXIMATE, format!("balance {} ({how}) is taken as evenkeel's consistent hashing on {key}: keys land on other servers than HAProxy's", line.word(1)));
        };
        let algorithm = line.word(1).to_ascii_lowercase();
        match algorithm.as_str() {
            "roundrobin" | "static-rr" => (round_robin, None),
            "leastconn" => ("least_connections", None),
            "source" => {
                hashed(self, "the client address");
                ("consistent_hash", Some("client_ip".into()))
            }
            "uri" => {
                hashed(self, "the path");
                ("consistent_hash", Some("path".into()))
            }
            "random" => ("random", None),
            a if a.starts_with("random(") => {
                let draws: u64 = a
                    .trim_start_matches("random(")
                    .trim_end_matches(')')
                    .parse()
                    .unwrap_or(2);
                if draws >= 2 {
                    self.note(&line, APPROXIMATE, format!("balance {a} is taken as evenkeel's least_request (the power of two choices)"));
                    ("least_request", None)
                } else {
                    ("random", None)
                }
            }
            a if a.starts_with("hdr(") && a.ends_with(')') => {
                let header = &line.word(1)[4..line.word(1).len() - 1];
                hashed(self, &format!("the {header} header"));
                (
                    "consistent_hash",
                    Some(format!("header:{}", header.to_ascii_lowercase())),
                )
            }
            _ => {
                self.note(
                    &line,
                    NOT_TRANSLATED,
                    format!(
                        "balance {} is not translated: judged as round robin",
                        line.word(1)
                    ),
                );
                (round_robin, None)
            }
        }
    }
}

/// The whole-request timeout evenkeel is given for a backend: its per-try timeout (the
/// server timeout, HAProxy's inactivity timeout) or 30 s, whichever is longer.
fn request_timeout(s: &Settings) -> u64 {
    let connect = s.connect.as_ref().map_or(0, |(ms, _, _)| *ms);
    let server = s.server.as_ref().map_or(30_000, |(ms, _, _)| *ms);
    server.max(connect).max(30_000)
}

/// An HAProxy time (`5000`: milliseconds, `5s`, `2m`, `1h`, `1d`, `100us`) in
/// milliseconds (microseconds round up).
pub fn millis(value: &str) -> Option<u64> {
    let digits = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    if digits == 0 {
        return None;
    }
    let n: u64 = value[..digits].parse().ok()?;
    let unit: u64 = match &value[digits..] {
        "" | "ms" => 1,
        "us" => return Some(n.div_ceil(1000)),
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// A bind address as `host:port`; None for what evenkeel cannot listen on (unix
/// sockets, inherited descriptors, port ranges).
fn bind_address(value: &str) -> Option<String> {
    let value = value
        .strip_prefix("ipv4@")
        .or_else(|| value.strip_prefix("ipv6@"))
        .or_else(|| value.strip_prefix("tcp@"))
        .or_else(|| value.strip_prefix("tcp4@"))
        .or_else(|| value.strip_prefix("tcp6@"))
        .unwrap_or(value);
    if value.contains('@') || value.starts_with('/') {
        return None;
    }
    let (host, port) = value.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let host = match host {
        "" | "*" => "0.0.0.0".to_string(),
        "::" => "[::]".to_string(),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        h => h.to_string(),
    };
    Some(format!("{host}:{port}"))
}

/// A server address as `host:port`, and whether its port is fixed; None for what
/// evenkeel cannot balance (unix sockets and the like).
fn server_address(value: &str) -> Option<(String, bool)> {
    let value = value
        .strip_prefix("ipv4@")
        .or_else(|| value.strip_prefix("ipv6@"))
        .unwrap_or(value);
    if value.contains('@') || value.starts_with('/') || value.is_empty() {
        return None;
    }
    let (host, port) = match value.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host, Some(port))
        }
        _ if value.starts_with('[') || !value.contains(':') => (value.trim_end_matches(':'), None),
        Some((host, _)) => (host, None),
        None => (value, None),
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if host.is_empty() {
        return None;
    }
    Some(match port {
        Some(port) => (format!("{host}:{port}"), true),
        None => (format!("{host}:80"), false),
    })
}

#[cfg(test)]
mod tests;
