//! Benchmarks of the request-path cost of balancing: `Balancer::pick` for every
//! algorithm at 3, 100 and 1,000 candidates, consistent hashing over a pool that lost a
//! third of its backends, and what a pool runs on health changes (not per request):
//! `select_candidates` at 1,000 backends with a third unusable, building a Maglev table,
//! and precomputing a smooth weighted round robin cycle.
//!
//! Candidates have uneven weights (1..=5) and some requests in flight, so the load-aware
//! algorithms compare real numbers; keyed picks cycle through 4,096 distinct key hashes
//! so the consistent-hash table is read at scattered slots, as with real traffic.
//!
//! Run with `cargo bench --bench balance`; each benchmark measures for about 2 s.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use evenkeel::balance::{
    build, key_hash, select_candidates, Algorithm, BackendLoad, BackendState, Balancer, Candidate,
    ConsistentHash, InFlight, PickContext, SharedRng,
};

const SIZES: [usize; 3] = [3, 100, 1_000];
const KEYS: usize = 4_096;

/// `n` candidates at pool positions `0..n`, weights 1..=5, identities from addresses.
fn candidates(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|index| Candidate {
            index,
            weight: (index % 5) as u32 + 1,
            identity: key_hash(format!("10.0.{}.{}:8080", index / 256, index % 256).as_bytes()),
            load: Arc::new(BackendLoad::default()),
        })
        .collect()
}

/// Puts 0..8 requests in flight on each candidate (seeded); they end when dropped.
fn some_load(candidates: &[Candidate]) -> Vec<InFlight> {
    let rng = SharedRng::new(17);
    candidates
        .iter()
        .flat_map(|c| (0..rng.below(8)).map(|_| c.load.begin()))
        .collect()
}

fn key_hashes() -> Vec<u64> {
    (0..KEYS as u64)
        .map(|i| key_hash(format!("user-{i}").as_bytes()))
        .collect()
}

/// Benchmarks `balancer.pick` with keyed (cycling through `keys`) or keyless requests.
fn bench_pick(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    balancer: &dyn Balancer,
    keys: Option<&[u64]>,
) {
    c.bench_function(id, |b| {
        let mut i = 0;
        b.iter(|| {
            let key = keys.and_then(|keys| {
                i = (i + 1) % KEYS;
                keys.get(i).copied()
            });
            balancer.pick(black_box(&PickContext { key }))
        })
    });
}

fn picks(c: &mut Criterion) {
    let keys = key_hashes();
    let mut group = c.benchmark_group("pick");
    for n in SIZES {
        let pool = candidates(n);
        let _load = some_load(&pool);
        for algorithm in Algorithm::ALL {
            let balancer = build(algorithm, pool.clone(), 1);
            let keyed = (algorithm == Algorithm::ConsistentHash).then_some(keys.as_slice());
            bench_pick(
                &mut group,
                BenchmarkId::new(algorithm.name(), n),
                balancer.as_ref(),
                keyed,
            );
        }
        // Requests lacking the hash key: spread over a random table slot.
        let balancer = build(Algorithm::ConsistentHash, pool.clone(), 1);
        bench_pick(
            &mut group,
            BenchmarkId::new("consistent_hash_keyless", n),
            balancer.as_ref(),
            None,
        );
        // The same pool after losing every third backend (table rebuilt over the rest).
        let two_thirds: Vec<Candidate> =
            pool.iter().filter(|c| c.index % 3 != 0).cloned().collect();
        let balancer = build(Algorithm::ConsistentHash, two_thirds, 1);
        bench_pick(
            &mut group,
            BenchmarkId::new("consistent_hash_two_thirds", n),
            balancer.as_ref(),
            Some(&keys),
        );
    }
    group.finish();
}

fn pool_changes(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_change");
    // select_candidates at 1,000 backends, every third unusable (no panic at 50%).
    let backends: Vec<BackendState> = candidates(1_000)
        .into_iter()
        .map(|c| BackendState {
            index: c.index,
            weight: c.weight,
            usable: c.index % 3 != 0,
            identity: c.identity,
            load: c.load,
        })
        .collect();
    group.bench_function(BenchmarkId::new("select_candidates", 1_000), |b| {
        b.iter(|| select_candidates(black_box(&backends), 50))
    });
    // Building a Maglev table: the cost of a health flip or reload in a hashed pool.
    for n in [100, 1_000] {
        let pool = candidates(n);
        group.bench_function(BenchmarkId::new("consistent_hash_build", n), |b| {
            b.iter(|| ConsistentHash::new(black_box(pool.clone()), 1))
        });
    }
    // Precomputing the smooth weighted round robin cycle: the cost of a health flip or a
    // slow-start step in a weighted pool. Weights 1..=5 (3,000 picks per cycle, 5 weight
    // classes), 1..=100 (50,500 picks, 100 classes) and all distinct, 1..=1000 (500,500
    // picks, 1,000 classes).
    for (name, top) in [
        ("weighted_round_robin_build", 5),
        ("weighted_round_robin_build_weights_to_100", 100),
        ("weighted_round_robin_build_weights_to_1000", 1_000),
    ] {
        let pool: Vec<Candidate> = candidates(1_000)
            .into_iter()
            .map(|mut c| {
                c.weight = (c.index % top) as u32 + 1;
                c
            })
            .collect();
        group.bench_function(BenchmarkId::new(name, 1_000), |b| {
            b.iter(|| build(Algorithm::WeightedRoundRobin, black_box(pool.clone()), 1))
        });
    }
    group.finish();
}

criterion_group! {
    name = balance;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = picks, pool_changes
}
criterion_main!(balance);
