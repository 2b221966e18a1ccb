//! A simulated node (named as such: it runs nothing): a Node object with capacity that a thread
//! of the test keeps alive the way a kubelet would — its Lease `kube-node-lease/<name>`
//! renewed and its Ready condition posted every 300 ms, every pod bound to it reported Running
//! and Ready (unless it already Succeeded or Failed, or an image of it is tagged `unpullable`: that
//! pod stays Pending, as one whose image cannot be pulled), and a pod marked for deletion deleted
//! with grace 0 (the node "stopped" it).
//! [`SimNode::pause`] makes it go silent (a dead kubelet), [`SimNode::set_ready`] makes it
//! report NotReady (a live but unhealthy one).

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata_client::k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use strata_client::k8s_openapi::api::core::v1::{Node, Pod};
use strata_client::k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use strata_client::kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

use super::server::ApiServer;

pub struct SimNode {
    pub name: String,
    alive: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SimNode {
    /// Register the Node (4 CPUs, 8 GiB, 110 pods, `kubernetes.io/hostname`) and keep it alive.
    pub fn start(s: &ApiServer, name: &str) -> SimNode {
        let (alive, ready, stop) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(false)));
        let (a, r, st) = (alive.clone(), ready.clone(), stop.clone());
        let kubeconfig = s.kubeconfig();
        let node_name = name.to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let client = strata_client::from_kubeconfig(&kubeconfig, "simulated-node").await.expect("client");
                let nodes: Api<Node> = Api::all(client.clone());
                let node: Node = serde_json::from_value(serde_json::json!({
                    "metadata": { "name": node_name, "labels": { "kubernetes.io/hostname": node_name, "strata.dev/simulated": "true" } },
                    "status": {
                        "capacity": { "cpu": "4", "memory": "8Gi", "pods": "110" },
                        "allocatable": { "cpu": "4", "memory": "8Gi", "pods": "110" },
                        "conditions": [ready_condition(true)],
                    },
                }))
                .expect("node");
                nodes.create(&PostParams::default(), &node).await.expect("registering the simulated node");
                let _ = tx.send(());
                let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
                let pods: Api<Pod> = Api::all(client.clone());
                while !st.load(Ordering::SeqCst) {
                    if a.load(Ordering::SeqCst) {
                        let _ = beat(&nodes, &leases, &pods, &client, &node_name, r.load(Ordering::SeqCst)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            });
        });
        rx.recv_timeout(Duration::from_secs(30)).expect("simulated node registered");
        SimNode { name: name.to_string(), alive, ready, stop, thread: Some(thread) }
    }

    /// Stop heartbeating (the node's kubelet died or lost the network).
    pub fn pause(&self) {
        self.alive.store(false, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.alive.store(true, Ordering::SeqCst);
    }

    /// Report Ready True or False (still heartbeating).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ready_condition(ready: bool) -> serde_json::Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, reason, message) = if ready { ("True", "KubeletReady", "kubelet is posting ready status") } else { ("False", "KubeletNotReady", "container runtime network not ready") };
    serde_json::json!({ "type": "Ready", "status": status, "reason": reason, "message": message, "lastHeartbeatTime": now, "lastTransitionTime": now })
}

/// One heartbeat: the Lease, the Ready condition when it is not what the node reports, and
/// the pods bound here.
async fn beat(nodes: &Api<Node>, leases: &Api<Lease>, pods: &Api<Pod>, client: &strata_client::kube::Client, name: &str, ready: bool) -> Result<(), strata_client::kube::Error> {
    let now = MicroTime(chrono::Utc::now());
    match leases.get_opt(name).await? {
        Some(mut l) => {
            l.spec.get_or_insert_with(Default::default).renew_time = Some(now);
            leases.replace(name, &PostParams::default(), &l).await?;
        }
        None => {
            let l = Lease {
                metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
                spec: Some(LeaseSpec { holder_identity: Some(name.into()), lease_duration_seconds: Some(40), renew_time: Some(now), ..Default::default() }),
            };
            leases.create(&PostParams::default(), &l).await?;
        }
    }
    let node = nodes.get(name).await?;
    let want = if ready { "True" } else { "False" };
    let current = node.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == "Ready")).map(|c| c.status.clone());
    if current.as_deref() != Some(want) {
        let patch = serde_json::json!({ "status": { "conditions": [ready_condition(ready)] } });
        nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    for p in pods.list(&ListParams::default().fields(&format!("spec.nodeName={name}"))).await?.items {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let pname = p.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        if p.metadata.deletion_timestamp.is_some() {
            let _ = api.delete(&pname, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
            continue;
        }
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        // A finished pod stays finished (a kubelet never runs it again).
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let images = p.spec.as_ref().map(|s| s.containers.iter().filter_map(|c| c.image.clone()).collect::<Vec<_>>()).unwrap_or_default();
        if images.iter().any(|i| i.ends_with(":unpullable")) {
            continue;
        }
        let is_ready = p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if phase != Some("Running") || !is_ready {
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let patch = serde_json::json!({ "status": { "phase": "Running", "conditions": [{ "type": "Ready", "status": "True", "lastTransitionTime": now }] } });
            let _ = api.patch_status(&pname, &PatchParams::default(), &Patch::Merge(&patch)).await;
        }
    }
    Ok(())
}
