//! Retry policy: exponential backoff with jitter that honours `Retry-After`, as a pure
//! function (the caller sleeps; tests do not).

use std::time::Duration;

use super::FailoverReason;

/// How often and how long to retry one model with one key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Most attempts in all (the first call included).
    pub max_attempts: u32,
    /// Backoff before the first retry; doubled for each later one.
    pub base_delay: Duration,
    /// Largest computed backoff.
    pub max_delay: Duration,
    /// Longest `Retry-After` worth waiting for: a provider that asks for more is given up on
    /// (the caller puts it in cooldown for that long and falls back).
    pub max_retry_after: Duration,
    /// Relative jitter, `0.0..=1.0`: the backoff is scaled by a factor drawn in
    /// `[1 - jitter, 1 + jitter)`.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1000),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
            jitter: 0.2,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Sleep this long, then retry the same model and key.
    Wait(Duration),
    /// Do not retry this model now (not retryable, attempts used up, or the provider asked
    /// for a longer wait than [`RetryPolicy::max_retry_after`]): rotate the key or fall back.
    /// Carries the wait the provider asked for, if any, for the cooldown.
    GiveUp(Option<Duration>),
}

impl RetryPolicy {
    /// The backoff before retry number `attempt` (1 for the first retry), without
    /// `Retry-After`: `base_delay * 2^(attempt-1)`, capped at `max_delay`, scaled by the
    /// jitter factor for `sample` (a uniform draw in `[0, 1)`, e.g. [`jitter_sample`]).
    pub fn backoff(&self, attempt: u32, sample: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let raw = self.base_delay.as_secs_f64() * f64::from(1u32 << exp);
        let capped = raw.min(self.max_delay.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter + 2.0 * jitter * sample.clamp(0.0, 1.0);
        Duration::from_secs_f64((capped * factor).min(self.max_delay.as_secs_f64()))
    }

    /// Decides after failed attempt number `attempt` (1 for the first call) that failed with
    /// `reason`, the provider having asked to wait `retry_after`.
    ///
    /// The wait is the larger of the backoff and `Retry-After`, so a provider is never asked
    /// again sooner than it said.
    pub fn decide(
        &self,
        attempt: u32,
        reason: FailoverReason,
        retry_after: Option<Duration>,
        sample: f64,
    ) -> RetryDecision {
        if !reason.is_retryable() || attempt >= self.max_attempts {
            return RetryDecision::GiveUp(retry_after);
        }
        if let Some(ra) = retry_after {
            if ra > self.max_retry_after {
                return RetryDecision::GiveUp(Some(ra));
            }
        }
        let backoff = self.backoff(attempt, sample);
        RetryDecision::Wait(retry_after.map_or(backoff, |ra| ra.max(backoff)))
    }
}

/// A uniform draw in `[0, 1)` from the OS's random source (0.5 if it fails).
pub fn jitter_sample() -> f64 {
    let mut b = [0u8; 8];
    match getrandom::getrandom(&mut b) {
        Ok(()) => (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailoverReason as R;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(30),
            jitter: 0.25,
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = policy();
        // A sample of 0.5 is the unjittered value.
        let d: Vec<u64> = (1..=6)
            .map(|a| p.backoff(a, 0.5).as_millis() as u64)
            .collect();
        assert_eq!(d, vec![1000, 2000, 4000, 8000, 10000, 10000]);
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let p = policy();
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(750));
        assert_eq!(p.backoff(1, 0.999_999).as_millis(), 1249);
        // Never above max_delay, even with jitter.
        assert_eq!(p.backoff(10, 0.999), Duration::from_secs(10));
        for _ in 0..100 {
            let s = jitter_sample();
            assert!((0.0..1.0).contains(&s));
            let d = p.backoff(2, s);
            assert!(d >= Duration::from_millis(1500) && d < Duration::from_millis(2500));
        }
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let p = policy();
        // Longer than the backoff: wait what the provider asked.
        assert_eq!(
            p.decide(1, R::RateLimit, Some(Duration::from_secs(7)), 0.5),
            RetryDecision::Wait(Duration::from_secs(7))
        );
        // Shorter than the backoff: the backoff wins.
        assert_eq!(
            p.decide(3, R::Overloaded, Some(Duration::from_millis(100)), 0.5),
            RetryDecision::Wait(Duration::from_secs(4))
        );
        // Longer than the cap: give up and report the wait for the cooldown.
        assert_eq!(
            p.decide(1, R::RateLimit, Some(Duration::from_secs(600)), 0.5),
            RetryDecision::GiveUp(Some(Duration::from_secs(600)))
        );
    }

    #[test]
    fn only_retryable_reasons_within_the_budget() {
        let p = policy();
        assert_eq!(
            p.decide(1, R::Billing, None, 0.5),
            RetryDecision::GiveUp(None)
        );
        assert_eq!(
            p.decide(1, R::ContextOverflow, None, 0.5),
            RetryDecision::GiveUp(None)
        );
        assert_eq!(p.decide(1, R::Auth, None, 0.5), RetryDecision::GiveUp(None));
        assert_eq!(
            p.decide(1, R::Timeout, None, 0.5),
            RetryDecision::Wait(Duration::from_secs(1))
        );
        assert_eq!(
            p.decide(5, R::Timeout, None, 0.5),
            RetryDecision::GiveUp(None)
        );
    }
}
