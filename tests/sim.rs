//! `evenkeel simulate` and `evenkeel plan` as processes: output, JSON, exit codes, and
//! a prediction held against live traffic through `evenkeel serve`.

use std::collections::HashMap;

use http::StatusCode;

use crate::util::{get, run, Backend, Client, Dir, Proxy};

const CONFIG: &str = r#"[[listener]]
name = "public"
listen = "127.0.0.1:8080"

[[route]]
pool = "web"

[[route]]
path_prefix = "/cache"
pool = "cache"

[pool.web]
algorithm = "weighted_round_robin"
backends = [
  { address = "127.0.0.1:9001" },
  { address = "127.0.0.1:9002", weight = 2, capacity = 2 },
  { address = "127.0.0.1:9003", weight = 5 },
]
[pool.web.health]
path = "/healthz"

[pool.cache]
algorithm = "consistent_hash"
hash_key = "header:x-user-id"
backends = [
  { address = "127.0.0.1:9101" },
  { address = "127.0.0.1:9102" },
  { address = "127.0.0.1:9103" },
]
[pool.cache.health]
path = "/healthz"
"#;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// The `(address, field)` values of one pool in `simulate --format json` output.
fn backend_field(output: &serde_json::Value, pool: &str, field: &str) -> Vec<(String, f64)> {
    output["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .find(|p| p["pool"] == pool)
        .unwrap_or_else(|| panic!("no pool {pool}"))["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| {
            (
                b["address"].as_str().expect("address").to_string(),
                b[field].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

#[test]
fn simulate_prints_a_table_per_pool_and_flags_an_overloaded_backend() {
    let dir = Dir::new();
    let path = dir.write("lb.toml", CONFIG);
    let out = run(&["simulate", "-c", path.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let text = &out.stdout;
    assert!(text.contains("100000 requests per pool, seed 1"), "{text}");
    assert!(text.contains("pool \"web\": weighted_round_robin, 3 of 3 backends usable"));
    assert!(text.contains(
        "backend         weight  capacity  intended %  predicted %  capacity %  load ratio"
    ));
    // Weight 5 of 8 on a quarter of the capacity: load ratio 2.5, flagged.
    let line = text
        .lines()
        .find(|l| l.contains("127.0.0.1:9003"))
        .expect("row of 9003");
    assert!(line.contains("62.5%") && line.contains("25.0%"), "{line}");
    assert!(line.contains("2.50  ! load ratio above 2"), "{line}");
    assert!(
        text.contains("skew 0.00: within guard.max_skew 0.25"),
        "{text}"
    );
    assert!(text.contains("keys uniform:10000 (key-0 ..)"), "{text}");
    assert!(text.contains("2 pools: 1 backend with load ratio above guard.max_load_ratio"));
}

#[test]
fn simulate_json_gives_every_backend_and_repeats_for_a_seed() {
    let dir = Dir::new();
    let path = dir.write("lb.toml", CONFIG);
    let path = path.to_str().unwrap();
    let args = [
        "simulate",
        "-c",
        path,
        "--format",
        "json",
        "--down",
        "127.0.0.1:9001",
        "--keys",
        "zipf:1.1:1000",
        "--key-missing",
        "10",
        "--requests",
        "50000",
    ];
    let out = run(&args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let value = json(&out.stdout);
    assert_eq!(value["requests"], 50_000);
    assert_eq!(value["keys"], "zipf:1.1:1000");
    assert_eq!(value["key_missing_percent"], 10.0);
    assert_eq!(value["down"], serde_json::json!(["127.0.0.1:9001"]));
    let web = &value["pools"][0];
    assert_eq!(web["pool"], "web");
    assert_eq!(web["algorithm"], "weighted_round_robin");
    assert_eq!(web["panic"], false);
    let first = &web["backends"][0];
    for field in [
        "address",
        "weight",
        "capacity",
        "down",
        "requests",
        "intended_share",
        "predicted_share",
        "capacity_share",
        "load_ratio",
        "overloaded",
    ] {
        assert!(first.get(field).is_some(), "no {field} in {first}");
    }
    assert_eq!(first["down"], true);
    assert_eq!(first["predicted_share"], 0.0);
    assert_eq!(first["load_ratio"], serde_json::Value::Null);
    // Weights 2 and 5 share what is left, exactly.
    let shares = backend_field(&value, "web", "predicted_share");
    assert!((shares[1].1 - 2.0 / 7.0).abs() < 1e-4, "{shares:?}");
    // A Zipf key population piles on one cache backend: skew is flagged.
    let cache = &value["pools"][1];
    assert_eq!(cache["skew_flagged"], true, "{cache}");
    // The same seed gives the same prediction; another seed another one.
    assert_eq!(run(&args).stdout, out.stdout);
    let mut reseeded = args.to_vec();
    reseeded.extend(["--seed", "9"]);
    assert_ne!(run(&reseeded).stdout, out.stdout);
}

#[test]
fn simulate_refuses_a_config_with_errors_like_check_with_exit_1() {
    let dir = Dir::new();
    let path = dir.write(
        "lb.toml",
        &CONFIG.replace("pool = \"cache\"", "pool = \"cahce\""),
    );
    let out = run(&["simulate", "-c", path.to_str().unwrap()]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("error[unknown-pool]"), "{}", out.stdout);
    assert!(out.stdout.contains("rejected: 1 error"), "{}", out.stdout);
    let json_out = run(&["simulate", "-c", path.to_str().unwrap(), "--format", "json"]);
    assert_eq!(json_out.code, Some(1));
    assert_eq!(json(&json_out.stdout)[0]["rule"], "unknown-pool");
}

#[test]
fn simulate_exits_2_on_an_unreadable_file_a_bad_option_or_an_unknown_backend() {
    let dir = Dir::new();
    let missing = dir.path().join("missing.toml");
    let out = run(&["simulate", "-c", missing.to_str().unwrap()]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("cannot read"), "{}", out.stderr);

    let path = dir.write("lb.toml", CONFIG);
    let path = path.to_str().unwrap();
    let out = run(&["simulate", "-c", path, "--down", "127.0.0.l:9001"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("did you mean 127.0.0.1:9001?"),
        "{}",
        out.stderr
    );
    let out = run(&["simulate", "-c", path, "--keys", "normal:3"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("uniform:K or zipf:S:K"),
        "{}",
        out.stderr
    );
    let out = run(&["simulate", "-c", path, "--key-missing", "120"]);
    assert_eq!(out.code, Some(2));
}

#[test]
fn simulate_and_plan_help_show_an_example() {
    for command in ["simulate", "plan"] {
        let out = run(&[command, "--help"]);
        assert_eq!(out.code, Some(0));
        assert!(
            out.stdout.contains(&format!("evenkeel {command} ")),
            "{}",
            out.stdout
        );
    }
}

// ---------------------------------------------------------------------------------------
// plan

#[test]
fn plan_on_a_weight_change_flags_the_share_that_more_than_doubles_and_the_one_dropping_to_zero() {
    let dir = Dir::new();
    let old = dir.write("old.toml", CONFIG);
    let new = dir.write(
        "new.toml",
        &CONFIG
            .replace(
                "{ address = \"127.0.0.1:9001\" }",
                "{ address = \"127.0.0.1:9001\", weight = 0 }",
            )
            .replace(
                "{ address = \"127.0.0.1:9002\", weight = 2, capacity = 2 }",
                "{ address = \"127.0.0.1:9002\", weight = 9, capacity = 2 }",
            ),
    );
    let (old, new) = (old.to_str().unwrap(), new.to_str().unwrap());
    let out = run(&["plan", old, new]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let text = &out.stdout;
    assert!(text.contains("Changes (2):"), "{text}");
    assert!(text.contains("~ pool \"web\": backend 127.0.0.1:9001: weight 1 → 0"));
    assert!(text.contains("~ pool \"web\": backend 127.0.0.1:9002: weight 2 → 9"));
    let row = |address: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(address))
            .unwrap_or_else(|| panic!("no row for {address}:\n{text}"))
            .to_string()
    };
    // 9001: 12.5% → 0.
    assert!(
        row("127.0.0.1:9001").contains("12.5%         0.0%"),
        "{text}"
    );
    assert!(row("127.0.0.1:9001").ends_with("! drops to 0"), "{text}");
    // 9002: 25% → 64.3% (9 of 14), ×2.57.
    assert!(row("127.0.0.1:9002").contains("64.3%"), "{text}");
    assert!(
        row("127.0.0.1:9002").contains("! share ×2.57 (over guard.max_shift 2)"),
        "{text}"
    );
    // 9003: 62.5% → 35.7%, load ratio 2.50 → 1.07: better, nothing to flag.
    assert!(!row("127.0.0.1:9003").contains('!'), "{text}");
    // The unchanged hashed pool shows its key-space shares, unflagged.
    assert!(text.contains("pool \"cache\" (consistent_hash, key-space share)"));
    assert!(
        text.contains("keys moving to another backend: 0.0%"),
        "{text}"
    );
    assert!(
        text.contains("plan: 2 changes, 2 flags; NEW can be applied"),
        "{text}"
    );
    // NEW's findings, as check prints them.
    assert!(text.contains("new.toml: ok: 1 listener, 2 routes, 2 pools, 6 backends"));

    let denied = run(&["plan", old, new, "--deny-flags"]);
    assert_eq!(denied.code, Some(1));
    assert!(denied.stdout.contains("refused under --deny-flags"));
    let same = run(&["plan", old, old, "--deny-flags"]);
    assert_eq!(same.code, Some(0), "{}", same.stdout);
    assert!(
        same.stdout.contains("Changes (0):\n  none"),
        "{}",
        same.stdout
    );
    // 9003 was over guard.max_load_ratio before and is no worse: shown, not flagged.
    assert!(
        same.stdout
            .contains("2.50  load ratio above 2 already before"),
        "{}",
        same.stdout
    );
}

#[test]
fn plan_exits_1_when_new_has_errors_and_2_when_a_file_cannot_be_read() {
    let dir = Dir::new();
    let old = dir.write("old.toml", CONFIG);
    let broken = dir.write("broken.toml", &CONFIG.replace("weight = 5", "weight = -5"));
    let (old, broken) = (old.to_str().unwrap(), broken.to_str().unwrap());
    let out = run(&["plan", old, broken]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("NEW does not pass check"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("error[out-of-range]"), "{}", out.stdout);

    // A broken OLD is no baseline: NEW is shown alone, and the exit code is NEW's.
    let out = run(&["plan", broken, old]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("OLD does not pass check (1 error)"));
    assert!(!out.stdout.contains("Changes"));
    // Without a baseline only load ratios are judged: 9003 carries 62.5% on 25% of the
    // capacity.
    assert!(
        out.stdout.contains("plan: no baseline, 1 flag;"),
        "{}",
        out.stdout
    );

    let missing = dir.path().join("missing.toml");
    let out = run(&["plan", old, missing.to_str().unwrap()]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("cannot read"));
    let out = run(&["plan", missing.to_str().unwrap(), old]);
    assert_eq!(out.code, Some(2));
}

// ---------------------------------------------------------------------------------------
// Prediction against live traffic

/// Largest difference between two shares, in percentage points, that the live test
/// accepts. Weighted round robin is exact live and simulated (measured: 0.00 points); a
/// hashed pool's live shares over a fixed key set are exact too, and the simulation
/// draws its keys at random from the same set, which costs it about 0.1 point of noise
/// at 200,000 requests.
const TOLERANCE_POINTS: f64 = 2.0;

#[test]
fn simulate_on_weighted_and_hashed_pools_agrees_with_live_traffic() {
    const KEYS: usize = 500;
    const ROUNDS: usize = 6;
    let weighted: Vec<Backend> = (0..3).map(|i| Backend::start(&format!("w{i}"))).collect();
    let hashed: Vec<Backend> = (0..4).map(|i| Backend::start(&format!("h{i}"))).collect();
    let list = |backends: &[Backend], weights: &[u32]| -> String {
        backends
            .iter()
            .zip(weights)
            .map(|(b, w)| format!("  {{ address = \"{}\", weight = {w} }},\n", b.address()))
            .collect()
    };
    let config = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[route]]\npath_prefix = \"/w\"\npool = \"weighted\"\n\n\
         [[route]]\npath_prefix = \"/h\"\npool = \"hashed\"\n\n\
         [pool.weighted]\nalgorithm = \"weighted_round_robin\"\nbackends = [\n{}]\n\n\
         [pool.hashed]\nalgorithm = \"consistent_hash\"\nhash_key = \"header:x-user-id\"\n\
         backends = [\n{}]\n",
        list(&weighted, &[1, 2, 3]),
        list(&hashed, &[1, 1, 2, 1]),
    );
    let proxy = Proxy::start(&config, 2);
    // Four keep-alive connections used in turn, so both workers serve some.
    let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(proxy.addr())).collect();
    let weighted_requests = 3_000;
    for i in 0..weighted_requests {
        let reply = clients[i % 4].get("/w");
        assert_eq!(reply.status, StatusCode::OK);
    }
    // Every key of the set the same number of times: the live shares are the key set's.
    for round in 0..ROUNDS {
        for key in 0..KEYS {
            let request = get("/h")
                .header("x-user-id", format!("key-{key}"))
                .body(crate::util::empty())
                .expect("request");
            let reply = clients[(round * KEYS + key) % 4].send(request);
            assert_eq!(reply.status, StatusCode::OK);
        }
    }

    let config_path = proxy.dir().join("evenkeel.toml");
    let out = run(&[
        "simulate",
        "-c",
        config_path.to_str().unwrap(),
        "--format",
        "json",
        "--keys",
        &format!("uniform:{KEYS}"),
        "--requests",
        "200000",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let prediction = json(&out.stdout);

    let mut worst: HashMap<&str, f64> = HashMap::new();
    for (pool, backends, total) in [
        ("weighted", &weighted, weighted_requests),
        ("hashed", &hashed, KEYS * ROUNDS),
    ] {
        let predicted: HashMap<String, f64> = backend_field(&prediction, pool, "predicted_share")
            .into_iter()
            .collect();
        for backend in backends.iter() {
            let live = backend.requests() as f64 / total as f64;
            let simulated = predicted[&backend.address()];
            let points = (live - simulated).abs() * 100.0;
            eprintln!(
                "{pool} {}: live {:.2}%, simulated {:.2}%, difference {points:.2} points",
                backend.name(),
                live * 100.0,
                simulated * 100.0
            );
            let entry = worst.entry(pool).or_insert(0.0);
            *entry = entry.max(points);
            assert!(
                points <= TOLERANCE_POINTS,
                "{pool} {}: live {live:.4} vs simulated {simulated:.4}",
                backend.name()
            );
        }
    }
    eprintln!("largest difference: {worst:?} (tolerance {TOLERANCE_POINTS} points)");
    // Every hashed request reached one of the pool's backends.
    let hashed_live: Vec<u64> = hashed.iter().map(Backend::requests).collect();
    assert_eq!(hashed_live.iter().sum::<u64>(), (KEYS * ROUNDS) as u64);
}
