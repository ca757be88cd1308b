//! How the traffic divides between pools: observed, or assumed equal per route.
//!
//! Within a pool the balancer decides the split; *between* pools the clients do. A
//! server listed by two pools carries what both send it, so the cross-pool figures
//! ([`super::failures`]) need each pool's part of the traffic. `check` stays offline
//! (DESIGN), so that part comes from a file: what `evenkeel status --format json` (or
//! `GET /status`) printed on a running instance. `simulate` and `plan` may also ask a
//! running instance directly. Without either, **every route is assumed to get equal
//! traffic**: a pool gets one part per route that names it, and every finding that
//! rests on the assumption says so.
//!
//! From a status document a pool's part is its `client_requests` over the monitor's
//! window (the client requests routed to it), or, when that window saw none, its
//! `requests` since the instance started (tries, retries included). A pool the
//! document does not mention gets no traffic (the findings name it), and a document
//! that mentions none of the pools the config's routes use is refused. The instance
//! counts a request at the pool that served it: a document taken while a pool was
//! failed over credits its backup, so take it when the pools are healthy.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::Config;

/// Each pool's part of the client traffic, and where that came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Traffic {
    /// Share of all client requests routed to each pool, indexed like
    /// `Config::pools`; sums to 1 (or is all 0 when nothing is routed).
    pub pools: Vec<f64>,
    /// Observed, or assumed.
    pub source: TrafficSource,
}

/// Where the split between pools came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrafficSource {
    /// Every route assumed to get equal traffic.
    Assumed,
    /// Read from a status document.
    Observed {
        /// Where from.
        from: String,
        /// Pools routes name that the document does not mention (counted idle).
        missing: Vec<String>,
    },
}

impl Traffic {
    /// Each route equal: a pool's part is the number of routes that name it.
    pub fn assumed(config: &Config) -> Traffic {
        let mut parts = vec![0.0; config.pools.len()];
        for route in &config.routes {
            if let Some(p) = config.pools.iter().position(|p| p.name == route.pool) {
                parts[p] += 1.0;
            }
        }
        Traffic {
            pools: normalised(parts),
            source: TrafficSource::Assumed,
        }
    }

    /// The observed split, or the assumed one when `observed` is `None`.
    pub fn of(config: &Config, observed: Option<&Observed>) -> Traffic {
        let Some(observed) = observed else {
            return Traffic::assumed(config);
        };
        let parts = config
            .pools
            .iter()
            .map(|p| observed.requests.get(&p.name).copied().unwrap_or(0.0))
            .collect();
        Traffic {
            pools: normalised(parts),
            source: TrafficSource::Observed {
                from: observed.from.clone(),
                missing: observed.missing(config),
            },
        }
    }

    /// Whether the split is the equal-per-route assumption.
    pub fn assumed_equal(&self) -> bool {
        self.source == TrafficSource::Assumed
    }

    /// Words to append to a finding that rests on the split.
    pub fn basis(&self) -> String {
        match &self.source {
            TrafficSource::Assumed => {
                "traffic assumed equal per route; pass --traffic with `evenkeel status --format json` output for the real split".to_string()
            }
            TrafficSource::Observed { from, missing } if missing.is_empty() => {
                format!("traffic as observed in {from}")
            }
            TrafficSource::Observed { from, missing } => format!(
                "traffic as observed in {from}, where pool{} {} had none",
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", ")
            ),
        }
    }
}

fn normalised(parts: Vec<f64>) -> Vec<f64> {
    let total: f64 = parts.iter().sum();
    if total > 0.0 {
        parts.into_iter().map(|p| p / total).collect()
    } else {
        parts
    }
}

/// Requests per pool read from a status document.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// Where it came from (a file name or an admin address), for findings.
    pub from: String,
    /// Requests per pool name.
    pub requests: BTreeMap<String, f64>,
}

/// Why a status document gives no traffic.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrafficError {
    /// Not the JSON `status --format json` writes.
    #[error(
        "{from}: not a status document (what `evenkeel status --format json` prints): {reason}"
    )]
    NotStatus {
        /// Where it came from.
        from: String,
        /// What the parser said.
        reason: String,
    },
    /// The document is about other pools than the config's.
    #[error("{from}: names none of the pools the config's routes use ({pools}): is it the status of another instance?")]
    OtherPools {
        /// Where it came from.
        from: String,
        /// The config's routed pools.
        pools: String,
    },
    /// No pool saw a request.
    #[error("{from}: no pool has served a request yet, so it says nothing about the split; send traffic first, or leave --traffic out to assume equal traffic per route")]
    NoRequests {
        /// Where it came from.
        from: String,
    },
}

#[derive(Deserialize)]
struct Document {
    pools: Vec<PoolCount>,
    #[serde(default)]
    monitor: Option<MonitorDocument>,
}

#[derive(Deserialize)]
struct MonitorDocument {
    #[serde(default)]
    pools: Vec<WindowCount>,
}

#[derive(Deserialize)]
struct PoolCount {
    name: String,
    #[serde(default)]
    requests: u64,
}

#[derive(Deserialize)]
struct WindowCount {
    name: String,
    #[serde(default)]
    client_requests: u64,
}

impl Observed {
    /// The pools routes of `config` name that the document does not mention.
    pub fn missing(&self, config: &Config) -> Vec<String> {
        let mut missing: Vec<String> = config
            .routes
            .iter()
            .map(|r| r.pool.clone())
            .filter(|p| !self.requests.contains_key(p))
            .collect();
        missing.sort();
        missing.dedup();
        missing
    }

    /// Whether the document is about `config`'s pools: it must mention at least one
    /// pool a route names (a document from another instance would make every pool
    /// idle, and every finding silent).
    pub fn matches(&self, config: &Config) -> Result<(), TrafficError> {
        let routed = config
            .routes
            .iter()
            .any(|r| self.requests.contains_key(&r.pool));
        if routed || config.routes.is_empty() {
            return Ok(());
        }
        let mut pools: Vec<&str> = config.routes.iter().map(|r| r.pool.as_str()).collect();
        pools.sort_unstable();
        pools.dedup();
        Err(TrafficError::OtherPools {
            from: self.from.clone(),
            pools: pools.join(", "),
        })
    }

    /// Reads a status document (`GET /status`, `evenkeel status --format json`).
    pub fn parse(text: &str, from: &str) -> Result<Observed, TrafficError> {
        let document: Document =
            serde_json::from_str(text).map_err(|e| TrafficError::NotStatus {
                from: from.to_string(),
                reason: e.to_string(),
            })?;
        let window: BTreeMap<String, f64> = document
            .monitor
            .map(|m| m.pools)
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name, p.client_requests as f64))
            .collect();
        let requests = if window.values().sum::<f64>() > 0.0 {
            window
        } else {
            document
                .pools
                .into_iter()
                .map(|p| (p.name, p.requests as f64))
                .collect()
        };
        if requests.values().sum::<f64>() <= 0.0 {
            return Err(TrafficError::NoRequests {
                from: from.to_string(),
            });
        }
        Ok(Observed {
            from: from.to_string(),
            requests,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_wins_over_counts_since_start() {
        let text = r#"{"pools":[{"name":"web","requests":900},{"name":"api","requests":100}],
            "monitor":{"pools":[{"name":"web","client_requests":10},{"name":"api","client_requests":30}]}}"#;
        let observed = Observed::parse(text, "s.json").expect("parses");
        assert_eq!(observed.requests["web"], 10.0);
        assert_eq!(observed.requests["api"], 30.0);
        // A quiet window: the counts since start.
        let quiet = r#"{"pools":[{"name":"web","requests":900}],"monitor":{"pools":[{"name":"web","client_requests":0}]}}"#;
        assert_eq!(
            Observed::parse(quiet, "s.json").expect("parses").requests["web"],
            900.0
        );
    }

    #[test]
    fn a_document_about_other_pools_is_refused_and_missing_pools_are_named() {
        let checked = crate::config::check_source(crate::config::Source {
            path: "t.toml".into(),
            text: "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\
                   [[route]]\npool = \"web\"\n[[route]]\npath_prefix = \"/api\"\npool = \"api\"\n\
                   [pool.web]\nbackends = [{ address = \"127.0.0.1:9001\" }]\n\
                   [pool.api]\nbackends = [{ address = \"127.0.0.1:9002\" }]\n"
                .into(),
        });
        let config = checked.config.expect("valid");
        let other = Observed::parse(r#"{"pools":[{"name":"shop","requests":10}]}"#, "s.json")
            .expect("parses");
        assert!(matches!(
            other.matches(&config),
            Err(TrafficError::OtherPools { pools, .. }) if pools == "api, web"
        ));
        let half = Observed::parse(r#"{"pools":[{"name":"web","requests":10}]}"#, "s.json")
            .expect("parses");
        assert!(half.matches(&config).is_ok());
        let traffic = Traffic::of(&config, Some(&half));
        assert_eq!(traffic.pools, [1.0, 0.0]);
        assert_eq!(
            traffic.basis(),
            "traffic as observed in s.json, where pool api had none"
        );
    }

    #[test]
    fn a_document_without_requests_says_nothing() {
        let none = r#"{"pools":[{"name":"web","requests":0}]}"#;
        assert!(matches!(
            Observed::parse(none, "s.json"),
            Err(TrafficError::NoRequests { .. })
        ));
        assert!(matches!(
            Observed::parse("[1,2]", "s.json"),
            Err(TrafficError::NotStatus { .. })
        ));
    }
}
