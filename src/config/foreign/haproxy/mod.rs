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
//!   `random` (two draws by default, and `random(N)` with N >= 2, as least requests;
//!   `random(1)` as random). Anything else is noted
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

mod lists;
pub mod parse;
mod routes;
mod servers;
mod write;

use std::collections::{BTreeMap, HashMap};

use lists::{IRRELEVANT, IRRELEVANT_OPTIONS};
use routes::{Match, Route};
use servers::Server;
use std::ops::Range;

use super::Translated;
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
        if let Some(word) = line.words.iter().find(|w| w.env) {
            self.note(line, NOT_TRANSLATED, format!("{} takes {} from the environment, unknown here: the statement is not translated", line.word(0), word.text));
            return true;
        }
        let at = |ms: u64| Some((ms, line.file, line.span.clone()));
        match line.word(0) {
            "mode" => s.mode = Some(line.word(1).to_string()),
            "balance" => s.balance = Some(line.clone()),
            "hash-type" => s.hash_type = Some(line.clone()),
            "retries" => s.retries = line.word(1).parse().ok(),
            "maxconn" => s.maxconn = line.word(1).parse().ok().filter(|n| *n > 0),
            "default-server" => s.default_server.extend(line.words.iter().skip(1).cloned()),
            "default_backend" => {
                s.default_backend = Some((line.word(1).to_string(), line.clone()));
            }
            "timeout" => {
                let Some(value) = millis(line.word(2)) else {
                    self.note(line, NOT_TRANSLATED, format!("the time {:?} is not translated", line.word(2)));
                    return true;
                };
                // 0 is no timeout in HAProxy: evenkeel's default is judged instead.
                let value = if value == 0 {
                    if matches!(line.word(1), "connect" | "server" | "check" | "http-request" | "tunnel") {
                        self.note(line, APPROXIMATE, format!("timeout {} 0 is no timeout in HAProxy: judged with evenkeel's default", line.word(1)));
                    }
                    None
                } else {
                    at(value)
                };
                match line.word(1) {
                    "connect" => s.connect = value,
                    "server" => s.server = value,
                    "check" => s.check = value,
                    "http-request" => s.http_request = value,
                    "tunnel" => s.tunnel = value,
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
                    // The last check option wins: an inherited httpchk no longer applies.
                    s.http_check = None;
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
            // HAProxy answers these paths itself.
            "monitor-uri" => self.note(line, NOT_TRANSLATED, format!("monitor-uri {}: HAProxy answers this path itself; evenkeel's routes send it to a backend", line.word(1))),
            "stats" => {
                if matches!(line.word(1), "enable" | "uri") {
                    self.note(line, NOT_TRANSLATED, "the stats page: HAProxy answers its path itself (/haproxy?stats unless `stats uri`); evenkeel's routes send it to a backend");
                }
            }
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
        // HAProxy resolves an ACL's name when the section is read whole: an `acl` line
        // after the rule that uses it still adds to it.
        for line in section
            .lines
            .iter()
            .filter(|l| l.word(0) == "acl" && is_front)
        {
            if line.words.iter().any(|w| w.env) {
                continue;
            }
            let matches = self.acl(line);
            acls.entry(line.word(1).to_string())
                .or_default()
                .extend(matches.unwrap_or_default());
        }
        for line in &section.lines {
            if self.setting(line, &mut settings) {
                continue;
            }
            match line.word(0) {
                "acl" if is_front => {}
                "server" if is_back => {
                    if let Some(server) = self.server(line, &settings) {
                        servers.push(server);
                    }
                }
                "bind" if is_front => binds.push((line.word(1).to_string(), line.clone())),
                "use_backend" if is_front => {
                    if let Some(routes) = self.use_backend(line, &acls) {
                        rules.push((routes, line.clone()));
                    }
                }
                "cookie" => self.note(line, NOT_TRANSLATED, "cookie persistence is not translated: evenkeel judges the split without it (a client sticks to one server in HAProxy)"),
                "stick-table" | "stick" | "stick-on" => self.note(line, NOT_TRANSLATED, "stick tables are not translated: evenkeel judges the split without them"),
                // A rewritten Host changes which rules match; evenkeel routes on the
                // Host the client sent.
                "http-request"
                    if matches!(line.word(1), "set-header" | "add-header" | "del-header" | "replace-header" | "replace-value")
                        && line.word(2).eq_ignore_ascii_case("host") =>
                {
                    self.skip(line)
                }
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
        let mut default = default;
        if tcp {
            // The first rule without a condition takes every connection.
            let unconditional = rules.iter().position(|(_, l)| l.word(2).is_empty());
            for (_, line) in &rules[..unconditional.unwrap_or(rules.len())] {
                self.note(line, NOT_TRANSLATED, "a use_backend rule with a condition in a TCP frontend is not translated: its connections are judged as going where the frontend sends the others");
            }
            if let Some(at) = unconditional {
                let line = rules[at].1.clone();
                default = Some((line.word(1).to_string(), line));
            }
            if default.is_none() {
                self.note(&section.header, NOT_TRANSLATED, format!("TCP {kind} {name} has no default_backend: HAProxy closes its connections, and it is not judged"));
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

#[cfg(test)]
mod tests;
