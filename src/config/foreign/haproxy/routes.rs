//! HAProxy's request routing — `acl`, `use_backend ... if`, `default_backend` — made
//! into evenkeel routes.

use std::collections::HashMap;

use super::parse::{self, Line};
use super::{Translator, APPROXIMATE, NOT_TRANSLATED};

/// One way a request may match an ACL.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Match {
    Any,
    Prefix(String),
    Host(String),
}

#[derive(Clone, Debug)]
pub(super) struct Route {
    pub(super) host: Option<String>,
    pub(super) prefix: String,
    pub(super) backend: String,
    pub(super) file: usize,
    pub(super) span: std::ops::Range<usize>,
}

impl Translator<'_> {
    /// HAProxy's first-match order made into evenkeel's most-specific routes.
    ///
    /// HAProxy takes the first rule that matches; evenkeel takes a route with the
    /// request's host before one without, then the longest prefix. For each host the
    /// rules name, the rules that apply to it (its own and those without a host) are
    /// walked in order and a rule whose prefix starts with an earlier kept rule's is
    /// dropped (HAProxy never reaches it there). Among the kept ones, the longest
    /// matching prefix is then always the earliest matching rule. A kept rule without
    /// a host is written again under the host when a later kept rule of that host has
    /// a shorter prefix (evenkeel would prefer that one); otherwise the host falls back
    /// to the routes without a host, which give the same answer. A rule dropped
    /// everywhere it applies is noted with the rule that wins over it.
    pub(super) fn ordered(&mut self, rules: Vec<(Vec<Route>, Line)>) -> Vec<Route> {
        let flat: Vec<(usize, Route)> = rules
            .iter()
            .enumerate()
            .flat_map(|(i, (routes, _))| routes.iter().map(move |r| (i, r.clone())))
            .collect();
        // The routes without a host, and each host's own, by position: a host's scope
        // walks those two lists merged, so the work is the size of what is written.
        let mut shared = Vec::new();
        let mut hosts: Vec<Option<String>> = vec![None];
        let mut own_routes: std::collections::HashMap<&str, Vec<usize>> = Default::default();
        for (at, (_, route)) in flat.iter().enumerate() {
            match &route.host {
                None => shared.push(at),
                Some(host) => {
                    let list = own_routes.entry(host).or_default();
                    if list.is_empty() {
                        hosts.push(Some(host.clone()));
                    }
                    list.push(at);
                }
            }
        }
        // Per route: kept somewhere it applies, else the first route seen winning over it.
        let mut kept_anywhere = vec![false; flat.len()];
        let mut beaten_by: Vec<Option<usize>> = vec![None; flat.len()];
        let mut out = Vec::new();
        for scope in &hosts {
            let own = scope
                .as_deref()
                .and_then(|h| own_routes.get(h))
                .map_or(&[][..], Vec::as_slice);
            // The kept routes of this scope: prefix → position in `flat`.
            let mut kept: std::collections::HashMap<&str, usize> = Default::default();
            let mut order = Vec::new();
            let (mut a, mut b) = (0, 0);
            while a < shared.len() || b < own.len() {
                let at = if b >= own.len() || (a < shared.len() && shared[a] < own[b]) {
                    a += 1;
                    shared[a - 1]
                } else {
                    b += 1;
                    own[b - 1]
                };
                let route = &flat[at].1;
                let cover = (1..=route.prefix.len())
                    .filter(|&n| route.prefix.is_char_boundary(n))
                    .find_map(|n| kept.get(&route.prefix[..n]).copied());
                match cover {
                    Some(winner) => {
                        beaten_by[at].get_or_insert(winner);
                    }
                    None => {
                        kept.insert(&route.prefix, at);
                        kept_anywhere[at] = true;
                        order.push(at);
                    }
                }
            }
            match scope {
                None => out.extend(
                    order
                        .iter()
                        .filter(|&&at| flat[at].1.host.is_none())
                        .map(|&at| flat[at].1.clone()),
                ),
                Some(host) => {
                    // The prefixes of this host's own kept routes, with their positions.
                    let own: std::collections::HashMap<&str, usize> = order
                        .iter()
                        .filter(|&&at| flat[at].1.host.is_some())
                        .map(|&at| (flat[at].1.prefix.as_str(), at))
                        .collect();
                    for &at in &order {
                        let route = &flat[at].1;
                        let write = route.host.is_some()
                            || (1..=route.prefix.len())
                                .filter(|&n| route.prefix.is_char_boundary(n))
                                .any(|n| {
                                    own.get(&route.prefix[..n]).is_some_and(|&later| later > at)
                                });
                        if write {
                            out.push(Route {
                                host: Some(host.clone()),
                                ..route.clone()
                            });
                        }
                    }
                }
            }
        }
        for (at, (rule, route)) in flat.iter().enumerate() {
            if kept_anywhere[at] {
                continue;
            }
            let Some(winner) = beaten_by[at].map(|w| &flat[w].1) else {
                continue;
            };
            let line = self.parsed.sources[winner.file]
                .locate(winner.span.start)
                .line;
            let message = format!(
                "never reached for {}{}: HAProxy sends those requests to {} by the rule at line {line}",
                route.host.as_deref().unwrap_or("any host"),
                route.prefix,
                winner.backend
            );
            self.note(&rules[*rule].1, NOT_TRANSLATED, message);
        }
        out
    }

    /// The matches of an `acl` line; None (noted) when evenkeel cannot route on it.
    pub(super) fn acl(&mut self, line: &Line) -> Option<Vec<Match>> {
        let criterion = line.word(2).to_ascii_lowercase();
        let mut words = line.rest(3).peekable();
        let mut method = None;
        let mut ignore_case = false;
        while let Some(flag) = words.peek().copied() {
            if !matches!(flag, "--" | "-i" | "-n" | "-M" | "-m" | "-f" | "-u") {
                break;
            }
            words.next();
            match flag {
                "--" => break,
                "-i" => ignore_case = true,
                "-n" | "-M" => {}
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
                if ignore_case {
                    self.note(line, APPROXIMATE, "path_beg -i matches without regard to case in HAProxy; evenkeel's path prefixes match by case");
                }
                values.iter().map(|v| Match::Prefix(v.clone())).collect()
            }
            (_, None | Some("str")) if host_header => {
                let case = if ignore_case {
                    ""
                } else {
                    ", and by case without -i"
                };
                self.note(line, APPROXIMATE, format!("hdr(host) compares the whole Host field in HAProxy (its port too{case}); evenkeel compares the host name, without port or case"));
                values
                    .iter()
                    .map(|v| Match::Host(v.to_ascii_lowercase()))
                    .collect()
            }
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
    pub(super) fn use_backend(
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
                // The host name without a port; one evenkeel cannot route on (an IPv6
                // literal, an underscore) is noted and its requests judged elsewhere.
                let host = host.map(|h| match h.rsplit_once(':') {
                    Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
                        name.to_string()
                    }
                    _ => h,
                });
                if let Some(name) = host.as_deref().filter(|h| !super::super::routable_host(h)) {
                    self.note(line, NOT_TRANSLATED, format!("the host {name:?} is not one evenkeel routes on (letters, digits, . and -): requests for it are judged as going elsewhere"));
                    continue;
                }
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
}
