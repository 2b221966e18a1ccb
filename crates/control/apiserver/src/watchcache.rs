//! The watch cache (kube-apiserver's cacher): one store watch over the whole keyspace feeds the
//! current state of every object and a bounded ring of recent events, and every watch is served
//! from them.
//!
//! - Each object is decoded and serialized once, when its change arrives: an [`Object`] holds
//!   the JSON served to clients (with its `resourceVersion`) as shared [`Bytes`] and the few
//!   fields selectors read. Watchers hold `Arc`s to objects and events, never copies.
//! - A watch with resourceVersion "" or "0" starts with the current state: the `Arc`s of the
//!   objects under its prefix, streamed as ADDED events (filtered as they go). A watch from `N`
//!   replays the ring after `N`; before the ring (or compacted away in the store) it is
//!   `410 Expired` (answered as the watch's one ERROR event, as upstream's cacher does); ahead of the cache it waits up to [`FRESHNESS_WAIT`] for the cache to get
//!   there, then fails with `504` "Too large resource version" and `Retry-After: 1` (upstream's
//!   `waitUntilFreshAndBlock`).
//! - Each watcher has a bounded queue. The feeder never waits for a watcher: one whose queue is
//!   full is closed (its queue dropped at once, its connection closed) and its client re-lists.
//! - Event types follow the watcher's selectors, as upstream: an object that starts matching is
//!   ADDED, one that stops matching DELETED (its last matching state, at the change's revision).
//! - Bookmarks carry the cache's revision, taken when the watcher has nothing queued, so that
//!   every event up to it has been delivered.
//!
//! - [`Observer`]s (the node authorizer's graph) are told of every change under their prefix
//!   under the same lock, so what they derive is exactly as current as the cache ([`WatchCache::sync`]
//!   waits for both to reach the store's revision).
//!
//! **Invariant:** the state, the ring and every watcher queue change together under one lock, in
//! store revision order; a watcher is registered under that lock, so it sees each change
//! exactly once (in its initial state or replay, or in its queue).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::{json, Value};
use strata_store::{EventKind, Store};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::output::{self, Transform};
use crate::object::with_rv;
use crate::selector::{self, FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::{rv, table};

/// How long a watch waits for the cache to reach the revision it asks for.
pub const FRESHNESS_WAIT: Duration = Duration::from_secs(3);
/// How long admission's reads wait for the cache before they read the store instead.
pub const READS_WAIT: Duration = Duration::from_secs(1);
/// Keys read per store page when the cache (re)loads.
const LIST_PAGE: usize = 1000;
/// Only keys under this prefix are Kubernetes objects.
const OBJECTS: &str = "/registry/";
/// How often a watch that asked for bookmarks gets one (upstream: every minute, and 2 s before
/// the watch's deadline).
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);
/// Objects up to this size go out as one chunk per event (copied with the event's head and tail).
const SMALL_OBJECT: usize = 4096;

/// Sizes and limits of the cache.
#[derive(Clone, Debug)]
pub struct Config {
    /// Most events kept in the ring.
    pub ring_events: usize,
    /// Most bytes of objects the ring alone keeps alive.
    pub ring_bytes: usize,
    /// Events queued per watcher before it counts as slow and is closed.
    pub queue: usize,
}

/// The defaults follow kube-apiserver's cacher: a history of up to 100 Ki events (its largest
/// watch cache; here bounded by bytes too), so that a watcher cut off or reconnecting under a
/// flood of changes (thousands of pod bindings a second) resumes from its revision instead of
/// relisting; and about a second of changes queued per watcher (its largest channel, 1,000)
/// before the watcher counts as slow.
impl Default for Config {
    fn default() -> Self {
        Self {
            ring_events: 100 * 1024,
            ring_bytes: 64 << 20,
            queue: 1024,
        }
    }
}

/// One object as the cache holds it.
#[derive(Debug)]
pub struct Object {
    /// The store revision of its last change.
    pub rev: u64,
    /// The object as served: JSON with `metadata.resourceVersion`.
    pub json: Bytes,
    /// What selectors read ([`selector::attributes`]).
    attrs: Value,
    /// Where `json` holds the `resourceVersion` member (and its comma) written into the stored
    /// bytes: cut out, they are the stored bytes again. `None` when `json` was encoded anew.
    stamp: Option<std::ops::Range<usize>>,
}

impl Object {
    /// Whether the object matches both selectors.
    pub fn matches(&self, labels: &LabelSelector, fields: &FieldSelector) -> bool {
        labels.matches(&self.attrs) && fields.matches(&self.attrs)
    }

    /// `value` as the cache holds it at revision `rev`.
    pub fn new(value: &Value, rev: u64) -> Object {
        Object { rev, json: crate::object::to_json(&with_rv(value.clone(), rev)), attrs: selector::attributes(value), stamp: None }
    }

    /// A field of what selectors read (`spec.nodeName`, `metadata.labels`): `Null` if absent.
    pub fn attr(&self, path: &str) -> &Value {
        path.split('.').fold(&self.attrs, |v, part| &v[part])
    }

    /// The object as the cache holds it: its JSON as served (with its `resourceVersion`) and
    /// what selectors read. The stored JSON is not decoded into a tree: the selectors' fields
    /// are picked out of it in one pass and the `resourceVersion` is written into a copy of it
    /// (the same bytes decoding, setting it and encoding again gives); only an object that does
    /// not fit that (its metadata not an object, a custom kind with selectable fields) is.
    fn decode(key: &str, value: &[u8], rev: u64) -> Option<Object> {
        if let Some(o) = Self::decode_lean(value, rev) {
            return Some(o);
        }
        match serde_json::from_slice::<Value>(value) {
            Ok(v) => {
                let attrs = selector::attributes(&v);
                let json = crate::object::to_json(&with_rv(v, rev));
                Some(Object { rev, json, attrs, stamp: None })
            }
            Err(e) => {
                tracing::warn!(%key, error = %e, "the watch cache skips a stored value that is not JSON");
                None
            }
        }
    }

    fn decode_lean(value: &[u8], rev: u64) -> Option<Object> {
        let picked = lean::pick(value)?;
        if !crate::crd::selectable_paths(&picked).is_empty() {
            return None;
        }
        let (json, stamp) = match lean::splice_resource_version(value, rev) {
            Some((json, at)) => (json, Some(at)),
            None => (lean::with_resource_version(value, rev)?, None),
        };
        Some(Object { rev, json: Bytes::from(json), attrs: selector::attributes(&picked), stamp })
    }
}

/// A stored object (JSON) as served at revision `rev`: with its `metadata.resourceVersion`
/// set, as decoding, setting it and encoding again would write it; `None` unless it is an
/// object whose metadata is one.
pub fn stamped(json: &[u8], rev: u64) -> Option<Vec<u8>> {
    lean::with_resource_version(json, rev)
}

/// Reading stored JSON without decoding it into a `Value` tree.
mod lean {
    use std::borrow::Cow;
    use std::collections::BTreeMap;
    use std::fmt;
    use std::sync::LazyLock;

    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value};

    use crate::rawjson::{self, Key};

    /// The fields to pick: a path's parts as nested maps; an empty map takes the whole value.
    #[derive(Default)]
    struct Paths(BTreeMap<&'static str, Paths>);

    static PICKED: LazyLock<Paths> = LazyLock::new(|| {
        let mut root = Paths::default();
        for path in ["apiVersion", "kind", "metadata.name", "metadata.namespace", "metadata.labels"].into_iter().chain(crate::selector::selectable_fields()) {
            let mut at = &mut root;
            for part in path.split('.') {
                at = at.0.entry(part).or_default();
            }
        }
        root
    });

    struct Pick<'p>(&'p Paths);

    impl<'de> DeserializeSeed<'de> for Pick<'_> {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            if self.0 .0.is_empty() {
                serde::Deserialize::deserialize(d)
            } else {
                d.deserialize_any(self)
            }
        }
    }

    /// Inside the picked paths: a map keeps its picked keys; anything else where a map was
    /// expected picks nothing (`Null`, as indexing a `Value` there gives).
    impl<'de> Visitor<'de> for Pick<'_> {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = Map::new();
            while let Some(Key(key)) = map.next_key::<Key>()? {
                match self.0 .0.get(key.as_ref()) {
                    Some(sub) => {
                        let v = map.next_value_seed(Pick(sub))?;
                        out.insert(key.into_owned(), v);
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(Value::Object(out))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Value::Null)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_str<E>(self, _: &str) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
    }

    /// The identity, `kind`, labels and selectable fields of a stored object (a JSON object),
    /// shaped as the object is: what [`crate::selector::attributes`] reads.
    pub(super) fn pick(json: &[u8]) -> Option<Value> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let v = Pick(&PICKED).deserialize(&mut de).ok()?;
        de.end().ok()?;
        v.is_object().then_some(v)
    }

    /// The stored JSON object with `metadata.resourceVersion` set, keys in the order a `Value`
    /// writes them; `None` unless it is an object whose metadata is one.
    pub(super) fn with_resource_version(json: &[u8], rev: u64) -> Option<Vec<u8>> {
        splice_resource_version(json, rev).map(|(out, _)| out).or_else(|| rebuilt_with_resource_version(json, rev))
    }

    /// [`with_resource_version`] for any object: its members and its metadata's read, the
    /// member set, and both written again.
    fn rebuilt_with_resource_version(json: &[u8], rev: u64) -> Option<Vec<u8>> {
        let mut top = rawjson::members_of_slice(json)?;
        let mut meta = rawjson::members(rawjson::get(&top, "metadata")?.get())?;
        rawjson::set(&mut meta, "resourceVersion", &rev.to_string())?;
        let meta = rawjson::to_raw(&meta)?;
        top.insert(Key::of("metadata"), Cow::Owned(meta));
        rawjson::to_vec(&top)
    }

    /// [`with_resource_version`] for what strata writes (compact JSON, sorted keys, no
    /// `resourceVersion` stored): the member written into a copy of the bytes at its place in
    /// `metadata`, found in one scan without decoding anything. `None` for anything else (an
    /// escaped key, whitespace, keys out of order or repeated at the top or in `metadata`, a
    /// stored `resourceVersion`), which the general way handles. The value is taken to be JSON
    /// (the watch cache has read all of it already). With the copy, where in it the member and
    /// its comma were written (cut out again, they leave the stored bytes).
    pub(super) fn splice_resource_version(json: &[u8], rev: u64) -> Option<(Vec<u8>, std::ops::Range<usize>)> {
        std::str::from_utf8(json).ok()?;
        let (start, end) = member(json, b"metadata")?;
        if json.get(start) != Some(&b'{') {
            return None;
        }
        // Where `"resourceVersion":"N"` goes: before the first key after it, or at the end.
        let mut any = false;
        let mut before_key = None;
        let at = sorted_members(json, start, |key, key_start, _| {
            if before_key.is_none() && key > b"resourceVersion".as_slice() {
                before_key = Some(key_start);
            }
            any = true;
            key != b"resourceVersion"
        })?;
        if at + 1 != end {
            return None;
        }
        let rv = format!("\"resourceVersion\":\"{rev}\"");
        let mut out = Vec::with_capacity(json.len() + rv.len() + 1);
        let written = match before_key {
            Some(pos) => {
                out.extend_from_slice(&json[..pos]);
                out.extend_from_slice(rv.as_bytes());
                out.push(b',');
                out.extend_from_slice(&json[pos..]);
                pos..pos + rv.len() + 1
            }
            None => {
                out.extend_from_slice(&json[..at]);
                if any {
                    out.push(b',');
                }
                out.extend_from_slice(rv.as_bytes());
                out.extend_from_slice(&json[at..]);
                at..at + usize::from(any) + rv.len()
            }
        };
        Some((out, written))
    }

    /// The value of the member `name` (start, end) of the object that is all of `json`; None
    /// if it has no such member or does not fit [`sorted_members`].
    fn member(json: &[u8], name: &[u8]) -> Option<(usize, usize)> {
        let mut found = None;
        let close = sorted_members(json, 0, |key, _, value| {
            if key == name {
                found = Some(value);
            }
            true
        })?;
        if close + 1 != json.len() {
            return None;
        }
        found
    }

    /// Walk the members of the object at `at`, calling `each(key, where the key starts, the
    /// value's (start, end))` until it says stop (false); their keys must be unescaped, unique
    /// and in order. Where the object's closing `}` is; None if it does not fit or `each` stopped.
    fn sorted_members<'a>(json: &'a [u8], at: usize, mut each: impl FnMut(&'a [u8], usize, (usize, usize)) -> bool) -> Option<usize> {
        if json.get(at) != Some(&b'{') {
            return None;
        }
        let mut at = at + 1;
        if json.get(at) == Some(&b'}') {
            return Some(at);
        }
        let mut last: Option<&[u8]> = None;
        loop {
            let key_start = at;
            let (key, value_start) = key_at(json, at)?;
            if last.is_some_and(|l| l >= key) {
                return None;
            }
            last = Some(key);
            at = skip_value(json, value_start)?;
            if !each(key, key_start, (value_start, at)) {
                return None;
            }
            match json.get(at) {
                Some(b',') => at += 1,
                Some(b'}') => return Some(at),
                _ => return None,
            }
        }
    }

    /// The key at `at` (without its quotes; None if it has an escape) and where its value starts.
    fn key_at(json: &[u8], at: usize) -> Option<(&[u8], usize)> {
        if json.get(at) != Some(&b'"') {
            return None;
        }
        let len = json.get(at + 1..)?.iter().position(|&c| c == b'"' || c == b'\\')?;
        if json.get(at + 1 + len) != Some(&b'"') || json.get(at + 2 + len) != Some(&b':') {
            return None;
        }
        Some((&json[at + 1..at + 1 + len], at + 3 + len))
    }

    /// Past the JSON value at `at`: a string, an object or list with everything in it, or a
    /// scalar up to the next delimiter (None if it has whitespace: not compact JSON).
    fn skip_value(json: &[u8], at: usize) -> Option<usize> {
        match *json.get(at)? {
            b'"' => skip_string(json, at),
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut i = at;
                loop {
                    match *json.get(i)? {
                        b'"' => {
                            i = skip_string(json, i)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth = depth.checked_sub(1)?;
                            if depth == 0 {
                                return Some(i + 1);
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => {
                let len = json[at..].iter().position(|&c| matches!(c, b',' | b'}' | b']'))?;
                let scalar = &json[at..at + len];
                (len > 0 && !scalar.iter().any(u8::is_ascii_whitespace)).then_some(at + len)
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_spliced_resource_version_is_what_rebuilding_writes() {
            let fits = [
                r#"{"apiVersion":"v1","kind":"Pod","metadata":{"labels":{"a":"}{\"],["},"name":"p","namespace":"default","uid":"u"},"spec":{"containers":[{"args":["a,b}"],"name":"c"}]},"status":{}}"#,
                r#"{"metadata":{}}"#,
                r#"{"metadata":{"annotations":{"x":"1"},"name":"a"}}"#,
                r#"{"a":[1,2,{"b":null}],"metadata":{"z":true},"zz":-1.5e3}"#,
                r#"{"metadata":{"generation":12,"selfLink":"x"},"spec":"é"}"#,
            ];
            for json in fits {
                let (spliced, at) = splice_resource_version(json.as_bytes(), 42).expect("spliced");
                assert_eq!(Some(&spliced), rebuilt_with_resource_version(json.as_bytes(), 42).as_ref(), "{json}");
                // What was written, cut out again, leaves the stored bytes.
                let mut cut = spliced.clone();
                cut.drain(at);
                assert_eq!(String::from_utf8(cut).expect("utf-8"), json);
            }
            let others = [
                r#"{"metadata": {"name":"a"}}"#,
                r#"{"metadata":{"name":"a","resourceVersion":"7"}}"#,
                r#"{"metadata":{"name":"a","generation":1}}"#,
                r#"{"spec":{},"metadata":{"name":"a"}}"#,
                r#"{"metadata":{"na\u006de":"a"}}"#,
                r#"{"metadata":{"generation":1 }}"#,
                r#"{"metadata":{"name":"a"},"metadata":{"name":"b"}}"#,
                r#"{"metadata":{"name":"a"}} "#,
                r#"{"metadata":[]}"#,
                r#"{"kind":"x"}"#,
            ];
            for json in others {
                assert_eq!(splice_resource_version(json.as_bytes(), 42), None, "{json} is left to the general way");
                assert_eq!(with_resource_version(json.as_bytes(), 42), rebuilt_with_resource_version(json.as_bytes(), 42), "{json}");
            }
            assert_eq!(
                with_resource_version(br#"{"metadata":{"name":"a","uid":"u"}}"#, 9).map(String::from_utf8),
                Some(Ok(r#"{"metadata":{"name":"a","resourceVersion":"9","uid":"u"}}"#.to_string()))
            );
        }
    }

    /// Past the string whose opening quote is at `at`.
    fn skip_string(json: &[u8], at: usize) -> Option<usize> {
        let mut i = at + 1;
        loop {
            match *json.get(i)? {
                b'\\' => i += 2,
                b'"' => return Some(i + 1),
                _ => i += 1,
            }
        }
    }
}

/// One change, shared by every watcher it concerns.
#[derive(Debug)]
pub struct Event {
    pub rev: u64,
    key: String,
    /// The object after the change (`None`: deleted).
    cur: Option<Arc<Object>>,
    /// The object before it.
    prev: Option<Arc<Object>>,
    /// `prev` at this event's revision: the object of a DELETED event, serialized the first
    /// time a watcher needs it.
    prev_at_rev: OnceLock<Bytes>,
}

impl Event {
    fn size(&self) -> usize {
        self.cur.as_ref().map_or(0, |o| o.json.len())
            + self.prev.as_ref().map_or(0, |o| o.json.len())
    }

    fn deleted_object(&self) -> Bytes {
        self.prev_at_rev
            .get_or_init(|| {
                let prev = self
                    .prev
                    .as_ref()
                    .map(|p| p.json.clone())
                    .unwrap_or_default();
                match serde_json::from_slice::<Value>(&prev) {
                    Ok(v) => crate::object::to_json(&with_rv(v, self.rev)),
                    Err(_) => prev,
                }
            })
            .clone()
    }
}

/// A registered watcher: the prefix it watches and its queue.
struct Watcher {
    prefix: String,
    queue: Mutex<VecDeque<Arc<Event>>>,
    notify: Notify,
    /// Closed: fell behind (`slow`) or ended by a re-list of the cache.
    closed: AtomicBool,
    slow: AtomicBool,
    /// Closes the watcher's connection (a client that stopped reading is not polled any more).
    close_connection: Option<Arc<Notify>>,
}

impl Watcher {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Arc<Event>>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue an event; false when the queue was full and the watcher is now closed.
    fn push(&self, ev: Arc<Event>, cap: usize) -> bool {
        let mut q = self.queue();
        if q.len() >= cap {
            q.clear();
            q.shrink_to_fit();
            drop(q);
            self.slow.store(true, Ordering::SeqCst);
            self.close();
            if let Some(c) = &self.close_connection {
                c.notify_one();
            }
            return false;
        }
        q.push_back(ev);
        drop(q);
        self.notify.notify_one();
        true
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }
}

#[derive(Default)]
struct State {
    ready: bool,
    /// The store revision the cache reflects.
    revision: u64,
    /// Watches from revisions at or after this one can be served from the ring.
    oldest: u64,
    objects: BTreeMap<String, Arc<Object>>,
    ring: VecDeque<Arc<Event>>,
    ring_bytes: usize,
    watchers: HashMap<u64, Arc<Watcher>>,
    next_id: u64,
}

/// Counts for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub revision: u64,
    pub objects: usize,
    pub ring: usize,
    pub watchers: usize,
}

/// Something kept from the cache's changes under one prefix (called under the cache's lock, in
/// revision order: it must be quick and must not call back into the cache).
pub trait Observer: Send + Sync {
    fn prefix(&self) -> &str;
    /// The whole state under the prefix, after a (re)load: (key, object JSON as served).
    fn reset(&self, objects: &mut dyn Iterator<Item = (&str, &[u8])>);
    /// One change: the object after it (as the cache holds it: its JSON as served and what
    /// selectors read), or None when the key was deleted.
    fn changed(&self, key: &str, object: Option<&Object>);
}

/// The cache; see the module documentation.
pub struct WatchCache {
    store: Arc<dyn Store>,
    config: Config,
    observers: Vec<Arc<dyn Observer>>,
    state: Mutex<State>,
    /// The revision reached, for waiters.
    reached: tokio::sync::watch::Sender<u64>,
}

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// resourceVersion "": the current state (consistent: at least the store's revision now),
    /// then changes.
    Latest,
    /// "0": any recent state, then changes.
    Any,
    /// `N`: the changes after revision `N`.
    After(u64),
    /// `sendInitialEvents` from `N`: a state at least as new as revision `N`, then changes.
    NotOlderThan(u64),
}

/// The state a list served from the cache reflects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListRead {
    /// At least the store's revision at the time of the request (a consistent read).
    Latest,
    /// At least this revision (0: any state the cache has).
    NotOlderThan(u64),
    /// Exactly this revision (a continued list's, or `resourceVersionMatch=Exact`).
    Exact(u64),
}

/// One page of a list served from the cache.
#[derive(Debug)]
pub struct ListPage {
    /// The matching objects of the page, as served.
    pub items: Vec<Arc<Object>>,
    /// The revision the page reflects.
    pub revision: u64,
    /// The key the next page starts after, when keys follow the page.
    pub next: Option<String>,
    /// How many keys follow the page (matching or not).
    pub remaining: u64,
}

/// What one watch asks for.
pub struct WatchRequest {
    pub prefix: String,
    pub start: Start,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub kind: &'static str,
    pub api_version: String,
    /// A custom kind's resource: objects are converted to its version (and pruned) on the way
    /// out, and printed with its columns ([`crate::crd::served_form`]).
    pub custom: Option<&'static crate::resources::Resource>,
    /// What each event's object is turned into: a one-row Table (`kubectl get -w`), a
    /// `PartialObjectMetadata` (a metadata informer).
    pub transform: Transform,
    pub bookmarks: bool,
    /// After the initial state, a bookmark annotated `k8s.io/initial-events-end` (with
    /// `bookmarks`: client-go's streaming lists wait for it).
    pub initial_events_end: bool,
    pub timeout: Option<Duration>,
    /// The long-running request slot the watch holds until it ends.
    pub permit: Option<OwnedSemaphorePermit>,
    /// Closes the connection the watch is served on.
    pub close_connection: Option<Arc<Notify>>,
}

impl WatchCache {
    /// A cache over `store`, loading and following it in the background.
    pub fn start(store: Arc<dyn Store>, config: Config) -> Arc<Self> {
        Self::start_observed(store, config, Vec::new())
    }

    /// [`WatchCache::start`] with observers told of every change under their prefixes.
    pub fn start_observed(store: Arc<dyn Store>, config: Config, observers: Vec<Arc<dyn Observer>>) -> Arc<Self> {
        let (reached, _) = tokio::sync::watch::channel(0);
        let cache = Arc::new(Self {
            store,
            config,
            observers,
            state: Mutex::new(State::default()),
            reached,
        });
        let weak = Arc::downgrade(&cache);
        tokio::spawn(async move {
            loop {
                let Some(cache) = weak.upgrade() else { return };
                match cache.follow().await {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the watch cache lost the store; reloading")
                    }
                }
                cache.terminate_watchers();
                drop(cache);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        cache
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> Stats {
        let st = self.state();
        Stats {
            revision: st.revision,
            objects: st.objects.len(),
            ring: st.ring.len(),
            watchers: st.watchers.len(),
        }
    }

    /// The object stored under `key` as served (JSON with its `resourceVersion`), if cached.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.state().objects.get(key).map(|o| o.json.clone())
    }

    /// The object stored under `key` as the store held it at the revision of its last change
    /// (the cache's copy, which may be behind the store), and that revision; `None` if not
    /// cached or if the cached JSON is not the stored bytes with a `resourceVersion` written in.
    pub fn stored(&self, key: &str) -> Option<(Vec<u8>, u64)> {
        let (json, at, rev) = {
            let state = self.state();
            let o = state.objects.get(key)?;
            (o.json.clone(), o.stamp.clone()?, o.rev)
        };
        let mut out = Vec::with_capacity(json.len().saturating_sub(at.len()));
        out.extend_from_slice(json.get(..at.start)?);
        out.extend_from_slice(json.get(at.end..)?);
        Some((out, rev))
    }

    /// Wait (at most `wait`) until the cache, and what its observers derive, reflect the store's
    /// current revision; false if it did not get there in time.
    pub async fn sync(&self, wait: Duration) -> bool {
        match self.store.revision().await {
            Ok(rev) => self.wait_for(rev, wait).await.is_ok(),
            Err(_) => false,
        }
    }

    /// Wait until the cache, and what its observers derive, reflect the store's revision as of
    /// this call, for as long as the cache keeps applying changes: false only when it has made
    /// no progress for `stall` (not loaded, or lost the store) or `limit` has passed. A cache
    /// behind a busy store gets there by applying what it has not applied yet; a fixed short
    /// wait would give up on it exactly when the server is loaded.
    pub async fn catch_up(&self, stall: Duration, limit: Duration) -> bool {
        let Ok(wanted) = self.store.revision().await else { return false };
        let deadline = Instant::now() + limit;
        let mut before = None;
        loop {
            match self.wait_for(wanted, stall.min(deadline.saturating_duration_since(Instant::now()))).await {
                Ok(_) => return true,
                Err(reached) if before != Some(reached) && Instant::now() < deadline => before = Some(reached),
                Err(reached) => {
                    tracing::warn!(wanted, reached, "the watch cache did not reach the store's revision");
                    return false;
                }
            }
        }
    }

    /// One page of the objects under `prefix` after `start_after` that match the selectors, at
    /// most `limit` of them (0: all), in key order, as of the revision `read` asks for: the
    /// current state, or an older one rebuilt from the ring (the first change after it of each
    /// key changed since holds the key's state then). `None` when the cache cannot serve it — not
    /// loaded, not at the revision after [`FRESHNESS_WAIT`], or the revision older than its ring —
    /// and the list is read from the store. The caller checks that the store can still serve
    /// the revision (a compacted one is gone, as for watches).
    pub async fn list(
        &self,
        prefix: &str,
        read: ListRead,
        start_after: Option<&str>,
        limit: usize,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Option<ListPage> {
        use std::ops::Bound;
        let wanted = match read {
            ListRead::Latest => self.store.revision().await.ok()?,
            ListRead::NotOlderThan(n) | ListRead::Exact(n) => n,
        };
        self.wait_for(wanted, FRESHNESS_WAIT).await.ok()?;
        let st = self.state();
        let at = match read {
            ListRead::Exact(n) => n,
            _ => st.revision,
        };
        if !st.ready || at < st.oldest || at > st.revision {
            return None;
        }
        let start = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let after_start = |key: &str| match start {
            Bound::Excluded(after) => key > after,
            _ => true,
        };
        // Keys changed after `at`: their state at `at` (`None`: created since).
        let mut then: BTreeMap<&str, Option<&Arc<Object>>> = BTreeMap::new();
        if at < st.revision {
            let first = st.ring.partition_point(|e| e.rev <= at);
            for e in st.ring.range(first..) {
                if e.key.starts_with(prefix) && after_start(&e.key) {
                    then.entry(e.key.as_str()).or_insert(e.prev.as_ref());
                }
            }
        }
        let mut live = st
            .objects
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        let mut old = then.into_iter().peekable();
        let selective = !labels.is_empty() || !fields.is_empty();
        let mut page = ListPage { items: Vec::new(), revision: at, next: None, remaining: 0 };
        let mut last: Option<&str> = None;
        loop {
            // The next key of the state at `at`: the ring's account of a key changed since
            // wins over the current object.
            let from_ring = match (live.peek(), old.peek()) {
                (None, None) => break,
                (Some((l, _)), Some((o, _))) => *o <= l.as_str(),
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            let (key, obj) = if from_ring {
                let Some((key, obj)) = old.next() else { break };
                if live.peek().is_some_and(|(l, _)| l.as_str() == key) {
                    live.next();
                }
                (key, obj)
            } else {
                let Some((key, obj)) = live.next() else { break };
                (key.as_str(), Some(obj))
            };
            let Some(obj) = obj else { continue };
            if limit > 0 && page.items.len() == limit {
                page.next = last.map(str::to_string);
                page.remaining += 1;
                if selective {
                    // Counts are reported for unfiltered lists only.
                    break;
                }
                continue;
            }
            if obj.matches(labels, fields) {
                page.items.push(obj.clone());
                last = Some(key);
            }
        }
        Some(page)
    }

    /// Reads for admission, as kube-apiserver's admission plugins read their informers'
    /// listers: once the cache has caught up with the store's revision at this call (waiting at
    /// most [`READS_WAIT`]), gets and whole lists are answered from the cache's state, which is
    /// then at least as new as a read of the store at this call would be; everything else (and
    /// everything, when the cache did not catch up) goes to the store.
    pub async fn reads(self: &Arc<Self>) -> Reads {
        let cached = match self.store.revision().await {
            Ok(rev) => self.wait_for(rev, READS_WAIT).await.is_ok(),
            Err(_) => false,
        };
        Reads { cache: self.clone(), cached }
    }

    /// Count of cached objects under a prefix.
    pub fn count(&self, prefix: &str) -> usize {
        self.state()
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .count()
    }

    /// Load everything, then apply the store's changes until the store watch fails.
    async fn follow(&self) -> Result<(), strata_store::Error> {
        let first = self.store.list("", None, LIST_PAGE).await?;
        let revision = first.revision;
        let mut objects = BTreeMap::new();
        let mut page = first;
        loop {
            let last = page.items.last().map(|kv| kv.key.clone());
            for kv in page.items {
                if kv.key.starts_with(OBJECTS) {
                    if let Some(o) = Object::decode(&kv.key, &kv.value, kv.mod_revision) {
                        objects.insert(kv.key, Arc::new(o));
                    }
                }
            }
            if !page.more {
                break;
            }
            page = self
                .store
                .list_at("", revision, last.as_deref(), LIST_PAGE)
                .await?;
        }
        let mut stream = self.store.watch("", revision).await?;
        {
            let mut st = self.state();
            for w in st.watchers.drain() {
                w.1.close();
            }
            st.objects = objects;
            for o in &self.observers {
                let prefix = o.prefix().to_string();
                let mut items = st
                    .objects
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, v)| (k.as_str(), &v.json[..]));
                o.reset(&mut items);
            }
            st.revision = revision;
            st.oldest = revision;
            st.ring.clear();
            st.ring_bytes = 0;
            st.ready = true;
        }
        self.reached.send_replace(revision);
        tracing::debug!(revision, "watch cache loaded");
        while let Some(ev) = stream.next().await {
            self.apply(ev?);
        }
        Err(strata_store::Error::Unavailable(
            "the store watch ended".into(),
        ))
    }

    fn terminate_watchers(&self) {
        let mut st = self.state();
        st.ready = false;
        for (_, w) in st.watchers.drain() {
            w.close();
        }
    }

    /// Apply one store change: state, ring, watcher queues.
    fn apply(&self, ev: strata_store::Event) {
        let rev = ev.kv.mod_revision;
        let key = ev.kv.key;
        let cur = match ev.kind {
            EventKind::Put if key.starts_with(OBJECTS) => match Object::decode(&key, &ev.kv.value, rev) {
                Some(o) => Some(Arc::new(o)),
                None => return self.advance(rev),
            },
            EventKind::Put => return self.advance(rev),
            EventKind::Delete if key.starts_with(OBJECTS) => None,
            EventKind::Delete => return self.advance(rev),
        };
        let mut slow = Vec::new();
        {
            let mut st = self.state();
            let prev = match &cur {
                Some(o) => st.objects.insert(key.clone(), o.clone()),
                None => st.objects.remove(&key),
            };
            for o in self.observers.iter().filter(|o| key.starts_with(o.prefix())) {
                o.changed(&key, cur.as_deref());
            }
            if cur.is_none() && prev.is_none() {
                st.revision = st.revision.max(rev);
                drop(st);
                self.reached.send_replace(rev);
                return;
            }
            let event = Arc::new(Event {
                rev,
                key,
                cur,
                prev,
                prev_at_rev: OnceLock::new(),
            });
            st.ring_bytes += event.size();
            st.ring.push_back(event.clone());
            while st.ring.len() > self.config.ring_events
                || (st.ring_bytes > self.config.ring_bytes && st.ring.len() > 1)
            {
                let Some(old) = st.ring.pop_front() else {
                    break;
                };
                st.ring_bytes -= old.size();
                st.oldest = st.oldest.max(old.rev);
            }
            st.revision = st.revision.max(rev);
            for (id, w) in &st.watchers {
                if event.key.starts_with(&w.prefix) && !w.push(event.clone(), self.config.queue) {
                    slow.push(*id);
                }
            }
            for id in &slow {
                st.watchers.remove(id);
            }
        }
        if !slow.is_empty() {
            tracing::info!(
                watchers = slow.len(),
                revision = rev,
                "closed watchers that fell behind"
            );
        }
        self.reached.send_replace(rev);
    }

    /// A change outside the cached objects: only the revision moves.
    fn advance(&self, rev: u64) {
        let mut st = self.state();
        st.revision = st.revision.max(rev);
        drop(st);
        self.reached.send_replace(rev);
    }

    /// Wait until the cache is loaded and at `revision` or later, for at most `wait`; the
    /// revision it has reached, or `Err(reached)`.
    async fn wait_for(&self, revision: u64, wait: Duration) -> Result<u64, u64> {
        let mut rx = self.reached.subscribe();
        let deadline = Instant::now() + wait;
        loop {
            let (ready, reached) = {
                let st = self.state();
                (st.ready, st.revision)
            };
            if ready && reached >= revision {
                return Ok(reached);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(reached),
            }
        }
    }

    /// Start a watch: its event stream, as the lines of a watch response.
    pub async fn watch(
        self: &Arc<Self>,
        req: WatchRequest,
    ) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static, ApiError> {
        let wanted = match req.start {
            Start::Latest => self.store.revision().await?,
            Start::Any => 0,
            Start::After(n) | Start::NotOlderThan(n) => n,
        };
        let reached = self.wait_for(wanted, FRESHNESS_WAIT).await;
        match (req.start, reached) {
            (_, Ok(_)) => {}
            (Start::After(n) | Start::NotOlderThan(n), Err(current)) if self.state().ready => {
                let mut e = rv::too_large(n, current);
                if let Some(d) = e.details.as_mut() {
                    d["retryAfterSeconds"] = json!(1);
                }
                return Err(e);
            }
            (Start::Latest, Err(current)) if self.state().ready => {
                // Writes outside strata's keys (a shared etcd) move the store's revision
                // without an event the cache could see; serve what it has.
                tracing::debug!(
                    wanted,
                    current,
                    "watch served from a cache behind the store's revision"
                );
            }
            (_, Err(_)) => {
                let mut e = ApiError::unavailable("the watch cache is not ready yet");
                e.details = Some(json!({ "retryAfterSeconds": 1 }));
                return Err(e);
            }
        }
        if let Start::After(n) = req.start {
            // A revision the store itself has forgotten is gone, as for lists, even while the
            // ring still holds its changes.
            if n > 0 {
                if let Err(e @ strata_store::Error::Compacted { .. }) =
                    self.store.list_at(&req.prefix, n, None, 1).await
                {
                    return Err(e.into());
                }
            }
        }
        let watcher = Arc::new(Watcher {
            prefix: req.prefix.clone(),
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            slow: AtomicBool::new(false),
            close_connection: req.close_connection.clone(),
        });
        let (id, phase) = {
            let mut st = self.state();
            let phase = match req.start {
                Start::Latest | Start::Any | Start::NotOlderThan(_) => {
                    let objects: Vec<Arc<Object>> = st
                        .objects
                        .range(req.prefix.clone()..)
                        .take_while(|(k, _)| k.starts_with(&req.prefix))
                        .map(|(_, o)| o.clone())
                        .collect();
                    Phase::Initial(objects.into_iter(), st.revision)
                }
                Start::After(n) => {
                    if n < st.oldest {
                        return Err(ApiError::expired(format!(
                            "too old resource version: {n} ({})",
                            st.oldest
                        )));
                    }
                    let first = st.ring.partition_point(|e| e.rev <= n);
                    let replay: Vec<Arc<Event>> = st
                        .ring
                        .range(first..)
                        .filter(|e| e.key.starts_with(&req.prefix))
                        .cloned()
                        .collect();
                    Phase::Replay(replay.into_iter())
                }
            };
            let id = st.next_id;
            st.next_id += 1;
            st.watchers.insert(id, watcher.clone());
            (id, phase)
        };
        let now = Instant::now();
        let deadline = req.timeout.map(|t| now + t);
        let mut body = WatchBody {
            cache: self.clone(),
            id,
            watcher,
            phase,
            pending: VecDeque::new(),
            next_bookmark: None,
            deadline,
            bookmarks: req.bookmarks,
            initial_events_end: req.bookmarks && req.initial_events_end,
            encoder: Encoder {
                labels: req.labels,
                fields: req.fields,
                kind: req.kind,
                api_version: req.api_version,
                custom: req.custom,
                transform: req.transform,
            },
            _permit: req.permit,
        };
        body.next_bookmark = body.bookmark_after(now);
        Ok(futures_util::stream::unfold(body, |mut b| async move {
            b.next().await.map(|item| (item, b))
        }))
    }

    /// The revision a bookmark for `watcher` may carry: the cache's, if nothing is queued for
    /// the watcher (so that it has received every event up to it).
    fn bookmark_revision(&self, watcher: &Watcher) -> Option<u64> {
        let st = self.state();
        watcher.queue().is_empty().then_some(st.revision)
    }

    fn forget(&self, id: u64) {
        self.state().watchers.remove(&id);
    }
}

enum Phase {
    /// The state at a revision, as ADDED events.
    Initial(std::vec::IntoIter<Arc<Object>>, u64),
    Replay(std::vec::IntoIter<Arc<Event>>),
    Live,
}

/// How one watch filters and writes events.
struct Encoder {
    labels: LabelSelector,
    fields: FieldSelector,
    kind: &'static str,
    api_version: String,
    custom: Option<&'static crate::resources::Resource>,
    transform: Transform,
}

impl Encoder {
    fn matches(&self, obj: &Object) -> bool {
        obj.matches(&self.labels, &self.fields)
    }

    /// The lines of one event, as chunks: the object's shared bytes between a head and a tail
    /// (or, for a Table, one line rendered for this watch).
    fn emit(&self, ty: &'static str, object: Bytes, out: &mut VecDeque<Bytes>) {
        let object = match (self.transform, self.custom) {
            // Metadata is the same in every version: nothing to convert.
            (Transform::Partial(v), _) => match output::partial_json(&object, v) {
                Some(partial) => Bytes::from(partial),
                None => return,
            },
            (_, Some(r)) => match serde_json::from_slice::<Value>(&object) {
                Ok(mut obj) => {
                    crate::convert::served_form(r, &mut obj);
                    Bytes::from(obj.to_string())
                }
                Err(_) => object,
            },
            (_, None) => object,
        };
        if let Transform::Table(version) = self.transform {
            if let Ok(obj) = serde_json::from_slice::<Value>(&object) {
                let rv = obj["metadata"]["resourceVersion"].clone();
                let rows = std::slice::from_ref(&obj);
                let t = match self.custom {
                    Some(r) => table::for_resource(r, rows, json!({ "resourceVersion": rv })),
                    None => table::table(self.kind, rows, json!({ "resourceVersion": rv })),
                };
                let line = json!({ "type": ty, "object": output::table_in(t, version) });
                out.push_back(Bytes::from(format!("{line}\n")));
            }
            return;
        }
        let head: &'static [u8] = match ty {
            "ADDED" => br#"{"type":"ADDED","object":"#,
            "MODIFIED" => br#"{"type":"MODIFIED","object":"#,
            _ => br#"{"type":"DELETED","object":"#,
        };
        // A small object is copied into one chunk with its head and tail: one HTTP/2 DATA
        // frame per event instead of three, which shows with thousands of watchers
        // (docs/benchmarks.md); a large one is sent by reference, never copied per watcher.
        if object.len() <= SMALL_OBJECT {
            let mut line = Vec::with_capacity(head.len() + object.len() + 2);
            line.extend_from_slice(head);
            line.extend_from_slice(&object);
            line.extend_from_slice(b"}\n");
            out.push_back(Bytes::from(line));
            return;
        }
        out.push_back(Bytes::from_static(head));
        out.push_back(object);
        out.push_back(Bytes::from_static(b"}\n"));
    }

    /// An event as this watch's selectors see it: ADDED when the object starts matching,
    /// MODIFIED while it matches, DELETED when it stops (or is deleted).
    fn event(&self, ev: &Event, out: &mut VecDeque<Bytes>) {
        let now = ev.cur.as_deref().is_some_and(|o| self.matches(o));
        let before = ev.prev.as_deref().is_some_and(|o| self.matches(o));
        match (now, before, &ev.cur) {
            (true, false, Some(o)) => self.emit("ADDED", o.json.clone(), out),
            (true, true, Some(o)) => self.emit("MODIFIED", o.json.clone(), out),
            (false, true, _) => self.emit("DELETED", ev.deleted_object(), out),
            _ => {}
        }
    }

    fn bookmark(&self, rev: u64, out: &mut VecDeque<Bytes>) {
        self.bookmark_with(json!({ "resourceVersion": rev.to_string() }), out);
    }

    /// The bookmark that ends a watch's initial state (`sendInitialEvents`), at its revision.
    fn initial_events_end(&self, rev: u64, out: &mut VecDeque<Bytes>) {
        self.bookmark_with(json!({ "resourceVersion": rev.to_string(), "annotations": { "k8s.io/initial-events-end": "true" } }), out);
    }

    fn bookmark_with(&self, metadata: Value, out: &mut VecDeque<Bytes>) {
        let object = match self.transform {
            Transform::Partial(v) => output::partial(metadata, v),
            _ => json!({ "kind": self.kind, "apiVersion": self.api_version, "metadata": metadata }),
        };
        let line = json!({ "type": "BOOKMARK", "object": object });
        out.push_back(Bytes::from(format!("{line}\n")));
    }
}

/// One watch's response body.
struct WatchBody {
    cache: Arc<WatchCache>,
    id: u64,
    watcher: Arc<Watcher>,
    phase: Phase,
    /// Chunks ready to go out.
    pending: VecDeque<Bytes>,
    next_bookmark: Option<Instant>,
    deadline: Option<Instant>,
    bookmarks: bool,
    initial_events_end: bool,
    encoder: Encoder,
    /// The long-running request slot, given back when the watch ends.
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for WatchBody {
    fn drop(&mut self) {
        self.cache.forget(self.id);
    }
}

impl WatchBody {
    fn bookmark_after(&self, now: Instant) -> Option<Instant> {
        if !self.bookmarks {
            return None;
        }
        let mut at = now + BOOKMARK_EVERY;
        if let Some(d) = self.deadline {
            let before = d.checked_sub(Duration::from_secs(2)).unwrap_or(d);
            if before < at {
                at = before;
            }
        }
        (at > now).then_some(at)
    }

    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some(Ok(b));
            }
            match &mut self.phase {
                Phase::Initial(objects, rev) => match objects.next() {
                    Some(o) => {
                        if self.encoder.matches(&o) {
                            self.encoder
                                .emit("ADDED", o.json.clone(), &mut self.pending);
                        }
                    }
                    None => {
                        if self.initial_events_end {
                            self.encoder.initial_events_end(*rev, &mut self.pending);
                        }
                        self.phase = Phase::Live;
                    }
                },
                Phase::Replay(events) => match events.next() {
                    Some(e) => self.encoder.event(&e, &mut self.pending),
                    None => self.phase = Phase::Live,
                },
                Phase::Live => {
                    let next = self.watcher.queue().pop_front();
                    if let Some(e) = next {
                        self.encoder.event(&e, &mut self.pending);
                        continue;
                    }
                    if self.watcher.closed.load(Ordering::SeqCst) {
                        if self.watcher.slow.load(Ordering::SeqCst) {
                            return Some(Err(std::io::Error::other("the watcher fell behind")));
                        }
                        return None;
                    }
                    let far = Instant::now() + Duration::from_secs(86400 * 365);
                    let bookmark_at = self.next_bookmark;
                    let deadline = self.deadline;
                    tokio::select! {
                        () = self.watcher.notify.notified() => {}
                        () = tokio::time::sleep_until(bookmark_at.unwrap_or(far)), if bookmark_at.is_some() => {
                            if let Some(rev) = self.cache.bookmark_revision(&self.watcher) {
                                self.encoder.bookmark(rev, &mut self.pending);
                                self.next_bookmark = self.bookmark_after(Instant::now());
                            }
                        }
                        () = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => return None,
                    }
                }
            }
        }
    }
}

/// Reads served from the cache when it is current ([`WatchCache::reads`]); a [`Store`], so that
/// code reading through the store interface can read through it. Values are the objects as
/// served (with their `resourceVersion`); `create_revision` is not kept by the cache and is 0.
pub struct Reads {
    cache: Arc<WatchCache>,
    cached: bool,
}

impl Reads {
    /// Whether reads are answered from the cache.
    pub fn cached(&self) -> bool {
        self.cached
    }

    fn kv(key: &str, obj: &Object) -> strata_store::KeyValue {
        strata_store::KeyValue { key: key.to_string(), value: obj.json.to_vec(), create_revision: 0, mod_revision: obj.rev }
    }
}

#[async_trait::async_trait]
impl Store for Reads {
    async fn get(&self, key: &str) -> strata_store::Result<Option<strata_store::KeyValue>> {
        if self.cached {
            let st = self.cache.state();
            if st.ready {
                return Ok(st.objects.get(key).map(|o| Self::kv(key, o)));
            }
        }
        self.cache.store.get(key).await
    }
    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> strata_store::Result<strata_store::ListResult> {
        if self.cached && start_after.is_none() && limit == 0 {
            let st = self.cache.state();
            if st.ready {
                let items = st.objects.range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded)).take_while(|(k, _)| k.starts_with(prefix)).map(|(k, o)| Self::kv(k, o)).collect();
                return Ok(strata_store::ListResult { items, revision: st.revision, more: false, remaining: 0 });
            }
        }
        self.cache.store.list(prefix, start_after, limit).await
    }
    async fn list_at(&self, prefix: &str, revision: u64, start_after: Option<&str>, limit: usize) -> strata_store::Result<strata_store::ListResult> {
        self.cache.store.list_at(prefix, revision, start_after, limit).await
    }
    async fn readable(&self, revision: u64) -> strata_store::Result<()> {
        self.cache.store.readable(revision).await
    }
    async fn count(&self, prefix: &str) -> strata_store::Result<u64> {
        self.cache.store.count(prefix).await
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> strata_store::Result<u64> {
        self.cache.store.create(key, value).await
    }
    async fn update(&self, key: &str, value: Vec<u8>, expected: u64) -> strata_store::Result<u64> {
        self.cache.store.update(key, value, expected).await
    }
    async fn delete(&self, key: &str, expected: u64) -> strata_store::Result<strata_store::KeyValue> {
        self.cache.store.delete(key, expected).await
    }
    async fn txn(&self, compares: Vec<strata_store::Compare>, ops: Vec<strata_store::Op>) -> strata_store::Result<u64> {
        self.cache.store.txn(compares, ops).await
    }
    async fn watch(&self, prefix: &str, after: u64) -> strata_store::Result<strata_store::WatchStream> {
        self.cache.store.watch(prefix, after).await
    }
    async fn revision(&self) -> strata_store::Result<u64> {
        self.cache.store.revision().await
    }
    async fn compact(&self, revision: u64) -> strata_store::Result<()> {
        self.cache.store.compact(revision).await
    }
    async fn stale(&self, key: &str) -> strata_store::Result<bool> {
        self.cache.store.stale(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(rev: u64, cur: Option<Value>, prev: Option<Value>) -> Event {
        let obj = |v: Value, r: u64| {
            Arc::new(
                Object::decode("/registry/core/configmaps/d/a", v.to_string().as_bytes(), r).expect("json"),
            )
        };
        Event {
            rev,
            key: "/registry/core/configmaps/d/a".into(),
            cur: cur.map(|v| obj(v, rev)),
            prev: prev.map(|v| obj(v, rev - 1)),
            prev_at_rev: OnceLock::new(),
        }
    }

    fn encoder(labels: &str) -> Encoder {
        Encoder {
            labels: LabelSelector::parse(labels).expect("selector"),
            fields: FieldSelector::default(),
            kind: "ConfigMap",
            api_version: "v1".into(),
            custom: None,
            transform: Transform::None,
        }
    }

    fn lines(out: &mut VecDeque<Bytes>) -> Vec<Value> {
        let all: Vec<u8> = out.drain(..).flat_map(|b| b.to_vec()).collect();
        all.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("json line"))
            .collect()
    }

    #[test]
    fn event_types_follow_the_selector() {
        let web = json!({"metadata": {"name": "a", "labels": {"app": "web"}}});
        let db = json!({"metadata": {"name": "a", "labels": {"app": "db"}}});
        let e = encoder("app=web");
        let mut out = VecDeque::new();
        for event in [
            ev(5, Some(db.clone()), None),
            ev(6, Some(web.clone()), Some(db.clone())),
            ev(7, Some(web.clone()), Some(web.clone())),
            ev(8, Some(db.clone()), Some(web.clone())),
            ev(9, None, Some(db.clone())),
            ev(10, Some(web.clone()), None),
            ev(11, None, Some(web.clone())),
        ] {
            e.event(&event, &mut out);
        }
        let got: Vec<(String, String, String)> = lines(&mut out)
            .iter()
            .map(|l| {
                (
                    l["type"].as_str().unwrap_or("").into(),
                    l["object"]["metadata"]["labels"]["app"]
                        .as_str()
                        .unwrap_or("")
                        .into(),
                    l["object"]["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("")
                        .into(),
                )
            })
            .collect();
        let want = [
            ("ADDED", "web", "6"),
            ("MODIFIED", "web", "7"),
            ("DELETED", "web", "8"),
            ("ADDED", "web", "10"),
            ("DELETED", "web", "11"),
        ];
        assert_eq!(
            got,
            want.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        );
        // Without a selector, a put with a previous value is MODIFIED.
        let e = encoder("");
        e.event(&ev(5, Some(db.clone()), None), &mut out);
        e.event(&ev(6, Some(web), Some(db)), &mut out);
        let types: Vec<Value> = lines(&mut out).iter().map(|l| l["type"].clone()).collect();
        assert_eq!(types, [json!("ADDED"), json!("MODIFIED")]);
    }

    /// A list from the cache is the store's list: the latest state, pages at a past revision
    /// rebuilt from the ring while writes go on (changed, deleted, created keys), selectors,
    /// counts; a revision older than the ring is left to the store.
#[test]
    fn the_lean_decoding_serves_what_decoding_the_tree_serves() {
        let full = |v: &[u8], rev: u64| {
            let v: Value = serde_json::from_slice(v).expect("json");
            (crate::object::to_json(&with_rv(v.clone(), rev)), selector::attributes(&v))
        };
        let objects = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "d", "labels": {"app": "web", "té": "\"q\""}, "uid": "u"},
                   "spec": {"nodeName": "n1", "schedulerName": "default-scheduler", "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "100m"}}}], "priority": 0, "x": 1.5e300},
                   "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "unbound", "namespace": "d", "resourceVersion": "7"}, "spec": {"containers": []}}),
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "d"}, "involvedObject": {"kind": "Pod", "name": "p", "uid": "u"}, "reason": "Scheduled", "type": "Normal", "count": 1}),
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1", "namespace": "kube-node-lease"}, "spec": {"renewTime": "2026-01-01T00:00:00.000000Z", "leaseDurationSeconds": 40}}),
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {"unschedulable": true}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "odd"}, "spec": "not a map", "status": [1, 2]}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d", "labels": null}, "data": {"a\nb": "<tag>&", "e": ""}}),
        ];
        for (i, o) in objects.iter().enumerate() {
            let stored = crate::object::for_storage(o);
            let rev = 40 + i as u64;
            let lean = Object::decode_lean(&stored, rev).expect("lean");
            let (json, attrs) = full(&stored, rev);
            assert_eq!(std::str::from_utf8(&lean.json).expect("utf8"), std::str::from_utf8(&json).expect("utf8"), "object {i}");
            assert_eq!(lean.attrs, attrs, "object {i}");
        }
        // Input written by something else: escapes, spacing and a repeated key come out as a
        // decoded tree writes them.
        let foreign = br#"{ "kind" : "ConfigMap", "apiVersion":"v1", "metadata": {"name":"c\u003c", "namespace":"d", "name": "c2"}, "data": {"k": "\u003cx\u003e"} }"#;
        let lean = Object::decode_lean(foreign, 3).expect("lean");
        let v: Value = serde_json::from_slice(&lean.json).expect("json");
        assert_eq!(v, with_rv(serde_json::from_slice(foreign).expect("json"), 3));
        assert_eq!(lean.attr("metadata.name"), &json!("c2"));
        // What the lean path does not take is decoded as a tree.
        for odd in [&br#"{"kind": "X", "metadata": null}"#[..], br#"{"kind": "X"}"#, br#"[1]"#] {
            assert!(Object::decode_lean(odd, 1).is_none());
        }
        let odd = Object::decode("/registry/x/y/z", br#"{"kind": "X", "metadata": null}"#, 5).expect("decoded");
        assert_eq!(serde_json::from_slice::<Value>(&odd.json).expect("json")["metadata"]["resourceVersion"], json!("5"));
        assert!(Object::decode("/registry/x/y/z", b"{not json", 5).is_none());
    }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admission_reads_are_as_current_as_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(strata_store::embedded::Embedded::open(&dir.path().join("db")).expect("store"));
        let prefix = "/registry/core/limitranges/d/";
        let lr = |name: &str| serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": name, "namespace": "d"}})).expect("json");
        let cache = WatchCache::start(store.clone(), Config::default());
        let names = |r: &strata_store::ListResult| r.items.iter().map(|kv| serde_json::from_slice::<Value>(&kv.value).expect("json")["metadata"]["name"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>();
        for round in 0..20 {
            // Each write is read back at once: the reads wait for the cache to reach it.
            let rev = store.create(&format!("{prefix}r{round:02}"), lr(&format!("r{round:02}"))).await.expect("create");
            let reads = cache.reads().await;
            assert!(reads.cached(), "the cache caught up");
            let all = reads.list(prefix, None, 0).await.expect("list");
            assert_eq!(all.items.len(), round + 1, "round {round}: {:?}", names(&all));
            assert!(all.revision >= rev);
            let got = reads.get(&format!("{prefix}r{round:02}")).await.expect("get").expect("present");
            assert_eq!(got.mod_revision, rev);
            let v: Value = serde_json::from_slice(&got.value).expect("json");
            assert_eq!(v["metadata"]["resourceVersion"], json!(rev.to_string()), "the object as served");
        }
        store.delete(&format!("{prefix}r00"), 0).await.expect("delete");
        let reads = cache.reads().await;
        assert!(reads.get(&format!("{prefix}r00")).await.expect("get").is_none(), "a deleted key is gone");
        // A page (not a whole list) is the store's, as is everything but gets and lists.
        let page = reads.list(prefix, None, 5).await.expect("page");
        assert_eq!((page.items.len(), page.more), (5, true));
        assert_eq!(page.items[0].create_revision, page.items[0].mod_revision, "read from the store");
        assert_eq!(reads.revision().await.expect("revision"), store.revision().await.expect("revision"));
    }

    #[tokio::test]
    async fn lists_are_the_stores_at_every_revision() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(strata_store::embedded::Embedded::open(&dir.path().join("db")).expect("store"));
        let prefix = "/registry/core/configmaps/d/";
        let cm = |name: &str, v: &str| serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "d", "labels": {"v": v}}})).expect("json");
        let mut revs = HashMap::new();
        for i in 0..8 {
            let key = format!("{prefix}c{i}");
            revs.insert(key.clone(), store.create(&key, cm(&format!("c{i}"), "1")).await.expect("create"));
        }
        let cache = WatchCache::start(store.clone(), Config { ring_events: 6, ..Config::default() });
        let (none_l, none_f) = (LabelSelector::default(), FieldSelector::default());
        let names = |p: &ListPage| p.items.iter().map(|o| serde_json::from_slice::<Value>(&o.json).expect("json")["metadata"]["name"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>();
        let first = cache.list(prefix, ListRead::Latest, None, 3, &none_l, &none_f).await.expect("served");
        assert_eq!(names(&first), ["c0", "c1", "c2"]);
        assert_eq!((first.next.as_deref(), first.remaining), (Some(format!("{prefix}c2").as_str()), 5));
        let at = first.revision;
        // Writes after the first page: one key changed, one deleted, one created in the range.
        store.update(&format!("{prefix}c4"), cm("c4", "2"), revs[&format!("{prefix}c4")]).await.expect("update");
        store.delete(&format!("{prefix}c5"), 0).await.expect("delete");
        store.create(&format!("{prefix}c3a"), cm("c3a", "1")).await.expect("create");
        assert!(cache.sync(Duration::from_secs(5)).await);
        let second = cache.list(prefix, ListRead::Exact(at), first.next.as_deref(), 3, &none_l, &none_f).await.expect("served from the ring");
        assert_eq!(names(&second), ["c3", "c4", "c5"], "the state at the first page's revision");
        assert_eq!(second.remaining, 2);
        let from_store = store.list_at(prefix, at, first.next.as_deref(), 3).await.expect("store");
        let cached: Vec<Value> = second.items.iter().map(|o| serde_json::from_slice(&o.json).expect("json")).collect();
        let stored: Vec<Value> = from_store.items.iter().map(|kv| with_rv(serde_json::from_slice(&kv.value).expect("json"), kv.mod_revision)).collect();
        assert_eq!(cached, stored, "the same objects, resourceVersions included");
        assert_eq!(second.remaining, from_store.remaining);
        let third = cache.list(prefix, ListRead::Exact(at), second.next.as_deref(), 3, &none_l, &none_f).await.expect("served");
        assert_eq!((names(&third), third.next.clone(), third.remaining), (vec!["c6".to_string(), "c7".into()], None, 0));
        // The latest state, with a label selector: no count, the next key after the last match.
        let v1 = LabelSelector::parse("v=1").expect("selector");
        let now = cache.list(prefix, ListRead::NotOlderThan(0), None, 0, &v1, &none_f).await.expect("served");
        assert_eq!(names(&now), ["c0", "c1", "c2", "c3", "c3a", "c6", "c7"]);
        let some = cache.list(prefix, ListRead::Latest, None, 2, &v1, &none_f).await.expect("served");
        assert_eq!((names(&some), some.next.as_deref()), (vec!["c0".to_string(), "c1".into()], Some(format!("{prefix}c1").as_str())));
        // More changes than the ring holds: the first page's revision is the store's to serve.
        for i in 0..8 {
            store.create(&format!("{prefix}z{i}"), cm("z", "1")).await.expect("create");
        }
        assert!(cache.sync(Duration::from_secs(5)).await);
        assert!(cache.list(prefix, ListRead::Exact(at), None, 3, &none_l, &none_f).await.is_none());
    }

    #[test]
    fn a_full_queue_closes_the_watcher_and_frees_it() {
        let closer = Arc::new(Notify::new());
        let w = Watcher {
            prefix: String::new(),
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            slow: AtomicBool::new(false),
            close_connection: Some(closer),
        };
        let e = Arc::new(ev(2, Some(json!({"metadata": {"name": "a"}})), None));
        for _ in 0..3 {
            assert!(w.push(e.clone(), 3));
        }
        assert!(!w.push(e.clone(), 3), "the fourth overflows");
        assert!(w.closed.load(Ordering::SeqCst) && w.slow.load(Ordering::SeqCst));
        assert!(w.queue().is_empty());
        assert_eq!(Arc::strong_count(&e), 1, "the queue let go of the events");
    }
}
