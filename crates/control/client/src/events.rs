//! Events (core/v1) about any object, written the way client-go's event recorders write them:
//! `source.component` and `reportingComponent` name the writer, the involved object's
//! reference comes from the object itself, and a repeat of the same event about the same
//! object bumps `count` and `lastTimestamp` of the first Event instead of writing another.
//! Publishing never blocks the caller: events queue (bounded; a full queue drops, as
//! client-go's broadcaster does) to a few writer tasks on the current tokio runtime, and all
//! writes of one Event go through the same writer, in order.
//!
//! Two recorders, as upstream has two:
//! - [`Recorder::new`] only counts repeats (kube-scheduler's `events.k8s.io` recorder, which
//!   folds identical events into a series): the scheduler's. Its writes may be paced by a
//!   [`WriteRate`], as kube-scheduler's are by its event client's rate limiter (`clientConnection`
//!   qps 50, burst 100 by default): a burst of thousands of bindings then costs the API server
//!   100 Events at once and 50 a second after that, the rest waiting in the queue (4,096 per
//!   writer; beyond that they are dropped and the drops logged), instead of one more create per
//!   pod competing with the bindings.
//! - [`Recorder::with_correlator`] is client-go's `tools/record` recorder with its
//!   EventCorrelator, which kube-controller-manager and the kubelet use: after ten events
//!   about one object with the same reason but different messages within ten minutes, the
//!   next ones are written as one Event `(combined from similar events): MESSAGE` whose count
//!   grows; and a spam filter (a token bucket per writer, object and type: 25 at once, then
//!   one per five minutes) drops the rest. So a ReplicaSet that creates 10,000 pods writes 25
//!   Events about itself, not 10,000: nine `Created pod: NAME`, then one combined Event patched
//!   with each creation until the bucket is empty.
//!
//! Shared by the scheduler, the controllers and the node agent.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

use crate::ratelimit::TokenBucket;

/// Writes waiting per writer task.
const QUEUE: usize = 1024;
/// Writes waiting per writer task of a recorder whose writes are paced (see [`WriteRate`]).
const PACED_QUEUE: usize = 4096;
const WRITERS: usize = 4;
/// Entries each of the correlator's tables keeps (client-go's LRU size), in two generations:
/// an entry not touched while a whole generation filled is forgotten.
const REMEMBERED: usize = 4096;
/// Distinct messages with one reason about one object before they are combined.
const AGGREGATE_AFTER: usize = 10;
/// A combination's window: messages older than this are not counted towards it.
const AGGREGATE_WINDOW: Duration = Duration::from_secs(600);
/// The spam filter's token bucket: this many events at once, then one per `SPAM_REFILL`.
const SPAM_BURST: f64 = 25.0;
const SPAM_REFILL: Duration = Duration::from_secs(300);
const COMBINED: &str = "(combined from similar events): ";

/// How fast a recorder writes: `burst` writes at once, then `qps` a second (client-go's
/// client-side rate limiter, a token bucket waited on in order).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WriteRate {
    pub qps: f64,
    pub burst: u32,
}

impl WriteRate {
    /// kube-scheduler's default `clientConnection` (qps 50, burst 100), which its event
    /// client is limited by.
    pub const SCHEDULER: WriteRate = WriteRate { qps: 50.0, burst: 100 };
}

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// An object's identity in the correlator's keys: its uid, or its name when it has none
/// (then also its kind and namespace).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Involved {
    uid: String,
    kind: String,
    namespace: String,
    name: String,
    api_version: String,
}

impl Involved {
    fn of(o: &ObjectReference) -> Involved {
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        Involved { uid: s(&o.uid), kind: s(&o.kind), namespace: s(&o.namespace), name: s(&o.name), api_version: s(&o.api_version) }
    }
}

/// What identifies one Event: the object (and field path), type, reason and message; the
/// message is `None` for the combined Event of a reason.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct EventKey {
    object: Involved,
    field_path: String,
    type_: EventType,
    reason: String,
    message: Option<String>,
}

/// The Event written for a key: where it is, how often it happened, since when.
#[derive(Clone, Debug)]
struct Logged {
    namespace: String,
    name: String,
    count: i32,
    first: Time,
}

/// The distinct messages of one (object, type, reason) lately.
#[derive(Debug)]
struct Similar {
    messages: HashSet<String>,
    last: Instant,
}

/// A bounded map that forgets what was not touched for a whole generation: lookups move an
/// entry of the older generation to the newer; when the newer is full it becomes the older
/// and the older is dropped.
#[derive(Debug)]
struct Generations<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
}

impl<K: Hash + Eq, V> Default for Generations<K, V> {
    fn default() -> Self {
        Generations { young: HashMap::new(), old: HashMap::new() }
    }
}

impl<K: Hash + Eq + Clone, V> Generations<K, V> {
    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let v = self.young.remove(key).or_else(|| self.old.remove(key))?;
        Some(self.insert(key.clone(), v))
    }

    fn entry_or(&mut self, key: &K, make: impl FnOnce() -> V) -> &mut V {
        let v = match self.young.remove(key) {
            Some(v) => v,
            None => self.old.remove(key).unwrap_or_else(make),
        };
        self.insert(key.clone(), v)
    }

    fn insert(&mut self, key: K, value: V) -> &mut V {
        if self.young.len() >= REMEMBERED {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.entry(key).insert_entry(value).into_mut()
    }

    fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.young.retain(|k, _| keep(k));
        self.old.retain(|k, _| keep(k));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

/// One write to the API server.
#[derive(Debug)]
enum Write {
    /// A new Event (also the fallback of a `Count` whose Event is gone).
    Create(Box<Event>),
    /// One more occurrence of the Event `event` names: its count, lastTimestamp and message.
    Count(Box<Event>),
}

impl Write {
    fn event(&self) -> &Event {
        match self {
            Write::Create(e) | Write::Count(e) => e,
        }
    }
}

/// Decides what each published event becomes: a new Event, one more count of an earlier one,
/// or nothing (the spam filter). Pure: the clock is passed in.
#[derive(Debug, Default)]
struct Correlator {
    /// Aggregate similar events and filter spam (client-go's EventCorrelator), or only count repeats.
    correlate: bool,
    similar: Generations<(Involved, EventType, String), Similar>,
    logged: Generations<EventKey, Logged>,
    buckets: Generations<(Involved, EventType), TokenBucket>,
}

impl Correlator {
    fn observe(&mut self, component: &str, host: &str, p: Pending, now: Instant, wall: Time) -> Option<Write> {
        let object = Involved::of(&p.object);
        let mut message = p.message;
        let mut combined = false;
        if self.correlate {
            let group = self.similar.entry_or(&(object.clone(), p.type_, p.reason.clone()), || Similar { messages: HashSet::new(), last: now });
            if now.saturating_duration_since(group.last) > AGGREGATE_WINDOW {
                group.messages.clear();
            }
            group.messages.insert(message.clone());
            group.last = now;
            if group.messages.len() >= AGGREGATE_AFTER {
                // Keep the group one short of the threshold, so that every further new message
                // is combined too (client-go drops an arbitrary one).
                let any = group.messages.iter().next().cloned();
                if let Some(any) = any {
                    group.messages.remove(&any);
                }
                message = format!("{COMBINED}{message}");
                combined = true;
            }
        }
        let key = EventKey {
            object: object.clone(),
            field_path: p.object.field_path.clone().unwrap_or_default(),
            type_: p.type_,
            reason: p.reason.clone(),
            message: (!combined).then(|| message.clone()),
        };
        // The count is kept even for an event the filter drops, as client-go's logger does: the
        // next one written carries the number of occurrences.
        let (logged, repeat) = match self.logged.get_mut(&key) {
            Some(l) => {
                l.count = l.count.saturating_add(1);
                (l.clone(), true)
            }
            None => {
                // Events about cluster-scoped objects (nodes) live in `default`, as client-go puts them.
                let namespace = p.object.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".to_string());
                let nanos = wall.0.timestamp_nanos_opt().unwrap_or(0);
                let l = Logged { namespace, name: format!("{}.{:x}", object.name, nanos), count: 1, first: wall.clone() };
                self.logged.insert(key, l.clone());
                (l, false)
            }
        };
        if self.correlate && !self.buckets.entry_or(&(object, p.type_), || TokenBucket::new(1.0 / SPAM_REFILL.as_secs_f64(), SPAM_BURST, now)).take(now) {
            return None;
        }
        let event = Event {
            metadata: ObjectMeta { name: Some(logged.name), namespace: Some(logged.namespace), ..Default::default() },
            involved_object: p.object,
            reason: Some(p.reason),
            message: Some(message),
            type_: Some(p.type_.as_str().to_string()),
            source: Some(EventSource { component: Some(component.into()), host: None }),
            first_timestamp: Some(logged.first),
            last_timestamp: Some(wall),
            count: Some(logged.count),
            reporting_component: Some(component.into()),
            reporting_instance: Some(format!("{component}-{host}")),
            ..Default::default()
        };
        Some(if repeat { Write::Count(Box::new(event)) } else { Write::Create(Box::new(event)) })
    }

    fn forget(&mut self, uid: &str) {
        self.similar.retain(|(o, _, _)| o.uid != uid);
        self.logged.retain(|k| k.object.uid != uid);
        self.buckets.retain(|(o, _)| o.uid != uid);
    }
}

#[derive(Debug)]
struct Pending {
    object: ObjectReference,
    type_: EventType,
    reason: String,
    message: String,
}

struct Inner {
    component: String,
    host: String,
    correlator: Mutex<Correlator>,
    writers: Vec<mpsc::Sender<Write>>,
    /// Events dropped because their writer's queue was full.
    dropped: AtomicU64,
}

/// A cloneable handle to the writers.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
}

impl Recorder {
    /// A recorder for `component` (e.g. `default-scheduler`) that counts repeats of an event,
    /// its writes paced by `rate` (`None`: as fast as the API server takes them); its writers
    /// run on the current tokio runtime.
    pub fn new(client: kube::Client, component: &str, rate: Option<WriteRate>) -> Recorder {
        Recorder::start(client, component, false, rate.filter(|r| r.qps > 0.0))
    }

    /// A recorder for `component` (e.g. `replicaset-controller`, `kubelet`) that also combines
    /// similar events and filters spam as client-go's EventCorrelator does (see the module).
    pub fn with_correlator(client: kube::Client, component: &str) -> Recorder {
        Recorder::start(client, component, true, None)
    }

    fn start(client: kube::Client, component: &str, correlate: bool, rate: Option<WriteRate>) -> Recorder {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        // One bucket for all the writers: the rate is the recorder's.
        let bucket = rate.map(|r| Arc::new(Mutex::new(TokenBucket::new(r.qps, f64::from(r.burst.max(1)), Instant::now()))));
        let mut writers = Vec::with_capacity(WRITERS);
        for _ in 0..WRITERS {
            let (tx, mut rx) = mpsc::channel::<Write>(if bucket.is_some() { PACED_QUEUE } else { QUEUE });
            let client = client.clone();
            let bucket = bucket.clone();
            tokio::spawn(async move {
                while let Some(w) = rx.recv().await {
                    if let Some(bucket) = &bucket {
                        // `qps` > 0 (see `new`): a reservation always ends.
                        let wait = bucket.lock().map(|mut b| b.reserve(Instant::now())).unwrap_or_default().unwrap_or_default();
                        if !wait.is_zero() {
                            tokio::time::sleep(wait).await;
                        }
                    }
                    if let Err(e) = write(&client, w).await {
                        tracing::debug!(error = %e, "writing an event");
                    }
                }
            });
            writers.push(tx);
        }
        let correlator = Mutex::new(Correlator { correlate, ..Default::default() });
        Recorder { inner: Arc::new(Inner { component: component.to_string(), host, correlator, writers, dropped: AtomicU64::new(0) }) }
    }

    /// Forget the events written about the object with `uid` (it is gone: no repeat will come
    /// to count), so nothing is kept per deleted object.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut c) = self.inner.correlator.lock() {
            c.forget(uid);
        }
    }

    /// An event about `obj` (its reference: apiVersion, kind, namespace, name, uid,
    /// resourceVersion).
    pub fn publish<K: kube::Resource<DynamicType = ()>>(&self, obj: &K, type_: EventType, reason: &str, message: impl Into<String>) {
        self.publish_ref(obj.object_ref(&()), type_, reason, message);
    }

    /// An event about the object `object` refers to.
    pub fn publish_ref(&self, object: ObjectReference, type_: EventType, reason: &str, message: impl Into<String>) {
        let p = Pending { object, type_, reason: reason.to_string(), message: message.into() };
        let now = Instant::now();
        let wall = Time(k8s_openapi::chrono::Utc::now());
        let inner = &self.inner;
        let Some(w) = inner.correlator.lock().ok().and_then(|mut c| c.observe(&inner.component, &inner.host, p, now, wall)) else {
            return;
        };
        // Every write of one Event goes to the same writer, so a count never overtakes its create.
        let mut h = DefaultHasher::new();
        w.event().metadata.name.hash(&mut h);
        let shard = (h.finish() % inner.writers.len() as u64) as usize;
        if inner.writers[shard].try_send(w).is_err() {
            // Logged at the 1st, 2nd, 4th, 8th, ... drop: visible, never a flood.
            let n = inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(component = %inner.component, dropped = n, "event queue full: events dropped");
            }
        }
    }
}

async fn write(client: &kube::Client, w: Write) -> Result<(), kube::Error> {
    let event = match w {
        Write::Create(e) => e,
        Write::Count(e) => {
            let (ns, name) = (e.metadata.namespace.clone().unwrap_or_default(), e.metadata.name.clone().unwrap_or_default());
            let patch = Event { count: e.count, last_timestamp: e.last_timestamp.clone(), message: e.message.clone(), ..Default::default() };
            match Api::<Event>::namespaced(client.clone(), &ns).patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Err(kube::Error::Api(s)) if s.code == 404 => e, // expired or deleted: write it anew
                other => return other.map(|_| ()),
            }
        }
    };
    let ns = event.metadata.namespace.clone().unwrap_or_default();
    Api::<Event>::namespaced(client.clone(), &ns).create(&PostParams::default(), &event).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(uid: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("ReplicaSet".into()),
            namespace: Some("ns".into()),
            name: Some(format!("web-{uid}")),
            uid: Some(uid.into()),
            ..Default::default()
        }
    }

    fn publish(c: &mut Correlator, object: ObjectReference, reason: &str, message: &str, now: Instant) -> Option<Write> {
        let p = Pending { object, type_: EventType::Normal, reason: reason.into(), message: message.into() };
        c.observe("replicaset-controller", "host", p, now, Time(k8s_openapi::chrono::Utc::now()))
    }

    fn summary(w: &Option<Write>) -> String {
        match w {
            None => "dropped".into(),
            Some(w) => {
                let e = w.event();
                let kind = if matches!(w, Write::Create(_)) { "create" } else { "count" };
                format!("{kind} {} x{}", e.message.clone().unwrap_or_default(), e.count.unwrap_or(0))
            }
        }
    }

    #[test]
    fn ten_similar_events_are_combined_and_the_25th_write_is_the_last_until_the_bucket_refills() {
        let mut c = Correlator { correlate: true, ..Default::default() };
        let t0 = Instant::now();
        let writes: Vec<Option<Write>> = (0..40).map(|i| publish(&mut c, rs("u1"), "SuccessfulCreate", &format!("Created pod: p{i}"), t0)).collect();
        let got: Vec<String> = writes.iter().map(summary).collect();
        for (i, g) in got.iter().enumerate().take(9) {
            assert_eq!(g, &format!("create Created pod: p{i} x1"));
        }
        assert_eq!(got[9], "create (combined from similar events): Created pod: p9 x1");
        assert_eq!(got[10], "count (combined from similar events): Created pod: p10 x2");
        assert_eq!(got[24], "count (combined from similar events): Created pod: p24 x16");
        assert!(got[25..].iter().all(|g| g == "dropped"), "{got:?}");
        // The combined Event keeps one name; its count went on while writes were dropped.
        let name = |w: &Option<Write>| w.as_ref().and_then(|w| w.event().metadata.name.clone());
        assert_eq!(name(&writes[9]), name(&writes[24]));
        let later = publish(&mut c, rs("u1"), "SuccessfulCreate", "Created pod: p40", t0 + SPAM_REFILL);
        assert_eq!(summary(&later), "count (combined from similar events): Created pod: p40 x32");
        assert_eq!(name(&later), name(&writes[9]));
        assert_eq!(summary(&publish(&mut c, rs("u1"), "SuccessfulCreate", "Created pod: p41", t0 + SPAM_REFILL)), "dropped");
        // Another object has its own bucket and its own group.
        assert_eq!(summary(&publish(&mut c, rs("u2"), "SuccessfulCreate", "Created pod: q0", t0)), "create Created pod: q0 x1");
    }

    #[test]
    fn a_repeat_counts_on_the_first_event_and_an_old_group_starts_again() {
        let mut c = Correlator { correlate: true, ..Default::default() };
        let t0 = Instant::now();
        let first = publish(&mut c, rs("u1"), "FailedCreate", "quota", t0);
        let again = publish(&mut c, rs("u1"), "FailedCreate", "quota", t0);
        assert_eq!(summary(&again), "count quota x2");
        assert_eq!(first.as_ref().and_then(|w| w.event().metadata.name.clone()), again.as_ref().and_then(|w| w.event().metadata.name.clone()));
        for i in 0..8 {
            publish(&mut c, rs("u1"), "FailedCreate", &format!("m{i}"), t0);
        }
        // Ten minutes later the nine messages no longer count towards a combination.
        let late = t0 + AGGREGATE_WINDOW + Duration::from_secs(1);
        assert_eq!(summary(&publish(&mut c, rs("u1"), "FailedCreate", "m9", late)), "create m9 x1");
    }

    #[test]
    fn without_the_correlator_only_repeats_are_counted() {
        let mut c = Correlator::default();
        let t0 = Instant::now();
        let got: Vec<String> = (0..40).map(|i| summary(&publish(&mut c, rs("u1"), "Scheduled", &format!("to n{i}"), t0))).collect();
        assert!(got.iter().enumerate().all(|(i, g)| g == &format!("create to n{i} x1")), "{got:?}");
        assert_eq!(summary(&publish(&mut c, rs("u1"), "Scheduled", "to n3", t0)), "count to n3 x2");
    }

    #[test]
    fn forgetting_an_object_drops_only_its_entries_and_the_tables_stay_bounded() {
        let mut c = Correlator { correlate: true, ..Default::default() };
        let t0 = Instant::now();
        for (uid, reason) in [("u1", "Pulled"), ("u1", "Started"), ("u2", "Pulled")] {
            publish(&mut c, rs(uid), reason, "m", t0);
        }
        c.forget("u1");
        let left: Vec<String> = c.logged.young.keys().map(|k| format!("{}/{}", k.object.uid, k.reason)).collect();
        assert_eq!(left, vec!["u2/Pulled".to_string()]);
        assert_eq!((c.similar.len(), c.buckets.len()), (1, 1));
        for i in 0..3 * REMEMBERED {
            publish(&mut c, rs(&format!("x{i}")), "Pulled", "m", t0);
        }
        assert!(c.logged.len() <= 2 * REMEMBERED && c.buckets.len() <= 2 * REMEMBERED);
        // A recently touched entry survives generations: u2's event is counted, not created anew.
        let mut c = Correlator::default();
        publish(&mut c, rs("keep"), "Pulled", "m", t0);
        for i in 0..3 * REMEMBERED {
            publish(&mut c, rs(&format!("x{i}")), "Pulled", "m", t0);
            if i % (REMEMBERED / 2) == 0 {
                assert!(matches!(publish(&mut c, rs("keep"), "Pulled", "m", t0), Some(Write::Count(_))));
            }
        }
    }
}
