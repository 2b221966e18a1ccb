//! Objects decoded without `metadata.managedFields`, for watch caches (client-go's
//! `TransformStripManagedFields`, which kube-scheduler and kube-controller-manager set on
//! their informers).
//!
//! A component's cache never reads managedFields, yet they are most of a pod's metadata: each
//! entry's `fieldsV1` is a tree of every field its manager set. Stripping them after decoding
//! (as client-go does) saves the memory; [`Lean`] does not build them at all: its decoder
//! passes `metadata.managedFields` to [`serde::de::IgnoredAny`], which reads past the JSON
//! without allocating, and hands every other key and value to `K`'s own decoder unchanged.
//!
//! Writing such an object back is safe: an update that carries no managedFields keeps the
//! stored ones (upstream's field manager, and strata's `managed::record_update`).
//!
//! Use [`watcher`] in place of `kube::runtime::watcher` to list and watch `K` leanly.

use std::borrow::Cow;
use std::fmt;

use futures_util::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher as kw;
use kube::Api;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// `K` as decoded without its `metadata.managedFields` (they are `None`).
#[derive(Clone, Debug, PartialEq)]
pub struct Lean<K>(pub K);

/// `K`'s kind, with a dynamic scope so that one constructor serves cluster-wide and
/// namespaced watches alike.
impl<K> kube::Resource for Lean<K>
where
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    type DynamicType = ();
    type Scope = kube::core::DynamicResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(K::KIND)
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(K::GROUP)
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(K::VERSION)
    }
    fn api_version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(K::API_VERSION)
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(K::URL_PATH_SEGMENT)
    }
    fn meta(&self) -> &ObjectMeta {
        self.0.metadata()
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.metadata_mut()
    }
}

impl<'de, K: Deserialize<'de>> Deserialize<'de> for Lean<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        K::deserialize(Wrap {
            inner: d,
            level: Level::Object,
        })
        .map(Lean)
    }
}

/// An `ObjectMeta` decoded without its managedFields, for a field of a type of one's own
/// (`#[serde(deserialize_with = "strata_client::lean::meta")]` on its `metadata`).
pub fn meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    ObjectMeta::deserialize(Wrap {
        inner: d,
        level: Level::Meta,
    })
}

/// `kube::runtime::watcher` of `K`, each object decoded as a [`Lean`] one.
pub fn watcher<K>(
    api: Api<K>,
    config: kw::Config,
) -> impl Stream<Item = kw::Result<kw::Event<K>>> + Send
where
    K: k8s_openapi::Resource
        + k8s_openapi::Metadata<Ty = ObjectMeta>
        + Clone
        + fmt::Debug
        + Send
        + Sync
        + de::DeserializeOwned
        + 'static,
{
    use kw::Event;
    kw::watcher(lean_api(api), config).map(|ev| {
        ev.map(|ev| match ev {
            Event::Apply(Lean(k)) => Event::Apply(k),
            Event::Delete(Lean(k)) => Event::Delete(k),
            Event::InitApply(Lean(k)) => Event::InitApply(k),
            Event::Init => Event::Init,
            Event::InitDone => Event::InitDone,
        })
    })
}

/// `api` as an `Api<Lean<K>>`: the same client and namespace (`Lean<K>` has `K`'s kind, so the
/// same URL).
fn lean_api<K>(api: Api<K>) -> Api<Lean<K>>
where
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    let ns = namespace_of::<K>(api.resource_url());
    let client: kube::Client = api.into();
    match ns {
        Some(ns) => Api::namespaced_with(client, &ns, &()),
        None => Api::all_with(client, &()),
    }
}

/// The namespace of a namespaced `K`'s collection URL (`…/namespaces/NS/PLURAL`), if any.
fn namespace_of<K: k8s_openapi::Resource>(url: &str) -> Option<String> {
    let rest = url.strip_suffix(K::URL_PATH_SEGMENT)?.strip_suffix('/')?;
    let (before, ns) = rest.rsplit_once('/')?;
    before.ends_with("/namespaces").then(|| ns.to_string())
}

/// Where in the object a map being decoded sits.
#[derive(Clone, Copy, PartialEq)]
enum Level {
    /// The object itself: its `metadata` value is decoded at [`Level::Meta`].
    Object,
    /// `metadata`: its `managedFields` are skipped.
    Meta,
}

/// A deserializer whose maps are filtered at `level` (only its own map: values inside are
/// handed to the wrapped decoder as they are).
struct Wrap<D> {
    inner: D,
    level: Level,
}

struct WrapVisitor<V> {
    inner: V,
    level: Level,
}

struct WrapMap<M> {
    inner: M,
    level: Level,
    next_is_meta: bool,
}

/// A key, borrowed from the input when it can be.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de, M: MapAccess<'de>> MapAccess<'de> for WrapMap<M> {
    type Error = M::Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, M::Error> {
        loop {
            let Some(Key(key)) = self.inner.next_key::<Key<'de>>()? else {
                return Ok(None);
            };
            match self.level {
                Level::Meta if key == "managedFields" => {
                    self.inner.next_value::<IgnoredAny>()?;
                    continue;
                }
                Level::Object => self.next_is_meta = key == "metadata",
                Level::Meta => {}
            }
            return match key {
                Cow::Borrowed(k) => {
                    seed.deserialize(de::value::BorrowedStrDeserializer::<M::Error>::new(k))
                }
                Cow::Owned(k) => {
                    seed.deserialize(de::value::StringDeserializer::<M::Error>::new(k))
                }
            }
            .map(Some);
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, M::Error> {
        if std::mem::take(&mut self.next_is_meta) {
            self.inner.next_value_seed(MetaSeed(seed))
        } else {
            self.inner.next_value_seed(seed)
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// Decodes `metadata`'s value with its managedFields skipped.
struct MetaSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for MetaSeed<S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Wrap {
            inner: d,
            level: Level::Meta,
        })
    }
}

/// Visitor methods that pass their value through untouched.
macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for WrapVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Wrap {
            inner: d,
            level: self.level,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_newtype_struct(Wrap {
            inner: d,
            level: self.level,
        })
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner.visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(WrapMap {
            inner: map,
            level: self.level,
            next_is_meta: false,
        })
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(data)
    }
}

/// Deserializer methods whose visitor sees a map filtered at this level.
macro_rules! wrap_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method($($arg,)* WrapVisitor { inner: visitor, level: self.level })
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Wrap<D> {
    type Error = D::Error;

    wrap_deserialize!(
        deserialize_any(), deserialize_bool(), deserialize_i8(), deserialize_i16(), deserialize_i32(), deserialize_i64(),
        deserialize_i128(), deserialize_u8(), deserialize_u16(), deserialize_u32(), deserialize_u64(), deserialize_u128(),
        deserialize_f32(), deserialize_f64(), deserialize_char(), deserialize_str(), deserialize_string(),
        deserialize_bytes(), deserialize_byte_buf(), deserialize_option(), deserialize_unit(),
        deserialize_unit_struct(name: &'static str), deserialize_newtype_struct(name: &'static str), deserialize_seq(),
        deserialize_tuple(len: usize), deserialize_tuple_struct(name: &'static str, len: usize), deserialize_map(),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]), deserialize_identifier(),
        deserialize_ignored_any(),
    );

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::json;

    fn pod_json() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web-1", "namespace": "default", "uid": "u1", "resourceVersion": "7",
                "labels": {"app": "web", "managedFields": "a label, kept"},
                "annotations": {"managedFields": "an annotation, kept"},
                "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {}}}}}],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "r1", "controller": true}],
            },
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "img",
                "env": [{"name": "managedFields", "value": "x"}]}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        })
    }

    #[test]
    fn decodes_everything_but_managed_fields() {
        let v = pod_json();
        let full: Pod = serde_json::from_value(v.clone()).unwrap();
        assert!(full.metadata.managed_fields.is_some());
        // From bytes (borrowed keys) and from a Value (owned keys): the same result.
        let bytes = serde_json::to_vec(&v).unwrap();
        let Lean(lean): Lean<Pod> = serde_json::from_slice(&bytes).unwrap();
        let Lean(lean_v): Lean<Pod> = serde_json::from_value(v).unwrap();
        assert_eq!(lean, lean_v);
        assert_eq!(lean.metadata.managed_fields, None);
        let mut expect = full;
        expect.metadata.managed_fields = None;
        assert_eq!(lean, expect);
        // A key named managedFields elsewhere (a label, an annotation, an env var) is kept.
        assert_eq!(
            lean.metadata.labels.as_ref().unwrap()["managedFields"],
            "a label, kept"
        );
        assert_eq!(
            lean.metadata.annotations.as_ref().unwrap()["managedFields"],
            "an annotation, kept"
        );
        assert_eq!(
            lean.spec.as_ref().unwrap().containers[0]
                .env
                .as_ref()
                .unwrap()[0]
                .name,
            "managedFields"
        );
    }

    #[test]
    fn keys_with_escapes_and_bad_input() {
        // An escaped key cannot be borrowed: it is decoded owned, and still matched.
        let text = r#"{"kind":"Node","metadata":{"name":"n\u0031","managed\u0046ields":[{"manager":"m"}]}}"#;
        let Lean(node): Lean<Node> = serde_json::from_str(text).unwrap();
        assert_eq!(node.metadata.name.as_deref(), Some("n1"));
        assert_eq!(node.metadata.managed_fields, None);
        // Broken JSON inside the skipped value is still an error, and so is a wrong type elsewhere.
        assert!(
            serde_json::from_str::<Lean<Node>>(r#"{"metadata":{"managedFields":[{]}}"#).is_err()
        );
        let err = serde_json::from_str::<Lean<Node>>(r#"{"metadata":{"name":5}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid type"), "{err}");
    }

    #[test]
    fn list_and_watch_event_shapes() {
        let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "9"}, "items": [pod_json(), pod_json()]});
        let l: kube::core::ObjectList<Lean<Pod>> = serde_json::from_value(list).unwrap();
        assert_eq!(l.items.len(), 2);
        assert!(l.items.iter().all(|p| p.0.metadata.managed_fields.is_none()
            && p.0.metadata.name.as_deref() == Some("web-1")));
        let ev = json!({"type": "MODIFIED", "object": pod_json()});
        let ev: kube::core::WatchEvent<Lean<Pod>> = serde_json::from_value(ev).unwrap();
        let kube::core::WatchEvent::Modified(Lean(p)) = ev else {
            panic!("not modified")
        };
        assert_eq!(p.metadata.resource_version.as_deref(), Some("7"));
        assert!(p.metadata.managed_fields.is_none());
    }

    #[test]
    fn metadata_of_a_type_of_ones_own() {
        #[derive(Deserialize)]
        struct Meta {
            #[serde(default, deserialize_with = "meta")]
            metadata: ObjectMeta,
        }
        let m: Meta = serde_json::from_value(pod_json()).unwrap();
        assert_eq!(m.metadata.owner_references.as_ref().map(Vec::len), Some(1));
        assert!(m.metadata.managed_fields.is_none());
        let m: Meta = serde_json::from_str("{}").unwrap();
        assert_eq!(m.metadata, ObjectMeta::default());
    }

    #[test]
    fn the_namespace_of_a_collection_url() {
        use k8s_openapi::api::coordination::v1::Lease;
        assert_eq!(
            namespace_of::<Pod>("/api/v1/namespaces/kube-system/pods").as_deref(),
            Some("kube-system")
        );
        assert_eq!(namespace_of::<Pod>("/api/v1/pods"), None);
        assert_eq!(
            namespace_of::<Lease>("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases")
                .as_deref(),
            Some("kube-node-lease")
        );
        assert_eq!(namespace_of::<Node>("/api/v1/nodes"), None);
    }
}
