//! Request keys for simulating consistent-hash pools.
//!
//! A consistent-hash pool's split depends on which keys its requests carry, which a
//! config does not say, so `simulate` takes a key distribution (`--keys`):
//!
//! - `uniform:K` — `K` distinct keys, each request's key drawn uniformly among them;
//! - `zipf:S:K` — `K` distinct keys with Zipf popularity of exponent `S`: the key of
//!   rank `r` (from 1) is drawn with probability `r^−S / Σ j^−S`. Web traffic is often
//!   close to `S = 1` (a few users, pages or objects take a large part of requests),
//!   and a hot key is where consistent hashing hurts: all of its requests go to one
//!   backend, whatever the weights say.
//!
//! The keys are the strings `key-0`, `key-1`, … `key-{K−1}` (rank `r` is `key-{r−1}`),
//! hashed with [`balance::key_hash`], the function the proxy applies to the header,
//! cookie, address or path it reads. So a test (or an operator) that sends those exact
//! strings through the real proxy can hold it to the prediction key by key.
//!
//! `--key-missing PCT` makes that percentage of requests carry no key at all; the
//! balancer spreads them over the pool by its keyless path, as it does live.
//!
//! Draws come from a seeded [`SharedRng`], so a seed repeats the same key sequence. A
//! uniform draw is one [`SharedRng::below`]; a Zipf draw is a binary search of a
//! uniform number in the cumulative distribution, built once (`K` floats).

use std::fmt;
use std::str::FromStr;

use crate::balance::{self, SharedRng};

/// Most distinct keys a distribution may have (each is hashed up front: about 80 MB).
pub const MAX_KEYS: u32 = 10_000_000;

/// Default number of distinct keys.
pub const DEFAULT_KEYS: u32 = 10_000;

/// How the keys of simulated requests are distributed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyDistribution {
    /// `uniform:K`: `keys` distinct keys, equally likely.
    Uniform {
        /// Distinct keys, 1 to [`MAX_KEYS`].
        keys: u32,
    },
    /// `zipf:S:K`: `keys` distinct keys, the one of rank `r` with probability ∝ `r^−exponent`.
    Zipf {
        /// The Zipf exponent `S`, 0 (uniform) to 10.
        exponent: f64,
        /// Distinct keys, 1 to [`MAX_KEYS`].
        keys: u32,
    },
}

impl Default for KeyDistribution {
    /// `uniform:10000`.
    fn default() -> Self {
        KeyDistribution::Uniform { keys: DEFAULT_KEYS }
    }
}

impl KeyDistribution {
    /// Number of distinct keys.
    pub fn keys(&self) -> u32 {
        match *self {
            KeyDistribution::Uniform { keys } | KeyDistribution::Zipf { keys, .. } => keys,
        }
    }
}

impl fmt::Display for KeyDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDistribution::Uniform { keys } => write!(f, "uniform:{keys}"),
            KeyDistribution::Zipf { exponent, keys } => write!(f, "zipf:{exponent}:{keys}"),
        }
    }
}

/// Why a `--keys` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeysError {
    /// Neither `uniform:K` nor `zipf:S:K`.
    #[error("{0:?} is not a key distribution: write uniform:K or zipf:S:K (e.g. uniform:10000, zipf:1.1:10000)")]
    Form(String),
    /// `K` is not a whole number in range.
    #[error("{0:?} is not a number of keys: use a whole number from 1 to {MAX_KEYS}")]
    Keys(String),
    /// `S` is not a number in range.
    #[error(
        "{0:?} is not a Zipf exponent: use a number from 0 to 10 (1 is typical of web traffic)"
    )]
    Exponent(String),
}

impl FromStr for KeyDistribution {
    type Err = KeysError;

    fn from_str(text: &str) -> Result<Self, KeysError> {
        let keys = |k: &str| match k.replace('_', "").parse::<u32>() {
            Ok(n) if (1..=MAX_KEYS).contains(&n) => Ok(n),
            _ => Err(KeysError::Keys(k.to_string())),
        };
        let parts: Vec<&str> = text.split(':').collect();
        match parts.as_slice() {
            ["uniform"] => Ok(KeyDistribution::default()),
            ["uniform", k] => Ok(KeyDistribution::Uniform { keys: keys(k)? }),
            ["zipf", s] | ["zipf", s, _] => {
                let exponent = match s.parse::<f64>() {
                    Ok(e) if (0.0..=10.0).contains(&e) => e,
                    _ => return Err(KeysError::Exponent(s.to_string())),
                };
                let keys = match parts.get(2) {
                    Some(k) => keys(k)?,
                    None => DEFAULT_KEYS,
                };
                Ok(KeyDistribution::Zipf { exponent, keys })
            }
            _ => Err(KeysError::Form(text.to_string())),
        }
    }
}

/// The key string of key number `i` (rank `i + 1` under Zipf): `key-{i}`.
pub fn key_name(i: u32) -> String {
    format!("key-{i}")
}

/// Draws the key hash of each simulated request: `None` for a request without the key.
#[derive(Debug)]
pub(crate) struct KeySampler {
    /// [`balance::key_hash`] of every key, by number.
    hashes: Box<[u64]>,
    /// Zipf only: `cumulative[i]` is the probability of drawing one of keys `0..=i`.
    cumulative: Option<Box<[f64]>>,
    /// Probability that a request has no key.
    missing: f64,
    rng: SharedRng,
}

impl KeySampler {
    /// A sampler of `distribution`, with a share `missing` (0 to 1) of requests
    /// without a key, drawing from `seed`.
    pub(crate) fn new(distribution: KeyDistribution, missing: f64, seed: u64) -> Self {
        let count = distribution.keys().clamp(1, MAX_KEYS);
        let mut name = String::new();
        let hashes = (0..count)
            .map(|i| {
                use std::fmt::Write as _;
                name.clear();
                let _ = write!(name, "key-{i}");
                balance::key_hash(name.as_bytes())
            })
            .collect();
        let cumulative = match distribution {
            KeyDistribution::Uniform { .. } => None,
            KeyDistribution::Zipf { exponent, .. } => {
                let weights: Vec<f64> = (1..=count).map(|r| f64::from(r).powf(-exponent)).collect();
                let total: f64 = weights.iter().sum();
                let mut sum = 0.0;
                Some(
                    weights
                        .iter()
                        .map(|w| {
                            sum += w / total;
                            sum
                        })
                        .collect(),
                )
            }
        };
        KeySampler {
            hashes,
            cumulative,
            missing: missing.clamp(0.0, 1.0),
            rng: SharedRng::new(seed),
        }
    }

    /// A uniform number in `[0, 1)` with 53 random bits.
    fn unit(&self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// The next request's key hash, or `None` when it has no key.
    pub(crate) fn next(&self) -> Option<u64> {
        if self.missing > 0.0 && self.unit() < self.missing {
            return None;
        }
        let i = match &self.cumulative {
            None => self.rng.below(self.hashes.len() as u64) as usize,
            Some(cumulative) => {
                let u = self.unit();
                // The first key whose cumulative probability exceeds u (the last one when
                // rounding leaves the total a hair below 1).
                cumulative
                    .partition_point(|&c| c <= u)
                    .min(self.hashes.len() - 1)
            }
        };
        self.hashes.get(i).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_parse_and_print_back() {
        for text in ["uniform:10000", "uniform:1", "zipf:1.1:500", "zipf:0:3"] {
            let parsed: KeyDistribution = text.parse().expect(text);
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(
            "uniform".parse::<KeyDistribution>(),
            Ok(KeyDistribution::Uniform { keys: 10_000 })
        );
        assert_eq!(
            "zipf:1".parse::<KeyDistribution>(),
            Ok(KeyDistribution::Zipf {
                exponent: 1.0,
                keys: 10_000
            })
        );
        assert_eq!(
            "uniform:1_000".parse::<KeyDistribution>(),
            Ok(KeyDistribution::Uniform { keys: 1000 })
        );
    }

    #[test]
    fn bad_distributions_say_what_to_write() {
        let error = |t: &str| t.parse::<KeyDistribution>().unwrap_err();
        assert_eq!(error("normal:5"), KeysError::Form("normal:5".into()));
        assert_eq!(error("uniform:0"), KeysError::Keys("0".into()));
        assert_eq!(error("uniform:-3"), KeysError::Keys("-3".into()));
        assert_eq!(
            error("uniform:20000000"),
            KeysError::Keys("20000000".into())
        );
        assert_eq!(error("zipf:x:10"), KeysError::Exponent("x".into()));
        assert_eq!(error("zipf:-1:10"), KeysError::Exponent("-1".into()));
        assert!(error("zipf:1:2:3")
            .to_string()
            .contains("uniform:K or zipf:S:K"));
    }

    #[test]
    fn uniform_draws_every_key_about_equally() {
        let sampler = KeySampler::new(KeyDistribution::Uniform { keys: 10 }, 0.0, 7);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..100_000 {
            *counts.entry(sampler.next().expect("a key")).or_insert(0u32) += 1;
        }
        assert_eq!(counts.len(), 10);
        // 10,000 expected each; 5 standard deviations is about 475.
        assert!(
            counts.values().all(|&c| (9_525..=10_475).contains(&c)),
            "{counts:?}"
        );
        let first = balance::key_hash(b"key-0");
        assert!(
            counts.contains_key(&first),
            "keys are the strings key-0..key-9"
        );
    }

    #[test]
    fn zipf_draws_the_top_key_by_its_probability() {
        // S = 1 over 100 keys: P(rank 1) = 1 / H(100) ≈ 0.1928.
        let sampler = KeySampler::new(
            KeyDistribution::Zipf {
                exponent: 1.0,
                keys: 100,
            },
            0.0,
            7,
        );
        let top = balance::key_hash(b"key-0");
        let second = balance::key_hash(b"key-1");
        let (mut first_hits, mut second_hits) = (0, 0);
        for _ in 0..100_000 {
            match sampler.next() {
                Some(k) if k == top => first_hits += 1,
                Some(k) if k == second => second_hits += 1,
                _ => {}
            }
        }
        assert!((18_800..=19_800).contains(&first_hits), "{first_hits}");
        assert!((9_300..=10_000).contains(&second_hits), "{second_hits}");
    }

    #[test]
    fn a_share_of_requests_has_no_key() {
        let sampler = KeySampler::new(KeyDistribution::default(), 0.25, 1);
        let missing = (0..100_000).filter(|_| sampler.next().is_none()).count();
        assert!((24_300..=25_700).contains(&missing), "{missing}");
        let none = KeySampler::new(KeyDistribution::default(), 1.0, 1);
        assert!((0..100).all(|_| none.next().is_none()));
    }
}
