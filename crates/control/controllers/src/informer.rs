//! One watch of a kind shared by every controller that reads it (kube-controller-manager's
//! shared informer): one list+watch, one decode of each event, one cache (a reflector
//! [`Store`]) and one [`OwnerIndex`] over it, and a fan-out of the changed objects to each
//! subscriber. A subscriber gets every object in the cache when it subscribes (if the cache
//! has had its first list) and then every object that changed or was deleted, in the order the
//! cache applied them, as `Arc`s of the cache's own objects: what a `Controller`'s
//! `owns_shared_stream` / `watches_shared_stream` / `for_shared_stream` take, so each
//! controller still reconciles its own keys (its owner, its selector's objects), level-triggered.
//!
//! kube-runtime's own shared streams (`store_shared`) do not pass deletions on and make every
//! subscriber wait for the slowest; here each subscriber has its own unbounded queue of `Arc`s
//! (a pointer per change), deletions are passed on, and a relist passes on every object of the
//! new list plus those it no longer holds (deleted while the watch was down).
//!
//! Restart safety: the cache lives as long as [`crate::run_controllers`]' call (one leadership
//! term). [`Shared::run`] may be restarted over the same cache (it relists; the store swaps at
//! the end of the list as a reflector's does); a controller restarted alone subscribes again
//! and is handed the whole cache, as a fresh watch of its own would have listed it.

use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::{Stream, StreamExt};
use strata_client::lean;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use tokio::sync::mpsc;

use crate::owners::OwnerIndex;

struct Feed<K: Resource<DynamicType = ()> + Clone + 'static> {
    writer: Mutex<reflector::store::Writer<K>>,
    index: OwnerIndex<K>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Arc<K>>>>,
}

/// A shared watch of kind `K`: its cache, its owner index and its subscribers.
pub struct Shared<K: Resource<DynamicType = ()> + Clone + 'static> {
    feed: Arc<Feed<K>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Clone for Shared<K> {
    fn clone(&self) -> Self {
        Shared { feed: self.feed.clone() }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<K> Default for Shared<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + k8s_openapi::serde::de::DeserializeOwned + 'static,
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K> Shared<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + k8s_openapi::serde::de::DeserializeOwned + 'static,
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
{
    /// An empty cache (not synced) and no subscribers; [`Shared::run`] fills it.
    pub fn new() -> Self {
        let writer = reflector::store::Writer::<K>::default();
        let index = OwnerIndex::new(writer.as_reader());
        Shared { feed: Arc::new(Feed { writer: Mutex::new(writer), index, subscribers: Mutex::new(Vec::new()) }) }
    }

    /// The cache (readiness, lookups, the whole state).
    pub fn store(&self) -> &Store<K> {
        self.feed.index.store()
    }

    /// The cache by namespace and controller owner.
    pub fn owners(&self) -> &OwnerIndex<K> {
        &self.feed.index
    }

    /// Every object in the cache now (none before the first list completes: the end of that
    /// list brings them all), then every object changed or deleted after.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (tx, rx) = mpsc::unbounded_channel();
        // Under the subscribers' lock: a change applied to the cache after this snapshot is
        // sent after the lock is released, so it reaches this subscriber too.
        let mut subs = lock(&self.feed.subscribers);
        if crate::synced(self.store()) {
            for obj in self.store().state() {
                let _ = tx.send(obj);
            }
        }
        subs.push(tx);
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|obj| (obj, rx)) })
    }

    /// List and watch `api` into the cache and pass every change on; returns only if the
    /// watch stream ends (it retries errors with the default backoff, so it does not).
    pub async fn run(&self, api: Api<K>) {
        let mut events = lean::watcher(api, crate::watch_config()).default_backoff().boxed();
        while let Some(ev) = events.next().await {
            match ev {
                Ok(ev) => self.apply(ev),
                Err(e) => tracing::warn!(kind = %K::kind(&()), error = %e, "shared watch"),
            }
        }
    }

    /// Apply one watch event to the cache and the index, then send what it touched.
    pub(crate) fn apply(&self, ev: watcher::Event<K>) {
        let before = matches!(ev, watcher::Event::InitDone).then(|| self.store().state());
        lock(&self.feed.writer).apply_watcher_event(&ev);
        self.feed.index.apply(&ev);
        let touched: Vec<Arc<K>> = match ev {
            watcher::Event::Apply(obj) => vec![self.store().get(&ObjectRef::from_obj(&obj)).unwrap_or_else(|| Arc::new(obj))],
            watcher::Event::Delete(obj) => vec![Arc::new(obj)],
            watcher::Event::InitDone => {
                let store = self.store();
                let mut all = store.state();
                all.extend(before.into_iter().flatten().filter(|o| store.get(&ObjectRef::from_obj(o.as_ref())).is_none()));
                all
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => Vec::new(),
        };
        if touched.is_empty() {
            return;
        }
        lock(&self.feed.subscribers).retain(|tx| touched.iter().all(|obj| tx.send(obj.clone()).is_ok()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn pod(name: &str, owner: Option<&str>, rv: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some("ns".into());
        p.metadata.name = Some(name.into());
        p.metadata.resource_version = Some(rv.into());
        p.metadata.owner_references = owner.map(|uid| vec![OwnerReference { uid: uid.into(), controller: Some(true), ..Default::default() }]);
        p
    }

    /// What a subscriber has been sent so far, as `name@resourceVersion`.
    fn drain(s: &mut (impl Stream<Item = Arc<Pod>> + Unpin)) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(Some(p)) = futures_util::FutureExt::now_or_never(s.next()) {
            out.push(format!("{}@{}", p.metadata.name.clone().unwrap_or_default(), p.metadata.resource_version.clone().unwrap_or_default()));
        }
        out.sort();
        out
    }

    #[test]
    fn subscribers_get_the_cache_then_every_change_deletions_and_relist_gaps_included() {
        let shared: Shared<Pod> = Shared::new();
        let mut early = Box::pin(shared.subscribe());
        shared.apply(watcher::Event::Init);
        shared.apply(watcher::Event::InitApply(pod("a", Some("u1"), "1")));
        shared.apply(watcher::Event::InitApply(pod("b", None, "2")));
        assert!(drain(&mut early).is_empty(), "nothing before the list is complete");
        assert!(!crate::synced(shared.store()));
        shared.apply(watcher::Event::InitDone);
        assert!(crate::synced(shared.store()));
        assert_eq!(drain(&mut early), ["a@1", "b@2"]);

        // A late subscriber is handed the cache first.
        let mut late = Box::pin(shared.subscribe());
        assert_eq!(drain(&mut late), ["a@1", "b@2"]);

        shared.apply(watcher::Event::Apply(pod("b", Some("u1"), "3")));
        shared.apply(watcher::Event::Delete(pod("a", Some("u1"), "4")));
        assert_eq!(drain(&mut early), ["a@4", "b@3"]);
        assert_eq!(drain(&mut late), ["a@4", "b@3"]);
        let (owned, orphans) = shared.owners().owned_and_orphans("ns", "u1");
        assert_eq!((owned.len(), orphans.len()), (1, 0), "the index follows the cache");

        // A relist that no longer holds b (deleted while the watch was down) and brings c.
        drop(late);
        shared.apply(watcher::Event::Init);
        shared.apply(watcher::Event::InitApply(pod("c", None, "6")));
        shared.apply(watcher::Event::InitDone);
        assert_eq!(drain(&mut early), ["b@3", "c@6"]);
        assert!(shared.store().get(&ObjectRef::new("b").within("ns")).is_none());
        assert_eq!(shared.owners().owned_and_orphans("ns", "u1").0.len(), 0);
        assert_eq!(lock(&shared.feed.subscribers).len(), 1, "a dropped subscriber is forgotten");
    }
}
