//! Surviving backend failures (docs/health.md), proven on real loopback sockets with the
//! real `evenkeel serve`: backends that the tests kill, restart on the same port, make
//! answer 500 or 503, fail their health path, reset connections or slow down.
//!
//! Timings use short intervals (probes every 200 ms, ejections of 1 s, a 2 s slow
//! start) so the module stays quick; every timing assertion leaves a wide margin,
//! because CI runs these beside the other tests on two cores. The figures each test
//! measured are printed (`cargo test survive:: -- --nocapture` shows them).

use std::time::{Duration, Instant};

use http::{Request, StatusCode};

use crate::util::{
    eventually, full, Answer, Backend, Client, Health, Load, Proxy, Sent, HEALTH_PATH, TIMEOUT,
};

// ---------------------------------------------------------------------------------------
// Config text and helpers

/// Active checks fast enough for tests: a dead backend is noticed after two failed
/// probes (~0.4 s), a recovered one after two passing probes.
fn health_section(pool: &str) -> String {
    format!(
        "[pool.{pool}.health]\npath = \"{HEALTH_PATH}\"\ninterval = \"200ms\"\n\
         timeout = \"100ms\"\nhealthy_after = 2\nunhealthy_after = 2\n\n"
    )
}

/// `[pool.NAME]` over `backends` with `extra` lines (algorithm, outlier, ...).
fn pool(name: &str, backends: &[&Backend], extra: &str) -> String {
    let list: String = backends
        .iter()
        .map(|b| format!("  {{ address = \"{}\" }},\n", b.address()))
        .collect();
    format!("[pool.{name}]\n{extra}backends = [\n{list}]\n\n")
}

/// One listener, every request to pool `web`, then `pools` (pool tables).
fn config(pools: &str) -> String {
    format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[route]]\npool = \"web\"\n\n{pools}"
    )
}

/// Share of the traffic arrivals at `backends` in `[from, to)` that went to `backends[of]`.
fn share(backends: &[&Backend], of: usize, from: Instant, to: Instant) -> (f64, usize) {
    let counts: Vec<usize> = backends
        .iter()
        .map(|b| {
            b.arrivals()
                .iter()
                .filter(|t| **t >= from && **t < to)
                .count()
        })
        .collect();
    let total: usize = counts.iter().sum();
    assert!(total > 0, "no requests between the two instants");
    (counts[of] as f64 / total as f64, total)
}

/// Arrivals after `since`.
fn after(times: &[Instant], since: Instant) -> Vec<Instant> {
    times.iter().copied().filter(|t| *t >= since).collect()
}

/// The requests that failed (not a 200 read to its end), described for a message.
fn failures(sent: &[Sent]) -> Vec<String> {
    sent.iter()
        .filter(|s| !s.ok())
        .map(|s| format!("{:?} {:?} from {:?}", s.status, s.error, s.backend))
        .collect()
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

fn requests_in_status(proxy: &Proxy, pool: &str, backend: &Backend) -> u64 {
    proxy.backend_status(pool, &backend.address())["requests"]
        .as_u64()
        .expect("requests")
}

fn health_in_status(proxy: &Proxy, pool: &str, backend: &Backend) -> String {
    proxy.backend_status(pool, &backend.address())["health"]
        .as_str()
        .expect("health")
        .to_string()
}

/// Waits until `/status` says `backend` has `health`; how long that took.
fn wait_for_health(proxy: &Proxy, pool: &str, backend: &Backend, health: &str) -> Duration {
    let start = Instant::now();
    assert!(
        eventually(TIMEOUT, || health_in_status(proxy, pool, backend) == health),
        "backend {} never became {health}; stderr:\n{}",
        backend.name(),
        proxy.stderr()
    );
    start.elapsed()
}

// ---------------------------------------------------------------------------------------
// 1. A dead backend under steady load

/// Kill one of three backends under steady GET load: no request fails (the dead
/// backend's refused connects and cut exchanges are retried on the others), active
/// checks take it out after `unhealthy_after` probes (evenkeel stops sending it tries),
/// and once restarted on its port it comes back after `healthy_after` probes and
/// ramps up over the slow start. Passive ejection is off, so what stops the traffic is
/// the active checks alone. The pool uses the default algorithm, round robin. While the
/// backend is dead its own counter cannot show what evenkeel sends it, so evenkeel's
/// (`requests` in `/status`, every try counted) does.
#[test]
fn a_killed_backend_fails_no_request_is_dropped_and_ramps_back_under_slow_start() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let mut c = Backend::start("c");
    let text = config(&format!(
        "{}{}",
        pool(
            "web",
            &[&a, &b, &c],
            "slow_start = \"2s\"\noutlier = { consecutive_failures = 0 }\n"
        ),
        health_section("web")
    ));
    let proxy = Proxy::start_with_admin(&text, 2);
    for backend in [&a, &b, &c] {
        wait_for_health(&proxy, "web", backend, "healthy");
    }
    let load = Load::start(proxy.addr(), 4, "/", Duration::from_millis(2));
    // Steady traffic first: the retry budget is a share of the last 10 s of requests.
    std::thread::sleep(Duration::from_secs(2));

    let killed = Instant::now();
    c.stop();
    wait_for_health(&proxy, "web", &c, "unhealthy");
    let detected = killed.elapsed();
    let tries_at_detection = requests_in_status(&proxy, "web", &c);
    std::thread::sleep(Duration::from_secs(1));
    let tries_later = requests_in_status(&proxy, "web", &c);

    let restarted = Instant::now();
    c.restart();
    let recovered = wait_for_health(&proxy, "web", &c, "healthy");
    assert!(
        eventually(TIMEOUT, || !after(&c.arrivals(), restarted).is_empty()),
        "the restarted backend never got traffic again"
    );
    let ramp_start = after(&c.arrivals(), restarted)[0];
    // The whole ramp, then half a second at full weight.
    let ramp = Duration::from_secs(2);
    std::thread::sleep(
        (ramp_start + ramp + Duration::from_millis(600)).saturating_duration_since(Instant::now()),
    );
    let sent = load.stop();

    let failed = sent.iter().filter(|s| !s.ok()).count();
    let cut_mid_response = sent.iter().filter(|s| s.failed_after_head()).count();
    eprintln!(
        "kill: {} requests, {failed} failed ({cut_mid_response} after their response began); \
         unhealthy after {}, evenkeel tries to it at detection {tries_at_detection}, 1 s later {tries_later}; \
         healthy {} after restart",
        sent.len(),
        secs(detected),
        secs(recovered),
    );
    assert_eq!(
        failed - cut_mid_response,
        0,
        "requests failed: {:?}",
        failures(&sent)
    );
    // Detection takes unhealthy_after probes of 200 ms (each jittered by 10%).
    assert!(
        detected < Duration::from_secs(3),
        "noticed after {detected:?}"
    );
    // Nothing new is sent to it once unhealthy: only tries already picked may land
    // (at most one per client).
    assert!(
        tries_later <= tries_at_detection + 4,
        "evenkeel kept trying the dead backend: {tries_at_detection} → {tries_later}"
    );
    let log = proxy.stderr();
    assert!(
        log.contains(&format!("backend {} is unhealthy", c.address())),
        "{log}"
    );

    // Back after healthy_after (2) passing probes: no traffic before the second probe
    // after the restart arrived.
    let probes = after(&c.probe_arrivals(), restarted);
    assert!(probes.len() >= 2, "probes after restart: {}", probes.len());
    assert!(
        ramp_start > probes[1],
        "traffic came back {:?} before the second passing probe",
        probes[1].saturating_duration_since(ramp_start)
    );
    assert!(
        ramp_start.duration_since(restarted) < Duration::from_secs(5),
        "back after {:?}",
        ramp_start.duration_since(restarted)
    );

    // Slow start (steps every 250 ms): a third of the way up its weight is a third of
    // the others', a share of 1/7; averaged over the first third about 0.06. Over the
    // last third it averages about 0.28; its full share is 1/3.
    let backends = [&a, &b, &c];
    let third = ramp / 3;
    let (first, n_first) = share(&backends, 2, ramp_start, ramp_start + third);
    let (last, n_last) = share(&backends, 2, ramp_start + 2 * third, ramp_start + ramp);
    let end = c.arrivals().last().copied().expect("arrivals");
    let (full, n_full) = share(
        &backends,
        2,
        ramp_start + ramp + Duration::from_millis(100),
        end,
    );
    eprintln!(
        "slow start: share {first:.3} in the first third ({n_first} requests), \
         {last:.3} in the last ({n_last}), {full:.3} after ({n_full}); weight share 0.333"
    );
    assert!(
        first < 0.2,
        "share in the first third of the ramp: {first:.3}"
    );
    assert!(
        last > first + 0.08,
        "share did not climb: {first:.3} then {last:.3}"
    );
    assert!(
        (0.25..0.42).contains(&full),
        "share after the ramp: {full:.3}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Passive checks: ejection

/// The bursts of arrivals in `times`: runs separated by more than `gap`.
fn bursts(times: &[Instant], gap: Duration) -> Vec<Vec<Instant>> {
    let mut bursts: Vec<Vec<Instant>> = Vec::new();
    for t in times {
        match bursts.last_mut() {
            Some(burst) if t.duration_since(*burst.last().expect("non-empty")) <= gap => {
                burst.push(*t)
            }
            _ => bursts.push(vec![*t]),
        }
    }
    bursts
}

/// A backend answering 500 to everything, in a pool without active checks, gets
/// exactly `consecutive_failures` requests, then none for `ejection` (1 s); back, it
/// fails 3 more and is ejected for 2 × 1 s. The 500s reach the client (500 is not
/// retried).
#[test]
fn a_backend_answering_500_is_ejected_by_passive_checks_for_growing_times() {
    let bad = Backend::start("bad");
    let b = Backend::start("b");
    let c = Backend::start("c");
    bad.set_answer(Answer::Status(500));
    let text = config(&pool(
        "web",
        &[&bad, &b, &c],
        "outlier = { consecutive_failures = 3, ejection = \"1s\", max_ejection = \"10s\" }\n",
    ));
    let proxy = Proxy::start(&text, 1);
    let load = Load::start(proxy.addr(), 1, "/", Duration::from_millis(2));
    // Three bursts: the first, one after the 1 s ejection, one after the 2 s ejection.
    let three = eventually(TIMEOUT, || {
        bad.requests() >= 7 && bursts(&bad.arrivals(), Duration::from_millis(400)).len() >= 3
    });
    let sent = load.stop();
    let log = proxy.stderr();
    assert!(three, "no third burst: arrivals {:?}", bad.arrivals());
    let bursts = bursts(&bad.arrivals(), Duration::from_millis(400));
    let sizes: Vec<usize> = bursts.iter().map(Vec::len).collect();
    let first_out = bursts[1][0].duration_since(*bursts[0].last().expect("burst"));
    let second_out = bursts[2][0].duration_since(*bursts[1].last().expect("burst"));
    let five_hundreds = sent
        .iter()
        .filter(|s| s.status == Some(StatusCode::INTERNAL_SERVER_ERROR))
        .count() as u64;
    eprintln!(
        "ejection: bursts of {sizes:?} requests; out for {} then {}; clients saw {five_hundreds} 500s \
         of {} requests",
        secs(first_out),
        secs(second_out),
        sent.len()
    );
    assert_eq!(&sizes[..2], [3, 3], "requests before each ejection");
    assert!(
        (Duration::from_millis(950)..Duration::from_millis(1800)).contains(&first_out),
        "first ejection lasted {first_out:?}"
    );
    assert!(
        (Duration::from_millis(1950)..Duration::from_millis(3000)).contains(&second_out),
        "second ejection lasted {second_out:?}"
    );
    assert!(second_out > first_out + Duration::from_millis(700));
    // Every 500 the bad backend gave reached a client once: 500 is not retried.
    assert_eq!(five_hundreds, bad.requests(), "{:?}", failures(&sent));
    assert_eq!(
        sent.iter().filter(|s| !s.ok()).count() as u64,
        five_hundreds,
        "{:?}",
        failures(&sent)
    );
    for n in [1, 2] {
        let line = format!("backend {} ejected for {n}s (ejection {n})", bad.address());
        assert!(log.contains(&line), "no {line:?} in:\n{log}");
    }
}

/// Four backends, two answering 500, `max_ejected_percent = 25`: one of the two is
/// ejected, the other cannot be (a second ejection would make 50%) and keeps getting
/// its share of requests.
#[test]
fn max_ejected_percent_keeps_a_second_failing_backend_in_rotation() {
    let bad1 = Backend::start("bad1");
    let bad2 = Backend::start("bad2");
    let c = Backend::start("c");
    let d = Backend::start("d");
    bad1.set_answer(Answer::Status(500));
    bad2.set_answer(Answer::Status(500));
    let text = config(&pool(
        "web",
        &[&bad1, &bad2, &c, &d],
        "outlier = { consecutive_failures = 3, ejection = \"20s\", max_ejected_percent = 25 }\n",
    ));
    let proxy = Proxy::start_with_admin(&text, 2);
    let mut client = Client::connect(proxy.addr());
    for _ in 0..300 {
        client.get("/");
    }
    let counts = [bad1.requests(), bad2.requests()];
    let web = proxy.pool_status("web");
    let ejected: Vec<&str> = web["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .filter(|b| b["ejected"] == true)
        .map(|b| b["address"].as_str().unwrap_or(""))
        .collect();
    eprintln!(
        "max_ejected_percent: failing backends got {counts:?} of 300 requests; ejected: {ejected:?}; \
         healthy ones {} and {}",
        c.requests(),
        d.requests()
    );
    assert_eq!(
        counts.iter().min(),
        Some(&3),
        "one ejected after 3 failures"
    );
    // The other shares the 300 requests with c and d: about 100.
    assert!(
        counts.iter().max() > Some(&80),
        "the second failing backend stopped getting requests: {counts:?}"
    );
    assert_eq!(ejected.len(), 1, "{web}");
    assert_eq!(
        proxy.stderr().matches("ejected for").count(),
        1,
        "{}",
        proxy.stderr()
    );
}

// ---------------------------------------------------------------------------------------
// 3. A whole pool down: 503, or the backup pool

/// Every backend of a pool dead — two stopped, one hung (accepts, never answers): once
/// active checks notice, requests get 503 at once, not a connection error nor a wait
/// for the 5 s timeout of the hung one, and no request reaches it.
#[test]
fn a_pool_with_every_backend_dead_answers_503_fast() {
    let mut a = Backend::start("a");
    let mut b = Backend::start("b");
    let hung = Backend::start("hung");
    let text = config(&format!(
        "{}{}",
        pool(
            "web",
            &[&a, &b, &hung],
            "timeouts = { connect = \"1s\", per_try = \"5s\", request = \"5s\" }\n"
        ),
        health_section("web")
    ));
    let proxy = Proxy::start_with_admin(&text, 2);
    assert_eq!(
        Client::connect(proxy.addr()).get("/").status,
        StatusCode::OK
    );
    a.stop();
    b.stop();
    hung.set_answer(Answer::Hang);
    let down = Instant::now();
    let unusable = eventually(TIMEOUT, || {
        proxy.pool_status("web")["backends"]
            .as_array()
            .expect("backends")
            .iter()
            .all(|b| b["usable"] == false)
    });
    assert!(unusable, "{}", proxy.pool_status("web"));
    let detected = down.elapsed();
    let hung_before = hung.requests();
    let mut client = Client::connect(proxy.addr());
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let reply = client.get("/");
        latencies.push(start.elapsed());
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.text()
        );
        assert!(
            reply.text().contains("no usable backend"),
            "{}",
            reply.text()
        );
    }
    latencies.sort();
    eprintln!(
        "all dead: noticed after {}; 503 in {:?} median, {:?} at most (request timeout 5 s)",
        secs(detected),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert!(
        latencies[latencies.len() - 1] < Duration::from_millis(500),
        "slowest 503: {:?}",
        latencies[latencies.len() - 1]
    );
    assert_eq!(
        hung.requests(),
        hung_before,
        "a request was sent to the hung backend"
    );
}

/// Pool `web` fails over to its backup `standby` when its backends die, and traffic
/// comes back once they have been healthy for the fail-back delay (5 s): not before,
/// not much later.
#[test]
fn a_dead_pool_fails_over_to_its_backup_and_fails_back_after_recovering() {
    let mut a = Backend::start("a");
    let mut b = Backend::start("b");
    let standby = Backend::start("standby");
    let text = config(&format!(
        "{}{}{}",
        pool("web", &[&a, &b], "backup = \"standby\"\n"),
        health_section("web"),
        pool("standby", &[&standby], ""),
    ));
    let proxy = Proxy::start_with_admin(&text, 2);
    for backend in [&a, &b] {
        wait_for_health(&proxy, "web", backend, "healthy");
    }
    let load = Load::start(proxy.addr(), 2, "/", Duration::from_millis(5));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        standby.requests(),
        0,
        "the backup got traffic while web was fine"
    );

    let stopped = Instant::now();
    a.stop();
    b.stop();
    let failed_over = eventually(TIMEOUT, || proxy.pool_status("web")["failed_over"] == true);
    assert!(failed_over, "{}", proxy.stderr());
    let failover_at = Instant::now();
    std::thread::sleep(Duration::from_secs(1));

    let restarted = Instant::now();
    a.restart();
    b.restart();
    let back = eventually(TIMEOUT, || {
        a.requests() + b.requests() > 0
            && [&a, &b]
                .iter()
                .any(|x| !after(&x.arrivals(), restarted).is_empty())
    });
    assert!(back, "traffic never came back to web:\n{}", proxy.stderr());
    let returned = [&a, &b]
        .iter()
        .filter_map(|x| after(&x.arrivals(), restarted).first().copied())
        .min()
        .expect("an arrival");
    // Recovered: the second probe after the restart of the first backend to pass two.
    let recovered = [&a, &b]
        .iter()
        .filter_map(|x| after(&x.probe_arrivals(), restarted).get(1).copied())
        .min()
        .expect("two probes after the restart");
    std::thread::sleep(Duration::from_millis(500));
    let sent = load.stop();

    let during_failover: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.start >= failover_at && s.end <= returned)
        .collect();
    let failed_before_failover: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.start >= stopped && s.start < failover_at && !s.ok())
        .collect();
    let before_failover = failed_before_failover.len();
    let statuses: std::collections::BTreeSet<Option<u16>> = failed_before_failover
        .iter()
        .map(|s| s.status.map(|c| c.as_u16()))
        .collect();
    let after_return: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.start > returned + Duration::from_millis(200))
        .collect();
    let wait = returned.duration_since(recovered);
    eprintln!(
        "failover: in {} after the stop ({before_failover} requests failed meanwhile, \
         statuses {statuses:?}); \
         {} requests served by the backup; web healthy {} after restart, traffic back {} later",
        secs(failover_at.duration_since(stopped)),
        during_failover.len(),
        secs(recovered.duration_since(restarted)),
        secs(wait)
    );
    assert!(!during_failover.is_empty());
    for s in &during_failover {
        assert!(s.ok() && s.backend == "standby", "during failover: {s:?}");
    }
    assert!(
        (Duration::from_millis(4500)..Duration::from_secs(10)).contains(&wait),
        "traffic came back {wait:?} after web recovered (fail-back waits 5 s)"
    );
    assert!(!after_return.is_empty());
    for s in &after_return {
        assert!(s.ok() && s.backend != "standby", "after fail-back: {s:?}");
    }
    let log = proxy.stderr();
    assert!(log.contains("failing over to pool \"standby\""), "{log}");
    assert!(
        log.contains("traffic returns from pool \"standby\""),
        "{log}"
    );
}

// ---------------------------------------------------------------------------------------
// 4. Retries: never a POST that was sent; never beyond the budget

/// A POST whose body reached a backend that then reset (or closed) the connection
/// without answering gets 502 and is not sent anywhere else: each POST reaches exactly
/// one backend. A GET in the same situation is retried — the counts would show it.
#[test]
fn a_post_that_reached_a_backend_is_never_retried() {
    let resets = Backend::start("resets");
    let closes = Backend::start("closes");
    resets.set_answer(Answer::Reset);
    closes.set_answer(Answer::Close);
    let text = config(&pool(
        "web",
        &[&resets, &closes],
        "retries = { attempts = 2, budget_percent = 100 }\noutlier = { consecutive_failures = 0 }\n",
    ));
    let proxy = Proxy::start(&text, 1);
    let mut client = Client::connect(proxy.addr());
    let total = || resets.requests() + closes.requests();
    for i in 1..=6 {
        let request = Request::post("/orders")
            .header("host", "test.local")
            .body(full(vec![b'x'; 1000]))
            .expect("request");
        let reply = client.send(request);
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
        assert_eq!(total(), i, "POST {i} reached more than one backend");
    }
    assert_eq!([resets.requests(), closes.requests()], [3, 3]);
    assert_eq!(resets.uploaded() + closes.uploaded(), 6000);
    // The control: a GET without a body is retried on the other backend.
    let reply = client.get("/");
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(total(), 8, "a GET is retried once (each backend tried)");
    eprintln!(
        "POST not retried: 6 POSTs → 6 upstream requests (3 reset, 3 closed), all 502; a GET → 2"
    );
}

/// Three backends answering 503 to everything, `attempts = 3`: unbounded, each request
/// would be tried on all three. The budget keeps retries to 20% of requests (plus a
/// floor of 3 per 10 s), with ejection off so that it cannot hide the storm.
#[test]
fn a_retry_storm_stays_within_the_retry_budget() {
    let backends: Vec<Backend> = ["a", "b", "c"].iter().map(|n| Backend::start(n)).collect();
    for b in &backends {
        b.set_answer(Answer::Status(503));
    }
    let refs: Vec<&Backend> = backends.iter().collect();
    let text = config(&pool(
        "web",
        &refs,
        "retries = { attempts = 3, budget_percent = 20 }\noutlier = { consecutive_failures = 0 }\n",
    ));
    let proxy = Proxy::start(&text, 2);
    let load = Load::start(proxy.addr(), 4, "/", Duration::ZERO);
    std::thread::sleep(Duration::from_millis(1500));
    let sent = load.stop();
    let requests = sent.len() as u64;
    let attempts: u64 = backends.iter().map(Backend::requests).sum();
    eprintln!(
        "retry budget: {requests} requests → {attempts} upstream attempts ({:.3} per request; \
         bound 1.2 + 3/{requests})",
        attempts as f64 / requests as f64
    );
    assert!(
        sent.iter()
            .all(|s| s.status == Some(StatusCode::SERVICE_UNAVAILABLE) && s.error.is_none()),
        "{:?}",
        failures(&sent).first()
    );
    assert!(
        attempts > requests + 3,
        "no retries at all: {attempts} for {requests}"
    );
    // The budget check and the count are not one atomic step: two workers may each
    // take the last retry of the budget, hence the + 1.
    let bound = requests * 6 / 5 + 3 + 1;
    assert!(
        attempts <= bound,
        "{attempts} upstream attempts for {requests} requests (bound {bound})"
    );
}

// ---------------------------------------------------------------------------------------
// 5. Hysteresis

/// A backend whose health probes alternate 200 / 500 while it serves traffic fine
/// never turns unhealthy with `unhealthy_after = 2`, and keeps its share; the same
/// backend failing two probes in a row does turn unhealthy (the control).
#[test]
fn a_flapping_health_check_does_not_flip_the_backend() {
    let flappy = Backend::start("flappy");
    let steady = Backend::start("steady");
    flappy.set_health(Health::Alternate);
    // A probe that passes must not time out and count as failed on a busy CI machine.
    let health = health_section("web").replace("timeout = \"100ms\"", "timeout = \"200ms\"");
    let text = config(&format!("{}{health}", pool("web", &[&flappy, &steady], "")));
    let proxy = Proxy::start_with_admin(&text, 2);
    let load = Load::start(proxy.addr(), 1, "/", Duration::from_millis(5));
    let start = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    while start.elapsed() < Duration::from_secs(3) {
        seen.insert(health_in_status(&proxy, "web", &flappy));
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = load.stop();
    let probes = flappy.probes();
    let log = proxy.stderr();
    let flips = log
        .matches(&format!("backend {} is unhealthy", flappy.address()))
        .count();
    let (share, total) = (flappy.requests() as f64 / sent.len() as f64, sent.len());
    eprintln!(
        "flapping: {probes} probes alternating 200/500 over 3 s; states seen {seen:?}; \
         {flips} 'is unhealthy' events; share {share:.3} of {total} requests"
    );
    assert!(probes >= 10, "only {probes} probes");
    assert_eq!(flips, 0, "{log}");
    assert!(!seen.contains("unhealthy"), "{seen:?}");
    assert!(sent.iter().all(Sent::ok), "{:?}", failures(&sent));
    assert!((0.4..0.6).contains(&share), "share {share}");

    flappy.set_health(Health::Fail);
    let noticed = wait_for_health(&proxy, "web", &flappy, "unhealthy");
    assert!(noticed < Duration::from_secs(3), "{noticed:?}");
}

// ---------------------------------------------------------------------------------------
// 6. Draining

/// Draining a slow backend under load: the requests it has in flight finish with 200,
/// it gets nothing new, no request fails; `/enable` puts it back.
#[test]
fn draining_a_backend_under_load_fails_nothing_and_enable_brings_it_back() {
    let fast = Backend::start("fast");
    let slow = Backend::with_delay("slow", Duration::from_millis(500));
    let text = config(&pool("web", &[&fast, &slow], ""));
    let proxy = Proxy::start_with_admin(&text, 2);
    let load = Load::start(proxy.addr(), 4, "/", Duration::from_millis(2));
    assert!(
        eventually(TIMEOUT, || slow.in_flight() >= 3),
        "the slow backend never had 3 requests in flight"
    );
    let drain = format!("/backends/web/{}/drain", slow.address());
    let (code, answer) = proxy.admin_request("POST", &drain);
    let drained = Instant::now();
    let arrived_at_drain = slow.requests();
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["draining"], true, "{answer}");
    let in_flight = answer["in_flight"].as_u64().expect("in_flight");
    assert!(in_flight >= 1, "{answer}");

    // The in-flight ones finish within their 500 ms; nothing new arrives.
    assert!(
        eventually(Duration::from_secs(5), || slow.in_flight() == 0),
        "requests in flight never finished"
    );
    let settled = slow.requests();
    std::thread::sleep(Duration::from_secs(1));
    let status = proxy.backend_status("web", &slow.address());
    let still = slow.requests();
    assert_eq!(status["draining"], true, "{status}");
    assert_eq!(status["in_flight"], 0, "{status}");
    assert_eq!(still, settled, "the draining backend got new requests");
    assert!(
        still <= arrived_at_drain + 4,
        "{} requests arrived after the drain (4 clients)",
        still - arrived_at_drain
    );

    let (code, answer) =
        proxy.admin_request("POST", &format!("/backends/web/{}/enable", slow.address()));
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["draining"], false, "{answer}");
    assert!(
        eventually(Duration::from_secs(5), || slow.requests() > still),
        "enabled, the backend got no request"
    );
    let sent = load.stop();
    let finished_after_drain = sent
        .iter()
        .filter(|s| s.backend == "slow" && s.start < drained && s.end > drained)
        .count();
    eprintln!(
        "drain: {in_flight} in flight at the drain (evenkeel), {finished_after_drain} finished after it; \
         {} arrived after the drain; {} requests, {} failed",
        still - arrived_at_drain,
        sent.len(),
        failures(&sent).len()
    );
    assert!(finished_after_drain >= 1);
    assert!(sent.iter().all(Sent::ok), "{:?}", failures(&sent));
}

// ---------------------------------------------------------------------------------------
// 7. Circuit breaking

/// `limits = { max_connections = 2, max_pending = 0 }` before a backend that takes 1 s:
/// a third request at once gets a fast 503, and the backend never has more than two.
#[test]
fn a_backend_at_its_connection_limit_gets_no_more_and_the_excess_a_fast_503() {
    let slow = Backend::with_delay("slow", Duration::from_secs(1));
    let text = config(&pool(
        "web",
        &[&slow],
        "limits = { max_connections = 2, max_pending = 0 }\n",
    ));
    // One worker: across workers the limit is approximate (docs/health.md).
    let proxy = Proxy::start(&text, 1);
    let addr = proxy.addr();
    let spawn = || {
        std::thread::spawn(move || {
            let start = Instant::now();
            let reply = Client::connect(addr).get("/");
            (reply.status, start.elapsed(), reply.text())
        })
    };
    let first = [spawn(), spawn()];
    assert!(
        eventually(TIMEOUT, || slow.in_flight() == 2),
        "two requests never reached the backend"
    );
    let start = Instant::now();
    let third = Client::connect(addr).get("/");
    let refused_in = start.elapsed();
    assert_eq!(
        third.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        third.text()
    );
    assert!(
        third.text().contains("connection limit"),
        "{}",
        third.text()
    );
    for handle in first {
        let (status, _, text) = handle.join().expect("client");
        assert_eq!(status, StatusCode::OK, "{text}");
    }
    // A burst of six: two served, the rest refused at once.
    let burst: Vec<_> = (0..6).map(|_| spawn()).collect();
    let results: Vec<(StatusCode, Duration, String)> = burst
        .into_iter()
        .map(|h| h.join().expect("client"))
        .collect();
    let refused: Vec<Duration> = results
        .iter()
        .filter(|r| r.0 == StatusCode::SERVICE_UNAVAILABLE)
        .map(|r| r.1)
        .collect();
    let served = results.iter().filter(|r| r.0 == StatusCode::OK).count();
    eprintln!(
        "limits: third request refused in {refused_in:?}; burst of 6: {served} served, {} refused \
         (slowest refusal {:?}); backend at most {} in flight",
        refused.len(),
        refused.iter().max(),
        slow.max_in_flight()
    );
    assert!(
        refused_in < Duration::from_millis(500),
        "503 took {refused_in:?}"
    );
    assert_eq!(served + refused.len(), 6, "{results:?}");
    assert!(served >= 2 && !refused.is_empty(), "{results:?}");
    assert_eq!(slow.max_in_flight(), 2);
}

// ---------------------------------------------------------------------------------------
// 8. Connection refused

/// A refused connect means nothing was written, so even a POST is retried on another
/// backend: with one dead port and one live backend every POST succeeds. (Ejection is
/// off and the budget at 100% so that only the retry can save each POST.)
#[test]
fn a_post_refused_by_a_dead_port_is_retried_on_another_backend() {
    let mut dead = Backend::start("dead");
    dead.stop();
    let live = Backend::start("live");
    let text = config(&pool(
        "web",
        &[&dead, &live],
        "retries = { attempts = 1, budget_percent = 100 }\noutlier = { consecutive_failures = 0 }\n",
    ));
    let proxy = Proxy::start_with_admin(&text, 2);
    let mut client = Client::connect(proxy.addr());
    for _ in 0..20 {
        let request = Request::post("/orders")
            .header("host", "test.local")
            .body(full(vec![b'x'; 10_000]))
            .expect("request");
        let reply = client.send(request);
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.json()["body_bytes"], 10_000);
    }
    let tried = proxy.backend_status("web", &dead.address());
    eprintln!(
        "refused POST: 20 POSTs all 200; the dead port was tried {} times",
        tried["failures"]
    );
    assert_eq!(live.requests(), 20);
    assert_eq!(live.uploaded(), 200_000);
    assert!(
        tried["failures"].as_u64() >= Some(5),
        "the dead port was hardly tried: {tried}"
    );
}
