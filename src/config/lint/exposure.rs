//! Lints about what the load balancer exposes.

use super::{Finding, Rule, Severity};

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
