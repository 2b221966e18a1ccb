//! The node agent inside `strata server`: Node registration from the real machine, the
//! heartbeat Lease, and `--no-agent`, seen through the real kubectl.

mod common;

use std::time::Duration;

use common::eventually;
use common::server::{ApiServer, Backend, Options};
use serde_json::Value;

fn with_agent(extra: &[&str]) -> ApiServer {
    ApiServer::start_opts(Backend::Embedded, Options { agent: true, extra: extra.iter().map(|s| s.to_string()).collect(), ..Options::default() })
}

fn json(s: &ApiServer, args: &[&str]) -> Value {
    serde_json::from_str(&s.ok(args)).expect("kubectl json")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default().trim().to_string()
}

/// The address the agent must pick by default: the IPv4 address of the default route's device.
fn default_route_ip() -> String {
    let route = std::process::Command::new("ip").args(["-4", "route", "show", "default"]).output().expect("ip route");
    let route = String::from_utf8_lossy(&route.stdout);
    let dev = route.split_whitespace().skip_while(|w| *w != "dev").nth(1).expect("a default route").to_string();
    let addr = std::process::Command::new("ip").args(["-4", "-o", "addr", "show", "dev", &dev]).output().expect("ip addr");
    let addr = String::from_utf8_lossy(&addr.stdout);
    addr.split_whitespace().skip_while(|w| *w != "inet").nth(1).and_then(|a| a.split('/').next()).expect("an address").to_string()
}

fn condition<'a>(node: &'a Value, t: &str) -> &'a Value {
    node["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == t)).unwrap_or_else(|| panic!("no {t} condition: {node}"))
}

#[test]
fn node_registers_from_the_real_machine() {
    let s = with_agent(&[]);
    let name = read("/proc/sys/kernel/hostname").to_ascii_lowercase();
    let os_image = read("/etc/os-release").lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())).expect("PRETTY_NAME");
    let kernel = read("/proc/sys/kernel/osrelease");
    let ip = default_route_ip();
    let runtime = format!("strata://{}", env!("CARGO_PKG_VERSION"));
    let mut wide = String::new();
    let ready = eventually(Duration::from_secs(60), || {
        let out = s.kubectl(&["get", "nodes", "-o", "wide", "--no-headers"]);
        wide = String::from_utf8_lossy(&out.stdout).into_owned();
        wide.split_whitespace().nth(1) == Some("Ready")
    });
    assert!(ready, "the node never became Ready: {wide}\n{}", s.log());
    let header = s.ok(&["get", "nodes", "-o", "wide"]);
    let lines: Vec<&str> = header.lines().collect();
    assert_eq!(lines.len(), 2, "one node: {header}");
    let cols: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(cols, ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]);
    let row = lines[1];
    assert!(row.starts_with(&format!("{name} ")), "{row}");
    for want in ["Ready", "v1.32.0", ip.as_str(), "<none>", os_image.as_str(), kernel.as_str(), runtime.as_str()] {
        assert!(row.contains(want), "{want:?} missing from {row:?}");
    }

    let node = json(&s, &["get", "node", &name, "-o", "json"]);
    let cap = &node["status"]["capacity"];
    let cpus = std::thread::available_parallelism().expect("cpus").get().to_string();
    assert_eq!(cap["cpu"], cpus.as_str(), "{cap}");
    let mem_kib = read("/proc/meminfo").lines().find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().trim_end_matches(" kB").to_string())).expect("MemTotal");
    assert_eq!(cap["memory"], format!("{mem_kib}Ki").as_str());
    assert_eq!(cap["pods"], "110");
    assert!(cap["ephemeral-storage"].as_str().is_some_and(|v| v.ends_with("Ki") && v.len() > 3), "{cap}");
    let alloc = &node["status"]["allocatable"];
    let mem: u64 = mem_kib.parse().expect("kib");
    assert_eq!(alloc["memory"], format!("{}Ki", mem - 100 * 1024).as_str(), "100Mi hard eviction threshold left out: {alloc}");
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], name.as_str());
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["kubernetes.io/arch"], "amd64");
    assert_eq!(condition(&node, "Ready")["status"], "True");
    assert_eq!(condition(&node, "Ready")["reason"], "KubeletReady");
    for (t, reason) in [("MemoryPressure", "KubeletHasSufficientMemory"), ("PIDPressure", "KubeletHasSufficientPID")] {
        assert_eq!(condition(&node, t)["status"], "False", "{t}");
        assert_eq!(condition(&node, t)["reason"], reason, "{t}");
    }
    // DiskPressure as kubelet's nodefs.available<10% threshold says for the root's filesystem
    // (this machine's disk may well be that full).
    let df = std::process::Command::new("df").args(["--output=avail,size", "-B1"]).arg(s.root()).output().expect("df");
    let df = String::from_utf8_lossy(&df.stdout);
    let nums: Vec<u64> = df.lines().nth(1).expect("df line").split_whitespace().map(|n| n.parse().expect("number")).collect();
    let (pressure, reason) = if nums[0] * 100 < nums[1] * 10 { ("True", "KubeletHasDiskPressure") } else { ("False", "KubeletHasNoDiskPressure") };
    assert_eq!(condition(&node, "DiskPressure")["status"], pressure, "df: {df}");
    assert_eq!(condition(&node, "DiskPressure")["reason"], reason);
    let info = &node["status"]["nodeInfo"];
    assert_eq!(info["machineID"], read("/etc/machine-id").as_str());
    assert_eq!(info["bootID"], read("/proc/sys/kernel/random/boot_id").as_str());
    assert_eq!(info["operatingSystem"], "linux");
    assert_eq!(info["architecture"], "amd64");
    assert_eq!(info["kubeletVersion"], "v1.32.0");
    let addresses = node["status"]["addresses"].as_array().expect("addresses");
    assert!(addresses.iter().any(|a| a["type"] == "Hostname" && a["address"] == name.as_str()), "{addresses:?}");

    // The KVM label is the VM engine's probe verdict (cached in the root it probed for).
    let mut label = Value::Null;
    assert!(
        eventually(Duration::from_secs(60), || {
            label = json(&s, &["get", "node", &name, "-o", "json"])["metadata"]["labels"]["strata.dev/kvm"].clone();
            !label.is_null()
        }),
        "no strata.dev/kvm label: {}",
        s.log()
    );
    let verdict: Value = serde_json::from_str(&std::fs::read_to_string(s.root().join("vm-accel.json")).unwrap_or_else(|_| "{}".into())).expect("verdict");
    let expected = if verdict["decision"]["accel"] == "kvm" { "true" } else { "false" };
    assert_eq!(label, expected, "verdict {verdict}");
}

#[test]
fn lease_renews_and_status_is_written_only_on_change() {
    let name = format!("lease-node-{}", std::process::id());
    let s = with_agent(&["--node-name", &name, "--max-pods", "7", "--node-ip", "127.0.0.1"]);
    let mut lease = Value::Null;
    assert!(
        eventually(Duration::from_secs(60), || {
            let out = s.kubectl(&["get", "lease", "-n", "kube-node-lease", &name, "-o", "json"]);
            out.status.success() && {
                lease = serde_json::from_slice(&out.stdout).expect("lease json");
                true
            }
        }),
        "no lease: {}",
        s.log()
    );
    let node = json(&s, &["get", "node", &name, "-o", "json"]);
    assert_eq!(node["status"]["capacity"]["pods"], "7");
    assert_eq!(node["status"]["allocatable"]["pods"], "7");
    assert_eq!(node["status"]["addresses"][0], serde_json::json!({"type": "InternalIP", "address": "127.0.0.1"}));
    assert_eq!(lease["spec"]["holderIdentity"], name.as_str());
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
    assert_eq!(lease["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(lease["metadata"]["ownerReferences"][0]["uid"], node["metadata"]["uid"]);

    // Wait for the (once only) KVM label, then watch two renewals of the Lease while the Node
    // itself is not rewritten (nothing about it changed).
    assert!(eventually(Duration::from_secs(60), || !json(&s, &["get", "node", &name, "-o", "json"])["metadata"]["labels"]["strata.dev/kvm"].is_null()));
    std::thread::sleep(Duration::from_secs(1));
    let before = json(&s, &["get", "node", &name, "-o", "json"]);
    let first = json(&s, &["get", "lease", "-n", "kube-node-lease", &name, "-o", "json"])["spec"]["renewTime"].clone();
    let mut renewals = vec![first.clone()];
    assert!(
        eventually(Duration::from_secs(45), || {
            let t = json(&s, &["get", "lease", "-n", "kube-node-lease", &name, "-o", "json"])["spec"]["renewTime"].clone();
            if renewals.last() != Some(&t) {
                renewals.push(t);
            }
            renewals.len() >= 3
        }),
        "the lease was not renewed twice: {renewals:?}"
    );
    // Written again only if a reading really changed (this shared disk's free space can cross
    // the 10% DiskPressure line meanwhile): then the conditions say so.
    let after = json(&s, &["get", "node", &name, "-o", "json"]);
    if after["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"] {
        let states = |n: &Value| -> Vec<(String, String)> {
            n["status"]["conditions"].as_array().into_iter().flatten().map(|c| (c["type"].to_string(), c["status"].to_string())).collect()
        };
        assert_ne!(states(&before), states(&after), "node status rewritten without a change: {before} then {after}");
    }
}

#[test]
fn no_agent_registers_nothing() {
    let s = ApiServer::start(Backend::Embedded);
    std::thread::sleep(Duration::from_secs(5));
    let nodes = json(&s, &["get", "nodes", "-o", "json"]);
    assert_eq!(nodes["items"].as_array().map(Vec::len), Some(0), "{nodes}");
    let leases = json(&s, &["get", "leases", "-n", "kube-node-lease", "-o", "json"]);
    assert_eq!(leases["items"].as_array().map(Vec::len), Some(0), "{leases}");
    assert!(!s.root().join("agent").exists(), "the agent prepared its root");
}

#[test]
fn conditions_another_writer_changed_are_put_back() {
    // The node lifecycle controller sets a silent node's conditions Unknown; once the agent is
    // heard again (a partition healed) it must post Ready at its next status update, not only
    // at the 5-minute report.
    let name = format!("back-node-{}", std::process::id());
    let s = with_agent(&["--node-name", &name, "--node-ip", "127.0.0.1"]);
    let ready = || {
        let out = s.kubectl(&["get", "node", &name, "-o", r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(eventually(Duration::from_secs(60), || ready() == "True"), "{}", s.log());
    let unknown = r#"{"status":{"conditions":[{"type":"Ready","status":"Unknown","reason":"NodeStatusUnknown","message":"Kubelet stopped posting node status."}]}}"#;
    s.ok(&["patch", "node", &name, "--subresource=status", "--type=merge", "-p", unknown]);
    assert_eq!(ready(), "Unknown");
    assert!(eventually(Duration::from_secs(40), || ready() == "True"), "Ready stayed {}", ready());
}
