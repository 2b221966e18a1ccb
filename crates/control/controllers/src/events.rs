//! Events (core/v1, what `kubectl describe` and `kubectl get events` show) recorded by the
//! controllers about the objects they act on. Best effort: a failed write is logged, never
//! stops a reconcile.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};

#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    component: String,
}

impl Recorder {
    pub fn new(client: kube::Client, component: &str) -> Self {
        Recorder { client, component: component.to_string() }
    }

    /// A `Normal` event.
    pub async fn normal<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, message: &str) {
        self.record(obj, "Normal", reason, message).await
    }

    /// A `Warning` event.
    pub async fn warning<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, message: &str) {
        self.record(obj, "Warning", reason, message).await
    }

    pub async fn record<K: Resource<DynamicType = ()>>(&self, obj: &K, type_: &str, reason: &str, message: &str) {
        let reference = obj.object_ref(&());
        self.record_ref(reference, type_, reason, message).await
    }

    pub async fn record_ref(&self, reference: ObjectReference, type_: &str, reason: &str, message: &str) {
        let ns = reference.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".to_string());
        let now = chrono::Utc::now();
        let name = format!("{}.{:x}", reference.name.clone().unwrap_or_default(), now.timestamp_nanos_opt().unwrap_or(0));
        let ev = Event {
            metadata: ObjectMeta { name: Some(name), namespace: Some(ns.clone()), ..Default::default() },
            involved_object: reference,
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(type_.to_string()),
            source: Some(EventSource { component: Some(self.component.clone()), host: None }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.component.clone()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = api.create(&PostParams::default(), &ev).await {
            tracing::debug!(error = %e, reason, "recording an event");
        }
    }
}

/// `namespace/name` of an object, for logs.
pub fn key<K: ResourceExt>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}
