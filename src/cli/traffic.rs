//! `--traffic FILE|ADDR` for `check`, `simulate` and `plan`: how the traffic divides
//! between pools ([`crate::sim::traffic`]). `check` stays offline and reads only a
//! file; `simulate` and `plan` may also ask a running instance's admin API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::Method;

use super::client::Admin;
use super::{Exit, Failure};
use crate::sim::traffic::Observed;

/// Where each pool's part of the traffic comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct TrafficArgs {
    /// Each pool's part of the traffic: a file holding what `evenkeel status --format
    /// json` printed (or, for simulate and plan, the admin address of a running
    /// instance). Without it every route is assumed to get equal traffic.
    #[arg(long, value_name = "FILE|ADDR")]
    traffic: Option<String>,
    /// The admin token for --traffic ADDR (default: the `[admin] token_file` of the config).
    #[arg(long = "traffic-token-file", value_name = "FILE", requires = "traffic")]
    token_file: Option<PathBuf>,
}

impl TrafficArgs {
    /// The observed split, if `--traffic` was given. `online`: whether an admin
    /// address may be asked (not for `check`). `config`: the config file, for its
    /// `[admin] token_file`.
    pub fn observed(&self, online: bool, config: &Path) -> Result<Option<Observed>, Failure> {
        let Some(traffic) = &self.traffic else {
            return Ok(None);
        };
        let usage = |e: String| Failure::new(Exit::Usage, anyhow::anyhow!(e));
        let path = Path::new(traffic);
        if !path.exists() {
            if let Ok(addr) = traffic.parse::<SocketAddr>() {
                if !online {
                    return Err(usage(format!(
                        "--traffic {traffic}: check never contacts a running instance; save `evenkeel status --format json` to a file and pass that"
                    )));
                }
                let admin = Admin::at(addr, self.token_file.as_deref(), config)?;
                let answer = admin.call(Method::GET, "/status", None)?;
                if answer.status != 200 {
                    return Err(Failure::new(
                        Exit::Runtime,
                        anyhow::anyhow!(
                            "--traffic {traffic}: GET /status answered {}",
                            answer.status
                        ),
                    ));
                }
                let from = format!("the status of {addr}");
                return Observed::parse(&answer.json.to_string(), &from)
                    .map(Some)
                    .map_err(|e| usage(e.to_string()));
            }
        }
        let text = crate::config::files::read_config(path)
            .map_err(|e| usage(format!("--traffic {traffic}: {e}")))?;
        Observed::parse(&text, traffic)
            .map(Some)
            .map_err(|e| Failure::new(Exit::Usage, anyhow::anyhow!(e)))
    }
}

/// Refuses an observed split that is about another config's pools (exit 2).
pub fn matching(
    observed: Option<&Observed>,
    config: &crate::config::Config,
) -> Result<(), Failure> {
    match observed.map(|o| o.matches(config)) {
        Some(Err(e)) => Err(Failure::new(Exit::Usage, anyhow::anyhow!(e))),
        _ => Ok(()),
    }
}
