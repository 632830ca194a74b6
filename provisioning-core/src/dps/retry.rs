//! Waiting rules: Retry-After as DPS sends it, exponential back-off with jitter otherwise.

use super::config::RetryPolicy;
use rand_core::RngCore;
use std::time::Duration;

/// A `Retry-After` header value in whole seconds, if usable: missing, non-numeric, zero or
/// above `max` gives `None` and the caller falls back to its default (the Azure SDKs' rule).
pub(crate) fn parse_retry_after(value: Option<&str>, max: Duration) -> Option<Duration> {
    let secs: u64 = value?.trim().parse().ok()?;
    let d = Duration::from_secs(secs);
    (secs > 0 && d <= max).then_some(d)
}

/// The back-off before retry number `failures` (1 for the first): `initial * 2^(failures-1)`
/// capped at `max_backoff`, then "equal jitter" (a random point in the upper half) so many
/// devices failing together do not come back together.
pub(crate) fn backoff(policy: &RetryPolicy, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = policy
        .initial_backoff
        .saturating_mul(1u32 << exp)
        .min(policy.max_backoff);
    let half = base / 2;
    let span = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    let jitter = if span == 0 {
        0
    } else {
        rand_core::OsRng.next_u64() % (span + 1)
    };
    half + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rules() {
        let max = Duration::from_secs(300);
        assert_eq!(
            parse_retry_after(Some("3"), max),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after(Some(" 300 "), max),
            Some(Duration::from_secs(300))
        );
        assert_eq!(parse_retry_after(Some("301"), max), None);
        assert_eq!(parse_retry_after(Some("0"), max), None);
        assert_eq!(parse_retry_after(Some("-1"), max), None);
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT"), max),
            None
        );
        assert_eq!(parse_retry_after(None, max), None);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(400),
            max_backoff: Duration::from_secs(2),
            ..RetryPolicy::default()
        };
        for _ in 0..50 {
            let b1 = backoff(&p, 1);
            assert!(
                b1 >= Duration::from_millis(200) && b1 <= Duration::from_millis(400),
                "{b1:?}"
            );
            let b3 = backoff(&p, 3);
            assert!(
                b3 >= Duration::from_millis(800) && b3 <= Duration::from_millis(1600),
                "{b3:?}"
            );
            let b9 = backoff(&p, 40);
            assert!(
                b9 >= Duration::from_secs(1) && b9 <= Duration::from_secs(2),
                "{b9:?}"
            );
        }
        let distinct: std::collections::HashSet<_> = (0..20).map(|_| backoff(&p, 5)).collect();
        assert!(distinct.len() > 1, "no jitter");
    }
}
