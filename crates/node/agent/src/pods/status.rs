//! A pod's status from what the driver shows: phase, conditions and container statuses, as
//! kubelet computes them (`getPhase`, `generateAPIPodStatus`, the status manager's
//! `mergePodStatus` and `TerminatePod`). Pure, so it is unit-tested.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP,
    PodReadinessGate, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use strata_driver::pod::{ContainerState as DState, ContainerStatus as DStatus};

/// What the agent knows of one container of the pod: its latest attempt, the one before, and
/// why it is waiting (when it is).
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub latest: Option<DStatus>,
    pub previous: Option<DStatus>,
    /// (reason, message) when no attempt is running: `ContainerCreating`, `ErrImagePull`,
    /// `CrashLoopBackOff`, ...
    pub waiting: Option<(String, String)>,
    /// The termination message of the latest and the previous attempt.
    pub message: Option<String>,
    pub previous_message: Option<String>,
    /// Probe verdicts for a running attempt (`None`: no probe says otherwise).
    pub ready: Option<bool>,
    pub started: Option<bool>,
}

/// Everything the status is computed from.
pub struct Inputs<'a> {
    pub pod: &'a Pod,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub sandbox_ready: bool,
    pub containers: &'a HashMap<String, Observed>,
    pub qos_class: &'a str,
    pub now: Time,
}

/// Times as the API server keeps them: whole seconds (so a status read back compares equal).
fn time(rfc3339: &Option<String>) -> Option<Time> {
    use k8s_openapi::chrono::SubsecRound;
    rfc3339.as_deref().and_then(|t| k8s_openapi::chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| Time(t.with_timezone(&k8s_openapi::chrono::Utc).trunc_subsecs(0)))
}

/// Now, in whole seconds.
pub fn now() -> Time {
    use k8s_openapi::chrono::SubsecRound;
    Time(k8s_openapi::chrono::Utc::now().trunc_subsecs(0))
}

fn terminated(d: &DStatus, message: Option<String>) -> ContainerStateTerminated {
    let reason = match d.exit.as_ref() {
        Some(e) if e.oom_killed => "OOMKilled".to_string(),
        _ => d.reason.clone().unwrap_or_else(|| if d.exit_code == Some(0) { "Completed".into() } else { "Error".into() }),
    };
    ContainerStateTerminated {
        container_id: Some(format!("strata://{}", d.id)),
        exit_code: d.exit_code.unwrap_or(0),
        signal: d.signal,
        reason: Some(reason),
        message: message.filter(|m| !m.is_empty()),
        started_at: time(&d.started_at),
        finished_at: time(&d.finished_at),
    }
}

/// One container's status.
pub fn container_status(c: &Container, o: &Observed) -> ContainerStatus {
    let latest = o.latest.as_ref();
    let running = latest.is_some_and(|d| d.state == DState::Running);
    let state = match (latest, &o.waiting) {
        (Some(d), _) if d.state == DState::Running => ContainerState { running: Some(ContainerStateRunning { started_at: time(&d.started_at) }), ..Default::default() },
        (_, Some((reason, message))) => ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some(reason.clone()), message: Some(message.clone()).filter(|m| !m.is_empty()) }),
            ..Default::default()
        },
        (Some(d), None) if d.state == DState::Exited || d.state == DState::Unknown => ContainerState { terminated: Some(terminated(d, o.message.clone())), ..Default::default() },
        _ => ContainerState { waiting: Some(ContainerStateWaiting { reason: Some("ContainerCreating".into()), message: None }), ..Default::default() },
    };
    // A waiting container's last state is its latest exited attempt; a running or terminated
    // one's is the attempt before.
    let last = match (latest, &o.waiting) {
        (Some(d), Some(_)) if d.state == DState::Exited => Some(terminated(d, o.message.clone())),
        _ => o.previous.as_ref().filter(|p| p.state == DState::Exited).map(|p| terminated(p, o.previous_message.clone())),
    };
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: latest.map(|d| d.image_ref.clone()).unwrap_or_default(),
        container_id: latest.map(|d| format!("strata://{}", d.id)),
        ready: running && o.ready.unwrap_or(true),
        started: Some(running && o.started.unwrap_or(true)),
        restart_count: latest.map(|d| d.metadata.attempt as i32).unwrap_or(0),
        state: Some(state),
        last_state: Some(ContainerState { terminated: last, ..Default::default() }),
        ..Default::default()
    }
}

fn exited_with(o: &Observed) -> Option<i32> {
    o.latest.as_ref().filter(|d| d.state == DState::Exited).map(|d| d.exit_code.unwrap_or(0))
}

/// The pod's phase (kubelet's `getPhase`).
pub fn phase(pod: &Pod, containers: &HashMap<String, Observed>) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else { return "Pending" };
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let obs = |name: &str| containers.get(name).cloned().unwrap_or_default();
    for ic in spec.init_containers.iter().flatten() {
        match exited_with(&obs(&ic.name)) {
            Some(0) => continue,
            Some(_) if policy == "Never" => return "Failed",
            _ => return "Pending",
        }
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &spec.containers {
        let o = obs(&c.name);
        match o.latest.as_ref().map(|d| d.state) {
            Some(DState::Running) => running += 1,
            Some(DState::Exited) => {
                stopped += 1;
                if o.latest.as_ref().and_then(|d| d.exit_code) == Some(0) {
                    succeeded += 1;
                }
            }
            _ => waiting += 1,
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        if policy == "Always" {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if policy == "OnFailure" {
            return "Running";
        }
        return "Failed";
    }
    "Pending"
}

fn condition(kind: &str, ok: bool, reason: Option<String>, message: Option<String>, previous: Option<&PodStatus>, now: &Time) -> PodCondition {
    let status = if ok { "True" } else { "False" }.to_string();
    let before = previous.and_then(|p| p.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == kind));
    let last_transition_time = match before {
        Some(b) if b.status == status => b.last_transition_time.clone(),
        _ => Some(now.clone()),
    };
    PodCondition {
        type_: kind.to_string(),
        status,
        reason: if ok { None } else { reason },
        message: if ok { None } else { message },
        last_transition_time,
        last_probe_time: None,
    }
}

/// Why each readiness gate of the pod holds it back: its condition (written by whoever owns the
/// gate, through `pods/status`) is missing or not True. Upstream's messages.
fn unready_gates(gates: &[PodReadinessGate], previous: Option<&PodStatus>) -> Vec<String> {
    let conditions = previous.and_then(|p| p.conditions.as_deref()).unwrap_or_default();
    gates
        .iter()
        .filter_map(|g| match conditions.iter().find(|c| c.type_ == g.condition_type) {
            None => Some(format!("corresponding condition of pod readiness gate {:?} does not exist.", g.condition_type)),
            Some(c) if c.status != "True" => Some(format!("the status of pod readiness gate {:?} is not \"True\", but {}", g.condition_type, c.status)),
            Some(_) => None,
        })
        .collect()
}

/// Ready: every container ready (else ContainersReady's reason and message) and every readiness
/// gate's condition True (else `ReadinessGatesNotReady` naming them), as kubelet's
/// `GeneratePodReadyCondition`.
fn ready_condition(containers_ready: bool, reason: &str, message: &Option<String>, gates: &[String], previous: Option<&PodStatus>, now: &Time) -> PodCondition {
    if !containers_ready {
        return condition("Ready", false, Some(reason.to_string()), message.clone(), previous, now);
    }
    if gates.is_empty() {
        return condition("Ready", true, None, None, previous, now);
    }
    condition("Ready", false, Some("ReadinessGatesNotReady".into()), Some(gates.join(", ")), previous, now)
}

/// Pod conditions kubelet owns (upstream's `PodConditionsByKubelet`): it writes these and keeps
/// every other one the API server has (readiness gates', `DisruptionTarget`, ...).
const KUBELET_CONDITIONS: [&str; 5] = ["PodScheduled", "Ready", "Initialized", "ContainersReady", "PodReadyToStartContainers"];

/// The whole status; `previous` (what the API server has) keeps transition and start times.
pub fn pod_status(i: &Inputs) -> PodStatus {
    build(i, false)
}

/// The status of a pod whose containers have all been stopped for its deletion, written before
/// the final delete (kubelet's terminal phase, v1.27+): Succeeded when every container exited 0,
/// else Failed (whatever the restart policy: nothing restarts a deleted pod), a terminal phase
/// the API server has already stays; a container with no exit to report is terminated
/// `ContainerStatusUnknown` with 137; Ready and ContainersReady are False. The Job controller's
/// pod failure policy and pod replacement read this phase, and the conditions others wrote
/// (`DisruptionTarget` from an eviction) stay.
pub fn terminal_status(i: &Inputs) -> PodStatus {
    build(i, true)
}

/// Upstream's `TerminatePod`: a container whose exit is not known counts as failed.
fn assume_terminated(s: &mut ContainerStatus) {
    if s.state.as_ref().is_some_and(|st| st.terminated.is_some()) {
        return;
    }
    let terminated = ContainerStateTerminated {
        exit_code: 137,
        reason: Some("ContainerStatusUnknown".into()),
        message: Some("The container could not be located when the pod was terminated".into()),
        ..Default::default()
    };
    s.state = Some(ContainerState { terminated: Some(terminated), ..Default::default() });
    s.ready = false;
    s.started = Some(false);
}

fn build(i: &Inputs, terminal: bool) -> PodStatus {
    let previous = i.pod.status.as_ref();
    let spec = i.pod.spec.as_ref();
    let empty = Observed::default();
    let obs = |name: &str| i.containers.get(name).unwrap_or(&empty);
    let init: Vec<&Container> = spec.map(|s| s.init_containers.iter().flatten().collect()).unwrap_or_default();
    let apps: Vec<&Container> = spec.map(|s| s.containers.iter().collect()).unwrap_or_default();
    let mut init_statuses: Vec<ContainerStatus> = init
        .iter()
        .map(|c| {
            let mut s = container_status(c, obs(&c.name));
            // An init container that completed is ready (kubelet's convention).
            s.ready = exited_with(obs(&c.name)) == Some(0);
            s.started = Some(obs(&c.name).latest.as_ref().is_some_and(|d| d.state == DState::Running));
            s
        })
        .collect();
    let mut statuses: Vec<ContainerStatus> = apps.iter().map(|c| container_status(c, obs(&c.name))).collect();
    if !init.is_empty() {
        // A pod with init containers shows its containers not created yet as PodInitializing
        // (kubelet's default waiting state), ContainerCreating otherwise.
        for s in init_statuses.iter_mut().chain(statuses.iter_mut()) {
            if let Some(w) = s.state.as_mut().and_then(|st| st.waiting.as_mut()).filter(|w| w.reason.as_deref() == Some("ContainerCreating")) {
                w.reason = Some("PodInitializing".into());
            }
        }
    }
    // Ephemeral containers are never ready and count for neither the phase nor readiness.
    let ephemeral = super::spec::ephemeral_containers(i.pod);
    let mut ephemeral_statuses: Vec<ContainerStatus> = ephemeral
        .iter()
        .map(|c| ContainerStatus { ready: false, ..container_status(c, obs(&c.name)) })
        .collect();
    let phase = if terminal {
        // Init containers stay as they are when no regular container started (the pod never
        // got that far).
        let started = statuses.iter().any(|s| s.state.as_ref().is_some_and(|st| st.waiting.is_none()));
        let init_failed = init_statuses.iter().any(|s| s.state.as_ref().and_then(|st| st.terminated.as_ref()).is_some_and(|t| t.exit_code != 0));
        for s in statuses.iter_mut().chain(ephemeral_statuses.iter_mut()) {
            assume_terminated(s);
        }
        if started {
            for s in init_statuses.iter_mut() {
                assume_terminated(s);
            }
        }
        let all_zero = statuses.iter().all(|s| s.state.as_ref().and_then(|st| st.terminated.as_ref()).is_some_and(|t| t.exit_code == 0));
        match previous.and_then(|p| p.phase.as_deref()) {
            Some("Succeeded") => "Succeeded",
            Some("Failed") => "Failed",
            _ if all_zero && !init_failed => "Succeeded",
            _ => "Failed",
        }
    } else {
        phase(i.pod, i.containers)
    };
    let incomplete: Vec<String> = init.iter().filter(|c| exited_with(obs(&c.name)) != Some(0)).map(|c| c.name.clone()).collect();
    let unready: Vec<String> = statuses.iter().filter(|s| !s.ready).map(|s| s.name.clone()).collect();
    let list = |v: &[String]| format!("[{}]", v.join(" "));
    let completed = phase == "Succeeded";
    let (not_ready_reason, not_ready_message) =
        if completed { ("PodCompleted".to_string(), None) } else { ("ContainersNotReady".to_string(), Some(format!("containers with unready status: {}", list(&unready)))) };
    let now = &i.now;
    // Conditions kubelet does not own stay as the API server has them (mergePodStatus).
    let others = previous.and_then(|p| p.conditions.as_ref()).into_iter().flatten().filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str())).cloned();
    let sandbox_ready = i.sandbox_ready && !terminal;
    let gates = unready_gates(spec.and_then(|s| s.readiness_gates.as_deref()).unwrap_or_default(), previous);
    let conditions = others
        .chain([
            condition("PodReadyToStartContainers", sandbox_ready, None, None, previous, now),
            condition(
                "Initialized",
                incomplete.is_empty(),
                Some(if completed { "PodCompleted".into() } else { "ContainersNotInitialized".into() }),
                Some(format!("containers with incomplete status: {}", list(&incomplete))),
                previous,
                now,
            ),
            ready_condition(unready.is_empty(), &not_ready_reason, &not_ready_message, &gates, previous, now),
            condition("ContainersReady", unready.is_empty(), Some(not_ready_reason), not_ready_message, previous, now),
            condition("PodScheduled", true, None, None, previous, now),
        ])
        .collect();
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: Some(i.host_ip.clone()),
        host_ips: Some(vec![HostIP { ip: i.host_ip.clone() }]),
        pod_ip: i.pod_ip.clone(),
        pod_ips: i.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        start_time: previous.and_then(|p| p.start_time.clone()).or_else(|| Some(now.clone())),
        qos_class: Some(i.qos_class.to_string()),
        init_container_statuses: if init.is_empty() { None } else { Some(init_statuses) },
        container_statuses: Some(statuses),
        ephemeral_container_statuses: if ephemeral.is_empty() { None } else { Some(ephemeral_statuses) },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attempt(name: &str, state: &str, code: Option<i32>) -> DStatus {
        serde_json::from_value(json!({
            "id": format!("{name}-id"), "sandbox_id": "sb", "metadata": {"name": name, "attempt": 0}, "state": state,
            "created_at": "", "started_at": null, "finished_at": null, "exit_code": code, "signal": null, "reason": null,
            "message": null, "image": "", "image_ref": "", "pid": null, "log_path": "", "exit": null, "labels": {}, "annotations": {}
        }))
        .expect("status")
    }

    fn pod(policy: &str, containers: &[&str], status: serde_json::Value) -> Pod {
        let cs: Vec<serde_json::Value> = containers.iter().map(|c| json!({"name": c, "image": "img"})).collect();
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"restartPolicy": policy, "containers": cs}, "status": status})).expect("pod")
    }

    /// The terminal status of `pod` with each container's latest attempt (`None`: never started).
    fn check(pod: &Pod, latest: &[(&str, Option<(&str, i32)>)]) -> PodStatus {
        let containers: HashMap<String, Observed> = latest
            .iter()
            .map(|(name, l)| {
                let o = Observed { latest: l.map(|(state, code)| attempt(name, state, Some(code))), ..Default::default() };
                (name.to_string(), o)
            })
            .collect();
        let i = Inputs { pod, pod_ip: None, host_ip: "10.0.0.1".into(), sandbox_ready: true, containers: &containers, qos_class: "BestEffort", now: now() };
        terminal_status(&i)
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> Option<&'a PodCondition> {
        s.conditions.iter().flatten().find(|c| c.type_ == t)
    }

    fn terminated(s: &PodStatus, i: usize) -> (i32, String) {
        let t = s.container_statuses.as_ref().and_then(|c| c[i].state.as_ref()).and_then(|st| st.terminated.clone()).expect("terminated state");
        (t.exit_code, t.reason.unwrap_or_default())
    }

    #[test]
    fn a_deleted_pod_whose_containers_all_exited_zero_succeeded_whatever_its_restart_policy() {
        for policy in ["Always", "OnFailure", "Never"] {
            let s = check(&pod(policy, &["a", "b"], json!({"phase": "Running"})), &[("a", Some(("exited", 0))), ("b", Some(("exited", 0)))]);
            assert_eq!(s.phase.as_deref(), Some("Succeeded"), "{policy}");
            assert_eq!(terminated(&s, 1), (0, "Completed".into()));
            assert_eq!(cond(&s, "Ready").map(|c| (c.status.as_str(), c.reason.as_deref())), Some(("False", Some("PodCompleted"))));
        }
    }

    #[test]
    fn one_killed_or_unknown_container_fails_the_deleted_pod() {
        let s = check(&pod("Always", &["a", "b"], json!({"phase": "Running"})), &[("a", Some(("exited", 0))), ("b", Some(("exited", 137)))]);
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(terminated(&s, 1), (137, "Error".into()));
        assert_eq!(cond(&s, "Ready").map(|c| c.status.as_str()), Some("False"));
        assert_eq!(cond(&s, "ContainersReady").map(|c| c.status.as_str()), Some("False"));
        assert_eq!(cond(&s, "PodReadyToStartContainers").map(|c| c.status.as_str()), Some("False"), "the sandbox goes with the pod");
        // A container that never started (or whose record is gone) is reported as failed.
        let s = check(&pod("Never", &["a", "b"], json!({"phase": "Running"})), &[("a", Some(("exited", 0))), ("b", None)]);
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(terminated(&s, 1), (137, "ContainerStatusUnknown".into()));
        let s = check(&pod("Never", &["a"], json!({"phase": "Pending"})), &[("a", None)]);
        assert_eq!(s.phase.as_deref(), Some("Failed"), "a pending pod deleted before it ran");
    }

    #[test]
    fn a_terminal_phase_already_written_stays() {
        let s = check(&pod("Never", &["a"], json!({"phase": "Succeeded"})), &[("a", None)]);
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        let s = check(&pod("Never", &["a"], json!({"phase": "Failed"})), &[("a", Some(("exited", 0)))]);
        assert_eq!(s.phase.as_deref(), Some("Failed"));
    }

    #[test]
    fn conditions_kubelet_does_not_own_stay() {
        let target = json!({"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"});
        let stale_ready = json!({"type": "Ready", "status": "True"});
        let p = pod("Never", &["a"], json!({"phase": "Running", "conditions": [target, stale_ready]}));
        let s = check(&p, &[("a", Some(("exited", 143)))]);
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        let kept = cond(&s, "DisruptionTarget").expect("DisruptionTarget kept");
        assert_eq!((kept.status.as_str(), kept.reason.as_deref()), ("True", Some("EvictionByEvictionAPI")));
        assert_eq!(s.conditions.iter().flatten().filter(|c| c.type_ == "Ready").count(), 1, "kubelet's own conditions are replaced, not kept twice");
        // The same while the pod runs.
        let containers = HashMap::from([("a".to_string(), Observed { latest: Some(attempt("a", "running", None)), ..Default::default() })]);
        let i = Inputs { pod: &p, pod_ip: None, host_ip: "10.0.0.1".into(), sandbox_ready: true, containers: &containers, qos_class: "BestEffort", now: now() };
        let s = pod_status(&i);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert!(cond(&s, "DisruptionTarget").is_some());
        assert_eq!(cond(&s, "Ready").map(|c| c.status.as_str()), Some("True"));
    }
    #[test]
    fn readiness_gates_hold_ready_until_their_conditions_are_true() {
        let running = HashMap::from([("a".to_string(), Observed { latest: Some(attempt("a", "running", None)), ..Default::default() })]);
        let status_with = |conditions: serde_json::Value| {
            let mut p = pod("Always", &["a"], json!({"phase": "Running", "conditions": conditions}));
            let gates = vec![PodReadinessGate { condition_type: "example.com/lb".into() }, PodReadinessGate { condition_type: "example.com/dns".into() }];
            p.spec.as_mut().expect("spec").readiness_gates = Some(gates);
            let i = Inputs { pod: &p, pod_ip: None, host_ip: "10.0.0.1".into(), sandbox_ready: true, containers: &running, qos_class: "BestEffort", now: now() };
            pod_status(&i)
        };
        let s = status_with(json!([{"type": "example.com/lb", "status": "False"}]));
        let ready = cond(&s, "Ready").expect("Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_deref()), ("False", Some("ReadinessGatesNotReady")));
        assert_eq!(
            ready.message.as_deref(),
            Some("the status of pod readiness gate \"example.com/lb\" is not \"True\", but False, corresponding condition of pod readiness gate \"example.com/dns\" does not exist.")
        );
        assert_eq!(cond(&s, "ContainersReady").map(|c| c.status.as_str()), Some("True"), "the containers are ready");
        assert_eq!(cond(&s, "example.com/lb").map(|c| c.status.as_str()), Some("False"), "the gate's condition is kept");
        let s = status_with(json!([{"type": "example.com/lb", "status": "True"}, {"type": "example.com/dns", "status": "True"}]));
        assert_eq!(cond(&s, "Ready").map(|c| (c.status.as_str(), c.reason.as_deref())), Some(("True", None)));
        // Unready containers come first, whatever the gates say.
        let waiting = HashMap::from([("a".to_string(), Observed::default())]);
        let mut p = pod("Always", &["a"], json!({"phase": "Pending"}));
        p.spec.as_mut().expect("spec").readiness_gates = Some(vec![PodReadinessGate { condition_type: "example.com/lb".into() }]);
        let i = Inputs { pod: &p, pod_ip: None, host_ip: "10.0.0.1".into(), sandbox_ready: true, containers: &waiting, qos_class: "BestEffort", now: now() };
        assert_eq!(cond(&pod_status(&i), "Ready").and_then(|c| c.reason.as_deref()), Some("ContainersNotReady"));
    }
    #[test]
    fn containers_of_a_pod_with_init_containers_wait_as_pod_initializing() {
        let mut p = pod("Always", &["a"], json!({"phase": "Pending"}));
        p.spec.as_mut().expect("spec").init_containers = Some(vec![Container { name: "i".into(), ..Default::default() }]);
        let waiting_reason = |s: &ContainerStatus| s.state.as_ref().and_then(|st| st.waiting.as_ref()).and_then(|w| w.reason.clone());
        let running_init = HashMap::from([("i".to_string(), Observed { latest: Some(attempt("i", "running", None)), ..Default::default() })]);
        let i = Inputs { pod: &p, pod_ip: None, host_ip: "10.0.0.1".into(), sandbox_ready: true, containers: &running_init, qos_class: "BestEffort", now: now() };
        let s = pod_status(&i);
        assert_eq!(s.container_statuses.as_ref().and_then(|c| waiting_reason(&c[0])).as_deref(), Some("PodInitializing"));
        // A pull error stays what it is.
        let pulling = HashMap::from([("i".to_string(), Observed { waiting: Some(("ErrImagePull".into(), "no".into())), ..Default::default() })]);
        let i = Inputs { containers: &pulling, now: now(), ..i };
        let s = pod_status(&i);
        assert_eq!(s.init_container_statuses.as_ref().and_then(|c| waiting_reason(&c[0])).as_deref(), Some("ErrImagePull"));
        assert_eq!(s.container_statuses.as_ref().and_then(|c| waiting_reason(&c[0])).as_deref(), Some("PodInitializing"));
        // Without init containers: ContainerCreating.
        let q = pod("Always", &["a"], json!({"phase": "Pending"}));
        let none = HashMap::new();
        let i = Inputs { pod: &q, pod_ip: None, host_ip: "10.0.0.1".into(), sandbox_ready: true, containers: &none, qos_class: "BestEffort", now: now() };
        assert_eq!(pod_status(&i).container_statuses.as_ref().and_then(|c| waiting_reason(&c[0])).as_deref(), Some("ContainerCreating"));
    }
}
