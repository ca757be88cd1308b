//! `evenkeel demo`: a self-contained instance to look at — three stand-in backends
//! with different latencies, evenkeel in front of them with its admin API, a little
//! background traffic, and what to try.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use super::serve::Served;
use super::{CommandResult, Exit, Failure};
use crate::config::{self, diagnostic, values};
use crate::loadgen::standin::StandIn;

/// Run a self-contained demo: three backends, evenkeel in front, a little traffic.
///
/// Nothing to configure. It writes its config to a temporary folder (printed), so you
/// can `check` it, edit it and reload it with SIGHUP while it runs.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  evenkeel demo\n  evenkeel demo --port 0 --admin-port 0 --duration 30s"
)]
pub struct Args {
    /// Port of the load balancer on 127.0.0.1; the next free one is taken if it is busy
    /// (0: any free port).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Port of the admin API on 127.0.0.1, likewise.
    #[arg(long, default_value_t = 9901)]
    admin_port: u16,
    /// Port of the HTTPS listener on 127.0.0.1, likewise (its certificate, for
    /// `localhost` and 127.0.0.1, is made at start).
    #[arg(long, default_value_t = 8443)]
    https_port: u16,
    /// Stop by itself after this long (e.g. "30s"); default: run until Ctrl-C.
    #[arg(long, value_parser = values::parse_duration)]
    duration: Option<Duration>,
    /// Background requests per second (0: none). They stop by themselves after 10 minutes.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=1000))]
    rate: u32,
}

/// How long background traffic runs at most.
const TRAFFIC_FOR: Duration = Duration::from_secs(600);
/// How often the share summary is printed while traffic runs.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);

pub fn run(args: &Args) -> CommandResult {
    let runtime_error = |e: anyhow::Error| Failure::new(Exit::Runtime, e);
    let backends = [
        ("fast", Duration::from_millis(5)),
        ("medium", Duration::from_millis(20)),
        ("slow", Duration::from_millis(80)),
    ]
    .into_iter()
    .map(|(name, latency)| StandIn::start(name, latency, false))
    .collect::<Result<Vec<_>, _>>()
    .context("cannot start the demo backends")
    .map_err(runtime_error)?;

    let folder = std::env::temp_dir().join(format!("evenkeel-demo-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(folder.clone());
    let port = free_port(args.port).map_err(runtime_error)?;
    let admin_port = free_port(args.admin_port).map_err(runtime_error)?;
    let https_port = free_port(args.https_port).map_err(runtime_error)?;
    let ports = Ports {
        http: port,
        https: https_port,
        admin: admin_port,
    };
    let config_path = write_files(&folder, ports, &backends).map_err(runtime_error)?;

    // The demo's config goes through the same pipeline as any other.
    let checked = config::check_file(&config_path)
        .context("cannot read the demo config")
        .map_err(runtime_error)?;
    let Some(config) = checked
        .config
        .clone()
        .filter(|_| !checked.is_rejected(true))
    else {
        eprint!(
            "{}",
            diagnostic::render_text(&checked.source, &checked.findings)
        );
        return Err(runtime_error(anyhow::anyhow!(
            "the demo config does not pass check"
        )));
    };
    let _log = super::init_logging(false, super::LogFormat::Text);
    // Before anything is announced: see `Signals`.
    let signals = super::Signals::install().map_err(|e| Failure::new(Exit::Runtime, e))?;
    let options = super::serve::ServeOptions {
        workers: 1,
        access_log: false,
        force: false,
        monitor: true,
    };
    let served = Served::start(&config_path, config, options)?;
    let listen = served.running.listeners[0].1;
    let https = served.running.listeners[1].1;
    let admin = served
        .admin
        .context("the demo has an admin listener")
        .map_err(runtime_error)?;
    print_intro(listen, https, admin, &folder, &config_path, &backends);

    let traffic = (args.rate > 0).then(|| start_traffic(listen, args.rate));
    let names: Vec<(String, String)> = backends
        .iter()
        .map(|b| (b.addr.to_string(), b.name.clone()))
        .collect();
    let summary = spawn_summary(std::sync::Arc::clone(&served.monitor), names);
    signals.wait(args.duration, || served_reload(&config_path, &served));
    drop(traffic);
    drop(summary);
    outln!("\nstopping: draining requests in flight");
    served.stop();
    drop(backends);
    Ok(Exit::Success)
}

fn served_reload(path: &Path, served: &Served) {
    super::serve::reload(path, &served.applier);
}

/// The first free port on 127.0.0.1 from `preferred` on; for 0, a free port the system
/// picks. The demo writes the real port into its config, so the commands it suggests
/// (`status -c`, `history -c`) find the admin API from the file.
fn free_port(preferred: u16) -> anyhow::Result<u16> {
    if preferred == 0 {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("no free port")?;
        return Ok(listener.local_addr()?.port());
    }
    (preferred..preferred.saturating_add(50))
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .with_context(|| {
            format!(
                "no free port in {preferred}..{}",
                preferred.saturating_add(50)
            )
        })
}

/// The demo's ports on 127.0.0.1.
#[derive(Clone, Copy, Debug)]
struct Ports {
    http: u16,
    https: u16,
    admin: u16,
}

fn write_files(folder: &Path, ports: Ports, backends: &[StandIn]) -> anyhow::Result<PathBuf> {
    let Ports {
        http: port,
        https: https_port,
        admin: admin_port,
    } = ports;
    std::fs::create_dir_all(folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    std::fs::write(folder.join("admin.token"), format!("{}\n", random_token()?))?;
    write_certificate(folder)?;
    let [fast, medium, slow] = backends else {
        anyhow::bail!("the demo needs three backends");
    };
    let text = format!(
        r#"# Written by `evenkeel demo`. Edit it and send SIGHUP to the demo to reload it.
state_dir = "state"
drain_timeout = "5s"

[admin]
listen = "127.0.0.1:{admin_port}"
token_file = "admin.token"

[[listener]]
name = "public"
listen = "127.0.0.1:{port}"

[[listener]]
name = "https"
listen = "127.0.0.1:{https_port}"
tls = {{ certificates = [{{ cert = "demo.pem", key = "demo.key" }}] }}   # made at start

[[route]]
listener = "public"
pool = "web"

[[route]]
listener = "https"
pool = "web"

[pool.web]
algorithm = "weighted_round_robin"
timeouts = {{ request = "5s", per_try = "5s" }}      # within drain_timeout
backends = [
  {{ address = "{}", weight = 2, capacity = 2 }},  # fast: answers in 5 ms
  {{ address = "{}", weight = 1 }},                # medium: 20 ms
  {{ address = "{}", weight = 1 }},                # slow: 80 ms
]

[pool.web.health]
path = "/healthz"
interval = "2s"
"#,
        fast.addr, medium.addr, slow.addr
    );
    let path = folder.join("evenkeel.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A self-signed certificate for `localhost` and 127.0.0.1, valid for 30 days:
/// `demo.pem` and `demo.key` (readable by the owner only).
fn write_certificate(folder: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let key = rcgen::KeyPair::generate().context("cannot make a key for the demo certificate")?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .context("demo certificate names")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "evenkeel demo");
    let now = std::time::SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + Duration::from_secs(30 * 86_400)).into();
    let cert = params
        .self_signed(&key)
        .context("cannot make the demo certificate")?;
    std::fs::write(folder.join("demo.pem"), cert.pem())?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(folder.join("demo.key"))?
        .write_all(key.serialize_pem().as_bytes())?;
    Ok(())
}

fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("cannot read /dev/urandom for the admin token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn print_intro(
    listen: SocketAddr,
    https: SocketAddr,
    admin: SocketAddr,
    folder: &Path,
    config: &Path,
    backends: &[StandIn],
) {
    let exe = std::env::current_exe()
        .map_or_else(|_| "evenkeel".to_string(), |p| p.display().to_string());
    let token = folder.join("admin.token");
    let names: Vec<String> = backends
        .iter()
        .map(|b| format!("{} ({})", b.name, b.addr))
        .collect();
    outln!(
        r#"evenkeel demo is running (pid {pid})

  load balancer  http://{listen}
  https          https://localhost:{https_port}
  admin API      http://{admin}
  dashboard      http://{admin}/ui   (token: the line in {token})
  backends       {names}
  config         {config}

Pool "web" is weighted_round_robin with weights 2:1:1, so "fast" should get 50% of
the requests and the others 25% each. Background traffic: see the summary lines.

Try:
  curl -i http://{listen}/
  curl -i --cacert {cacert} https://localhost:{https_port}/
  curl -s -H "Authorization: Bearer $(cat {token})" http://{admin}/status
  curl -s http://{admin}/healthz
  {exe} status -c {config}
  {exe} loadtest http://{listen}/ -n 2000 -c 8 --group-by-header x-backend
  {exe} check -c {config}
  {exe} explain weights-ignored
  {exe} history -c {config}
  # change a weight in the config, then reload it without dropping a request:
  kill -HUP {pid}
  # break the config (say pool = "nope"), reload, and see it refused in the log

Ctrl-C to stop."#,
        pid = std::process::id(),
        names = names.join(", "),
        config = config.display(),
        token = token.display(),
        https_port = https.port(),
        cacert = folder.join("demo.pem").display(),
    );
    let _ = std::io::stdout().flush();
}

/// Sends `rate` GET requests a second to `target` on one keep-alive connection, for
/// at most [`TRAFFIC_FOR`]; stops when dropped.
fn start_traffic(target: SocketAddr, rate: u32) -> tokio::sync::watch::Sender<bool> {
    background("demo-traffic", move |mut stopped| async move {
        let every = Duration::from_secs(1) / rate;
        let mut tick = tokio::time::interval(every);
        let end = tokio::time::Instant::now() + TRAFFIC_FOR;
        let mut sender = None;
        while tokio::time::Instant::now() < end {
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
            }
            if sender.is_none() {
                sender = connect(target).await;
            }
            let Some(s) = sender.as_mut() else { continue };
            let request = http::Request::get("/")
                .header("host", "demo.local")
                .body(http_body_util::Empty::<bytes::Bytes>::new());
            let Ok(request) = request else { continue };
            match s.send_request(request).await {
                Ok(response) => {
                    let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                }
                Err(_) => sender = None,
            }
        }
        outln!(
            "background traffic stopped after {} minutes",
            TRAFFIC_FOR.as_secs() / 60
        );
    })
}

async fn connect(
    target: SocketAddr,
) -> Option<hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>> {
    let stream = tokio::net::TcpStream::connect(target).await.ok()?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(connection);
    Some(sender)
}

/// Prints the alarms in force and each backend's observed share over the monitor's
/// window against its intended share, every [`SUMMARY_EVERY`].
fn spawn_summary(
    monitor: std::sync::Arc<crate::monitor::Monitor>,
    names: Vec<(String, String)>,
) -> tokio::sync::watch::Sender<bool> {
    background("demo-summary", move |mut stopped| async move {
        let mut tick = tokio::time::interval(SUMMARY_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
            }
            let state = monitor.state();
            for alarm in &state.alarms {
                outln!("ALARM {}: {}", alarm.subject.key, alarm.message);
            }
            for pool in state.pools.iter().filter(|p| p.requests > 0) {
                let shares: Vec<String> = pool
                    .backends
                    .iter()
                    .map(|b| {
                        let name = names
                            .iter()
                            .find(|(a, _)| *a == b.address)
                            .map_or(b.address.as_str(), |(_, n)| n.as_str());
                        format!(
                            "{name} {:.1}% (intended {:.1}%)",
                            b.observed_share * 100.0,
                            b.intended_share * 100.0
                        )
                    })
                    .collect();
                outln!(
                    "pool {:?}, last {:.0} s: {} requests · {}",
                    pool.name,
                    state.window_seconds,
                    pool.requests,
                    shares.join(" · ")
                );
            }
        }
    })
}

/// Runs `task` on a thread of its own with a single-threaded runtime; `task` is given
/// a receiver that turns true when the returned sender is set or dropped.
fn background<F>(
    name: &str,
    task: impl FnOnce(tokio::sync::watch::Receiver<bool>) -> F + Send + 'static,
) -> tokio::sync::watch::Sender<bool>
where
    F: std::future::Future<Output = ()> + 'static,
{
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(task(stopped)),
                Err(e) => tracing::warn!(error = %e, "cannot start a demo task"),
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start a demo task");
    }
    stop
}

/// Removes the demo's folder when the demo ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
