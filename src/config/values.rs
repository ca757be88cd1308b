//! Parsers for the value formats the config uses: durations (`"250ms"`, `"1m30s"`),
//! addresses (`host:port`, resolved at load time) and status ranges (`"200-399"`).
//! Each returns a message fit to follow "expected ..." in a finding.

use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::time::Duration;

/// Parses a duration: one or more `<number><unit>` parts, units `ms`, `s`, `m`, `h`;
/// the number may have a fraction (`"1.5s"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("a duration such as \"250ms\", \"2s\" or \"1m30s\"".into());
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("a number before the unit in {text:?}"));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("a valid number in {text:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => {
                return Err(format!(
                    "a unit after {number} (ms, s, m or h), as in \"{number}s\""
                ))
            }
            other => return Err(format!("one of the units ms, s, m, h, not {other:?}")),
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    // Round to whole microseconds so "0.1s" is exactly 100ms.
    let micros = (total * 1e6).round();
    if !micros.is_finite() || micros > 1e15 {
        return Err(format!("a duration shorter than that ({text:?})"));
    }
    Ok(Duration::from_micros(micros as u64))
}

/// Formats a duration the way the config writes it (`"250ms"`, `"2s"`, `"1m30s"`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 && !d.is_zero() {
        return format!("{}ms", d.as_secs_f64() * 1000.0);
    }
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        _ => format!("{s}s"),
    }
}

/// Set by [`resolve_offline`].
static OFFLINE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on, this process resolves no host name but `localhost` (to 127.0.0.1):
/// the fuzz targets check arbitrary configs, whose names must not reach a resolver.
pub fn resolve_offline() {
    OFFLINE.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Parses `host:port` (`[v6]:port` for IPv6 literals) and resolves a host name.
/// `allow_port_zero` admits port 0 (listeners may ask for any free port).
pub fn parse_address(text: &str, allow_port_zero: bool) -> Result<SocketAddr, String> {
    let addr = match text.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            let (host, port) = text
                .rsplit_once(':')
                .ok_or_else(|| format!("host:port, as in \"127.0.0.1:8080\" (got {text:?})"))?;
            let port: u16 = port.parse().map_err(|_| {
                format!("a port number from 1 to 65535 after the colon in {text:?}")
            })?;
            if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
                return Err(format!(
                    "a host name or IP address before the port in {text:?}"
                ));
            }
            if OFFLINE.load(std::sync::atomic::Ordering::Relaxed) {
                if !host.eq_ignore_ascii_case("localhost") {
                    return Err(format!(
                        "a host name that resolves ({host:?}: not resolved here)"
                    ));
                }
                SocketAddr::from(([127, 0, 0, 1], port))
            } else {
                let resolved: Vec<SocketAddr> = (host, port)
                    .to_socket_addrs()
                    .map_err(|e| format!("a host name that resolves ({host:?}: {e})"))?
                    .collect();
                resolved
                    .iter()
                    .find(|a| a.is_ipv4())
                    .or(resolved.first())
                    .copied()
                    .ok_or_else(|| format!("a host name that resolves ({host:?} has no address)"))?
            }
        }
    };
    if addr.port() == 0 && !allow_port_zero {
        return Err(format!("a port from 1 to 65535 (got 0 in {text:?})"));
    }
    Ok(addr)
}

/// Parses a status range: `"200-399"` or a single status `"204"`, within 100..=599.
pub fn parse_status_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let expected = || format!("a status or range of statuses such as \"200-399\" (got {text:?})");
    let (lo, hi) = match text.split_once('-') {
        Some((lo, hi)) => (lo.trim(), hi.trim()),
        None => (text.trim(), text.trim()),
    };
    let lo: u16 = lo.parse().map_err(|_| expected())?;
    let hi: u16 = hi.parse().map_err(|_| expected())?;
    if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
        return Err(format!(
            "statuses from 100 to 599, lowest first (got {text:?})"
        ));
    }
    Ok(lo..=hi)
}

/// Whether `host` is a host name a route can match (`route.host`): letters, digits,
/// `.` and `-`, not empty.
pub(crate) fn is_route_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit_and_combination() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.1s"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_without_a_unit_or_with_a_wrong_one_are_refused() {
        assert!(parse_duration("10").unwrap_err().contains("unit"));
        assert!(parse_duration("10 sec").is_err());
        assert!(parse_duration("5d").unwrap_err().contains("\"d\""));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn durations_format_back_to_what_parses() {
        for text in ["250ms", "2s", "1m", "1m30s", "2h", "0s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn addresses_accept_ip_literals_and_resolve_localhost() {
        assert_eq!(
            parse_address("127.0.0.1:9001", false),
            Ok("127.0.0.1:9001".parse().unwrap())
        );
        assert_eq!(
            parse_address("[::1]:80", false),
            Ok("[::1]:80".parse().unwrap())
        );
        assert!(parse_address("localhost:9001", false)
            .unwrap()
            .ip()
            .is_loopback());
    }

    #[test]
    fn addresses_without_a_valid_port_are_refused() {
        assert!(parse_address("127.0.0.1", false).is_err());
        assert!(parse_address("127.0.0.1:99999", false).is_err());
        assert!(parse_address("127.0.0.1:0", false).is_err());
        assert!(parse_address("127.0.0.1:0", true).is_ok());
        assert!(parse_address(":80", false).is_err());
    }

    #[test]
    fn status_ranges() {
        assert_eq!(parse_status_range("200-399"), Ok(200..=399));
        assert_eq!(parse_status_range("204"), Ok(204..=204));
        assert!(parse_status_range("399-200").is_err());
        assert!(parse_status_range("2xx").is_err());
        assert!(parse_status_range("99-200").is_err());
    }
}
