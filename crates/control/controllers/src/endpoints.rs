//! The Endpoints and EndpointSlice controllers (upstream's `endpoint` and `endpointslice`
//! controllers): for every Service with a selector, the pods it selects, by readiness.
//!
//! - Endpoints `<service>`: ready pods in `addresses`, the others in `notReadyAddresses` (all in
//!   `addresses` with `publishNotReadyAddresses`), terminating pods left out unless published;
//!   one subset per distinct set of resolved ports (a named `targetPort` is resolved per pod from
//!   its containers' ports; a pod without it is left out of that port). Services without a
//!   selector are left alone (their Endpoints are the user's); the Endpoints of a deleted Service
//!   are deleted (a sweep, as upstream's leftover check).
//! - EndpointSlices `<service>-<5 chars>`: at most 100 endpoints each, grouped by resolved
//!   ports, with the `ready`/`serving`/`terminating` conditions, nodeName, zone (the node's
//!   `topology.kubernetes.io/zone`) and hostname; labelled `kubernetes.io/service-name` and
//!   `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`, owned by the
//!   Service (the garbage collector removes them with it). A Service selecting nothing has one
//!   empty placeholder slice, as upstream.
//!
//! [`desired_subsets`] and [`desired_slices`] are pure (unit-tested); the reconciles write the
//! difference, each write carrying the resourceVersion it was decided on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Node, ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use strata_client::lean;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::ResourceExt;

use crate::replicaset::controller_ref;
use crate::informer::Shared;
use crate::{Clients, Context, Error};

pub const IDENTITY: &str = "endpoint-controller";
pub const SLICE_IDENTITY: &str = "endpointslice-controller";
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGER: &str = "endpointslice-controller.k8s.io";
const HEADLESS: &str = "service.kubernetes.io/headless";
/// Upstream's `--max-endpoints-per-slice` default.
pub const MAX_PER_SLICE: usize = 100;
/// Upstream's `maxCapacity` of one Endpoints object.
const MAX_ENDPOINTS: usize = 1000;

pub struct State {
    pods: Store<Pod>,
    nodes: Store<Node>,
    endpoints: Store<Endpoints>,
    slices: Store<EndpointSlice>,
    services: Store<Service>,
    /// EndpointSlices (endpointslice-controller) rather than Endpoints (endpoint-controller).
    slices_mode: bool,
}

fn is_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ip(p: &Pod) -> Option<String> {
    let st = p.status.as_ref()?;
    st.pod_ip.clone().filter(|ip| !ip.is_empty()).or_else(|| st.pod_ips.as_ref()?.first().map(|i| i.ip.clone()))
}

/// Upstream's `ShouldPodBeInEndpoints`: an IP, not finished for good, terminating only if asked.
pub fn should_be_in_endpoints(p: &Pod, include_terminating: bool) -> bool {
    if pod_ip(p).is_none() {
        return false;
    }
    if !include_terminating && p.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    match p.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
        Some("Never") => phase != "Failed" && phase != "Succeeded",
        Some("OnFailure") => phase != "Succeeded",
        _ => true,
    }
}

/// The port a Service port reaches on a pod (upstream's `FindPort`): a number as is, a name
/// looked up among the pod's container ports with the same protocol.
pub fn find_port(p: &Pod, sp: &ServicePort) -> Option<i32> {
    let proto = sp.protocol.as_deref().unwrap_or("TCP");
    match sp.target_port.as_ref() {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => match name.parse::<i32>() {
            Ok(n) => Some(n),
            Err(_) => p.spec.as_ref()?.containers.iter().flat_map(|c| c.ports.iter().flatten()).find(|cp| cp.name.as_deref() == Some(name.as_str()) && cp.protocol.as_deref().unwrap_or("TCP") == proto).map(|cp| cp.container_port),
        },
    }
}

fn selects(svc: &Service, p: &Pod) -> bool {
    let Some(sel) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else { return false };
    let labels = p.metadata.labels.clone().unwrap_or_default();
    p.namespace() == svc.namespace() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn pod_ref(p: &Pod) -> ObjectReference {
    ObjectReference { kind: Some("Pod".into()), namespace: p.namespace(), name: p.metadata.name.clone(), uid: p.metadata.uid.clone(), ..Default::default() }
}

/// Upstream's `ShouldSetHostname`: the pod names the Service as its subdomain.
fn hostname(p: &Pod, svc: &Service) -> Option<String> {
    let spec = p.spec.as_ref()?;
    let h = spec.hostname.clone().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()).then_some(h)
}

fn headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The Endpoints subsets of a Service over `pods` (upstream's endpoints controller).
pub fn desired_subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish = spec.publish_not_ready_addresses.unwrap_or(false);
    let svc_ports = spec.ports.unwrap_or_default();
    // Resolved ports -> (ready, not ready) addresses.
    let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<EndpointAddress>, Vec<EndpointAddress>)> = BTreeMap::new();
    let mut total = 0;
    let mut sorted: Vec<&Arc<Pod>> = pods.iter().filter(|p| selects(svc, p) && should_be_in_endpoints(p, publish)).collect();
    sorted.sort_by_key(|p| (pod_ip(p), p.name_any()));
    for p in sorted {
        if total >= MAX_ENDPOINTS {
            break;
        }
        let Some(ip) = pod_ip(p) else { continue };
        let addr = EndpointAddress { ip, hostname: hostname(p, svc), node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()), target_ref: Some(pod_ref(p)) };
        let ready = publish || is_ready(p);
        let ports: Vec<EndpointPort> = svc_ports
            .iter()
            .filter_map(|sp| find_port(p, sp).map(|port| EndpointPort { name: sp.name.clone(), port, protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())), app_protocol: sp.app_protocol.clone() }))
            .collect();
        if ports.is_empty() && !(svc_ports.is_empty() && headless(svc)) {
            continue;
        }
        let key = serde_json::to_string(&ports).unwrap_or_default();
        let g = groups.entry(key).or_insert_with(|| (ports.clone(), Vec::new(), Vec::new()));
        if ready {
            g.1.push(addr);
        } else {
            g.2.push(addr);
        }
        total += 1;
    }
    groups
        .into_values()
        .map(|(ports, ready, not_ready)| EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then_some(ports),
        })
        .collect()
}

/// One slice's content: its ports and endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct SliceContent {
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<Endpoint>,
}

/// The EndpointSlices of a Service over `pods`: grouped by resolved ports, at most
/// [`MAX_PER_SLICE`] endpoints each, ordered by pod name; one empty slice when none.
pub fn desired_slices(svc: &Service, pods: &[Arc<Pod>], zone_of: impl Fn(&str) -> Option<String>) -> Vec<SliceContent> {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish = spec.publish_not_ready_addresses.unwrap_or(false);
    let svc_ports = spec.ports.unwrap_or_default();
    let mut groups: BTreeMap<String, (Vec<SlicePort>, Vec<Endpoint>)> = BTreeMap::new();
    let mut sorted: Vec<&Arc<Pod>> = pods.iter().filter(|p| selects(svc, p) && should_be_in_endpoints(p, true)).collect();
    sorted.sort_by_key(|p| p.name_any());
    for p in sorted {
        let Some(ip) = pod_ip(p) else { continue };
        let serving = is_ready(p);
        let terminating = p.metadata.deletion_timestamp.is_some();
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
        let ep = Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions { ready: Some(publish || (serving && !terminating)), serving: Some(serving), terminating: Some(terminating) }),
            target_ref: Some(pod_ref(p)),
            zone: node.as_deref().and_then(&zone_of),
            node_name: node,
            hostname: hostname(p, svc),
            ..Default::default()
        };
        let ports: Vec<SlicePort> = svc_ports
            .iter()
            .filter_map(|sp| find_port(p, sp).map(|port| SlicePort { name: Some(sp.name.clone().unwrap_or_default()), port: Some(port), protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())), app_protocol: sp.app_protocol.clone() }))
            .collect();
        let key = serde_json::to_string(&ports).unwrap_or_default();
        groups.entry(key).or_insert_with(|| (ports.clone(), Vec::new())).1.push(ep);
    }
    let mut out = Vec::new();
    for (ports, eps) in groups.into_values() {
        for chunk in eps.chunks(MAX_PER_SLICE) {
            out.push(SliceContent { ports: ports.clone(), endpoints: chunk.to_vec() });
        }
    }
    if out.is_empty() {
        out.push(SliceContent { ports: Vec::new(), endpoints: Vec::new() });
    }
    out
}

fn service_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = svc.metadata.labels.clone().unwrap_or_default();
    if headless(svc) {
        l.insert(HEADLESS.into(), String::new());
    }
    l
}

pub async fn run(clients: Clients, pods: Shared<Pod>) -> Result<(), Error> {
    run_one(clients, false, pods).await
}

pub async fn run_slices(clients: Clients, pods: Shared<Pod>) -> Result<(), Error> {
    run_one(clients, true, pods).await
}

async fn run_one(clients: Clients, slices_mode: bool, shared_pods: Shared<Pod>) -> Result<(), Error> {
    let root = clients.root.clone();
    let (pods, pod_stream) = (shared_pods.store().clone(), shared_pods.subscribe());
    let (nodes, nw) = reflector::store::<Node>();
    let node_stream = reflector::reflector(nw, lean::watcher(Api::<Node>::all(root.clone()), crate::watch_config())).default_backoff().touched_objects();
    let (endpoints, ew) = reflector::store::<Endpoints>();
    let ep_stream = reflector::reflector(ew, lean::watcher(Api::<Endpoints>::all(root.clone()), crate::watch_config())).default_backoff().touched_objects();
    let (slices, sw) = reflector::store::<EndpointSlice>();
    let slice_stream = reflector::reflector(sw, lean::watcher(Api::<EndpointSlice>::all(root.clone()), watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGER}")))).default_backoff().touched_objects();
    let controller = Controller::new(Api::<Service>::all(root.clone()), crate::watch_config());
    let services = controller.store();
    let identity = if slices_mode { SLICE_IDENTITY } else { IDENTITY };
    let ctx = Context::new(clients.clone(), identity, State { pods, nodes: nodes.clone(), endpoints, slices, services: services.clone(), slices_mode });
    let svc_for_pods = services.clone();
    let by_pod = move |pod: Arc<Pod>| svc_for_pods.state().into_iter().filter(|s| selects(s, &pod)).map(|s| ObjectRef::from_obj(s.as_ref())).collect::<Vec<_>>();
    let svc_for_nodes = services.clone();
    let by_node = move |_: Node| if slices_mode { svc_for_nodes.state().iter().map(|s| ObjectRef::from_obj(s.as_ref())).collect::<Vec<_>>() } else { Vec::new() };
    let by_name = |ns: Option<String>, name: String| ObjectRef::<Service>::new(&name).within(&ns.unwrap_or_default());
    let main = controller
        .watches_shared_stream(pod_stream, by_pod)
        .watches_stream(node_stream, by_node)
        .watches_stream(ep_stream, move |e: Endpoints| Some(by_name(e.namespace(), e.name_any())))
        .watches_stream(slice_stream, move |s: EndpointSlice| s.labels().get(SERVICE_NAME).map(|n| by_name(s.namespace(), n.clone())))
        .run(reconcile, error_policy, ctx.clone())
        .for_each(crate::log_failures(identity));
    if slices_mode {
        main.await;
    } else {
        tokio::select! {
            _ = main => {}
            _ = sweep_leftovers(ctx) => {}
        }
    }
    Ok(())
}

fn error_policy(svc: Arc<Service>, e: &Error, _: Arc<Context<State>>) -> Action {
    tracing::warn!(service = %crate::key(svc.as_ref()), error = %e, "endpoints controllers");
    Action::requeue(Duration::from_secs(2))
}

/// Endpoints whose Service is gone (confirmed by the server) are deleted, as upstream deletes
/// them on the Service's deletion and at start (`checkLeftoverEndpoints`).
async fn sweep_leftovers(ctx: Arc<Context<State>>) {
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        if !crate::synced(&ctx.state.endpoints) || !crate::synced(&ctx.state.services) {
            continue;
        }
        for e in ctx.state.endpoints.state() {
            let ns = e.namespace().unwrap_or_default();
            if e.annotations().contains_key("control-plane.alpha.kubernetes.io/leader") {
                continue;
            }
            if ctx.state.services.get(&ObjectRef::new(&e.name_any()).within(&ns)).is_some() {
                continue;
            }
            // The controller's own identity may get Services (the manager's may only list and watch).
            let svcs: Api<Service> = Api::namespaced(ctx.writer.clone(), &ns);
            if !matches!(svcs.get_opt(&e.name_any()).await, Ok(None)) {
                continue;
            }
            let api: Api<Endpoints> = Api::namespaced(ctx.writer.clone(), &ns);
            let dp = DeleteParams { preconditions: Some(Preconditions { uid: e.metadata.uid.clone(), resource_version: None }), ..Default::default() };
            let _ = api.delete(&e.name_any(), &dp).await;
        }
    }
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Context<State>>) -> Result<Action, Error> {
    if ctx.state.slices_mode {
        reconcile_slices(svc, ctx).await
    } else {
        reconcile_endpoints(svc, ctx).await
    }
}

async fn reconcile_endpoints(svc: Arc<Service>, ctx: Arc<Context<State>>) -> Result<Action, Error> {
    if !crate::synced(&ctx.state.pods) || !crate::synced(&ctx.state.endpoints) {
        return Ok(crate::not_synced());
    }
    if svc.spec.as_ref().and_then(|s| s.selector.as_ref()).is_none() || svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let pods = ctx.state.pods.state();
    let subsets = desired_subsets(&svc, &pods);
    let labels = service_labels(&svc);
    let api: Api<Endpoints> = Api::namespaced(ctx.writer.clone(), &ns);
    let current = ctx.state.endpoints.get(&ObjectRef::new(&svc.name_any()).within(&ns));
    let subsets_opt = (!subsets.is_empty()).then_some(subsets);
    match current {
        Some(cur) => {
            let cur_labels = cur.metadata.labels.clone().unwrap_or_default();
            if cur.subsets == subsets_opt && cur_labels == labels {
                return Ok(Action::await_change());
            }
            let mut new = (*cur).clone();
            new.subsets = subsets_opt;
            new.metadata.labels = Some(labels);
            match api.replace(&svc.name_any(), &PostParams::default(), &new).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => return Err(Error::Invalid("endpoints changed; retrying".into())),
                Err(e) => return Err(e.into()),
            }
        }
        None => {
            let new = Endpoints { metadata: ObjectMeta { name: svc.metadata.name.clone(), namespace: svc.namespace(), labels: Some(labels), ..Default::default() }, subsets: subsets_opt };
            match api.create(&PostParams::default(), &new).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => return Err(Error::Invalid("endpoints exist; retrying".into())),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Action::await_change())
}

async fn reconcile_slices(svc: Arc<Service>, ctx: Arc<Context<State>>) -> Result<Action, Error> {
    if !crate::synced(&ctx.state.pods) || !crate::synced(&ctx.state.slices) || !crate::synced(&ctx.state.nodes) {
        return Ok(crate::not_synced());
    }
    if svc.spec.as_ref().and_then(|s| s.selector.as_ref()).is_none() || svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let uid = svc.metadata.uid.clone().unwrap_or_default();
    let pods = ctx.state.pods.state();
    let nodes = ctx.state.nodes.clone();
    let zone_of = |n: &str| nodes.get(&ObjectRef::new(n)).and_then(|node| node.labels().get("topology.kubernetes.io/zone").cloned());
    let want = desired_slices(&svc, &pods, zone_of);
    let mut labels = service_labels(&svc);
    labels.insert(SERVICE_NAME.into(), name.clone());
    labels.insert(MANAGED_BY.into(), MANAGER.into());
    let mut have: Vec<Arc<EndpointSlice>> = ctx
        .state
        .slices
        .state()
        .into_iter()
        .filter(|s| s.namespace().as_deref() == Some(ns.as_str()) && s.labels().get(SERVICE_NAME) == Some(&name) && s.metadata.deletion_timestamp.is_none())
        .collect();
    have.sort_by_key(|s| s.name_any());
    let api: Api<EndpointSlice> = Api::namespaced(ctx.writer.clone(), &ns);
    // Reuse existing slices with the same ports first, then any; create the rest; delete extras.
    let mut used = vec![false; have.len()];
    let mut assigned: Vec<Option<usize>> = vec![None; want.len()];
    for (i, w) in want.iter().enumerate() {
        if let Some(j) = (0..have.len()).find(|j| !used[*j] && have[*j].ports.clone().unwrap_or_default() == w.ports) {
            used[j] = true;
            assigned[i] = Some(j);
        }
    }
    for a in assigned.iter_mut() {
        if a.is_none() {
            if let Some(j) = (0..have.len()).find(|j| !used[*j]) {
                used[j] = true;
                *a = Some(j);
            }
        }
    }
    for (i, w) in want.iter().enumerate() {
        let owned = |s: &EndpointSlice| s.owner_references().iter().any(|o| o.uid == uid && o.controller == Some(true));
        match assigned[i] {
            Some(j) => {
                let cur = &have[j];
                let same = cur.ports.clone().unwrap_or_default() == w.ports && cur.endpoints == w.endpoints && cur.metadata.labels.as_ref() == Some(&labels) && owned(cur) && cur.address_type == "IPv4";
                if same {
                    continue;
                }
                let mut new = (**cur).clone();
                new.ports = Some(w.ports.clone());
                new.endpoints = w.endpoints.clone();
                new.address_type = "IPv4".into();
                new.metadata.labels = Some(labels.clone());
                new.metadata.owner_references = Some(vec![controller_ref(svc.as_ref())]);
                api.replace(&cur.name_any(), &PostParams::default(), &new).await.map_err(slice_conflict)?;
            }
            None => {
                let mut prefix = format!("{name}-");
                if prefix.len() > 58 {
                    prefix.truncate(58);
                }
                let new = EndpointSlice {
                    metadata: ObjectMeta { generate_name: Some(prefix), namespace: Some(ns.clone()), labels: Some(labels.clone()), owner_references: Some(vec![controller_ref(svc.as_ref())]), ..Default::default() },
                    address_type: "IPv4".into(),
                    endpoints: w.endpoints.clone(),
                    ports: Some(w.ports.clone()),
                };
                api.create(&PostParams::default(), &new).await.map_err(slice_conflict)?;
            }
        }
    }
    let extra: Vec<Arc<EndpointSlice>> = have.iter().zip(&used).filter(|(_, u)| !**u).map(|(s, _)| s.clone()).collect();
    delete_slices(&api, &extra).await?;
    Ok(Action::await_change())
}

/// A write of a slice refused because it changed or went meanwhile: retried after the watch
/// catches up; any other failure as it is.
pub(crate) fn slice_conflict(e: kube::Error) -> Error {
    match e {
        kube::Error::Api(ae) if ae.code == 409 || ae.code == 404 => Error::Invalid("endpointslice changed; retrying".into()),
        e => e.into(),
    }
}

/// Delete `slices` (each as the uid it was seen with; one already gone or replaced is fine).
pub(crate) async fn delete_slices(api: &Api<EndpointSlice>, slices: &[Arc<EndpointSlice>]) -> Result<(), Error> {
    for s in slices {
        let dp = DeleteParams { preconditions: Some(Preconditions { uid: s.metadata.uid.clone(), resource_version: None }), ..Default::default() };
        match api.delete(&s.name_any(), &dp).await {
            Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404 | 409, .. })) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServiceSpec};

    fn pod(name: &str, ip: Option<&str>, ready: bool, named_port: Option<i32>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("ns".into()), uid: Some(format!("uid-{name}")), labels: Some([("app".to_string(), "web".to_string())].into()), ..Default::default() },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                containers: vec![Container { name: "c".into(), ports: named_port.map(|p| vec![ContainerPort { name: Some("http".into()), container_port: p, protocol: Some("TCP".into()), ..Default::default() }]), ..Default::default() }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: ip.map(str::to_string),
                conditions: Some(vec![PodCondition { type_: "Ready".into(), status: if ready { "True" } else { "False" }.into(), ..Default::default() }]),
                ..Default::default()
            }),
        })
    }

    fn service(target: IntOrString, publish: bool) -> Service {
        Service {
            metadata: ObjectMeta { name: Some("web".into()), namespace: Some("ns".into()), ..Default::default() },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ports: Some(vec![ServicePort { name: Some("web".into()), port: 80, target_port: Some(target), protocol: Some("TCP".into()), ..Default::default() }]),
                publish_not_ready_addresses: Some(publish),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn ips(a: &Option<Vec<EndpointAddress>>) -> Vec<String> {
        a.iter().flatten().map(|a| a.ip.clone()).collect()
    }

    #[test]
    fn subsets_split_ready_and_resolve_named_ports_per_pod() {
        let pods = vec![pod("a", Some("10.0.0.1"), true, Some(8080)), pod("b", Some("10.0.0.2"), false, Some(8080)), pod("c", Some("10.0.0.3"), true, Some(9090)), pod("d", None, true, Some(8080)), pod("e", Some("10.0.0.5"), true, None)];
        let subsets = desired_subsets(&service(IntOrString::String("http".into()), false), &pods);
        // Two port sets (8080 and 9090); no IP (d) and no such named port (e) are left out.
        assert_eq!(subsets.len(), 2, "{subsets:?}");
        let by_port = |p: i32| subsets.iter().find(|s| s.ports.as_ref().is_some_and(|ps| ps[0].port == p)).expect("subset");
        assert_eq!((ips(&by_port(8080).addresses), ips(&by_port(8080).not_ready_addresses)), (vec!["10.0.0.1".to_string()], vec!["10.0.0.2".to_string()]));
        assert_eq!(ips(&by_port(9090).addresses), ["10.0.0.3"]);
        assert_eq!(by_port(8080).ports.as_ref().expect("ports")[0].name.as_deref(), Some("web"));
        // publishNotReadyAddresses: everyone is an address.
        let subsets = desired_subsets(&service(IntOrString::Int(8080), true), &pods);
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].addresses).len(), 4);
        assert!(subsets[0].not_ready_addresses.is_none());
        // A terminating pod is left out of Endpoints (unless published).
        let mut gone = (*pod("t", Some("10.0.0.9"), true, Some(8080))).clone();
        gone.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(chrono::Utc::now()));
        assert!(desired_subsets(&service(IntOrString::Int(8080), false), &[Arc::new(gone.clone())]).is_empty());
        // ... but kept in slices as terminating, not ready, serving.
        let slices = desired_slices(&service(IntOrString::Int(8080), false), &[Arc::new(gone)], |_| None);
        let c = slices[0].endpoints[0].conditions.clone().expect("conditions");
        assert_eq!((c.ready, c.serving, c.terminating), (Some(false), Some(true), Some(true)));
    }

    #[test]
    fn slices_hold_at_most_100_and_carry_conditions_node_and_zone() {
        let pods: Vec<Arc<Pod>> = (0..205).map(|i| pod(&format!("p{i:03}"), Some(&format!("10.0.{}.{}", i / 200, i % 200 + 1)), i % 2 == 0, Some(8080))).collect();
        let slices = desired_slices(&service(IntOrString::String("http".into()), false), &pods, |n| (n == "node-1").then(|| "zone-a".to_string()));
        assert_eq!(slices.iter().map(|s| s.endpoints.len()).collect::<Vec<_>>(), [100, 100, 5]);
        let e = &slices[0].endpoints[1];
        assert_eq!((e.node_name.as_deref(), e.zone.as_deref()), (Some("node-1"), Some("zone-a")));
        assert_eq!(e.conditions.as_ref().and_then(|c| c.ready), Some(false));
        assert_eq!(slices[0].ports, vec![SlicePort { name: Some("web".into()), port: Some(8080), protocol: Some("TCP".into()), app_protocol: None }]);
        assert_eq!(e.target_ref.as_ref().and_then(|r| r.name.as_deref()), Some("p001"));
        // Nothing selected: one empty placeholder.
        let none = desired_slices(&service(IntOrString::Int(80), false), &[], |_| None);
        assert_eq!(none, vec![SliceContent { ports: vec![], endpoints: vec![] }]);
    }
}
