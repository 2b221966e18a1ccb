//! VirtualMachine create -> Running through the control plane (issue 11), next to `strata vm
//! create` of the same kernel and initramfs by hand, in one run (not a timed test). TCG here; as
//! root: `cargo bench -p strata --bench vm_create` (`BENCH_VMS=N`, default 10; `STRATA_BIN=PATH`
//! runs that strata binary instead of this build's).
//!
//! One `strata server` with its own node agent, scheduler and controllers; the VMs are the test
//! guest of `scripts/vm-assets.sh` (Debian kernel + busybox initramfs, 256 MiB, bridge network),
//! one at a time, alternating with the same VM made by hand on another strata root:
//!
//! - **VirtualMachine**: created with the API (as `kubectl apply` does), timed until a watch sees
//!   its `printableStatus` Running (controller -> launcher pod -> scheduler -> agent -> VM driver
//!   -> QEMU started -> pod status -> VM status), and until the guest's `/init` printed its marker
//!   on the serial console (`strata vm logs` on the node, polled every 100 ms); then deleted, and
//!   waited for until its QEMU is gone.
//! - **by hand**: `strata vm create` with the same kernel, initrd, command line and memory, timed
//!   until the command returns (QEMU started: what Running means above) and until the marker
//!   (polled the same way); then `strata vm rm -f`.
//!
//! A first VM on each side is a warm-up (the acceleration probe, caches) and is not counted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use strata_client::kube::api::{Api, DeleteParams, PostParams};
use strata_client::kube::runtime::watcher;
use strata_client::vm::VirtualMachine;
use strata_testkit::{percentile_ms as pct, start_server};

const MARKER: &str = "STRATA-GUEST-UP";
const APPEND: &str = "console=ttyS0 earlyprintk=ttyS0 quiet panic=-1 tsc_early_khz=2000000 no_timer_check";
const LIMIT: Duration = Duration::from_secs(180);

fn strata_bin() -> String {
    std::env::var("STRATA_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_strata").to_string())
}

fn assets() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/vm-assets.sh");
    let out = Command::new("bash").arg(script).output().expect("vm-assets.sh");
    assert!(out.status.success(), "vm-assets.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn strata(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(strata_bin()).arg("--root").arg(root).args(args).stdin(Stdio::null()).output().expect("strata")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The node's VMs on `root`: (name, id) pairs.
fn node_vms(root: &Path) -> Vec<(String, String)> {
    let out = strata(root, &["vm", "list", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    v.as_array().into_iter().flatten().map(|r| (r["name"].as_str().unwrap_or("").to_string(), r["id"].as_str().unwrap_or("").to_string())).collect()
}

/// Poll `strata vm logs NAME` (the name found by `pick` among the node's VMs) until the guest's
/// marker: the time since `t0`.
fn wait_marker(root: &Path, t0: Instant, pick: impl Fn(&str) -> bool) -> Duration {
    loop {
        if let Some((name, _)) = node_vms(root).into_iter().find(|(n, _)| pick(n)) {
            if String::from_utf8_lossy(&strata(root, &["vm", "logs", &name]).stdout).contains(MARKER) {
                return t0.elapsed();
            }
        }
        assert!(t0.elapsed() < LIMIT, "no guest marker within {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn vm(name: &str, assets: &Path) -> VirtualMachine {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "strata.dev/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "memory": "256Mi",
            "terminationGracePeriodSeconds": 10,
            "tolerations": [{"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"}],
            "boot": {"kernel": {"path": assets.join("vmlinuz"), "initrd": assets.join("initrd.gz"), "cmdline": APPEND}}
        }
    }))
    .expect("vm")
}

/// First time a watch saw each VM Running.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

fn watch_vms(api: Api<VirtualMachine>, seen: Seen) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut s = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
        while let Some(ev) = s.next().await {
            let Ok(watcher::Event::Apply(v) | watcher::Event::InitApply(v)) = ev else { continue };
            let now = Instant::now();
            if v.status.as_ref().and_then(|s| s.printable_status.as_deref()) == Some("Running") {
                seen.lock().expect("lock").entry(v.metadata.name.clone().unwrap_or_default()).or_insert(now);
            }
        }
    })
}

/// One VirtualMachine: (create -> Running, create -> marker); deleted and gone afterwards.
async fn one_vm(api: &Api<VirtualMachine>, seen: &Seen, root: &Path, assets: &Path, name: &str) -> (Duration, Duration) {
    let before: Vec<String> = node_vms(root).into_iter().map(|(n, _)| n).collect();
    let t0 = Instant::now();
    api.create(&PostParams::default(), &vm(name, assets)).await.expect("create vm");
    let running = loop {
        if let Some(t) = seen.lock().expect("lock").get(name) {
            break t.saturating_duration_since(t0);
        }
        assert!(t0.elapsed() < LIMIT, "VM {name} not Running within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let r = root.to_path_buf();
    let marker = tokio::task::spawn_blocking(move || wait_marker(&r, t0, |n| n.starts_with("pod-") && !before.iter().any(|b| b == n))).await.expect("marker");
    api.delete(name, &DeleteParams::default()).await.expect("delete vm");
    let t1 = Instant::now();
    while !node_vms(root).is_empty() {
        assert!(t1.elapsed() < LIMIT, "VM {name} still on the node {LIMIT:?} after its delete");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (running, marker)
}

/// One `strata vm create` by hand: (the command's return, create -> marker); removed afterwards.
fn one_by_hand(root: &Path, assets: &Path, name: &str) -> (Duration, Duration) {
    let (k, i) = (assets.join("vmlinuz"), assets.join("initrd.gz"));
    let t0 = Instant::now();
    let out = strata(root, &["vm", "create", name, "--kernel", k.to_str().expect("utf-8"), "--initrd", i.to_str().expect("utf-8"), "--append", APPEND, "--memory", "256M"]);
    let returned = t0.elapsed();
    assert!(out.status.success(), "strata vm create: {}", String::from_utf8_lossy(&out.stderr));
    let marker = wait_marker(root, t0, |n| n == name);
    let rm = strata(root, &["vm", "rm", "-f", name]);
    assert!(rm.status.success(), "strata vm rm: {}", String::from_utf8_lossy(&rm.stderr));
    (returned, marker)
}

fn summary(label: &str, mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let (p50, p99) = (pct(&v, 0.5), pct(&v, 0.99));
    println!("{label:<48} n={:<3} p50 {p50:>7.0} ms  p99 {p99:>7.0} ms  (all: {:?})", v.len(), v.iter().map(|d| d.as_millis()).collect::<Vec<_>>());
    (p50, p99)
}

async fn run() {
    let n = std::env::var("BENCH_VMS").ok().and_then(|v| v.parse().ok()).unwrap_or(10usize);
    let assets = assets();
    let dir = tempfile::Builder::new().prefix("svmb-").tempdir_in("/var/tmp").expect("tempdir");
    let (data, root, hand) = (dir.path().join("data"), dir.path().join("root"), dir.path().join("hand"));
    let (_server, _port) = start_server(&strata_bin(), &root, &[], &data, &dir.path().join("server.log"));
    let client = strata_client::from_kubeconfig(&data.join("kubeconfig"), "vm-create-bench").await.expect("client");
    let api: Api<VirtualMachine> = Api::namespaced(client.clone(), "default");
    let seen: Seen = Arc::default();
    let _watch = watch_vms(api.clone(), seen.clone());
    let load_start = loadavg();

    // Warm-ups (not counted).
    let deadline = Instant::now() + Duration::from_secs(120);
    while api.list(&Default::default()).await.is_err() {
        assert!(Instant::now() < deadline, "VirtualMachines not served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    one_vm(&api, &seen, &root, &assets, "warmup").await;
    one_by_hand(&hand, &assets, "warmup");

    let (mut vm_run, mut vm_marker, mut hand_run, mut hand_marker) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let (r, m) = one_vm(&api, &seen, &root, &assets, &format!("vm{i}")).await;
        vm_run.push(r);
        vm_marker.push(m);
        let (r, m) = one_by_hand(&hand, &assets, &format!("hand{i}"));
        hand_run.push(r);
        hand_marker.push(m);
    }
    let load_end = loadavg();
    println!("strata {} ; {n} VMs per side, one at a time, alternating; TCG", strata_bin());
    let (a50, a99) = summary("VirtualMachine create -> Running (API watch)", vm_run);
    let (b50, b99) = summary("strata vm create (command returns)", hand_run);
    let (c50, c99) = summary("VirtualMachine create -> guest marker", vm_marker);
    let (d50, d99) = summary("strata vm create -> guest marker", hand_marker);
    println!("ratio Running / by hand: p50 {:.2}, p99 {:.2}", a50 / b50, a99 / b99);
    println!("ratio guest marker, VirtualMachine / by hand: p50 {:.2}, p99 {:.2}", c50 / d50, c99 / d99);
    println!("load average at start: {load_start}; at end: {load_end}");
}

fn main() {
    // `cargo bench` passes --bench; nothing else is taken.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(run());
}
