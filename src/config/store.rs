//! `[store]`: where the config history and the journal live — node-local, like
//! `[admin]` and `state_dir` (DESIGN "Fleet").
//!
//! ```text
//!  [store] (raw, spans) ──validate──► StoreKind::Sqlite            one node: state_dir/evenkeel.db
//!                                     StoreKind::Etcd(EtcdStore)    a fleet: versions, journal and
//!                                                                   node reports under `prefix`
//! ```
//!
//! Without the section (or with `kind = "sqlite"`) nothing changes for a single
//! instance. With `kind = "etcd"` every node naming the same `endpoints` and `prefix`
//! serves one config version (see `crate::fleet`). The password file and the TLS files
//! are read when `serve` starts, not by `check`: a deploy may put them in place after
//! checking the config.

use std::path::PathBuf;

use super::model::Span;

/// Which store keeps the history and the journal.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum StoreKind {
    /// SQLite in `state_dir` (the default).
    #[default]
    Sqlite,
    /// etcd, shared by a fleet.
    Etcd(Box<EtcdStore>),
}

/// `[store] kind = "etcd"`, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct EtcdStore {
    /// The etcd members to talk to, tried in order until one answers.
    pub endpoints: Vec<Endpoint>,
    /// The key prefix of this fleet (starts with `/`, no trailing `/`), e.g.
    /// `/evenkeel/prod`. Fleets with different prefixes share nothing.
    pub prefix: String,
    /// This node's id in the fleet (its report key, the journal's `node`). Default: the
    /// host name. Two nodes must not share one.
    pub node: String,
    /// etcd user (etcd's own authentication), with `password_file`.
    pub user: Option<String>,
    /// The file holding the user's password (resolved against the config's folder).
    pub password_file: Option<PathBuf>,
    /// For `https://` endpoints: the CA bundle etcd's certificate must chain to;
    /// `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM) for etcd's `--client-cert-auth`, with `key`.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key: Option<PathBuf>,
    /// Where `[store]` is written.
    pub span: Span,
}

/// One etcd endpoint: `http://HOST:PORT` or `https://HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Whether it is reached over TLS.
    pub tls: bool,
    /// `HOST:PORT` as written (a host name is resolved at each connection).
    pub authority: String,
    /// The host alone, for TLS server names.
    pub host: String,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority)
    }
}

/// Parses `http://HOST:PORT` or `https://HOST:PORT` (no path, user or query);
/// the error says what was expected.
pub fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let (tls, rest) = if let Some(rest) = text.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = text.strip_prefix("https://") {
        (true, rest)
    } else {
        return Err("an http:// or https:// URL such as \"http://127.0.0.1:2379\"".into());
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err("HOST:PORT after the scheme, with no path, user or query".into());
    }
    let (host, port) = rest
        .rsplit_once(':')
        .filter(|(h, p)| !h.is_empty() && !p.is_empty())
        .ok_or("a port, such as http://127.0.0.1:2379")?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or("a port from 1 to 65535")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok(Endpoint {
        tls,
        authority: format!("{}:{port}", rest.rsplit_once(':').map_or("", |(h, _)| h)),
        host,
    })
}

/// Whether `prefix` is a usable key prefix: `/` then segments of letters, digits,
/// `-`, `_` and `.`, separated by `/`, without a trailing `/`, and with no segment
/// that is a name a fleet uses for its own keys (`head`, `current...`, `versions`,
/// `rejected`, `journal`, `nodes`): fleet `/a`'s keys would hold fleet `/a/nodes`'s.
pub fn valid_prefix(prefix: &str) -> bool {
    let Some(rest) = prefix.strip_prefix('/') else {
        return false;
    };
    // In any segment: fleet `/a`'s ranges would hold fleet `/a/nodes/eu`'s keys too.
    let reserved = |segment: &str| {
        ["head", "versions", "rejected", "journal", "nodes"].contains(&segment)
            || segment.starts_with("current")
    };
    !rest.split('/').any(reserved)
        && !rest.is_empty()
        && rest.split('/').all(|segment| {
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// Whether `node` is a usable node id: 1 to 64 letters, digits, `-`, `_`, `.`, `:`.
pub fn valid_node(node: &str) -> bool {
    (1..=64).contains(&node.len())
        && node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// The host name, as a default node id (`node` when it cannot be read or is not a
/// valid id).
pub fn default_node() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| valid_node(h))
        .unwrap_or_else(|| "node".into())
}

/// The part of a config text a fleet shares, in a canonical form: the TOML with the
/// node-local `[admin]`, `[store]` and `state_dir` taken out (comments and layout
/// dropped). The text itself when it is not valid TOML.
pub fn shared_part(text: &str) -> std::borrow::Cow<'_, str> {
    let Ok(mut table) = text.parse::<toml::Table>() else {
        return std::borrow::Cow::Borrowed(text);
    };
    for local in ["admin", "store", "state_dir"] {
        table.remove(local);
    }
    match toml::to_string(&table) {
        Ok(shared) => std::borrow::Cow::Owned(shared),
        Err(_) => std::borrow::Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_their_scheme_and_port() {
        let e = parse_endpoint("http://127.0.0.1:2379").expect("valid");
        assert_eq!(
            (e.tls, e.authority.as_str(), e.host.as_str()),
            (false, "127.0.0.1:2379", "127.0.0.1")
        );
        let e = parse_endpoint("https://etcd-1.internal:2379/").expect("valid");
        assert_eq!(
            (e.tls, e.authority.as_str(), e.host.as_str()),
            (true, "etcd-1.internal:2379", "etcd-1.internal")
        );
        let e = parse_endpoint("http://[::1]:2379").expect("valid");
        assert_eq!(
            (e.authority.as_str(), e.host.as_str()),
            ("[::1]:2379", "::1")
        );
        assert_eq!(e.to_string(), "http://[::1]:2379");
        for bad in [
            "127.0.0.1:2379",
            "http://127.0.0.1",
            "http://127.0.0.1:0",
            "http://127.0.0.1:2379/v3",
            "http://u@127.0.0.1:2379",
            "ftp://127.0.0.1:2379",
            "http://:2379",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_shared_part_leaves_out_what_is_each_nodes_own() {
        let a = "state_dir = \"/a\"\n[admin]\nlisten = \"127.0.0.1:9901\"\n[[listener]]\nname = \"p\" # public\n[store]\nnode = \"a\"\n";
        let b = "[[listener]]\nname = \"p\"\n[admin]\nlisten = \"127.0.0.1:9902\"\n[store]\nnode = \"b\"\n";
        assert_eq!(shared_part(a), shared_part(b));
        assert_ne!(shared_part(a), shared_part("[[listener]]\nname = \"q\"\n"));
        assert_eq!(shared_part("not = toml = at all"), "not = toml = at all");
    }

    #[test]
    fn prefixes_and_node_ids() {
        assert!(valid_prefix("/evenkeel/prod"));
        assert!(valid_prefix("/a"));
        for bad in [
            "/a/nodes",
            "/a/journal",
            "/a/current.rollout",
            "/a/nodes/eu",
            "/a/journal/x",
            "",
            "/",
            "evenkeel",
            "/evenkeel/",
            "/a//b",
            "/a b",
            "/a\u{0}",
        ] {
            assert!(!valid_prefix(bad), "{bad:?}");
        }
        assert!(valid_node("lb-1.eu:9901"));
        assert!(!valid_node(""));
        assert!(!valid_node("a/b"));
        assert!(!valid_node(&"x".repeat(65)));
        assert!(valid_node(&default_node()));
    }
}
