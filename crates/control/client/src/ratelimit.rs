//! A token bucket (client-go's `flowcontrol` token bucket limiter, passive: it never waits):
//! `burst` tokens at most, `rate` more per second, a take succeeds when a whole token is there.
//! The event recorder's spam filter and the node lifecycle controller's eviction limiter use it;
//! [`TokenBucket::reserve`] is the waiting form (client-go's client rate limiter), which paces
//! a rate-limited recorder's writes.

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
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Take one token at `now`, borrowing it from the refills to come if there is none, and say
    /// how long the caller must wait before it acts (zero when a token was there). Callers are
    /// served in the order they reserve (golang.org/x/time/rate's `Reserve`, which client-go's
    /// client-side limiter waits on). A bucket that never refills (`rate` 0 or less) answers
    /// `None` once it is empty: no wait would ever do.
    pub fn reserve(&mut self, now: Instant) -> Option<std::time::Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Some(std::time::Duration::ZERO);
        }
        if self.rate <= 0.0 {
            return None;
        }
        // In debt now: the token is ours once the refills have paid it back.
        self.tokens -= 1.0;
        // A rate so small that the wait overflows a Duration waits for ever.
        Some(std::time::Duration::try_from_secs_f64(-self.tokens / self.rate).unwrap_or(std::time::Duration::MAX))
    }

    fn refill(&mut self, now: Instant) {
        if self.rate > 0.0 {
            let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.burst);
        }
        self.at = now;
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

    #[test]
    fn reservations_wait_their_turn() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 2.0, t0);
        // The burst goes at once, then one every 100 ms, in the order reserved.
        assert_eq!(b.reserve(t0), Some(Duration::ZERO));
        assert_eq!(b.reserve(t0), Some(Duration::ZERO));
        let ms = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1000.0).round() as u64);
        let waits: Vec<Option<u64>> = (0..3).map(|_| ms(b.reserve(t0))).collect();
        assert_eq!(waits, vec![Some(100), Some(200), Some(300)]);
        // Half a period later the queue has moved on by half a token.
        assert_eq!(ms(b.reserve(t0 + Duration::from_millis(50))), Some(350));
        // Once the debt is paid and the bucket has refilled, the burst is back.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.reserve(later), Some(Duration::ZERO));
        assert_eq!(b.reserve(later), Some(Duration::ZERO));
        assert!(b.reserve(later).is_some_and(|d| d > Duration::ZERO));
        let mut never = TokenBucket::new(0.0, 1.0, t0);
        assert_eq!(never.reserve(t0), Some(Duration::ZERO));
        assert_eq!(never.reserve(later), None);
    }
}
