//! The scheduling decision alone, without an API server: scheduler CPU per pod for the
//! workloads of `crates/strata/benches/scheduler.rs` (plain, anti, spread) on the same simulated
//! cluster, in minutes instead of a release build of strata and a full harness run.
//!
//! `cargo bench -p strata-scheduler --bench schedule` fills a [`Cache`] with `BENCH_NODES`
//! (default 5000) nodes shaped as the harness registers them (32 CPU, 128 GiB, 110 pods; a
//! hostname label and a zone label over 10 zones), then, for each workload of
//! `BENCH_WORKLOADS` (default "plain,anti,spread,replicaset"), schedules `BENCH_PODS` (default 10000)
//! pods one after another on a fresh cache, as the scheduler's loop does: `schedule`, then
//! `assume` on the chosen node. The pods are the harness's (groups of 100; anti: required
//! anti-affinity to the group on the hostname; spread: maxSkew 1 over zones, DoNotSchedule,
//! and over hostnames, ScheduleAnyway; replicaset: every pod owned by one ReplicaSet, so the
//! system default spreading (hostname and zone, ScheduleAnyway) counts all its siblings, as
//! for the deploy row's replicas). Reported per workload: CPU ms per pod (the thread's run time over
//! the pods, from `/proc/thread-self/schedstat`) and wall ms per pod, the p50 / p99 of one decision, and the mean over the last tenth (the fullest cache). Every pod must be
//! placed, and anti / spread placements are checked against their constraints at the end, so a
//! faster wrong decision fails the run. Not included: decoding watched pods, bindings, events.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Node, Pod};
use strata_scheduler::cache::Cache;
use strata_scheduler::info::PodInfo;
use strata_scheduler::labels::Selector;
use strata_scheduler::plugins::{schedule, Search};

fn node(i: usize) -> Node {
    let name = format!("sim-{i}");
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": format!("zone-{}", i % 10), "strata.dev/simulated": "true"}},
        "status": {
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    }))
    .expect("node")
}

fn pod(i: usize, workload: &str) -> Pod {
    let group = format!("g{}", i / 100);
    let mut p = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p{i}"), "namespace": "default", "uid": format!("uid-p{i}"), "labels": {"group": group}},
        "spec": {"schedulerName": "default-scheduler", "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}
    });
    let sel = serde_json::json!({"matchLabels": {"group": group}});
    match workload {
        "anti" => {
            p["spec"]["affinity"] = serde_json::json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": sel, "topologyKey": "kubernetes.io/hostname"}]}});
        }
        "replicaset" => {
            p["metadata"]["labels"]["app"] = "rs".into();
            p["metadata"]["ownerReferences"] = serde_json::json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "uid-rs", "controller": true}]);
        }
        "spread" => {
            p["spec"]["topologySpreadConstraints"] = serde_json::json!([
                {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": sel},
                {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": sel}
            ]);
        }
        _ => {}
    }
    serde_json::from_value(p).expect("pod")
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CPU time this thread has run, in ms (`/proc/thread-self/schedstat`), so that the mean
/// does not count time the shared machine gave to others; `None` where it cannot be read.
fn cpu_ms() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(s.split_whitespace().next()?.parse::<f64>().ok()? / 1e6)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The placements obey the workload's hard rules: anti: no two pods of a group on one node;
/// spread: per group, the zones' counts differ by at most 1.
fn check(workload: &str, placed: &[(usize, String)], zone_of: &HashMap<String, String>) {
    let mut per: BTreeMap<(usize, &str), usize> = BTreeMap::new();
    for (i, n) in placed {
        let domain = if workload == "spread" { zone_of[n].as_str() } else { n.as_str() };
        *per.entry((i / 100, domain)).or_default() += 1;
    }
    match workload {
        "anti" => assert!(per.values().all(|c| *c == 1), "anti-affinity broken: two pods of a group on one node"),
        "spread" => {
            let mut by_group: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for ((g, _), c) in &per {
                by_group.entry(*g).or_default().push(*c);
            }
            for (g, counts) in by_group {
                let (min, max) = (if counts.len() < 10 { 0 } else { *counts.iter().min().expect("zones") }, *counts.iter().max().expect("zones"));
                assert!(max - min <= 1, "spread broken in group {g}: {counts:?}");
            }
        }
        _ => {}
    }
}

fn main() {
    let nodes = env_num("BENCH_NODES", 5000);
    let pods = env_num("BENCH_PODS", 10000);
    let workloads = std::env::var("BENCH_WORKLOADS").unwrap_or_else(|_| "plain,anti,spread,replicaset".into());
    let zone_of: HashMap<String, String> = (0..nodes).map(|i| (format!("sim-{i}"), format!("zone-{}", i % 10))).collect();
    println!("| nodes | pods | workload | CPU ms/pod | wall ms/pod | p50 ms | p99 ms | last 10% ms/pod |");
    println!("|---|---|---|---|---|---|---|---|");
    for workload in workloads.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let mut cache = Cache::default();
        for i in 0..nodes {
            cache.set_node(node(i));
        }
        // The replicaset workload's pods get the system default spreading over their
        // ReplicaSet's selector (as the deploy row's replicas).
        cache.workloads.insert(("ReplicaSet", "default".into(), "rs".into()), Selector::from_map(&[("app".to_string(), "rs".to_string())].into()));
        // Built before timing: decoding watched pods is not the decision.
        let infos: Vec<PodInfo> = (0..pods).map(|i| PodInfo::new(Arc::new(pod(i, workload)))).collect();
        let mut search = Search::default();
        let mut times = Vec::with_capacity(pods);
        let mut placed = Vec::with_capacity(pods);
        let start = Instant::now();
        let cpu_start = cpu_ms();
        for (i, info) in infos.iter().enumerate() {
            let t = Instant::now();
            let d = schedule(&cache, info, &mut search).unwrap_or_else(|e| panic!("pod {i} ({workload}) not placed: {}", e.message()));
            cache.assume(info, &d.node);
            times.push(t.elapsed().as_secs_f64() * 1e3);
            placed.push((i, d.node));
        }
        let total = start.elapsed().as_secs_f64() * 1e3;
        let cpu = cpu_start.zip(cpu_ms()).map_or("?".to_string(), |(a, b)| format!("{:.3}", (b - a) / pods as f64));
        check(workload, &placed, &zone_of);
        let tail = &times[pods - pods / 10..];
        let tail_mean = tail.iter().sum::<f64>() / tail.len() as f64;
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        println!("| {nodes} | {pods} | {workload} | {cpu} | {:.3} | {:.3} | {:.3} | {:.3} |", total / pods as f64, pct(&sorted, 0.5), pct(&sorted, 0.99), tail_mean);
    }
}
