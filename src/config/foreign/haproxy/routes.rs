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
    /// HAProxy's first-match order made into evenkeel's most-specific routes: a route
    /// an earlier one always wins over is left out, and where evenkeel would prefer a
    /// later route with a host over an earlier one without, a route keeping HAProxy's
    /// choice is added.
    pub(super) fn ordered(&mut self, rules: Vec<(Vec<Route>, Line)>) -> Vec<Route> {
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
    pub(super) fn acl(&mut self, line: &Line) -> Option<Vec<Match>> {
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
}
