//! `evenkeel loadtest` as a process, against servers with known behaviour.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use evenkeel::loadgen::standin::StandIn;

use crate::util::{run, Backend, Proxy};

fn json(args: &[&str]) -> serde_json::Value {
    let out = run(args);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

#[test]
fn the_median_latency_is_the_servers_fixed_delay_and_counts_match() {
    let server = StandIn::start("fixed", Duration::from_millis(40), false).unwrap();
    let url = format!("http://{}/", server.addr);
    let report = json(&["loadtest", &url, "-n", "200", "-c", "4", "--format", "json"]);
    let p50 = report["latency_ms"]["p50"].as_f64().unwrap();
    assert!(
        (40.0..55.0).contains(&p50),
        "p50 {p50} ms for a 40 ms server"
    );
    assert_eq!(report["requests"], 200);
    assert_eq!(report["statuses"]["200"], 200);
    assert_eq!(
        server.requests(),
        200,
        "the server saw exactly what was reported"
    );
}

/// A server that answers at once, except that every request arriving during one
/// second (from 1 s after its first request) is held until that second ends.
struct Staller {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
}

impl Staller {
    fn start() -> Staller {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&requests);
        let first: Arc<Mutex<Option<Instant>>> = Arc::default();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                // Stops with the test process; bounded by the test's own duration.
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (counter, first) = (Arc::clone(&counter), Arc::clone(&first));
                    tokio::spawn(async move {
                        let service = service_fn(move |_request| {
                            let (counter, first) = (Arc::clone(&counter), Arc::clone(&first));
                            async move {
                                let start = *first.lock().unwrap().get_or_insert_with(Instant::now);
                                let (from, to) = (
                                    start + Duration::from_secs(1),
                                    start + Duration::from_secs(2),
                                );
                                let now = Instant::now();
                                if now >= from && now < to {
                                    tokio::time::sleep(to - now).await;
                                }
                                counter.fetch_add(1, Ordering::Relaxed);
                                Ok::<_, Infallible>(hyper::Response::new(Full::new(
                                    Bytes::from_static(b"ok\n"),
                                )))
                            }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        Staller { addr, requests }
    }
}

#[test]
fn an_open_loop_test_shows_a_one_second_stall_in_its_p99() {
    let server = Staller::start();
    let url = format!("http://{}/", server.addr);
    let report = json(&[
        "loadtest", &url, "-d", "3s", "--rate", "100", "-c", "8", "--format", "json",
    ]);
    let (p50, p99) = (
        report["latency_ms"]["p50"].as_f64().unwrap(),
        report["latency_ms"]["p99"].as_f64().unwrap(),
    );
    // A third of the schedule falls in the stall: those requests wait up to a second.
    assert!(p99 > 700.0, "the stall is hidden: p99 {p99} ms");
    assert!(p50 < 50.0, "most requests were quick: p50 {p50} ms");
    let requests = report["requests"].as_u64().unwrap();
    assert!(
        (290..=310).contains(&requests),
        "the schedule held: {requests} requests"
    );
    assert_eq!(
        report["statuses"]["200"].as_u64(),
        Some(server.requests.load(Ordering::Relaxed))
    );
}

#[test]
fn loadtest_through_evenkeel_counts_the_same_shares_as_the_backends() {
    let backends = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let config = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n[[route]]\npool = \"web\"\n\
         [pool.web]\nalgorithm = \"weighted_round_robin\"\nbackends = [\
         {{ address = \"{}\", weight = 1 }}, {{ address = \"{}\", weight = 2 }}, {{ address = \"{}\", weight = 3 }}]\n",
        backends[0].address(),
        backends[1].address(),
        backends[2].address()
    );
    let proxy = Proxy::start(&config, 2);
    let url = format!("http://{}/", proxy.addr());
    let report = json(&[
        "loadtest",
        &url,
        "-n",
        "1200",
        "-c",
        "6",
        "--group-by-header",
        "x-backend",
        "--format",
        "json",
    ]);
    for backend in &backends {
        assert_eq!(
            report["groups"][backend.name()].as_u64(),
            Some(backend.requests()),
            "{}: {report}",
            backend.name()
        );
    }
    assert_eq!(report["groups"]["a"], 200);
    assert_eq!(report["groups"]["c"], 600);
}

#[test]
fn http2_and_post_bodies_work_and_remote_targets_are_refused() {
    let server = StandIn::start("h2", Duration::ZERO, false).unwrap();
    let report = json(&[
        "loadtest",
        &format!("http://{}/", server.addr),
        "-n",
        "50",
        "--format",
        "json",
        "-m",
        "POST",
        "--body",
        "hello",
    ]);
    assert_eq!(report["statuses"]["200"], 50);
    let backends = [Backend::start("a")];
    let config = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n[[route]]\npool = \"web\"\n[pool.web]\nbackends = [{{ address = \"{}\" }}]\n",
        backends[0].address()
    );
    let proxy = Proxy::start(&config, 1);
    let report = json(&[
        "loadtest",
        &format!("http://{}/", proxy.addr()),
        "-n",
        "40",
        "--http2",
        "-c",
        "2",
        "--format",
        "json",
    ]);
    assert_eq!(report["statuses"]["200"], 40, "{report}");
    let refused = run(&["loadtest", "http://192.0.2.10:80/", "-n", "1"]);
    assert_eq!(refused.code, Some(2));
    assert!(
        refused.stderr.contains("not a loopback address"),
        "{}",
        refused.stderr
    );
}
