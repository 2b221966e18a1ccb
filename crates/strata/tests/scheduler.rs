//! The scheduler end to end: a real `strata server` (its in-process scheduler, or `strata
//! scheduler --kubeconfig` as a separate process), real `kubectl`, and simulated nodes — Node
//! objects the test registers with capacity, labels and taints, running nothing (named
//! `sim-*`). Placements follow examples of Kubernetes' documentation.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, Killed};

/// The tests of this file share the machine (the harness runs two at once), except the two
/// whose assertions are about time under load they make themselves (a Lease renewed within a
/// 2 s deadline while scheduling a backlog; renewal round trips under a flood of creates): those
/// run alone, so another test's load (a stock kube-scheduler, a 429 flood) is not what they
/// measure.
mod machine {
    use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

    static MACHINE: RwLock<()> = RwLock::new(());

    pub fn shared() -> RwLockReadGuard<'static, ()> {
        MACHINE.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn alone() -> RwLockWriteGuard<'static, ()> {
        MACHINE.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
use common::server::{ApiServer, Backend, Options};

fn server() -> ApiServer {
    ApiServer::start_opts(Backend::Embedded, Options { scheduler: true, ..Options::default() })
}

/// A simulated node: a Node object with capacity, labels and taints, and a Ready condition.
fn sim_node(s: &ApiServer, name: &str, cpu: &str, memory: &str, pods: &str, labels: &[(&str, &str)], taints: &[(&str, &str, &str)]) {
    let mut l = format!("kubernetes.io/hostname: {name}");
    for (k, v) in labels {
        l.push_str(&format!(", {k}: \"{v}\""));
    }
    let t: Vec<String> = taints.iter().map(|(k, v, e)| format!("{{key: {k}, value: \"{v}\", effect: {e}}}")).collect();
    let yaml = format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {{{l}}}}}\nspec: {{taints: [{}]}}\nstatus:\n  capacity: {{cpu: \"{cpu}\", memory: {memory}, pods: \"{pods}\"}}\n  allocatable: {{cpu: \"{cpu}\", memory: {memory}, pods: \"{pods}\"}}\n  conditions: [{{type: Ready, status: \"True\"}}]\n",
        t.join(", ")
    );
    s.ok_stdin(&["create", "-f", "-"], Some(&yaml));
}

fn node_of(s: &ApiServer, pod: &str) -> String {
    s.kubectl(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"]).stdout.iter().map(|b| *b as char).collect()
}

/// Wait until the pod is bound; its node.
fn bound(s: &ApiServer, pod: &str) -> String {
    let mut node = String::new();
    assert!(eventually(Duration::from_secs(30), || {
        node = node_of(s, pod);
        !node.is_empty()
    }), "pod {pod} was not bound: {}", s.ok(&["describe", "pod", pod]));
    node
}

fn create(s: &ApiServer, yaml: &str) {
    s.ok_stdin(&["create", "-f", "-"], Some(yaml));
}

fn plain_pod(name: &str, labels: &str, extra_spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{{labels}}}}}\nspec:\n{extra_spec}  containers: [{{name: c, image: registry.k8s.io/pause:3.9}}]\n")
}

#[test]
fn node_affinity_and_node_selector_as_documented() {
    let _shared = machine::shared();
    let s = server();
    sim_node(&s, "sim-east", "4", "8Gi", "110", &[("topology.kubernetes.io/zone", "antarctica-east1")], &[]);
    sim_node(&s, "sim-west", "4", "8Gi", "110", &[("topology.kubernetes.io/zone", "antarctica-west1"), ("another-node-label-key", "another-node-label-value")], &[]);
    sim_node(&s, "sim-north", "4", "8Gi", "110", &[("topology.kubernetes.io/zone", "arctic-1"), ("disktype", "ssd")], &[]);
    // docs: pods/pod-with-node-affinity.yaml — required zone in east/west, preferring the
    // other label: west (the only node with both).
    for i in 0..3 {
        create(&s, &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: with-node-affinity-{i}}}\nspec:\n  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - {{key: topology.kubernetes.io/zone, operator: In, values: [antarctica-east1, antarctica-west1]}}\n      preferredDuringSchedulingIgnoredDuringExecution:\n      - weight: 1\n        preference:\n          matchExpressions:\n          - {{key: another-node-label-key, operator: In, values: [another-node-label-value]}}\n  containers: [{{name: with-node-affinity, image: registry.k8s.io/pause:2.0}}]\n"
        ));
    }
    for i in 0..3 {
        assert_eq!(bound(&s, &format!("with-node-affinity-{i}")), "sim-west");
    }
    // docs: nodeSelector disktype=ssd.
    create(&s, &plain_pod("nginx", "env: test", "  nodeSelector: {disktype: ssd}\n"));
    assert_eq!(bound(&s, "nginx"), "sim-north");
    // A VM-shaped pod that needs KVM asks for it by node selector: only a KVM node takes it.
    create(&s, &plain_pod("needs-kvm", "", "  nodeSelector: {strata.dev/kvm: \"true\"}\n"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(node_of(&s, "needs-kvm"), "");
    sim_node(&s, "sim-kvm", "4", "8Gi", "110", &[("strata.dev/kvm", "true")], &[]);
    assert_eq!(bound(&s, "needs-kvm"), "sim-kvm");
}

#[test]
fn taints_and_tolerations_as_documented() {
    let _shared = machine::shared();
    let s = server();
    // docs: kubectl taint nodes node1 key1=value1:NoSchedule
    sim_node(&s, "sim-node1", "4", "8Gi", "110", &[], &[("key1", "value1", "NoSchedule")]);
    sim_node(&s, "sim-node2", "4", "8Gi", "110", &[], &[("key1", "value1", "NoExecute")]);
    let tol = "  tolerations:\n  - {key: key1, operator: Equal, value: value1, effect: NoSchedule}\n";
    for i in 0..4 {
        create(&s, &plain_pod(&format!("tolerates-{i}"), "", tol));
    }
    for i in 0..4 {
        assert_eq!(bound(&s, &format!("tolerates-{i}")), "sim-node1");
    }
    create(&s, &plain_pod("exists", "", "  tolerations: [{key: key1, operator: Exists}]\n"));
    assert!(["sim-node1", "sim-node2"].contains(&bound(&s, "exists").as_str()));
    create(&s, &plain_pod("intolerant", "", ""));
    let mut msg = String::new();
    assert!(eventually(Duration::from_secs(30), || {
        msg = s.ok(&["describe", "pod", "intolerant"]);
        msg.contains("FailedScheduling")
    }), "{msg}");
    // NoSchedule and NoExecute taints both refuse, under one reason.
    assert!(msg.contains("0/2 nodes are available: 2 node(s) had untolerated taint {key1: value1}. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.."), "{msg}");
}

#[test]
fn inter_pod_anti_affinity_as_documented() {
    let _shared = machine::shared();
    let s = server();
    for n in ["sim-a", "sim-b", "sim-c"] {
        sim_node(&s, n, "4", "8Gi", "110", &[], &[]);
    }
    // docs: the redis-cache Deployment's pods (one per node) and web-store's pods (one per
    // node, each next to a cache).
    let cache = "  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector:\n          matchExpressions: [{key: app, operator: In, values: [store]}]\n        topologyKey: kubernetes.io/hostname\n";
    for i in 0..3 {
        create(&s, &plain_pod(&format!("redis-cache-{i}"), "app: store", cache));
    }
    let mut nodes: Vec<String> = (0..3).map(|i| bound(&s, &format!("redis-cache-{i}"))).collect();
    nodes.sort();
    assert_eq!(nodes, ["sim-a", "sim-b", "sim-c"]);
    let web = "  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector: {matchExpressions: [{key: app, operator: In, values: [web-store]}]}\n        topologyKey: kubernetes.io/hostname\n    podAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector: {matchExpressions: [{key: app, operator: In, values: [store]}]}\n        topologyKey: kubernetes.io/hostname\n";
    for i in 0..3 {
        create(&s, &plain_pod(&format!("web-store-{i}"), "app: web-store", web));
    }
    let mut nodes: Vec<String> = (0..3).map(|i| bound(&s, &format!("web-store-{i}"))).collect();
    nodes.sort();
    assert_eq!(nodes, ["sim-a", "sim-b", "sim-c"]);
    // A fourth cache pod has nowhere to go.
    create(&s, &plain_pod("redis-cache-3", "app: store", cache));
    let mut msg = String::new();
    assert!(eventually(Duration::from_secs(30), || {
        msg = s.ok(&["get", "pod", "redis-cache-3", "-o", "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}"]);
        !msg.is_empty()
    }));
    assert!(msg.starts_with("0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."), "{msg}");
}

#[test]
fn topology_spread_with_max_skew_as_documented() {
    let _shared = machine::shared();
    let s = server();
    // docs: zoneA = node1, node2; zoneB = node3, node4; pods foo=bar on node1..node3.
    for (n, z) in [("sim-node1", "zoneA"), ("sim-node2", "zoneA"), ("sim-node3", "zoneB"), ("sim-node4", "zoneB")] {
        sim_node(&s, n, "4", "8Gi", "110", &[("zone", z), ("node", n)], &[]);
    }
    for (i, n) in ["sim-node1", "sim-node2", "sim-node3"].iter().enumerate() {
        create(&s, &plain_pod(&format!("existing-{i}"), "foo: bar", &format!("  nodeName: {n}\n")));
    }
    let one = "  topologySpreadConstraints:\n  - {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {foo: bar}}}\n";
    create(&s, &plain_pod("mypod", "foo: bar", one));
    assert!(["sim-node3", "sim-node4"].contains(&bound(&s, "mypod").as_str()));
    // A bound pod's deletion is graceful until its node confirms it; no agent runs these
    // simulated nodes, so the test confirms (force), as one would for a lost node.
    s.ok(&["delete", "pod", "mypod", "--grace-period=0", "--force"]);
    let two = "  topologySpreadConstraints:\n  - {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {foo: bar}}}\n  - {maxSkew: 1, topologyKey: node, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {foo: bar}}}\n";
    create(&s, &plain_pod("mypod2", "foo: bar", two));
    assert_eq!(bound(&s, "mypod2"), "sim-node4");
}

#[test]
fn unfittable_pod_stays_pending_with_the_reason_and_is_scheduled_when_a_node_arrives() {
    let _shared = machine::shared();
    let s = server();
    // No node at all.
    create(&s, &plain_pod("early", "", ""));
    let cond = |pod: &str, field: &str| s.ok(&["get", "pod", pod, "-o", &format!("jsonpath={{.status.conditions[?(@.type==\"PodScheduled\")].{field}}}")]);
    assert!(eventually(Duration::from_secs(30), || cond("early", "message") == "no nodes available to schedule pods"), "{}", s.ok(&["get", "pod", "early", "-o", "yaml"]));
    sim_node(&s, "sim-small", "1", "2Gi", "110", &[], &[]);
    assert_eq!(bound(&s, "early"), "sim-small");
    sim_node(&s, "sim-infra1", "8", "16Gi", "110", &[], &[("dedicated", "infra", "NoSchedule")]);
    sim_node(&s, "sim-infra2", "8", "16Gi", "110", &[], &[("dedicated", "infra", "NoSchedule")]);
    create(&s, "apiVersion: v1\nkind: Pod\nmetadata: {name: big}\nspec:\n  containers: [{name: c, image: registry.k8s.io/pause:3.9, resources: {requests: {cpu: '2', memory: 1Gi}}}]\n");
    let want = "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {dedicated: infra}. preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling..";
    assert!(eventually(Duration::from_secs(30), || cond("big", "message") == want), "{}", s.ok(&["get", "pod", "big", "-o", "yaml"]));
    assert_eq!(cond("big", "status"), "False");
    assert_eq!(cond("big", "reason"), "Unschedulable");
    let describe = s.ok(&["describe", "pod", "big"]);
    assert!(describe.contains("FailedScheduling") && describe.contains(want), "{describe}");
    assert!(describe.contains("default-scheduler"), "{describe}");
    assert_eq!(s.ok(&["get", "pod", "big", "-o", "jsonpath={.status.phase}"]), "Pending");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(node_of(&s, "big"), "", "an unfittable pod stays unbound");
    // A node that can hold it arrives: scheduled without waiting out the 5-minute flush.
    sim_node(&s, "sim-big", "4", "8Gi", "110", &[], &[]);
    assert_eq!(bound(&s, "big"), "sim-big");
    let mut describe = String::new();
    assert!(eventually(Duration::from_secs(30), || {
        describe = s.ok(&["describe", "pod", "big"]);
        describe.contains("Successfully assigned default/big to sim-big")
    }), "{describe}");
    assert!(describe.contains("Scheduled"), "{describe}");
}

#[test]
fn many_pods_bound_concurrently_never_overcommit_a_node() {
    let _shared = machine::shared();
    let s = server();
    for i in 0..5 {
        sim_node(&s, &format!("sim-{i}"), "64", "256Gi", "10", &[], &[]);
    }
    let mut yaml = String::new();
    for i in 0..50 {
        yaml.push_str(&format!("---\n{}", plain_pod(&format!("p{i}"), "app: many", "")));
    }
    create(&s, &yaml);
    let mut out = String::new();
    assert!(eventually(Duration::from_secs(60), || {
        out = s.ok(&["get", "pods", "-l", "app=many", "-o", "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}"]);
        out.lines().filter(|l| !l.is_empty()).count() == 50
    }), "{out}");
    for i in 0..5 {
        assert_eq!(out.lines().filter(|l| *l == format!("sim-{i}")).count(), 10, "{out}");
    }
    create(&s, &plain_pod("one-too-many", "", ""));
    assert!(eventually(Duration::from_secs(30), || s.ok(&["describe", "pod", "one-too-many"]).contains("0/5 nodes are available: 5 Too many pods.")));
}


#[test]
fn strata_scheduler_runs_against_a_server_from_a_kubeconfig() {
    let _shared = machine::shared();
    // The harness's server runs without its own scheduler (--no-scheduler).
    let s = ApiServer::start(Backend::Embedded);
    sim_node(&s, "sim-remote", "4", "8Gi", "110", &[], &[]);
    create(&s, &plain_pod("waits", "", ""));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(node_of(&s, "waits"), "", "--no-scheduler: nobody binds");
    let _child = start_scheduler(&s, "remote", &[]);
    assert_eq!(bound(&s, "waits"), "sim-remote");
    // Pods for another scheduler are left alone.
    create(&s, &plain_pod("not-ours", "", "  schedulerName: other-scheduler\n"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(node_of(&s, "not-ours"), "");
}

#[test]
fn the_schedulers_events_are_paced_and_none_is_lost() {
    let _shared = machine::shared();
    // The harness's server runs without its own scheduler; this one may write 2 Events at
    // once and then 1 a second (kube-scheduler's event client is paced the same way, by its
    // clientConnection qps and burst: 50 and 100 by default).
    let s = ApiServer::start(Backend::Embedded);
    sim_node(&s, "sim-paced", "64", "256Gi", "110", &[], &[]);
    let mut yaml = String::new();
    for i in 0..20 {
        yaml.push_str(&format!("---\n{}", plain_pod(&format!("paced-{i}"), "app: paced", "")));
    }
    create(&s, &yaml);
    let started = std::time::Instant::now();
    let _child = start_scheduler(&s, "paced", &["--event-qps", "1", "--event-burst", "2"]);
    let mut out = String::new();
    assert!(eventually(Duration::from_secs(60), || {
        out = s.ok(&["get", "pods", "-l", "app=paced", "-o", "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}"]);
        out.lines().filter(|l| *l == "sim-paced").count() == 20
    }), "{out}");
    let scheduled = || -> Vec<String> {
        let names = s.ok(&["get", "events", "-o", "jsonpath={range .items[?(@.reason==\"Scheduled\")]}{.involvedObject.name}{\"\\n\"}{end}"]);
        let mut names: Vec<String> = names.lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
        names.sort();
        names
    };
    // The bindings did not wait for the Events: when the last pod is bound, at most the burst
    // and one a second since the scheduler started have been written (all 20 without pacing).
    let written = scheduled().len();
    let allowed = 2 + started.elapsed().as_secs() as usize + 1;
    assert!(written <= allowed && written < 20, "{written} Scheduled events when every pod was bound, {:?} after the scheduler started (at most {allowed})", started.elapsed());
    // And none is lost: every pod gets its one Scheduled event, at that pace.
    let mut want: Vec<String> = (0..20).map(|i| format!("paced-{i}")).collect();
    want.sort();
    let mut got = Vec::new();
    assert!(eventually(Duration::from_secs(60), || {
        got = scheduled();
        got == want
    }), "{got:?}");
}

#[test]
fn priority_classes_set_pod_priority_and_preemption_makes_room() {
    let _shared = machine::shared();
    let s = server();
    // The built-in classes exist from the start.
    let classes = s.ok(&["get", "priorityclasses"]);
    assert!(classes.contains("system-cluster-critical") && classes.contains("2000000000"), "{classes}");
    assert!(classes.contains("system-node-critical") && classes.contains("2000001000"), "{classes}");
    s.ok(&["create", "priorityclass", "high", "--value=1000", "--description=important"]);
    s.ok(&["create", "priorityclass", "low", "--value=10", "--global-default=true"]);
    let err = s.fails(&["create", "priorityclass", "low2", "--value=5", "--global-default=true"], None);
    assert!(err.contains("PriorityClass low is already marked as default. Only one default can exist"), "{err}");
    let err = s.fails(&["create", "priorityclass", "huge", "--value=2000000000"], None);
    assert!(err.contains("maximum allowed value of a user defined priority is 1000000000"), "{err}");
    let err = s.fails(&["create", "priorityclass", "system-mine", "--value=1"], None);
    assert!(err.contains("priority class names with 'system-' prefix are reserved for system use only"), "{err}");
    let err = s.fails(&["patch", "priorityclass", "high", "-p", r#"{"value": 5}"#], None);
    assert!(err.contains("may not be changed in an update"), "{err}");
    assert_eq!(s.ok(&["get", "priorityclass", "high", "-o", "jsonpath={.value} {.preemptionPolicy}"]), "1000 PreemptLowerPriority");
    // Priority admission.
    let err = s.fails(&["create", "-f", "-"], Some(&plain_pod("nope", "", "  priorityClassName: nope\n")));
    assert!(err.contains("pods \"nope\" is forbidden: no PriorityClass with name nope was found"), "{err}");
    let err = s.fails(&["create", "-f", "-"], Some(&plain_pod("liar", "", "  priorityClassName: high\n  priority: 5\n")));
    assert!(err.contains("the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name"), "{err}");
    // One node of 2 CPUs, filled by a pod of the default (low) class.
    sim_node(&s, "sim-1", "2", "4Gi", "110", &[], &[]);
    create(&s, "apiVersion: v1\nkind: Pod\nmetadata: {name: victim}\nspec:\n  containers: [{name: c, image: registry.k8s.io/pause:3.9, resources: {requests: {cpu: '2'}}}]\n");
    assert_eq!(bound(&s, "victim"), "sim-1");
    assert_eq!(s.ok(&["get", "pod", "victim", "-o", "jsonpath={.spec.priorityClassName} {.spec.priority} {.spec.preemptionPolicy}"]), "low 10 PreemptLowerPriority");
    // An equal-priority pod waits; a higher-priority one evicts the victim and takes its place.
    create(&s, "apiVersion: v1\nkind: Pod\nmetadata: {name: peer}\nspec:\n  containers: [{name: c, image: registry.k8s.io/pause:3.9, resources: {requests: {cpu: '1'}}}]\n");
    let cond = |pod: &str| s.ok(&["get", "pod", pod, "-o", r#"jsonpath={.status.conditions[?(@.type=="PodScheduled")].message}"#]);
    assert!(eventually(Duration::from_secs(30), || cond("peer") == "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.."), "{}", cond("peer"));
    s.ok(&["delete", "pod", "peer"]);
    create(&s, "apiVersion: v1\nkind: Pod\nmetadata: {name: vip}\nspec:\n  priorityClassName: high\n  containers: [{name: c, image: registry.k8s.io/pause:3.9, resources: {requests: {cpu: '1'}}}]\n");
    // The victim is deleted gracefully; sim-1, a simulated node, confirms its end as its agent
    // would, and only then does the preemptor fit.
    let terminating = || s.ok(&["get", "pod", "victim", "-o", "jsonpath={.metadata.deletionTimestamp}"]);
    assert!(eventually(Duration::from_secs(30), || !terminating().is_empty()), "the victim was not deleted");
    // Marked before its deletion, as upstream's preemption marks it (a Job's pod failure policy
    // reads it).
    let target = s.ok(&["get", "pod", "victim", "-o", r#"jsonpath={.status.conditions[?(@.type=="DisruptionTarget")]}"#]);
    let target: serde_json::Value = serde_json::from_str(&target).unwrap_or_default();
    assert_eq!((target["status"].as_str(), target["reason"].as_str()), (Some("True"), Some("PreemptionByScheduler")), "{target}");
    assert_eq!(target["message"], "default-scheduler: preempting to accommodate a higher priority pod");
    let nominated = || s.ok(&["get", "pod", "vip", "-o", "jsonpath={.status.nominatedNodeName}"]);
    assert!(eventually(Duration::from_secs(30), || nominated() == "sim-1"), "nominated: {}", nominated());
    s.ok(&["delete", "pod", "victim", "--grace-period=0", "--force"]);
    assert_eq!(bound(&s, "vip"), "sim-1");
    assert!(eventually(Duration::from_secs(30), || s.kubectl(&["get", "pod", "victim"]).status.code() == Some(1)), "the victim was not deleted");
    let uid = s.ok(&["get", "pod", "vip", "-o", "jsonpath={.metadata.uid}"]);
    let mut events = String::new();
    assert!(eventually(Duration::from_secs(30), || {
        events = s.ok(&["get", "events", "--field-selector", "reason=Preempted", "-o", "jsonpath={.items[*].message}"]);
        events.contains(&format!("Preempted by pod {uid} on node sim-1"))
    }), "{events}");
}

/// `strata scheduler --identity IDENTITY EXTRA... --kubeconfig` against `s`, logging at info to
/// `scheduler-IDENTITY.log` in the server's directory: the process and the log's path.
fn start_scheduler(s: &ApiServer, identity: &str, extra: &[&str]) -> (Killed, std::path::PathBuf) {
    let log_path = s.dir.path().join(format!("scheduler-{identity}.log"));
    let log = std::fs::File::create(&log_path).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["scheduler", "--identity", identity])
        .args(extra)
        .arg("--kubeconfig")
        .arg(s.kubeconfig())
        .env("STRATA_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("strata scheduler");
    (Killed(child), log_path)
}

#[test]
fn two_schedulers_elect_one_leader_and_the_other_takes_over() {
    let _shared = machine::shared();
    let s = ApiServer::start(Backend::Embedded);
    sim_node(&s, "sim-le", "4", "8Gi", "110", &[], &[]);
    let holder = || s.kubectl(&["get", "lease", "-n", "kube-system", "kube-scheduler", "-o", "jsonpath={.spec.holderIdentity}"]).stdout.iter().map(|b| *b as char).collect::<String>();
    let (mut a, _) = start_scheduler(&s, "sched-a", &[]);
    assert!(eventually(Duration::from_secs(30), || holder() == "sched-a"), "holder: {}", holder());
    let _b = start_scheduler(&s, "sched-b", &[]);
    create(&s, &plain_pod("first", "", ""));
    assert_eq!(bound(&s, "first"), "sim-le");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(holder(), "sched-a", "the leader keeps its lease while it renews");
    // The leader dies without releasing its lease: the other takes over once it expires (15 s).
    let _ = a.0.kill();
    let _ = a.0.wait();
    create(&s, &plain_pod("second", "", ""));
    assert!(eventually(Duration::from_secs(60), || holder() == "sched-b"), "holder: {}", holder());
    assert_eq!(bound(&s, "second"), "sim-le");
}

/// A leader told to stop (SIGTERM, as `kill`, systemd and Kubernetes stop a process) releases
/// its Lease on the way out (client-go's `ReleaseOnCancel`): the other candidate takes over at
/// its next try (every 2-4.4 s), not once the 15 s lease duration has passed.
#[test]
fn a_stopped_scheduler_releases_its_lease_and_the_other_takes_over_at_once() {
    let _shared = machine::shared();
    let s = ApiServer::start(Backend::Embedded);
    sim_node(&s, "sim-rel", "4", "8Gi", "110", &[], &[]);
    let lease = |path: &str| s.ok(&["get", "lease", "-n", "kube-system", "kube-scheduler", "-o", &format!("jsonpath={path}")]);
    let (mut a, a_log) = start_scheduler(&s, "sched-a", &[]);
    assert!(eventually(Duration::from_secs(30), || lease("{.spec.holderIdentity}") == "sched-a"), "holder: {}", lease("{.spec.holderIdentity}"));
    let transitions = lease("{.spec.leaseTransitions}");
    let _b = start_scheduler(&s, "sched-b", &[]);
    // b has read the Lease (and seen it renewed) before a stops.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lease("{.spec.holderIdentity}"), "sched-a");
    let term = Command::new("kill").arg("-TERM").arg(a.0.id().to_string()).status().expect("kill");
    assert!(term.success());
    let status = a.0.wait().expect("wait");
    let stopped = std::time::Instant::now();
    let a_text = std::fs::read_to_string(&a_log).unwrap_or_default();
    assert!(status.success(), "the scheduler did not exit cleanly ({status}):\n{a_text}");
    assert!(a_text.contains("released the lease"), "{a_text}");
    assert!(eventually(Duration::from_secs(10), || lease("{.spec.holderIdentity}") == "sched-b"), "holder: {}", lease("{.spec.holderIdentity}"));
    assert!(stopped.elapsed() < Duration::from_secs(12), "sched-b took over only after {:?}", stopped.elapsed());
    let n: i64 = transitions.parse().unwrap_or(0);
    assert_eq!(lease("{.spec.leaseTransitions}"), (n + 1).to_string(), "one change of holder; the release kept the count");
    assert_eq!(lease("{.spec.leaseDurationSeconds}"), "15", "the new holder's duration");
    create(&s, &plain_pod("after-release", "", ""));
    assert_eq!(bound(&s, "after-release"), "sim-rel");
}

/// `strata server` stopped with SIGTERM and started again schedules and reconciles at once: its
/// scheduler and controllers released their Leases on the way out, so the new process (a new
/// candidate identity) need not wait 15 s for them to expire.
#[test]
fn a_server_stopped_and_started_again_leads_at_once() {
    let _shared = machine::shared();
    let mut s = ApiServer::start_opts(Backend::Embedded, Options { scheduler: true, controllers: true, ..Options::default() });
    sim_node(&s, "sim-again", "4", "8Gi", "110", &[], &[]);
    let holder = |s: &ApiServer, name: &str| s.ok(&["get", "lease", "-n", "kube-system", name, "-o", "jsonpath={.spec.holderIdentity}"]);
    create(&s, &plain_pod("before", "", ""));
    assert_eq!(bound(&s, "before"), "sim-again");
    assert!(eventually(Duration::from_secs(30), || !holder(&s, "kube-controller-manager").is_empty()), "the controllers never led");
    let before = (holder(&s, "kube-scheduler"), holder(&s, "kube-controller-manager"));
    s.restart(false);
    let started = std::time::Instant::now();
    // The new process's candidates hold both Leases at their first try.
    assert!(
        eventually(Duration::from_secs(10), || {
            let now = (holder(&s, "kube-scheduler"), holder(&s, "kube-controller-manager"));
            !now.0.is_empty() && !now.1.is_empty() && now.0 != before.0 && now.1 != before.1
        }),
        "holders {before:?} were not replaced at once: {}",
        s.ok(&["get", "lease", "-n", "kube-system", "-o", "yaml"])
    );
    create(&s, &plain_pod("after", "", ""));
    assert_eq!(bound(&s, "after"), "sim-again");
    s.ok(&["create", "deployment", "again", "--image=registry.k8s.io/pause:3.9"]);
    let pods = || s.ok(&["get", "pods", "-l", "app=again", "-o", "jsonpath={.items[*].spec.nodeName}"]);
    assert!(eventually(Duration::from_secs(10), || pods() == "sim-again"), "pods: {:?}", pods());
    assert!(started.elapsed() < Duration::from_secs(14), "leading again took {:?}", started.elapsed());
    assert!(!s.log().contains("did not stop in time"), "{}", s.log());
}

/// Preemption spares a pod whose eviction would violate a PodDisruptionBudget (upstream's
/// DefaultPreemption): without the budget the cheaper victim (priority 100 on sim-pa) would go;
/// with it the other node's pod (priority 200) does.
#[test]
fn preemption_prefers_victims_no_disruption_budget_protects() {
    let _shared = machine::shared();
    let s = ApiServer::start_opts(Backend::Embedded, Options { scheduler: true, controllers: true, ..Options::default() });
    s.ok(&["create", "priorityclass", "cheap", "--value=100"]);
    s.ok(&["create", "priorityclass", "dear", "--value=200"]);
    s.ok(&["create", "priorityclass", "urgent", "--value=1000"]);
    sim_node(&s, "sim-pa", "2", "4Gi", "110", &[("pool", "a")], &[]);
    sim_node(&s, "sim-pb", "2", "4Gi", "110", &[("pool", "b")], &[]);
    let filler = |name: &str, class: &str, pool: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {name}}}}}\nspec:\n  priorityClassName: {class}\n  nodeSelector: {{pool: {pool}}}\n  containers: [{{name: c, image: registry.k8s.io/pause:3.9, resources: {{requests: {{cpu: '2'}}}}}}]\n")
    };
    create(&s, &filler("guarded", "cheap", "a"));
    create(&s, &filler("spare", "dear", "b"));
    assert_eq!(bound(&s, "guarded"), "sim-pa");
    assert_eq!(bound(&s, "spare"), "sim-pb");
    s.ok(&["create", "poddisruptionbudget", "guard", "--selector=app=guarded", "--min-available=1"]);
    // The disruption controller has looked at it: no disruption allowed.
    let allowed = || s.ok(&["get", "pdb", "guard", "-o", "jsonpath={.status.observedGeneration}/{.status.disruptionsAllowed}"]);
    assert!(eventually(Duration::from_secs(30), || allowed() == "1/0"), "{}", allowed());
    create(&s, "apiVersion: v1\nkind: Pod\nmetadata: {name: vip}\nspec:\n  priorityClassName: urgent\n  containers: [{name: c, image: registry.k8s.io/pause:3.9, resources: {requests: {cpu: '2'}}}]\n");
    let nominated = || s.ok(&["get", "pod", "vip", "-o", "jsonpath={.status.nominatedNodeName}"]);
    assert!(eventually(Duration::from_secs(30), || !nominated().is_empty()), "vip was not nominated: {}", s.ok(&["describe", "pod", "vip"]));
    assert_eq!(nominated(), "sim-pb");
    let terminating = |p: &str| s.ok(&["get", "pod", p, "-o", "jsonpath={.metadata.deletionTimestamp}"]);
    assert!(eventually(Duration::from_secs(30), || !terminating("spare").is_empty()), "spare was not preempted");
    assert!(terminating("guarded").is_empty(), "the guarded pod was preempted");
}

/// Among nodes whose victims tie on budgets and priorities, preemption takes the node whose
/// highest-priority victims started last (upstream's DefaultPreemption: the earliest start time
/// of those victims, latest wins), so long-running pods are spared. The tie-break before it
/// (fewest victims etc.) is equal here: one pod of the same class on each node.
#[test]
fn preemption_spares_the_longest_running_victims_on_a_tie() {
    let _shared = machine::shared();
    let s = ApiServer::start_opts(Backend::Embedded, Options { scheduler: true, controllers: true, ..Options::default() });
    s.ok(&["create", "priorityclass", "cheap", "--value=100"]);
    s.ok(&["create", "priorityclass", "urgent", "--value=1000"]);
    // sim-ta sorts first: without the start-time tie-break its pod would be the victim.
    sim_node(&s, "sim-ta", "2", "4Gi", "110", &[("pool", "a")], &[]);
    sim_node(&s, "sim-tb", "2", "4Gi", "110", &[("pool", "b")], &[]);
    let filler = |name: &str, pool: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  priorityClassName: cheap\n  nodeSelector: {{pool: {pool}}}\n  containers: [{{name: c, image: registry.k8s.io/pause:3.9, resources: {{requests: {{cpu: '2'}}}}}}]\n")
    };
    create(&s, &filler("veteran", "a"));
    create(&s, &filler("rookie", "b"));
    assert_eq!(bound(&s, "veteran"), "sim-ta");
    assert_eq!(bound(&s, "rookie"), "sim-tb");
    for (pod, started) in [("veteran", "2026-01-01T00:00:00Z"), ("rookie", "2026-06-01T00:00:00Z")] {
        s.ok(&["patch", "pod", pod, "--subresource=status", "--type=merge", "-p", &format!(r#"{{"status":{{"startTime":"{started}"}}}}"#)]);
    }
    // Give the scheduler's cache time to see both start times.
    std::thread::sleep(Duration::from_secs(2));
    create(&s, "apiVersion: v1\nkind: Pod\nmetadata: {name: vip}\nspec:\n  priorityClassName: urgent\n  containers: [{name: c, image: registry.k8s.io/pause:3.9, resources: {requests: {cpu: '2'}}}]\n");
    let nominated = || s.ok(&["get", "pod", "vip", "-o", "jsonpath={.status.nominatedNodeName}"]);
    assert!(eventually(Duration::from_secs(30), || !nominated().is_empty()), "vip was not nominated: {}", s.ok(&["describe", "pod", "vip"]));
    assert_eq!(nominated(), "sim-tb", "the newer pod's node should be chosen");
    let terminating = |p: &str| s.ok(&["get", "pod", p, "-o", "jsonpath={.metadata.deletionTimestamp}"]);
    assert!(eventually(Duration::from_secs(30), || !terminating("rookie").is_empty()), "rookie was not preempted");
    assert!(terminating("veteran").is_empty(), "the long-running pod was preempted");
}

/// A scheduler busy with a backlog keeps its Lease: scheduling (CPU work over the whole cache)
/// never starves the renewals, so leadership is not lost and the cache is not rebuilt while the
/// API server answers promptly. (Before, the scheduling loop held the runtime's workers — one
/// running it, the other blocked on its lock — and the renewal waited seconds: in the
/// 2,000-node spread bench it lost the Lease every ~20 s and re-listed everything.) The
/// deadlines are short here (renew 2 s) so that a starved renewal shows at test scale.
#[test]
fn a_busy_scheduler_keeps_its_lease() {
    let _alone = machine::alone();
    use futures_util::StreamExt;
    use strata_client::k8s_openapi::api::core::v1::{Node, Pod};
    use strata_client::kube::api::{Api, PostParams};
    const NODES: usize = 300;
    const PODS: usize = 900;
    let s = ApiServer::start(Backend::Embedded);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    // Nodes and pending pods first (16 clients at a time), so the scheduler meets a backlog.
    rt.block_on(async {
        let client = strata_client::from_kubeconfig(&s.kubeconfig(), "busy-test").await.expect("client");
        let nodes: Api<Node> = Api::all(client.clone());
        futures_util::stream::iter(0..NODES)
            .for_each_concurrent(16, |i| {
                let nodes = nodes.clone();
                async move {
                    let n: Node = serde_json::from_value(serde_json::json!({
                        "metadata": {"name": format!("sim-busy-{i}"), "labels": {"kubernetes.io/hostname": format!("sim-busy-{i}"), "topology.kubernetes.io/zone": format!("zone-{}", i % 10)}},
                        "status": {"capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"}, "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"}, "conditions": [{"type": "Ready", "status": "True"}]}
                    }))
                    .expect("node");
                    nodes.create(&PostParams::default(), &n).await.expect("create node");
                }
            })
            .await;
        let pods: Api<Pod> = Api::namespaced(client, "default");
        futures_util::stream::iter(0..PODS)
            .for_each_concurrent(16, |i| {
                let pods = pods.clone();
                async move {
                    let group = format!("g{}", i / 100);
                    let sel = serde_json::json!({"matchLabels": {"group": group}});
                    let p: Pod = serde_json::from_value(serde_json::json!({
                        "metadata": {"name": format!("busy-{i}"), "labels": {"group": group}},
                        "spec": {
                            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9", "resources": {"requests": {"cpu": "100m"}}}],
                            "topologySpreadConstraints": [
                                {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": sel},
                                {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": sel}
                            ]
                        }
                    }))
                    .expect("pod");
                    pods.create(&PostParams::default(), &p).await.expect("create pod");
                }
            })
            .await;
    });
    let (_child, log_path) = start_scheduler(&s, "busy", &["--leader-elect-lease-duration=3s", "--leader-elect-renew-deadline=2s", "--leader-elect-retry-period=250ms"]);
    let bound_count = || s.ok(&["get", "pods", "-o", "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}"]).lines().filter(|l| !l.is_empty()).count();
    let bound_all = eventually(Duration::from_secs(240), || bound_count() == PODS);
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(bound_all, "{} of {PODS} pods bound; the scheduler's log:\n{text}", bound_count());
    assert!(!text.contains("leadership lost"), "the scheduler lost its lease while busy:\n{text}");
    assert_eq!(text.matches("became leader").count(), 1, "{text}");
}

/// Lease traffic has its own lane in the API server (as kube-apiserver's API Priority and
/// Fairness gives leader election and node heartbeats their own priority levels): 200 clients
/// creating pods as fast as they can do not delay a Lease GET + PUT round trip past anything
/// near a renew deadline, and no create is lost — each one is acknowledged (a 429 from a full
/// queue is retried by the client) and the pod is there afterwards. Before the lanes every
/// request waited in the runtime's one queue, and a renewal waited behind the whole flood.
#[test]
fn lease_renewals_stay_prompt_under_a_flood_of_creates() {
    let _alone = machine::alone();
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Instant;
    use strata_client::k8s_openapi::api::coordination::v1::Lease;
    use strata_client::k8s_openapi::api::core::v1::Pod;
    use strata_client::kube::api::{Api, ListParams, PostParams};
    const CLIENTS: usize = 200;
    const FLOOD: Duration = Duration::from_secs(20);
    const WATCHERS: usize = 30;
    let s = ApiServer::start(Backend::Embedded);
    let kubeconfig = s.kubeconfig();
    // Watchers of every pod (the scheduler, the controllers, node agents and kubectl watch pods
    // in a cluster): each create is sent to each of them.
    let pki = s.data_dir().join("pki");
    let watchers: Vec<Killed> = (0..WATCHERS)
        .map(|_| {
            let child = Command::new("curl")
                .args(["-sS", "-N", "-o", "/dev/null", "--cacert"])
                .arg(pki.join("ca.crt"))
                .arg("--cert")
                .arg(pki.join("admin.crt"))
                .arg("--key")
                .arg(pki.join("admin.key"))
                .arg(format!("{}/api/v1/pods?watch=1", s.url()))
                .stdin(Stdio::null())
                .spawn()
                .expect("curl");
            Killed(child)
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    // The flood, on its own runtime: CLIENTS tasks creating pods back to back.
    let flood = {
        let (kubeconfig, stop, created, failures) = (kubeconfig.clone(), stop.clone(), created.clone(), failures.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(async {
                let client = strata_client::from_kubeconfig(&kubeconfig, "flood-test").await.expect("client");
                let pods: Api<Pod> = Api::namespaced(client, "default");
                let tasks = (0..CLIENTS).map(|c| {
                    let (pods, stop, created, failures) = (pods.clone(), stop.clone(), created.clone(), failures.clone());
                    tokio::spawn(async move {
                        let mut i = 0;
                        while !stop.load(Ordering::Relaxed) {
                            let p: Pod = serde_json::from_value(serde_json::json!({
                                "metadata": {"name": format!("flood-{c}-{i}"), "labels": {"app": "flood"}},
                                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9", "resources": {"requests": {"cpu": "10m"}}}]}
                            }))
                            .expect("pod");
                            match pods.create(&PostParams::default(), &p).await {
                                Ok(_) => {
                                    created.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => failures.lock().expect("lock").push(format!("flood-{c}-{i}: {e}")),
                            }
                            // A page of pods, as an informer's (re-)list reads them.
                            if let Err(e) = pods.list(&ListParams::default().limit(500)).await {
                                failures.lock().expect("lock").push(format!("list by {c}: {e}"));
                            }
                            i += 1;
                        }
                    })
                });
                futures_util::future::join_all(tasks.collect::<Vec<_>>()).await;
            });
        })
    };
    // The renewals, on a runtime of their own (so the test's own flood cannot delay them): a
    // leader's Lease in kube-system and a node's heartbeat Lease in kube-node-lease, GET + PUT
    // every 250 ms, as client-go's leader election and the kubelet do.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (rounds, slowest) = rt.block_on(async {
        let client = strata_client::from_kubeconfig(&kubeconfig, "renew-test").await.expect("client");
        let mut leases = Vec::new();
        for (ns, name) in [("kube-system", "flood-leader"), ("kube-node-lease", "sim-flood-node")] {
            let api: Api<Lease> = Api::namespaced(client.clone(), ns);
            let l: Lease = serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": {"holderIdentity": "test", "leaseDurationSeconds": 15}})).expect("lease");
            api.create(&PostParams::default(), &l).await.expect("create lease");
            leases.push((api, name));
        }
        // Let the flood start.
        while created.load(Ordering::Relaxed) < CLIENTS {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let start = Instant::now();
        let mut rounds = Vec::new();
        while start.elapsed() < FLOOD {
            for (api, name) in &leases {
                let t = Instant::now();
                let mut l = api.get(name).await.expect("get lease");
                if let Some(spec) = l.spec.as_mut() {
                    spec.renew_time = Some(strata_client::k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(strata_client::k8s_openapi::chrono::Utc::now()));
                }
                api.replace(name, &PostParams::default(), &l).await.expect("renew lease");
                rounds.push((name.to_string(), t.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let slowest = rounds.iter().map(|r| r.1).max().unwrap_or_default();
        (rounds, slowest)
    });
    stop.store(true, Ordering::Relaxed);
    flood.join().expect("flood thread");
    drop(watchers);
    let failures = failures.lock().expect("lock").clone();
    let created = created.load(Ordering::Relaxed);
    let mut sorted: Vec<Duration> = rounds.iter().map(|r| r.1).collect();
    sorted.sort();
    let p50 = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    eprintln!("{created} pods created by {CLIENTS} clients; {} lease round trips, p50 {p50:?}, slowest {slowest:?}", rounds.len());
    assert!(failures.is_empty(), "{} creates failed, e.g. {:?}", failures.len(), &failures[..failures.len().min(5)]);
    // Every acknowledged create is there.
    let listed = s.ok(&["get", "pods", "-l", "app=flood", "-o", "name"]).lines().filter(|l| !l.is_empty()).count();
    assert_eq!(listed, created, "acknowledged creates and pods differ");
    assert!(created > CLIENTS, "the flood created only {created} pods");
    // client-go's renew deadline is 10 s: no round trip may take half of it, and the typical
    // one takes a fraction (before the lanes: p50 17-28 s, here with a debug server).
    let late: Vec<_> = rounds.iter().filter(|r| r.1 > Duration::from_secs(5)).collect();
    assert!(late.is_empty() && p50 < Duration::from_secs(2), "lease round trips: p50 {p50:?}, slowest {slowest:?}; {} of {} over 5 s: {late:?}", late.len(), rounds.len());
}

/// Beyond a lane's seats and queue the server answers 429 with Retry-After, and strata's
/// client (every component's) sends the request again: with one mutating seat and a queue of
/// two, both held by requests whose bodies are still on their way, 8 clients creating at once
/// are all refused, and all get their objects once the seat frees; the server counts the
/// refusals in `apiserver_flowcontrol_rejected_requests_total`.
#[test]
fn a_full_queue_is_429_and_strata_clients_retry_it() {
    let _shared = machine::shared();
    use strata_client::k8s_openapi::api::core::v1::ConfigMap;
    use strata_client::kube::api::{Api, PostParams};
    const CLIENTS: usize = 8;
    const EACH: usize = 2;
    let s = ApiServer::start_with(Backend::Embedded, &["--max-mutating-requests-inflight=1", "--max-queued-requests=2"]);
    let metrics = |s: &ApiServer| {
        let (code, metrics) = s.curl("GET", "/metrics", common::server::Auth::Admin, None, None);
        assert_eq!(code, 200, "{metrics}");
        metrics
    };
    let gauge = |metrics: &str, name: &str| -> u64 { metrics.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(0) };
    const EXECUTING: &str = "apiserver_flowcontrol_current_executing_requests{priority_level=\"workload-mutating\"}";
    const INQUEUE: &str = "apiserver_flowcontrol_current_inqueue_requests{priority_level=\"workload-mutating\"}";
    const REJECTED: &str = "apiserver_flowcontrol_rejected_requests_total{priority_level=\"workload-mutating\",reason=\"queue-full\"}";
    // The seat and both queue places, taken by creates whose last bytes are held back.
    let held: Vec<_> = (0..3u64)
        .map(|i| {
            let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("held-{i}"), "labels": {"app": "queued"}}}).to_string();
            let h = s.post_held("/api/v1/namespaces/default/configmaps", common::server::Auth::Admin, body.as_bytes(), 2);
            let mut taken = 0;
            let reached = eventually(Duration::from_secs(30), || {
                let m = metrics(&s);
                taken = gauge(&m, EXECUTING) + gauge(&m, INQUEUE);
                taken == i + 1
            });
            assert!(reached, "{taken} of the lane's places taken, {} expected", i + 1);
            h
        })
        .collect();
    let kubeconfig = s.kubeconfig();
    let clients = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async {
            let client = strata_client::from_kubeconfig(&kubeconfig, "queue-test").await.expect("client");
            let cms: Api<ConfigMap> = Api::namespaced(client, "default");
            let tasks = (0..CLIENTS).map(|c| {
                let cms = cms.clone();
                async move {
                    let mut out = Vec::new();
                    for i in 0..EACH {
                        let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": format!("queued-{c}-{i}"), "labels": {"app": "queued"}}, "data": {"k": "v"}})).expect("cm");
                        out.push(cms.create(&PostParams::default(), &cm).await.map(|_| ()).map_err(|e| e.to_string()));
                    }
                    out
                }
            });
            futures_util::future::join_all(tasks).await.into_iter().flatten().collect::<Vec<_>>()
        })
    });
    // Every client's first create is refused while the lane is full.
    let mut refused = 0;
    let all_refused = eventually(Duration::from_secs(30), || {
        refused = gauge(&metrics(&s), REJECTED);
        refused >= CLIENTS as u64
    });
    // Then the held requests end, and the seat frees.
    let held: Vec<_> = held.into_iter().map(|h| h.finish()).collect();
    let results = clients.join().expect("clients");
    assert!(all_refused, "{refused} requests refused while the lane was full, {CLIENTS} expected");
    for (code, body) in &held {
        assert_eq!(*code, 201, "a held create: {body}");
    }
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(s.ok(&["get", "configmaps", "-l", "app=queued", "-o", "name"]).lines().filter(|l| !l.is_empty()).count(), CLIENTS * EACH + 3);
    let m = metrics(&s);
    assert!(gauge(&m, REJECTED) >= CLIENTS as u64, "{}", m.lines().filter(|l| l.contains("flowcontrol")).collect::<Vec<_>>().join("\n"));
    assert!(m.contains("apiserver_flowcontrol_nominal_limit_seats{priority_level=\"workload-mutating\"} 1"), "{m}");
}

/// A stock kube-scheduler with its default configuration (every default plugin, leader election
/// through a Lease) on strata's API server: it syncs every informer it starts (PersistentVolumes,
/// StorageClasses, CSI kinds, CSIStorageCapacity, PodDisruptionBudgets, ...), binds a pod through
/// `pods/binding`, and reports a pod no node can hold as `kubectl describe` shows it.
#[test]
fn a_stock_kube_scheduler_schedules_pods_through_strata() {
    let _shared = machine::shared();
    let Some(bin) = common::stock_component("kube-scheduler", "KUBE_SCHEDULER") else { return };
    let s = ApiServer::start(Backend::Embedded);
    sim_node(&s, "sim-stock", "2", "4Gi", "110", &[], &[]);
    let config = s.data_dir().join("kube-scheduler.yaml");
    std::fs::write(&config, format!("apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nclientConnection: {{kubeconfig: {}}}\n", s.kubeconfig().display())).expect("config");
    let log_path = s.data_dir().join("kube-scheduler.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let child = Command::new(&bin)
        .args(["--config"])
        .arg(&config)
        .args(["--secure-port", "0", "--v", "2"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("kube-scheduler");
    let _child = Killed(child);
    let scheduler_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let sized = |name: &str, cpu: &str| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: registry.k8s.io/pause:3.9, resources: {{requests: {{cpu: \"{cpu}\"}}}}}}]\n");
    create(&s, &sized("fits", "500m"));
    let mut node = String::new();
    assert!(
        eventually(Duration::from_secs(60), || {
            node = node_of(&s, "fits");
            !node.is_empty()
        }),
        "not bound by kube-scheduler: {}\n{}",
        s.ok(&["describe", "pod", "fits"]),
        scheduler_log().lines().filter(|l| l.starts_with('E') || l.starts_with('W')).take(20).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(node, "sim-stock");
    let lease = s.ok(&["get", "lease", "-n", "kube-system", "kube-scheduler", "-o", "jsonpath={.spec.holderIdentity}"]);
    assert!(!lease.is_empty(), "kube-scheduler holds its Lease");
    create(&s, &sized("too-big", "64"));
    assert!(
        eventually(Duration::from_secs(60), || s.ok(&["describe", "pod", "too-big"]).contains("0/1 nodes are available: 1 Insufficient cpu.")),
        "{}",
        s.ok(&["describe", "pod", "too-big"])
    );
    assert_eq!(node_of(&s, "too-big"), "");
    let fits = s.ok(&["describe", "pod", "fits"]);
    assert!(fits.contains("Successfully assigned default/fits to sim-stock"), "{fits}");
}

/// A pod whose PersistentVolumeClaim does not exist or is not bound yet (and not of a
/// WaitForFirstConsumer class) is not placed — upstream's VolumeBinding PreFilter: Pending with
/// FailedScheduling saying why — and is placed once the claim is bound; one of a
/// WaitForFirstConsumer class gets its node chosen and is bound once its claim is.
#[test]
fn a_pod_waits_for_its_claims_to_exist_and_be_bound() {
    let _shared = machine::shared();
    let s = server();
    sim_node(&s, "sim-vol", "4", "8Gi", "110", &[], &[]);
    create(&s, "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec: {accessModes: [ReadWriteOnce], storageClassName: manual, resources: {requests: {storage: 1Gi}}}\n");
    let with_claim = |name: &str, claim: &str| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: registry.k8s.io/pause:3.9}}]\n  volumes: [{{name: v, persistentVolumeClaim: {{claimName: {claim}}}}}]\n");
    create(&s, &with_claim("unbound", "data"));
    create(&s, &with_claim("ghost", "nothing"));
    let said = |pod: &str, want: &str| eventually(Duration::from_secs(30), || s.ok(&["describe", "pod", pod]).contains(want));
    let unbound = "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";
    assert!(said("unbound", unbound), "{}", s.ok(&["describe", "pod", "unbound"]));
    let missing = "0/1 nodes are available: persistentvolumeclaim \"nothing\" not found. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";
    assert!(said("ghost", missing), "{}", s.ok(&["describe", "pod", "ghost"]));
    assert_eq!((node_of(&s, "unbound"), node_of(&s, "ghost")), (String::new(), String::new()));
    // Bound as the binder binds it: the waiting pod is placed (the claim's change requeues it).
    create(&s, "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: pv-data}\nspec: {capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce], storageClassName: manual, hostPath: {path: /tmp/pv-data}, claimRef: {namespace: default, name: data}}\n");
    s.ok(&["patch", "pvc", "data", "--type=merge", "-p", r#"{"spec":{"volumeName":"pv-data"}}"#]);
    assert_eq!(bound(&s, "unbound"), "sim-vol");
    // A claim of a WaitForFirstConsumer class does not hold the pod in the PreFilter: the node is
    // chosen, the claim marked for provisioning there (volume.kubernetes.io/selected-node), and
    // the pod bound once the claim is (as an external provisioner and the binder would do).
    create(&s, "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: late}\nprovisioner: example.com/late\nvolumeBindingMode: WaitForFirstConsumer\n");
    create(&s, "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: later}\nspec: {accessModes: [ReadWriteOnce], storageClassName: late, resources: {requests: {storage: 1Gi}}}\n");
    create(&s, &with_claim("first-consumer", "later"));
    let selected = || s.kubectl(&["get", "pvc", "later", "-o", "jsonpath={.metadata.annotations.volume\\.kubernetes\\.io/selected-node}"]).stdout.iter().map(|b| *b as char).collect::<String>();
    assert!(eventually(Duration::from_secs(30), || selected() == "sim-vol"), "{}", s.ok(&["get", "pvc", "later", "-o", "yaml"]));
    assert_eq!(node_of(&s, "first-consumer"), "", "bound before its claim");
    create(&s, "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: pv-later}\nspec: {capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce], storageClassName: late, hostPath: {path: /tmp/pv-later}, claimRef: {namespace: default, name: later}}\n");
    s.ok(&["patch", "pvc", "later", "--type=merge", "-p", r#"{"spec":{"volumeName":"pv-later"}}"#]);
    s.ok(&["patch", "pvc", "later", "--subresource=status", "--type=merge", "-p", r#"{"status":{"phase":"Bound"}}"#]);
    assert_eq!(bound(&s, "first-consumer"), "sim-vol");
    assert_eq!(node_of(&s, "ghost"), "");
}
