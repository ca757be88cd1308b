//! The HTTP version a pool speaks to its backends: `protocol = "http1" | "h2c" | "h2"`,
//! and what must go with it — `h2` needs the pool's `tls` (ALPN agrees on HTTP/2 in the
//! handshake), `h2c` is clear text and so has none, a TCP pool carries bytes and speaks
//! no HTTP at all, and a `grpc` health check is an HTTP/2 request.

use super::*;

impl Validator {
    /// `protocol` on a pool; HTTP/1.1 when it is left out.
    pub(super) fn protocol(&mut self, value: Option<&Str>) -> Protocol {
        let Some(value) = value else {
            return Protocol::default();
        };
        match Protocol::from_name(value.get_ref()) {
            Some(protocol) => protocol,
            None => {
                let help = match suggest(value.get_ref(), &Protocol::NAMES) {
                    Some(s) => format!(
                        "did you mean \"{s}\"? protocols: {}",
                        Protocol::NAMES.join(", ")
                    ),
                    None => format!("use one of: {}", Protocol::NAMES.join(", ")),
                };
                self.error(
                    "invalid-value",
                    value.span(),
                    format!("`protocol` {:?} is not a protocol", value.get_ref()),
                    help,
                );
                Protocol::default()
            }
        }
    }

    /// Each pool's protocol against its `tls`, its kind of traffic and its health check.
    pub(super) fn protocols(&mut self, pools: &[Pool]) {
        for pool in pools {
            let at = pool.spans.protocol.clone().unwrap_or(pool.span.clone());
            let name = &pool.name;
            if pool.tcp && pool.spans.protocol.is_some() {
                self.error(
                    "invalid-value",
                    at.clone(),
                    format!("pool {name:?} is a TCP pool with `protocol`: a TCP pool carries the client's bytes, not HTTP"),
                    "remove `protocol` (it is for the pools of HTTP routes)",
                );
                continue;
            }
            match (pool.protocol, &pool.tls) {
                (Protocol::H2, None) => self.error(
                    "invalid-value",
                    at.clone(),
                    format!("pool {name:?} has protocol = \"h2\" but no `tls`: h2 is HTTP/2 over TLS"),
                    "add tls = { ... } to the pool, or use protocol = \"h2c\" for HTTP/2 in clear text",
                ),
                (Protocol::H2c, Some(_)) => self.error(
                    "invalid-value",
                    at.clone(),
                    format!("pool {name:?} has protocol = \"h2c\" and `tls`: h2c is HTTP/2 in clear text"),
                    "use protocol = \"h2\" for HTTP/2 over TLS, or remove `tls`",
                ),
                _ => {}
            }
            if let Some(health) = &pool.health {
                if matches!(health.probe, Probe::Grpc { .. }) && !pool.protocol.is_http2() {
                    self.error(
                        "invalid-health-check",
                        health.span.clone(),
                        format!("pool {name:?} has a grpc health check but speaks HTTP/1.1 to its backends: gRPC runs over HTTP/2"),
                        "set protocol = \"h2c\" (or \"h2\" with tls) on the pool",
                    );
                }
            }
        }
    }
}
