//! Unit tests of the simulator and of `plan`'s share comparison.

use super::plan::{compare, expected_shares, Flag};
use super::*;
use crate::config::{check_source, Source};

/// A valid config with one listener, a catch-all route to the first pool, and `pools`.
fn config(pools: &str) -> Config {
    let text = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8080\"\n\
         [[route]]\npool = \"web\"\n{pools}"
    );
    let checked = check_source(Source {
        path: "t.toml".into(),
        text,
    });
    checked
        .config
        .unwrap_or_else(|| panic!("invalid test config: {:?}", checked.findings))
}

/// `[pool.web]` with `algorithm` over backends `127.0.0.1:9001..` given as
/// `(weight, capacity)`, and `extra` lines.
fn pool(name: &str, algorithm: &str, backends: &[(u32, f64)], extra: &str) -> String {
    let list: String = backends
        .iter()
        .enumerate()
        .map(|(i, (w, c))| {
            format!(
                "  {{ address = \"127.0.0.1:{}\", weight = {w}, capacity = {c} }},\n",
                9001 + i
            )
        })
        .collect();
    format!("[pool.{name}]\nalgorithm = \"{algorithm}\"\n{extra}backends = [\n{list}]\n")
}

fn web(algorithm: &str, backends: &[(u32, f64)], extra: &str) -> Config {
    config(&pool("web", algorithm, backends, extra))
}

fn run(config: &Config, options: SimOptions) -> PoolPrediction {
    let prediction = simulate(config, &options).expect("simulate");
    prediction.pools.into_iter().next().expect("a pool")
}

fn shares(pool: &PoolPrediction) -> Vec<f64> {
    pool.backends.iter().map(|b| b.predicted_share).collect()
}

fn requests(n: u64) -> SimOptions {
    SimOptions {
        requests: n,
        ..SimOptions::default()
    }
}

fn down(specs: &[&str]) -> Vec<Down> {
    specs
        .iter()
        .map(|s| s.parse().expect("down spec"))
        .collect()
}

#[test]
fn weighted_round_robin_predicts_the_weight_shares_exactly() {
    let c = web("weighted_round_robin", &[(1, 1.0), (2, 1.0), (3, 1.0)], "");
    let p = run(&c, requests(600_000));
    let picks: Vec<u64> = p.backends.iter().map(|b| b.picks).collect();
    assert_eq!(picks, [100_000, 200_000, 300_000]);
    for b in &p.backends {
        assert!((b.predicted_share - b.intended_share).abs() < 1e-12);
    }
    assert_eq!(p.skew, Skew::default());
    assert!(!p.skew_flagged() && !p.panic);
    assert_eq!(p.unserved, 0);
}

#[test]
fn random_over_weights_stays_within_noise_and_never_flags_skew() {
    let c = web("random", &[(1, 1.0), (3, 1.0), (6, 1.0)], "");
    let p = run(&c, requests(1_000_000));
    for (b, want) in p.backends.iter().zip([0.1, 0.3, 0.6]) {
        // 4 binomial σ at a million requests is at most 0.2 percentage points.
        assert!((b.predicted_share - want).abs() < 0.002, "{b:?}");
    }
    assert!(p.skew.value < 0.25 && !p.skew_flagged(), "{:?}", p.skew);
}

#[test]
fn random_over_equal_weights_with_a_million_requests_has_no_skew() {
    let c = web("random", &[(1, 1.0); 10], "");
    for seed in 1..=5 {
        let p = run(
            &c,
            SimOptions {
                requests: 1_000_000,
                seed,
                ..SimOptions::default()
            },
        );
        assert!(p.skew.value < 0.25, "seed {seed}: {:?}", p.skew);
        assert!(!p.skew_flagged(), "seed {seed}");
    }
}

#[test]
fn a_hashed_pool_with_one_hot_key_is_a_ten_to_one_miss_and_flags_skew() {
    // Every request carries the same key: one backend gets everything, the others
    // nothing, where each should get a third.
    let c = web(
        "consistent_hash",
        &[(1, 1.0); 3],
        "hash_key = \"header:x-user\"\n",
    );
    let p = run(
        &c,
        SimOptions {
            keys: KeyDistribution::Uniform { keys: 1 },
            ..requests(10_000)
        },
    );
    let mut s = shares(&p);
    s.sort_by(f64::total_cmp);
    assert_eq!(s, [0.0, 0.0, 1.0]);
    // The hot backend is 2 × its intended share over: skew 2.
    assert!((p.skew.value - 2.0).abs() < 1e-9, "{:?}", p.skew);
    assert!(p.skew_flagged());
    let hot = p.backends.iter().find(|b| b.predicted_share == 1.0);
    assert!(hot.is_some_and(|b| b.load_ratio == Some(3.0) && b.overloaded));
}

#[test]
fn down_backends_get_nothing_and_their_share_moves_to_the_others() {
    let c = web("round_robin", &[(1, 1.0); 3], "");
    let p = run(
        &c,
        SimOptions {
            down: down(&["127.0.0.1:9002"]),
            ..requests(30_000)
        },
    );
    assert_eq!(shares(&p), [0.5, 0.0, 0.5]);
    assert!(p.backends[1].down && p.backends[1].intended_share == 0.0);
    assert_eq!(p.backends[1].capacity_share, 0.0);
    assert_eq!(p.backends[1].load_ratio, None);
    assert_eq!(p.backends[0].capacity_share, 0.5);
    assert_eq!(p.backends[0].load_ratio, Some(1.0));
    assert_eq!((p.usable, p.weighted, p.panic), (2, 3, false));
}

#[test]
fn too_many_down_backends_put_the_pool_in_panic_mode() {
    let c = web("round_robin", &[(1, 1.0); 4], "");
    let p = run(
        &c,
        SimOptions {
            down: down(&["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]),
            ..requests(40_000)
        },
    );
    assert!(p.panic);
    // Panic spreads over all four, down ones included.
    assert_eq!(shares(&p), [0.25; 4]);
    assert_eq!(p.backends[3].capacity_share, 1.0);
    assert_eq!(p.backends[3].load_ratio, Some(0.25));
}

#[test]
fn a_pool_with_every_backend_down_serves_nothing() {
    let c = web("least_request", &[(1, 1.0); 2], "");
    let p = run(
        &c,
        SimOptions {
            down: down(&["web/127.0.0.1:9001", "127.0.0.1:9002"]),
            ..requests(1_000)
        },
    );
    assert_eq!(p.unserved, 1_000);
    assert_eq!(shares(&p), [0.0, 0.0]);
    assert!(!p.panic);
}

#[test]
fn down_with_a_pool_only_touches_that_pool() {
    let c = config(&format!(
        "{}{}",
        pool("web", "round_robin", &[(1, 1.0); 2], ""),
        pool("api", "round_robin", &[(1, 1.0); 2], "")
    ));
    let prediction = simulate(
        &c,
        &SimOptions {
            down: down(&["api/127.0.0.1:9001"]),
            ..requests(1_000)
        },
    )
    .expect("simulate");
    assert_eq!(shares(&prediction.pools[0]), [0.5, 0.5]);
    assert_eq!(shares(&prediction.pools[1]), [0.0, 1.0]);
}

#[test]
fn down_naming_nothing_is_an_error_with_a_suggestion() {
    let c = web("round_robin", &[(1, 1.0); 2], "");
    let error = |spec: &str| {
        simulate(
            &c,
            &SimOptions {
                down: down(&[spec]),
                ..SimOptions::default()
            },
        )
        .expect_err(spec)
    };
    assert_eq!(
        error("127.0.0.1:9011"),
        SimError::UnknownBackend {
            down: "127.0.0.1:9011".into(),
            pool: None,
            address: "127.0.0.1:9011".into(),
            suggestion: Some("127.0.0.1:9001".into()),
        }
    );
    assert!(error("wbe/127.0.0.1:9001")
        .to_string()
        .contains("no pool \"wbe\" (did you mean web?)"));
    assert!("/127.0.0.1:9001".parse::<Down>().is_err());
    assert!("web/".parse::<Down>().is_err());
}

#[test]
fn uniform_keys_spread_like_the_weights_and_zipf_keys_pile_on_one_backend() {
    let c = web(
        "consistent_hash",
        &[(1, 1.0); 4],
        "hash_key = \"header:x-user\"\n",
    );
    let uniform = run(&c, requests(200_000));
    for b in &uniform.backends {
        // 10,000 keys over 4 backends: each holds about 2,500 ± 43 keys.
        assert!((b.predicted_share - 0.25).abs() < 0.02, "{b:?}");
    }
    assert!(!uniform.skew_flagged(), "{:?}", uniform.skew);
    let zipf = run(
        &c,
        SimOptions {
            keys: "zipf:1.2:1000".parse().expect("keys"),
            ..requests(200_000)
        },
    );
    let hottest = shares(&zipf).into_iter().fold(0.0, f64::max);
    // The top key alone carries about a fifth of the requests.
    assert!(hottest > 0.35, "{:?}", shares(&zipf));
    assert!(zipf.skew.value > uniform.skew.value);
    assert!(zipf.skew_flagged(), "{:?}", zipf.skew);
}

#[test]
fn requests_without_the_key_are_spread_by_weight() {
    let c = web(
        "consistent_hash",
        &[(1, 1.0), (3, 1.0)],
        "hash_key = \"header:x-user\"\n",
    );
    // A single key, but 100% of requests lack it: the keyless path spreads them 1:3.
    let p = run(
        &c,
        SimOptions {
            keys: KeyDistribution::Uniform { keys: 1 },
            key_missing: 1.0,
            ..requests(100_000)
        },
    );
    assert!((p.backends[0].predicted_share - 0.25).abs() < 0.01, "{p:?}");
    assert!(!p.skew_flagged());
}

#[test]
fn the_same_seed_repeats_the_prediction_and_another_seed_changes_it() {
    let c = web("least_request", &[(1, 1.0), (1, 2.0), (2, 1.0)], "");
    let options = requests(50_000);
    let a = simulate(&c, &options).expect("simulate");
    let b = simulate(&c, &options).expect("simulate");
    assert_eq!(a, b);
    let other = simulate(
        &c,
        &SimOptions {
            seed: 7,
            ..options.clone()
        },
    )
    .expect("simulate");
    assert_ne!(a.pools[0].backends, other.pools[0].backends);
}

#[test]
fn least_connections_under_load_follows_capacity() {
    // Equal weights, capacities 1 and 3: with 32 requests in flight least connections
    // keeps about 16 on each, and the faster backend finishes three times as many.
    let c = web("least_connections", &[(1, 1.0), (1, 3.0)], "");
    let p = run(&c, requests(200_000));
    assert!((p.backends[0].predicted_share - 0.25).abs() < 0.02, "{p:?}");
    for b in &p.backends {
        let ratio = b.load_ratio.expect("usable");
        assert!((ratio - 1.0).abs() < 0.1, "{b:?}");
        assert!(!b.overloaded);
    }
    // Far from the weights, but skew is not alarmed for a load-aware algorithm.
    assert!(p.skew.value > 0.25 && !p.skew_flagged());
}

#[test]
fn least_request_under_load_leans_towards_capacity() {
    let c = web("least_request", &[(1, 1.0), (1, 1.0), (1, 4.0)], "");
    let p = run(&c, requests(200_000));
    let s = shares(&p);
    assert!(s[2] > 0.5, "{s:?}");
    assert!(p.backends.iter().all(|b| !b.overloaded), "{p:?}");
}

#[test]
fn round_robin_over_unequal_capacities_overloads_the_small_backend() {
    let c = web("round_robin", &[(1, 1.0), (1, 4.0)], "");
    let p = run(&c, requests(10_000));
    assert_eq!(shares(&p), [0.5, 0.5]);
    assert_eq!(p.backends[0].capacity_share, 0.2);
    assert_eq!(p.backends[0].load_ratio, Some(2.5));
    assert!(p.backends[0].overloaded && !p.backends[1].overloaded);
}

#[test]
fn a_request_left_over_from_a_cycle_does_not_flag_a_load_ratio_at_the_line() {
    // 100,000 round-robin requests over 3: 33,334 / 33,333 / 33,333. Against a sixth
    // of the capacity each small backend is at 2.00 (2.00004 for the first): at the
    // line, not above it.
    let c = web("round_robin", &[(1, 1.0), (1, 1.0), (1, 4.0)], "");
    let p = run(&c, requests(100_000));
    assert_eq!(p.backends[0].picks, 33_334);
    assert!(p.backends[0].load_ratio.is_some_and(|r| r > 2.0));
    assert!(p.backends.iter().all(|b| !b.overloaded), "{p:?}");
}

#[test]
fn a_million_requests_over_a_thousand_backends_runs_in_release_time() {
    // Guards the hot loop against accidental per-request allocation: a debug build is
    // far slower than release, so only a generous bound is checked here; the release
    // figure is in docs/benchmarks.md.
    let backends: Vec<(u32, f64)> = (0..1000).map(|i| (i % 5 + 1, 1.0)).collect();
    let c = web("random", &backends, "");
    let started = std::time::Instant::now();
    let p = run(&c, requests(1_000_000));
    assert_eq!(p.backends.iter().map(|b| b.picks).sum::<u64>(), 1_000_000);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

// ---------------------------------------------------------------------------------------
// plan's expected shares

#[test]
fn expected_shares_are_intended_shares_or_the_key_space_share() {
    let wrr = web("weighted_round_robin", &[(1, 1.0), (3, 2.0), (0, 1.0)], "");
    let shares: Vec<f64> = expected_shares(&wrr.pools[0])
        .iter()
        .map(|s| s.share)
        .collect();
    assert_eq!(shares, [0.25, 0.75, 0.0]);
    let ratios: Vec<Option<f64>> = expected_shares(&wrr.pools[0])
        .iter()
        .map(|s| s.load_ratio)
        .collect();
    assert_eq!(
        ratios,
        [Some(0.25 / (1.0 / 3.0)), Some(0.75 / (2.0 / 3.0)), None]
    );

    let hashed = web(
        "consistent_hash",
        &[(1, 1.0), (1, 1.0), (2, 1.0)],
        "hash_key = \"path\"\n",
    );
    let key_space = expected_shares(&hashed.pools[0]);
    let total: f64 = key_space.iter().map(|s| s.share).sum();
    assert!((total - 1.0).abs() < 1e-9);
    for (s, want) in key_space.iter().zip([0.25, 0.25, 0.5]) {
        assert!((s.share - want).abs() < 0.001, "{s:?}");
        assert_ne!(s.share, want, "the slot share, not the weight share");
    }
}

#[test]
fn plan_flags_a_share_that_more_than_doubles_and_one_that_drops_to_zero() {
    let old = web("weighted_round_robin", &[(1, 1.0); 3], "");
    let new = web("weighted_round_robin", &[(5, 1.0), (1, 1.0), (0, 1.0)], "");
    let pools = compare(Some(&old), &new);
    assert_eq!(pools.len(), 1);
    let flags: Vec<&[Flag]> = pools[0].backends.iter().map(|b| &b.flags[..]).collect();
    assert!(
        matches!(flags[0], [Flag::ShareMultiplied { ratio, limit: 2.0 }] if (ratio - 2.5).abs() < 1e-9),
        "{flags:?}"
    );
    assert!(flags[1].is_empty(), "{flags:?}");
    assert_eq!(flags[2], [Flag::DropsToZero]);
    assert_eq!(pools[0].flags(), 2);
}

#[test]
fn plan_flags_load_ratio_with_the_new_guard() {
    let old = web("round_robin", &[(1, 1.0), (1, 1.0)], "");
    let new = config(&format!(
        "{}[guard]\nmax_load_ratio = 1.5\n",
        pool("web", "round_robin", &[(1, 1.0), (1, 3.0)], "")
    ));
    let pools = compare(Some(&old), &new);
    // 50% of the traffic on a quarter of the capacity: load ratio 2 > 1.5.
    assert_eq!(
        pools[0].backends[0].flags,
        [Flag::Overloaded {
            ratio: 2.0,
            limit: 1.5
        }]
    );
    assert!(pools[0].backends[1].flags.is_empty());
    // Already over the line and no worse: not this change's doing, not flagged.
    assert!(compare(Some(&new), &new).iter().all(|p| p.flags() == 0));
}

#[test]
fn plan_lists_added_removed_backends_and_pools() {
    let old = config(&format!(
        "{}{}",
        pool("web", "round_robin", &[(1, 1.0); 2], ""),
        pool("gone", "round_robin", &[(1, 1.0); 2], "")
    ));
    let new = config(
        &pool("web", "round_robin", &[(1, 1.0); 3], "").replace("127.0.0.1:9001", "127.0.0.1:9100"),
    );
    let pools = compare(Some(&old), &new);
    assert_eq!(pools.len(), 2);
    let web = &pools[0];
    let rows: Vec<(&str, bool, bool)> = web
        .backends
        .iter()
        .map(|b| (b.address.as_str(), b.before.is_some(), b.after.is_some()))
        .collect();
    assert_eq!(
        rows,
        [
            ("127.0.0.1:9100", false, true),
            ("127.0.0.1:9002", true, true),
            ("127.0.0.1:9003", false, true),
            ("127.0.0.1:9001", true, false),
        ]
    );
    // A backend removed from a pool that stays drops to zero; a new one is judged by
    // load ratio only.
    assert_eq!(web.backends[3].flags, [Flag::DropsToZero]);
    assert!(web.backends[0].flags.is_empty());
    // A removed pool is listed, without flags (the diff says it went).
    assert_eq!((pools[1].pool.as_str(), pools[1].after), ("gone", None));
    assert_eq!(pools[1].flags(), 0);
    assert_eq!(web.keys_moved, None, "not a hashed pool");
    // Without an OLD to compare with, only load ratios can be judged.
    assert!(compare(None, &new).iter().all(|p| p.flags() == 0));
}

#[test]
fn plan_measures_the_keys_a_hashed_pool_moves() {
    let extra = "hash_key = \"header:x-user\"\n";
    let old = web("consistent_hash", &[(1, 1.0); 4], extra);
    let same = compare(Some(&old), &old);
    assert_eq!(same[0].keys_moved, Some(0.0));
    // Removing one backend of four moves its quarter of the keys, and little more.
    let fewer = config(&pool("web", "consistent_hash", &[(1, 1.0); 3], extra));
    let moved = compare(Some(&old), &fewer)[0].keys_moved.expect("hashed");
    assert!((0.24..0.28).contains(&moved), "{moved}");
    // Replacing it is a removal and an addition: the newcomer takes a quarter of the
    // keys, most of them from the others (measured: 40%).
    let new = config(
        &pool("web", "consistent_hash", &[(1, 1.0); 4], extra)
            .replace("127.0.0.1:9004", "127.0.0.1:9104"),
    );
    let moved = compare(Some(&old), &new)[0].keys_moved.expect("hashed");
    assert!((0.3..0.5).contains(&moved), "{moved}");
}
