//! HAProxy's `server` lines, with the `default-server` parameters before them.

use super::lists::{IRRELEVANT_SERVER, SERVER_VALUES};
use super::parse::{self, Line};
use super::{millis, Settings, Translator, APPROXIMATE, NOT_TRANSLATED};

#[derive(Clone, Debug)]
pub(super) struct Server {
    pub(super) address: String,
    pub(super) weight: u64,
    /// `disabled` (maintenance): no traffic, whatever its weight; `enabled` undoes it.
    pub(super) disabled: bool,
    pub(super) check: bool,
    pub(super) inter: u64,
    pub(super) fall: u64,
    pub(super) rise: u64,
    pub(super) backup: bool,
    pub(super) maxconn: Option<u64>,
    pub(super) slowstart: Option<u64>,
    pub(super) ssl: bool,
    pub(super) verify_none: bool,
    pub(super) sni: Option<String>,
    pub(super) h2: bool,
    pub(super) proxy_v2: bool,
    pub(super) observe: bool,
    pub(super) error_limit: u64,
    pub(super) file: usize,
    pub(super) span: std::ops::Range<usize>,
}

impl Translator<'_> {
    /// A `server` line with the `default-server` parameters before it.
    pub(super) fn server(&mut self, line: &Line, settings: &Settings) -> Option<Server> {
        let address_word = line.words.get(2)?;
        if address_word.env {
            self.note(
                line,
                NOT_TRANSLATED,
                "a server address from an environment variable is not translated",
            );
            return None;
        }
        let Some((address, port_known)) = server_address(&address_word.text) else {
            self.note(
                line,
                NOT_TRANSLATED,
                format!(
                    "server address {} is not translated (evenkeel balances TCP addresses)",
                    address_word.text
                ),
            );
            return None;
        };
        if !port_known {
            self.note(line, APPROXIMATE, format!("server {} has no fixed port (HAProxy connects to the port the client connected to): judged at {address}", line.word(1)));
        }
        let mut server = Server {
            address,
            weight: 1,
            disabled: false,
            check: false,
            inter: 2000,
            fall: 3,
            rise: 2,
            backup: false,
            maxconn: None,
            slowstart: None,
            ssl: false,
            verify_none: self.verify_none,
            sni: None,
            h2: false,
            proxy_v2: false,
            observe: false,
            error_limit: 10,
            file: line.file,
            span: line.span.clone(),
        };
        let params: Vec<&parse::Word> = settings
            .default_server
            .iter()
            .chain(line.words.iter().skip(3))
            .collect();
        let mut i = 0;
        while i < params.len() {
            let key = params[i].text.as_str();
            let value = params.get(i + 1).map_or("", |w| w.text.as_str());
            i += if SERVER_VALUES.contains(&key) { 2 } else { 1 };
            let number = || value.parse::<u64>().ok();
            match key {
                "weight" => server.weight = number().unwrap_or(1).min(256),
                "check" => server.check = true,
                "no-check" => server.check = false,
                "inter" => server.inter = millis(value).unwrap_or(2000),
                "fall" => server.fall = number().unwrap_or(3),
                "rise" => server.rise = number().unwrap_or(2),
                "backup" => server.backup = true,
                "no-backup" => server.backup = false,
                "disabled" => server.disabled = true,
                "enabled" => server.disabled = false,
                "maxconn" => server.maxconn = number().filter(|n| *n > 0),
                "slowstart" => server.slowstart = millis(value),
                "ssl" => server.ssl = true,
                "no-ssl" => server.ssl = false,
                "verify" => server.verify_none = value == "none",
                "sni" => match value.strip_prefix("str(").and_then(|v| v.strip_suffix(')')) {
                    Some(name) => server.sni = Some(name.to_string()),
                    None => self.note(
                        line,
                        NOT_TRANSLATED,
                        format!("sni {value} is not translated (evenkeel sends a fixed name)"),
                    ),
                },
                "proto" => server.h2 = value == "h2",
                "alpn" => server.h2 = value.split(',').next() == Some("h2"),
                "send-proxy-v2" => server.proxy_v2 = true,
                "observe" => server.observe = matches!(value, "layer4" | "layer7"),
                "error-limit" => server.error_limit = number().unwrap_or(10),
                "on-error" => {}
                "ca-file" => self.note(
                    line,
                    APPROXIMATE,
                    format!("ca-file {value} is not translated: judged against the system's roots"),
                ),
                "send-proxy" | "send-proxy-v2-ssl" | "send-proxy-v2-ssl-cn" => self.note(
                    line,
                    NOT_TRANSLATED,
                    format!("{key} is not translated (evenkeel sends PROXY v2 to TCP pools)"),
                ),
                "track" | "agent-check" | "port" | "addr" | "cookie" | "crt" | "redir"
                | "minconn" | "on-marked-down" | "socks4" | "ws" => {
                    self.note(
                        line,
                        NOT_TRANSLATED,
                        format!("server parameter {key} is not translated"),
                    );
                }
                _ if IRRELEVANT_SERVER.contains(&key) || SERVER_VALUES.contains(&key) => {}
                other => self.note(
                    line,
                    NOT_TRANSLATED,
                    format!("server parameter {other} is not translated"),
                ),
            }
        }
        Some(server)
    }
}

/// A server address as `host:port`, and whether its port is fixed; None for what
/// evenkeel cannot balance (unix sockets and the like).
pub(super) fn server_address(value: &str) -> Option<(String, bool)> {
    let value = value
        .strip_prefix("ipv4@")
        .or_else(|| value.strip_prefix("ipv6@"))
        .unwrap_or(value);
    if value.contains('@') || value.starts_with('/') || value.is_empty() {
        return None;
    }
    let (host, port) = match value.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host, Some(port))
        }
        _ if value.starts_with('[') || !value.contains(':') => (value.trim_end_matches(':'), None),
        Some((host, _)) => (host, None),
        None => (value, None),
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if host.is_empty() {
        return None;
    }
    Some(match port {
        Some(port) => (format!("{host}:{port}"), true),
        None => (format!("{host}:80"), false),
    })
}

impl Server {
    /// The weight it is served with: 0 while `disabled`.
    pub(super) fn served_weight(&self) -> u64 {
        if self.disabled {
            0
        } else {
            self.weight
        }
    }
}
