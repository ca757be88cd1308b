//! What a load test measured: latency percentiles from an HDR histogram, counts by
//! status, by error kind and by a chosen response header.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Why a request got no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The connection could not be made.
    Connect,
    /// No complete response within the timeout.
    Timeout,
    /// The connection broke or the response was not valid HTTP.
    Protocol,
}

impl ErrorKind {
    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Protocol => "protocol",
        }
    }
}

/// Collects results while a test runs (one per test; the engine is single-threaded).
pub struct Recorder {
    latency: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<ErrorKind, u64>,
    groups: BTreeMap<String, u64>,
    /// Requests finished (answered or failed).
    pub done: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            // 1 µs to 10 minutes at 3 significant figures; a longer latency is clamped.
            latency: Histogram::new_with_bounds(1, 600_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())),
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            groups: BTreeMap::new(),
            done: 0,
        }
    }
}

impl Recorder {
    /// A response with `status` after `latency`, and the group header's value.
    pub fn response(&mut self, status: u16, latency: Duration, group: Option<String>) {
        self.latency
            .saturating_record((latency.as_micros() as u64).max(1));
        *self.statuses.entry(status).or_default() += 1;
        if let Some(group) = group {
            *self.groups.entry(group).or_default() += 1;
        }
        self.done += 1;
    }

    /// A request that got no response; it counts in the latency too (the time until it
    /// failed), so failures are not hidden from the percentiles.
    pub fn error(&mut self, kind: ErrorKind, latency: Duration) {
        self.latency
            .saturating_record((latency.as_micros() as u64).max(1));
        *self.errors.entry(kind).or_default() += 1;
        self.done += 1;
    }

    /// The finished report.
    pub fn report(&self, elapsed: Duration) -> Report {
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        let empty = self.latency.is_empty();
        Report {
            requests: self.done,
            seconds: elapsed.as_secs_f64(),
            rate: if elapsed.is_zero() {
                0.0
            } else {
                self.done as f64 / elapsed.as_secs_f64()
            },
            latency_ms: Latency {
                p50: if empty { 0.0 } else { ms(0.5) },
                p90: if empty { 0.0 } else { ms(0.9) },
                p99: if empty { 0.0 } else { ms(0.99) },
                p999: if empty { 0.0 } else { ms(0.999) },
                max: if empty {
                    0.0
                } else {
                    self.latency.max() as f64 / 1000.0
                },
            },
            statuses: self
                .statuses
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            errors: self
                .errors
                .iter()
                .map(|(k, n)| (k.name().to_string(), *n))
                .collect(),
            groups: self.groups.clone(),
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
}

/// The result of a load test.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Requests finished (answered or failed).
    pub requests: u64,
    /// Wall time of the test.
    pub seconds: f64,
    /// Requests per second.
    pub rate: f64,
    /// Latency percentiles (from the scheduled send time in open-loop tests).
    pub latency_ms: Latency,
    /// Responses by status code.
    pub statuses: BTreeMap<String, u64>,
    /// Failures by kind: connect, timeout, protocol.
    pub errors: BTreeMap<String, u64>,
    /// Responses by the value of the `--group-by-header` header (`-` when absent).
    pub groups: BTreeMap<String, u64>,
}

impl Report {
    /// Failed requests (no response).
    pub fn failures(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Requests that failed as a client sees it: no response, or a status of 500 or more.
    pub fn failed_or_5xx(&self) -> u64 {
        self.failures()
            + self
                .statuses
                .iter()
                .filter(|(s, _)| s.starts_with('5'))
                .map(|(_, n)| n)
                .sum::<u64>()
    }

    /// Human-readable summary.
    pub fn render(&self, title: &str, group_by: Option<&str>) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{title}");
        let _ = writeln!(
            out,
            "  requests  {} in {:.2} s ({:.1}/s)",
            self.requests, self.seconds, self.rate
        );
        let l = &self.latency_ms;
        let _ = writeln!(
            out,
            "  latency   p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        let _ = writeln!(
            out,
            "  status    {}",
            if statuses.is_empty() {
                "none".into()
            } else {
                statuses.join("  ")
            }
        );
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        let _ = writeln!(
            out,
            "  errors    {}",
            if errors.is_empty() {
                "none".into()
            } else {
                errors.join("  ")
            }
        );
        if let Some(name) = group_by {
            let answered: u64 = self.groups.values().sum();
            let groups: Vec<String> = self
                .groups
                .iter()
                .map(|(g, n)| {
                    format!(
                        "{g} {n} ({:.1}%)",
                        100.0 * *n as f64 / answered.max(1) as f64
                    )
                })
                .collect();
            let _ = writeln!(out, "  by {name}  {}", groups.join("  "));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_statuses_errors_and_groups() {
        let mut r = Recorder::default();
        for i in 1..=100u64 {
            r.response(
                200,
                Duration::from_millis(i),
                Some(if i % 4 == 0 { "b".into() } else { "a".into() }),
            );
        }
        r.response(503, Duration::from_millis(1), None);
        r.error(ErrorKind::Timeout, Duration::from_secs(2));
        let report = r.report(Duration::from_secs(1));
        assert_eq!(report.requests, 102);
        assert!(
            (report.latency_ms.p50 - 50.0).abs() < 1.0,
            "{:?}",
            report.latency_ms
        );
        assert!(report.latency_ms.max >= 1999.0);
        assert_eq!(report.statuses["200"], 100);
        assert_eq!(report.statuses["503"], 1);
        assert_eq!(report.errors["timeout"], 1);
        assert_eq!((report.groups["a"], report.groups["b"]), (75, 25));
        assert_eq!(report.failures(), 1);
        let text = report.render("t", Some("x-backend"));
        assert!(
            text.contains("timeout: 1") && text.contains("b 25 (25.0%)"),
            "{text}"
        );
    }
}
