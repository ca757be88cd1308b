//! The translated HAProxy config written as evenkeel TOML: listeners, routes, pools.

use std::collections::{BTreeMap, HashSet};

use super::servers::Server;
use super::{Backend, Settings, Translator, APPROXIMATE, NOT_TRANSLATED};
use crate::config::diagnostic::Finding;
use crate::config::foreign::{comment, duration_text, quoted, unique_name, Translated, Writer};

impl Translator<'_> {
    pub(super) fn write(mut self) -> Translated {
        let mut taken = HashSet::new();
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        let mut backups: BTreeMap<String, String> = BTreeMap::new();
        // Backup servers that take no traffic are no backup; every active server
        // disabled or of weight 0: HAProxy serves the first usable backup (all of them
        // with `option allbackups`), or nothing.
        let mut serving_nothing = Vec::new();
        for (key, backend) in self.backends.iter_mut() {
            let header = (backend.header.file, backend.header.span.clone());
            backend
                .servers
                .retain(|s| !s.backup || s.served_weight() > 0);
            let active_dead = backend
                .servers
                .iter()
                .filter(|s| !s.backup)
                .all(|s| s.served_weight() == 0);
            if !active_dead {
                continue;
            }
            backend.servers.retain(|s| s.backup);
            if backend.servers.is_empty() {
                serving_nothing.push(key.clone());
                self.notes.push((header.0, Finding::note(NOT_TRANSLATED, Some(header.1), format!("no server of backend {key} takes traffic (all disabled or of weight 0): HAProxy answers 503, and it is not judged"))));
                continue;
            }
            let promoted = if backend.settings.allbackups {
                backend.servers.len()
            } else {
                1
            };
            for server in backend.servers.iter_mut().take(promoted) {
                server.backup = false;
            }
            self.notes.push((header.0, Finding::note(APPROXIMATE, Some(header.1), format!("every active server of backend {key} is disabled or of weight 0: judged as the backup server(s) HAProxy serves then"))));
        }
        for key in serving_nothing {
            self.backends.remove(&key);
        }
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
                comment(&self.parsed.sources[0].path.display().to_string())
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
        let mut bound: std::collections::HashMap<String, String> = Default::default();
        let frontends = std::mem::take(&mut self.frontends);
        for frontend in &frontends {
            let mut listeners = Vec::new();
            // A TCP listener needs its pool: without one nothing is judged.
            let tcp_pool = frontend.routes.first().and_then(|r| names.get(&r.backend));
            if frontend.tcp && tcp_pool.is_none() {
                continue;
            }
            for (address, accept_proxy, file, span) in &frontend.binds {
                let origin = Some((*file, span));
                // HAProxy binds an address twice (SO_REUSEPORT: the kernel splits the
                // connections); evenkeel listens once.
                if let Some(first) = bound.get(address) {
                    self.notes.push((*file, Finding::note(NOT_TRANSLATED, Some(span.clone()), format!("{address} is bound by frontend {first} too (HAProxy lets the kernel split connections between them): judged as {first}'s only"))));
                    continue;
                }
                bound.insert(address.clone(), frontend.name.clone());
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
                    if let Some(pool) = tcp_pool {
                        w.line(&format!("pool = {}", quoted(pool)), origin);
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
        if attempts > 0 {
            self.notes.push((header.file, Finding::note(APPROXIMATE, Some(header.span.clone()), "option redispatch is taken as one retry on another server: HAProxy retries failed connections only (retry-on conn-failure), evenkeel also 502, 503 and 504 answers of idempotent requests")));
        }
        // HAProxy has no panic mode: a server marked down gets nothing, however few
        // are left.
        w.line("panic_threshold = 0", origin);
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
                    server.served_weight()
                ),
                Some((server.file, &server.span)),
            );
        }
        w.line("]", origin);
        if differ(&|x| {
            format!(
                "{}/{}/{}/{}/{:?}/{:?}/{}/{}/{}/{:?}/{}/{}/{}",
                x.check,
                x.inter,
                x.fall,
                x.rise,
                x.maxconn,
                x.slowstart,
                x.observe,
                x.error_limit,
                x.ssl,
                x.sni,
                x.verify_none,
                x.h2,
                x.proxy_v2
            )
        }) {
            self.notes.push((header.file, Finding::note(APPROXIMATE, Some(header.span.clone()), format!("the servers of backend {} differ in check, inter, fall, rise, maxconn, slowstart, observe, ssl, sni, verify, proto or send-proxy-v2: judged with the first server's", header.word(1)))));
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
        let weighted = servers
            .iter()
            .any(|x| x.served_weight() != servers[0].served_weight());
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
                "consistent: HAProxy's ring can split keys unevenly over few servers, 44/56 over two in a test here"
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
            // HAProxy draws two servers by default and keeps the less loaded.
            a if a == "random" || a.starts_with("random(") => {
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
