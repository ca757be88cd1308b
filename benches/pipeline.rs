//! Benchmarks of the work around `pick()`: what recording one response costs the
//! request path (counters, latency histogram, passive health, the pool's client
//! counters), and what `check` costs on configs of 1,000 and 10,000 backends.
//!
//! Run with `cargo bench --bench pipeline`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use evenkeel::config::{check_source, Source};
use evenkeel::health;
use evenkeel::runtime::Runtime;

/// A config with one pool of `backends` backends on distinct loopback ports.
fn config(backends: usize) -> String {
    let list: Vec<String> = (0..backends)
        .map(|i| {
            format!(
                "  {{ address = \"127.0.0.1:{}\", weight = {} }},",
                10_000 + i,
                i % 5 + 1
            )
        })
        .collect();
    format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8080\"\n\
         [[route]]\npool = \"web\"\n\
         [pool.web]\nalgorithm = \"weighted_round_robin\"\nbackends = [\n{}\n]\n\
         [pool.web.health]\npath = \"/healthz\"\n",
        list.join("\n")
    )
}

fn check(c: &mut Criterion) {
    // 10,000 backends guards against quadratic steps (issue 12, defect 10): it should
    // cost about ten times the 1,000-backend case, not a hundred.
    for backends in [1_000, 10_000] {
        let text = config(backends);
        c.bench_function(&format!("check/{backends}_backends"), |b| {
            b.iter(|| {
                let checked = check_source(Source {
                    path: "bench.toml".into(),
                    text: text.clone(),
                });
                black_box(checked.errors())
            })
        });
    }
}

fn record(c: &mut Criterion) {
    let checked = check_source(Source {
        path: "bench.toml".into(),
        text: config(100),
    });
    let runtime = Runtime::new(checked.config.expect("a valid config"));
    let snapshot = runtime.snapshot();
    let pool = &snapshot.pools[0];
    let backend = &pool.backends[7];
    let now = health::now();
    c.bench_function("record/2xx_response", |b| {
        b.iter(|| {
            backend
                .stats
                .requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            backend.stats.record_status(black_box(200));
            backend
                .stats
                .latency
                .record(black_box(Duration::from_micros(850)));
            pool.record(backend, true, now, &runtime.events);
            pool.stats.record(200);
        })
    });
    c.bench_function("record/in_flight_guard", |b| {
        b.iter(|| black_box(backend.load.begin()))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).sample_size(20);
    targets = check, record
}
criterion_main!(benches);
