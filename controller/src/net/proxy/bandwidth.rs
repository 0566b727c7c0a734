//! Bandwidth: the token-bucket rate limiter the relay waits on.

use super::*;

/// A byte-rate limiter shared by a workspace's connections (one per direction): virtual
/// scheduling with 100 ms of burst.
#[derive(Debug)]
pub(super) struct RateLimiter {
    pub(super) rate: u64,
    pub(super) next: Mutex<Instant>,
}

impl RateLimiter {
    pub(super) fn new(rate: u64) -> Self {
        RateLimiter {
            rate: rate.max(1),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Largest chunk to read at once (≈ 50 ms of the rate).
    pub(super) fn chunk(&self) -> usize {
        ((self.rate / 20) as usize).clamp(512, RELAY_BUF)
    }

    /// Accounts `n` bytes; returns how long to wait before sending them.
    pub(super) fn take(&self, n: usize) -> Duration {
        let cost = Duration::from_secs_f64(n as f64 / self.rate as f64);
        let now = Instant::now();
        let mut next = match self.next.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let floor = now.checked_sub(Duration::from_millis(100)).unwrap_or(now);
        let start = (*next).max(floor);
        *next = start + cost;
        next.saturating_duration_since(now)
    }
}
