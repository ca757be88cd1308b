//! The cost of a prediction: `sim::simulate` of 1,000,000 requests over one pool of
//! 1,000 backends (weights 1..=5, capacities 1..=3), for every algorithm — what
//! `evenkeel simulate --requests 1000000` spends per pool.
//!
//! Weight-driven algorithms are one pick per request; the load-aware ones run the
//! virtual-time loop (32 requests in flight, an event heap, a random service time per
//! request); consistent hashing also draws a key per request from `uniform:10000` and
//! builds its Maglev table once per run.
//!
//! Run with `cargo bench --bench sim`; each benchmark takes 10 samples of one run.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use evenkeel::balance::Algorithm;
use evenkeel::config::{check_source, Config, Source};
use evenkeel::sim::{simulate, SimOptions};

const BACKENDS: usize = 1_000;
const REQUESTS: u64 = 1_000_000;

/// One listener, one route, one pool of [`BACKENDS`] backends using `algorithm`.
fn config(algorithm: Algorithm) -> Config {
    let backends: String = (0..BACKENDS)
        .map(|i| {
            format!(
                "  {{ address = \"10.0.{}.{}:8080\", weight = {}, capacity = {} }},\n",
                i / 250,
                i % 250 + 1,
                i % 5 + 1,
                i % 3 + 1
            )
        })
        .collect();
    let hash_key = if algorithm == Algorithm::ConsistentHash {
        "hash_key = \"header:x-user-id\"\n"
    } else {
        ""
    };
    let text = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8080\"\n\
         [[route]]\npool = \"web\"\n\
         [pool.web]\nalgorithm = \"{}\"\n{hash_key}backends = [\n{backends}]\n",
        algorithm.name()
    );
    let checked = check_source(Source {
        path: "bench.toml".into(),
        text,
    });
    match checked.config {
        Some(config) => config,
        None => panic!("invalid bench config: {:?}", checked.findings),
    }
}

fn simulations(c: &mut Criterion) {
    let mut group = c.benchmark_group("simulate of 1,000,000 requests");
    let options = SimOptions {
        requests: REQUESTS,
        ..SimOptions::default()
    };
    for algorithm in Algorithm::ALL {
        let config = config(algorithm);
        group.bench_function(BenchmarkId::new(algorithm.name(), BACKENDS), |b| {
            b.iter(|| simulate(black_box(&config), &options))
        });
    }
    group.finish();
}

criterion_group! {
    name = sim;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    targets = simulations
}
criterion_main!(sim);
