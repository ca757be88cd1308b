//! `evenkeel serve`: run the load balancer until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{CommandResult, Exit, Failure};
use crate::admin;
use crate::apply::{Applied, Applier, ApplyOptions};
use crate::config::{self, diagnostic, Config};
use crate::health;
use crate::monitor::{self, Monitor};
use crate::proxy::{self, Options, Running};
use crate::runtime::Runtime;
use crate::store::{Origin, SqliteStore, Store};

/// Run the load balancer.
///
/// The config must pass `check` (errors refuse to start, exit 1). SIGHUP re-reads the
/// file and applies it if it passes; SIGTERM or Ctrl-C stops accepting, lets requests
/// in flight finish for up to `drain_timeout`, then exits 0. Logs go to stderr
/// (filter with RUST_LOG, e.g. RUST_LOG=debug); each listener's bound address is
/// printed on stdout as `listening NAME http://ADDR`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  evenkeel serve -c evenkeel.toml --workers 2\n  kill -HUP $(pidof evenkeel)    # reload the file\n  kill -TERM $(pidof evenkeel)   # drain and exit"
)]
pub struct Args {
    /// The config file.
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// Worker threads (default: the number of cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    /// Do not write an access-log line per request.
    #[arg(long, conflicts_with_all = ["access_log", "access_log_format"])]
    no_access_log: bool,
    /// Where the access log goes: a file (appended to; SIGUSR1 reopens it, for
    /// logrotate) or `-` for stdout. Default: stderr, with evenkeel's own log.
    #[arg(long, value_name = "PATH|-")]
    access_log: Option<PathBuf>,
    /// Format of the access-log lines (default: that of --log-format).
    #[arg(long, value_enum, value_name = "FORMAT")]
    access_log_format: Option<super::LogFormat>,
    /// Format of evenkeel's own log lines on stderr.
    #[arg(long, value_enum, default_value_t = super::LogFormat::Text)]
    log_format: super::LogFormat,
    /// Serve the file even if the guard rolled this exact config back before (by
    /// default the last good version from the history is served instead).
    #[arg(long)]
    force: bool,
    /// Run without the monitor: no share sampling, alarms, guard, webhook or event
    /// journal (per-request counters and /metrics stay). For measuring what watching
    /// costs (bench/compare.sh); not for production.
    #[arg(long)]
    no_monitor: bool,
}

/// Starts the access log's writer where `--access-log` says, in its format.
fn start_access_log(args: &Args) -> Result<(), Failure> {
    use crate::proxy::access::{self, Destination, Format};
    let destination = match &args.access_log {
        None => Destination::Stderr,
        Some(path) if path.as_os_str() == "-" => Destination::Stdout,
        Some(path) => Destination::File(path.clone()),
    };
    let format = match args.access_log_format.unwrap_or(args.log_format) {
        super::LogFormat::Text => Format::Text,
        super::LogFormat::Json => Format::Json,
    };
    access::start(&destination, format).map_err(|e| {
        let path = args.access_log.as_deref().unwrap_or(Path::new("-"));
        Failure::new(
            Exit::Usage,
            anyhow::anyhow!("cannot open the access log {}: {e}", path.display()),
        )
    })
}

pub fn run(args: &Args) -> CommandResult {
    let mut checked = config::check_file(&args.config).map_err(|e| Failure::new(Exit::Usage, e))?;
    // Logging first: with --log-format json, every line on stderr is a JSON object.
    let json = args.log_format == super::LogFormat::Json;
    let _log = super::init_logging(!args.no_access_log, args.log_format);
    // Under systemd with `StateDirectory=`, the state goes where systemd made room for
    // it (the config's folder may be read-only: `ProtectSystem=strict`), unless the
    // file names a state_dir itself.
    if let (Some(config), Some(dir)) = (&mut checked.config, state_directory()) {
        if !config.state_dir_written {
            config.state_dir = dir;
        }
    }
    // A restart must not turn an expired certificate that was being served into an
    // outage: those the last run served stay (with an alarm); new ones are refused.
    if let Some(config) = &checked.config {
        checked.tolerate_expired(&served_before(&config.state_dir));
    }
    if json {
        // One event per finding, so every line on stderr is a JSON object.
        for finding in &checked.findings {
            let at = finding
                .span
                .as_ref()
                .map(|s| checked.source.locate(s.start))
                .map_or(String::new(), |l| {
                    format!("{}:{}:{}", checked.source.path.display(), l.line, l.column)
                });
            tracing::warn!(
                rule = finding.rule,
                severity = finding.severity.as_str(),
                at = %at,
                help = finding.help.as_deref().unwrap_or(""),
                "{}",
                finding.message
            );
        }
    } else if !checked.findings.is_empty() {
        eprint!(
            "{}",
            diagnostic::render_text(&checked.source, &checked.findings)
        );
    }
    let config = match checked.config {
        Some(config) if !checked.is_rejected(false) => config,
        _ => {
            if json {
                tracing::error!(file = %args.config.display(), "the config has errors; nothing was started");
            } else {
                eprintln!(
                    "error: {} has errors; nothing was started",
                    args.config.display()
                );
            }
            return Ok(Exit::Rejected);
        }
    };
    // Before anything is bound or announced: see `Signals`.
    let signals = super::Signals::install().map_err(|e| Failure::new(Exit::Runtime, e))?;
    let workers = args.workers.map_or_else(default_workers, usize::from);
    // The access log is written by the proxy itself, not through `tracing`, but on
    // stderr RUST_LOG still decides: `RUST_LOG=info,evenkeel::access=off` silences it too.
    // An access log asked for by --access-log is written whatever RUST_LOG says.
    let access_log = !args.no_access_log
        && (args.access_log.is_some()
            || tracing::enabled!(target: "evenkeel::access", tracing::Level::INFO));
    if access_log {
        start_access_log(args)?;
    }
    let options = ServeOptions {
        workers,
        access_log,
        force: args.force,
        monitor: !args.no_monitor,
    };
    let served = Served::start(&args.config, config, options)?;
    let snapshot = served.applier.runtime().snapshot();
    for (name, addr) in &served.running.listeners {
        let https = snapshot
            .config
            .listener(name)
            .is_some_and(|l| l.tls.is_some());
        let scheme = if https { "https" } else { "http" };
        outln!("listening {name} {scheme}://{addr}");
    }
    if let Some(admin) = served.admin {
        outln!("admin http://{admin}");
    }
    tracing::info!(workers, config = %args.config.display(), "evenkeel serving");
    super::systemd::ready(served.applier.current());
    super::systemd::start_watchdog();
    served.run_until_signal(signals, &args.config)
}

/// A proxy and its admin listener, started from a validated config.
pub struct Served {
    /// Every change of configuration goes through it.
    pub applier: Arc<Applier>,
    /// The proxy.
    pub running: Running,
    /// The admin listener's address, when the config has `[admin]`.
    pub admin: Option<SocketAddr>,
    /// Alarms, the guard, the journal.
    pub monitor: Arc<Monitor>,
    /// Stops the health and monitor threads.
    health_stop: tokio::sync::watch::Sender<bool>,
}

/// How `serve` (and `demo`) run the proxy.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// Worker threads.
    pub workers: usize,
    /// Write an access-log line per request.
    pub access_log: bool,
    /// Serve the file even if the guard rolled it back before.
    pub force: bool,
    /// Run the monitor (sampling, alarms, guard, journal).
    pub monitor: bool,
}

impl Served {
    /// Opens the config history, binds the listeners, starts the workers, health
    /// checks and the admin API for `config`, read from `path`.
    pub fn start(path: &Path, config: Config, options: ServeOptions) -> Result<Served, Failure> {
        let ServeOptions {
            workers,
            access_log,
            force,
            monitor,
        } = options;
        // Descriptors in reserve, before anything is opened, and no huge pages (see
        // `descriptors`).
        super::descriptors::raise_open_files_limit();
        super::descriptors::disable_transparent_huge_pages();
        let admin = config.admin.clone();
        // Read the token before binding anything: a missing file is a usage error.
        let token = admin
            .as_ref()
            .map(|a| admin::read_token(&a.token_file))
            .transpose()
            .map_err(|e| Failure::new(Exit::Usage, e))?;
        let (runtime, applier, fleet) = match config.store.clone() {
            crate::config::store::StoreKind::Sqlite => {
                // A history that cannot be opened is a loud error at start, not a
                // surprise later.
                let store = SqliteStore::open(&config.state_dir)
                    .map_err(|e| Failure::new(Exit::Runtime, e))?;
                let config = if force {
                    config
                } else {
                    last_good_unless_rejected(config, &store, path)
                };
                let runtime = Runtime::new(config);
                let applier =
                    Applier::start(Arc::clone(&runtime), Arc::new(store), path.to_path_buf())
                        .map_err(|e| Failure::new(Exit::Runtime, e))?;
                (runtime, Arc::new(applier), None)
            }
            crate::config::store::StoreKind::Etcd(etcd) => {
                let joined = join_fleet(path, config, &etcd)?;
                let runtime = Runtime::new(joined.config);
                let store: Arc<dyn Store> = Arc::clone(joined.fleet.store()) as Arc<dyn Store>;
                let applier = Applier::join_fleet(
                    Arc::clone(&runtime),
                    store,
                    path.to_path_buf(),
                    joined.local,
                    joined.version,
                );
                applier.set_fleet(Arc::clone(&joined.fleet));
                applier.file_changed(&joined.file_text);
                (runtime, Arc::new(applier), Some(joined.fleet))
            }
        };
        let running = proxy::start(
            Arc::clone(&runtime),
            Options {
                workers,
                access_log,
            },
        )
        .map_err(|e| Failure::new(Exit::Runtime, e))?;
        let (health_stop, stopped) = tokio::sync::watch::channel(false);
        let monitor = if monitor {
            monitor::start(Arc::clone(&runtime), Arc::clone(&applier), stopped.clone()).map_err(
                |e| {
                    Failure::new(
                        Exit::Runtime,
                        anyhow::anyhow!("cannot start the monitor: {e}"),
                    )
                },
            )?
        } else {
            tracing::warn!("the monitor is off (--no-monitor): no alarms, guard or journal");
            Arc::new(Monitor::default())
        };
        health::start(Arc::clone(&runtime), stopped).map_err(|e| {
            Failure::new(
                Exit::Runtime,
                anyhow::anyhow!("cannot start health checks: {e}"),
            )
        })?;
        let admin_config = admin;
        let admin = match (admin_config, token) {
            (Some(a), Some(token)) => Some(
                admin::start(
                    Arc::clone(&runtime),
                    Arc::clone(&applier),
                    Arc::clone(&monitor),
                    &a,
                    token,
                )
                .map_err(|e| Failure::new(Exit::Runtime, e))?,
            ),
            _ => None,
        };
        if let Some(fleet) = fleet {
            fleet.set_admin(admin);
            crate::fleet::sync::start(fleet, Arc::clone(&applier), Arc::clone(&monitor));
        }
        Ok(Served {
            applier,
            running,
            admin,
            monitor,
            health_stop,
        })
    }

    /// Serves until SIGTERM or SIGINT, reloading `path` on SIGHUP; then drains.
    pub fn run_until_signal(self, signals: super::Signals, path: &Path) -> CommandResult {
        signals.wait(None, || reload(path, &self.applier));
        super::systemd::stopping();
        tracing::info!("draining: no new connections; requests in flight may finish");
        self.stop();
        tracing::info!("stopped");
        Ok(Exit::Success)
    }

    /// Drains the proxy (up to `drain_timeout`) and stops health checks.
    pub fn stop(self) {
        self.running.shutdown();
        self.running.wait();
        if let Some(fleet) = self.applier.fleet() {
            fleet.leave();
        }
        crate::proxy::access::drain(std::time::Duration::from_secs(2));
        self.health_stop.send_replace(true);
    }
}

/// A node joining its fleet: what it serves first, and its view of the fleet.
struct Joined {
    fleet: Arc<crate::fleet::Fleet>,
    /// The node's file as read at start.
    file_text: String,
    local: config::NodeLocal,
    config: Config,
    /// The fleet version `config` is (0: the node's own file).
    version: u64,
}

/// Connects to the fleet's etcd and picks what this node serves first: the fleet's
/// version in force (the file only seeds an empty fleet); when etcd cannot be reached
/// or that version cannot be loaded here, the fleet version kept in `state_dir`, or
/// else the file — said loudly, and followed by catching up once etcd answers.
fn join_fleet(
    path: &Path,
    file: Config,
    etcd: &crate::config::store::EtcdStore,
) -> Result<Joined, Failure> {
    let store = crate::fleet::connect(etcd).map_err(|e| Failure::new(Exit::Usage, e))?;
    let fleet = crate::fleet::Fleet::new(store);
    let file_text = file.source.text.clone();
    let local = config::NodeLocal::of(&file);
    let load = |version: &crate::store::Version| -> Result<Config, String> {
        let checked = config::check_fleet_source(
            config::Source {
                path: PathBuf::from(format!("fleet version {}", version.id)),
                text: version.text.clone(),
            },
            &config::folder_of(path),
            &local,
        );
        let rejected = checked.is_rejected(false);
        match checked.config {
            Some(config) if !rejected => Ok(config),
            _ => Err(diagnostic::render_text(&checked.source, &checked.findings)
                .lines()
                .next()
                .unwrap_or("it has errors")
                .to_string()),
        }
    };
    let store = fleet.store();
    let in_force = store
        .in_force_now()
        .and_then(|in_force| match in_force.version {
            0 => Ok(None),
            id => store.version(id).map(|v| v.map(|v| (id, v))),
        });
    let served = match in_force {
        Ok(None) => {
            tracing::info!(prefix = %etcd.prefix, "the fleet has no version yet: this node's file becomes version 1");
            None
        }
        Ok(Some((id, version))) => match load(&version) {
            Ok(config) => {
                tracing::info!(version = id, "serving the fleet's version in force");
                if let Err(e) = crate::fleet::cache::write(&local.state_dir, &version) {
                    tracing::warn!(error = %e, "cannot keep the fleet version in state_dir; a restart while etcd is unreachable would serve the file");
                }
                Some((config, id))
            }
            Err(reason) => {
                tracing::error!(
                    version = id,
                    "ALARM: this node cannot load the fleet's version in force: {reason}"
                );
                fleet.refused(id, &reason);
                None
            }
        },
        // etcd answered, and refused this node's credentials: a mistake in [store],
        // not an outage to ride out.
        Err(crate::store::StoreError::Etcd(
            e @ crate::store::etcd::gateway::GatewayError::Refused { .. },
        )) if matches!(&e, crate::store::etcd::gateway::GatewayError::Refused { path, .. } if path == crate::store::etcd::gateway::AUTHENTICATE) =>
        {
            return Err(Failure::new(
                Exit::Runtime,
                anyhow::anyhow!(
                    "etcd refused this node's credentials ([store] user and password_file): {e}"
                ),
            ));
        }
        Err(e) => {
            fleet.failed(&e.to_string());
            None
        }
    };
    let (config, version) = match served {
        Some(served) => served,
        None if fleet.unreachable().is_none() && fleet.refusal().is_none() => (file, 0),
        None => match crate::fleet::cache::read(&local.state_dir).map(|v| (load(&v), v.id)) {
            Some((Ok(config), id)) => {
                tracing::warn!(version = id, "serving the fleet version this node kept in state_dir until the fleet's can be served");
                (config, id)
            }
            _ => {
                tracing::warn!(file = %path.display(), "serving this node's file until the fleet's version can be served");
                (file, 0)
            }
        },
    };
    Ok(Joined {
        fleet,
        file_text,
        local,
        config,
        version,
    })
}

/// The first folder of systemd's `$STATE_DIRECTORY` (a colon-separated list), if set.
fn state_directory() -> Option<PathBuf> {
    let dirs = std::env::var_os("STATE_DIRECTORY")?;
    std::env::split_paths(&dirs)
        .next()
        .filter(|d| !d.as_os_str().is_empty())
}

/// The fingerprints of the certificates the last applied version in the history at
/// `state_dir` served (none when there is no history yet; the history is not created).
fn served_before(state_dir: &Path) -> std::collections::HashSet<String> {
    if !state_dir.join("evenkeel.db").is_file() {
        return Default::default();
    }
    let versions = SqliteStore::open(state_dir).and_then(|store| store.versions());
    let versions = match versions {
        Ok(versions) => versions,
        Err(e) => {
            // Then an expired certificate the last run served is refused like a new one.
            tracing::warn!(error = %e, "cannot read the history to know which certificates the last run served");
            return Default::default();
        }
    };
    versions
        .iter()
        .rev()
        .find(|v| v.outcome == crate::store::Outcome::Applied)
        .map(|v| {
            v.certificates
                .iter()
                .map(|c| config::served_key(&c.listener, &c.fingerprint))
                .collect()
        })
        .unwrap_or_default()
}

/// The config to start with: `config`, unless the guard rolled this exact text back
/// before — then the last applied version that was not rolled back, said loudly
/// (DESIGN: a restart with a rejected file keeps the last good version).
fn last_good_unless_rejected(config: Config, store: &SqliteStore, path: &Path) -> Config {
    let rejected = crate::store::rejection_of(store, &config.identity(), &config.source.text);
    let Some(rejection) = rejected else {
        return config;
    };
    let versions = store.versions().unwrap_or_default();
    let good = versions
        .iter()
        .rev()
        .filter(|v| v.outcome == crate::store::Outcome::Applied)
        .find_map(|v| {
            if crate::store::rejection_of(store, &v.sha256, &v.text).is_some() {
                return None;
            }
            let checked = config::check_source_in(
                config::Source {
                    path: path.to_path_buf(),
                    text: v.text.clone(),
                },
                &config::folder_of(path),
            );
            let rejected = checked.is_rejected(false);
            checked.config.filter(|_| !rejected).map(|c| (v.id, c))
        });
    match good {
        Some((id, good)) => {
            tracing::error!(
                file = %path.display(),
                "ALARM: this config file was rolled back by the guard at {} ({}); serving version {id}, the last good one, instead. Fix the file, or start with --force to serve it anyway",
                rejection.time,
                rejection.reason
            );
            good
        }
        None => {
            tracing::error!(file = %path.display(), "ALARM: this config file was rolled back by the guard, and the history holds no good version to serve instead; serving the file");
            config
        }
    }
}

/// Default worker count: the cores this process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// SIGHUP: re-read the file and apply it if it passes `check`; otherwise the running
/// config stays (and the refusal is in the history).
pub(super) fn reload(path: &Path, applier: &Applier) {
    super::systemd::reloading();
    let refused = apply_file(path, applier);
    super::systemd::reloaded(applier.current(), refused.as_deref());
}

/// Applies the file at `path`; why it was refused, if it was.
fn apply_file(path: &Path, applier: &Applier) -> Option<String> {
    let text = match config::files::read_config(path) {
        Ok(text) => text,
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "reload refused: cannot read the config; the running config stays");
            return Some(format!("cannot read the config: {e}"));
        }
    };
    // In a fleet the file only says what changes: a reload (logrotate, a config
    // management run) of a file untouched since this node last read it must not put
    // its old text back over what the fleet applied since.
    if !applier.file_changed(&text) {
        tracing::info!(file = %path.display(), version = applier.current(), "reload: the file has not changed since this node last read it; the fleet's version stays");
        return None;
    }
    match applier.apply(
        text,
        path.to_path_buf(),
        Origin::Sighup,
        ApplyOptions::default(),
    ) {
        Applied::Applied {
            version, warnings, ..
        } => {
            tracing::info!(file = %path.display(), version = version.id, warnings = warnings.len(), "reloaded");
            None
        }
        Applied::Unchanged { version } => {
            tracing::info!(file = %path.display(), version, "reload: the file is the config in force already");
            None
        }
        Applied::StoreUnavailable { reason } => {
            tracing::error!(file = %path.display(), "reload not applied; the running config stays. {reason}");
            Some(reason)
        }
        Applied::Staged { version, .. } => {
            // A reload is never staged.
            tracing::info!(file = %path.display(), version = version.id, "reload staged on canaries");
            None
        }
        Applied::Conflict { in_force, seen } => {
            let reason = crate::store::StoreError::Conflict { in_force, seen }.to_string();
            tracing::error!(file = %path.display(), "reload refused; the running config stays. {reason}");
            Some(reason)
        }
        Applied::Refused {
            version,
            findings,
            source,
            reason,
        } => {
            let findings = diagnostic::render_text(&source, &findings);
            let reason = reason.unwrap_or_default();
            tracing::error!(
                file = %path.display(),
                version = version.map(|v| v.id),
                "reload refused; the running config stays. {reason}\n{findings}"
            );
            let first = findings.lines().next().unwrap_or_default();
            Some(if reason.is_empty() {
                first.to_string()
            } else {
                reason
            })
        }
    }
}
