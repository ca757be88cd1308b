//! What a load test does: target, request, pacing and when to stop.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Uri};

/// A complete description of one load test.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Where requests go.
    pub target: Target,
    /// Request method.
    pub method: Method,
    /// Extra request headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Request body (empty: none).
    pub body: Bytes,
    /// How requests are paced.
    pub pacing: Pacing,
    /// When to stop.
    pub stop: Stop,
    /// Speak HTTP/2 with prior knowledge instead of HTTP/1.1.
    pub http2: bool,
    /// A request that takes longer has failed with a timeout.
    pub timeout: Duration,
    /// Count responses by this header's value (e.g. `x-backend`).
    pub group_by: Option<HeaderName>,
    /// A varying request key (for consistent-hash pools), if any.
    pub key: Option<RequestKey>,
}

/// A key that changes from request to request: request `n` carries `key-{n mod
/// distinct}` in a header or cookie, except `missing_percent` of requests, which lack it.
#[derive(Clone, Debug)]
pub struct RequestKey {
    /// Header name, or cookie name when `cookie`.
    pub name: HeaderName,
    /// Send it as a cookie (`Cookie: NAME=VALUE`) instead of a header.
    pub cookie: bool,
    /// How many distinct values.
    pub distinct: u64,
    /// Percent of requests without the key (0..=100).
    pub missing_percent: u8,
}

impl RequestKey {
    /// The key of request number `n`, or `None` when it goes without.
    pub fn value(&self, n: u64) -> Option<String> {
        ((n % 100) >= u64::from(self.missing_percent))
            .then(|| format!("key-{}", n % self.distinct.max(1)))
    }
}

/// How requests are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pacing {
    /// `connections` connections, each sending its next request when the previous one
    /// is answered.
    Closed {
        /// Connections (and so requests in flight).
        connections: usize,
    },
    /// `rate` requests per second on a fixed schedule, over up to `connections`
    /// connections; latency counts from the scheduled send time, so a stalled server
    /// shows in the percentiles instead of slowing the schedule down.
    Open {
        /// Requests per second.
        rate: f64,
        /// Connections (most requests in flight at once).
        connections: usize,
    },
}

impl Pacing {
    /// Connections used.
    pub fn connections(&self) -> usize {
        match *self {
            Pacing::Closed { connections } | Pacing::Open { connections, .. } => connections.max(1),
        }
    }
}

/// When a load test stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this many requests.
    Count(u64),
    /// After this long.
    Duration(Duration),
}

/// A resolved HTTP target.
#[derive(Clone, Debug)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// Address to connect to.
    pub addr: SocketAddr,
    /// `Host` header (authority of the URL).
    pub host: HeaderValue,
    /// Path and query to request.
    pub path: Uri,
}

/// Why a target cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not an `http://host:port/path` URL.
    #[error("{0:?} is not an http:// URL (https is not supported; use http://HOST:PORT/PATH)")]
    NotHttp(String),
    /// The host does not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// The host is not a loopback address and remote targets were not allowed.
    #[error("{url} resolves to {addr}, which is not a loopback address; load tests go to this machine only unless --allow-remote is given (see docs/loadtest.md)")]
    NotLoopback {
        /// The URL.
        url: String,
        /// Where it resolved.
        addr: SocketAddr,
    },
}

impl Target {
    /// Parses and resolves `url`; a host that is not loopback is refused unless
    /// `allow_remote`.
    pub fn parse(url: &str, allow_remote: bool) -> Result<Target, TargetError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| TargetError::NotHttp(url.to_string()))?;
        if uri.scheme_str() != Some("http") {
            return Err(TargetError::NotHttp(url.to_string()));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| TargetError::NotHttp(url.to_string()))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| TargetError::Resolve {
                host: host.to_string(),
                reason: e.to_string(),
            })?
            .collect();
        let addr = *addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .ok_or_else(|| TargetError::Resolve {
                host: host.to_string(),
                reason: "no address".into(),
            })?;
        if !allow_remote {
            if let Some(remote) = addrs.iter().find(|a| !a.ip().is_loopback()) {
                return Err(TargetError::NotLoopback {
                    url: url.to_string(),
                    addr: *remote,
                });
            }
        }
        let path = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|_| TargetError::NotHttp(url.to_string()))?;
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| TargetError::NotHttp(url.to_string()))?;
        Ok(Target {
            url: url.to_string(),
            addr,
            host,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_parse_and_others_are_refused_by_default() {
        let t = Target::parse("http://127.0.0.1:8080/a?b=1", false).unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.path, "/a?b=1");
        assert_eq!(t.host, "127.0.0.1:8080");
        assert!(Target::parse("http://localhost:9/", false).is_ok());
        assert!(matches!(
            Target::parse("http://10.1.2.3:80/", false),
            Err(TargetError::NotLoopback { .. })
        ));
        assert!(Target::parse("http://10.1.2.3:80/", true).is_ok());
        assert!(matches!(
            Target::parse("https://127.0.0.1/", false),
            Err(TargetError::NotHttp(_))
        ));
        assert!(matches!(
            Target::parse("127.0.0.1:80", false),
            Err(TargetError::NotHttp(_))
        ));
    }
}
