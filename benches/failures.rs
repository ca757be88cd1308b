//! The cost of the failure analysis (`sim::failures`): 50 pools of 20 backends — 1,000
//! entries over 300 servers, each server listed by three or four pools, every pool
//! with a health check and every fifth with a backup — analysed once and then failed
//! server by server: what every `check` (the `single-failure-*` lints) and `evenkeel
//! simulate --failures` spend. Issue 14 asks for under a second; docs/benchmarks.md
//! records the figure.
//!
//! Run with `cargo bench --bench failures`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use evenkeel::config::{check_source, Config, Source};
use evenkeel::sim::failures::Analysis;
use evenkeel::sim::traffic::Traffic;

const POOLS: usize = 50;
const PER_POOL: usize = 20;
const SERVERS: usize = 300;

/// The config: pool `i` lists servers `(7i + 15j) mod 300` for `j` in 0..20.
pub fn config() -> Config {
    let algorithms = [
        "round_robin",
        "weighted_round_robin",
        "least_connections",
        "consistent_hash",
        "random",
    ];
    let mut text = String::from("[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8080\"\n");
    for i in 0..POOLS {
        let algorithm = algorithms[i % algorithms.len()];
        let backends: Vec<String> = (0..PER_POOL)
            .map(|j| {
                let s = (7 * i + 15 * j) % SERVERS;
                format!(
                    "{{ address = \"10.0.{}.{}:8080\", weight = {}, capacity = {} }}",
                    s / 250,
                    s % 250 + 1,
                    j % 3 + 1,
                    s % 2 + 1
                )
            })
            .collect();
        let hash_key = if algorithm == "consistent_hash" {
            "hash_key = \"header:x-user-id\"\n"
        } else {
            ""
        };
        let backup = if i % 5 == 0 && i + 1 < POOLS {
            format!("backup = \"p{}\"\n", i + 1)
        } else {
            String::new()
        };
        text.push_str(&format!(
            "[[route]]\npath_prefix = \"/p{i}\"\npool = \"p{i}\"\n\
             [pool.p{i}]\nalgorithm = \"{algorithm}\"\n{hash_key}{backup}backends = [{}]\n\
             [pool.p{i}.health]\npath = \"/healthz\"\n",
            backends.join(", ")
        ));
    }
    let checked = check_source(Source {
        path: "bench.toml".into(),
        text,
    });
    match checked.config {
        Some(config) => config,
        None => panic!("invalid bench config: {:?}", checked.findings.first()),
    }
}

fn analysis(c: &mut Criterion) {
    let config = config();
    let servers = Analysis::new(&config, Traffic::assumed(&config))
        .servers
        .list
        .len();
    assert_eq!(servers, SERVERS);
    let mut group = c.benchmark_group("failure analysis, 50 pools x 20 backends, 300 servers");
    group.bench_function("every server failing alone", |b| {
        b.iter(|| {
            let a = Analysis::new(black_box(&config), Traffic::assumed(&config));
            a.single().len()
        })
    });
    group.finish();
}

criterion_group! {
    name = failures;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = analysis
}
criterion_main!(failures);
