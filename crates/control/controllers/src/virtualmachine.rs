//! The VirtualMachine controller (KubeVirt's VM controller, with strata's launcher pods): each
//! boot of a VirtualMachine is one *launcher pod* it owns (controller ownerReference), named
//! `virt-launcher-<vm>-<attempt>`, carrying the VM's spec ([`vm::SPEC_ANNOTATION`]); the
//! scheduler places it like any pod (requests: the guest's memory plus QEMU's overhead, 100m
//! per vCPU), and the node agent that gets it runs the VM through the VM driver and reports the
//! pod's status. This controller enforces `runStrategy` and mirrors the launcher's status into
//! the VM's (`virtualmachines/status`).
//!
//! The decision is pure ([`plan`]: the VM and its launcher pods in, what to do out). Names are
//! deterministic per attempt, so a create repeated because the pod cache lags is a harmless
//! AlreadyExists; the restart count travels on the pod itself ([`RESTARTS_ANNOTATION`]), so a
//! crash between a create and the status write loses nothing. A replaced launcher is deleted
//! once its successor exists; a VM whose old launcher is still terminating waits for it (never
//! two QEMUs for one VM).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements, SecretVolumeSource, Volume};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use strata_client::lean;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;
use strata_client::events::EventType;
use strata_client::vm::{self, RunStrategy, VirtualMachine, VirtualMachineCondition, VirtualMachineStatus};

use crate::replicaset::{controller_of, controller_ref};
use crate::{Clients, Context, Error};

pub const IDENTITY: &str = "virtualmachine-controller";

/// On a launcher pod: the VM's restart count when this launcher was created.
pub const RESTARTS_ANNOTATION: &str = "strata.dev/vm-restarts";

/// What a VM's QEMU costs beyond the guest's memory, requested by its launcher pod. Measured
/// (ARCHITECTURE.md, "VirtualMachines"): QEMU's resident memory outside the guest-RAM mapping
/// (`/proc/PID/smaps`) plus its supervisor's RSS, for the test guest (256 MiB, TCG) booted to its
/// HTTP server: 101 + 3 MiB; 128 MiB leaves a quarter for heavier guests' translation cache.
pub const QEMU_OVERHEAD_BYTES: u64 = 128 << 20;
/// CPU requested per vCPU (KubeVirt's default `cpuAllocationRatio` of 10).
pub const MILLICPU_PER_VCPU: u64 = 100;
/// Back-off before a VM that failed again is started again: 5 s doubling to 5 minutes (the
/// first failure restarts at once).
const BACKOFF_INITIAL: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

pub struct State {
    pods: Store<Pod>,
    /// Per VM uid: the last failed launcher seen, how many failed in a row, and when.
    failures: Mutex<HashMap<String, (String, u32, Instant)>>,
}

pub async fn run(clients: Clients) -> Result<(), Error> {
    let (pods, writer) = reflector::store::<Pod>();
    let launchers = watcher::Config::default().labels(vm::VM_LABEL);
    let pod_stream = reflector::reflector(writer, lean::watcher(Api::<Pod>::all(clients.root.clone()), launchers)).default_backoff().touched_objects();
    let ctx = Context::new(clients.clone(), IDENTITY, State { pods, failures: Mutex::default() });
    Controller::new(Api::<VirtualMachine>::all(clients.root.clone()), crate::watch_config())
        .owns_stream(pod_stream)
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_failures(IDENTITY))
        .await;
    Ok(())
}

fn error_policy(v: Arc<VirtualMachine>, e: &Error, _: Arc<Context<State>>) -> Action {
    tracing::warn!(vm = %crate::key(v.as_ref()), error = %e, "virtualmachine controller");
    Action::requeue(Duration::from_secs(2))
}

fn attempt(p: &Pod) -> u32 {
    p.labels().get(vm::ATTEMPT_LABEL).and_then(|a| a.parse().ok()).unwrap_or(0)
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

fn finished(p: &Pod) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

/// `virt-launcher-<vm>-<attempt>`; a VM name too long for that is cut and told apart by its uid.
pub fn launcher_name(vm_name: &str, uid: &str, attempt: u32) -> String {
    const MAX: usize = 253 - 14 - 11;
    if vm_name.len() <= MAX {
        return format!("virt-launcher-{vm_name}-{attempt}");
    }
    let cut = vm_name[..MAX - 9].trim_end_matches(['-', '.']);
    format!("virt-launcher-{cut}-{}-{attempt}", &uid[..8.min(uid.len())])
}

/// What the controller does for one VM now.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Start this attempt, with this restart count (`None`: start nothing).
    pub create: Option<(u32, i32)>,
    /// Launcher pods to delete (power-off; or finished ones a newer launcher replaced).
    pub delete: Vec<String>,
    /// Wait this long before starting again (failure back-off).
    pub wait: Option<Duration>,
}

/// Decide from the VM and its launcher pods (`failures`: failed launchers in a row, and how
/// long ago the last failed). Pure.
pub fn plan(v: &VirtualMachine, pods: &[Arc<Pod>], failures: Option<(u32, Duration)>) -> Plan {
    let mut out = Plan::default();
    let live: Vec<&Arc<Pod>> = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let terminating = pods.iter().any(|p| p.metadata.deletion_timestamp.is_some());
    let current = live.iter().max_by_key(|p| attempt(p));
    let next = pods.iter().map(|p| attempt(p) + 1).max().unwrap_or(0);
    let status = v.status.clone().unwrap_or_default();
    let restarts_of = |p: &Pod| p.annotations().get(RESTARTS_ANNOTATION).and_then(|r| r.parse::<i32>().ok()).unwrap_or(status.restart_count);
    // Finished launchers a newer one replaced.
    if let Some(cur) = current {
        out.delete.extend(live.iter().filter(|p| attempt(p) < attempt(cur) && finished(p)).map(|p| p.name_any()));
    }
    match v.spec.run_strategy() {
        RunStrategy::Manual => {}
        RunStrategy::Halted => out.delete = live.iter().map(|p| p.name_any()).collect(),
        strategy => match current {
            // The previous boot is still powering off: never two QEMUs for one VM.
            None if terminating => {}
            None => {
                let ran = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
                if !(strategy == RunStrategy::Once && ran) {
                    out.create = Some((next, status.restart_count));
                }
            }
            Some(p) if finished(p) => {
                let failed = phase(p) == "Failed";
                let again = match strategy {
                    RunStrategy::Always => true,
                    RunStrategy::RerunOnFailure => failed,
                    _ => false,
                };
                if again && !terminating {
                    let delay = match failures {
                        Some((n, ago)) if failed && n > 1 => {
                            let d = BACKOFF_INITIAL.saturating_mul(1 << (n - 2).min(10)).min(BACKOFF_MAX);
                            d.checked_sub(ago).filter(|d| !d.is_zero())
                        }
                        _ => None,
                    };
                    match delay {
                        Some(d) => out.wait = Some(d),
                        None => {
                            out.create = Some((next, restarts_of(p) + 1));
                            out.delete.push(p.name_any());
                        }
                    }
                }
            }
            Some(_) => {}
        },
    }
    out
}

fn quantity_bytes(b: u64) -> Quantity {
    if b % (1 << 20) == 0 {
        Quantity(format!("{}Mi", b >> 20))
    } else {
        Quantity(b.to_string())
    }
}

/// The launcher pod of attempt `attempt`.
pub fn launcher(v: &VirtualMachine, attempt: u32, restarts: i32) -> Result<Pod, Error> {
    let name = v.name_any();
    let spec = &v.spec;
    let memory = spec.memory_bytes().ok_or_else(|| Error::Invalid(format!("VirtualMachine {name}: memory {:?} is not a quantity", spec.memory)))?;
    let requests: BTreeMap<String, Quantity> = [
        ("memory".to_string(), quantity_bytes(memory + QEMU_OVERHEAD_BYTES)),
        ("cpu".to_string(), Quantity(format!("{}m", u64::from(spec.cpus()) * MILLICPU_PER_VCPU))),
    ]
    .into_iter()
    .collect();
    let mut node_selector = spec.node_selector.clone();
    if spec.require_kvm == Some(true) {
        node_selector.insert(vm::KVM_NODE_LABEL.into(), "true".into());
    }
    let encoded = serde_json::to_string(spec).map_err(|e| Error::Invalid(format!("encoding the spec of {name}: {e}")))?;
    let secret = spec.cloud_init.as_ref().and_then(|c| c.secret_ref.as_ref());
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(launcher_name(&name, v.metadata.uid.as_deref().unwrap_or(""), attempt)),
            namespace: v.namespace(),
            labels: Some([(vm::VM_LABEL.to_string(), name.clone()), (vm::ATTEMPT_LABEL.to_string(), attempt.to_string())].into_iter().collect()),
            annotations: Some([(vm::SPEC_ANNOTATION.to_string(), encoded), (RESTARTS_ANNOTATION.to_string(), restarts.to_string())].into_iter().collect()),
            owner_references: Some(vec![controller_ref(v)]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: vm::LAUNCHER_CONTAINER.into(),
                image: Some(vm::LAUNCHER_IMAGE.into()),
                image_pull_policy: Some("Never".into()),
                ports: (!spec.ports.is_empty()).then(|| spec.ports.clone()),
                resources: Some(ResourceRequirements { requests: Some(requests), ..Default::default() }),
                ..Default::default()
            }],
            restart_policy: Some("Never".into()),
            node_selector: (!node_selector.is_empty()).then_some(node_selector),
            tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
            affinity: spec.affinity.clone(),
            // The node pulls a containerDisk with them (and may read them: the Node authorizer
            // allows a pod's imagePullSecrets); none: the ServiceAccount admission adds the
            // namespace's default ServiceAccount's, as for any pod.
            image_pull_secrets: (!spec.image_pull_secrets.is_empty()).then(|| spec.image_pull_secrets.clone()),
            termination_grace_period_seconds: Some(spec.grace_seconds()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            // The node may read a Secret only for a pod bound to it that references it.
            volumes: secret.map(|s| {
                vec![Volume { name: "cloudinit".into(), secret: Some(SecretVolumeSource { secret_name: Some(s.name.clone()), ..Default::default() }), ..Default::default() }]
            }),
            ..Default::default()
        }),
        status: None,
    })
}

/// The panic line of a finished launcher whose guest's kernel panicked (its container
/// terminated with reason `GuestPanicked`), and when.
fn guest_panic(p: &Pod) -> Option<(String, Option<Time>)> {
    if !finished(p) {
        return None;
    }
    let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
    let t = statuses.iter().find(|c| c.name == vm::LAUNCHER_CONTAINER)?.state.as_ref()?.terminated.as_ref()?;
    (t.reason.as_deref() == Some(vm::GUEST_PANICKED)).then(|| (t.message.clone().unwrap_or_else(|| "the guest kernel panicked".into()), t.finished_at.clone()))
}

fn condition(p: &Pod, t: &str) -> Option<k8s_openapi::api::core::v1::PodCondition> {
    p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == t).cloned()
}

/// The VM's status from its launcher pods (the newest one standing for the VM).
pub fn status(v: &VirtualMachine, pods: &[Arc<Pod>], plan: &Plan) -> VirtualMachineStatus {
    let old = v.status.clone().unwrap_or_default();
    let newest = pods.iter().max_by_key(|p| attempt(p));
    let halted = v.spec.run_strategy() == RunStrategy::Halted;
    let mut s = VirtualMachineStatus {
        restart_count: newest.and_then(|p| p.annotations().get(RESTARTS_ANNOTATION)).and_then(|r| r.parse().ok()).unwrap_or(old.restart_count),
        observed_generation: v.metadata.generation,
        accelerator: old.accelerator.clone(),
        accelerator_reason: old.accelerator_reason.clone(),
        ..Default::default()
    };
    let paused = newest.filter(|p| !finished(p)).and_then(|p| condition(p, vm::PAUSED_CONDITION)).filter(|c| c.status == "True");
    let (printable, message) = match newest {
        None => {
            s.phase = Some("Stopped".into());
            (if plan.create.is_some() { "Starting" } else { "Stopped" }.to_string(), None)
        }
        Some(p) => {
            let st = p.status.clone().unwrap_or_default();
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
            s.launcher_pod = p.metadata.name.clone();
            s.phase = Some(match (phase(p), &node) {
                ("Pending", None) => "Pending",
                ("Pending", Some(_)) => "Scheduled",
                (other, _) => other,
            }
            .to_string());
            if !finished(p) {
                s.node_name = node.clone();
                s.ip_address = st.pod_ip.clone();
                s.ip_addresses = st.pod_ips.iter().flatten().map(|i| i.ip.clone()).collect();
            }
            if let Some(c) = condition(p, vm::KVM_CONDITION) {
                s.accelerator = Some(if c.status == "True" { "kvm" } else { "tcg" }.into());
                s.accelerator_reason = c.message.clone();
            }
            let waiting = st.container_statuses.iter().flatten().find_map(|c| c.state.as_ref()?.waiting.clone());
            let unschedulable = condition(p, "PodScheduled").filter(|c| c.status == "False");
            if p.metadata.deletion_timestamp.is_some() || (halted && !finished(p)) {
                ("Stopping".into(), None)
            } else if let Some(c) = unschedulable {
                ("ErrorUnschedulable".into(), c.message)
            } else if plan.wait.is_some() {
                ("CrashLoopBackOff".into(), guest_panic(p).map(|(line, _)| line).or_else(|| st.message.clone()))
            } else if plan.create.is_some() {
                ("Starting".into(), None)
            } else {
                match phase(p) {
                    "Running" if paused.is_some() => (vm::PAUSED.into(), paused.as_ref().and_then(|c| c.message.clone())),
                    "Running" => match condition(p, vm::CONSOLE_CONDITION).filter(|c| c.status == "False") {
                        Some(c) => (vm::NO_CONSOLE_OUTPUT.into(), c.message),
                        None => ("Running".into(), None),
                    },
                    "Pending" => match waiting.filter(|w| w.reason.as_deref().is_some_and(|r| r != "ContainerCreating")) {
                        Some(w) => (w.reason.unwrap_or_default(), w.message),
                        None => ("Starting".into(), None),
                    },
                    other if halted => {
                        let _ = other;
                        ("Stopped".into(), None)
                    }
                    "Failed" if guest_panic(p).is_some() => (vm::GUEST_PANICKED.into(), guest_panic(p).map(|(line, _)| line)),
                    other => (other.to_string(), st.message.clone()),
                }
            }
        }
    };
    let ready = newest.is_some_and(|p| {
        p.metadata.deletion_timestamp.is_none()
            && phase(p) == "Running"
            && condition(p, "Ready").is_some_and(|c| c.status == "True")
            && !condition(p, vm::CONSOLE_CONDITION).is_some_and(|c| c.status == "False")
    });
    let (cond_status, reason) = if ready { ("True", "Running".to_string()) } else { ("False", printable.clone()) };
    let previous = old.conditions.iter().find(|c| c.type_ == "Ready");
    let since = match previous {
        Some(c) if c.status == cond_status => c.last_transition_time.clone(),
        _ => Some(Time(chrono::Utc::now())),
    };
    s.conditions = vec![VirtualMachineCondition { type_: "Ready".into(), status: cond_status.into(), reason: Some(reason), message: message.clone(), last_transition_time: since }];
    if paused.is_some() && printable == vm::PAUSED {
        let since = old.conditions.iter().find(|c| c.type_ == vm::PAUSED).and_then(|c| c.last_transition_time.clone()).unwrap_or_else(|| Time(chrono::Utc::now()));
        s.conditions.push(VirtualMachineCondition { type_: vm::PAUSED.into(), status: "True".into(), reason: Some(vm::PAUSED.into()), message, last_transition_time: Some(since) });
    }
    // The last finished boot's guest panic: set from that launcher, kept while a later boot
    // starts or runs (as a pod container's lastState), dropped once a boot ends another way.
    let old_panic = old.conditions.iter().find(|c| c.type_ == vm::GUEST_PANICKED);
    let panic = match newest {
        Some(p) if finished(p) => guest_panic(p).map(|(line, at)| {
            let message = format!("{line} (launcher pod {})", p.name_any());
            let since = at
                .or_else(|| old_panic.filter(|c| c.message.as_deref() == Some(message.as_str())).and_then(|c| c.last_transition_time.clone()))
                .unwrap_or_else(|| Time(chrono::Utc::now()));
            VirtualMachineCondition { type_: vm::GUEST_PANICKED.into(), status: "True".into(), reason: Some(vm::GUEST_PANICKED.into()), message: Some(message), last_transition_time: Some(since) }
        }),
        _ => old_panic.cloned(),
    };
    s.conditions.extend(panic);
    // What the guest's agent reports, while the launcher runs (KubeVirt's AgentConnected).
    if let Some(c) = newest.filter(|p| !finished(p) && p.metadata.deletion_timestamp.is_none()).and_then(|p| condition(p, vm::AGENT_CONDITION)) {
        let report = (c.status == "True").then(|| c.message.as_deref().and_then(|m| serde_json::from_str::<vm::GuestReport>(m).ok())).flatten();
        let (status, reason, message) = match report {
            Some(r) => {
                s.guest_os_info = Some(r.guest_os_info);
                s.guest_hostname = r.hostname;
                s.interfaces = r.interfaces;
                ("True", vm::AGENT_CONNECTED, None)
            }
            None => ("False", vm::AGENT_NOT_CONNECTED, c.message.filter(|_| c.status != "True")),
        };
        let since = old.conditions.iter().find(|c| c.type_ == vm::AGENT_CONNECTED && c.status == status).and_then(|c| c.last_transition_time.clone()).unwrap_or_else(|| Time(chrono::Utc::now()));
        s.conditions.push(VirtualMachineCondition { type_: vm::AGENT_CONNECTED.into(), status: status.into(), reason: Some(reason.into()), message, last_transition_time: Some(since) });
    }
    s.printable_status = Some(printable);
    s
}

/// printableStatus values that say the VM cannot run as asked.
const TROUBLE: &[&str] = &["VMCreateError", vm::NO_CONSOLE_OUTPUT, "ErrorUnschedulable", "CrashLoopBackOff", "Failed"];

/// A Warning event for the VM when its status turns to trouble (or to other trouble): the
/// printableStatus as reason, the Ready condition's message. Pure.
fn trouble(old: Option<&VirtualMachineStatus>, new: &VirtualMachineStatus) -> Option<(String, String)> {
    let printable = new.printable_status.as_deref()?;
    if !TROUBLE.contains(&printable) || old.and_then(|o| o.printable_status.as_deref()) == Some(printable) {
        return None;
    }
    let message = new.conditions.iter().find(|c| c.type_ == "Ready").and_then(|c| c.message.clone()).filter(|m| !m.is_empty());
    let pod = new.launcher_pod.as_deref().unwrap_or("");
    Some((printable.to_string(), message.unwrap_or_else(|| format!("launcher pod {pod} is {printable}"))))
}

/// A Warning event `GuestPanicked` (KubeVirt's) when the status gains a guest panic it did not
/// have: a new condition, or one of another boot. Pure.
fn panicked(old: Option<&VirtualMachineStatus>, new: &VirtualMachineStatus) -> Option<String> {
    let find = |s: &VirtualMachineStatus| s.conditions.iter().find(|c| c.type_ == vm::GUEST_PANICKED).map(|c| (c.message.clone(), c.last_transition_time.clone()));
    let now = find(new)?;
    (old.and_then(find) != Some(now.clone())).then(|| format!("The guest kernel panicked: {}", now.0.unwrap_or_default()))
}

/// A merge patch from `old` to `new`: a field `new` no longer has is null (removed), not left
/// as it was (the guest agent's data once it stops answering, a finished launcher's node and IP).
fn status_patch(old: Option<&VirtualMachineStatus>, new: &VirtualMachineStatus) -> serde_json::Value {
    let mut patch = serde_json::to_value(new).unwrap_or_default();
    let old = old.and_then(|o| serde_json::to_value(o).ok());
    if let (Some(serde_json::Value::Object(old)), serde_json::Value::Object(p)) = (old, &mut patch) {
        for k in old.keys() {
            p.entry(k.clone()).or_insert(serde_json::Value::Null);
        }
    }
    patch
}

/// The same status, ignoring when the Ready condition last changed (so an unchanged status is
/// not written again).
fn same(a: &VirtualMachineStatus, b: &VirtualMachineStatus) -> bool {
    let strip = |s: &VirtualMachineStatus| {
        let mut s = s.clone();
        s.conditions.iter_mut().for_each(|c| c.last_transition_time = None);
        s
    };
    strip(a) == strip(b)
}

async fn reconcile(v: Arc<VirtualMachine>, ctx: Arc<Context<State>>) -> Result<Action, Error> {
    if !crate::synced(&ctx.state.pods) {
        return Ok(crate::not_synced());
    }
    if v.metadata.deletion_timestamp.is_some() {
        // The garbage collector deletes the launchers (their node powers the VM off).
        return Ok(Action::await_change());
    }
    let ns = v.namespace().unwrap_or_default();
    let name = v.name_any();
    let uid = v.metadata.uid.clone().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = ctx
        .state
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()) && controller_of(&p.metadata).is_some_and(|c| c.uid == uid))
        .collect();

    // Failed launchers in a row (a Succeeded one, or one that ran 10 minutes, ends the run).
    let failures = {
        let newest = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).max_by_key(|p| attempt(p));
        let mut f = ctx.state.failures.lock().map_err(|_| Error::Invalid("failure table poisoned".into()))?;
        match newest {
            Some(p) if phase(p) == "Failed" => {
                let pname = p.name_any();
                let entry = f.entry(uid.clone()).or_insert_with(|| (String::new(), 0, Instant::now()));
                if entry.0 != pname {
                    *entry = (pname, entry.1 + 1, Instant::now());
                }
                Some((entry.1, entry.2.elapsed()))
            }
            Some(p) if phase(p) == "Succeeded" => {
                f.remove(&uid);
                None
            }
            _ => f.get(&uid).map(|e| (e.1, e.2.elapsed())),
        }
    };
    let plan = plan(&v, &pods, failures);
    let pods_api: Api<Pod> = Api::namespaced(ctx.writer.clone(), &ns);
    let mut requeue = plan.wait;
    if let Some((attempt, restarts)) = plan.create {
        let pod = launcher(&v, attempt, restarts)?;
        let pname = pod.name_any();
        match pods_api.create(&PostParams::default(), &pod).await {
            Ok(_) => ctx.recorder.publish(v.as_ref(), EventType::Normal, "SuccessfulCreate", format!("Created launcher pod {pname}")),
            // Created before (the pod cache lags), or an earlier boot's pod is still going away.
            Err(kube::Error::Api(e)) if e.code == 409 => requeue = Some(Duration::from_secs(1)),
            Err(e) => {
                ctx.recorder.publish(v.as_ref(), EventType::Warning, "FailedCreate", format!("Error creating launcher pod {pname}: {}", crate::api_message(&e)));
                return Err(e.into());
            }
        }
    }
    for pname in &plan.delete {
        let Some(p) = pods.iter().find(|p| p.metadata.name.as_deref() == Some(pname.as_str())) else { continue };
        let dp = DeleteParams {
            preconditions: Some(Preconditions { uid: p.metadata.uid.clone(), resource_version: None }),
            grace_period_seconds: Some(v.spec.grace_seconds().max(0) as u32),
            ..Default::default()
        };
        match pods_api.delete(pname, &dp).await {
            Ok(_) if !finished(p) => ctx.recorder.publish(v.as_ref(), EventType::Normal, "Stopping", format!("Powering off: deleted launcher pod {pname}")),
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let new_status = status(&v, &pods, &plan);
    if let Some(message) = panicked(v.status.as_ref(), &new_status) {
        ctx.recorder.publish(v.as_ref(), EventType::Warning, vm::GUEST_PANICKED, message);
    }
    if let Some((reason, message)) = trouble(v.status.as_ref(), &new_status) {
        ctx.recorder.publish(v.as_ref(), EventType::Warning, &reason, message);
    }
    if !v.status.as_ref().is_some_and(|old| same(old, &new_status)) {
        let api: Api<VirtualMachine> = Api::namespaced(ctx.writer.clone(), &ns);
        let patch = json!({ "metadata": { "resourceVersion": v.metadata.resource_version }, "status": status_patch(v.status.as_ref(), &new_status) });
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    Ok(match requeue {
        Some(d) => Action::requeue(d),
        None => Action::requeue(Duration::from_secs(60)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;

    fn vm(strategy: &str) -> VirtualMachine {
        let mut v: VirtualMachine = serde_json::from_value(json!({
            "metadata": { "name": "demo", "namespace": "default", "uid": "0123456789abcdef" },
            "spec": { "runStrategy": strategy, "memory": "256Mi", "cpu": 2, "boot": { "kernel": { "path": "/k" } }, "nodeSelector": { "a": "b" }, "requireKvm": true, "terminationGracePeriodSeconds": 7 }
        }))
        .expect("vm");
        v.status = Some(VirtualMachineStatus::default());
        v
    }

    fn pod(attempt: u32, phase: &str, deleting: bool) -> Arc<Pod> {
        let mut p = launcher(&vm("Always"), attempt, attempt as i32).expect("launcher");
        p.status = Some(PodStatus { phase: Some(phase.into()), ..Default::default() });
        if deleting {
            p.metadata.deletion_timestamp = Some(Time(chrono::Utc::now()));
        }
        Arc::new(p)
    }

    #[test]
    fn run_strategies() {
        let none: Vec<Arc<Pod>> = vec![];
        assert_eq!(plan(&vm("Always"), &none, None).create, Some((0, 0)));
        assert_eq!(plan(&vm("Halted"), &none, None), Plan::default());
        assert_eq!(plan(&vm("Manual"), &none, None), Plan::default());
        // Running: nothing to do; Halted deletes it (graceful power-off on the node).
        let running = vec![pod(0, "Running", false)];
        assert_eq!(plan(&vm("Always"), &running, None), Plan::default());
        assert_eq!(plan(&vm("Halted"), &running, None).delete, ["virt-launcher-demo-0"]);
        assert_eq!(plan(&vm("Manual"), &running, None), Plan::default());
        // A guest power-off: Always starts again, RerunOnFailure and Once do not.
        let off = vec![pod(0, "Succeeded", false)];
        assert_eq!(plan(&vm("Always"), &off, None), Plan { create: Some((1, 1)), delete: vec!["virt-launcher-demo-0".into()], wait: None });
        assert_eq!(plan(&vm("RerunOnFailure"), &off, None), Plan::default());
        assert_eq!(plan(&vm("Once"), &off, None), Plan::default());
        // A crash: RerunOnFailure starts again; again and again only after a back-off.
        let crashed = vec![pod(3, "Failed", false)];
        assert_eq!(plan(&vm("RerunOnFailure"), &crashed, Some((1, Duration::ZERO))).create, Some((4, 4)));
        assert_eq!(plan(&vm("Once"), &crashed, None), Plan::default());
        let p = plan(&vm("RerunOnFailure"), &crashed, Some((3, Duration::from_secs(1))));
        assert_eq!((p.create, p.wait), (None, Some(Duration::from_secs(9))));
        // An old boot still powering off: wait for it.
        let stopping = vec![pod(0, "Running", true)];
        assert_eq!(plan(&vm("Always"), &stopping, None), Plan::default());
        // Once that ran (and whose launcher is gone) is not started again.
        let mut once = vm("Once");
        once.status = Some(VirtualMachineStatus { phase: Some("Succeeded".into()), ..Default::default() });
        assert_eq!(plan(&once, &none, None), Plan::default());
    }

    #[test]
    fn the_launcher_asks_for_the_vm_and_its_overhead() {
        let p = launcher(&vm("Always"), 2, 1).expect("launcher");
        assert_eq!(p.metadata.name.as_deref(), Some("virt-launcher-demo-2"));
        let spec = p.spec.as_ref().expect("spec");
        let requests = spec.containers[0].resources.as_ref().and_then(|r| r.requests.clone()).expect("requests");
        assert_eq!(requests["memory"].0, format!("{}Mi", 256 + (QEMU_OVERHEAD_BYTES >> 20)));
        assert_eq!(requests["cpu"].0, "200m");
        assert_eq!(spec.node_selector.as_ref().map(|n| n.len()), Some(2), "the VM's selector and strata.dev/kvm=true");
        assert_eq!(spec.termination_grace_period_seconds, Some(7));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let carried = strata_client::vm::launcher_spec(&p).expect("annotation").expect("decodes");
        assert_eq!(carried, vm("Always").spec);
        assert_eq!(p.owner_references()[0].controller, Some(true));
        let long = "a".repeat(253);
        let n = launcher_name(&long, "0123456789abcdef", 12);
        assert!(n.len() <= 253 && n.ends_with("-01234567-12"), "{n}");
    }

    #[test]
    fn a_field_the_new_status_lacks_is_removed_by_the_patch() {
        let old = VirtualMachineStatus { node_name: Some("n".into()), guest_hostname: Some("demo".into()), phase: Some("Running".into()), ..Default::default() };
        let new = VirtualMachineStatus { phase: Some("Succeeded".into()), ..Default::default() };
        let p = status_patch(Some(&old), &new);
        assert_eq!((&p["phase"], &p["nodeName"], &p["guestHostname"]), (&json!("Succeeded"), &serde_json::Value::Null, &serde_json::Value::Null));
        assert!(p.as_object().is_some_and(|o| o.contains_key("guestHostname")), "{p}");
    }

    #[test]
    fn a_guest_agents_report_is_mirrored_while_the_launcher_runs() {
        let v = vm("Always");
        let report = vm::GuestReport {
            guest_os_info: vm::GuestOsInfo { name: Some("strata test guest".into()), kernel_release: Some("6.1.0".into()), ..Default::default() },
            hostname: Some("demo".into()),
            interfaces: vec![vm::VirtualMachineInterface { interface_name: "eth0".into(), ip_address: Some("10.0.2.15".into()), ip_addresses: vec!["10.0.2.15".into()], info_source: vm::INFO_SOURCE_GUEST_AGENT.into(), ..Default::default() }],
        };
        let with = |status: &str, message: String, phase: &str| {
            let mut p = (*pod(1, phase, false)).clone();
            let st = p.status.get_or_insert_with(Default::default);
            let c = k8s_openapi::api::core::v1::PodCondition { type_: vm::AGENT_CONDITION.into(), status: status.into(), message: Some(message), ..Default::default() };
            st.conditions = Some(vec![c]);
            vec![Arc::new(p)]
        };
        let agent = |s: &VirtualMachineStatus| s.conditions.iter().find(|c| c.type_ == vm::AGENT_CONNECTED).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
        let pods = with("True", serde_json::to_string(&report).expect("json"), "Running");
        let s = status(&v, &pods, &plan(&v, &pods, None));
        assert_eq!(agent(&s), Some(("True".into(), Some(vm::AGENT_CONNECTED.into()), None)));
        assert_eq!((s.guest_os_info.as_ref(), s.guest_hostname.as_deref(), s.interfaces.as_slice()), (Some(&report.guest_os_info), Some("demo"), report.interfaces.as_slice()));
        let pods = with("False", "no agent".into(), "Running");
        let s = status(&v, &pods, &plan(&v, &pods, None));
        assert_eq!(agent(&s), Some(("False".into(), Some(vm::AGENT_NOT_CONNECTED.into()), Some("no agent".into()))));
        assert!(s.guest_os_info.is_none() && s.guest_hostname.is_none() && s.interfaces.is_empty(), "{s:?}");
        // A finished boot reports nothing of its guest.
        let pods = with("True", serde_json::to_string(&report).expect("json"), "Succeeded");
        let s = status(&v, &pods, &plan(&v, &pods, None));
        assert_eq!(agent(&s), None);
        assert!(s.guest_os_info.is_none(), "{s:?}");
    }

    #[test]
    fn a_paused_launcher_is_a_paused_vm() {
        use k8s_openapi::api::core::v1::PodCondition;
        let c = |t: &str, st: &str| PodCondition { type_: t.into(), status: st.into(), reason: Some(vm::PAUSED.into()), message: Some("the VM's vCPUs are paused".into()), ..Default::default() };
        let mut p = (*pod(0, "Running", false)).clone();
        if let Some(st) = p.status.as_mut() {
            st.conditions = Some(vec![c("Ready", "False"), c(vm::PAUSED_CONDITION, "True")]);
        }
        let v = vm("Always");
        let s = status(&v, &[Arc::new(p.clone())], &Plan::default());
        assert_eq!(s.printable_status.as_deref(), Some("Paused"));
        let types: Vec<(&str, &str, Option<&str>)> = s.conditions.iter().map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_deref())).collect();
        assert_eq!(types, [("Ready", "False", Some("Paused")), ("Paused", "True", Some("Paused"))]);
        // Resumed: Running and Ready, no Paused condition.
        if let Some(st) = p.status.as_mut() {
            st.conditions = Some(vec![PodCondition { type_: "Ready".into(), status: "True".into(), ..Default::default() }]);
        }
        let s = status(&v, &[Arc::new(p)], &Plan::default());
        assert_eq!(s.printable_status.as_deref(), Some("Running"));
        assert_eq!(s.conditions.iter().map(|c| (c.type_.as_str(), c.status.as_str())).collect::<Vec<_>>(), [("Ready", "True")]);
    }

    #[test]
    fn a_guest_panic_fails_the_boot_and_is_reported_once() {
        use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus};
        let line = "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)";
        let panicked_pod = |attempt: u32, at: i64| {
            let mut p = (*pod(attempt, "Failed", false)).clone();
            let t = ContainerStateTerminated { exit_code: 0, reason: Some(vm::GUEST_PANICKED.into()), message: Some(line.into()), finished_at: Some(Time(chrono::DateTime::from_timestamp(at, 0).unwrap_or_default())), ..Default::default() };
            if let Some(st) = p.status.as_mut() {
                st.container_statuses = Some(vec![ContainerStatus { name: vm::LAUNCHER_CONTAINER.into(), state: Some(ContainerState { terminated: Some(t), ..Default::default() }), ..Default::default() }]);
            }
            Arc::new(p)
        };
        let cond = |s: &VirtualMachineStatus| s.conditions.iter().find(|c| c.type_ == vm::GUEST_PANICKED).cloned();
        // Once: the boot ends GuestPanicked (printableStatus, Ready's reason and message), with a
        // GuestPanicked condition and one Warning.
        let mut v = vm("Once");
        let pods = vec![panicked_pod(0, 1_000)];
        let p = plan(&v, &pods, Some((1, Duration::ZERO)));
        assert_eq!(p, Plan::default(), "Once is not started again");
        let s = status(&v, &pods, &p);
        assert_eq!(s.printable_status.as_deref(), Some(vm::GUEST_PANICKED));
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").cloned().unwrap_or_default();
        assert_eq!((ready.status.as_str(), ready.reason.as_deref(), ready.message.as_deref()), ("False", Some(vm::GUEST_PANICKED), Some(line)));
        let c = cond(&s).expect("a GuestPanicked condition");
        assert_eq!((c.status.as_str(), c.message.as_deref()), ("True", Some(format!("{line} (launcher pod virt-launcher-demo-0)").as_str())));
        assert_eq!(panicked(v.status.as_ref(), &s).as_deref(), Some(format!("The guest kernel panicked: {line} (launcher pod virt-launcher-demo-0)").as_str()));
        v.status = Some(s.clone());
        assert_eq!(panicked(v.status.as_ref(), &status(&v, &pods, &p)), None, "reported once");
        // RerunOnFailure: a panic is a failure: started again at once, then after a back-off
        // (CrashLoopBackOff saying why); the condition stays while the next boot runs.
        let mut v = vm("RerunOnFailure");
        let p = plan(&v, &pods, Some((1, Duration::ZERO)));
        assert_eq!(p.create, Some((1, 1)));
        let s = status(&v, &pods, &p);
        assert_eq!(s.printable_status.as_deref(), Some("Starting"));
        assert!(panicked(v.status.as_ref(), &s).is_some());
        v.status = Some(s);
        let next = vec![pod(1, "Running", false)];
        let s = status(&v, &next, &plan(&v, &next, None));
        assert_eq!(cond(&s).and_then(|c| c.message), Some(format!("{line} (launcher pod virt-launcher-demo-0)")), "kept while the next boot runs");
        assert_eq!(panicked(v.status.as_ref(), &s), None);
        v.status = Some(s);
        let again = vec![panicked_pod(1, 1_010)];
        let p = plan(&v, &again, Some((2, Duration::from_secs(1))));
        assert_eq!((p.create, p.wait), (None, Some(Duration::from_secs(4))));
        let s = status(&v, &again, &p);
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").cloned().unwrap_or_default();
        assert_eq!((s.printable_status.as_deref(), ready.message.as_deref()), (Some("CrashLoopBackOff"), Some(line)));
        assert!(panicked(v.status.as_ref(), &s).is_some_and(|m| m.contains("virt-launcher-demo-1")), "a new boot's panic is reported again");
        // A boot that ends another way drops it.
        v.status = Some(s);
        let off = vec![pod(2, "Succeeded", false)];
        assert_eq!(cond(&status(&v, &off, &plan(&v, &off, None))), None);
    }

    #[test]
    fn trouble_is_a_warning_once_per_change() {
        let st = |printable: &str, message: Option<&str>| VirtualMachineStatus {
            printable_status: Some(printable.into()),
            launcher_pod: Some("virt-launcher-demo-0".into()),
            conditions: vec![VirtualMachineCondition { type_: "Ready".into(), status: "False".into(), reason: Some(printable.into()), message: message.map(str::to_string), last_transition_time: None }],
            ..Default::default()
        };
        let err = st("VMCreateError", Some("disk image /x: not found"));
        assert_eq!(trouble(Some(&st("Starting", None)), &err), Some(("VMCreateError".into(), "disk image /x: not found".into())));
        assert_eq!(trouble(None, &err), Some(("VMCreateError".into(), "disk image /x: not found".into())));
        assert_eq!(trouble(Some(&err), &err), None, "no repeat while it stays");
        assert_eq!(trouble(Some(&err), &st("Running", None)), None);
        assert_eq!(trouble(Some(&st("Running", None)), &st("Failed", None)), Some(("Failed".into(), "launcher pod virt-launcher-demo-0 is Failed".into())));
    }
}
