//! Skew: how far a pool's split departs from its intended one, beyond chance.
//!
//! DESIGN.md ("Words") defines the **skew** of a pool over a window of `N` requests as
//! the largest `|observed − intended| / intended` over its backends, counting a backend
//! only when
//!
//! 1. its expected count `N · p` (with `p` its intended share) is at least
//!    [`MIN_EXPECTED`] = 30 — below that, a relative error says nothing; and
//! 2. its count differs from `N · p` by more than [`SIGMAS`] = 4 binomial standard
//!    deviations `√(N · p · (1 − p))` — what an honest random split does by chance
//!    stays inside that band (a 4σ excursion happens about once in 16,000 backends), so
//!    random noise never raises the skew, let alone an alarm.
//!
//! When no backend qualifies the skew is 0. A backend whose intended share is 0 has no
//! relative error to speak of and is not counted (a backend that should get nothing but
//! does is a load-ratio question).
//!
//! The same rule applies to a simulation (observed = predicted counts) and to live
//! windows, so a prediction and the live monitor speak of the same number. It is only
//! *alarmed* for weight-driven algorithms ([`crate::balance::Algorithm::is_weight_driven`]):
//! least connections and least request are meant to depart from weights.

/// Smallest expected count for a backend to take part in the skew.
pub const MIN_EXPECTED: f64 = 30.0;

/// A difference must exceed this many binomial standard deviations to count.
pub const SIGMAS: f64 = 4.0;

/// A pool's skew and the backend that sets it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Skew {
    /// The largest qualifying `|observed − intended| / intended`; 0 when none qualifies.
    pub value: f64,
    /// Position (in the slices given to [`skew`]) of the backend with that error.
    pub backend: Option<usize>,
}

/// The skew of a pool whose backends got `counts` requests where they should have had
/// the shares `intended` (same order; see the module doc for the rule).
pub fn skew(counts: &[u64], intended: &[f64]) -> Skew {
    let total: u64 = counts.iter().sum();
    let n = total as f64;
    let mut worst = Skew::default();
    for (position, (&count, &p)) in counts.iter().zip(intended).enumerate() {
        if p.is_nan() || p <= 0.0 {
            continue;
        }
        let expected = n * p;
        if expected < MIN_EXPECTED {
            continue;
        }
        let difference = (count as f64 - expected).abs();
        let sigma = (n * p * (1.0 - p)).max(0.0).sqrt();
        if difference <= SIGMAS * sigma {
            continue;
        }
        let relative = difference / expected;
        if relative > worst.value {
            worst = Skew {
                value: relative,
                backend: Some(position),
            };
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exact_split_has_no_skew() {
        assert_eq!(
            skew(&[100, 200, 300], &[1.0 / 6.0, 2.0 / 6.0, 0.5]).value,
            0.0
        );
    }

    #[test]
    fn differences_within_four_sigma_do_not_count() {
        // N = 10,000, p = 0.5: σ = 50; 190 off is 3.8σ.
        assert_eq!(skew(&[5_190, 4_810], &[0.5, 0.5]), Skew::default());
        // 210 off is 4.2σ: counted, relative 210 / 5,000.
        let s = skew(&[5_210, 4_790], &[0.5, 0.5]);
        assert!((s.value - 0.042).abs() < 1e-9, "{s:?}");
        assert_eq!(s.backend, Some(0));
    }

    #[test]
    fn backends_expecting_fewer_than_thirty_requests_do_not_count() {
        // 29 expected, 0 received: a relative error of 1, but too few to judge; the
        // skew is the other backend's 29 extra requests (3%).
        let s = skew(&[0, 1000], &[0.029, 0.971]);
        assert_eq!(s.backend, Some(1));
        assert!(s.value < 0.031, "{s:?}");
        // 30 expected, 0 received: 5.5σ, skew 1.
        assert_eq!(skew(&[0, 1000], &[0.03, 0.97]).value, 1.0);
    }

    #[test]
    fn a_ten_to_one_miss_is_skew() {
        // Intended 50/50, observed 10:1.
        let s = skew(&[10_000, 1_000], &[0.5, 0.5]);
        assert!((s.value - 4_500.0 / 5_500.0).abs() < 1e-9, "{s:?}");
        assert!(s.value > 0.25);
    }

    #[test]
    fn zero_intended_shares_and_empty_windows_are_ignored() {
        assert_eq!(skew(&[5, 0], &[0.0, 1.0]), Skew::default());
        assert_eq!(skew(&[0, 0], &[0.5, 0.5]), Skew::default());
        assert_eq!(skew(&[], &[]), Skew::default());
    }
}
