//! Scheduler throughput and latency on simulated nodes, strata's scheduler against upstream
//! kube-scheduler on the same API server in the same run (issue 10).
//!
//! `cargo bench -p strata --bench scheduler` starts, for each cluster size and workload, a
//! fresh optimized `strata server --no-scheduler --no-agent`, registers `BENCH_NODES` (default
//! "1000,5000") simulated nodes — Node objects named `sim-N` with capacity (32 CPU, 128 GiB,
//! 110 pods), a hostname and a zone label (10 zones), running nothing — and keeps them
//! heartbeating as kubelets do: each node's Lease in `kube-node-lease` renewed every
//! `BENCH_HEARTBEAT` (default "10s", kubelet's renew interval; "0" turns heartbeats off, as
//! upstream's scheduler_perf runs), the renewals spread evenly over the interval (5,000 nodes:
//! 500 Lease writes per second through the whole row). The server's node lifecycle controller
//! is given a 24 h grace period, so a harness that falls behind on a loaded machine does not
//! taint nodes mid-row; the renewals done and failed are printed after each row. It starts one
//! scheduler as its own process (`strata scheduler --kubeconfig`, or kube-scheduler), then creates `BENCH_PODS` (default 10000) pods
//! from 64 concurrent clients while a watch records when each is bound. Workloads
//! (`BENCH_WORKLOADS`, default "plain,anti,spread,deploy"):
//!
//! - plain: 100m CPU / 128 MiB requests;
//! - anti: pods in groups of 100, required anti-affinity to their group on the hostname;
//! - spread: groups of 100, topology spread maxSkew 1 over zones (DoNotSchedule) and over
//!   hostnames (ScheduleAnyway).
//! - deploy: one Deployment of `BENCH_PODS` plain replicas, turned into pods by the server's
//!   controllers; timed from the Deployment's create to the last binding. A line on stderr
//!   tells when the watch saw 10/50/90/100 % of the pods created and bound.
//!
//! The bench's own watch of the pods decodes only their names and nodes (the rest of each event
//! is skipped by the JSON parser, not built), so that observing takes as little as it can of the
//! CPU the bench shares with the server.
//!
//! `BENCH_KEEP_LOGS=DIR` copies each row's server and scheduler logs there.
//! `BENCH_SCHEDULER_ARGS` (split at whitespace) are added to `strata scheduler`'s arguments.
//! `BENCH_STRATA_SCHEDULER` (default "process") is a list of ways to run strata's scheduler,
//! one row each: "process" (`strata scheduler`, as above) and "server" — the scheduler inside
//! `strata server` (started without `--no-scheduler`: strata as shipped, its requests served
//! without a socket; its CPU is in the server's column). In backlog mode the server's
//! scheduler is kept from scheduling as a standby is: the bench takes its Lease
//! (kube-system/kube-scheduler) at once, so the scheduler stops leading at its next renewal,
//! and waits 5 s before creating pods; once they all exist it releases the Lease (holder
//! emptied, as client-go's release does) and the row starts when the Lease has a holder again
//! (the scheduler polls for it every 2 s, jittered: that wait is not the scheduler's).
//! `STRATA_BIN=PATH` runs that strata (an optimized build) under this dev-profile harness.
//! Each row also reports the server's RSS per node and per pod and the CPU milliseconds per
//! pod of the server and the scheduler.
//!
//! Reported: pods/s (pods ÷ time from the first create to the last binding seen) and the p50 /
//! p99 of create-to-bound latency. The peer: `KUBE_SCHEDULER=/path/to/kube-scheduler`, or,
//! when `go` is installed, `scripts/kube-peer.sh kube-scheduler` builds k8s.io/kubernetes
//! v1.32.0's `cmd/kube-scheduler` from the Go module proxy (cached after the first build;
//! `BENCH_PEER=0` skips it). kube-scheduler runs with its default plugins (volume binding,
//! restrictions, zone and limits, DefaultPreemption included: strata serves the
//! PersistentVolumes, StorageClasses, CSI kinds, CSIStorageCapacities, VolumeAttachments and
//! PodDisruptionBudgets their informers list and watch), leader election off.
//! `BENCH_PEER_QPS` (default "5000") is a list of client rate limits to run the peer with, one
//! row each: a number N sets `clientConnection` qps and burst to N; `default` leaves them out,
//! so kube-scheduler runs with its own defaults (qps 50, burst 100: every binding and every
//! event is a request through that limiter). The ratio printed is strata's pods/s over each
//! peer row's.
//!
//! `BENCH_MODE` (default "e2e") is a list of modes; each row runs once per mode:
//!
//! - e2e: the above. The scheduler runs while 64 clients create the pods; pods/s is bound ÷
//!   (first create → last binding seen), so on a loaded server it measures how fast the server
//!   accepts creates as much as the scheduler.
//! - backlog: the scheduler's own rate, measured the way upstream's scheduler_perf reports
//!   SchedulingThroughput. The pods are created (and the bench's watch has seen every one)
//!   while no scheduler runs; then the scheduler process starts. Reported: pods/s = bound ÷
//!   (scheduler process started → last binding seen), its start-up included (the lists of the
//!   nodes and of the pending pods); the time to the first binding; the average, p50, p90 and
//!   p99 of per-second throughput samples (as upstream's throughputCollector: a 1 s ticker,
//!   each sample the pods bound since the previous tick ÷ that tick's real length, from the
//!   first tick that sees a binding — that first sample skipped, as upstream skips it — to the
//!   last pod; the last partial second is no sample; percentiles of the samples sorted
//!   ascending at index ceil(n·p) − 1, so p99 is the fastest second, not the slowest);
//!   scheduler start → bound and create → bound latency percentiles. CPU columns: the server
//!   from the scheduler's start, the scheduler's whole process.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use strata_client::k8s_openapi::api::apps::v1::Deployment;
use strata_client::k8s_openapi::api::coordination::v1::Lease;
use strata_client::k8s_openapi::api::core::v1::{Node, Pod};
use strata_client::kube::api::{Api, PostParams};
use strata_client::kube::runtime::watcher;
use strata_testkit::free_port;

/// A pod as the bench's watch reads it: its name (and the rest of its metadata but
/// managedFields, which kube's watcher needs) and its node.
#[derive(Clone, Debug, serde::Deserialize)]
struct Seen {
    #[serde(default, deserialize_with = "strata_client::lean::meta")]
    metadata: strata_client::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    #[serde(default)]
    spec: Option<SeenSpec>,
}

#[derive(Clone, Debug, serde::Deserialize)]
struct SeenSpec {
    #[serde(default, rename = "nodeName")]
    node_name: Option<String>,
}

impl strata_client::kube::Resource for Seen {
    type DynamicType = ();
    type Scope = strata_client::k8s_openapi::NamespaceResourceScope;
    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &strata_client::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut strata_client::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &mut self.metadata
    }
}

/// The strata binary under test: this build's, or `STRATA_BIN` (an optimized build while the
/// harness itself is built in the dev profile: the harness only creates objects and watches).
fn strata_bin() -> String {
    std::env::var("STRATA_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_strata").to_string())
}

fn env_list(k: &str, d: &str) -> Vec<String> {
    std::env::var(k).unwrap_or_else(|_| d.to_string()).split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap_or(0))))
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    f.iter().sum::<u64>() as f64 / hz
}

/// A task aborted when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Server {
    proc: Proc,
    dir: tempfile::TempDir,
}

impl Server {
    /// `scheduler`: run the server's own scheduler (`strata server` as shipped).
    fn start(scheduler: bool) -> Server {
        // `BENCH_DIR`: where the server's data directory goes (e.g. a tmpfs, to take the
        // disk's latency out of an A/B comparison of CPU work; /var/tmp when unset).
        let parent = std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
        let dir = tempfile::Builder::new().prefix("strata-schedbench-").tempdir_in(parent).expect("tempdir");
        let port = free_port();
        let child = Command::new(strata_bin())
            .args(["server", "--no-agent", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir.path())
            .args((!scheduler).then_some("--no-scheduler"))
            // The simulated nodes do not heartbeat: keep the node lifecycle controller from
            // marking them Unknown (and tainting them) during a long run.
            .args(["--node-monitor-grace-period", "24h", "--node-startup-grace-period", "24h"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("server.log")).map(Stdio::from).unwrap_or(Stdio::null()))
            .spawn()
            .expect("strata server");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(dir.path().join("kubeconfig").exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { proc: Proc(child), dir }
    }
    fn kubeconfig(&self) -> std::path::PathBuf {
        self.dir.path().join("kubeconfig")
    }
}

fn node(i: usize) -> Node {
    let name = format!("sim-{i}");
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": format!("zone-{}", i % 10), "strata.dev/simulated": "true"}},
        "status": {
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    }))
    .expect("node")
}

/// `BENCH_HEARTBEAT`: how often each simulated node renews its Lease (`None`: never).
fn heartbeat_interval() -> Option<Duration> {
    let v = std::env::var("BENCH_HEARTBEAT").unwrap_or_else(|_| "10s".into());
    let secs: f64 = v.trim_end_matches('s').parse().unwrap_or_else(|_| panic!("BENCH_HEARTBEAT: {v:?} is not a number of seconds"));
    (secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

/// Renewals of the simulated nodes' Leases: done, failed.
#[derive(Default)]
struct Beats {
    renewed: std::sync::atomic::AtomicUsize,
    failed: std::sync::atomic::AtomicUsize,
}

/// Give every simulated node a Lease, as a kubelet does when it registers its node. Part of
/// the nodes' registration, before a row's measured span: 5,000 Lease creates running into it
/// took up to 2 s of the server's CPU from the pods (the Deployment row's first 10 % of pods
/// came 0.6-2.9 s after its start, depending on how many Leases were still being made).
async fn create_leases(client: strata_client::kube::Client, nodes: usize) -> Vec<Lease> {
    let api: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let lease = |i: usize| -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("sim-{i}"), "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": format!("sim-{i}"), "leaseDurationSeconds": 40, "renewTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)}
        }))
        .expect("lease")
    };
    futures_util::stream::iter(0..nodes)
        .map(|i| {
            let api = api.clone();
            async move {
                match api.create(&PostParams::default(), &lease(i)).await {
                    Ok(l) => l,
                    Err(e) => panic!("creating sim-{i}'s Lease: {e}"),
                }
            }
        })
        .buffered(64)
        .collect()
        .await
}

/// Renew each node's Lease every `every` for as long as the task runs, as kubelet's node lease
/// controller does (an update of the Lease it last wrote; after a conflict, a fresh read).
/// Renewals are spread evenly: every 100 ms the next nodes' share of the interval, up to 128 at
/// a time; a round that falls behind is not made up for (counted in neither column).
async fn heartbeat(client: strata_client::kube::Client, mut leases: Vec<Lease>, every: Duration, beats: Arc<Beats>) {
    use std::sync::atomic::Ordering::Relaxed;
    let nodes = leases.len();
    let api: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let step = Duration::from_millis(100);
    let per_step = ((nodes as f64) * step.as_secs_f64() / every.as_secs_f64()).ceil().max(1.0) as usize;
    let mut tick = tokio::time::interval(step);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = 0;
    loop {
        tick.tick().await;
        let chunk: Vec<usize> = (0..per_step.min(nodes)).map(|k| (next + k) % nodes).collect();
        next = (next + chunk.len()) % nodes;
        let renewed: Vec<(usize, Option<Lease>)> = futures_util::stream::iter(chunk)
            .map(|i| {
                let (api, mut l, beats) = (api.clone(), leases[i].clone(), beats.clone());
                async move {
                    let name = format!("sim-{i}");
                    if let Some(spec) = l.spec.as_mut() {
                        spec.renew_time = Some(strata_client::k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(chrono::Utc::now()));
                    }
                    match api.replace(&name, &PostParams::default(), &l).await {
                        Ok(l) => {
                            beats.renewed.fetch_add(1, Relaxed);
                            (i, Some(l))
                        }
                        Err(_) => {
                            beats.failed.fetch_add(1, Relaxed);
                            (i, api.get(&name).await.ok())
                        }
                    }
                }
            })
            .buffer_unordered(128)
            .collect()
            .await;
        for (i, l) in renewed {
            if let Some(l) = l {
                leases[i] = l;
            }
        }
    }
}

fn pod(i: usize, workload: &str) -> Pod {
    let group = format!("g{}", i / 100);
    let mut p = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p{i}"), "namespace": "default", "labels": {"group": group}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}
    });
    let sel = serde_json::json!({"matchLabels": {"group": group}});
    match workload {
        "anti" => {
            p["spec"]["affinity"] = serde_json::json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": sel, "topologyKey": "kubernetes.io/hostname"}]}});
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

/// The stock kube-scheduler binary, if there is one or it can be built.
fn kube_scheduler() -> Option<String> {
    if let Ok(p) = std::env::var("KUBE_SCHEDULER") {
        return Some(p);
    }
    if std::env::var("BENCH_PEER").is_ok_and(|v| v == "0") || Command::new("go").arg("version").stdout(Stdio::null()).status().is_err() {
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/kube-peer.sh");
    eprintln!("building kube-scheduler with {script} (cached after the first time)...");
    let out = Command::new(script).arg("kube-scheduler").stderr(Stdio::inherit()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `hold`: take the in-server scheduler's Lease for the bench (once the scheduler has made
/// it); else release it and return once the scheduler holds it again.
async fn lease_hold(client: &strata_client::kube::Client, hold: bool) {
    use strata_client::k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    const BENCH: &str = "scheduler-bench-hold";
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the in-server scheduler's Lease: no {} within 60 s", if hold { "Lease" } else { "new holder" });
        let Some(mut lease) = api.get_opt("kube-scheduler").await.expect("get the scheduler's Lease") else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if !hold {
            if holder == BENCH {
                spec.holder_identity = Some(String::new());
                spec.lease_duration_seconds = Some(1);
                api.replace("kube-scheduler", &PostParams::default(), &lease).await.expect("release the Lease");
            } else if !holder.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        spec.holder_identity = Some(BENCH.into());
        spec.lease_duration_seconds = Some(86_400);
        spec.renew_time = Some(MicroTime(strata_client::k8s_openapi::chrono::Utc::now()));
        match api.replace("kube-scheduler", &PostParams::default(), &lease).await {
            Ok(_) => return,
            // The scheduler renewed in between.
            Err(strata_client::kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("hold the scheduler's Lease: {e}"),
        }
    }
}

/// One scheduler to run: strata's as its own process, strata's inside the server, or the peer
/// at a client rate limit (`None`: its defaults).
#[derive(Clone)]
enum Sched {
    Strata,
    InServer,
    Peer { bin: String, qps: Option<u32> },
}

impl Sched {
    fn label(&self) -> String {
        match self {
            Sched::Strata => "strata".into(),
            Sched::InServer => "strata in-server".into(),
            Sched::Peer { qps: None, .. } => "k-s qps 50/100".into(),
            Sched::Peer { qps: Some(q), .. } => format!("k-s qps {q}/{q}"),
        }
    }
}

/// Start the scheduler's process (`None`: it runs in the server).
fn start_scheduler(which: &Sched, server: &Server) -> Option<Proc> {
    let log = std::fs::File::create(server.dir.path().join(format!("{}.log", which.label().replace([' ', '/'], "-")))).expect("log");
    let child = match which {
        Sched::InServer => return None,
        Sched::Strata => Command::new(strata_bin())
            .args(["scheduler", "--kubeconfig"])
            .arg(server.kubeconfig())
            .args(std::env::var("BENCH_SCHEDULER_ARGS").unwrap_or_default().split_whitespace())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn(),
        Sched::Peer { bin, qps } => {
            let config = server.dir.path().join("kube-scheduler.yaml");
            // Without qps/burst kube-scheduler applies its own defaults (50 / 100).
            let limits = qps.map(|q| format!(", qps: {q}, burst: {q}")).unwrap_or_default();
            std::fs::write(
                &config,
                format!(
                    "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nclientConnection: {{kubeconfig: {}{limits}}}\nleaderElection: {{leaderElect: false}}\n",
                    server.kubeconfig().display()
                ),
            )
            .expect("config");
            Command::new(bin).arg("--config").arg(&config).args(["--secure-port=0", "-v=1"]).stdout(Stdio::null()).stderr(log).spawn()
        }
    };
    Some(Proc(child.expect("start the scheduler")))
}

struct Result {
    pods_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    bound: usize,
    /// Seconds from the first create (the Deployment's, for `deploy`) to the last binding.
    total_s: f64,
    /// Server RSS: idle, with the nodes, with the nodes and the pods.
    rss_kib: [u64; 3],
    /// CPU seconds the server and the scheduler used from the first create to the end: what
    /// a pod costs, whatever else the machine was doing.
    cpu_server_s: f64,
    cpu_scheduler_s: f64,
    /// Backlog mode only.
    backlog: Option<Backlog>,
}

/// What a backlog row adds (see the module's doc).
struct Backlog {
    /// Scheduler process started → first binding seen, seconds.
    first_bind_s: f64,
    /// Per-second throughput samples: average, p50, p90, p99 (pods/s), and how many.
    samples: [f64; 4],
    n_samples: usize,
    /// Scheduler started → bound: p50, p90, p99 ms (create → bound stays in p50/p99 ms).
    start_to_bound_ms: [f64; 3],
}

/// upstream's throughputCollector summary: average and the p50/p90/p99 of the samples sorted
/// ascending, at index ceil(n·p) − 1.
fn throughput_summary(samples: &mut [f64]) -> [f64; 4] {
    if samples.is_empty() {
        return [0.0; 4];
    }
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let at = |p: f64| samples[((n as f64 * p).ceil() as usize).clamp(1, n) - 1];
    [samples.iter().sum::<f64>() / n as f64, at(0.5), at(0.9), at(0.99)]
}

/// A Deployment of `replicas` plain pods (the `deploy` workload).
fn deployment(replicas: usize) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}
            }
        }
    }))
    .expect("deployment")
}

async fn run_one(nodes: usize, pods: usize, workload: &str, scheduler: &Sched, backlog: bool) -> Result {
    let server = Server::start(matches!(scheduler, Sched::InServer));
    let client = strata_client::from_kubeconfig(&server.kubeconfig(), "scheduler-bench").await.expect("client");
    // Let the server's start-up (bootstrap objects, controllers' first lists) settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle = rss_kib(server.proc.0.id());
    let held_at = (backlog && matches!(scheduler, Sched::InServer)).then(|| Instant::now());
    if held_at.is_some() {
        lease_hold(&client, true).await;
    }
    let node_api: Api<Node> = Api::all(client.clone());
    futures_util::stream::iter(0..nodes)
        .for_each_concurrent(64, |i| {
            let api = node_api.clone();
            async move {
                api.create(&PostParams::default(), &node(i)).await.expect("create node");
            }
        })
        .await;
    let leases = match heartbeat_interval() {
        Some(_) => create_leases(client.clone(), nodes).await,
        None => Vec::new(),
    };
    let (beats, beats_start): (Arc<Beats>, _) = (Arc::default(), Instant::now());
    let heartbeats = heartbeat_interval().map(|every| AbortOnDrop(tokio::spawn(heartbeat(client.clone(), leases, every, beats.clone()))));
    let rss_nodes = rss_kib(server.proc.0.id());
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    // e2e: the scheduler runs before the pods come; backlog: it starts once they all exist.
    let mut sched = None;
    if !backlog {
        sched = start_scheduler(scheduler, &server);
        // Warm up: the scheduler has synced once a pod is bound.
        let mut warm = pod(usize::MAX / 2, "plain");
        warm.metadata.name = Some("warmup".into());
        pod_api.create(&PostParams::default(), &warm).await.expect("warmup pod");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let p = pod_api.get("warmup").await.expect("get warmup");
            if p.spec.and_then(|s| s.node_name).is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "{} did not bind the warm-up pod", scheduler.label());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    // Pods the watch has seen, bound or not (backlog: the scheduler starts once all exist).
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (b2, seen2) = (bound.clone(), seen.clone());
    let api2: Api<Seen> = Api::namespaced(client.clone(), "default");
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel::<()>();
    let watch = tokio::spawn(async move {
        let mut synced_tx = Some(synced_tx);
        // Only each pod's name and node are decoded (see `Seen`).
        let mut s = std::pin::pin!(watcher(api2, watcher::Config::default()));
        while let Some(ev) = s.next().await {
            let pods: Vec<Seen> = match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => vec![p],
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = synced_tx.take() {
                        let _ = tx.send(());
                    }
                    continue;
                }
                _ => continue,
            };
            let now = Instant::now();
            for p in pods {
                let is_bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
                if let Some(n) = p.metadata.name.filter(|n| n != "warmup") {
                    if is_bound {
                        b2.lock().expect("lock").entry(n.clone()).or_insert(now);
                    }
                    seen2.lock().expect("lock").entry(n).or_insert(now);
                }
            }
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(30), synced_rx).await;
    let mut cpu_before = (cpu_s(server.proc.0.id()), sched.as_ref().map_or(0.0, |s| cpu_s(s.0.id())));
    if let Some(at) = held_at {
        // The server's scheduler stops leading at its next renewal (every 2 s).
        tokio::time::sleep(Duration::from_secs(5).saturating_sub(at.elapsed())).await;
    }
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let start = Instant::now();
    if workload == "deploy" {
        let deploy_api: Api<Deployment> = Api::namespaced(client.clone(), "default");
        deploy_api.create(&PostParams::default(), &deployment(pods)).await.expect("create deployment");
    } else {
        futures_util::stream::iter(0..pods)
            .for_each_concurrent(64, |i| {
                let (api, created) = (pod_api.clone(), created.clone());
                let p = pod(i, workload);
                async move {
                    api.create(&PostParams::default(), &p).await.expect("create pod");
                    created.lock().expect("lock").insert(format!("p{i}"), Instant::now());
                }
            })
            .await;
    }
    // Backlog: every pod exists (the watch has seen it), none is bound; now the scheduler.
    let mut sampler = None;
    let samples: Arc<Mutex<Vec<f64>>> = Arc::default();
    let mut sched_start = start;
    if backlog {
        let deadline = Instant::now() + Duration::from_secs(600);
        while seen.lock().expect("lock").len() < pods {
            assert!(Instant::now() < deadline, "only {} of {pods} pods were created", seen.lock().expect("lock").len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(bound.lock().expect("lock").is_empty(), "pods were bound with no scheduler running");
        cpu_before.0 = cpu_s(server.proc.0.id());
        sched_start = Instant::now();
        sched = start_scheduler(scheduler, &server);
        if held_at.is_some() {
            lease_hold(&client, false).await;
            sched_start = Instant::now();
            cpu_before.0 = cpu_s(server.proc.0.id());
        }
        let (b3, out) = (bound.clone(), samples.clone());
        sampler = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            // A late tick is not made up for by a burst: each sample divides by its real span.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut last: Option<(usize, Instant)> = None;
            loop {
                tick.tick().await;
                let (n, now) = (b3.lock().expect("lock").len(), Instant::now());
                // Before the first binding: no sample. The tick that sees the last one ends the
                // measurement (its partial second is no sample).
                if n == 0 || n >= pods {
                    if n >= pods {
                        return;
                    }
                    continue;
                }
                if let Some((ln, lt)) = last {
                    out.lock().expect("lock").push((n - ln) as f64 / now.saturating_duration_since(lt).as_secs_f64().max(1e-9));
                }
                last = Some((n, now));
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    loop {
        let n = bound.lock().expect("lock").len();
        // Give up after 30 s without a binding; backlog: after 300 s before the first one (the
        // scheduler's start-up lists the whole backlog: kube-scheduler's took over 30 s at 5,000
        // nodes and 10,000 spread pods on the loaded machine).
        let patience = Duration::from_secs(if backlog && n == 0 { 300 } else { 30 });
        if n >= pods || Instant::now() > deadline || last_progress.elapsed() > patience {
            break;
        }
        if n != last_count {
            last_count = n;
            last_progress = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watch.abort();
    drop(heartbeats);
    if let Some(t) = sampler {
        t.abort();
    }
    let mut samples = samples.lock().expect("lock").clone();
    if let Ok(dir) = std::env::var("BENCH_KEEP_LOGS") {
        // The row's server and scheduler logs, kept past the row's temporary directory.
        for f in std::fs::read_dir(server.dir.path()).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().to_string();
            if name.ends_with(".log") {
                let to = std::path::Path::new(&dir).join(format!("{nodes}-{pods}-{workload}-{}-{name}", scheduler.label().replace([' ', '/'], "-")));
                if let Err(e) = std::fs::copy(f.path(), &to) {
                    eprintln!("keeping {}: {e}", to.display());
                }
            }
        }
    }
    let cpu_server_s = cpu_s(server.proc.0.id()) - cpu_before.0;
    {
        use std::sync::atomic::Ordering::Relaxed;
        let (renewed, failed) = (beats.renewed.load(Relaxed), beats.failed.load(Relaxed));
        if heartbeat_interval().is_some() {
            eprintln!("{nodes} nodes, {workload}: {renewed} Lease renewals, {failed} failed, since the nodes were made ({:.0}/s)", renewed as f64 / beats_start.elapsed().as_secs_f64().max(1e-9));
        }
    }
    // In the server, the scheduler's CPU is in the server's.
    let cpu_scheduler_s = sched.as_ref().map_or(0.0, |s| cpu_s(s.0.id()) - cpu_before.1);
    let bound = bound.lock().expect("lock").clone();
    let created = created.lock().expect("lock").clone();
    if workload == "deploy" {
        // When the pods came (first seen by the watch) against when they were bound.
        let since = |m: &HashMap<String, Instant>| {
            let mut v: Vec<Duration> = m.values().map(|t| t.saturating_duration_since(start)).collect();
            v.sort();
            v
        };
        let (c, b) = (since(&seen.lock().expect("lock")), since(&bound));
        let at = |v: &[Duration], p: f64| pct(v, p) / 1000.0;
        eprintln!(
            "{nodes} nodes, deploy: created (seen) 10/50/90/100 % at {:.2}/{:.2}/{:.2}/{:.2} s, bound at {:.2}/{:.2}/{:.2}/{:.2} s",
            at(&c, 0.1), at(&c, 0.5), at(&c, 0.9), at(&c, 1.0), at(&b, 0.1), at(&b, 0.5), at(&b, 0.9), at(&b, 1.0)
        );
    }
    // Latency: create returned -> binding seen; for `deploy`, Deployment created -> binding seen.
    let mut lat: Vec<Duration> = if workload == "deploy" {
        bound.values().map(|b| b.saturating_duration_since(start)).collect()
    } else {
        created.iter().filter_map(|(n, c)| bound.get(n).map(|b| b.saturating_duration_since(*c))).collect()
    };
    lat.sort();
    let last = bound.values().copied().max().unwrap_or(start);
    let count = lat.len();
    let backlog = backlog.then(|| {
        let mut from_start: Vec<Duration> = bound.values().map(|b| b.saturating_duration_since(sched_start)).collect();
        from_start.sort();
        let first = from_start.first().copied().unwrap_or_default();
        Backlog {
            first_bind_s: first.as_secs_f64(),
            n_samples: samples.len(),
            samples: throughput_summary(&mut samples),
            start_to_bound_ms: [pct(&from_start, 0.5), pct(&from_start, 0.9), pct(&from_start, 0.99)],
        }
    });
    // Backlog: the span is the scheduler's, from its start.
    let total_s = last.saturating_duration_since(sched_start).as_secs_f64();
    Result {
        pods_per_s: count as f64 / total_s.max(1e-9),
        p50_ms: pct(&lat, 0.5),
        p99_ms: pct(&lat, 0.99),
        bound: count,
        total_s,
        rss_kib: [rss_idle, rss_nodes, rss_kib(server.proc.0.id())],
        cpu_server_s,
        cpu_scheduler_s,
        backlog,
    }
}

fn main() {
    let nodes: Vec<usize> = env_list("BENCH_NODES", "1000,5000").iter().filter_map(|s| s.parse().ok()).collect();
    let pods: usize = std::env::var("BENCH_PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let workloads = env_list("BENCH_WORKLOADS", "plain,anti,spread,deploy");
    let peer = kube_scheduler();
    if peer.is_none() {
        eprintln!("no kube-scheduler (set KUBE_SCHEDULER or install go): strata only");
    }
    let modes = env_list("BENCH_MODE", "e2e");
    if let Some(m) = modes.iter().find(|m| !matches!(m.as_str(), "e2e" | "backlog")) {
        panic!("BENCH_MODE: unknown mode {m:?} (e2e, backlog)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let qps: Vec<Option<u32>> = env_list("BENCH_PEER_QPS", "5000").iter().map(|v| v.parse().ok()).collect();
    let mut which = Vec::new();
    for s in env_list("BENCH_STRATA_SCHEDULER", "process") {
        match s.as_str() {
            "process" => which.push(Sched::Strata),
            // The backlog rows start the scheduler once every pod exists; the server's own
            // runs from the server's start.
            "server" => which.push(Sched::InServer),
            other => panic!("BENCH_STRATA_SCHEDULER: unknown {other:?} (process, server)"),
        }
    }
    if let Some(bin) = &peer {
        which.extend(qps.iter().map(|&qps| Sched::Peer { bin: bin.clone(), qps }));
    }
    for mode in &modes {
        let backlog = mode == "backlog";
        println!("mode {mode}");
        print!(
            "{:>6} {:>6} {:>8} {:>16} {:>9} {:>9} {:>9} {:>9} {:>7} {:>10} {:>8} {:>8} {:>10} {:>10} {:>6}",
            "nodes", "pods", "workload", "scheduler", "pods/s", "p50 ms", "p99 ms", "total s", "bound", "server MiB", "KiB/node", "KiB/pod", "srv ms/pod", "sch ms/pod", "load1"
        );
        if backlog {
            print!(" {:>7} {:>8} {:>8} {:>8} {:>8} {:>4} {:>9} {:>9} {:>9}", "first s", "thr avg", "thr p50", "thr p90", "thr p99", "n", "s>b p50", "s>b p90", "s>b p99");
        }
        println!();
        for &n in &nodes {
            for w in &workloads {
                let mut rates = Vec::new();
                for s in &which {
                    let r = rt.block_on(run_one(n, pods, w, s, backlog));
                    let label = s.label();
                    let [idle, with_nodes, with_pods] = r.rss_kib;
                    let per_node = with_nodes.saturating_sub(idle) as f64 / n.max(1) as f64;
                    let per_pod = with_pods.saturating_sub(with_nodes) as f64 / r.bound.max(1) as f64;
                    print!(
                        "{n:>6} {pods:>6} {w:>8} {label:>16} {:>9.0} {:>9.1} {:>9.1} {:>9.2} {:>7} {:>10} {per_node:>8.1} {per_pod:>8.1} {:>10.3} {:>10.3} {:>6}",
                        r.pods_per_s,
                        r.p50_ms,
                        r.p99_ms,
                        r.total_s,
                        r.bound,
                        with_pods / 1024,
                        r.cpu_server_s * 1000.0 / r.bound.max(1) as f64,
                        r.cpu_scheduler_s * 1000.0 / r.bound.max(1) as f64,
                        load1()
                    );
                    let avg = r.backlog.as_ref().map_or(0.0, |b| b.samples[0]);
                    if let Some(b) = &r.backlog {
                        let [a, p50, p90, p99] = b.samples;
                        let [s50, s90, s99] = b.start_to_bound_ms;
                        print!(" {:>7.2} {a:>8.0} {p50:>8.0} {p90:>8.0} {p99:>8.0} {:>4} {s50:>9.1} {s90:>9.1} {s99:>9.1}", b.first_bind_s, b.n_samples);
                    }
                    println!();
                    rates.push((label, r.pods_per_s, avg));
                }
                if let Some((_, strata, strata_avg)) = rates.first().cloned() {
                    for (label, rate, avg) in rates.iter().skip(1).filter(|(_, rate, _)| *rate > 0.0) {
                        print!("{n:>6} {pods:>6} {w:>8} {:>16} {:>9.2}", format!("strata/{label}"), strata / rate.max(1e-9));
                        if backlog && strata_avg > 0.0 && *avg > 0.0 {
                            print!("  (per-second samples' average: {:.2})", strata_avg / avg);
                        }
                        println!();
                    }
                }
            }
        }
    }
}

/// The 1-minute load average (the machine is shared: say how loaded it was).
fn load1() -> String {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next().map(str::to_string)).unwrap_or_default()
}
