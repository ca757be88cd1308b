//! Lints about routes: routes that cannot take traffic as written.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use super::{Finding, Rule, Severity};
use crate::config::diagnostic::LineIndex;
use crate::config::model::Route;

pub const SHADOWED_ROUTE: Rule = Rule {
    name: "shadowed-route",
    severity: Severity::Warning,
    summary: "two routes with the same listener, host and path_prefix",
    explain: "A request is routed by its listener, host and longest matching path_prefix. \
Two routes that agree on all three match exactly the same requests, so only one of them \
can ever be used: evenkeel sends those requests to the first one in the file, and the \
later route never gets traffic. It is almost always a copy-pasted route whose prefix or \
host was not changed — the pool it names gets nothing while the other takes its traffic, \
the uneven split behind many outages. Change the host or path_prefix of one of them, or \
remove the one you do not want.",
    check: |config, out| {
        // The first route of each (listener, host, path_prefix): one map lookup per
        // route, not a scan of the routes before it (issue 12, defect 10).
        let mut first: HashMap<(&str, Option<&str>, &str), &Route> = HashMap::new();
        let mut lines = None;
        for route in &config.routes {
            let key = (
                route.listener.as_str(),
                route.host.as_deref(),
                route.path_prefix.as_str(),
            );
            let earlier = match first.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(route);
                    continue;
                }
                Entry::Occupied(slot) => *slot.get(),
            };
            let line = lines
                .get_or_insert_with(|| LineIndex::new(&config.source.text))
                .locate(earlier.span.start)
                .line;
            let host = route
                .host
                .as_deref()
                .map_or(String::from("any host"), |h| format!("host {h:?}"));
            out.push(
                Finding::warning(
                    "",
                    Some(route.span.clone()),
                    format!(
                        "this route has the same listener ({:?}), host ({host}) and path_prefix ({:?}) as the route at line {line}: requests go to that one (pool {:?}), and this route (pool {:?}) never matches",
                        route.listener, route.path_prefix, earlier.pool, route.pool
                    ),
                )
                .with_help(format!(
                    "change the host or path_prefix of this route or of the one at line {line}, or remove one of them"
                )),
            );
        }
    },
};
