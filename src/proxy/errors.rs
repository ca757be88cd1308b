//! The responses evenkeel gives when it cannot forward a request: a status and a short
//! plain-text body that names the pool, never a backend's address.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// Why a request was answered by evenkeel itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No route matches the host and path: 404.
    NoRoute,
    /// `CONNECT`: evenkeel is not a forward proxy: 501.
    Connect,
    /// An upgrade (WebSocket) whose request has a body, which evenkeel does not
    /// tunnel: 501.
    UpgradeWithBody,
    /// An upgrade (WebSocket) routed to a pool that speaks HTTP/2 to its backends,
    /// where HTTP/1.1's upgrade does not exist: 501.
    UpgradeToHttp2,
    /// A request target that cannot be sent over HTTP/2: 400.
    BadTarget,
    /// The listener already carries `max_tunnels` upgraded connections: 503.
    TooManyTunnels,
    /// A transfer coding other than `chunked` alone, which evenkeel does not decode: 501.
    TransferCoding,
    /// The pool has no usable backend: 503.
    NoBackend,
    /// Every usable backend is at its connection limit and the wait queue is full: 503.
    Overloaded,
    /// The backend refused or reset the connection, or sent a broken response: 502.
    BadGateway,
    /// The backend did not answer in time: 504.
    Timeout,
    /// The client's request body broke off or was malformed: 400.
    BadRequestBody,
    /// The client sent nothing of its request body for `timeouts.body_idle`: 408.
    ClientTimeout,
    /// Over TLS with SNI, the request's host is not covered by the certificate the
    /// connection was opened for: 421.
    Misdirected,
    /// A redirect to `https://` needs a host, and the request named none: 400.
    NoHostToRedirect,
    /// The request's host has user information (`a@host`), which no host has and which
    /// a backend could read as another host than the one routed on: 400.
    HostWithUserinfo,
}

impl Refusal {
    /// The status it answers with.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::NoRoute => StatusCode::NOT_FOUND,
            Refusal::Connect
            | Refusal::UpgradeWithBody
            | Refusal::UpgradeToHttp2
            | Refusal::TransferCoding => StatusCode::NOT_IMPLEMENTED,
            Refusal::BadTarget => StatusCode::BAD_REQUEST,
            Refusal::NoBackend | Refusal::Overloaded | Refusal::TooManyTunnels => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::BadGateway => StatusCode::BAD_GATEWAY,
            Refusal::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::BadRequestBody => StatusCode::BAD_REQUEST,
            Refusal::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Refusal::NoHostToRedirect | Refusal::HostWithUserinfo => StatusCode::BAD_REQUEST,
        }
    }

    /// The response for a request meant for `pool` (if routing got that far).
    pub fn response(self, pool: Option<&str>) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(format!(
            "evenkeel: {}\n",
            self.message(pool)
        ))));
        *response.status_mut() = self.status();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }

    /// What went wrong, in a sentence naming `pool` (if routing got that far).
    pub fn message(self, pool: Option<&str>) -> String {
        let pool = pool.map_or(String::new(), |p| format!("pool {p:?}: "));
        let what = match self {
            Refusal::NoRoute => "no route matches this host and path",
            Refusal::Connect => "CONNECT is not supported: evenkeel is not a forward proxy",
            Refusal::UpgradeWithBody => "an upgrade request with a body is not supported",
            Refusal::UpgradeToHttp2 => {
                "upgrades (WebSocket) are not carried to a pool that speaks HTTP/2 to its backends"
            }
            Refusal::BadTarget => "the request target cannot be sent over HTTP/2",
            Refusal::TooManyTunnels => {
                "this listener carries max_tunnels upgraded connections already"
            }
            Refusal::TransferCoding => "transfer codings other than chunked are not supported",
            Refusal::NoBackend => "no usable backend",
            Refusal::Overloaded => "every backend is at its connection limit",
            Refusal::BadGateway => {
                "the backend failed to answer (connection refused, reset or invalid response)"
            }
            Refusal::Timeout => "the backend did not answer in time",
            Refusal::BadRequestBody => "the request body broke off or is malformed",
            Refusal::ClientTimeout => "the request body stopped arriving",
            Refusal::Misdirected => {
                "this connection's certificate does not cover the requested host; open a new connection for it"
            }
            Refusal::NoHostToRedirect => "a redirect to https:// needs a Host",
            Refusal::HostWithUserinfo => "the Host names user information ('@')",
        };
        format!("{pool}{what}")
    }
}
