//! Retry delays: exponential growth from a base, capped, with jitter so that retries of
//! many items spread out instead of arriving together.

use std::time::Duration;

/// The delay before retry number `attempt` (1 for the first retry). `jitter` in `[0, 1]`
/// picks a point in the upper half of the exponential delay ("equal jitter").
pub fn retry_delay(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(32);
    let exponential = base.saturating_mul(1u32 << doublings.min(31)).min(max);
    let jitter = jitter.clamp(0.0, 1.0);
    exponential.mul_f64(0.5 + jitter / 2.0)
}

/// How long the reconciler waits before asking the provider again about an open attempt
/// it has already asked about `checks` times: `first` at first, then 5, 30 and 120 times
/// that, then 360 times that for good (with `first` = 60 s: 1 min, 5 min, 30 min, 2 h,
/// then every six hours).
pub fn recheck_delay(checks: i64, first: Duration) -> Duration {
    const MULTIPLES: [u32; 4] = [1, 5, 30, 120];
    let multiple = usize::try_from(checks)
        .ok()
        .and_then(|i| MULTIPLES.get(i).copied())
        .unwrap_or(360);
    first.saturating_mul(multiple)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BASE: Duration = Duration::from_secs(30);
    const MAX: Duration = Duration::from_secs(3600);

    #[test]
    fn grows_exponentially_until_the_cap() {
        let full = |attempt| retry_delay(attempt, BASE, MAX, 1.0);
        assert_eq!(full(1), Duration::from_secs(30));
        assert_eq!(full(2), Duration::from_secs(60));
        assert_eq!(full(3), Duration::from_secs(120));
        assert_eq!(full(8), Duration::from_secs(3600));
        assert_eq!(full(1000), Duration::from_secs(3600));
        assert_eq!(retry_delay(1, BASE, MAX, 0.0), Duration::from_secs(15));
    }

    #[test]
    fn rechecks_slow_down_to_every_six_hours() {
        let minute = Duration::from_secs(60);
        assert_eq!(recheck_delay(0, minute), Duration::from_secs(60));
        assert_eq!(recheck_delay(1, minute), Duration::from_secs(300));
        assert_eq!(recheck_delay(2, minute), Duration::from_secs(1800));
        assert_eq!(recheck_delay(3, minute), Duration::from_secs(7200));
        assert_eq!(recheck_delay(4, minute), Duration::from_secs(21_600));
        assert_eq!(recheck_delay(1_000, minute), Duration::from_secs(21_600));
    }

    #[test]
    fn rechecks_scale_with_the_first_delay() {
        let second = Duration::from_secs(1);
        assert_eq!(recheck_delay(0, second), Duration::from_secs(1));
        assert_eq!(recheck_delay(2, second), Duration::from_secs(30));
        assert_eq!(recheck_delay(9, second), Duration::from_secs(360));
        assert_eq!(recheck_delay(-1, second), Duration::from_secs(360));
    }

    proptest! {
        #[test]
        fn stays_between_half_and_all_of_the_capped_delay(attempt in 0u32..200, jitter in 0.0f64..=1.0) {
            let delay = retry_delay(attempt, BASE, MAX, jitter);
            prop_assert!(delay >= BASE / 2);
            prop_assert!(delay <= MAX);
        }
    }
}
