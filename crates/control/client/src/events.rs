//! Events (core/v1) about any object, written the way client-go's legacy event recorder
//! writes them: `source.component` and `reportingComponent` name the writer, the involved
//! object's reference comes from the object itself, and a repeat of the same reason and
//! message about the same object bumps `count` and `lastTimestamp` of the first Event instead
//! of writing another. Publishing never blocks the caller: events queue (bounded; a full queue
//! drops, as client-go's broadcaster does) to a few writer tasks on the current tokio runtime.
//! Shared by the scheduler, the controllers and the node agent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

const QUEUE: usize = 4096;
const WRITERS: usize = 4;
/// Events remembered for aggregation (then forgotten all at once).
const REMEMBERED: usize = 8192;

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

#[derive(Debug)]
struct Pending {
    object: ObjectReference,
    type_: EventType,
    reason: String,
    message: String,
}

/// Events written, by (object uid, reason, message): the Event's namespace, name and count.
type Seen = Mutex<HashMap<(String, String, String), (String, String, i32)>>;

/// A cloneable handle to the writers.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Pending>,
    seen: Arc<Seen>,
}

impl Recorder {
    /// Start the writers for `component` (e.g. `default-scheduler`, `kubelet`) on the current
    /// tokio runtime.
    pub fn new(client: kube::Client, component: &str) -> Recorder {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let seen: Arc<Seen> = Arc::default();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        for _ in 0..WRITERS {
            let (rx, seen, client, component, host) = (rx.clone(), seen.clone(), client.clone(), component.to_string(), host.clone());
            tokio::spawn(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(p) = next else { return };
                    if let Err(e) = write(&client, &component, &host, &seen, p).await {
                        tracing::debug!(error = %e, "writing an event");
                    }
                }
            });
        }
        Recorder { tx, seen }
    }

    /// Forget the events written about the object with `uid` (it is gone: no repeat will come
    /// to aggregate), so nothing is kept per deleted object.
    pub fn forget(&self, uid: &str) {
        forget(&self.seen, uid);
    }

    /// An event about `obj` (its reference: apiVersion, kind, namespace, name, uid,
    /// resourceVersion).
    pub fn publish<K: kube::Resource<DynamicType = ()>>(&self, obj: &K, type_: EventType, reason: &str, message: impl Into<String>) {
        self.publish_ref(obj.object_ref(&()), type_, reason, message);
    }

    /// An event about the object `object` refers to.
    pub fn publish_ref(&self, object: ObjectReference, type_: EventType, reason: &str, message: impl Into<String>) {
        let p = Pending { object, type_, reason: reason.to_string(), message: message.into() };
        if self.tx.try_send(p).is_err() {
            tracing::debug!("event queue full; event dropped");
        }
    }
}

fn forget(seen: &Seen, uid: &str) {
    if let Ok(mut m) = seen.lock() {
        m.retain(|(object, _, _), _| object != uid);
    }
}

async fn write(client: &kube::Client, component: &str, host: &str, seen: &Seen, p: Pending) -> Result<(), kube::Error> {
    // Events about cluster-scoped objects (nodes) live in `default`, as client-go puts them.
    let namespace = p.object.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".to_string());
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    let now = Time(k8s_openapi::chrono::Utc::now());
    let key = (p.object.uid.clone().unwrap_or_else(|| p.object.name.clone().unwrap_or_default()), p.reason.clone(), p.message.clone());
    let previous = seen.lock().ok().and_then(|m| m.get(&key).cloned());
    if let Some((ns, name, count)) = previous {
        let patch = Event { count: Some(count + 1), last_timestamp: Some(now.clone()), ..Default::default() };
        if Api::<Event>::namespaced(client.clone(), &ns).patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok() {
            if let Ok(mut m) = seen.lock() {
                m.insert(key, (ns, name, count + 1));
            }
            return Ok(());
        }
        // The event is gone (expired or deleted): write a new one.
    }
    let nanos = now.0.timestamp_nanos_opt().unwrap_or(0);
    let name = format!("{}.{:x}", p.object.name.clone().unwrap_or_default(), nanos);
    let ev = Event {
        metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(namespace.clone()), ..Default::default() },
        involved_object: p.object,
        reason: Some(p.reason),
        message: Some(p.message),
        type_: Some(p.type_.as_str().to_string()),
        source: Some(EventSource { component: Some(component.into()), host: None }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some(component.into()),
        reporting_instance: Some(format!("{component}-{host}")),
        ..Default::default()
    };
    api.create(&PostParams::default(), &ev).await?;
    if let Ok(mut m) = seen.lock() {
        if m.len() >= REMEMBERED {
            m.clear();
        }
        m.insert(key, (namespace, name, 1));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgetting_an_object_drops_only_its_events() {
        let seen: Seen = Mutex::default();
        for (uid, reason) in [("u1", "Pulled"), ("u1", "Started"), ("u2", "Pulled")] {
            seen.lock().expect("lock").insert((uid.into(), reason.into(), "m".into()), ("ns".into(), "e".into(), 1));
        }
        forget(&seen, "u1");
        let left: Vec<String> = seen.lock().expect("lock").keys().map(|k| format!("{}/{}", k.0, k.1)).collect();
        assert_eq!(left, vec!["u2/Pulled".to_string()]);
    }
}
