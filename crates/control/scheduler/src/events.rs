//! Events about pods (`Scheduled`, `FailedScheduling`, `Preempted`) written as core/v1 Events
//! from `default-scheduler`, the way client-go's legacy recorder writes them: a repeat of the
//! same reason and message for the same pod bumps `count` and `lastTimestamp` of the first
//! one. Writing never blocks scheduling: events queue (bounded; a full queue drops, as
//! client-go's broadcaster does) to a few writer tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

use crate::info::PodInfo;

const QUEUE: usize = 4096;
const WRITERS: usize = 4;
const REMEMBERED: usize = 8192;

/// Events written, by (pod uid, reason, message): their name and count.
type Seen = Mutex<HashMap<(String, &'static str, String), (String, i32)>>;

#[derive(Debug)]
struct Pending {
    namespace: String,
    name: String,
    uid: String,
    resource_version: Option<String>,
    type_: &'static str,
    reason: &'static str,
    message: String,
}

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Pending>,
}

impl Recorder {
    /// Start the writers (on the current tokio runtime).
    pub fn start(client: kube::Client, component: String) -> Recorder {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let seen: Arc<Seen> = Arc::default();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        for _ in 0..WRITERS {
            let (rx, seen, client, component, host) = (rx.clone(), seen.clone(), client.clone(), component.clone(), host.clone());
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
        Recorder { tx }
    }

    pub fn pod(&self, pod: &PodInfo, type_: &'static str, reason: &'static str, message: String) {
        let p = Pending {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            resource_version: pod.pod.metadata.resource_version.clone(),
            type_,
            reason,
            message,
        };
        if self.tx.try_send(p).is_err() {
            tracing::debug!("event queue full; event dropped");
        }
    }
}

async fn write(client: &kube::Client, component: &str, host: &str, seen: &Seen, p: Pending) -> Result<(), kube::Error> {
    let api: Api<Event> = Api::namespaced(client.clone(), &p.namespace);
    let now = Time(k8s_openapi::chrono::Utc::now());
    let key = (p.uid.clone(), p.reason, p.message.clone());
    let previous = seen.lock().ok().and_then(|m| m.get(&key).cloned());
    if let Some((name, count)) = previous {
        let patch = Event { count: Some(count + 1), last_timestamp: Some(now.clone()), ..Default::default() };
        if api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok() {
            if let Ok(mut m) = seen.lock() {
                m.insert(key, (name, count + 1));
            }
            return Ok(());
        }
        // The event is gone (expired or deleted): write a new one.
    }
    let nanos = now.0.timestamp_nanos_opt().unwrap_or(0);
    let name = format!("{}.{:x}", p.name, nanos);
    let ev = Event {
        metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(p.namespace.clone()), ..Default::default() },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(p.name.clone()),
            namespace: Some(p.namespace.clone()),
            uid: Some(p.uid.clone()),
            resource_version: p.resource_version.clone(),
            ..Default::default()
        },
        reason: Some(p.reason.into()),
        message: Some(p.message.clone()),
        type_: Some(p.type_.into()),
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
        m.insert(key, (name, 1));
    }
    Ok(())
}
