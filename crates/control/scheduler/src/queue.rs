//! The scheduling queue (upstream's `PriorityQueue`): pods waiting to be tried are *active*
//! (highest priority first, then first come), pods that failed wait out a *backoff* (1 s,
//! doubling per attempt to 10 s), and pods no node could take are *unschedulable* until a
//! cluster event that could make them fit moves them (node added or changed, a pod deleted, a
//! pod placed for affinity and spreading), or until they have waited 5 minutes. A move that
//! happens while a pod is being scheduled sends that pod to backoff rather than to
//! unschedulable, so no event is missed. Time is passed in, so it is testable.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::info::PodInfo;

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Active,
    Backoff,
    Unschedulable,
    /// Popped, being scheduled (or binding).
    InFlight,
}

#[derive(Debug)]
struct Entry {
    info: Arc<PodInfo>,
    attempts: u32,
    place: Where,
    /// Position in FIFO order among equal priorities.
    seq: u64,
    /// Incremented on every move, so stale heap entries are skipped.
    gen: u64,
    since: Instant,
    backoff_until: Instant,
    /// The move counter when the pod was popped.
    popped_cycle: u64,
    /// Plugins that refused it last time.
    rejected_by: Vec<&'static str>,
}

#[derive(PartialEq, Eq)]
struct ActiveKey {
    priority: i32,
    seq: u64,
    gen: u64,
    uid: String,
}

impl Ord for ActiveKey {
    fn cmp(&self, o: &Self) -> Ordering {
        self.priority.cmp(&o.priority).then_with(|| o.seq.cmp(&self.seq))
    }
}
impl PartialOrd for ActiveKey {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// What woke unschedulable pods up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterEvent {
    NodeAdded,
    NodeChanged,
    PodDeleted,
    /// A pod was placed: only pods refused by inter-pod affinity or topology spreading can
    /// gain from it.
    PodPlaced,
    /// A PersistentVolumeClaim or StorageClass came or changed: only pods waiting for their
    /// claims can gain from it.
    ClaimChanged,
}

#[derive(Default)]
pub struct Queue {
    entries: HashMap<String, Entry>,
    active: BinaryHeap<ActiveKey>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    seq: u64,
    gen: u64,
    move_cycle: u64,
    /// Uids of the unschedulable pods (so events need not scan the whole queue).
    unsched: std::collections::HashSet<String>,
}

fn backoff_for(attempts: u32) -> Duration {
    let mut d = INITIAL_BACKOFF;
    for _ in 1..attempts {
        d *= 2;
        if d >= MAX_BACKOFF {
            return MAX_BACKOFF;
        }
    }
    d
}

impl Queue {
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Counts of (active, backoff, unschedulable) pods.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for e in self.entries.values() {
            match e.place {
                Where::Active => c.0 += 1,
                Where::Backoff => c.1 += 1,
                Where::Unschedulable => c.2 += 1,
                Where::InFlight => {}
            }
        }
        c
    }

    fn push_active(&mut self, uid: &str) {
        self.gen += 1;
        let gen = self.gen;
        self.unsched.remove(uid);
        if let Some(e) = self.entries.get_mut(uid) {
            e.place = Where::Active;
            e.gen = gen;
            self.active.push(ActiveKey { priority: e.info.priority, seq: e.seq, gen, uid: uid.to_string() });
        }
    }

    fn push_backoff(&mut self, uid: &str) {
        self.gen += 1;
        let gen = self.gen;
        self.unsched.remove(uid);
        if let Some(e) = self.entries.get_mut(uid) {
            e.place = Where::Backoff;
            e.gen = gen;
            self.backoff.push(Reverse((e.backoff_until, gen, uid.to_string())));
        }
    }

    /// A new pending pod, or a newer version of one already queued (an unschedulable pod
    /// whose spec or labels changed is tried again).
    pub fn add(&mut self, info: Arc<PodInfo>, now: Instant) {
        let uid = info.uid.clone();
        match self.entries.get_mut(&uid) {
            Some(e) => {
                let changed = e.info.pod.spec != info.pod.spec || e.info.labels != info.labels;
                e.info = info;
                if e.place == Where::Unschedulable && changed {
                    if e.backoff_until > now {
                        self.push_backoff(&uid);
                    } else {
                        self.push_active(&uid);
                    }
                } else if e.place == Where::Active {
                    // Its priority may have changed: re-key.
                    self.push_active(&uid);
                }
            }
            None => {
                self.seq += 1;
                self.entries.insert(
                    uid.clone(),
                    Entry { info, attempts: 0, place: Where::Active, seq: self.seq, gen: 0, since: now, backoff_until: now, popped_cycle: 0, rejected_by: Vec::new() },
                );
                self.push_active(&uid);
            }
        }
    }

    /// Forget a pod (deleted, bound, or no longer ours).
    pub fn remove(&mut self, uid: &str) {
        self.entries.remove(uid);
        self.unsched.remove(uid);
    }

    /// Every queued uid (for reconciling after a relist).
    pub fn uids(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.entries.contains_key(uid)
    }

    /// Move pods whose backoff has ended to active.
    pub fn flush_backoff(&mut self, now: Instant) {
        while let Some(Reverse((until, gen, uid))) = self.backoff.peek().cloned() {
            if until > now {
                break;
            }
            self.backoff.pop();
            if self.entries.get(&uid).is_some_and(|e| e.gen == gen && e.place == Where::Backoff) {
                self.push_active(&uid);
            }
        }
    }

    /// Pods unschedulable for longer than [`MAX_UNSCHEDULABLE`] are tried again.
    pub fn flush_unschedulable(&mut self, now: Instant) {
        let old: Vec<String> = self.unsched.iter().filter(|u| self.entries.get(*u).is_some_and(|e| now.duration_since(e.since) >= MAX_UNSCHEDULABLE)).cloned().collect();
        for uid in old {
            self.requeue(&uid, now);
        }
    }

    fn requeue(&mut self, uid: &str, now: Instant) {
        let Some(e) = self.entries.get(uid) else { return };
        if e.backoff_until > now {
            self.push_backoff(uid);
        } else {
            self.push_active(uid);
        }
    }

    /// A cluster event: unschedulable pods it could help are moved to active (or backoff).
    pub fn move_on(&mut self, ev: ClusterEvent, now: Instant) {
        self.move_cycle += 1;
        let moved: Vec<String> = self
            .unsched
            .iter()
            .filter(|u| {
                self.entries.get(*u).is_some_and(|e| match ev {
                    ClusterEvent::PodPlaced => e.rejected_by.iter().any(|p| *p == "InterPodAffinity" || *p == "PodTopologySpread"),
                    ClusterEvent::ClaimChanged => e.rejected_by.contains(&crate::plugins::VOLUME_BINDING),
                    _ => true,
                })
            })
            .cloned()
            .collect();
        for uid in moved {
            self.requeue(&uid, now);
        }
    }

    /// The next pod to schedule (highest priority, then oldest), marked in flight.
    pub fn pop(&mut self, now: Instant) -> Option<Arc<PodInfo>> {
        self.flush_backoff(now);
        while let Some(k) = self.active.pop() {
            let Some(e) = self.entries.get_mut(&k.uid) else { continue };
            if e.gen != k.gen || e.place != Where::Active {
                continue;
            }
            e.place = Where::InFlight;
            e.attempts += 1;
            e.popped_cycle = self.move_cycle;
            return Some(e.info.clone());
        }
        None
    }

    /// When the next backed-off pod becomes active.
    pub fn next_backoff(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((t, _, _))| *t)
    }

    /// The pod was placed (binding in flight): it leaves the queue.
    pub fn done(&mut self, uid: &str) {
        self.remove(uid);
    }

    /// No node could take the pod: unschedulable until an event moves it (backoff if an event
    /// came while it was being scheduled).
    pub fn unschedulable(&mut self, uid: &str, rejected_by: Vec<&'static str>, now: Instant) {
        let cycle = self.move_cycle;
        let Some(e) = self.entries.get_mut(uid) else { return };
        if e.place != Where::InFlight {
            return;
        }
        e.backoff_until = now + backoff_for(e.attempts);
        e.rejected_by = rejected_by;
        e.since = now;
        if e.popped_cycle < cycle {
            self.push_backoff(uid);
        } else {
            e.place = Where::Unschedulable;
            self.unsched.insert(uid.to_string());
        }
    }

    /// Scheduling or binding failed for another reason (an API error): try again after the
    /// backoff. A pod no longer in the queue (its binding failed after it left) is re-added.
    pub fn retry(&mut self, info: Arc<PodInfo>, now: Instant) {
        let uid = info.uid.clone();
        if !self.entries.contains_key(&uid) {
            self.seq += 1;
            self.entries.insert(
                uid.clone(),
                Entry { info, attempts: 1, place: Where::InFlight, seq: self.seq, gen: 0, since: now, backoff_until: now, popped_cycle: 0, rejected_by: Vec::new() },
            );
        }
        if let Some(e) = self.entries.get_mut(&uid) {
            e.backoff_until = now + backoff_for(e.attempts);
            e.since = now;
        }
        self.push_backoff(&uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Pod, PodSpec};

    fn pod(name: &str, priority: i32) -> Arc<PodInfo> {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(name.into());
        p.metadata.namespace = Some("default".into());
        p.spec = Some(PodSpec { priority: Some(priority), ..Default::default() });
        Arc::new(PodInfo::new(Arc::new(p)))
    }

    #[test]
    fn priority_then_fifo() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.add(pod("a", 0), now);
        q.add(pod("b", 10), now);
        q.add(pod("c", 0), now);
        let order: Vec<String> = std::iter::from_fn(|| q.pop(now)).map(|p| p.name.clone()).collect();
        assert_eq!(order, ["b", "a", "c"]);
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        assert_eq!(backoff_for(1), Duration::from_secs(1));
        assert_eq!(backoff_for(2), Duration::from_secs(2));
        assert_eq!(backoff_for(4), Duration::from_secs(8));
        assert_eq!(backoff_for(5), Duration::from_secs(10));
        assert_eq!(backoff_for(50), Duration::from_secs(10));
    }

    #[test]
    fn unschedulable_until_an_event_then_backoff_then_active() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        q.add(pod("a", 0), t0);
        let p = q.pop(t0).expect("a");
        q.unschedulable(&p.uid, vec!["NodeResourcesFit"], t0);
        assert!(q.pop(t0 + Duration::from_secs(60)).is_none(), "unschedulable pods wait for an event");
        // A pod placed elsewhere cannot help a resource failure.
        q.move_on(ClusterEvent::PodPlaced, t0);
        assert!(q.pop(t0 + Duration::from_secs(60)).is_none());
        // A node added can; the pod still serves its 1 s backoff.
        q.move_on(ClusterEvent::NodeAdded, t0 + Duration::from_millis(100));
        assert!(q.pop(t0 + Duration::from_millis(200)).is_none());
        assert_eq!(q.pop(t0 + Duration::from_millis(1100)).map(|p| p.name.clone()).as_deref(), Some("a"));
        // Flushed after five minutes without events.
        q.unschedulable("a", vec![], t0 + Duration::from_secs(2));
        q.flush_unschedulable(t0 + Duration::from_secs(200));
        assert!(q.pop(t0 + Duration::from_secs(200)).is_none());
        q.flush_unschedulable(t0 + Duration::from_secs(303));
        assert!(q.pop(t0 + Duration::from_secs(303)).is_some());
    }

    #[test]
    fn an_event_during_scheduling_is_not_lost() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        q.add(pod("a", 0), t0);
        let p = q.pop(t0).expect("a");
        q.move_on(ClusterEvent::NodeAdded, t0);
        q.unschedulable(&p.uid, vec!["NodeResourcesFit"], t0);
        assert!(q.pop(t0 + Duration::from_secs(2)).is_some(), "went to backoff, not unschedulable");
    }
}
