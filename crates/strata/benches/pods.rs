//! Pods on one node (issue 9): start latency against `strata run -d` of the same image in the
//! same run, the node agent's CPU and memory with 0, 100 and N pods, density, and a create /
//! delete loop that must leave nothing behind.
//!
//! `cargo bench -p strata --bench pods` starts a local docker-registry holding busybox, an
//! optimized `strata server --no-agent` (API server, scheduler, controllers) and one node agent
//! as its own process, joined with a token (`strata agent --server --token`, its own strata
//! root), so the agent's CPU and memory are its own. Then:
//!
//! 1. idle: the agent with 0 pods, CPU (% of one core) and RSS/PSS over `BENCH_IDLE` s (10);
//! 2. start: `BENCH_START_PODS` (100) pods created one after another, each waited for until a
//!    watch sees it Running (image present: a first pod pulled it; the scheduler binds them, as
//!    for any `kubectl apply`); then the same number of `strata run -d IMAGE sleep` on the same
//!    root, each timed until the command returns (the container started); p50/p99 and ratios;
//! 3. the agent with those pods, idle again;
//! 4. density: more pods, one after another, up to `BENCH_MAX_PODS` (500) or until one does not
//!    reach Running within 60 s; start p50/p99 per block of 100 and the agent's cost at the end;
//! 5. loop: every pod deleted and waited for, then `BENCH_LOOPS` (1) rounds of `BENCH_MAX_PODS`
//!    pods created 16 at a time, all Running, all deleted; after each round every trace of every
//!    sandbox and container seen (records, netns, pinned namespaces, cgroups, mounts, processes)
//!    is checked gone.
//!
//! `STRATA_BIN=PATH` runs that strata binary instead of this build's (the harness only creates
//! objects and watches; an optimized strata with a dev-profile harness measures the same).
//!
//! Memory: RSS and PSS of the agent process (its pods' supervisors are separate processes and
//! are reported apart: count and total PSS of the strata processes that are not the server or
//! the agent).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use strata_client::k8s_openapi::api::core::v1::Pod;
use strata_client::kube::api::{Api, DeleteParams, ListParams, PostParams};
use strata_client::kube::runtime::watcher;
use strata_testkit::{busybox_image, join_agent, memory_mib, percentile_ms as pct, processes_of, start_server, Registry};

/// The strata binary under test: this build's, or `STRATA_BIN` (e.g. an optimized build when
/// the harness itself is built in the dev profile).
fn strata_bin() -> String {
    std::env::var("STRATA_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_strata").to_string())
}

fn env_num(k: &str, d: usize) -> usize {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) end with ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; `rest` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

struct Cost {
    cpu_pct: f64,
    rss: f64,
    pss: f64,
    sup_n: usize,
    sup_pss: f64,
}

/// The agent's CPU over `secs` seconds of doing nothing new, and its memory at the end.
async fn agent_cost(agent: u32, server: u32, secs: u64) -> Cost {
    let c0 = cpu_secs(agent);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let cpu = (cpu_secs(agent) - c0) / t0.elapsed().as_secs_f64() * 100.0;
    let (rss, pss) = memory_mib(agent);
    let (sup_n, sup_pss) = processes_of(&strata_bin(), &[agent, server]);
    Cost { cpu_pct: cpu, rss, pss, sup_n, sup_pss }
}

fn print_cost(label: &str, pods: usize, c: &Cost) {
    println!(
        "agent {label:<10} pods {pods:>4}: CPU {:>5.2}% of a core, RSS {:>6.1} MiB, PSS {:>6.1} MiB; pod supervisors {:>4} processes, PSS {:>7.1} MiB ({:.2} MiB/pod)",
        c.cpu_pct,
        c.rss,
        c.pss,
        c.sup_n,
        c.sup_pss,
        if pods > 0 { c.sup_pss / pods as f64 } else { 0.0 }
    );
}

fn pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"bench": "pods"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": image, "command": ["sleep", "36000"]}]
        }
    }))
    .expect("pod")
}

/// When a watch first saw each pod Running, and whether it saw it gone.
#[derive(Default)]
struct Seen {
    running: HashMap<String, Instant>,
    failed: HashMap<String, String>,
}

fn watch_pods(api: Api<Pod>, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut s = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
        while let Some(ev) = s.next().await {
            let p = match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                _ => continue,
            };
            let now = Instant::now();
            let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
            let name = p.metadata.name.clone().unwrap_or_default();
            let mut seen = seen.lock().expect("lock");
            if phase == "Running" {
                seen.running.entry(name).or_insert(now);
            } else if phase == "Failed" {
                seen.failed.insert(name, format!("{:?}", p.status.and_then(|s| s.reason)));
            }
        }
    })
}

/// Create `name` and wait until the watch sees it Running: the latency, or None after `limit`.
async fn start_one(api: &Api<Pod>, seen: &Arc<Mutex<Seen>>, name: &str, image: &str, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    api.create(&PostParams::default(), &pod(name, image)).await.expect("create pod");
    loop {
        if let Some(t) = seen.lock().expect("lock").running.get(name) {
            return Some(t.saturating_duration_since(t0));
        }
        if t0.elapsed() > limit || seen.lock().expect("lock").failed.contains_key(name) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn strata(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(strata_bin()).arg("--root").arg(root).args(args).stdin(Stdio::null()).output().expect("strata")
}

/// The ids under `<root>/<dir>`.
fn ids(root: &Path, dir: &str) -> BTreeSet<String> {
    std::fs::read_dir(root.join(dir)).into_iter().flatten().flatten().filter_map(|e| e.file_name().to_str().map(str::to_string)).collect()
}

/// What is left on the host of these sandboxes and containers.
fn traces(root: &Path, sandboxes: &BTreeSet<String>, containers: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    for id in sandboxes {
        for p in [root.join("sandboxes").join(id), Path::new("/run/strata/netns").join(id), Path::new("/run/strata/ns").join(format!("{id}.ipc")), Path::new("/run/strata/ns").join(format!("{id}.uts"))] {
            if p.exists() {
                found.push(p.display().to_string());
            }
        }
        for qos in ["guaranteed", "burstable", "besteffort", "Guaranteed", "Burstable", "BestEffort"] {
            let p = Path::new("/sys/fs/cgroup/strata-pods").join(qos).join(format!("pod{id}"));
            if p.exists() {
                found.push(p.display().to_string());
            }
        }
    }
    for id in containers {
        if root.join("containers").join(id).exists() {
            found.push(format!("containers/{id}"));
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for l in mounts.lines() {
        if sandboxes.iter().chain(containers).any(|id| l.contains(id.as_str())) {
            found.push(format!("mount: {l}"));
        }
    }
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read_to_string(e.path().join("cmdline")) {
            if sandboxes.iter().chain(containers).any(|id| cmd.contains(id.as_str())) {
                found.push(format!("process {}: {}", e.file_name().to_string_lossy(), cmd.replace('\0', " ")));
            }
        }
    }
    found
}

/// Delete every bench pod and wait until none is left (the agent confirms each deletion).
async fn delete_all(api: &Api<Pod>) -> Duration {
    let t0 = Instant::now();
    let lp = ListParams::default().labels("bench=pods");
    api.delete_collection(&DeleteParams::default(), &lp).await.expect("delete pods");
    loop {
        let left = api.list(&lp).await.expect("list").items.len();
        if left == 0 {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < Duration::from_secs(900), "{left} pods not deleted after 15 min");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn summary(label: &str, lat: &mut [Duration]) -> (f64, f64) {
    lat.sort();
    let (p50, p99) = (pct(lat, 0.5), pct(lat, 0.99));
    println!("{label:<44} n {:>4}  p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms", lat.len(), p50, p99, pct(lat, 1.0));
    (p50, p99)
}

async fn run() {
    let idle = env_num("BENCH_IDLE", 10) as u64;
    let n_start = env_num("BENCH_START_PODS", 100);
    let n_max = env_num("BENCH_MAX_PODS", 500);
    let loops = env_num("BENCH_LOOPS", 1);

    let registry = Registry::start();
    registry.push(&busybox_image(), "busybox", "latest");
    let image = format!("{}/busybox:latest", registry.addr);
    let dir = tempfile::Builder::new().prefix("strata-podbench-").tempdir_in("/var/tmp").expect("tempdir");
    let (data, root, agent_data) = (dir.path().join("server"), dir.path().join("root"), dir.path().join("agent"));
    let (server, port) = start_server(&strata_bin(), &dir.path().join("server-root"), &["--no-agent"], &data, &dir.path().join("server.log"));
    let max_pods = (n_max + 10).to_string();
    let agent_env = [("STRATA_VM_ACCEL", "tcg".to_string())];
    let agent = join_agent(&strata_bin(), &root, &data, port, "bench-node", &agent_data, &["--max-pods", &max_pods], &agent_env, &dir.path().join("agent.log"));
    let (spid, apid) = (server.0.id(), agent.0.id());
    let client = strata_client::from_kubeconfig(&data.join("kubeconfig"), "pods-bench").await.expect("client");
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    println!("server pid {spid}, agent pid {apid} (joined with a token), image {image}");

    // 1. Idle with no pods (after the join settles).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c0 = agent_cost(apid, spid, idle).await;
    print_cost("idle", 0, &c0);

    let seen: Arc<Mutex<Seen>> = Arc::default();
    let watch = watch_pods(api.clone(), seen.clone());
    // The image is pulled once, by a first pod.
    start_one(&api, &seen, "warmup", &image, Duration::from_secs(120)).await.expect("the warm-up pod did not run");
    api.delete("warmup", &DeleteParams::default()).await.expect("delete warm-up");

    // 2. Start latency: pods, then `strata run -d` on the same root.
    let mut pods_lat = Vec::new();
    for i in 0..n_start {
        let d = start_one(&api, &seen, &format!("p{i}"), &image, Duration::from_secs(60)).await.unwrap_or_else(|| panic!("pod p{i} not Running in 60 s"));
        pods_lat.push(d);
    }
    let mut run_lat = Vec::new();
    let mut run_ids = Vec::new();
    for _ in 0..n_start {
        let t0 = Instant::now();
        let out = strata(&root, &["run", "-d", &image, "sleep", "36000"]);
        run_lat.push(t0.elapsed());
        assert!(out.status.success(), "strata run -d: {}", String::from_utf8_lossy(&out.stderr));
        run_ids.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let (pp50, pp99) = summary("pod create -> Running (watch)", &mut pods_lat);
    let (rp50, rp99) = summary("strata run -d (command returns)", &mut run_lat);
    println!("ratio pod/run: p50 {:.2}x  p99 {:.2}x", pp50 / rp50, pp99 / rp99);
    let mut rm = vec!["rm", "-f"];
    rm.extend(run_ids.iter().map(String::as_str));
    let out = strata(&root, &rm);
    assert!(out.status.success(), "strata rm: {}", String::from_utf8_lossy(&out.stderr));

    // 3. The agent with those pods.
    let c1 = agent_cost(apid, spid, idle).await;
    print_cost("steady", n_start, &c1);

    // 4. Density: one pod after another, per block of 100.
    let mut total = n_start;
    let mut block = Vec::new();
    let mut degraded = None;
    while total < n_max {
        let name = format!("p{total}");
        match start_one(&api, &seen, &name, &image, Duration::from_secs(60)).await {
            Some(d) => block.push(d),
            None => {
                degraded = Some(format!("pod {name} did not reach Running within 60 s ({:?})", seen.lock().expect("lock").failed.get(&name)));
                break;
            }
        }
        total += 1;
        if total % 100 == 0 {
            summary(&format!("pod start at {}-{} pods on the node", total - 99, total), &mut block);
            block.clear();
        }
    }
    if !block.is_empty() {
        summary(&format!("pod start up to {total} pods on the node"), &mut block);
    }
    match &degraded {
        Some(why) => println!("density: degraded at {total} pods: {why}"),
        None => println!("density: {total} pods Running on one node (BENCH_MAX_PODS), nothing degraded"),
    }
    let c2 = agent_cost(apid, spid, idle).await;
    print_cost("steady", total, &c2);
    println!(
        "agent memory growth: {:.3} MiB RSS per pod ({} -> {} pods); goal < 30 MiB + 0.5 MiB/pod",
        (c2.rss - c0.rss) / total as f64,
        0,
        total
    );
    let seen_sandboxes = ids(&root, "sandboxes");
    let seen_containers = ids(&root, "containers");
    let d = delete_all(&api).await;
    println!("deleted {total} pods in {:.1} s", d.as_secs_f64());

    // 5. Create / delete loops.
    let mut all_sandboxes = seen_sandboxes;
    let mut all_containers = seen_containers;
    for round in 0..loops {
        let t0 = Instant::now();
        let names: Vec<String> = (0..n_max).map(|i| format!("l{round}-{i}")).collect();
        let lat: Vec<Option<Duration>> =
            futures_util::stream::iter(names.iter()).map(|n| { let (api, seen, image) = (&api, &seen, &image); async move { start_one(api, seen, n, image, Duration::from_secs(300)).await } }).buffer_unordered(16).collect().await;
        let mut ok: Vec<Duration> = lat.iter().flatten().copied().collect();
        let up = t0.elapsed();
        all_sandboxes.extend(ids(&root, "sandboxes"));
        all_containers.extend(ids(&root, "containers"));
        summary(&format!("loop {round}: create 16 at a time"), &mut ok);
        let d = delete_all(&api).await;
        // The agent removes sandboxes after the API objects go: give it a moment.
        let t1 = Instant::now();
        let mut left = traces(&root, &all_sandboxes, &all_containers);
        while !left.is_empty() && t1.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            left = traces(&root, &all_sandboxes, &all_containers);
        }
        println!(
            "loop {round}: {} of {n_max} Running in {:.1} s, all deleted in {:.1} s; {} sandboxes and {} containers seen, traces left: {}",
            ok.len(),
            up.as_secs_f64(),
            d.as_secs_f64(),
            all_sandboxes.len(),
            all_containers.len(),
            left.len()
        );
        for l in left.iter().take(20) {
            println!("  left: {l}");
        }
        assert!(left.is_empty(), "the create/delete loop left traces");
    }
    let c3 = agent_cost(apid, spid, idle).await;
    print_cost("after", 0, &c3);
    watch.abort();
    drop(agent);
    drop(server);
    // Nothing of the agent's pods may outlive the bench's root.
    let out = strata(&root, &["ps", "-aq"]);
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty(), "containers left: {}", String::from_utf8_lossy(&out.stdout));
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(run());
}
