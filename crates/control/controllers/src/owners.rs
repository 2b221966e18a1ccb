//! A watched kind indexed by namespace and controller owner: what a workload controller's
//! reconcile needs (its own objects, plus the orphans its selector could adopt) without
//! copying every object of the namespace, as upstream's informer indexes do. It shares the
//! reflector store's objects (`Arc`s) and follows the store: every watch event updates it after
//! the store, and each completed (re)list rebuilds it from the store.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures_util::{Stream, TryStreamExt};
use strata_client::lean;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};

use crate::replicaset::controller_of;

/// Objects by namespace, then by the uid of their controller (`None`: no controller, an
/// orphan), then by name.
type Buckets<K> = HashMap<String, HashMap<Option<String>, HashMap<String, Arc<K>>>>;

struct Inner<K> {
    buckets: Buckets<K>,
    /// Where each object is filed: namespace, then name, to its controller's uid.
    owner_of: HashMap<String, HashMap<String, Option<String>>>,
}

impl<K> Default for Inner<K> {
    fn default() -> Self {
        Inner { buckets: HashMap::new(), owner_of: HashMap::new() }
    }
}

impl<K: Resource> Inner<K> {
    fn remove(&mut self, ns: &str, name: &str) {
        let Some(names) = self.owner_of.get_mut(ns) else { return };
        let Some(owner) = names.remove(name) else { return };
        if names.is_empty() {
            self.owner_of.remove(ns);
        }
        if let Some(owners) = self.buckets.get_mut(ns) {
            if let Some(objs) = owners.get_mut(&owner) {
                objs.remove(name);
                if objs.is_empty() {
                    owners.remove(&owner);
                }
            }
            if owners.is_empty() {
                self.buckets.remove(ns);
            }
        }
    }

    fn insert(&mut self, obj: Arc<K>) {
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        let name = obj.meta().name.clone().unwrap_or_default();
        self.remove(&ns, &name);
        let owner = controller_of(obj.meta()).map(|o| o.uid.clone());
        self.owner_of.entry(ns.clone()).or_default().insert(name.clone(), owner.clone());
        self.buckets.entry(ns).or_default().entry(owner).or_default().insert(name, obj);
    }
}

/// A reflector store plus its owner index.
pub struct OwnerIndex<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    inner: Arc<RwLock<Inner<K>>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Clone for OwnerIndex<K> {
    fn clone(&self) -> Self {
        OwnerIndex { store: self.store.clone(), inner: self.inner.clone() }
    }
}

impl<K> OwnerIndex<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + k8s_openapi::serde::de::DeserializeOwned + 'static,
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
{
    /// Watch `api` into a store and this index; the returned stream (touched objects, with the
    /// default backoff) must be polled, e.g. by a `Controller`'s `owns_stream`.
    pub fn watch(api: Api<K>) -> (Self, impl Stream<Item = Result<K, watcher::Error>> + Send + 'static) {
        let (store, writer) = reflector::store::<K>();
        let index = OwnerIndex::new(store);
        let feed = index.clone();
        let stream = reflector::reflector(writer, lean::watcher(api, crate::watch_config()))
            .inspect_ok(move |ev| feed.apply(ev))
            .default_backoff()
            .touched_objects();
        (index, stream)
    }

    /// An empty index over `store`, which the caller feeds through [`OwnerIndex::apply`].
    pub(crate) fn new(store: Store<K>) -> Self {
        OwnerIndex { store, inner: Arc::new(RwLock::new(Inner::default())) }
    }

    /// Follow one watch event (the store has applied it already).
    pub(crate) fn apply(&self, ev: &watcher::Event<K>) {
        match ev {
            watcher::Event::Apply(o) => {
                let obj = self.store.get(&ObjectRef::from_obj(o)).unwrap_or_else(|| Arc::new(o.clone()));
                self.write().insert(obj);
            }
            watcher::Event::Delete(o) => {
                let m = o.meta();
                self.write().remove(m.namespace.as_deref().unwrap_or_default(), m.name.as_deref().unwrap_or_default());
            }
            // The store swaps in the complete list at InitDone: so does the index.
            watcher::Event::InitDone => {
                let mut fresh = Inner::default();
                for obj in self.store.state() {
                    fresh.insert(obj);
                }
                *self.write() = fresh;
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> OwnerIndex<K> {
    fn read(&self) -> RwLockReadGuard<'_, Inner<K>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner<K>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The reflector store (readiness, lookups by name).
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// The objects in `ns` controlled by the owner with `uid`, then the objects in `ns` with no
    /// controller (which a selector may adopt). Objects controlled by others are not returned.
    pub fn owned_and_orphans(&self, ns: &str, uid: &str) -> (Vec<Arc<K>>, Vec<Arc<K>>) {
        let inner = self.read();
        let Some(owners) = inner.buckets.get(ns) else { return (Vec::new(), Vec::new()) };
        let owned = owners.get(&Some(uid.to_string())).map(|m| m.values().cloned().collect()).unwrap_or_default();
        let orphans = owners.get(&None).map(|m| m.values().cloned().collect()).unwrap_or_default();
        (owned, orphans)
    }

    /// Whether the cache holds an object `ns/name` now.
    pub fn contains(&self, ns: &str, name: &str) -> bool {
        self.read().owner_of.get(ns).is_some_and(|m| m.contains_key(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn pod(ns: &str, name: &str, owner: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        p.metadata.owner_references = owner.map(|uid| vec![OwnerReference { uid: uid.into(), controller: Some(true), ..Default::default() }]);
        p
    }

    fn names(v: Vec<Arc<Pod>>) -> Vec<String> {
        let mut n: Vec<String> = v.iter().map(|p| p.metadata.name.clone().unwrap_or_default()).collect();
        n.sort();
        n
    }

    #[test]
    fn files_objects_by_namespace_and_controller_and_moves_them() {
        let mut i: Inner<Pod> = Inner::default();
        i.insert(Arc::new(pod("a", "p1", Some("u1"))));
        i.insert(Arc::new(pod("a", "p2", Some("u1"))));
        i.insert(Arc::new(pod("a", "p3", None)));
        i.insert(Arc::new(pod("a", "p4", Some("u2"))));
        i.insert(Arc::new(pod("b", "p1", Some("u1"))));
        let idx = OwnerIndex { store: reflector::store::<Pod>().0, inner: Arc::new(RwLock::new(i)) };
        let (owned, orphans) = idx.owned_and_orphans("a", "u1");
        assert_eq!((names(owned), names(orphans)), (vec!["p1".to_string(), "p2".into()], vec!["p3".to_string()]));
        assert!(idx.contains("a", "p4") && idx.contains("b", "p1") && !idx.contains("b", "p2"));
        // Released (no controller now), adopted by another owner, deleted.
        idx.write().insert(Arc::new(pod("a", "p1", None)));
        idx.write().insert(Arc::new(pod("a", "p3", Some("u2"))));
        idx.write().remove("a", "p2");
        let (owned, orphans) = idx.owned_and_orphans("a", "u1");
        assert_eq!((names(owned), names(orphans)), (Vec::<String>::new(), vec!["p1".to_string()]));
        assert_eq!(names(idx.owned_and_orphans("a", "u2").0), vec!["p3".to_string(), "p4".into()]);
        idx.write().remove("a", "p1");
        idx.write().remove("a", "p3");
        idx.write().remove("a", "p4");
        assert!(!idx.read().buckets.contains_key("a") && !idx.read().owner_of.contains_key("a"), "emptied namespaces are dropped");
        assert!(idx.contains("b", "p1"));
    }
}
