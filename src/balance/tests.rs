//! Tests of the balancing algorithms: exact properties (cycles, bursts, minimal load,
//! candidate sets) checked on arbitrary inputs with proptest, statistical ones (shares of
//! random and hashed picks) held to bounds stated beside each test, and regressions.
//!
//! Statistical property tests run with a fixed proptest seed, so their cases — and the
//! algorithms' own seeds — are the same on every run: a bound that holds holds for good.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::thread;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use super::*;

// ---------------------------------------------------------------------------------------
// Helpers

/// The identity a backend at pool position `index` would have: a hash of its address.
fn identity_of(index: usize) -> u64 {
    key_hash(format!("10.0.{}.{}:8080", index / 256, index % 256).as_bytes())
}

/// Candidates with the given weights at pool positions `0..`.
fn candidates(weights: &[u32]) -> Vec<Candidate> {
    let indices: Vec<usize> = (0..weights.len()).collect();
    candidates_at(&indices, weights)
}

/// Candidates at the given pool positions with the given weights (zipped).
fn candidates_at(indices: &[usize], weights: &[u32]) -> Vec<Candidate> {
    indices
        .iter()
        .zip(weights)
        .map(|(&index, &weight)| Candidate {
            index,
            weight,
            identity: identity_of(index),
            load: Arc::new(BackendLoad::default()),
        })
        .collect()
}

/// Puts `in_flight[i]` requests in flight on candidate `i`; they end when the guards drop.
fn load(candidates: &[Candidate], in_flight: &[u32]) -> Vec<InFlight> {
    candidates
        .iter()
        .zip(in_flight)
        .flat_map(|(c, &n)| (0..n).map(|_| c.load.begin()))
        .collect()
}

/// `n` picks without a request key.
fn picks(balancer: &dyn Balancer, n: usize) -> Vec<usize> {
    let ctx = PickContext::default();
    (0..n).filter_map(|_| balancer.pick(&ctx)).collect()
}

/// For every window of `cycle` consecutive picks starting at `0..=picks.len() - cycle`,
/// the number of picks of each backend; `check` is called on each window.
fn for_each_window(
    picks: &[usize],
    cycle: usize,
    mut check: impl FnMut(usize, &HashMap<usize, usize>),
) {
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for &p in &picks[..cycle] {
        *counts.entry(p).or_default() += 1;
    }
    check(0, &counts);
    for start in 1..=picks.len() - cycle {
        if let Some(count) = counts.get_mut(&picks[start - 1]) {
            *count -= 1;
        }
        *counts.entry(picks[start + cycle - 1]).or_default() += 1;
        check(start, &counts);
    }
}

/// Proptest configuration with `cases` cases and a random seed per run (exact properties).
fn exact(cases: u32) -> ProptestConfig {
    ProptestConfig::with_cases(cases)
}

/// Proptest configuration with `cases` cases and a fixed seed (statistical properties).
fn seeded(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(0x0e7e_2ee1),
        ..ProptestConfig::default()
    }
}

/// Weight shares: each weight over the total.
fn shares(weights: &[u32]) -> Vec<f64> {
    let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    weights.iter().map(|&w| f64::from(w) / total).collect()
}

// ---------------------------------------------------------------------------------------
// The shared RNG

#[test]
fn shared_rng_matches_reference_splitmix64() {
    // First outputs of Vigna's splitmix64.c seeded with 1234567.
    let rng = SharedRng::new(1_234_567);
    let expected = [
        6_457_827_717_110_365_317,
        3_203_168_211_198_807_973,
        9_817_491_932_198_370_423,
        4_593_380_528_125_082_431,
        16_408_922_859_458_223_821,
    ];
    for want in expected {
        assert_eq!(rng.next_u64(), want);
    }
}

#[test]
fn shared_rng_below_stays_in_range() {
    let rng = SharedRng::new(7);
    assert_eq!(rng.below(0), 0);
    assert_eq!(rng.below(1), 0);
    for n in [2, 3, 10, 1 << 20, u64::MAX / 3 * 2, u64::MAX] {
        for _ in 0..1000 {
            assert!(rng.below(n) < n);
        }
    }
}

#[test]
fn shared_rng_below_is_uniform() {
    // 60,000 draws over 6 values: each count is binomial(60000, 1/6), sd ≈ 91.3.
    let rng = SharedRng::new(42);
    let mut counts = [0u32; 6];
    for _ in 0..60_000 {
        counts[rng.below(6) as usize] += 1;
    }
    for count in counts {
        assert!(
            (f64::from(count) - 10_000.0).abs() < 5.0 * 91.3,
            "{counts:?}"
        );
    }
}

#[test]
fn shared_rng_draws_distinct_states_across_threads() {
    // Each draw advances the Weyl sequence by one atomic step, so 4 threads drawing
    // 1,000 values each see exactly the 4,000 values of one thread drawing 4,000.
    let shared = Arc::new(SharedRng::new(99));
    let mut from_threads: Vec<u64> = (0..4)
        .map(|_| {
            let rng = Arc::clone(&shared);
            thread::spawn(move || (0..1000).map(|_| rng.next_u64()).collect::<Vec<_>>())
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect();
    let single = SharedRng::new(99);
    let mut sequential: Vec<u64> = (0..4000).map(|_| single.next_u64()).collect();
    from_threads.sort_unstable();
    sequential.sort_unstable();
    assert_eq!(from_threads, sequential);
}

// ---------------------------------------------------------------------------------------
// Round robin and smooth weighted round robin: exact per cycle

proptest! {
    #![proptest_config(exact(64))]

    /// Every window of n consecutive picks holds each backend exactly once (the sequence
    /// is periodic), checked over four cycles; weights are ignored.
    #[test]
    fn round_robin_gives_each_backend_one_pick_per_cycle(
        weights in prop::collection::vec(1u32..50, 1..20),
    ) {
        let n = weights.len();
        let balancer = build(Algorithm::RoundRobin, candidates(&weights), 0);
        let sequence = picks(balancer.as_ref(), 4 * n);
        prop_assert_eq!(sequence.len(), 4 * n);
        for_each_window(&sequence, n, |start, counts| {
            for index in 0..n {
                assert_eq!(counts.get(&index), Some(&1), "window at {start}: {counts:?}");
            }
        });
    }

    /// Every window of sum(weights) consecutive picks holds each backend exactly its
    /// weight, checked over three cycles (NGINX's smooth WRR is periodic).
    #[test]
    fn smooth_weighted_gives_each_backend_its_weight_per_cycle(
        weights in prop::collection::vec(1u32..50, 1..20),
    ) {
        let cycle: usize = weights.iter().map(|&w| w as usize).sum();
        let balancer = build(Algorithm::WeightedRoundRobin, candidates(&weights), 0);
        let sequence = picks(balancer.as_ref(), 3 * cycle);
        prop_assert_eq!(sequence.len(), 3 * cycle);
        for_each_window(&sequence, cycle, |start, counts| {
            for (index, &weight) in weights.iter().enumerate() {
                assert_eq!(
                    counts.get(&index).copied().unwrap_or(0),
                    weight as usize,
                    "window at {start}, weights {weights:?}"
                );
            }
        });
    }

    /// No backend gets more than ceil(max weight / min weight) picks in a row, counting
    /// runs that straddle a cycle boundary.
    #[test]
    fn smooth_weighted_never_bursts_beyond_weight_ratio(
        weights in prop::collection::vec(1u32..50, 1..20),
    ) {
        let cycle: usize = weights.iter().map(|&w| w as usize).sum();
        let max = weights.iter().copied().max().unwrap_or(1);
        let min = weights.iter().copied().min().unwrap_or(1);
        let bound = max.div_ceil(min) as usize;
        let balancer = build(Algorithm::WeightedRoundRobin, candidates(&weights), 0);
        let sequence = picks(balancer.as_ref(), 3 * cycle);
        // A single backend always gets every pick: the bound is about interleaving.
        if weights.len() > 1 {
            let mut run = 0;
            let mut previous = None;
            for &p in &sequence {
                run = if previous == Some(p) { run + 1 } else { 1 };
                previous = Some(p);
                prop_assert!(run <= bound, "run of {} > {} with weights {:?}", run, bound, weights);
            }
        }
    }
}

proptest! {
    #![proptest_config(exact(64))]

    /// The precomputed cycle is NGINX's per-pick scan, pick for pick, over three cycles:
    /// weights with a common factor (a shorter cycle) and many equal weights (weight
    /// classes) included.
    #[test]
    fn smooth_weighted_cycle_matches_nginx_scan(
        weights in prop::collection::vec(prop_oneof![1u32..=3, 1u32..50], 1..40),
        factor in 1u32..4,
    ) {
        let weights: Vec<u32> = weights.iter().map(|&w| w * factor).collect();
        let total: usize = weights.iter().map(|&w| w as usize).sum();
        let cycle = SmoothWeighted::new(candidates(&weights));
        let scan = SmoothWeighted::scanning(candidates(&weights));
        prop_assert!(cycle.cycle_len().is_some_and(|len| len <= total));
        prop_assert_eq!(picks(&cycle, 3 * total), picks(&scan, 3 * total));
    }
}

proptest! {
    #![proptest_config(exact(16))]

    /// The same with many distinct weights (up to 120 weight classes, a deep tournament),
    /// over two cycles.
    #[test]
    fn smooth_weighted_cycle_matches_nginx_scan_with_many_weights(
        weights in prop::collection::vec(1u32..300, 40..120),
    ) {
        let total: usize = weights.iter().map(|&w| w as usize).sum();
        let cycle = SmoothWeighted::new(candidates(&weights));
        let scan = SmoothWeighted::scanning(candidates(&weights));
        prop_assert!(cycle.cycle_len().is_some());
        prop_assert_eq!(picks(&cycle, 2 * total), picks(&scan, 2 * total));
    }
}

#[test]
fn smooth_weighted_cycle_is_shortened_by_a_common_factor() {
    // Weights 50:10:10 run exactly like 5:1:1, so one cycle is 7 picks, not 70.
    let balancer = SmoothWeighted::new(candidates(&[50, 10, 10]));
    assert_eq!(balancer.cycle_len(), Some(7));
    assert_eq!(
        picks(&balancer, 14),
        [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]
    );
}

#[test]
fn smooth_weighted_precomputes_large_pools_within_the_bounds() {
    // 1,000 backends of weights 1..=100: 50,500 picks per cycle, 100 weight classes.
    let weights: Vec<u32> = (0..1000).map(|i| i % 100 + 1).collect();
    let balancer = SmoothWeighted::new(candidates(&weights));
    assert_eq!(balancer.cycle_len(), Some(50_500));
}

#[test]
fn smooth_weighted_scans_past_the_bound() {
    // A cycle longer than MAX_CYCLE picks by scanning, with the same sequence.
    let weights = [SmoothWeighted::MAX_CYCLE as u32, 1];
    let balancer = SmoothWeighted::new(candidates(&weights));
    assert_eq!(balancer.cycle_len(), None);
    let reference = SmoothWeighted::scanning(candidates(&weights));
    assert_eq!(picks(&balancer, 2000), picks(&reference, 2000));
}

#[test]
fn smooth_weighted_interleaves_like_nginx() {
    // The example of NGINX's commit introducing smooth weighted round robin.
    let balancer = SmoothWeighted::new(candidates(&[5, 1, 1]));
    let cycle = picks(&balancer, 7);
    assert_eq!(cycle, [0, 0, 1, 0, 2, 0, 0]);
    assert_eq!(picks(&balancer, 7), cycle);
}

#[test]
fn round_robin_is_exact_across_threads() {
    // 4 threads × 3,000 picks over 3 backends: the atomic counter hands out 12,000
    // consecutive turns, 4,000 per backend, however the threads interleave.
    let balancer: Arc<dyn Balancer> =
        Arc::from(build(Algorithm::RoundRobin, candidates(&[1, 1, 1]), 0));
    let counts = count_across_threads(&balancer, 4, 3000);
    assert_eq!(counts, HashMap::from([(0, 4000), (1, 4000), (2, 4000)]));
}

#[test]
fn smooth_weighted_is_exact_across_threads() {
    // 4 threads × 3,000 picks, weights 3:2:1 (cycle 6): 2,000 whole cycles.
    let balancer: Arc<dyn Balancer> = Arc::from(build(
        Algorithm::WeightedRoundRobin,
        candidates(&[3, 2, 1]),
        0,
    ));
    let counts = count_across_threads(&balancer, 4, 3000);
    assert_eq!(counts, HashMap::from([(0, 6000), (1, 4000), (2, 2000)]));
}

fn count_across_threads(
    balancer: &Arc<dyn Balancer>,
    threads: usize,
    each: usize,
) -> HashMap<usize, usize> {
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let balancer = Arc::clone(balancer);
            thread::spawn(move || picks(balancer.as_ref(), each))
        })
        .collect();
    let mut counts = HashMap::new();
    for handle in handles {
        for p in handle.join().unwrap_or_default() {
            *counts.entry(p).or_insert(0) += 1;
        }
    }
    counts
}

// ---------------------------------------------------------------------------------------
// Weighted random: shares within binomial noise

proptest! {
    #![proptest_config(seeded(48))]

    /// Over 20,000 picks each backend's count is within 5 binomial standard deviations
    /// (sqrt(N·p·(1−p))) of N·p, p its weight share. Seeded, so deterministic.
    #[test]
    fn weighted_random_shares_stay_within_five_sigma(
        weights in prop::collection::vec(1u32..50, 1..20),
        seed in any::<u64>(),
    ) {
        const N: usize = 20_000;
        let balancer = build(Algorithm::Random, candidates(&weights), seed);
        let mut counts = vec![0usize; weights.len()];
        for p in picks(balancer.as_ref(), N) {
            counts[p] += 1;
        }
        for (index, share) in shares(&weights).into_iter().enumerate() {
            let expected = N as f64 * share;
            let sd = (N as f64 * share * (1.0 - share)).sqrt();
            let got = counts[index] as f64;
            prop_assert!(
                (got - expected).abs() <= 5.0 * sd.max(1.0),
                "backend {} got {} picks, expected {:.0} ± {:.0} (weights {:?})",
                index, got, expected, 5.0 * sd, weights
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Consistent hashing

/// A sample of request keys, as their hashes.
fn key_hashes(n: u64) -> impl Iterator<Item = u64> {
    (0..n).map(|i| key_hash(&i.to_le_bytes()))
}

fn with_key(hash: u64) -> PickContext {
    PickContext { key: Some(hash) }
}

proptest! {
    #![proptest_config(seeded(24))]

    /// Each backend's share of the table's slots is within 5% (relative) of its weight
    /// share, for 2..30 backends of weights 1..10. The bound is achievable because the
    /// smallest share (1/300) still owns ~218 of the 65,537 slots and weighted Maglev
    /// gives every backend its exact slot count within one slot (≤ 0.5%).
    #[test]
    fn consistent_hash_table_shares_follow_weights(
        weights in prop::collection::vec(1u32..=10, 2..30),
    ) {
        let hash = ConsistentHash::new(candidates(&weights), 0);
        let size = hash.table_size() as f64;
        let slots = hash.slots_per_candidate();
        prop_assert_eq!(slots.iter().map(|&(_, s)| s).sum::<u64>(), hash.table_size());
        for ((index, owned), share) in slots.into_iter().zip(shares(&weights)) {
            let got = owned as f64 / size;
            prop_assert!(
                (got - share).abs() <= 0.05 * share,
                "backend {} owns {:.5} of the table, weight share {:.5} (weights {:?})",
                index, got, share, weights
            );
        }
    }

    /// Each backend's share of 200,000 distinct keys is within 5% (relative) of its weight
    /// share. Sampling noise must sit well inside that bound, so this uses 2..6 backends of
    /// weights 1..3: the smallest share is then 1/16, i.e. ≥ 12,500 expected keys with a
    /// binomial sd of ≤ 108, and 5% of it (625) is over 5.7 sd.
    #[test]
    fn consistent_hash_key_shares_follow_weights(
        weights in prop::collection::vec(1u32..=3, 2..6),
    ) {
        const KEYS: u64 = 200_000;
        let hash = ConsistentHash::new(candidates(&weights), 0);
        let mut counts = vec![0u64; weights.len()];
        for key in key_hashes(KEYS) {
            if let Some(p) = hash.pick(&with_key(key)) {
                counts[p] += 1;
            }
        }
        for (index, share) in shares(&weights).into_iter().enumerate() {
            let got = counts[index] as f64 / KEYS as f64;
            prop_assert!(
                (got - share).abs() <= 0.05 * share,
                "backend {} got {:.4} of the keys, weight share {:.4} (weights {:?})",
                index, got, share, weights
            );
        }
    }

    /// Removing one backend moves at most its own share of the keys plus 2 percentage
    /// points: measured over the whole table (every slot, i.e. exactly the key space)
    /// and over 50,000 keys.
    #[test]
    fn consistent_hash_removal_moves_only_the_removed_share(
        weights in prop::collection::vec(1u32..=10, 2..30),
        removed in any::<prop::sample::Index>(),
    ) {
        const KEYS: u64 = 50_000;
        let all = candidates(&weights);
        let removed = removed.index(all.len());
        let mut rest = all.clone();
        rest.remove(removed);
        let before = ConsistentHash::new(all, 0);
        let after = ConsistentHash::new(rest, 0);
        let removed_slots = before
            .slots_per_candidate()
            .into_iter()
            .find(|&(index, _)| index == removed)
            .map_or(0, |(_, slots)| slots);
        let removed_share = removed_slots as f64 / before.table_size() as f64;

        // Both tables have the same size here (fewer than 655 backends).
        prop_assert_eq!(before.table_size(), after.table_size());
        let moved_slots = (0..before.table_size())
            .filter(|&slot| before.pick(&with_key(slot)) != after.pick(&with_key(slot)))
            .count();
        let moved = moved_slots as f64 / before.table_size() as f64;
        prop_assert!(
            moved <= removed_share + 0.02,
            "{:.4} of the slots moved, removed backend owned {:.4} (weights {:?}, removed {})",
            moved, removed_share, weights, removed
        );

        let moved_keys = key_hashes(KEYS)
            .filter(|&key| before.pick(&with_key(key)) != after.pick(&with_key(key)))
            .count();
        let moved = moved_keys as f64 / KEYS as f64;
        prop_assert!(
            moved <= removed_share + 0.02,
            "{:.4} of the keys moved, removed backend owned {:.4} (weights {:?}, removed {})",
            moved, removed_share, weights, removed
        );
    }
}

proptest! {
    #![proptest_config(exact(16))]

    /// The table depends on the candidates' identities and weights, not their order.
    #[test]
    fn consistent_hash_ignores_candidate_order(
        weights in prop::collection::vec(1u32..=10, 1..12),
        shuffle_seed in any::<u64>(),
    ) {
        let ordered = candidates(&weights);
        let mut shuffled = ordered.clone();
        let rng = SharedRng::new(shuffle_seed);
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let a = ConsistentHash::new(ordered, 1);
        let b = ConsistentHash::new(shuffled, 2);
        for key in key_hashes(2000) {
            prop_assert_eq!(a.pick(&with_key(key)), b.pick(&with_key(key)));
        }
    }
}

#[test]
fn consistent_hash_sends_a_key_to_one_backend() {
    let hash = ConsistentHash::new(candidates(&[1, 2, 3, 4]), 0);
    for key in key_hashes(1000) {
        let first = hash.pick(&with_key(key));
        assert!(first.is_some());
        for _ in 0..3 {
            assert_eq!(hash.pick(&with_key(key)), first);
        }
    }
}

#[test]
fn consistent_hash_spreads_requests_without_key() {
    // Regression guard for the incident class "a hash key most requests lack": keyless
    // requests must spread by weight, not all land on one backend. 30,000 keyless picks
    // over weights 1:2:3: shares within 5 binomial sd (≤ 5 × 91.3) of 1/6, 2/6, 3/6.
    let weights = [1, 2, 3];
    let hash = ConsistentHash::new(candidates(&weights), 11);
    let mut counts = [0f64; 3];
    for p in picks(&hash, 30_000) {
        counts[p] += 1.0;
    }
    for (count, share) in counts.iter().zip(shares(&weights)) {
        let expected = 30_000.0 * share;
        let sd = (30_000.0 * share * (1.0 - share)).sqrt();
        assert!((count - expected).abs() <= 5.0 * sd, "{counts:?}");
    }
}

#[test]
fn consistent_hash_table_grows_with_the_pool() {
    let sized = |n: usize| ConsistentHash::new(candidates(&vec![1; n]), 0).table_size();
    assert_eq!(sized(0), 0);
    assert_eq!(sized(1), 65_537);
    assert_eq!(sized(655), 65_537);
    assert_eq!(sized(656), 655_373);
}

#[test]
fn key_hash_is_stable() {
    // Pinned forever: a change here moves every key of every consistent-hash pool.
    assert_eq!(key_hash(b""), 0xefd0_1f60_ba99_2926);
    assert_eq!(key_hash(b"a"), 0x82a2_a958_a9be_ce5b);
    assert_eq!(key_hash(b"foobar"), 0x2c22_1949_22d1_672b);
    assert_eq!(key_hash(b"user-42"), 0xa395_32c7_ab05_1e8d);
    assert_eq!(key_hash(b"10.0.0.1:8080"), 0xe8c7_2115_6ed5_2b14);
}

// ---------------------------------------------------------------------------------------
// Load-aware algorithms

proptest! {
    #![proptest_config(exact(64))]

    /// In a pool of up to EXACT_UP_TO candidates the pick has the minimal
    /// in_flight / weight among all of them.
    #[test]
    fn least_connections_picks_a_minimal_ratio(
        backends in prop::collection::vec((1u32..=10, 0u32..20), 1..=LeastConnections::EXACT_UP_TO),
        rounds in 1usize..10,
    ) {
        let (weights, in_flight): (Vec<u32>, Vec<u32>) = backends.into_iter().unzip();
        let pool = candidates(&weights);
        let _guards = load(&pool, &in_flight);
        let balancer = build(Algorithm::LeastConnections, pool, 0);
        for _ in 0..rounds {
            let picked = balancer.pick(&PickContext::default());
            prop_assert!(picked.is_some());
            let p = picked.unwrap_or_default();
            for i in 0..weights.len() {
                // in_flight[p] / weights[p] <= in_flight[i] / weights[i]
                prop_assert!(
                    u64::from(in_flight[p]) * u64::from(weights[i])
                        <= u64::from(in_flight[i]) * u64::from(weights[p]),
                    "picked {} over {} (weights {:?}, in flight {:?})", p, i, weights, in_flight
                );
            }
        }
    }

    /// In a larger pool the pick has the minimal in_flight / weight among the LOOKS
    /// candidates it looked at — the one in turn first — as drawn by a twin balancer
    /// of the same seed.
    #[test]
    fn least_connections_picks_the_least_loaded_of_what_it_looked_at(
        backends in prop::collection::vec(
            (1u32..=10, 0u32..20),
            LeastConnections::EXACT_UP_TO + 1..300,
        ),
        seed in any::<u64>(),
        rounds in 1usize..20,
    ) {
        let (weights, in_flight): (Vec<u32>, Vec<u32>) = backends.into_iter().unzip();
        let pool = candidates(&weights);
        let _guards = load(&pool, &in_flight);
        let balancer = LeastConnections::new(pool.clone(), seed);
        let twin = LeastConnections::new(pool, seed);
        for round in 0..rounds {
            let looked_at = twin.looked_at();
            prop_assert_eq!(looked_at.len(), LeastConnections::LOOKS);
            prop_assert_eq!(looked_at.first(), Some(&(round % weights.len())));
            let picked = balancer.pick(&PickContext::default());
            prop_assert!(picked.is_some_and(|p| looked_at.contains(&p)));
            let p = picked.unwrap_or_default();
            for &i in &looked_at {
                prop_assert!(
                    u64::from(in_flight[p]) * u64::from(weights[i])
                        <= u64::from(in_flight[i]) * u64::from(weights[p]),
                    "picked {} over {} (looked at {:?})", p, i, looked_at
                );
            }
        }
    }

    /// With two candidates p2c sees both, so it picks the lower (in_flight + 1) / weight.
    #[test]
    fn least_request_picks_the_lower_load_of_two(
        a in (1u32..=10, 0u32..20),
        b in (1u32..=10, 0u32..20),
        seed in any::<u64>(),
    ) {
        let pool = candidates(&[a.0, b.0]);
        let _guards = load(&pool, &[a.1, b.1]);
        let balancer = build(Algorithm::LeastRequest, pool, seed);
        let load_a = u64::from(a.1 + 1) * u64::from(b.0);
        let load_b = u64::from(b.1 + 1) * u64::from(a.0);
        for p in picks(balancer.as_ref(), 20) {
            if load_a < load_b {
                prop_assert_eq!(p, 0);
            } else if load_b < load_a {
                prop_assert_eq!(p, 1);
            }
        }
    }

    /// With n ≥ 2 candidates the strictly highest (in_flight + 1) / weight is never picked.
    #[test]
    fn least_request_never_picks_the_strictly_most_loaded(
        backends in prop::collection::vec((1u32..=10, 0u32..20), 2..20),
        seed in any::<u64>(),
    ) {
        let (weights, in_flight): (Vec<u32>, Vec<u32>) = backends.into_iter().unzip();
        let pool = candidates(&weights);
        let _guards = load(&pool, &in_flight);
        let balancer = build(Algorithm::LeastRequest, pool, seed);
        // Position of the strictly most loaded backend, if there is one.
        let above = |i: usize, j: usize| {
            u64::from(in_flight[i] + 1) * u64::from(weights[j])
                > u64::from(in_flight[j] + 1) * u64::from(weights[i])
        };
        let most_loaded = (0..weights.len())
            .find(|&i| (0..weights.len()).all(|j| j == i || above(i, j)));
        if let Some(most_loaded) = most_loaded {
            for p in picks(balancer.as_ref(), 200) {
                prop_assert_ne!(p, most_loaded);
            }
        }
    }
}

#[test]
fn least_request_starves_a_heavily_loaded_backend() {
    // One of 5 equal backends has 100 requests in flight: over 10,000 picks it gets none,
    // and the other four share the traffic (each well above a fifth of it).
    let pool = candidates(&[1, 1, 1, 1, 1]);
    let _guards = load(&pool, &[0, 0, 100, 0, 0]);
    let balancer = LeastRequest::new(pool, 3);
    let mut counts = [0u32; 5];
    for p in picks(&balancer, 10_000) {
        counts[p] += 1;
    }
    assert_eq!(counts[2], 0, "{counts:?}");
    for (i, &count) in counts.iter().enumerate() {
        if i != 2 {
            assert!(count > 2000, "{counts:?}");
        }
    }
}

#[test]
fn least_request_favours_weight_when_idle() {
    // Idle, weights 1 and 2: the weight-2 backend wins every comparison ((0+1)/2 < (0+1)/1).
    let balancer = LeastRequest::new(candidates(&[1, 2]), 5);
    assert!(picks(&balancer, 100).iter().all(|&p| p == 1));
}

#[test]
fn least_connections_spreads_ties_evenly() {
    // All idle: the rotating start makes ties go round robin, exactly.
    let balancer = LeastConnections::new(candidates(&[1, 1, 1, 1, 1, 1, 1]), 0);
    let mut counts = [0u32; 7];
    for p in picks(&balancer, 700) {
        counts[p] += 1;
    }
    assert_eq!(counts, [100; 7]);
}

#[test]
fn least_connections_spreads_ties_evenly_in_large_pools() {
    // 1,000 idle backends: the candidate in turn wins every tie, so sampling still
    // serves an idle pool exactly round robin.
    let balancer = LeastConnections::new(candidates(&[1; 1000]), 9);
    let sequence = picks(&balancer, 3000);
    let expected: Vec<usize> = (0..3000).map(|i| i % 1000).collect();
    assert_eq!(sequence, expected);
}

#[test]
fn least_connections_starves_a_heavily_loaded_backend_in_large_pools() {
    // One of 1,000 equal backends has 100 requests in flight: even on its turn, one of
    // the 15 random candidates looked at beside it is idle, so it gets none of 10,000.
    let pool = candidates(&[1; 1000]);
    let mut in_flight = vec![0; 1000];
    in_flight[500] = 100;
    let _guards = load(&pool, &in_flight);
    let balancer = LeastConnections::new(pool, 4);
    assert!(picks(&balancer, 10_000).iter().all(|&p| p != 500));
}

#[test]
fn least_connections_prefers_idle_backends_in_large_pools() {
    // 900 of 1,000 backends have 5 in flight, 100 are idle: a pick lands on a busy one
    // only when a busy one is in turn and all 15 random candidates are busy too
    // (0.9^15 ≈ 20.6%). Of 10,000 picks, 9,000 have a busy one in turn: about 1,853
    // (sd 38) go to busy backends. Allow 2,100, against 9,000 if loads were ignored.
    let pool = candidates(&[1; 1000]);
    let in_flight: Vec<u32> = (0..1000).map(|i| if i % 10 == 0 { 0 } else { 5 }).collect();
    let _guards = load(&pool, &in_flight);
    let balancer = LeastConnections::new(pool, 8);
    let busy = picks(&balancer, 10_000)
        .into_iter()
        .filter(|&p| in_flight[p] > 0)
        .count();
    assert!(busy < 2_100, "{busy} of 10,000 picks went to busy backends");
}

#[test]
fn least_connections_follows_requests_as_they_finish() {
    let pool = candidates(&[1, 1]);
    let busy = load(&pool, &[3, 0]);
    let balancer = LeastConnections::new(pool.clone(), 0);
    assert!(picks(&balancer, 10).iter().all(|&p| p == 1));
    drop(busy);
    let _other = load(&pool, &[0, 3]);
    assert!(picks(&balancer, 10).iter().all(|&p| p == 0));
}

// ---------------------------------------------------------------------------------------
// Every algorithm

/// Picks with a mix of keyed and keyless requests.
fn mixed_picks(balancer: &dyn Balancer, n: u64) -> Vec<Option<usize>> {
    (0..n)
        .map(|i| {
            let key = (i % 3 != 0).then(|| key_hash(&i.to_le_bytes()));
            balancer.pick(&PickContext { key })
        })
        .collect()
}

proptest! {
    #![proptest_config(exact(32))]

    /// Whatever the candidate set (non-contiguous pool positions, uneven loads), every
    /// pick is the index of one of the candidates.
    #[test]
    fn no_algorithm_picks_outside_its_candidates(
        backends in prop::collection::btree_map(0usize..1000, (1u32..=50, 0u32..5), 1..20),
        seed in any::<u64>(),
    ) {
        let indices: Vec<usize> = backends.keys().copied().collect();
        let weights: Vec<u32> = backends.values().map(|&(w, _)| w).collect();
        let in_flight: Vec<u32> = backends.values().map(|&(_, f)| f).collect();
        let pool = candidates_at(&indices, &weights);
        let _guards = load(&pool, &in_flight);
        let allowed: BTreeSet<usize> = indices.iter().copied().collect();
        for algorithm in Algorithm::ALL {
            let balancer = build(algorithm, pool.clone(), seed);
            for picked in mixed_picks(balancer.as_ref(), 300) {
                prop_assert!(
                    picked.is_some_and(|p| allowed.contains(&p)),
                    "{} picked {:?} outside {:?}", algorithm, picked, allowed
                );
            }
        }
    }

    /// Same seed, same candidates, same requests: the same picks, for every algorithm.
    #[test]
    fn seeded_algorithms_are_deterministic(
        weights in prop::collection::vec(1u32..=20, 1..20),
        seed in any::<u64>(),
    ) {
        for algorithm in Algorithm::ALL {
            let first = build(algorithm, candidates(&weights), seed);
            let second = build(algorithm, candidates(&weights), seed);
            prop_assert_eq!(
                mixed_picks(first.as_ref(), 500),
                mixed_picks(second.as_ref(), 500),
                "{} is not deterministic", algorithm
            );
        }
    }
}

#[test]
fn every_algorithm_returns_none_without_candidates() {
    for algorithm in Algorithm::ALL {
        let balancer = build(algorithm, Vec::new(), 1);
        assert_eq!(balancer.pick(&PickContext::default()), None, "{algorithm}");
        assert_eq!(balancer.pick(&with_key(17)), None, "{algorithm}");
    }
}

#[test]
fn no_algorithm_picks_a_weight_zero_candidate() {
    // select_candidates never passes one, but the algorithms are public.
    for algorithm in Algorithm::ALL {
        let balancer = build(algorithm, candidates(&[0, 3, 0, 1]), 1);
        for picked in mixed_picks(balancer.as_ref(), 200) {
            assert!(
                matches!(picked, Some(1 | 3)),
                "{algorithm} picked {picked:?}"
            );
        }
        let none = build(algorithm, candidates(&[0, 0]), 1);
        assert_eq!(none.pick(&PickContext::default()), None, "{algorithm}");
    }
}

#[test]
fn random_seeds_change_the_sequence() {
    // Guards against a seed that is accepted and ignored.
    for algorithm in [
        Algorithm::Random,
        Algorithm::LeastRequest,
        Algorithm::ConsistentHash,
    ] {
        let a = build(algorithm, candidates(&[1, 1, 1, 1, 1, 1, 1, 1]), 1);
        let b = build(algorithm, candidates(&[1, 1, 1, 1, 1, 1, 1, 1]), 2);
        assert_ne!(picks(a.as_ref(), 64), picks(b.as_ref(), 64), "{algorithm}");
    }
}

#[test]
fn algorithm_names_round_trip() {
    for algorithm in Algorithm::ALL {
        assert_eq!(algorithm.name().parse(), Ok(algorithm));
        assert_eq!(algorithm.to_string(), algorithm.name());
    }
    assert_eq!("least_conn".parse::<Algorithm>(), Err(()));
}

// ---------------------------------------------------------------------------------------
// select_candidates: panic mode

fn backend_states(states: &[(u32, bool)]) -> Vec<BackendState> {
    states
        .iter()
        .enumerate()
        .map(|(index, &(weight, usable))| BackendState {
            index,
            weight,
            usable,
            identity: identity_of(index),
            load: Arc::new(BackendLoad::default()),
        })
        .collect()
}

fn selected(selection: &Selection) -> Vec<usize> {
    selection.candidates.iter().map(|c| c.index).collect()
}

proptest! {
    #![proptest_config(exact(128))]

    /// Normally the usable backends of weight > 0; in panic mode (some usable, but
    /// fewer than threshold% of the weight > 0 backends) all backends of weight > 0;
    /// none usable is no panic and no candidates; threshold 0 never panics; weight 0 is
    /// never a candidate. Candidates keep their weight,
    /// identity and load.
    #[test]
    fn select_candidates_follows_panic_mode_rules(
        states in prop::collection::vec((0u32..4, any::<bool>()), 0..30),
        threshold in 0u8..=100,
    ) {
        let backends = backend_states(&states);
        let selection = select_candidates(&backends, threshold);
        let weighted: Vec<usize> = (0..states.len()).filter(|&i| states[i].0 > 0).collect();
        let usable: Vec<usize> = weighted.iter().copied().filter(|&i| states[i].1).collect();
        // "fewer than threshold percent": usable / weighted < threshold / 100.
        let expect_panic = !usable.is_empty()
            && usable.len() * 100 < usize::from(threshold) * weighted.len();
        prop_assert_eq!(selection.panic, expect_panic);
        if threshold == 0 {
            prop_assert!(!selection.panic);
        }
        let expected = if expect_panic { weighted } else { usable };
        prop_assert_eq!(selected(&selection), expected);
        for candidate in &selection.candidates {
            let backend = &backends[candidate.index];
            prop_assert!(candidate.weight > 0);
            prop_assert_eq!(candidate.weight, backend.weight);
            prop_assert_eq!(candidate.identity, backend.identity);
            prop_assert!(Arc::ptr_eq(&candidate.load, &backend.load));
        }
    }
}

#[test]
fn select_candidates_panics_below_the_threshold_only() {
    // 10 weighted backends, threshold 50%: 4 usable is panic, 5 (exactly 50%) is not.
    let four: Vec<(u32, bool)> = (0..10).map(|i| (1, i < 4)).collect();
    let selection = select_candidates(&backend_states(&four), 50);
    assert!(selection.panic);
    assert_eq!(selected(&selection), (0..10).collect::<Vec<_>>());

    let five: Vec<(u32, bool)> = (0..10).map(|i| (1, i < 5)).collect();
    let selection = select_candidates(&backend_states(&five), 50);
    assert!(!selection.panic);
    assert_eq!(selected(&selection), (0..5).collect::<Vec<_>>());
}

#[test]
fn select_candidates_threshold_zero_disables_panic() {
    let none_usable = backend_states(&[(1, false), (2, false)]);
    let selection = select_candidates(&none_usable, 0);
    assert!(!selection.panic);
    assert!(selection.candidates.is_empty());
}

/// Regression: a pool whose backends are all down spread requests over the dead
/// backends in panic mode, so clients waited for connect errors instead of a fast 503.
#[test]
fn select_candidates_offers_nothing_when_nothing_is_usable() {
    let none_usable = backend_states(&[(1, false), (2, false), (1, false)]);
    let selection = select_candidates(&none_usable, 50);
    assert!(!selection.panic);
    assert!(selection.candidates.is_empty());
}

#[test]
fn select_candidates_never_offers_weight_zero() {
    // Weight-0 backends neither count towards the threshold nor join in panic mode:
    // 1 of 2 weighted backends usable is 50%, not below 50%, whatever the 8 weight-0 ones.
    let mut states = vec![(1, true), (1, false)];
    states.extend([(0, true); 4]);
    states.extend([(0, false); 4]);
    let selection = select_candidates(&backend_states(&states), 50);
    assert!(!selection.panic);
    assert_eq!(selected(&selection), [0]);

    let selection = select_candidates(&backend_states(&states), 100);
    assert!(selection.panic);
    assert_eq!(selected(&selection), [0, 1]);
}

#[test]
fn intended_shares_follow_weights_except_for_round_robin() {
    let states: Vec<BackendState> = [
        (0usize, 1u32, true),
        (1, 3, true),
        (2, 4, false),
        (3, 0, true),
    ]
    .into_iter()
    .map(|(index, weight, usable)| BackendState {
        index,
        weight,
        usable,
        identity: index as u64,
        load: Arc::new(BackendLoad::default()),
    })
    .collect();
    let weighted = intended_shares(Algorithm::WeightedRoundRobin, &states, 0);
    assert_eq!(weighted, vec![0.25, 0.75, 0.0, 0.0]);
    let round_robin = intended_shares(Algorithm::RoundRobin, &states, 0);
    assert_eq!(round_robin, vec![0.5, 0.5, 0.0, 0.0]);
    // In panic mode (2 of 3 weighted backends usable < 80%), the unusable one counts too.
    let panic = intended_shares(Algorithm::WeightedRoundRobin, &states, 80);
    assert_eq!(panic, vec![0.125, 0.375, 0.5, 0.0]);
}
