//! Controller expectations (upstream's `UIDTrackingControllerExpectations`, by name): the pods
//! a controller has created or deleted and not yet seen so in its watch cache. While any are
//! outstanding the controller does not count pods again, so a slow watch never makes it create
//! or delete twice. An expectation older than [`TTL`] is dropped (the event was lost).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const TTL: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Pending {
    creates: HashMap<String, Instant>,
    deletes: HashMap<String, Instant>,
}

/// Per owner key (`namespace/name`), the names of pods created and deleted but not yet observed.
#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    pub fn expect_create(&self, owner: &str, pod: &str) {
        if let Ok(mut m) = self.inner.lock() {
            m.entry(owner.to_string()).or_default().creates.insert(pod.to_string(), Instant::now());
        }
    }

    pub fn expect_delete(&self, owner: &str, pod: &str) {
        if let Ok(mut m) = self.inner.lock() {
            m.entry(owner.to_string()).or_default().deletes.insert(pod.to_string(), Instant::now());
        }
    }

    /// Are all expectations of `owner` met, given which pods the cache holds now? Met ones are
    /// forgotten.
    pub fn satisfied(&self, owner: &str, in_cache: impl Fn(&str) -> bool) -> bool {
        let Ok(mut m) = self.inner.lock() else { return true };
        let Some(p) = m.get_mut(owner) else { return true };
        p.creates.retain(|name, at| !in_cache(name) && at.elapsed() < TTL);
        p.deletes.retain(|name, at| in_cache(name) && at.elapsed() < TTL);
        let done = p.creates.is_empty() && p.deletes.is_empty();
        if done {
            m.remove(owner);
        }
        done
    }

    /// A create or delete that failed: it will never be observed.
    pub fn failed(&self, owner: &str, pod: &str) {
        if let Ok(mut m) = self.inner.lock() {
            if let Some(p) = m.get_mut(owner) {
                p.creates.remove(pod);
                p.deletes.remove(pod);
            }
        }
    }

    pub fn forget(&self, owner: &str) {
        if let Ok(mut m) = self.inner.lock() {
            m.remove(owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_creates_and_deletes_to_be_observed() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/a", |_| false));
        e.expect_create("ns/a", "a-1");
        e.expect_create("ns/a", "a-2");
        assert!(!e.satisfied("ns/a", |_| false), "nothing observed yet");
        assert!(!e.satisfied("ns/a", |n| n == "a-1"), "one of two observed");
        assert!(e.satisfied("ns/a", |n| n == "a-2"), "a-1 was seen before, a-2 now");
        e.expect_delete("ns/a", "a-1");
        assert!(!e.satisfied("ns/a", |_| true), "deleted pod still in the cache");
        assert!(e.satisfied("ns/a", |_| false));
        assert!(e.satisfied("ns/b", |_| false), "others unaffected");
    }
}
