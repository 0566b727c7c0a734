//! Token buckets: one per method, used by each end on what it receives ([`RateLimiter`]),
//! and the worker's limit on connections passed to the controller ([`TokenBucket`]).

use std::time::Instant;

pub use bulkhead_wire::MethodKind;

/// Default allowed frames per second, per method.
pub const DEFAULT_RATE_PER_SEC: u32 = 200;

const KINDS: usize = 10;

/// Tokens refilled continuously at `rate` a second, at most `rate` held (the burst).
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `per_sec` tokens refilled at `per_sec` a second (minimum 1).
    pub fn new(per_sec: u32, now: Instant) -> TokenBucket {
        let rate = f64::from(per_sec.max(1));
        TokenBucket {
            rate,
            tokens: rate,
            last: now,
        }
    }

    /// Takes a token at time `now` if there is one; `false` when the caller is over its rate.
    /// A `now` earlier than the last call refills nothing.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Token bucket per [`MethodKind`]: `rate` tokens per second, burst `rate`.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    buckets: [TokenBucket; KINDS],
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new(DEFAULT_RATE_PER_SEC)
    }
}

impl RateLimiter {
    /// A limiter allowing `per_sec` frames per second of each kind (minimum 1).
    pub fn new(per_sec: u32) -> Self {
        RateLimiter {
            buckets: [TokenBucket::new(per_sec, Instant::now()); KINDS],
        }
    }

    /// Sets the rate (and burst) of one kind, e.g. a higher budget for output frames.
    pub fn set_rate(&mut self, kind: MethodKind, per_sec: u32) {
        self.buckets[kind as usize] = TokenBucket::new(per_sec, Instant::now());
    }

    /// Takes one token for `kind` at time `now`; `false` when the caller is over its rate.
    pub fn allow_at(&mut self, kind: MethodKind, now: Instant) -> bool {
        self.buckets[kind as usize].take(now)
    }

    /// [`Self::allow_at`] with the current time.
    pub fn allow(&mut self, kind: MethodKind) -> bool {
        self.allow_at(kind, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill_per_method() {
        let mut rl = RateLimiter::new(200);
        let t0 = Instant::now();
        for _ in 0..200 {
            assert!(rl.allow_at(MethodKind::Exec, t0));
        }
        assert!(!rl.allow_at(MethodKind::Exec, t0));
        // Another method has its own bucket.
        assert!(rl.allow_at(MethodKind::Read, t0));
        // 50 ms later, 10 more tokens.
        let t1 = t0 + Duration::from_millis(50);
        let n = (0..100)
            .filter(|_| rl.allow_at(MethodKind::Exec, t1))
            .count();
        assert_eq!(n, 10);
    }

    #[test]
    fn token_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(64, t0);
        assert_eq!((0..100).filter(|_| b.take(t0)).count(), 64);
        assert!(!b.take(t0));
        // A quarter second later: 16 more.
        let t1 = t0 + Duration::from_millis(250);
        assert_eq!((0..100).filter(|_| b.take(t1)).count(), 16);
        // Never more than the burst, however long it waited.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..100).filter(|_| b.take(t2)).count(), 64);
        // A clock read out of order refills nothing, then counts from the latest time seen.
        assert!(!b.take(t1));
        assert!(!b.take(t2));
        assert!(b.take(t2 + Duration::from_millis(16)));
    }

    #[test]
    fn a_zero_rate_is_one_a_second() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, t0);
        assert!(b.take(t0));
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_secs(1)));
    }
}
