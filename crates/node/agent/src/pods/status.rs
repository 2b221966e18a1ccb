//! A pod's status from what the driver shows: phase, conditions and container statuses, as
//! kubelet computes them (`getPhase`, `generateAPIPodStatus`). Pure, so it is unit-tested.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP,
    PodStatus,
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

/// The whole status; `previous` (what the API server has) keeps transition and start times.
pub fn pod_status(i: &Inputs) -> PodStatus {
    let previous = i.pod.status.as_ref();
    let spec = i.pod.spec.as_ref();
    let empty = Observed::default();
    let obs = |name: &str| i.containers.get(name).unwrap_or(&empty);
    let init: Vec<&Container> = spec.map(|s| s.init_containers.iter().flatten().collect()).unwrap_or_default();
    let apps: Vec<&Container> = spec.map(|s| s.containers.iter().collect()).unwrap_or_default();
    let init_statuses: Vec<ContainerStatus> = init
        .iter()
        .map(|c| {
            let mut s = container_status(c, obs(&c.name));
            // An init container that completed is ready (kubelet's convention).
            s.ready = exited_with(obs(&c.name)) == Some(0);
            s.started = Some(obs(&c.name).latest.as_ref().is_some_and(|d| d.state == DState::Running));
            s
        })
        .collect();
    let statuses: Vec<ContainerStatus> = apps.iter().map(|c| container_status(c, obs(&c.name))).collect();
    let phase = phase(i.pod, i.containers);
    let incomplete: Vec<String> = init.iter().filter(|c| exited_with(obs(&c.name)) != Some(0)).map(|c| c.name.clone()).collect();
    let unready: Vec<String> = statuses.iter().filter(|s| !s.ready).map(|s| s.name.clone()).collect();
    let list = |v: &[String]| format!("[{}]", v.join(" "));
    let completed = phase == "Succeeded";
    let (not_ready_reason, not_ready_message) =
        if completed { ("PodCompleted".to_string(), None) } else { ("ContainersNotReady".to_string(), Some(format!("containers with unready status: {}", list(&unready)))) };
    let now = &i.now;
    let conditions = vec![
        condition("PodReadyToStartContainers", i.sandbox_ready, None, None, previous, now),
        condition(
            "Initialized",
            incomplete.is_empty(),
            Some(if completed { "PodCompleted".into() } else { "ContainersNotInitialized".into() }),
            Some(format!("containers with incomplete status: {}", list(&incomplete))),
            previous,
            now,
        ),
        condition("Ready", unready.is_empty(), Some(not_ready_reason.clone()), not_ready_message.clone(), previous, now),
        condition("ContainersReady", unready.is_empty(), Some(not_ready_reason), not_ready_message, previous, now),
        condition("PodScheduled", true, None, None, previous, now),
    ];
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
        ..Default::default()
    }
}
