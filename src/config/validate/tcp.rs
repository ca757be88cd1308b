//! TCP (L4) listeners and their pools: `mode = "tcp"` with `pool` on a listener,
//! `accept_proxy_protocol`, and `proxy_protocol = "v2"` on a pool.
//!
//! A TCP listener names its pool directly; in the validated model it becomes that
//! listener's one route (any host, prefix `/`), so everything that reads routes to learn
//! which pools take traffic — `simulate`, `plan`, the failure analysis, the lints —
//! treats a TCP pool like an HTTP one. What stays apart: a pool carries one kind of
//! traffic (its unit is the request or the connection, and an HTTP health check means
//! nothing to a database), so a pool is never both a TCP listener's and an HTTP
//! route's, and a backup carries the same kind as the pool it backs.

use super::*;

impl Validator {
    /// A listener's `mode`, and whether it reads a PROXY header: errors for what does
    /// not fit its mode (`pool` on an HTTP listener, `tls` on a TCP one...).
    pub(super) fn listener_mode(&mut self, l: &RawListener) -> (ListenerMode, bool) {
        let mode = match &l.mode {
            None => ListenerMode::Http,
            Some(m) if m.get_ref() == "http" => ListenerMode::Http,
            Some(m) if m.get_ref() == "tcp" => ListenerMode::Tcp,
            Some(m) => {
                self.error(
                    "invalid-value",
                    m.span(),
                    format!("`listener.mode` {:?} is not a mode", m.get_ref()),
                    "use mode = \"http\" (the default) or mode = \"tcp\"",
                );
                ListenerMode::Http
            }
        };
        let accept = l.accept_proxy_protocol.as_ref();
        match mode {
            ListenerMode::Http => {
                if let Some(pool) = &l.pool {
                    self.error(
                        "invalid-value",
                        pool.span(),
                        "`pool` on an HTTP listener: HTTP listeners send requests to pools through [[route]]".into(),
                        "add a [[route]] with this pool, or set mode = \"tcp\" to balance connections to it",
                    );
                }
                if let Some(accept) = accept.filter(|a| *a.get_ref()) {
                    self.error(
                        "invalid-value",
                        accept.span(),
                        "`accept_proxy_protocol` is for mode = \"tcp\" listeners".into(),
                        "remove it, or set mode = \"tcp\" on this listener",
                    );
                }
            }
            ListenerMode::Tcp => {
                let at = l.mode.as_ref().map_or(0..0, |m| m.span());
                if l.pool.is_none() {
                    self.error(
                        "missing-field",
                        at.clone(),
                        "a mode = \"tcp\" listener needs `pool`: the pool its connections are balanced to".into(),
                        "add pool = \"NAME\" to this listener",
                    );
                }
                if let Some(tls) = &l.tls {
                    self.error(
                        "invalid-value",
                        tls.span(),
                        "`tls` on a mode = \"tcp\" listener: evenkeel does not terminate TLS for TCP pools".into(),
                        "remove tls; the TCP pool's backends then see the client's TLS themselves",
                    );
                }
                if let Some(max) = &l.max_tunnels {
                    self.error(
                        "invalid-value",
                        max.span(),
                        "`max_tunnels` on a mode = \"tcp\" listener, which carries no upgrades: its connections are bounded by max_connections".into(),
                        "remove max_tunnels, or set max_connections",
                    );
                }
                if let Some(redirect) = l.redirect_https.as_ref().filter(|r| *r.get_ref()) {
                    self.error(
                        "invalid-value",
                        redirect.span(),
                        "`redirect_https` on a mode = \"tcp\" listener, which answers no HTTP"
                            .into(),
                        "remove redirect_https",
                    );
                }
            }
        }
        (mode, accept.is_some_and(|a| *a.get_ref()))
    }

    /// `proxy_protocol` on a pool: `"v2"`, or nothing.
    pub(super) fn proxy_protocol(&mut self, value: Option<&Str>) -> bool {
        match value {
            None => false,
            Some(v) if v.get_ref() == "v2" => true,
            Some(v) => {
                self.error(
                    "invalid-value",
                    v.span(),
                    format!("`proxy_protocol` {:?} is not supported", v.get_ref()),
                    "use proxy_protocol = \"v2\" (the binary PROXY header), or leave it out",
                );
                false
            }
        }
    }

    /// Each TCP listener's pool becomes its route and a TCP pool; a pool is never
    /// both a TCP listener's and an HTTP route's; no `[[route]]` is on a TCP listener;
    /// backups carry the kind of traffic of the pool they back; `tls` is for HTTP
    /// pools and `proxy_protocol` for TCP ones.
    pub(super) fn tcp(
        &mut self,
        listeners: &[Listener],
        pools: &mut [Pool],
        routes: &mut Vec<Route>,
        defined: &Defined,
    ) {
        let tcp_listeners: HashSet<&str> = listeners
            .iter()
            .filter(|l| l.mode == ListenerMode::Tcp)
            .map(|l| l.name.as_str())
            .collect();
        for route in routes.iter() {
            if tcp_listeners.contains(route.listener.as_str()) {
                self.error(
                    "invalid-value",
                    route.span.clone(),
                    format!(
                        "route on listener {:?}, which is mode = \"tcp\": a TCP listener sends every connection to its own `pool`",
                        route.listener
                    ),
                    "remove this route, or put it on an HTTP listener",
                );
            }
        }
        let http_pools: HashMap<&str, Span> = routes
            .iter()
            .map(|r| (r.pool.as_str(), r.span.clone()))
            .collect();
        let pool_names: Vec<&str> = defined.pools.iter().map(String::as_str).collect();
        let mut tcp_routes = Vec::new();
        for (listener, pool) in std::mem::take(&mut self.tcp_pools) {
            let name = pool.get_ref();
            if !defined.pools.contains(name) {
                let help = unknown_help("pool", name, &pool_names);
                self.error(
                    "unknown-pool",
                    pool.span(),
                    format!("listener {listener:?} sends connections to pool {name:?}, which is not defined"),
                    help,
                );
                continue;
            }
            if let Some(route) = http_pools.get(name.as_str()) {
                self.error(
                    "mixed-pool",
                    pool.span(),
                    format!(
                        "pool {name:?} is TCP listener {listener:?}'s and also an HTTP route's (at byte {}): a pool carries one kind of traffic",
                        route.start
                    ),
                    "give the TCP listener a pool of its own (the same backends may be listed in both)",
                );
                continue;
            }
            if let Some(p) = pools.iter_mut().find(|p| p.name == *name) {
                p.tcp = true;
            }
            tcp_routes.push(Route {
                listener,
                host: None,
                path_prefix: "/".into(),
                pool: name.clone(),
                span: pool.span(),
            });
        }
        routes.extend(tcp_routes);
        // A backup carries what the pool it backs carries: TCP pools' backups (and
        // theirs) are TCP pools too; a pool that both kinds reach is refused.
        let backup_of: HashMap<String, String> = pools
            .iter()
            .filter_map(|p| p.backup.clone().map(|b| (p.name.clone(), b)))
            .collect();
        let reach = |start: Vec<String>| {
            let mut reached: HashSet<String> = HashSet::new();
            for mut name in start {
                while reached.insert(name.clone()) {
                    match backup_of.get(&name) {
                        Some(next) => name = next.clone(),
                        None => break,
                    }
                }
            }
            reached
        };
        let tcp_reached = reach(
            pools
                .iter()
                .filter(|p| p.tcp)
                .map(|p| p.name.clone())
                .collect(),
        );
        let http_reached = reach(
            routes
                .iter()
                .filter(|r| !tcp_listeners.contains(r.listener.as_str()))
                .map(|r| r.pool.clone())
                .collect(),
        );
        for pool in pools.iter_mut() {
            if !tcp_reached.contains(&pool.name) {
                continue;
            }
            if http_reached.contains(&pool.name) {
                self.error(
                    "mixed-pool",
                    pool.span.clone(),
                    format!(
                        "pool {:?} carries TCP connections (as a TCP pool's backup) and HTTP requests: a pool carries one kind of traffic",
                        pool.name
                    ),
                    "give the TCP pool a backup of its own (the same backends may be listed in both)",
                );
            }
            pool.tcp = true;
        }
        for pool in pools.iter() {
            let at = pool.span.clone();
            if pool.tcp && pool.tls.is_some() {
                self.error(
                    "invalid-value",
                    at.clone(),
                    format!("pool {:?} is a TCP pool with `tls`: TLS to the backends of a TCP pool is not supported", pool.name),
                    "remove tls: a TCP pool carries the client's bytes (TLS included) as they are",
                );
            }
            if !pool.tcp && pool.proxy_protocol {
                self.error(
                    "invalid-value",
                    at,
                    format!(
                        "pool {:?} has `proxy_protocol` but is no TCP listener's pool",
                        pool.name
                    ),
                    "proxy_protocol is for the pools of mode = \"tcp\" listeners; remove it",
                );
            }
        }
    }
}
