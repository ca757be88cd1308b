//! Lints about what the load balancer exposes: the admin API, and a fleet's etcd
//! credentials.
//!
//! `admin-token-missing` reads the admin token file through [`files::read_admin_token`],
//! the function `serve` decides with, so `check` never passes a token `serve` refuses
//! (validation has already refused a token_file that is a FIFO, a device or over
//! 1 MiB); like every step of checking, it changes nothing.

use super::{Finding, Rule, Severity};
use crate::config::files;
use crate::config::model::MIN_ADMIN_TOKEN_LEN;

pub const ADMIN_OFF_LOOPBACK: Rule = Rule {
    name: "admin-off-loopback",
    severity: Severity::Warning,
    summary: "an admin listener reachable from other hosts",
    explain: "The admin API can change the config, drain backends and roll back. Bound to an \
address other than loopback, anyone who can reach it and steals or guesses the token \
controls your traffic. Bind it to 127.0.0.1 (or ::1) and reach it through SSH or a \
sidecar; if it must be remote, allow the rule with the reason and firewall the port.",
    check: |config, out| {
        if let Some(admin) = &config.admin {
            if !admin.listen.ip().is_loopback() {
                out.push(
                    Finding::warning(
                        "",
                        Some(admin.span.clone()),
                        format!(
                            "the admin listener binds {}, which is not a loopback address",
                            admin.listen
                        ),
                    )
                    .with_help("use listen = \"127.0.0.1:9901\""),
                );
            }
        }
    },
};

pub const ADMIN_TOKEN_MISSING: Rule = Rule {
    name: "admin-token-missing",
    severity: Severity::Error,
    summary: "an [admin] token file that cannot be read or is too short",
    explain: "The admin API answers only requests that carry the token from \
admin.token_file, and evenkeel refuses to start with an [admin] section whose token file \
cannot be read or holds fewer than 16 characters: `serve` exits before binding anything. A \
deploy that ships such a config takes the instance down — a rolling deploy, one instance \
after another — and with it the admin API, the way to drain a dead backend or roll back a \
bad change. `check` reads the file (and nothing else) to catch this before the deploy, \
with the same function `serve` uses. Write a random token of at least 16 \
characters to the file (for example `openssl rand -hex 16 > admin.token`, readable only by \
the evenkeel user); token_file is relative to the config file's folder. It is an error, \
not a warning, because `check` must never pass a config `serve` refuses: a CI gate that \
lets it through ships the outage. Where CI runs `check` without the real secret, put a \
stand-in token of the same length in the file for the check.",
    check: |config, out| {
        let Some(admin) = &config.admin else { return };
        let Err(problem) = files::read_admin_token(&admin.token_file) else {
            return;
        };
        out.push(
            Finding::warning(
                "",
                Some(admin.token_file_span.clone()),
                format!(
                    "the admin token file {} cannot be used ({problem}): `serve` would refuse to start",
                    admin.token_file.display()
                ),
            )
            .with_help(format!(
                "write a random token of at least {MIN_ADMIN_TOKEN_LEN} characters to it, e.g. `openssl rand -hex 16 > {}`",
                admin.token_file.display()
            )),
        );
    },
};

pub const ETCD_CREDENTIALS_IN_CLEAR: Rule = Rule {
    name: "etcd-credentials-in-clear",
    severity: Severity::Warning,
    summary: "an etcd password sent over plain http:// to another host",
    explain: "With `[store] user` and `password_file`, every node logs in to etcd with the \
password and then sends etcd's token with every call. Over an http:// endpoint on another \
host, both cross the network in clear: whoever can see that traffic can read and rewrite \
the fleet's config, and so steer all of its traffic. Use https:// endpoints (with `ca`, \
and `cert`/`key` for etcd's client-certificate authentication), or allow the rule with the \
reason (a private link you trust). Loopback endpoints are not reported.",
    check: |config, out| {
        let crate::config::store::StoreKind::Etcd(etcd) = &config.store else {
            return;
        };
        if etcd.user.is_none() {
            return;
        }
        let loopback = |host: &str| {
            host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        };
        for endpoint in etcd
            .endpoints
            .iter()
            .filter(|e| !e.tls && !loopback(&e.host))
        {
            out.push(
                Finding::warning(
                    "",
                    Some(etcd.span.clone()),
                    format!("the etcd password and token go in clear to {endpoint}"),
                )
                .with_help(
                    "use an https:// endpoint with `ca` (and `cert`/`key` for client certificates)",
                ),
            );
        }
    },
};
