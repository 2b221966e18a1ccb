//! The plugins on small clusters, most of them examples from Kubernetes' documentation
//! ("Assigning Pods to Nodes", "Taints and Tolerations", "Pod Topology Spread Constraints",
//! "Resource Management for Pods and Containers"): the same feasible nodes, sensible scores.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Pod, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::*;
use crate::cache::Cache;
use crate::info::PodInfo;

fn node(name: &str, cpu: &str, mem: &str, labels: &[(&str, &str)], taints: &[(&str, &str, &str)]) -> Node {
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    n.metadata.uid = Some(format!("uid-{name}"));
    let mut l: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    l.insert("kubernetes.io/hostname".into(), name.into());
    n.metadata.labels = Some(l);
    let alloc: BTreeMap<String, Quantity> = [("cpu", cpu), ("memory", mem), ("pods", "110")].iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect();
    n.status = Some(NodeStatus { allocatable: Some(alloc.clone()), capacity: Some(alloc), ..Default::default() });
    n.spec = Some(NodeSpec {
        taints: Some(taints.iter().map(|(k, v, e)| Taint { key: k.to_string(), value: Some(v.to_string()), effect: e.to_string(), ..Default::default() }).collect()),
        ..Default::default()
    });
    n
}

/// A pod from YAML (the documentation's manifests, trimmed).
fn pod(yaml: &str) -> Arc<PodInfo> {
    let mut p: Pod = serde_yaml_ng::from_str(yaml).expect("pod yaml");
    if p.metadata.namespace.is_none() {
        p.metadata.namespace = Some("default".into());
    }
    let name = p.metadata.name.clone().unwrap_or_default();
    p.metadata.uid = Some(format!("uid-{name}"));
    Arc::new(PodInfo::new(Arc::new(p)))
}

fn cluster(nodes: Vec<Node>) -> Cache {
    let mut c = Cache::default();
    for n in nodes {
        c.set_node(n);
    }
    c
}

fn place(c: &mut Cache, p: Arc<PodInfo>, node: &str) {
    c.add_pod(Arc::new(p.on_node(node)));
}

fn feasible(c: &Cache, p: &PodInfo) -> Vec<String> {
    let cycle = Cycle::new(c, p);
    let mut out: Vec<String> = c.nodes.iter().filter(|n| n.node.is_some() && cycle.filter(n).is_ok()).map(|n| n.name.clone()).collect();
    out.sort();
    out
}

fn chosen(c: &Cache, p: &PodInfo) -> String {
    schedule(c, p, &mut Search::default()).expect("fits").node
}

#[test]
fn node_affinity_required_and_preferred() {
    // docs: pods/pod-with-node-affinity.yaml
    let c = cluster(vec![
        node("east", "4", "8Gi", &[("topology.kubernetes.io/zone", "antarctica-east1")], &[]),
        node("west", "4", "8Gi", &[("topology.kubernetes.io/zone", "antarctica-west1"), ("another-node-label-key", "another-node-label-value")], &[]),
        node("north", "4", "8Gi", &[("topology.kubernetes.io/zone", "arctic-1"), ("another-node-label-key", "another-node-label-value")], &[]),
    ]);
    let p = pod(r#"
metadata: {name: with-node-affinity}
spec:
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions:
          - {key: topology.kubernetes.io/zone, operator: In, values: [antarctica-east1, antarctica-west1]}
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 1
        preference:
          matchExpressions:
          - {key: another-node-label-key, operator: In, values: [another-node-label-value]}
  containers: [{name: c, image: registry.k8s.io/pause:2.0}]
"#);
    assert_eq!(feasible(&c, &p), ["east", "west"]);
    for _ in 0..10 {
        assert_eq!(chosen(&c, &p), "west", "the preferred term decides between equal nodes");
    }
    // nodeSelector (docs: disktype=ssd).
    let c = cluster(vec![node("a", "1", "1Gi", &[("disktype", "ssd")], &[]), node("b", "1", "1Gi", &[], &[])]);
    let p = pod("metadata: {name: nginx}\nspec: {nodeSelector: {disktype: ssd}, containers: [{name: nginx, image: nginx}]}");
    assert_eq!(feasible(&c, &p), ["a"]);
    let err = schedule(&c, &pod("metadata: {name: x}\nspec: {nodeSelector: {disktype: hdd}, containers: [{name: c, image: i}]}"), &mut Search::default()).expect_err("no node");
    assert_eq!(err.message(), "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.");
}

#[test]
fn taints_and_tolerations() {
    // docs: kubectl taint nodes node1 key1=value1:NoSchedule
    let c = cluster(vec![
        node("node1", "1", "1Gi", &[], &[("key1", "value1", "NoSchedule")]),
        node("node2", "1", "1Gi", &[], &[("key1", "value1", "NoExecute")]),
        node("node3", "1", "1Gi", &[], &[("key2", "value2", "PreferNoSchedule")]),
    ]);
    let plain = pod("metadata: {name: p}\nspec: {containers: [{name: c, image: i}]}");
    assert_eq!(feasible(&c, &plain), ["node3"], "PreferNoSchedule only scores");
    let equal = pod("metadata: {name: p}\nspec:\n  containers: [{name: c, image: i}]\n  tolerations: [{key: key1, operator: Equal, value: value1, effect: NoSchedule}]");
    assert_eq!(feasible(&c, &equal), ["node1", "node3"]);
    let exists = pod("metadata: {name: p}\nspec:\n  containers: [{name: c, image: i}]\n  tolerations: [{key: key1, operator: Exists}]");
    assert_eq!(feasible(&c, &exists), ["node1", "node2", "node3"]);
    for _ in 0..10 {
        assert_ne!(chosen(&c, &exists), "node3", "an untolerated PreferNoSchedule taint scores lowest");
    }
    let all = pod("metadata: {name: p}\nspec:\n  containers: [{name: c, image: i}]\n  tolerations: [{operator: Exists}]");
    assert_eq!(feasible(&c, &all), ["node1", "node2", "node3"]);
    // Unschedulable (cordoned) nodes.
    let mut cordoned = node("node4", "1", "1Gi", &[], &[]);
    cordoned.spec.as_mut().expect("spec").unschedulable = Some(true);
    let c = cluster(vec![cordoned]);
    let err = schedule(&c, &plain, &mut Search::default()).expect_err("cordoned");
    assert_eq!(err.message(), "0/1 nodes are available: 1 node(s) were unschedulable.");
}

#[test]
fn resources_fit_and_the_failure_message() {
    let mut c = cluster(vec![node("small", "1", "2Gi", &[], &[]), node("t1", "8", "16Gi", &[], &[("k", "v", "NoSchedule")]), node("t2", "8", "16Gi", &[], &[("k", "v", "NoSchedule")])]);
    let big = pod("metadata: {name: big}\nspec: {containers: [{name: c, image: i, resources: {requests: {cpu: '2', memory: 1Gi}}}]}");
    let err = schedule(&c, &big, &mut Search::default()).expect_err("no fit");
    let mut err2 = err.clone();
    err2.post_filter = crate::preemption::preempt(&c, &big, &err, &[]).err();
    assert_eq!(
        err2.message(),
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {k: v}. preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.."
    );
    // Requests add up on a node; a limit without a request counts as the request.
    let half = pod("metadata: {name: half}\nspec: {containers: [{name: c, image: i, resources: {limits: {cpu: 600m}}}]}");
    assert_eq!(feasible(&c, &half), ["small"]);
    place(&mut c, half.clone(), "small");
    assert!(feasible(&c, &half).is_empty());
    // Pod count.
    let mut full = node("full", "8", "8Gi", &[], &[]);
    full.status.as_mut().and_then(|s| s.allocatable.as_mut()).expect("alloc").insert("pods".into(), Quantity("1".into()));
    let mut c = cluster(vec![full]);
    place(&mut c, pod("metadata: {name: a}\nspec: {containers: [{name: c, image: i}]}"), "full");
    let err = schedule(&c, &pod("metadata: {name: b}\nspec: {containers: [{name: c, image: i}]}"), &mut Search::default()).expect_err("full");
    assert_eq!(err.message(), "0/1 nodes are available: 1 Too many pods.");
}

#[test]
fn least_allocated_and_balanced_scores() {
    let mut c = cluster(vec![node("busy", "4", "8Gi", &[], &[]), node("idle", "4", "8Gi", &[], &[])]);
    place(&mut c, pod("metadata: {name: a}\nspec: {containers: [{name: c, image: i, resources: {requests: {cpu: '3', memory: 6Gi}}}]}"), "busy");
    let p = pod("metadata: {name: b}\nspec: {containers: [{name: c, image: i, resources: {requests: {cpu: 500m, memory: 1Gi}}}]}");
    for _ in 0..10 {
        assert_eq!(chosen(&c, &p), "idle");
    }
    let n = c.node("idle").expect("idle");
    // (4000-500)/4000 and (8-1)/8 → 87 and 87.
    assert_eq!(fit::least_allocated(&p, n), 87);
    // cpu fraction 0.125, memory 0.125: perfectly balanced.
    assert_eq!(fit::balanced(&p, n), Some(100));
}

#[test]
fn inter_pod_anti_affinity_and_affinity() {
    // docs: the redis-cache / web-store example on three nodes.
    let mut c = cluster(vec![node("n1", "4", "8Gi", &[], &[]), node("n2", "4", "8Gi", &[], &[]), node("n3", "4", "8Gi", &[], &[])]);
    let cache_pod = |i: usize| {
        pod(&format!(
            r#"
metadata: {{name: redis-cache-{i}, labels: {{app: store}}}}
spec:
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - labelSelector:
          matchExpressions: [{{key: app, operator: In, values: [store]}}]
        topologyKey: kubernetes.io/hostname
  containers: [{{name: redis-server, image: redis:3.2-alpine}}]
"#
        ))
    };
    let mut used = Vec::new();
    for i in 0..3 {
        let p = cache_pod(i);
        let n = chosen(&c, &p);
        assert!(!used.contains(&n), "one cache pod per node");
        used.push(n.clone());
        place(&mut c, p, &n);
    }
    let err = schedule(&c, &cache_pod(3), &mut Search::default()).expect_err("a fourth cache pod has nowhere to go");
    // Upstream reports the incoming pod's anti-affinity first (both hold here).
    assert_eq!(err.message(), "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules.");
    let web = |i: usize| {
        pod(&format!(
            r#"
metadata: {{name: web-{i}, labels: {{app: web-store}}}}
spec:
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - labelSelector: {{matchExpressions: [{{key: app, operator: In, values: [web-store]}}]}}
        topologyKey: kubernetes.io/hostname
    podAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - labelSelector: {{matchExpressions: [{{key: app, operator: In, values: [store]}}]}}
        topologyKey: kubernetes.io/hostname
  containers: [{{name: web-app, image: nginx:1.16-alpine}}]
"#
        ))
    };
    for i in 0..3 {
        let p = web(i);
        let n = chosen(&c, &p);
        place(&mut c, p, &n);
    }
    for n in ["n1", "n2", "n3"] {
        let labels: Vec<String> = c.node(n).expect("node").pods.iter().map(|p| p.labels["app"].clone()).collect();
        assert_eq!(labels.len(), 2, "{n}: {labels:?}");
        assert!(labels.contains(&"store".to_string()) && labels.contains(&"web-store".to_string()), "{n}: {labels:?}");
    }
    // A pod with affinity to pods that exist nowhere but matching itself may start the group.
    let c2 = cluster(vec![node("n1", "4", "8Gi", &[], &[])]);
    let selfish = pod("metadata: {name: s, labels: {app: solo}}\nspec:\n  affinity: {podAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{labelSelector: {matchLabels: {app: solo}}, topologyKey: kubernetes.io/hostname}]}}\n  containers: [{name: c, image: i}]");
    assert_eq!(feasible(&c2, &selfish), ["n1"]);
    let other = pod("metadata: {name: s}\nspec:\n  affinity: {podAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{labelSelector: {matchLabels: {app: solo}}, topologyKey: kubernetes.io/hostname}]}}\n  containers: [{name: c, image: i}]");
    assert_eq!(schedule(&c2, &other, &mut Search::default()).expect_err("no").message(), "0/1 nodes are available: 1 node(s) didn't match pod affinity rules.");
}

#[test]
fn existing_pods_anti_affinity_is_honoured() {
    let mut c = cluster(vec![node("n1", "4", "8Gi", &[("zone", "a")], &[]), node("n2", "4", "8Gi", &[("zone", "a")], &[]), node("n3", "4", "8Gi", &[("zone", "b")], &[])]);
    let loner = pod("metadata: {name: loner}\nspec:\n  affinity: {podAntiAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{labelSelector: {matchLabels: {role: noisy}}, topologyKey: zone}]}}\n  containers: [{name: c, image: i}]");
    place(&mut c, loner, "n1");
    let noisy = pod("metadata: {name: noisy, labels: {role: noisy}}\nspec: {containers: [{name: c, image: i}]}");
    assert_eq!(feasible(&c, &noisy), ["n3"]);
}

fn spread_cluster() -> Cache {
    // docs: a 4-node cluster, zoneA = node1, node2; zoneB = node3, node4; pods foo=bar on
    // node1, node2 and node3.
    let mut c = cluster(vec![
        node("node1", "4", "8Gi", &[("zone", "zoneA"), ("node", "node1")], &[]),
        node("node2", "4", "8Gi", &[("zone", "zoneA"), ("node", "node2")], &[]),
        node("node3", "4", "8Gi", &[("zone", "zoneB"), ("node", "node3")], &[]),
        node("node4", "4", "8Gi", &[("zone", "zoneB"), ("node", "node4")], &[]),
    ]);
    for (i, n) in ["node1", "node2", "node3"].iter().enumerate() {
        place(&mut c, pod(&format!("metadata: {{name: p{i}, labels: {{foo: bar}}}}\nspec: {{containers: [{{name: c, image: i}}]}}")), n);
    }
    c
}

#[test]
fn topology_spread_one_constraint() {
    let c = spread_cluster();
    let p = pod(r#"
metadata: {name: mypod, labels: {foo: bar}}
spec:
  topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {foo: bar}}}
  containers: [{name: pause, image: registry.k8s.io/pause:3.1}]
"#);
    assert_eq!(feasible(&c, &p), ["node3", "node4"]);
    // maxSkew 2 lets zoneA take it too.
    let p2 = pod(r#"
metadata: {name: mypod, labels: {foo: bar}}
spec:
  topologySpreadConstraints:
  - {maxSkew: 2, topologyKey: zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {foo: bar}}}
  containers: [{name: pause, image: registry.k8s.io/pause:3.1}]
"#);
    assert_eq!(feasible(&c, &p2), ["node1", "node2", "node3", "node4"]);
}

#[test]
fn topology_spread_two_constraints() {
    let c = spread_cluster();
    let p = pod(r#"
metadata: {name: mypod, labels: {foo: bar}}
spec:
  topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {foo: bar}}}
  - {maxSkew: 1, topologyKey: node, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {foo: bar}}}
  containers: [{name: pause, image: registry.k8s.io/pause:3.1}]
"#);
    assert_eq!(feasible(&c, &p), ["node4"]);
    // A node without the topology label cannot take it (missing required label).
    let mut c2 = spread_cluster();
    c2.set_node(node("nolabel", "4", "8Gi", &[], &[]));
    let err = schedule(&c2, &pod("metadata: {name: x, labels: {foo: bar}}\nspec:\n  topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {foo: bar}}}]\n  nodeSelector: {node: none}\n  containers: [{name: c, image: i}]"), &mut Search::default()).expect_err("none");
    assert!(err.message().starts_with("0/5 nodes are available: 5 node(s) didn't match Pod's node affinity/selector"), "{}", err.message());
    assert_eq!(
        spread::filter(&spread::prefilter(&c2, &pod("metadata: {name: y, labels: {foo: bar}}\nspec:\n  topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {foo: bar}}}]\n  containers: [{name: c, image: i}]")), &pod("metadata: {name: y, labels: {foo: bar}}\nspec: {containers: [{name: c, image: i}]}"), c2.node("nolabel").expect("n")).expect_err("missing").reasons.iter().collect::<Vec<_>>(),
        ["node(s) didn't match pod topology spread constraints (missing required label)"]
    );
}

#[test]
fn soft_spread_and_default_spreading_prefer_empty_domains() {
    let c = spread_cluster();
    let soft = pod("metadata: {name: s, labels: {foo: bar}}\nspec:\n  topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {foo: bar}}}]\n  containers: [{name: c, image: i}]");
    assert_eq!(feasible(&c, &soft).len(), 4, "ScheduleAnyway never filters");
    for _ in 0..10 {
        assert!(["node3", "node4"].contains(&chosen(&c, &soft).as_str()));
    }
    // Default spreading: pods of a Service spread over hostnames.
    let mut c = spread_cluster();
    c.services.insert(("default".into(), "svc".into()), [("foo".to_string(), "bar".to_string())].into());
    let plain = pod("metadata: {name: d, labels: {foo: bar}}\nspec: {containers: [{name: c, image: i}]}");
    for _ in 0..10 {
        assert_eq!(chosen(&c, &plain), "node4");
    }
}

#[test]
fn node_ports() {
    let mut c = cluster(vec![node("a", "4", "8Gi", &[], &[]), node("b", "4", "8Gi", &[], &[])]);
    let web = |n: &str| pod(&format!("metadata: {{name: {n}}}\nspec: {{containers: [{{name: c, image: i, ports: [{{containerPort: 80, hostPort: 8080}}]}}]}}"));
    place(&mut c, web("w1"), "a");
    assert_eq!(feasible(&c, &web("w2")), ["b"]);
    let udp = pod("metadata: {name: u}\nspec: {containers: [{name: c, image: i, ports: [{containerPort: 80, hostPort: 8080, protocol: UDP}]}]}");
    assert_eq!(feasible(&c, &udp), ["a", "b"]);
}

#[test]
fn kvm_pods_only_on_kvm_nodes() {
    let c = cluster(vec![node("tcg", "4", "8Gi", &[], &[]), node("kvm", "4", "8Gi", &[("strata.dev/kvm", "true")], &[])]);
    let vm = pod("metadata: {name: vm}\nspec: {nodeSelector: {strata.dev/kvm: 'true'}, containers: [{name: c, image: i}]}");
    assert_eq!(feasible(&c, &vm), ["kvm"]);
}

#[test]
fn preemption_picks_the_cheapest_victims() {
    let mut c = cluster(vec![node("n1", "2", "4Gi", &[], &[]), node("n2", "2", "4Gi", &[], &[])]);
    place(&mut c, pod("metadata: {name: low}\nspec: {priority: 10, containers: [{name: c, image: i, resources: {requests: {cpu: '2'}}}]}"), "n1");
    place(&mut c, pod("metadata: {name: mid}\nspec: {priority: 100, containers: [{name: c, image: i, resources: {requests: {cpu: '2'}}}]}"), "n2");
    let high = pod("metadata: {name: high}\nspec: {priority: 1000, containers: [{name: c, image: i, resources: {requests: {cpu: '1'}}}]}");
    let err = schedule(&c, &high, &mut Search::default()).expect_err("full");
    let p = crate::preemption::preempt(&c, &high, &err, &[]).expect("preempts");
    assert_eq!(p.node, "n1");
    assert_eq!(p.victims.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["low"]);
    // Equal priority cannot preempt; preemptionPolicy Never does not.
    let peer = pod("metadata: {name: peer}\nspec: {priority: 10, containers: [{name: c, image: i, resources: {requests: {cpu: '1'}}}]}");
    let err = schedule(&c, &peer, &mut Search::default()).expect_err("full");
    assert_eq!(crate::preemption::preempt(&c, &peer, &err, &[]).expect_err("none"), "preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.");
    let never = pod("metadata: {name: never}\nspec: {priority: 1000, preemptionPolicy: Never, containers: [{name: c, image: i, resources: {requests: {cpu: '1'}}}]}");
    assert_eq!(crate::preemption::preempt(&c, &never, &err, &[]).expect_err("never"), "preemption: not eligible due to preemptionPolicy=Never.");
}

/// A PodDisruptionBudget in namespace `ns` over `app=<app>` with `allowed` disruptions left.
fn budget(app: &str, allowed: i32, disrupted: &[&str]) -> Arc<k8s_openapi::api::policy::v1::PodDisruptionBudget> {
    let d: serde_json::Map<String, serde_json::Value> = disrupted.iter().map(|n| (n.to_string(), serde_json::json!("2026-01-01T00:00:00Z"))).collect();
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{app}-pdb"), "namespace": "ns"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app}}},
            "status": {"disruptionsAllowed": allowed, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1, "disruptedPods": d},
        }))
        .expect("pdb"),
    )
}

#[test]
fn preemption_spares_pods_a_disruption_budget_protects() {
    let mut c = cluster(vec![node("n1", "2", "4Gi", &[], &[]), node("n2", "2", "4Gi", &[], &[])]);
    place(&mut c, pod("metadata: {name: low, namespace: ns, labels: {app: guarded}}\nspec: {priority: 10, containers: [{name: c, image: i, resources: {requests: {cpu: '2'}}}]}"), "n1");
    place(&mut c, pod("metadata: {name: mid, namespace: ns, labels: {app: other}}\nspec: {priority: 100, containers: [{name: c, image: i, resources: {requests: {cpu: '2'}}}]}"), "n2");
    let high = pod("metadata: {name: high, namespace: ns}\nspec: {priority: 1000, containers: [{name: c, image: i, resources: {requests: {cpu: '1'}}}]}");
    let err = schedule(&c, &high, &mut Search::default()).expect_err("full");
    // The cheaper victim is protected: the other node's goes instead.
    let p = crate::preemption::preempt(&c, &high, &err, &[budget("guarded", 0, &[])]).expect("preempts");
    assert_eq!(p.node, "n2");
    assert_eq!(p.victims.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["mid"]);
    // A budget that still allows a disruption, or one in another namespace, protects nothing.
    assert_eq!(crate::preemption::preempt(&c, &high, &err, &[budget("guarded", 1, &[])]).expect("preempts").node, "n1");
    let mut elsewhere = (*budget("guarded", 0, &[])).clone();
    elsewhere.metadata.namespace = Some("other".into());
    assert_eq!(crate::preemption::preempt(&c, &high, &err, &[Arc::new(elsewhere)]).expect("preempts").node, "n1");
    // When every node's victims violate a budget, the fewest violations win: still preempts.
    let both = [budget("guarded", 0, &[]), budget("other", 0, &[])];
    assert_eq!(crate::preemption::preempt(&c, &high, &err, &both).expect("preempts").node, "n1");

    // Each matching pod spends one allowed disruption; a pod already disrupted spends none.
    let pods: Vec<Arc<PodInfo>> =
        ["a", "b", "c"].iter().map(|n| pod(&format!("metadata: {{name: {n}, namespace: ns, labels: {{app: web}}}}\nspec: {{containers: [{{name: c, image: i}}]}}"))).collect();
    let names = |v: &[Arc<PodInfo>]| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    let (violating, fine) = crate::preemption::split_by_budgets(pods.clone(), &[budget("web", 1, &[])]);
    assert_eq!((names(&violating), names(&fine)), (vec!["b".to_string(), "c".to_string()], vec!["a".to_string()]));
    let (violating, fine) = crate::preemption::split_by_budgets(pods, &[budget("web", 1, &["a"])]);
    assert_eq!((names(&violating), names(&fine)), (vec!["c".to_string()], vec!["a".to_string(), "b".to_string()]));
}

#[test]
fn assumed_pods_count_and_the_search_covers_large_clusters() {
    let nodes: Vec<Node> = (0..500).map(|i| node(&format!("n{i}"), "1", "1Gi", &[], &[])).collect();
    let mut c = cluster(nodes);
    assert_eq!(nodes_to_find(500), 500 * 46 / 100);
    assert_eq!(nodes_to_find(5000), 500);
    assert_eq!(nodes_to_find(50), 50);
    let mut search = Search::default();
    // 500 one-cpu pods fill 500 one-cpu nodes exactly, through assumption alone.
    for i in 0..500 {
        let p = pod(&format!("metadata: {{name: p{i}}}\nspec: {{containers: [{{name: c, image: i, resources: {{requests: {{cpu: '1'}}}}}}]}}"));
        let d = schedule(&c, &p, &mut search).expect("fits");
        c.assume(&p, &d.node);
    }
    assert!(c.nodes.iter().all(|n| n.pods.len() == 1));
    let p = pod("metadata: {name: extra}\nspec: {containers: [{name: c, image: i, resources: {requests: {cpu: '1'}}}]}");
    assert_eq!(schedule(&c, &p, &mut search).expect_err("full").message(), "0/500 nodes are available: 500 Insufficient cpu.");
}

#[test]
fn claims_hold_a_pod_until_they_exist_and_are_bound_unless_their_class_waits() {
    let p = pod("metadata: {name: p, namespace: ns}\nspec:\n  containers: [{name: c}]\n  volumes:\n  - {name: a, persistentVolumeClaim: {claimName: data}}\n  - {name: scratch, ephemeral: {volumeClaimTemplate: {spec: {accessModes: [ReadWriteOnce]}}}}\n");
    assert_eq!(p.claims, ["data", "p-scratch"]);
    let claim = |volume: &str, class: &str| {
        let c: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({ "metadata": { "name": "x" }, "spec": { "volumeName": volume, "storageClassName": class } })).expect("claim");
        Some(Arc::new(c))
    };
    let none_wait = |_: &str| false;
    assert_eq!(claims_not_ready(&p, |_| None, none_wait).as_deref(), Some("persistentvolumeclaim \"data\" not found"));
    assert_eq!(claims_not_ready(&p, |_| claim("", "fast"), none_wait).as_deref(), Some("pod has unbound immediate PersistentVolumeClaims"));
    assert_eq!(claims_not_ready(&p, |_| claim("pv-1", "fast"), none_wait), None);
    assert_eq!(claims_not_ready(&p, |_| claim("", "late"), |c| c == "late"), None, "bound after placement");
    let plain = pod("metadata: {name: q, namespace: ns}\nspec:\n  containers: [{name: c}]\n");
    assert!(plain.claims.is_empty());
    assert_eq!(claims_not_ready(&plain, |_| None, none_wait), None);
}

#[test]
fn hostname_spread_scores_count_each_nodes_matching_pods_whichever_way_they_are_counted() {
    let p = pod("metadata: {name: in, labels: {foo: bar}}\nspec:\n  topologySpreadConstraints: [{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {foo: bar}}}]\n  containers: [{name: c, image: i}]");
    let raw = |c: &Cache| {
        let feasible: Vec<&NodeInfo> = ["n1", "n2", "n3"].iter().map(|n| c.node(n).expect("node")).collect();
        let s = spread::prescore(c, &p, &feasible).expect("constraints");
        feasible.iter().map(|n| spread::score(&s, n)).collect::<Vec<_>>()
    };
    let mut c = cluster(["n1", "n2", "n3"].iter().map(|n| node(n, "4", "8Gi", &[], &[])).collect());
    for (i, n) in ["n1", "n1", "n2"].iter().enumerate() {
        place(&mut c, pod(&format!("metadata: {{name: m{i}, labels: {{foo: bar}}}}\nspec: {{containers: [{{name: c, image: i}}]}}")), n);
    }
    // As many matching pods as pods on the nodes: counted per node when scoring. Three domains:
    // weight ln(3 + 2); 2 and 1 matching pods.
    let per_node = raw(&c);
    assert_eq!(per_node, [Some((2.0 * 5f64.ln()).round() as i64), Some(5f64.ln().round() as i64), Some(0)]);
    // Far more other pods than matching ones: counted once from the label index, same scores.
    for i in 0..12 {
        place(&mut c, pod(&format!("metadata: {{name: o{i}, labels: {{other: x}}}}\nspec: {{containers: [{{name: c, image: i}}]}}")), ["n1", "n2", "n3"][i % 3]);
    }
    assert_eq!(raw(&c), per_node);
}

/// Two nodes that share a `kubernetes.io/hostname` value are still scored by their own
/// matching pods (upstream counts a hostname domain per node), whichever way they are counted.
#[test]
fn a_shared_hostname_value_still_counts_each_nodes_own_pods() {
    let p = pod("metadata: {name: in, labels: {foo: bar}}\nspec:\n  topologySpreadConstraints: [{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {foo: bar}}}]\n  containers: [{name: c, image: i}]");
    let mut twin = node("n2", "4", "8Gi", &[], &[]);
    twin.metadata.labels.get_or_insert_with(Default::default).insert("kubernetes.io/hostname".into(), "n1".into());
    let mut c = cluster(vec![node("n1", "4", "8Gi", &[], &[]), twin, node("n3", "4", "8Gi", &[], &[])]);
    for (i, n) in ["n1", "n1", "n1", "n2"].iter().enumerate() {
        place(&mut c, pod(&format!("metadata: {{name: m{i}, labels: {{foo: bar}}}}\nspec: {{containers: [{{name: c, image: i}}]}}")), n);
    }
    let feasible: Vec<&NodeInfo> = ["n1", "n2", "n3"].iter().map(|n| c.node(n).expect("node")).collect();
    let s = spread::prescore(&c, &p, &feasible).expect("constraints");
    let raw: Vec<Option<i64>> = feasible.iter().map(|n| spread::score(&s, n)).collect();
    // A hostname domain per node (upstream's topoSize is the number of nodes scored): weight
    // ln(3 + 2) per matching pod on the node itself.
    let w = 5f64.ln();
    assert_eq!(raw, [Some((3.0 * w).round() as i64), Some(w.round() as i64), Some(0)]);
}
