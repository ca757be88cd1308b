//! The monitor, alarms, webhook, guard and journal, end to end: a real `serve`, real
//! backends, real load, a real webhook receiver.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Request};

use crate::util::{eventually, full, Backend, Client, Load, Proxy, ADMIN_TOKEN};

/// An HTTP server that records the bodies POSTed to it and answers 200.
struct Receiver {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (bodies, stop) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicBool::new(false)),
        );
        let (b, s) = (Arc::clone(&bodies), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                // Read the head, then Content-Length bytes of body.
                let body = loop {
                    let Ok(n) = stream.read(&mut buf) else {
                        break None;
                    };
                    if n == 0 {
                        break None;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            break Some(body.to_string());
                        }
                    }
                };
                if let Some(body) = body {
                    b.lock().unwrap().push(body);
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                }
            }
        });
        Receiver { addr, bodies, stop }
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A port with nothing listening.
/// An address on 127.0.0.1 that refuses connections: its port stays bound (not
/// listening) until the test binary exits, so no other test's listener can take it
/// and bring the "dead" backend to life (a freed port once was, and one of 150 alarms
/// never came).
pub(crate) fn dead_port() -> String {
    static RESERVED: std::sync::Mutex<Vec<socket2::Socket>> = std::sync::Mutex::new(Vec::new());
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    socket.bind(&any.into()).expect("bind");
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("bound address");
    RESERVED.lock().expect("lock").push(socket);
    addr.to_string()
}

fn pool(name: &str, backends: &[(String, u32)], health: bool) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|(a, w)| format!("{{ address = \"{a}\", weight = {w} }}"))
        .collect();
    let health = if health {
        format!("[pool.{name}.health]\npath = \"/healthz\"\ninterval = \"300ms\"\ntimeout = \"200ms\"\n")
    } else {
        String::new()
    };
    format!(
        "[pool.{name}]\nalgorithm = \"weighted_round_robin\"\nbackends = [{}]\n{health}",
        list.join(", ")
    )
}

fn config(pools: &str, webhook: SocketAddr) -> String {
    format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n[[route]]\npool = \"web\"\n\
         [guard]\nwatch = \"30s\"\nmin_requests = 100\n[alerts]\nwebhook = \"http://{webhook}/hook\"\n{pools}"
    )
}

/// POST /config with the token; (status, JSON answer).
fn apply(proxy: &Proxy, text: &str) -> (u16, serde_json::Value) {
    let mut client = Client::connect(proxy.admin.expect("admin"));
    let request = Request::builder()
        .method(Method::POST)
        .uri("/config")
        .header("host", "admin")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(full(text.to_string()))
        .unwrap();
    let reply = client.send(request);
    (
        reply.status.as_u16(),
        serde_json::from_str(&reply.text()).unwrap_or_default(),
    )
}

fn journal(proxy: &Proxy) -> Vec<serde_json::Value> {
    proxy.admin_request("GET", "/events?since=0").1["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn position(
    events: &[serde_json::Value],
    what: impl Fn(&serde_json::Value) -> bool,
) -> Option<usize> {
    events.iter().position(what)
}

/// Waits for the guard to roll `version` back; returns how long it took.
fn wait_for_rollback(proxy: &Proxy, version: u64, since: Instant) -> Duration {
    let rolled = eventually(Duration::from_secs(30), || {
        journal(proxy).iter().any(|e| {
            e["kind"] == "guard"
                && e["data"]["version"] == version
                && e["data"]["verdict"] == "rolled_back"
        })
    });
    assert!(
        rolled,
        "the guard did not roll back version {version}: {:#?}",
        journal(proxy)
    );
    since.elapsed()
}

#[test]
fn a_change_that_piles_traffic_on_one_backend_is_alarmed_and_rolled_back() {
    let backends = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let receiver = Receiver::start();
    let even: Vec<(String, u32)> = backends.iter().map(|b| (b.address(), 1)).collect();
    let proxy = Proxy::start_with_admin(&config(&pool("web", &even, true), receiver.addr), 2);
    let load = Load::start(proxy.addr(), 4, "/", Duration::from_millis(2));
    std::thread::sleep(Duration::from_secs(2));

    let piled: Vec<(String, u32)> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| (b.address(), if i == 0 { 18 } else { 1 }))
        .collect();
    let applied_at = Instant::now();
    let (status, answer) = apply(&proxy, &config(&pool("web", &piled, true), receiver.addr));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["version"], 2);
    let took = wait_for_rollback(&proxy, 2, applied_at);
    assert!(
        took < Duration::from_secs(30),
        "rolled back after {took:?}, beyond guard.watch"
    );
    eprintln!("rolled back {took:?} after the apply");

    // Shares are even again.
    let before: Vec<u64> = backends.iter().map(Backend::requests).collect();
    std::thread::sleep(Duration::from_secs(1));
    let delta: Vec<u64> = backends
        .iter()
        .zip(&before)
        .map(|(b, x)| b.requests() - x)
        .collect();
    let total: u64 = delta.iter().sum();
    for d in &delta {
        let share = *d as f64 / total as f64;
        assert!(
            (share - 1.0 / 3.0).abs() < 0.05,
            "shares after the rollback: {delta:?}"
        );
    }
    let sent = load.stop();
    assert!(
        sent.iter().all(|s| s.ok()),
        "every client request succeeded"
    );

    // The journal tells it in order.
    let events = journal(&proxy);
    let applied = position(&events, |e| {
        e["kind"] == "config" && e["data"]["version"] == 2 && e["data"]["outcome"] == "applied"
    })
    .expect("apply journaled");
    let alarm = position(&events, |e| {
        e["kind"] == "alarm"
            && e["data"]["raised"] == true
            && e["data"]["key"]
                .as_str()
                .is_some_and(|k| k.starts_with("load_ratio/web/"))
    })
    .expect("a load-ratio alarm");
    let rollback = position(&events, |e| {
        e["kind"] == "config" && e["data"]["origin"] == "rollback" && e["data"]["restores"] == 1
    })
    .expect("rollback journaled");
    let verdict = position(&events, |e| {
        e["kind"] == "guard" && e["data"]["verdict"] == "rolled_back"
    })
    .expect("guard verdict");
    assert!(
        applied < alarm && alarm < rollback && rollback < verdict,
        "order: {applied} {alarm} {rollback} {verdict}"
    );
    assert!(events[alarm]["message"]
        .as_str()
        .unwrap()
        .contains(&backends[0].address()));

    // The alarm reached the webhook.
    assert!(
        eventually(Duration::from_secs(10), || receiver
            .bodies()
            .iter()
            .any(|b| b.contains("load_ratio/web/"))),
        "no load-ratio alert delivered: {:?}",
        receiver.bodies()
    );
    // A second apply of the rolled-back file is refused without --force.
    let (status, answer) = apply(&proxy, &config(&pool("web", &piled, true), receiver.addr));
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .contains("rolled back by the guard"),
        "{answer}"
    );
}

#[test]
fn a_pool_pointed_at_a_dead_port_is_alarmed_and_rolled_back() {
    let backends = [Backend::start("a"), Backend::start("b")];
    let receiver = Receiver::start();
    let good: Vec<(String, u32)> = backends.iter().map(|b| (b.address(), 1)).collect();
    let proxy = Proxy::start_with_admin(&config(&pool("web", &good, false), receiver.addr), 1);
    let load = Load::start(proxy.addr(), 4, "/", Duration::from_millis(2));
    std::thread::sleep(Duration::from_secs(2));
    let applied_at = Instant::now();
    let (status, answer) = apply(
        &proxy,
        &config(&pool("web", &[(dead_port(), 1)], false), receiver.addr),
    );
    assert_eq!(status, 200, "{answer}");
    wait_for_rollback(&proxy, 2, applied_at);
    std::thread::sleep(Duration::from_millis(500));
    let sent = load.stop();
    let last: Vec<_> = sent.iter().rev().take(50).collect();
    assert!(
        last.iter().all(|s| s.ok()),
        "requests succeed again after the rollback"
    );
    let events = journal(&proxy);
    let alarm = position(&events, |e| {
        e["kind"] == "alarm" && e["data"]["key"] == "error_rate/web"
    })
    .expect("error-rate alarm");
    let verdict = position(&events, |e| {
        e["kind"] == "guard" && e["data"]["verdict"] == "rolled_back"
    })
    .expect("guard verdict");
    assert!(alarm < verdict);
    assert!(
        events[verdict]["message"]
            .as_str()
            .unwrap()
            .contains("error rate"),
        "{}",
        events[verdict]
    );
}

#[test]
fn a_webhook_that_is_down_costs_no_request_and_sheds_alerts_within_its_bound() {
    let backend = Backend::start("a");
    let webhook: SocketAddr = dead_port().parse().unwrap();
    // 150 pools whose only backend is down: 150 alarms at once, for a webhook that is down.
    let mut pools = pool("web", &[(backend.address(), 1)], true);
    for i in 0..150 {
        pools.push_str(&pool(&format!("down{i}"), &[(dead_port(), 1)], true));
        pools.push_str(&format!(
            "[[route]]\npath_prefix = \"/down{i}\"\npool = \"down{i}\"\n"
        ));
    }
    let proxy = Proxy::start_with_admin(&config(&pools, webhook), 1);
    let load = Load::start(proxy.addr(), 2, "/", Duration::from_millis(2));
    // 150 pools' health checks and alarms on a shared 2-core machine: allow time (a
    // full parallel test run once took over 15 s here).
    let raised = eventually(Duration::from_secs(30), || {
        proxy.status()["monitor"]["alarms"]
            .as_array()
            .is_some_and(|a| a.len() >= 150)
    });
    assert!(raised, "{}", proxy.status()["monitor"]["alarms"]);
    let rss_early = proxy.memory_kib("VmRSS");
    std::thread::sleep(Duration::from_secs(3));
    let alerts = proxy.status()["alerts"].clone();
    let rss_late = proxy.memory_kib("VmRSS");
    let sent = load.stop();
    assert!(
        sent.iter().all(|s| s.ok()),
        "a dead webhook cost client requests"
    );
    assert_eq!(alerts["delivered"], 0);
    let bound = alerts["queue_bound"].as_u64().unwrap();
    let dropped = alerts["dropped"].as_u64().unwrap();
    // 150 alerts, at most `bound` queued and one being retried: the rest are shed and counted.
    assert!(
        dropped >= 150 - bound - 1,
        "dropped {dropped} of 150 with a queue of {bound}: {alerts}"
    );
    assert!(
        rss_late <= rss_early + 5 * 1024,
        "memory grew from {rss_early} to {rss_late} KiB"
    );
}

/// A backend that turns slow while the others stay fast: the slow-backend alarm names
/// it within two monitor windows (its p99 against the median p99 of the others, which
/// works in any pool of two or more), `/status` and `/metrics` show its p99, and the
/// alarm clears once it is fast again.
#[test]
fn a_backend_that_turns_slow_is_alarmed_by_name_and_cleared_when_it_recovers() {
    let backends = [
        Backend::start("b1"),
        Backend::start("b2"),
        Backend::start("b3"),
    ];
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address = \"{}\" }}", b.address()))
        .collect();
    let config = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[route]]\npool = \"web\"\n\n\
         [pool.web]\nalgorithm = \"round_robin\"\nbackends = [{}]\n",
        list.join(", ")
    );
    let proxy = Proxy::start_with_admin(&config, 1);
    let load = Load::start(proxy.addr(), 4, "/", Duration::from_millis(5));
    let slow = backends[1].address();
    let key = format!("slow_backend/web/{slow}");
    let alarmed = |proxy: &Proxy| {
        proxy.status()["monitor"]["alarms"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["key"] == key.as_str())
    };
    std::thread::sleep(Duration::from_secs(3));
    assert!(!alarmed(&proxy), "nothing is slow yet: {}", proxy.status());

    backends[1].set_delay(Duration::from_millis(120));
    let turned = Instant::now();
    assert!(
        eventually(Duration::from_secs(25), || alarmed(&proxy)),
        "no slow-backend alarm for {slow}: {}",
        proxy.status()
    );
    assert!(
        turned.elapsed() < Duration::from_secs(20),
        "took {:?}",
        turned.elapsed()
    );
    let pool = &proxy.status()["monitor"]["pools"][0];
    let p99 = |address: &str| {
        pool["backends"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["address"] == address))
            .and_then(|b| b["p99_ms"].as_f64())
            .unwrap_or(0.0)
    };
    assert!(p99(&slow) >= 100.0, "{pool}");
    assert!(p99(&backends[0].address()) < 50.0, "{pool}");
    let metrics = crate::util::raw_exchange(
        proxy.admin.expect("admin"),
        b"GET /metrics HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .text;
    assert!(
        metrics.contains(&format!(
            "evenkeel_backend_latency_p99_seconds{{pool=\"web\",backend=\"{slow}\"}}"
        )),
        "{metrics}"
    );
    let (_, events) = proxy.admin_request("GET", "/events?since=0");
    assert!(events.to_string().contains(&key), "journaled: {events}");

    backends[1].set_delay(Duration::ZERO);
    assert!(
        eventually(Duration::from_secs(40), || !alarmed(&proxy)),
        "the alarm should clear: {}",
        proxy.status()
    );
    drop(load);
}
