//! The EndpointSlice mirroring controller (upstream's `endpointslicemirroring`): the Endpoints
//! a user writes for a Service without a selector are mirrored into EndpointSlices, so what
//! reads slices (kube-proxy, DNS, `kubectl get endpointslices`) sees them too.
//!
//! - One slice per address family and distinct set of ports, holding at most
//!   [`MAX_PER_SUBSET`] addresses of each subset (`addresses` ready, `notReadyAddresses` not),
//!   with their nodeName, hostname and targetRef; an address that is not a valid endpoint IP is
//!   skipped with a `InvalidIPAddress` warning Event on the Endpoints, addresses beyond the
//!   limit with `TooManyAddressesToMirror`.
//! - A slice is named `<endpoints>-<5 chars>`, carries the Endpoints' labels and annotations
//!   (but the trigger time and kubectl's last-applied configuration) with
//!   `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by:
//!   endpointslicemirroring-controller.k8s.io`, and is owned by the Endpoints, so the garbage
//!   collector removes it with them.
//! - Nothing is mirrored (what was is deleted) when the Service has a selector, the Endpoints
//!   are gone, are labelled `endpointslice.kubernetes.io/skip-mirror: "true"` or hold a leader
//!   election record; ExternalName Services and Services being deleted are left alone.
//!
//! [`desired`] is pure (unit-tested); the reconcile writes the difference.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::ResourceExt;
use strata_client::events::EventType;
use strata_client::lean;

use crate::endpoints::{delete_slices, slice_conflict, MANAGED_BY, SERVICE_NAME};
use crate::replicaset::controller_ref;
use crate::{Clients, Context, Error};

pub const IDENTITY: &str = "endpointslicemirroring-controller";
/// The `managed-by` value of mirrored slices.
pub const MANAGER: &str = "endpointslicemirroring-controller.k8s.io";
/// Endpoints labelled so are not mirrored.
pub const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// The annotation of Endpoints used as a leader election lock (never mirrored).
const LEADER: &str = "control-plane.alpha.kubernetes.io/leader";
/// Annotations not copied to the slices.
const NOT_COPIED: &[&str] = &["endpoints.kubernetes.io/last-change-trigger-time", "kubectl.kubernetes.io/last-applied-configuration"];
/// Upstream's `--mirroring-max-endpoints-per-subset` default.
pub const MAX_PER_SUBSET: usize = 1000;

pub struct State {
    endpoints: Store<Endpoints>,
    slices: Store<EndpointSlice>,
}

/// One mirrored slice's content.
#[derive(Clone, Debug, PartialEq)]
pub struct Mirrored {
    pub address_type: &'static str,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<Endpoint>,
}

impl Mirrored {
    fn key(&self) -> String {
        key_of(self.address_type, &self.ports)
    }
}

/// What identifies a slice's group: its address type and its ports, in any order.
fn key_of(address_type: &str, ports: &[SlicePort]) -> String {
    let mut ports: Vec<String> = ports.iter().map(|p| serde_json::to_string(p).unwrap_or_default()).collect();
    ports.sort();
    format!("{address_type}/{}", ports.join(","))
}

/// The slices an Endpoints object is mirrored into, and how many addresses were skipped as
/// invalid and as beyond [`MAX_PER_SUBSET`].
pub fn desired(ep: &Endpoints) -> (Vec<Mirrored>, usize, usize) {
    let mut groups: BTreeMap<String, Mirrored> = BTreeMap::new();
    let (mut invalid, mut over) = (0, 0);
    for subset in ep.subsets.iter().flatten() {
        let ports: Vec<SlicePort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| SlicePort { name: Some(p.name.clone().unwrap_or_default()), port: Some(p.port), protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())), app_protocol: p.app_protocol.clone() })
            .collect();
        let mut added = 0;
        let listed = subset.addresses.iter().flatten().map(|a| (a, true)).chain(subset.not_ready_addresses.iter().flatten().map(|a| (a, false)));
        for (address, ready) in listed {
            if added >= MAX_PER_SUBSET {
                over += 1;
                continue;
            }
            let Some((endpoint, address_type)) = endpoint_of(address, ready) else {
                invalid += 1;
                continue;
            };
            added += 1;
            let group = groups.entry(key_of(address_type, &ports)).or_insert_with(|| Mirrored { address_type, ports: ports.clone(), endpoints: Vec::new() });
            if !group.endpoints.iter().any(|e| e.addresses == endpoint.addresses) {
                group.endpoints.push(endpoint);
            }
        }
    }
    (groups.into_values().collect(), invalid, over)
}

/// An Endpoints address as a slice's endpoint and its address type; None when it is not an
/// address a slice may hold (not an IP, or unspecified, loopback, link-local).
fn endpoint_of(address: &EndpointAddress, ready: bool) -> Option<(Endpoint, &'static str)> {
    let ip = match address.ip.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let special = ip.is_unspecified()
        || ip.is_loopback()
        || match ip {
            IpAddr::V4(v4) => v4.is_link_local() || v4.octets()[..3] == [224, 0, 0],
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80 || v6.segments()[0] & 0xff0f == 0xff02,
        };
    if special {
        return None;
    }
    let endpoint = Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions { ready: Some(ready), ..Default::default() }),
        target_ref: address.target_ref.clone(),
        node_name: address.node_name.clone(),
        hostname: address.hostname.clone().filter(|h| !h.is_empty()),
        ..Default::default()
    };
    Some((endpoint, if ip.is_ipv4() { "IPv4" } else { "IPv6" }))
}

/// Whether `ep` may be mirrored at all.
fn should_mirror(ep: &Endpoints) -> bool {
    ep.labels().get(SKIP_MIRROR).map(String::as_str) != Some("true") && !ep.annotations().contains_key(LEADER)
}

/// The labels and annotations a mirrored slice of `ep` carries.
fn slice_meta(ep: &Endpoints) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut labels = ep.labels().clone();
    labels.insert(SERVICE_NAME.into(), ep.name_any());
    labels.insert(MANAGED_BY.into(), MANAGER.into());
    let mut annotations = ep.annotations().clone();
    annotations.retain(|k, _| !NOT_COPIED.contains(&k.as_str()));
    (labels, annotations)
}

pub async fn run(clients: Clients) -> Result<(), Error> {
    let root = clients.root.clone();
    let (endpoints, ew) = reflector::store::<Endpoints>();
    let ep_stream = reflector::reflector(ew, lean::watcher(Api::<Endpoints>::all(root.clone()), crate::watch_config())).default_backoff().touched_objects();
    let (slices, sw) = reflector::store::<EndpointSlice>();
    let slice_stream = reflector::reflector(sw, lean::watcher(Api::<EndpointSlice>::all(root.clone()), watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGER}")))).default_backoff().touched_objects();
    let controller = Controller::new(Api::<Service>::all(root.clone()), crate::watch_config());
    let ctx = Context::new(clients.clone(), IDENTITY, State { endpoints, slices });
    let by_name = |ns: Option<String>, name: String| ObjectRef::<Service>::new(&name).within(&ns.unwrap_or_default());
    controller
        .watches_stream(ep_stream, move |e: Endpoints| Some(by_name(e.namespace(), e.name_any())))
        .watches_stream(slice_stream, move |s: EndpointSlice| s.labels().get(SERVICE_NAME).map(|n| by_name(s.namespace(), n.clone())))
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_failures(IDENTITY))
        .await;
    Ok(())
}

fn error_policy(svc: Arc<Service>, e: &Error, _: Arc<Context<State>>) -> Action {
    tracing::warn!(service = %crate::key(svc.as_ref()), error = %e, "endpointslice mirroring");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Context<State>>) -> Result<Action, Error> {
    if !crate::synced(&ctx.state.endpoints) || !crate::synced(&ctx.state.slices) {
        return Ok(crate::not_synced());
    }
    let spec = svc.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") || svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let mut have: Vec<Arc<EndpointSlice>> = ctx
        .state
        .slices
        .state()
        .into_iter()
        .filter(|s| s.namespace().as_deref() == Some(ns.as_str()) && s.labels().get(SERVICE_NAME) == Some(&name) && s.labels().get(MANAGED_BY).map(String::as_str) == Some(MANAGER) && s.metadata.deletion_timestamp.is_none())
        .collect();
    have.sort_by_key(|s| s.name_any());
    let api: Api<EndpointSlice> = Api::namespaced(ctx.writer.clone(), &ns);
    let ep = ctx.state.endpoints.get(&ObjectRef::new(&name).within(&ns));
    let ep = match ep {
        Some(ep) if spec.selector.is_none() && should_mirror(&ep) => ep,
        // A selector (the endpointslice controller's), no Endpoints, or not to be mirrored:
        // whatever was mirrored goes.
        _ => {
            delete_slices(&api, &have).await?;
            return Ok(Action::await_change());
        }
    };
    let (want, invalid, over) = desired(&ep);
    if invalid > 0 {
        ctx.recorder.publish(ep.as_ref(), EventType::Warning, "InvalidIPAddress", format!("Skipped {invalid} invalid IP addresses when mirroring to EndpointSlices"));
    }
    if over > 0 {
        ctx.recorder.publish(ep.as_ref(), EventType::Warning, "TooManyAddressesToMirror", format!("A max of {MAX_PER_SUBSET} addresses can be mirrored to EndpointSlices per Endpoints subset. {over} addresses were skipped"));
    }
    let (labels, annotations) = slice_meta(&ep);
    let owner = controller_ref(ep.as_ref());
    // Each wanted slice takes an existing one of its group, else any left over (recycled), else
    // a new one; the rest are deleted.
    let mut used = vec![false; have.len()];
    let mut assigned: Vec<Option<usize>> = want.iter().map(|w| (0..have.len()).find(|j| key_of(&have[*j].address_type, have[*j].ports.as_deref().unwrap_or_default()) == w.key())).collect();
    for j in assigned.iter().flatten() {
        used[*j] = true;
    }
    // (A slice's address type never changes: only one of the same type is recycled.)
    for (w, a) in want.iter().zip(assigned.iter_mut()).filter(|(_, a)| a.is_none()) {
        if let Some(j) = (0..have.len()).find(|j| !used[*j] && have[*j].address_type == w.address_type) {
            used[j] = true;
            *a = Some(j);
        }
    }
    for (w, a) in want.iter().zip(&assigned) {
        match a {
            Some(j) => {
                let cur = &have[*j];
                let same = cur.address_type == w.address_type
                    && cur.ports.as_deref().unwrap_or_default() == w.ports.as_slice()
                    && cur.endpoints == w.endpoints
                    && cur.labels() == &labels
                    && cur.annotations() == &annotations
                    && cur.owner_references() == std::slice::from_ref(&owner);
                if same {
                    continue;
                }
                let mut new = (**cur).clone();
                new.ports = Some(w.ports.clone());
                new.endpoints = w.endpoints.clone();
                new.metadata.labels = Some(labels.clone());
                new.metadata.annotations = Some(annotations.clone());
                new.metadata.owner_references = Some(vec![owner.clone()]);
                api.replace(&cur.name_any(), &PostParams::default(), &new).await.map_err(slice_conflict)?;
            }
            None if ep.metadata.deletion_timestamp.is_none() => {
                create(&api, &ep, &ns, w, &labels, &annotations, &owner).await.map_err(slice_conflict)?;
            }
            None => {}
        }
    }
    let extra: Vec<Arc<EndpointSlice>> = have.iter().zip(&used).filter(|(_, u)| !**u).map(|(s, _)| s.clone()).collect();
    delete_slices(&api, &extra).await?;
    Ok(Action::await_change())
}

async fn create(api: &Api<EndpointSlice>, ep: &Endpoints, ns: &str, w: &Mirrored, labels: &BTreeMap<String, String>, annotations: &BTreeMap<String, String>, owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference) -> Result<EndpointSlice, kube::Error> {
    let mut prefix = format!("{}-", ep.name_any());
    if prefix.len() > 58 {
        prefix.truncate(58);
    }
    let new = EndpointSlice {
        metadata: ObjectMeta { generate_name: Some(prefix), namespace: Some(ns.to_string()), labels: Some(labels.clone()), annotations: Some(annotations.clone()), owner_references: Some(vec![owner.clone()]), ..Default::default() },
        address_type: w.address_type.into(),
        endpoints: w.endpoints.clone(),
        ports: Some(w.ports.clone()),
    };
    api.create(&PostParams::default(), &new).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EndpointPort, EndpointSubset};

    fn address(ip: &str) -> EndpointAddress {
        EndpointAddress { ip: ip.into(), ..Default::default() }
    }

    fn port(name: &str, n: i32) -> EndpointPort {
        EndpointPort { name: Some(name.into()), port: n, protocol: Some("TCP".into()), ..Default::default() }
    }

    fn ips(m: &Mirrored) -> Vec<(String, bool)> {
        m.endpoints.iter().map(|e| (e.addresses[0].clone(), e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))).collect()
    }

    #[test]
    fn subsets_become_one_slice_per_family_and_ports() {
        let ep = Endpoints {
            metadata: ObjectMeta { name: Some("ext".into()), ..Default::default() },
            subsets: Some(vec![
                EndpointSubset { addresses: Some(vec![address("10.0.0.1"), address("2001:db8::1")]), not_ready_addresses: Some(vec![address("10.0.0.2")]), ports: Some(vec![port("a", 80)]) },
                // The same ports in another subset join the same slice; an address seen already
                // is not repeated.
                EndpointSubset { addresses: Some(vec![address("10.0.0.3"), address("10.0.0.1")]), not_ready_addresses: None, ports: Some(vec![port("a", 80)]) },
                EndpointSubset { addresses: Some(vec![address("10.0.0.4"), address("127.0.0.1"), address("not-an-ip")]), not_ready_addresses: None, ports: Some(vec![port("b", 81)]) },
            ]),
        };
        let (want, invalid, over) = desired(&ep);
        assert_eq!((invalid, over), (2, 0));
        assert_eq!(want.len(), 3, "{want:?}");
        let find = |ty: &str, port: i32| want.iter().find(|m| m.address_type == ty && m.ports[0].port == Some(port)).expect("slice");
        assert_eq!(ips(find("IPv4", 80)), [("10.0.0.1".to_string(), true), ("10.0.0.2".to_string(), false), ("10.0.0.3".to_string(), true)]);
        assert_eq!(ips(find("IPv6", 80)), [("2001:db8::1".to_string(), true)]);
        assert_eq!(ips(find("IPv4", 81)), [("10.0.0.4".to_string(), true)]);
        assert_eq!(find("IPv4", 81).ports, [SlicePort { name: Some("b".into()), port: Some(81), protocol: Some("TCP".into()), app_protocol: None }]);
    }

    #[test]
    fn at_most_a_thousand_addresses_of_a_subset_are_mirrored() {
        let many: Vec<EndpointAddress> = (0..1100).map(|i| address(&format!("10.1.{}.{}", i / 250, i % 250 + 1))).collect();
        let ep = Endpoints { subsets: Some(vec![EndpointSubset { addresses: Some(many), not_ready_addresses: None, ports: None }]), ..Default::default() };
        let (want, invalid, over) = desired(&ep);
        assert_eq!((want[0].endpoints.len(), invalid, over), (MAX_PER_SUBSET, 0, 100));
    }

    #[test]
    fn labels_and_annotations_are_copied_but_a_few() {
        let ep = Endpoints {
            metadata: ObjectMeta {
                name: Some("ext".into()),
                labels: Some([("app".to_string(), "db".to_string()), (MANAGED_BY.to_string(), "someone".to_string())].into()),
                annotations: Some([("note".to_string(), "x".to_string()), ("kubectl.kubernetes.io/last-applied-configuration".to_string(), "{}".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let (labels, annotations) = slice_meta(&ep);
        assert_eq!(labels, [("app".to_string(), "db".to_string()), (MANAGED_BY.to_string(), MANAGER.to_string()), (SERVICE_NAME.to_string(), "ext".to_string())].into());
        assert_eq!(annotations, [("note".to_string(), "x".to_string())].into());
        assert!(should_mirror(&ep));
        let mut skipped = ep.clone();
        skipped.metadata.labels = Some([(SKIP_MIRROR.to_string(), "true".to_string())].into());
        assert!(!should_mirror(&skipped));
    }
}
