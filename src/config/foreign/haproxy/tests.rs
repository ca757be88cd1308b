use super::servers::server_address;
use super::*;
use crate::config::diagnostic::Severity;

fn translated(text: &str) -> Translated {
    translate(
        &parse::parse_text(
            std::path::Path::new("/nonexistent/haproxy.cfg"),
            text.to_string(),
        )
        .expect("parses"),
    )
}

/// (rule, line) of each finding `check` makes, notes included.
fn findings(text: &str) -> Vec<(&'static str, Severity, usize)> {
    let t = translated(text);
    let report = super::super::check(&t, std::path::Path::new("/nonexistent"), reword);
    report
        .findings
        .iter()
        .map(|(file, f)| {
            let line = f
                .span
                .as_ref()
                .map_or(0, |s| report.sources[*file].locate(s.start).line);
            (f.rule, f.severity, line)
        })
        .collect()
}

const SHOP: &str = "\
global
    daemon
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 20s
    option redispatch
    retries 3
frontend web
    bind :8080
    acl is_api path_beg /api/
    acl is_shop hdr(host) -i shop.example
    use_backend api if is_api
    use_backend shop if is_shop
    default_backend app
backend api
    balance leastconn
    option httpchk GET /health
    http-check expect status 200
    server a1 10.0.0.1:80 check inter 1s fall 2 rise 3
    server a2 10.0.0.2:80 check inter 1s fall 2 rise 3
backend shop
    server s1 10.0.1.1:80 weight 3 check
    server s2 10.0.1.2:80 weight 1 check
backend app
    server p1 10.0.2.1:80
    server p2 10.0.2.2:80
";

#[test]
fn a_typical_config_becomes_listeners_routes_and_pools() {
    let t = translated(SHOP);
    let text = &t.text;
    let config: toml::Table = text.parse().expect("valid TOML");
    assert_eq!(
        config["listener"][0]["listen"].as_str(),
        Some("0.0.0.0:8080"),
        "{text}"
    );
    let routes = config["route"].as_array().expect("routes");
    let route = |pool: &str| {
        routes
            .iter()
            .find(|r| r["pool"].as_str() == Some(pool))
            .unwrap_or_else(|| panic!("{pool}: {text}"))
    };
    assert_eq!(route("api")["path_prefix"].as_str(), Some("/api/"));
    assert_eq!(route("shop")["host"].as_str(), Some("shop.example"));
    assert_eq!(route("app")["path_prefix"].as_str(), Some("/"));
    let api = &config["pool"]["api"];
    assert_eq!(api["algorithm"].as_str(), Some("least_connections"));
    assert_eq!(api["health"]["path"].as_str(), Some("/health"));
    assert_eq!(api["health"]["expect_status"].as_str(), Some("200"));
    assert_eq!(api["health"]["interval"].as_str(), Some("1s"));
    assert_eq!(api["health"]["unhealthy_after"].as_integer(), Some(2));
    assert_eq!(api["health"]["healthy_after"].as_integer(), Some(3));
    assert_eq!(api["timeouts"]["connect"].as_str(), Some("5s"));
    assert_eq!(api["timeouts"]["per_try"].as_str(), Some("20s"));
    assert_eq!(
        api["retries"]["attempts"].as_integer(),
        Some(1),
        "redispatch"
    );
    assert_eq!(
        api["outlier"]["consecutive_failures"].as_integer(),
        Some(0),
        "no observe"
    );
    let shop = &config["pool"]["shop"];
    assert_eq!(shop["algorithm"].as_str(), Some("weighted_round_robin"));
    assert_eq!(
        shop["health"]["type"].as_str(),
        Some("tcp"),
        "check without httpchk"
    );
    assert!(config["pool"]["app"].get("health").is_none());
}

#[test]
fn findings_land_on_haproxy_lines_in_haproxy_terms() {
    let found = findings(SHOP);
    // backend app (line 26) has no `check`: HAProxy keeps sending to a dead server.
    assert!(
        found.contains(&("no-health-check", Severity::Warning, 26)),
        "{found:?}"
    );
    // A TCP check (`check` without `option httpchk`) never sees a server answering 500,
    // and HAProxy without `observe` takes no server out for failing requests.
    assert!(
        found.contains(&("undetected-failure", Severity::Warning, 24)),
        "{found:?}"
    );
    assert!(
        !found
            .iter()
            .any(|(rule, _, line)| *rule == "undetected-failure" && *line < 23),
        "{found:?}"
    );
    let t = translated(SHOP);
    let report = super::super::check(&t, std::path::Path::new("/nonexistent"), reword);
    let help = report
        .findings
        .iter()
        .find(|(_, f)| f.rule == "no-health-check")
        .and_then(|(_, f)| f.help.clone())
        .unwrap_or_default();
    assert!(help.contains("`check`"), "{help}");
    assert!(
        !found.iter().any(|(_, s, _)| *s == Severity::Error),
        "{found:?}"
    );
}

#[test]
fn without_redispatch_a_failed_request_is_never_retried_elsewhere() {
    let text = SHOP.replace("    option redispatch\n", "");
    let config: toml::Table = translated(&text).text.parse().expect("TOML");
    assert_eq!(
        config["pool"]["api"]["retries"]["attempts"].as_integer(),
        Some(0)
    );
}

#[test]
fn first_match_order_is_kept() {
    let t = translated(
        "defaults\n mode http\nfrontend f\n bind 127.0.0.1:80\n\
         use_backend a if { path_beg /api/ }\n\
         use_backend b if { path_beg /api/v2/ }\n\
         use_backend c if { hdr(host) x.example }\n\
         backend a\n server a 10.0.0.1:80\nbackend b\n server b 10.0.0.2:80\nbackend c\n server c 10.0.0.3:80\n",
    );
    let config: toml::Table = t.text.parse().expect("TOML");
    let routes: Vec<(Option<&str>, &str, &str)> = config["route"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| {
            (
                r.get("host").and_then(|h| h.as_str()),
                r["path_prefix"].as_str().unwrap_or(""),
                r["pool"].as_str().unwrap_or(""),
            )
        })
        .collect();
    // /api/v2/ is never reached (the /api/ rule wins first); x.example/api/ stays with a.
    assert_eq!(
        routes,
        [
            (None, "/api/", "a"),
            (Some("x.example"), "/api/", "a"),
            (Some("x.example"), "/", "c")
        ],
        "{}",
        t.text
    );
    assert!(
        t.notes
            .iter()
            .any(|(_, f)| f.message.contains("never reached")),
        "{:?}",
        t.notes
    );
}

#[test]
fn what_cannot_be_translated_is_noted_at_its_line() {
    let found = findings(
        "defaults\n mode http\nfrontend f\n bind :80\n use_backend a unless { path_beg /x }\n\
         http-request deny if { src 10.0.0.0/8 }\n default_backend a\n\
         backend a\n cookie SRV insert\n balance url_param id\n server a 10.0.0.1:80 check\n server b unix@/run/b.sock\n",
    );
    for line in [5, 6, 9, 10, 12] {
        assert!(
            found.contains(&(NOT_TRANSLATED, Severity::Note, line)),
            "line {line}: {found:?}"
        );
    }
}

#[test]
fn defaults_are_inherited_from_the_last_section_or_by_name() {
    let config: toml::Table = translated(
        "defaults base\n mode http\n balance leastconn\n timeout server 7s\n\
         defaults other\n mode http\n\
         backend one from base\n server a 10.0.0.1:80\n server b 10.0.0.2:80\n\
         backend two\n server a 10.0.0.1:80\n server b 10.0.0.2:80\n",
    )
    .text
    .parse()
    .expect("TOML");
    assert_eq!(
        config["pool"]["one"]["algorithm"].as_str(),
        Some("least_connections")
    );
    assert_eq!(
        config["pool"]["one"]["timeouts"]["per_try"].as_str(),
        Some("7s")
    );
    assert_eq!(
        config["pool"]["two"]["algorithm"].as_str(),
        Some("round_robin")
    );
}

#[test]
fn default_server_and_backup_servers() {
    let config: toml::Table = translated(
        "defaults\n mode http\nlisten web\n bind :80\n default-server check inter 3s weight 2\n\
         server a 10.0.0.1:80\n server b 10.0.0.2:80 weight 1\n server c 10.0.0.3:80 backup\n",
    )
    .text
    .parse()
    .expect("TOML");
    let web = &config["pool"]["web"];
    assert_eq!(web["backup"].as_str(), Some("web-backup"));
    assert_eq!(web["algorithm"].as_str(), Some("weighted_round_robin"));
    assert_eq!(web["health"]["interval"].as_str(), Some("3s"));
    assert_eq!(web["backends"][0]["weight"].as_integer(), Some(2));
    assert_eq!(web["backends"][1]["weight"].as_integer(), Some(1));
    assert_eq!(
        config["pool"]["web-backup"]["backends"][0]["address"].as_str(),
        Some("10.0.0.3:80")
    );
    assert_eq!(config["route"][0]["pool"].as_str(), Some("web"));
}

#[test]
fn tcp_frontends_become_tcp_listeners() {
    let config: toml::Table = translated(
        "frontend db\n bind 127.0.0.1:6379 accept-proxy\n default_backend redis\n\
         backend redis\n balance source\n server r1 10.0.0.1:6379 check send-proxy-v2\n server r2 10.0.0.2:6379 check\n",
    )
    .text
    .parse()
    .expect("TOML");
    assert_eq!(config["listener"][0]["mode"].as_str(), Some("tcp"));
    assert_eq!(config["listener"][0]["pool"].as_str(), Some("redis"));
    assert_eq!(
        config["listener"][0]["accept_proxy_protocol"].as_bool(),
        Some(true)
    );
    assert_eq!(
        config["pool"]["redis"]["hash_key"].as_str(),
        Some("client_ip")
    );
    assert_eq!(
        config["pool"]["redis"]["proxy_protocol"].as_str(),
        Some("v2")
    );
    assert!(config.get("route").is_none());
}

#[test]
fn haproxy_values_become_evenkeel_values() {
    assert_eq!(millis("5000"), Some(5000));
    assert_eq!(millis("5s"), Some(5000));
    assert_eq!(millis("2m"), Some(120_000));
    assert_eq!(millis("1500us"), Some(2));
    assert_eq!(millis("1d"), Some(86_400_000));
    assert_eq!(millis("5x"), None);
    assert_eq!(millis("s"), None);
    assert_eq!(bind_address(":80").as_deref(), Some("0.0.0.0:80"));
    assert_eq!(bind_address("*:443").as_deref(), Some("0.0.0.0:443"));
    assert_eq!(bind_address(":::80").as_deref(), Some("[::]:80"));
    assert_eq!(bind_address("ipv6@::1:8080").as_deref(), Some("[::1]:8080"));
    assert_eq!(bind_address("127.0.0.1:8000-8010"), None);
    assert_eq!(bind_address("unix@/run/x.sock"), None);
    assert_eq!(bind_address("/run/x.sock"), None);
    assert_eq!(
        server_address("10.0.0.1:8080"),
        Some(("10.0.0.1:8080".into(), true))
    );
    assert_eq!(
        server_address("app.internal"),
        Some(("app.internal:80".into(), false))
    );
    assert_eq!(
        server_address("10.0.0.1:+1000"),
        Some(("10.0.0.1:80".into(), false))
    );
    assert_eq!(server_address("::1:80"), Some(("[::1]:80".into(), true)));
    assert_eq!(server_address("[::1]:80"), Some(("[::1]:80".into(), true)));
    assert_eq!(server_address("unix@/run/a.sock"), None);
}

/// (host, path_prefix, pool) of each route of a translation.
fn routes_of(t: &Translated) -> Vec<(Option<String>, String, String)> {
    let config: toml::Table = t.text.parse().expect("TOML");
    config
        .get("route")
        .and_then(|r| r.as_array())
        .map(|routes| {
            routes
                .iter()
                .map(|r| {
                    (
                        r.get("host").and_then(|h| h.as_str()).map(str::to_string),
                        r["path_prefix"].as_str().unwrap_or_default().to_string(),
                        r["pool"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The pool evenkeel picks for (host, path): routes of the host first, then those
/// without one; the longest prefix (the prefixes here all end in `/`).
fn evenkeel_picks(
    routes: &[(Option<String>, String, String)],
    host: &str,
    path: &str,
) -> Option<String> {
    let best = |with_host: bool| {
        routes
            .iter()
            .filter(|(h, prefix, _)| {
                (if with_host {
                    h.as_deref() == Some(host)
                } else {
                    h.is_none()
                }) && path.starts_with(prefix.as_str())
            })
            .max_by_key(|(_, prefix, _)| prefix.len())
            .map(|(_, _, pool)| pool.clone())
    };
    best(true).or_else(|| best(false))
}

proptest::proptest! {
    /// Found in review: a route added to keep HAProxy's order overrode an earlier rule
    /// of the same host. For any list of rules on a few hosts and nested prefixes,
    /// evenkeel's routes pick, for every host and path, the backend HAProxy's first
    /// matching rule picks.
    #[test]
    fn routes_pick_what_haproxys_first_match_picks(
        rules in proptest::collection::vec((0usize..3, 0usize..5, 0usize..4), 1..9)
    ) {
        let hosts = [None, Some("a.example"), Some("b.example")];
        let prefixes = ["/", "/x/", "/x/y/", "/z/", "/x/y/w/"];
        let mut text = String::from("defaults\n mode http\nfrontend f\n bind 127.0.0.1:80\n");
        for (i, (host, prefix, backend)) in rules.iter().enumerate() {
            let mut condition = format!("{{ path_beg {} }}", prefixes[*prefix]);
            if let Some(host) = hosts[*host] {
                text.push_str(&format!(" acl h{i} hdr(host) -i {host}\n"));
                condition = format!("h{i} {condition}");
            }
            text.push_str(&format!(" use_backend be{backend} if {condition}\n"));
        }
        for backend in 0..4 {
            text.push_str(&format!("backend be{backend}\n server s 10.0.0.{}:80\n server t 10.0.1.{}:80\n", backend + 1, backend + 1));
        }
        let routes = routes_of(&translated(&text));
        for host in ["a.example", "b.example", "c.example"] {
            for path in ["/", "/q", "/x/", "/x/q", "/x/y/", "/x/y/q", "/x/y/w/q", "/z/q"] {
                let haproxy = rules.iter().find(|(h, prefix, _)| {
                    hosts[*h].is_none_or(|h| h == host) && path.starts_with(prefixes[*prefix])
                }).map(|(_, _, backend)| format!("be{backend}"));
                proptest::prop_assert_eq!(evenkeel_picks(&routes, host, path), haproxy, "{} {} with {:?}\n{}", host, path, routes, text);
            }
        }
    }
}

/// Found in review: an `acl` line after the rule that uses it was left out; HAProxy
/// reads the section whole.
#[test]
fn an_acl_line_after_its_rule_still_counts() {
    let routes = routes_of(&translated(
        "defaults\n mode http\nfrontend f\n bind :80\n acl api path_beg /api/\n use_backend a if api\n acl api path_beg /x/\n default_backend b\n\
         backend a\n server a 10.0.0.1:80\nbackend b\n server b 10.0.0.2:80\n",
    ));
    assert!(
        routes.contains(&(None, "/x/".into(), "a".into())),
        "{routes:?}"
    );
}

/// Found in review: `disabled` was read as weight 0 and `enabled` ignored; a backend
/// whose active servers are all out is served by its backups.
#[test]
fn disabled_servers_and_their_backups() {
    let config: toml::Table = translated(
        "defaults\n mode http\nbackend b\n default-server disabled\n server s1 10.0.0.1:80 enabled\n\
         server s2 10.0.0.2:80 weight 5 disabled\n server s3 10.0.0.3:80 weight 2 enabled\n\
         backend c\n server c1 10.0.1.1:80 disabled\n server c2 10.0.1.2:80 backup\n",
    )
    .text
    .parse()
    .expect("TOML");
    let weights: Vec<i64> = config["pool"]["b"]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["weight"].as_integer().unwrap_or(-1))
        .collect();
    assert_eq!(weights, [1, 0, 2]);
    assert_eq!(
        config["pool"]["c"]["backends"][0]["address"].as_str(),
        Some("10.0.1.2:80")
    );
    assert!(config["pool"]["c"].get("backup").is_none());
}

/// Found in review: a backend's own check option did not replace an inherited
/// `option httpchk`; `balance random` draws two servers in HAProxy.
#[test]
fn the_last_check_option_wins_and_random_draws_two() {
    let config: toml::Table = translated(
        "defaults\n mode http\n option httpchk GET /health\nbackend b\n balance random\n option mysql-check user x\n\
         server s1 10.0.0.1:80 check\n server s2 10.0.0.2:80 check\n",
    )
    .text
    .parse()
    .expect("TOML");
    assert_eq!(config["pool"]["b"]["health"]["type"].as_str(), Some("tcp"));
    assert_eq!(
        config["pool"]["b"]["algorithm"].as_str(),
        Some("least_request")
    );
}

/// Found in review: a section opened inside `.if` takes the lines after `.endif` in
/// HAProxy; they are held with the block, not given to the section before it.
#[test]
fn a_section_opened_in_a_conditional_block_keeps_the_lines_after_it() {
    let t = translated(
        "defaults\n mode http\nbackend a\n server s1 10.0.0.1:80\n.if defined(X)\nbackend b\n.endif\n server s2 10.0.0.2:80\n",
    );
    let config: toml::Table = t.text.parse().expect("TOML");
    assert_eq!(
        config["pool"]["a"]["backends"].as_array().map(Vec::len),
        Some(1),
        "{}",
        t.text
    );
    assert!(
        t.notes
            .iter()
            .any(|(_, f)| f.message.contains("2 statement(s)")),
        "{:?}",
        t.notes
    );
}

/// Found in review: an unconditional use_backend in a TCP frontend is where its
/// connections go.
#[test]
fn an_unconditional_use_backend_takes_a_tcp_frontends_connections() {
    let config: toml::Table = translated(
        "frontend f\n bind 127.0.0.1:6379\n use_backend r\nbackend r\n server a 10.0.0.1:6379\n server b 10.0.0.2:6379\n",
    )
    .text
    .parse()
    .expect("TOML");
    assert_eq!(config["listener"][0]["pool"].as_str(), Some("r"));
}

/// Found in review: environment variables in values were read as their names, or
/// made errors; the statement is noted instead.
#[test]
fn values_from_the_environment_are_noted_not_guessed() {
    let found = findings(
        "defaults\n mode http\nfrontend f\n bind \"${ADDR}:80\"\n bind :80\n default_backend b\n\
         backend b\n server s1 10.0.0.1:80 weight \"${W1}\"\n server s2 10.0.0.2:80\n server s3 10.0.0.3:80\n",
    );
    assert!(
        found.contains(&(NOT_TRANSLATED, Severity::Note, 4)),
        "{found:?}"
    );
    assert!(
        found.contains(&(NOT_TRANSLATED, Severity::Note, 8)),
        "{found:?}"
    );
    assert!(
        !found.iter().any(|(_, s, _)| *s == Severity::Error),
        "{found:?}"
    );
}

/// Found in review: a file name with a line break in it broke the TOML `import`
/// writes; a second file starts outside any section, as in HAProxy.
#[test]
fn import_comments_hold_any_file_name_and_files_start_outside_sections() {
    let dir = tempfile::tempdir().expect("temporary folder");
    std::fs::write(dir.path().join("a.cfg"), "defaults\n mode http\nlisten web\n bind :80\n server a 10.0.0.1:80\n server b 10.0.0.2:80\n").expect("write");
    std::fs::write(
        dir.path().join("b\nx = 1 .cfg"),
        "backend c\n server c 10.0.1.1:80\n server d 10.0.1.2:80\n",
    )
    .expect("write");
    let parsed = parse::read(dir.path()).expect("reads the folder");
    let text = super::super::annotated(&translate(&parsed));
    let table: Result<toml::Table, _> = text.parse();
    assert!(table.is_ok(), "{text}");
    std::fs::write(dir.path().join("c.cfg"), " server e 10.0.2.1:80\n").expect("write");
    assert!(matches!(
        parse::read(dir.path()),
        Err(parse::ParseError::Syntax { .. })
    ));
}

/// Found in the second review: HAProxy has no panic mode, and `timeout X 0` or
/// `maxconn 0` (none) were refused as evenkeel values.
#[test]
fn no_panic_mode_and_zero_means_none() {
    let text = "defaults\n mode http\n timeout connect 0\n timeout server 0\n timeout check 0\n\
                frontend f\n bind :80\n maxconn 0\n timeout http-request 0\n default_backend b\n\
                backend b\n option httpchk\n server s1 10.0.0.1:80 check\n server s2 10.0.0.2:80 check\n";
    let config: toml::Table = translated(text).text.parse().expect("TOML");
    assert_eq!(config["pool"]["b"]["panic_threshold"].as_integer(), Some(0));
    assert_eq!(
        config["pool"]["b"]["health"]["timeout"].as_str(),
        Some("2s"),
        "inter"
    );
    let found = findings(text);
    assert!(
        !found.iter().any(|(_, s, _)| *s == Severity::Error),
        "{found:?}"
    );
}

/// Found in the second review: with every active server out, HAProxy serves the
/// first usable backup only (without `option allbackups`); backups that take no
/// traffic are no backup; a backend serving nothing is noted, not an error.
#[test]
fn the_backups_haproxy_serves() {
    let t = translated(
        "defaults\n mode http\nbackend b\n server s1 10.0.0.1:80 disabled\n server k1 10.0.1.1:80 backup weight 0\n\
         server k2 10.0.1.2:80 backup\n server k3 10.0.1.3:80 backup\n\
         backend c\n server c1 10.0.2.1:80 check\n server c2 10.0.2.2:80 check\n server c3 10.0.2.3:80 backup disabled\n\
         backend d\n server d1 10.0.3.1:80 disabled\n",
    );
    let config: toml::Table = t.text.parse().expect("TOML");
    let b = &config["pool"]["b"];
    assert_eq!(
        b["backends"].as_array().map(Vec::len),
        Some(1),
        "{}",
        t.text
    );
    assert_eq!(b["backends"][0]["address"].as_str(), Some("10.0.1.2:80"));
    assert_eq!(
        config["pool"]["b-backup"]["backends"][0]["address"].as_str(),
        Some("10.0.1.3:80")
    );
    assert!(config["pool"]["c"].get("backup").is_none(), "{}", t.text);
    assert!(config["pool"].get("d").is_none());
}

/// Found in the second review: paths HAProxy answers itself, hosts evenkeel cannot
/// route on and an address two frontends bind are noted, not dropped or refused.
#[test]
fn what_haproxy_does_itself_and_what_evenkeel_cannot_route_is_noted() {
    let text = "defaults\n mode http\n option redispatch\nfrontend f\n bind :80\n monitor-uri /healthz\n stats enable\n\
                acl v6 hdr(host) [::1]:8080\n acl under hdr(host) a_b.example\n use_backend b if v6\n use_backend b if under\n default_backend b\n\
                frontend g\n bind :80\n default_backend b\n\
                backend b\n server s1 10.0.0.1:80 check\n server s2 10.0.0.2:80 check\n";
    let found = findings(text);
    for line in [6, 7, 10, 11, 14] {
        assert!(
            found.contains(&(NOT_TRANSLATED, Severity::Note, line)),
            "line {line}: {found:?}"
        );
    }
    assert!(
        found.contains(&(APPROXIMATE, Severity::Note, 16)),
        "redispatch: {found:?}"
    );
    assert!(
        !found.iter().any(|(_, s, _)| *s == Severity::Error),
        "{found:?}"
    );
}

/// Found in the second review: an empty folder panicked.
#[test]
fn an_empty_folder_is_a_file_error() {
    let dir = tempfile::tempdir().expect("temporary folder");
    assert!(matches!(
        parse::read(dir.path()),
        Err(parse::ParseError::File(_))
    ));
}
