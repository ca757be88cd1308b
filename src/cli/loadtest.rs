//! `evenkeel loadtest URL`: an HTTP load generator with a latency histogram.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};

use super::{CommandResult, Exit, Failure};
use crate::config::values;
use crate::loadgen::{self, LoadSpec, Pacing, Stop, Target};

/// Load-test an HTTP endpoint on this machine.
///
/// Closed loop by default (-c connections, each sending its next request when the last
/// is answered); --rate R sends R requests a second on a fixed schedule and measures
/// latency from each request's scheduled time, so a stalling server shows in the
/// percentiles. Stops after -n requests (default 1000) or -d duration. Targets must be
/// loopback addresses unless --allow-remote is given.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  evenkeel loadtest http://127.0.0.1:8080/ -n 10000 -c 32 --group-by-header x-backend\n  evenkeel loadtest http://127.0.0.1:8080/api -d 30s --rate 500 --format json\n  evenkeel loadtest http://127.0.0.1:8080/upload -m POST --body-file payload.json -H 'content-type: application/json'"
)]
pub struct Args {
    /// The URL (http://HOST:PORT/PATH).
    url: String,
    /// Requests to send (default 1000 when no -d is given).
    #[arg(short = 'n', long, value_name = "N", conflicts_with = "duration")]
    requests: Option<u64>,
    /// How long to run (e.g. "30s").
    #[arg(short, long, value_name = "DURATION", value_parser = values::parse_duration)]
    duration: Option<Duration>,
    /// Connections (closed loop: requests in flight; open loop: the most in flight).
    #[arg(short = 'c', long, value_name = "CONNS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,
    /// Open loop: requests per second on a fixed schedule.
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// Request method.
    #[arg(short, long, default_value = "GET")]
    method: String,
    /// A request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Request body.
    #[arg(long, conflicts_with = "body_file")]
    body: Option<String>,
    /// Request body, read from a file.
    #[arg(long, value_name = "FILE")]
    body_file: Option<PathBuf>,
    /// Speak HTTP/2 with prior knowledge (h2c).
    #[arg(long)]
    http2: bool,
    /// A request with no complete response within this has timed out.
    #[arg(long, default_value = "30s", value_parser = values::parse_duration)]
    timeout: Duration,
    /// Count responses by this header's value (e.g. x-backend).
    #[arg(long, value_name = "NAME")]
    group_by_header: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = super::check::Format::Text)]
    format: super::check::Format,
    /// Allow a target that is not a loopback address (see docs/loadtest.md first).
    #[arg(long)]
    allow_remote: bool,
}

/// Largest `--body-file`: request bodies may be bigger than configs, but a named file
/// is still read only when it is regular and bounded (config::files).
const MAX_BODY_FILE_BYTES: u64 = 64 * 1024 * 1024;

pub fn run(args: &Args) -> CommandResult {
    let usage = |message: String| Failure::new(Exit::Usage, anyhow::anyhow!(message));
    let target = Target::parse(&args.url, args.allow_remote).map_err(|e| usage(e.to_string()))?;
    let method = Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| usage(format!("{:?} is not an HTTP method", args.method)))?;
    let headers = args
        .headers
        .iter()
        .map(|h| {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| usage(format!("header {h:?} is not \"Name: value\"")))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| usage(format!("bad header name in {h:?}")))?;
            let value = HeaderValue::from_str(value.trim())
                .map_err(|_| usage(format!("bad header value in {h:?}")))?;
            Ok((name, value))
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    let body = match (&args.body, &args.body_file) {
        (Some(text), _) => Bytes::from(text.clone()),
        (None, Some(path)) => Bytes::from(
            crate::config::files::read_limited_bytes(path, MAX_BODY_FILE_BYTES)
                .map_err(|e| usage(e.to_string()))?,
        ),
        (None, None) => Bytes::new(),
    };
    let group_by = args
        .group_by_header
        .as_deref()
        .map(|n| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| usage(format!("bad header name {n:?}")))
        })
        .transpose()?;
    let connections = args.connections as usize;
    let pacing = match args.rate {
        Some(rate) if rate > 0.0 && rate.is_finite() => Pacing::Open { rate, connections },
        Some(_) => {
            return Err(usage(
                "--rate must be a positive number of requests per second".into(),
            ))
        }
        None => Pacing::Closed { connections },
    };
    let stop = match (args.requests, args.duration) {
        (_, Some(d)) => Stop::Duration(d),
        (Some(n), None) => Stop::Count(n),
        (None, None) => Stop::Count(1000),
    };
    let spec = LoadSpec {
        target,
        method,
        headers,
        body,
        pacing,
        stop,
        http2: args.http2,
        timeout: args.timeout,
        group_by,
        key: None,
    };
    let json = matches!(args.format, super::check::Format::Json);
    let progress = !json && std::io::stderr().is_terminal();
    let report =
        loadgen::run_blocking(&spec, progress).map_err(|e| Failure::new(Exit::Runtime, e))?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        let mode = match spec.pacing {
            Pacing::Closed { connections } => format!("closed loop, {connections} connections"),
            Pacing::Open { rate, connections } => {
                format!("open loop, {rate}/s over up to {connections} connections")
            }
        };
        let protocol = if spec.http2 { "HTTP/2" } else { "HTTP/1.1" };
        out!(
            "{}",
            report.render(
                &format!("evenkeel loadtest {} ({mode}, {protocol})", spec.target.url),
                args.group_by_header.as_deref()
            )
        );
    }
    // Nothing answered at all: the target is not there.
    if report.requests > 0 && report.statuses.is_empty() {
        return Err(Failure::new(
            Exit::Runtime,
            anyhow::anyhow!("no request got a response from {}", spec.target.url),
        ));
    }
    Ok(Exit::Success)
}
