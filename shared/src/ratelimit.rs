//! Per-method token buckets, used by each end on what it receives.

use std::time::Instant;

pub use bulkhead_wire::MethodKind;

/// Default allowed frames per second, per method.
pub const DEFAULT_RATE_PER_SEC: u32 = 200;

const KINDS: usize = 10;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Option<Instant>,
}

/// Token bucket per [`MethodKind`]: `rate` tokens per second, burst `rate`.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    buckets: [Bucket; KINDS],
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new(DEFAULT_RATE_PER_SEC)
    }
}

impl RateLimiter {
    /// A limiter allowing `per_sec` frames per second of each kind (minimum 1).
    pub fn new(per_sec: u32) -> Self {
        let rate = f64::from(per_sec.max(1));
        RateLimiter {
            buckets: [Bucket {
                rate,
                tokens: rate,
                last: None,
            }; KINDS],
        }
    }

    /// Sets the rate (and burst) of one kind, e.g. a higher budget for output frames.
    pub fn set_rate(&mut self, kind: MethodKind, per_sec: u32) {
        let b = &mut self.buckets[kind as usize];
        b.rate = f64::from(per_sec.max(1));
        b.tokens = b.rate;
    }

    /// Takes one token for `kind` at time `now`; `false` when the caller is over its rate.
    pub fn allow_at(&mut self, kind: MethodKind, now: Instant) -> bool {
        let b = &mut self.buckets[kind as usize];
        if let Some(last) = b.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            b.tokens = (b.tokens + dt * b.rate).min(b.rate);
        }
        b.last = Some(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
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
}
