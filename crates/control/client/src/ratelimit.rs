//! A token bucket (client-go's `flowcontrol` token bucket limiter, passive: it never waits):
//! `burst` tokens at most, `rate` more per second, a take succeeds when a whole token is there.
//! The event recorder's spam filter and the node lifecycle controller's eviction limiter use it.

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `rate` per second (0 or less: never).
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket { rate, burst, tokens: burst, at: now }
    }

    /// The same bucket, empty.
    pub fn empty(mut self) -> TokenBucket {
        self.tokens = 0.0;
        self
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Take one token if there is one at `now`.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.rate > 0.0 {
            let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.burst);
        }
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_one_per_period() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.5, 3.0, t0);
        assert_eq!((0..5).filter(|_| b.take(t0)).count(), 3);
        assert!(!b.take(t0 + Duration::from_millis(1900)));
        assert!(b.take(t0 + Duration::from_secs(2)));
        // Never more than the burst, however long it rests.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..5).filter(|_| b.take(later)).count(), 3);
        let mut never = TokenBucket::new(0.0, 1.0, t0).empty();
        assert!(!never.take(later));
    }
}
