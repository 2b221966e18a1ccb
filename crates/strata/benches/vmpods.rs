//! VM-isolated pods (issue 11 part 3): create -> Running of a `runtimeClassName: strata-vm` pod
//! against a container pod and against QEMU started by hand on the same guest kernel and
//! initramfs, in one run; then the per-pod overhead of VM-isolated pods (QEMU outside the guest's
//! RAM, and strata's own processes), RSS and PSS.
//!
//! `cargo bench -p strata --bench vmpods` starts a local docker-registry holding busybox, a
//! `strata server --no-agent` and one node agent as its own process (joined with a token) with
//! the guest kernel of `scripts/guest-kernel.sh` and the static agent of
//! `scripts/guest-agent.sh` (or `STRATA_GUEST_AGENT`), QEMU on TCG. Then:
//!
//! 1. warm-up: one container pod and one VM pod (the image is pulled, the initramfs built);
//! 2. `BENCH_ROUNDS` (5) rounds of: a container pod created and timed until a watch sees it
//!    Running; a VM-isolated pod the same way; once its QEMU is gone, QEMU by hand (`-machine microvm`, the same kernel,
//!    initramfs, kernel command line, memory and vCPUs, with the serial console and the agent's
//!    virtio-serial port but no NIC, share or balloon)
//!    timed from its start until the guest agent answers `hello` (the earliest moment strata
//!    could start a container), then powered off through the agent. Both pods are deleted and
//!    gone before the next round, so one VM boots at a time;
//! 3. overhead: `BENCH_VM_PODS` (3) VM-isolated pods Running and left idle 10 s; for each QEMU,
//!    RSS and PSS in total and outside the guest-RAM mapping (and that mapping's own RSS: the
//!    guest memory touched), the largest other mapping (TCG's translation cache); the guest's own
//!    use (MemTotal - MemAvailable, read in the pod); the agent's growth and the PSS of the other
//!    strata processes of this run (those naming its directory) per pod.
//!
//! `STRATA_VM_TB_SIZE=N` (MiB) is passed to the agent (QEMU's `-accel tcg,tb-size=N`) and to the
//! QEMU by hand alike; unset: strata's default (`DEFAULT_TB_SIZE_MIB`, 8), 0: QEMU's default (1 GiB). `STRATA_BIN=PATH`
//! runs that strata binary.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use strata_client::k8s_openapi::api::core::v1::Pod;
use strata_client::kube::api::{Api, DeleteParams, ListParams, PostParams};
use strata_client::kube::runtime::watcher;
use strata_guest::protocol::{read_frame, write_frame, GuestMessage, HostMessage, Request, Response};
use strata_testkit::{busybox_image, join_agent, memory_mib, start_server, KillOnDrop as Proc, Registry};

/// What strata gives a VM-isolated pod's QEMU (`MicroVmConfig::new`, `qemu::DEFAULT_APPEND`).
const GUEST_MEMORY_MIB: u64 = 256;
const APPEND: &str = "console=ttyS0 earlyprintk=ttyS0 panic=-1 tsc_early_khz=2000000 no_timer_check quiet";

/// How many processes of the strata binary `bin`, besides `skip`, name a path under `dir` on
/// their command line (this run's: another run of the same binary on the machine is not
/// counted), and their PSS in MiB.
fn processes_under(bin: &str, dir: &Path, skip: &[u32]) -> (usize, f64) {
    let exe = std::fs::canonicalize(bin).unwrap_or_else(|_| PathBuf::from(bin));
    let needle = dir.display().to_string();
    let mut out = (0, 0.0);
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let ours = std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle));
        if skip.contains(&pid) || !ours || std::fs::read_link(e.path().join("exe")).ok().as_deref() != Some(exe.as_path()) {
            continue;
        }
        out.0 += 1;
        out.1 += memory_mib(pid).1;
    }
    out
}

fn strata_bin() -> String {
    std::env::var("STRATA_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_strata").to_string())
}

fn env_num(k: &str, d: usize) -> usize {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

/// The translation cache both strata's QEMU and QEMU by hand get: `STRATA_VM_TB_SIZE`, else
/// strata's default; `None` (0) is QEMU's own default.
fn tb_size() -> Option<u32> {
    let n = std::env::var("STRATA_VM_TB_SIZE").ok().and_then(|v| v.parse().ok()).unwrap_or(strata_driver::microvm::DEFAULT_TB_SIZE_MIB);
    (n > 0).then_some(n)
}

fn script(name: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash").arg(repo.join("scripts").join(name)).stderr(Stdio::inherit()).output().expect("run script");
    assert!(out.status.success(), "scripts/{name} failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Removes the VM-isolated pods of a node root when dropped (after the agent is killed): their
/// QEMUs outlive the agent by design, and a bench that stops early must not leave them running.
struct VmPodSweep {
    root: PathBuf,
    kernel: PathBuf,
    guest_agent: PathBuf,
}

impl Drop for VmPodSweep {
    fn drop(&mut self) {
        use strata_driver::PodRuntime;
        let Ok(images) = strata_driver::images::ImageStore::open(self.root.join("images")) else { return };
        let config = strata_driver::MicroVmConfig::new(self.kernel.clone(), self.guest_agent.clone());
        let Ok(vms) = strata_driver::MicroVmRuntime::open(&self.root, Arc::new(images), strata_bin().into(), config) else { return };
        for sb in vms.list_pod_sandboxes(&Default::default()).unwrap_or_default() {
            if let Err(e) = vms.remove_pod_sandbox(&sb.id) {
                eprintln!("removing VM-isolated pod sandbox {}: {e}", sb.id);
            }
        }
    }
}

/// One mapping of `/proc/PID/smaps`: size, RSS, PSS in KiB.
struct Mapping {
    size: u64,
    rss: u64,
    pss: u64,
}

fn smaps(pid: u32) -> Vec<Mapping> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut maps: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(k), Some(v)) = (f.next(), f.next()) else { continue };
        let kb = || v.parse::<u64>().unwrap_or(0);
        match k {
            "Size:" => maps.push(Mapping { size: kb(), rss: 0, pss: 0 }),
            "Rss:" => {
                if let Some(m) = maps.last_mut() {
                    m.rss = kb();
                }
            }
            "Pss:" => {
                if let Some(m) = maps.last_mut() {
                    m.pss = kb();
                }
            }
            _ => {}
        }
    }
    maps
}

/// Pids of processes whose command line contains every one of `needles`.
fn pids_with(needles: &[&str]) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(c) = std::fs::read(e.path().join("cmdline")) else { continue };
        let c = String::from_utf8_lossy(&c).replace('\0', " ");
        if needles.iter().all(|n| c.contains(n)) {
            v.push(pid);
        }
    }
    v
}

fn pod(name: &str, image: &str, vm: bool) -> Pod {
    let mut spec = serde_json::json!({
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "c", "image": image, "command": ["sleep", "36000"]}]
    });
    if vm {
        spec["runtimeClassName"] = "strata-vm".into();
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"bench": "vmpods"}},
        "spec": spec
    }))
    .expect("pod")
}

#[derive(Default)]
struct Seen {
    running: HashMap<String, Instant>,
}

fn watch_pods(api: Api<Pod>, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut s = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
        while let Some(ev) = s.next().await {
            let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev else { continue };
            let now = Instant::now();
            if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                seen.lock().expect("lock").running.entry(p.metadata.name.clone().unwrap_or_default()).or_insert(now);
            }
        }
    })
}

/// Create a pod and wait until the watch sees it Running.
async fn start_one(api: &Api<Pod>, seen: &Arc<Mutex<Seen>>, name: &str, image: &str, vm: bool) -> Duration {
    let t0 = Instant::now();
    api.create(&PostParams::default(), &pod(name, image, vm)).await.expect("create pod");
    loop {
        if let Some(t) = seen.lock().expect("lock").running.get(name) {
            return t.saturating_duration_since(t0);
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "pod {name} not Running after 300 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn delete_all(api: &Api<Pod>) {
    let lp = ListParams::default().labels("bench=vmpods");
    let _ = api.delete_collection(&DeleteParams::default(), &lp).await;
    let t0 = Instant::now();
    while !api.list(&lp).await.expect("list").items.is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(300), "pods not deleted after 300 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// QEMU by hand on `vmlinuz` + `initramfs`: the time from its start until the guest agent
/// answers `hello`; then powered off through the agent.
fn qemu_by_hand(vmlinuz: &Path, initramfs: &Path) -> Duration {
    let dir = tempfile::Builder::new().prefix("strata-vmbench-").tempdir_in("/var/tmp").expect("tempdir");
    let sock = dir.path().join("agent.sock");
    let machine = match tb_size() {
        Some(n) => vec!["-machine".to_string(), "microvm,acpi=on".into(), "-accel".into(), format!("tcg,tb-size={n}")],
        None => vec!["-machine".to_string(), "microvm,accel=tcg,acpi=on".into()],
    };
    let t0 = Instant::now();
    let mut qemu = Proc(
        Command::new("qemu-system-x86_64")
            .args(&machine)
            .args(["-m", &format!("{GUEST_MEMORY_MIB}M"), "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"])
            .arg("-kernel")
            .arg(vmlinuz)
            .arg("-initrd")
            .arg(initramfs)
            .args(["-append", APPEND])
            // The serial console as strata gives it (a socket nobody reads is a null chardev here).
            .args(["-chardev", "null,id=ser0", "-serial", "chardev:ser0"])
            .args(["-chardev", &format!("socket,id=agent,path={},server=on,wait=off", sock.display())])
            .args(["-device", "virtio-serial-device", "-device", "virtserialport,chardev=agent,name=strata.agent"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64"),
    );
    let mut s = loop {
        match UnixStream::connect(&sock) {
            Ok(s) => break s,
            Err(_) => {
                assert!(t0.elapsed() < Duration::from_secs(60), "QEMU made no agent socket");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(300))).expect("timeout");
    write_frame(&mut s, &HostMessage { id: 1, request: Request::Hello }).expect("hello");
    loop {
        match read_frame::<_, GuestMessage>(&mut s) {
            Ok(Some(GuestMessage::Reply { id: 1, response: Response::Hello { .. } })) => break,
            Ok(Some(_)) => {}
            other => panic!("no hello from the guest agent: {other:?}"),
        }
    }
    let booted = t0.elapsed();
    let _ = write_frame(&mut s, &HostMessage { id: 2, request: Request::PowerOff });
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    let deadline = Instant::now() + Duration::from_secs(30);
    while qemu.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    booted
}

fn summary(label: &str, v: &mut [Duration]) -> f64 {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p50 = ms(v[v.len() / 2]);
    println!("{label:<52} n {:>2}  p50 {:>8.0} ms  min {:>8.0} ms  max {:>8.0} ms", v.len(), p50, ms(v[0]), ms(v[v.len() - 1]));
    p50
}

async fn run() {
    let rounds = env_num("BENCH_ROUNDS", 5).max(1);
    let n_vm = env_num("BENCH_VM_PODS", 3).max(1);
    let kernel = script("guest-kernel.sh");
    let guest_agent = std::env::var_os("STRATA_GUEST_AGENT").map(PathBuf::from).unwrap_or_else(|| script("guest-agent.sh"));
    let vmlinuz = std::fs::read_dir(kernel.join("boot"))
        .expect("boot/")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-")))
        .expect("boot/vmlinuz-*");

    let registry = Registry::start();
    registry.push(&busybox_image(), "busybox", "latest");
    let image = format!("{}/busybox:latest", registry.addr);
    let dir = tempfile::Builder::new().prefix("strata-vmpodbench-").tempdir_in("/var/tmp").expect("tempdir");
    let (data, root, agent_data) = (dir.path().join("server"), dir.path().join("root"), dir.path().join("agent"));
    // Dropped after the agent and the server (declared before them), before the directory.
    let _sweep = VmPodSweep { root: root.clone(), kernel: kernel.clone(), guest_agent: guest_agent.clone() };
    let (server, port) = start_server(&strata_bin(), &dir.path().join("server-root"), &["--no-agent"], &data, &dir.path().join("server.log"));
    let agent_env = [
        ("STRATA_VM_ACCEL", "tcg".to_string()),
        ("STRATA_VM_KERNEL", kernel.display().to_string()),
        ("STRATA_GUEST_AGENT", guest_agent.display().to_string()),
        ("STRATA_UNPACK_RESERVE", "512MiB".to_string()),
        ("STRATA_VM_TB_SIZE", tb_size().unwrap_or(0).to_string()),
    ];
    let agent = join_agent(&strata_bin(), &root, &data, port, "bench-node", &agent_data, &[], &agent_env, &dir.path().join("agent.log"));
    let (spid, apid) = (server.0.id(), agent.0.id());
    let client = strata_client::from_kubeconfig(&data.join("kubeconfig"), "vmpods-bench").await.expect("client");
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let tb = tb_size().map(|n| format!("tb-size={n} MiB")).unwrap_or_else(|| "QEMU's default tb-size".into());
    println!("strata {}, server pid {spid}, agent pid {apid}, TCG with {tb}, guest {GUEST_MEMORY_MIB} MiB / 1 vCPU, image {image}", strata_bin());

    let seen: Arc<Mutex<Seen>> = Arc::default();
    let _watch = watch_pods(api.clone(), seen.clone());
    // 1. Warm-up: the image pulled, the initramfs built.
    let w1 = start_one(&api, &seen, "warm-c", &image, false).await;
    let w2 = start_one(&api, &seen, "warm-v", &image, true).await;
    println!("warm-up: container pod {:.0} ms (with the pull), VM-isolated pod {:.0} ms (with the initramfs)", w1.as_secs_f64() * 1000.0, w2.as_secs_f64() * 1000.0);
    delete_all(&api).await;
    let initramfs = std::fs::read_dir(root.join("microvm"))
        .expect("microvm/")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("initramfs-")))
        .expect("the runtime's initramfs");

    // 2. Create -> Running, one VM at a time.
    let (mut ctr, mut vm, mut hand) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds {
        ctr.push(start_one(&api, &seen, &format!("c{i}"), &image, false).await);
        vm.push(start_one(&api, &seen, &format!("v{i}"), &image, true).await);
        delete_all(&api).await;
        // The pod's QEMU is gone too before QEMU by hand starts (one VM at a time).
        let t0 = Instant::now();
        while !pids_with(&["qemu-system", &root.display().to_string()]).is_empty() {
            assert!(t0.elapsed() < Duration::from_secs(120), "the deleted pod's QEMU is still running");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (k, ini) = (vmlinuz.clone(), initramfs.clone());
        hand.push(tokio::task::spawn_blocking(move || qemu_by_hand(&k, &ini)).await.expect("qemu by hand"));
    }
    let c = summary("container pod create -> Running", &mut ctr);
    let v = summary("strata-vm pod create -> Running", &mut vm);
    let h = summary("QEMU by hand start -> guest agent hello", &mut hand);
    println!("ratios (p50): strata-vm pod / QEMU by hand {:.2}x; strata-vm pod - QEMU by hand {:.0} ms; strata-vm pod / container pod {:.1}x", v / h, v - h, v / c);

    // 3. Overhead of idle VM-isolated pods.
    let agent0 = memory_mib(apid);
    let others0 = processes_under(&strata_bin(), dir.path(), &[apid, spid]);
    for i in 0..n_vm {
        start_one(&api, &seen, &format!("o{i}"), &image, true).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let root_s = root.display().to_string();
    let qemus = pids_with(&["qemu-system", &root_s]);
    assert_eq!(qemus.len(), n_vm, "one QEMU per VM-isolated pod");
    let guest_kib = GUEST_MEMORY_MIB * 1024;
    let (mut rss, mut pss, mut out_rss, mut out_pss, mut ram_rss, mut big_rss) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for pid in &qemus {
        let maps = smaps(*pid);
        let ram = maps.iter().filter(|m| m.size == guest_kib).max_by_key(|m| m.rss);
        let (r, p) = (maps.iter().map(|m| m.rss).sum::<u64>(), maps.iter().map(|m| m.pss).sum::<u64>());
        let (gr, gp) = ram.map(|m| (m.rss, m.pss)).unwrap_or((0, 0));
        let biggest = maps.iter().filter(|m| m.size != guest_kib).max_by_key(|m| m.rss).map(|m| (m.size, m.rss)).unwrap_or((0, 0));
        println!(
            "  QEMU pid {pid}: RSS {:.1} MiB, PSS {:.1} MiB; guest RAM touched {:.1} MiB; outside guest RAM RSS {:.1} / PSS {:.1} MiB; largest other mapping {:.0} MiB with RSS {:.1} MiB",
            r as f64 / 1024.0,
            p as f64 / 1024.0,
            gr as f64 / 1024.0,
            (r - gr) as f64 / 1024.0,
            (p - gp) as f64 / 1024.0,
            biggest.0 as f64 / 1024.0,
            biggest.1 as f64 / 1024.0
        );
        rss += r as f64 / 1024.0;
        pss += p as f64 / 1024.0;
        out_rss += (r - gr) as f64 / 1024.0;
        out_pss += (p - gp) as f64 / 1024.0;
        ram_rss += gr as f64 / 1024.0;
        big_rss += biggest.1 as f64 / 1024.0;
    }
    let n = n_vm as f64;
    let meminfo = Command::new("kubectl")
        .args(["exec", "o0", "-c", "c", "--", "cat", "/proc/meminfo"])
        .env("KUBECONFIG", data.join("kubeconfig"))
        .env("HOME", dir.path())
        .output()
        .expect("kubectl exec");
    let field = |k: &str| String::from_utf8_lossy(&meminfo.stdout).lines().find_map(|l| l.strip_prefix(k)).and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()).unwrap_or(f64::NAN);
    let guest_used = (field("MemTotal:") - field("MemAvailable:")) / 1024.0;
    let agent1 = memory_mib(apid);
    let others1 = processes_under(&strata_bin(), dir.path(), &[apid, spid]);
    let strata_per_pod = ((agent1.1 - agent0.1) + (others1.1 - others0.1)) / n;
    println!("per VM-isolated pod ({n_vm} idle pods, {tb}):");
    println!("  QEMU RSS {:.1} MiB, PSS {:.1} MiB; guest RAM touched {:.1} MiB; QEMU outside guest RAM: RSS {:.1} MiB, PSS {:.1} MiB (largest other mapping RSS {:.1} MiB)", rss / n, pss / n, ram_rss / n, out_rss / n, out_pss / n, big_rss / n);
    println!("  guest's own use (MemTotal - MemAvailable in the pod): {guest_used:.1} MiB");
    println!(
        "  strata: agent PSS {:.1} -> {:.1} MiB (RSS {:.1} -> {:.1}); other strata processes {} -> {} ({:.1} -> {:.1} MiB PSS); {:.1} MiB PSS per pod",
        agent0.1, agent1.1, agent0.0, agent1.0, others0.0, others1.0, others0.1, others1.1, strata_per_pod
    );
    println!("  overhead beyond the guest's memory (QEMU outside guest RAM + strata), PSS: {:.1} MiB per pod", out_pss / n + strata_per_pod);
    // RSS counts QEMU's binary, libraries and initramfs whole in each QEMU: what a node's only
    // VM-isolated pod pays (the agent's growth is its RSS here).
    let strata_rss_per_pod = ((agent1.0 - agent0.0) + (others1.1 - others0.1)) / n;
    println!("  overhead beyond the guest's memory (QEMU outside guest RAM + strata), RSS: {:.1} MiB per pod", out_rss / n + strata_rss_per_pod);
    delete_all(&api).await;
    assert!(pids_with(&["qemu-system", &root_s]).is_empty(), "QEMU left after the pods were deleted");
}

fn main() {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime").block_on(run());
}
