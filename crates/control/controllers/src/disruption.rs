//! The disruption controller (upstream's `disruption`): keeps each PodDisruptionBudget's status
//! — `expectedPods`, `desiredHealthy`, `currentHealthy`, `disruptionsAllowed`, the
//! `disruptedPods` the eviction subresource recorded, `observedGeneration` and the
//! `DisruptionAllowed` condition — from the pods its selector picks (policy/v1: an empty
//! selector picks every pod of the namespace).
//!
//! `minAvailable: N` expects the pods that exist; a percentage or `maxUnavailable` expects the
//! scale of the pods' controllers (a ReplicaSet's, or its Deployment's; a
//! ReplicationController's; a StatefulSet's), read live. A pod counts healthy when Ready, not
//! being deleted and not evicted within the last 2 minutes (an eviction not followed by a
//! delete by then is dropped from `disruptedPods`). The eviction subresource in the API server
//! spends disruptions; this controller gives them back as pods come and go.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::Controller;
use kube::ResourceExt;
use strata_client::events::EventType;

use crate::replicaset::{controller_of, ready_since, selects};
use crate::informer::Shared;
use crate::{Clients, Context, Error};

pub const IDENTITY: &str = "disruption-controller";
/// How long an eviction may go unfollowed by the pod's deletion (upstream's `DeletionTimeout`).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

pub struct State {
    pods: Store<Pod>,
}

pub async fn run(clients: Clients, shared_pods: Shared<Pod>) -> Result<(), Error> {
    let (pods, pod_stream) = (shared_pods.store().clone(), shared_pods.subscribe());
    let controller = Controller::new(Api::<PodDisruptionBudget>::all(clients.root.clone()), crate::watch_config());
    let budgets = controller.store();
    let ctx = Context::new(clients.clone(), IDENTITY, State { pods });
    // A pod's change reconsiders the budgets of its namespace that select it.
    controller
        .watches_shared_stream(pod_stream, move |pod: Arc<Pod>| {
            let ns = pod.namespace().unwrap_or_default();
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            budgets
                .state()
                .into_iter()
                .filter(|b| b.namespace().as_deref() == Some(ns.as_str()) && budget_selects(b.spec.as_ref().and_then(|s| s.selector.as_ref()), &labels))
                .map(|b| ObjectRef::from_obj(b.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_failures(IDENTITY))
        .await;
    Ok(())
}

fn error_policy(pdb: Arc<PodDisruptionBudget>, e: &Error, _: Arc<Context<State>>) -> Action {
    tracing::warn!(pdb = %crate::key(pdb.as_ref()), error = %e, "disruption controller");
    Action::requeue(Duration::from_secs(2))
}

/// policy/v1: an empty selector selects every pod, a missing one none.
pub fn budget_selects(sel: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    match sel {
        None => false,
        Some(s) if s.match_labels.as_ref().is_none_or(|m| m.is_empty()) && s.match_expressions.as_ref().is_none_or(|m| m.is_empty()) => true,
        Some(s) => selects(s, labels),
    }
}

/// `intstr.GetScaledValueFromIntOrPercent` rounding up.
pub fn scaled(v: &IntOrString, total: i32) -> Result<i32, String> {
    match v {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let pct: i64 = s.strip_suffix('%').and_then(|p| p.parse().ok()).ok_or_else(|| format!("invalid value for IntOrString: invalid type: string is not a percentage ({s:?})"))?;
            Ok(((pct * i64::from(total)) as f64 / 100.0).ceil() as i32)
        }
    }
}

/// (expectedPods, desiredHealthy) from the spec and the expected scale (computed only when
/// needed: `scale` is called for percentages and maxUnavailable).
pub fn expected_and_desired(min: Option<&IntOrString>, max: Option<&IntOrString>, pods: usize, scale: impl FnOnce() -> Result<i32, String>) -> Result<(i32, i32), String> {
    if let Some(max) = max {
        let expected = scale()?;
        let desired = (expected - scaled(max, expected)?).max(0);
        return Ok((expected, desired));
    }
    match min {
        Some(IntOrString::Int(n)) => Ok((pods as i32, *n)),
        Some(pct) => {
            let expected = scale()?;
            Ok((expected, scaled(pct, expected)?))
        }
        None => Ok((0, 0)),
    }
}

/// The DisruptionAllowed condition for this many allowed disruptions (upstream's
/// `UpdateDisruptionAllowedCondition`), keeping its transition time when the status holds.
pub fn disruption_condition(old: &[Condition], allowed: i32, generation: i64) -> Vec<Condition> {
    let (status, reason) = if allowed > 0 { ("True", "SufficientPods") } else { ("False", "InsufficientPods") };
    let mut out: Vec<Condition> = old.iter().filter(|c| c.type_ != "DisruptionAllowed").cloned().collect();
    let prev = old.iter().find(|c| c.type_ == "DisruptionAllowed");
    let since = match prev {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(Utc::now()),
    };
    out.push(Condition { type_: "DisruptionAllowed".into(), status: status.into(), reason: reason.into(), message: String::new(), observed_generation: Some(generation), last_transition_time: since });
    out
}

/// The scale of the controllers of these pods (each counted once), read live.
async fn expected_scale(ctx: &Context<State>, ns: &str, pods: &[Arc<Pod>]) -> Result<Result<i32, String>, Error> {
    let mut scales: HashMap<String, i32> = HashMap::new();
    for p in pods {
        let Some(owner) = controller_of(&p.metadata) else { continue };
        if scales.contains_key(&owner.uid) {
            continue;
        }
        let found: Option<(String, i32)> = match owner.kind.as_str() {
            "ReplicaSet" => match Api::<ReplicaSet>::namespaced(ctx.writer.clone(), ns).get_opt(&owner.name).await? {
                Some(rs) if rs.metadata.uid.as_deref() == Some(owner.uid.as_str()) => match controller_of(&rs.metadata).filter(|o| o.kind == "Deployment") {
                    Some(d) => match Api::<Deployment>::namespaced(ctx.writer.clone(), ns).get_opt(&d.name).await? {
                        Some(dep) if dep.metadata.uid.as_deref() == Some(d.uid.as_str()) => Some((d.uid.clone(), dep.spec.and_then(|s| s.replicas).unwrap_or(1))),
                        _ => None,
                    },
                    None => Some((owner.uid.clone(), rs.spec.and_then(|s| s.replicas).unwrap_or(1))),
                },
                _ => None,
            },
            "ReplicationController" => match Api::<ReplicationController>::namespaced(ctx.writer.clone(), ns).get_opt(&owner.name).await? {
                Some(rc) if rc.metadata.uid.as_deref() == Some(owner.uid.as_str()) => Some((owner.uid.clone(), rc.spec.and_then(|s| s.replicas).unwrap_or(1))),
                _ => None,
            },
            "StatefulSet" => match Api::<StatefulSet>::namespaced(ctx.writer.clone(), ns).get_opt(&owner.name).await? {
                Some(ss) if ss.metadata.uid.as_deref() == Some(owner.uid.as_str()) => Some((owner.uid.clone(), ss.spec.and_then(|s| s.replicas).unwrap_or(1))),
                _ => None,
            },
            _ => None,
        };
        match found {
            Some((uid, n)) => {
                scales.insert(owner.uid.clone(), 0);
                scales.insert(uid, n);
            }
            None => return Ok(Err(format!("found no controllers for pod {:?}", p.name_any()))),
        }
    }
    Ok(Ok(scales.values().sum()))
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Context<State>>) -> Result<Action, Error> {
    if !crate::synced(&ctx.state.pods) {
        return Ok(crate::not_synced());
    }
    let ns = pdb.namespace().unwrap_or_default();
    let spec = pdb.spec.clone().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = ctx
        .state
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()) && budget_selects(spec.selector.as_ref(), &p.metadata.labels.clone().unwrap_or_default()))
        .collect();
    if pods.is_empty() {
        ctx.recorder.publish(pdb.as_ref(), EventType::Normal, "NoPods", "No matching pods found");
    }
    let unmanaged = pods.iter().any(|p| controller_of(&p.metadata).is_none());
    let needs_scale = spec.max_unavailable.is_some() || matches!(spec.min_available, Some(IntOrString::String(_)));
    let scale = if needs_scale { expected_scale(&ctx, &ns, &pods).await? } else { Ok(0) };
    let counts = expected_and_desired(spec.min_available.as_ref(), spec.max_unavailable.as_ref(), pods.len(), || scale.clone());
    let old = pdb.status.clone().unwrap_or_default();
    let generation = pdb.metadata.generation.unwrap_or(0);
    let (expected, desired) = match counts {
        Ok(c) => c,
        Err(why) => {
            ctx.recorder.publish(pdb.as_ref(), EventType::Warning, "CalculateExpectedPodCountFailed", format!("Failed to calculate the number of expected pods: {why}"));
            // Fail safe: nothing may be disrupted.
            let mut st = old.clone();
            st.disruptions_allowed = 0;
            let mut conds: Vec<Condition> = st.conditions.clone().unwrap_or_default().into_iter().filter(|c| c.type_ != "DisruptionAllowed").collect();
            conds.push(Condition { type_: "DisruptionAllowed".into(), status: "False".into(), reason: "SyncFailed".into(), message: why, observed_generation: st.observed_generation, last_transition_time: Time(Utc::now()) });
            st.conditions = Some(conds);
            write_status(&ctx, &pdb, st).await?;
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
    };
    if unmanaged && needs_scale {
        ctx.recorder.publish(
            pdb.as_ref(),
            EventType::Warning,
            "UnmanagedPods",
            "Pods selected by this PodDisruptionBudget were found to be unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value.",
        );
    }
    // Evictions not yet followed by the pod's deletion, for at most DELETION_TIMEOUT.
    let now = Utc::now();
    let timeout = chrono::Duration::from_std(DELETION_TIMEOUT).unwrap_or_default();
    let mut disrupted: BTreeMap<String, Time> = BTreeMap::new();
    let mut recheck: Option<chrono::DateTime<Utc>> = None;
    for p in &pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(at) = old.disrupted_pods.as_ref().and_then(|m| m.get(&p.name_any())) else { continue };
        let expires = at.0 + timeout;
        if expires < now {
            ctx.recorder.publish(p.as_ref(), EventType::Warning, "NotDeleted", format!("Pod was expected by PDB {ns}/{} to be deleted but it wasn't", pdb.name_any()));
        } else {
            recheck = Some(recheck.map_or(expires, |r| r.min(expires)));
            disrupted.insert(p.name_any(), at.clone());
        }
    }
    let healthy = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none() && !disrupted.contains_key(&p.name_any()) && ready_since(p).is_some()).count() as i32;
    let allowed = if expected <= 0 { 0 } else { (healthy - desired).max(0) };
    let conditions = disruption_condition(old.conditions.as_deref().unwrap_or_default(), allowed, generation);
    let status = PodDisruptionBudgetStatus {
        current_healthy: healthy,
        desired_healthy: desired,
        expected_pods: expected,
        disruptions_allowed: allowed,
        disrupted_pods: if disrupted.is_empty() { None } else { Some(disrupted) },
        observed_generation: Some(generation),
        conditions: Some(conditions),
    };
    let strip = |c: &Option<Vec<Condition>>| c.iter().flatten().map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone())).collect::<Vec<_>>();
    let same = old.current_healthy == status.current_healthy
        && old.desired_healthy == status.desired_healthy
        && old.expected_pods == status.expected_pods
        && old.disruptions_allowed == status.disruptions_allowed
        && old.disrupted_pods.clone().unwrap_or_default() == status.disrupted_pods.clone().unwrap_or_default()
        && old.observed_generation == status.observed_generation
        && strip(&old.conditions) == strip(&status.conditions);
    if !same && !write_status(&ctx, &pdb, status).await? {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    Ok(match recheck {
        Some(at) => Action::requeue((at - now).to_std().unwrap_or(Duration::from_secs(1)) + Duration::from_millis(50)),
        None => Action::requeue(Duration::from_secs(60)),
    })
}

/// Write the status with the resourceVersion it was computed from; Ok(false) on a conflict
/// (an eviction spent a disruption meanwhile: compute again).
async fn write_status(ctx: &Context<State>, pdb: &PodDisruptionBudget, status: PodDisruptionBudgetStatus) -> Result<bool, Error> {
    let mut new = pdb.clone();
    new.status = Some(status);
    let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.writer.clone(), &pdb.namespace().unwrap_or_default());
    let body = serde_json::to_vec(&new).map_err(|e| Error::Invalid(e.to_string()))?;
    match api.replace_status(&pdb.name_any(), &PostParams::default(), body).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_and_desired_as_upstream() {
        let int = IntOrString::Int;
        let pct = |s: &str| IntOrString::String(s.into());
        let never = || -> Result<i32, String> { panic!("scale not needed") };
        assert_eq!(expected_and_desired(Some(&int(2)), None, 3, never), Ok((3, 2)));
        assert_eq!(expected_and_desired(Some(&pct("50%")), None, 3, || Ok(5)), Ok((5, 3)), "rounded up");
        assert_eq!(expected_and_desired(None, Some(&int(1)), 3, || Ok(4)), Ok((4, 3)));
        assert_eq!(expected_and_desired(None, Some(&pct("30%")), 3, || Ok(10)), Ok((10, 7)));
        assert_eq!(expected_and_desired(None, Some(&int(9)), 3, || Ok(4)), Ok((4, 0)), "never below 0");
        assert!(expected_and_desired(None, Some(&pct("x")), 3, || Ok(4)).is_err());
        assert!(expected_and_desired(None, Some(&int(1)), 3, || Err("found no controllers for pod \"p\"".into())).is_err());
        assert_eq!(expected_and_desired(None, None, 3, never), Ok((0, 0)));
    }

    #[test]
    fn condition_and_selectors() {
        let c = disruption_condition(&[], 1, 3);
        assert_eq!((c[0].status.as_str(), c[0].reason.as_str(), c[0].observed_generation), ("True", "SufficientPods", Some(3)));
        let again = disruption_condition(&c, 2, 3);
        assert_eq!(again[0].last_transition_time, c[0].last_transition_time, "same status: transition kept");
        assert_eq!(disruption_condition(&c, 0, 3)[0].reason, "InsufficientPods");
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        assert!(budget_selects(Some(&LabelSelector::default()), &labels));
        assert!(!budget_selects(None, &labels));
    }
}
