//! VirtualMachines (`strata.dev/v1`) through the control plane, end to end: the real `strata
//! server` and the real `kubectl`. The kind's validation, defaults, Table and OpenAPI schema;
//! then (with the node agent, the scheduler and the controllers) VMs run by the VM controller
//! through launcher pods on a real QEMU (TCG here).

mod common;

use common::server::{ApiServer, Backend, Options};
use serde_json::Value;

fn manifest(name: &str, spec: &str) -> String {
    format!("apiVersion: strata.dev/v1\nkind: VirtualMachine\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

/// Invalid VMs are refused with one clear cause per field (422, nothing stored); a valid one
/// gets its defaults; `kubectl get vm -o wide` prints the VM columns and `kubectl explain`
/// walks the typed schema.
#[test]
fn virtual_machines_are_validated_defaulted_printed_and_explained() {
    let s = ApiServer::start_opts(Backend::Embedded, Options::default());
    for (spec, want) in [
        ("  cpu: 1\n", "spec.boot: Required value: exactly one of kernel (a kernel and initrd on the node) or disk (a disk image) must be given"),
        ("  boot:\n    kernel: {path: /k}\n    disk: {path: /d.qcow2}\n", "spec.boot.disk: Forbidden: may not be specified together with spec.boot.kernel"),
        ("  memory: 16Mi\n  boot: {kernel: {path: /k}}\n", "spec.memory: Invalid value: \"16Mi\": must be at least 32Mi"),
        ("  runStrategy: Sometimes\n  boot: {kernel: {path: /k}}\n", "spec.runStrategy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"RerunOnFailure\", \"Once\", \"Halted\", \"Manual\""),
        ("  cpu: 0\n  boot: {kernel: {path: /k}}\n", "spec.cpu: Invalid value: 0: must be a whole number of virtual CPUs between 1 and 64"),
        ("  cpu: two\n  boot: {kernel: {path: /k}}\n", "spec.cpu: Invalid value: \"two\": must be a whole number of virtual CPUs between 1 and 64"),
        ("  boot: {kernel: {path: vmlinuz}}\n", "spec.boot.kernel.path: Invalid value: \"vmlinuz\": must be an absolute path on the node"),
    ] {
        let err = s.fails(&["apply", "-f", "-"], Some(&manifest("bad", spec)));
        assert!(err.contains("VirtualMachine \"bad\" is invalid") && err.contains(want), "want {want:?} for {spec:?}, got: {err}");
    }
    let (code, body) = s.curl("GET", "/apis/strata.dev/v1/namespaces/default/virtualmachines/bad", common::server::Auth::Admin, None, None);
    assert_eq!(code, 404, "nothing stored: {body}");

    s.ok_stdin(&["apply", "-f", "-"], Some(&manifest("demo", "  boot:\n    kernel: {path: /srv/vm/vmlinuz, initrd: /srv/vm/initrd.gz}\n")));
    let vm: Value = serde_json::from_str(&s.ok(&["get", "vm", "demo", "-o", "json"])).expect("json");
    let spec = &vm["spec"];
    assert_eq!((&spec["runStrategy"], &spec["cpu"], &spec["memory"], &spec["terminationGracePeriodSeconds"]), (&Value::from("Always"), &Value::from(1), &Value::from("256Mi"), &Value::from(30)), "{vm}");

    let wide = s.ok(&["get", "vm", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "NODE", "IP", "ACCELERATOR", "AGE", "RUN-STRATEGY", "CPU", "MEMORY", "RESTARTS"], "{wide}");
    let row: Vec<&str> = wide.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert_eq!((row[0], row[6], row[7], row[8], row[9]), ("demo", "Always", "1", "256Mi", "0"), "{wide}");
    let narrow = s.ok(&["get", "vm"]);
    assert!(narrow.starts_with("NAME") && narrow.lines().next().is_some_and(|h| h.trim_end().ends_with("AGE")), "{narrow}");

    let explained = s.ok(&["explain", "vm.spec"]);
    for field in ["runStrategy", "cpu", "memory", "boot", "cloudInit", "ports", "nodeSelector", "tolerations", "affinity", "terminationGracePeriodSeconds", "requireKvm"] {
        assert!(explained.contains(field), "explain vm.spec lists {field}: {explained}");
    }
    assert!(explained.contains("RerunOnFailure") && explained.contains("at least 32Mi"), "{explained}");
    let boot = s.ok(&["explain", "vm.spec.boot.kernel"]);
    assert!(boot.contains("initrd") && boot.contains("cmdline") && boot.contains("Absolute path of the kernel image"), "{boot}");
    // An unknown field is refused by kubectl's strict validation (the schema is closed).
    let err = s.fails(&["apply", "-f", "-"], Some(&manifest("typo", "  boot: {kernel: {path: /k}}\n  memroy: 1Gi\n")));
    assert!(err.contains("memroy"), "{err}");
}

// ---- VMs run by the VM controller through launcher pods, on the server's own node agent ----

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// TCG boots on a loaded 2-core machine are slow: generous, but bounded.
const BOOT: Duration = Duration::from_secs(180);

/// One VM test at a time (as tests/vms.rs): concurrent TCG guests starve each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn assets() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/vm-assets.sh");
        let out = Command::new("bash").arg(script).output().expect("run vm-assets.sh");
        assert!(out.status.success(), "vm-assets.sh: {}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// A kernel+initrd VM of the test guest (tests/vms.rs's): it configures the address from its
/// cloud-init seed, serves HTTP on port 80, powers off on the console line "poweroff" or the
/// ACPI power button. It tolerates the disk-pressure taint: the shared test machines' disks sit
/// near kubelet's 10% threshold, and the launcher pod gets the VM's tolerations.
fn kernel_vm(name: &str, strategy: &str) -> String {
    let a = assets();
    manifest(
        name,
        &format!(
            "  runStrategy: {strategy}\n  memory: 256Mi\n  terminationGracePeriodSeconds: 90\n  tolerations: [{{key: node.kubernetes.io/disk-pressure, operator: Exists, effect: NoSchedule}}]\n  boot:\n    kernel:\n      path: {}\n      initrd: {}\n      cmdline: console=ttyS0 earlyprintk=ttyS0 quiet panic=-1 tsc_early_khz=2000000 no_timer_check\n",
            a.join("vmlinuz").display(),
            a.join("initrd.gz").display()
        ),
    )
}

fn vm_server() -> ApiServer {
    ApiServer::start_opts(Backend::Embedded, Options { agent: true, scheduler: true, controllers: true, ..Options::default() })
}

fn get(s: &ApiServer, what: &str) -> Value {
    let out = s.kubectl(&["get", what, "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The node-side driver view of the server's VMs (`strata vm list -o json` on its root).
fn node_vms(s: &ApiServer) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_strata")).arg("--root").arg(s.root()).args(["vm", "list", "-o", "json"]).stdin(Stdio::null()).output().expect("vm list");
    serde_json::from_slice::<Value>(&out.stdout).ok().and_then(|v| v.as_array().cloned()).unwrap_or_default()
}

fn strata_on_node(s: &ApiServer, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strata")).arg("--root").arg(s.root()).args(args).stdin(Stdio::null()).output().expect("strata");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait until the VM is Running on a launcher pod newer than `after` (a pod name), and the
/// guest is up; returns (launcher pod, the node's VM record).
fn running(s: &ApiServer, vm: &str, after: Option<&str>) -> (Value, Value) {
    wait_for(&format!("VM {vm} Running after {after:?}: {}", get(s, &format!("vm/{vm}"))), BOOT, || {
        let v = get(s, &format!("vm/{vm}"));
        let st = &v["status"];
        let pod = st["launcherPod"].as_str()?;
        (st["printableStatus"] == "Running" && Some(pod) != after && st["ipAddress"].is_string()).then(|| pod.to_string())
    });
    let v = get(s, &format!("vm/{vm}"));
    let pod = get(s, &format!("pod/{}", v["status"]["launcherPod"].as_str().unwrap_or("")));
    let node_name = format!("pod-{}", pod["metadata"]["uid"].as_str().unwrap_or(""));
    let record = wait_for("the node's VM record", Duration::from_secs(10), || node_vms(s).into_iter().find(|r| r["name"] == node_name.as_str()).map(|r| r.to_string()));
    let record: Value = serde_json::from_str(&record).expect("record");
    wait_for("the guest to boot", BOOT, || strata_on_node(s, &["vm", "logs", &node_name]).contains("STRATA-GUEST-UP").then(String::new));
    (pod, record)
}

fn console_line(s: &ApiServer, node_vm: &str, line: &str) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--root")
        .arg(s.root())
        .args(["vm", "console", node_vm])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("console");
    c.stdin.take().expect("stdin").write_all(format!("{line}\n").as_bytes()).expect("write");
    std::thread::sleep(Duration::from_millis(500));
    let _ = c.kill();
    let _ = c.wait();
}

/// QEMU processes whose command line carries `-name NAME`.
fn qemu_processes(name: &str) -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { return false };
            let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
            args.first().is_some_and(|a| String::from_utf8_lossy(a).contains("qemu-system")) && args.windows(2).any(|w| w[0] == b"-name" && w[1] == name.as_bytes())
        })
        .count()
}

/// Nothing of the node's VM `record` is left: no QEMU, tap, address lease or VM directory.
fn assert_gone(s: &ApiServer, record: &Value) {
    let id = record["id"].as_str().expect("id").to_string();
    let name = record["name"].as_str().expect("name").to_string();
    wait_for(&format!("VM {name} to be removed from the node"), Duration::from_secs(120), || {
        let leased = std::fs::read_dir("/run/strata/ipam/strata").map(|d| d.flatten().any(|e| std::fs::read_to_string(e.path()).is_ok_and(|c| c.contains(&id)))).unwrap_or(false);
        (qemu_processes(&name) == 0 && !Path::new("/sys/class/net").join(format!("stv{}", &id[..12])).exists() && !leased && !s.root().join("vms").join(&id).exists()).then(String::new)
    });
}

fn http_get(ip: &str) -> String {
    use std::io::Read;
    let Ok(mut c) = std::net::TcpStream::connect_timeout(&format!("{ip}:80").parse().expect("addr"), Duration::from_secs(5)) else { return String::new() };
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = c.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut b = String::new();
    let _ = c.read_to_string(&mut b);
    b
}

/// runStrategy Always: the VM from kernel+initrd reaches Running on a launcher pod the
/// scheduler placed (requests: the guest's memory plus QEMU's overhead), its IP answers from the
/// node, `kubectl get vm -o wide` shows it; a guest power-off starts it again (a new launcher,
/// restartCount 1); Halted powers it off gracefully (the ACPI button: the guest's own
/// power-off) and leaves nothing; Always again boots it, a `kill -9` of the server and its agent
/// leaves it running and adopted, and deleting the VM leaves nothing.
#[test]
fn a_vm_runs_restarts_halts_and_goes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assets();
    let s = vm_server();
    s.ok_stdin(&["apply", "-f", "-"], Some(&kernel_vm("demo", "Always")));
    let (pod, record) = running(&s, "demo", None);
    let vm = get(&s, "vm/demo");
    let ip = vm["status"]["ipAddress"].as_str().expect("ip").to_string();
    assert_eq!(pod["status"]["podIP"], ip.as_str(), "the launcher's podIP is the guest's: {pod}");
    assert_eq!(record["ip"], ip.as_str(), "{record}");
    assert_eq!(vm["status"]["accelerator"], "tcg", "{vm}");
    assert!(vm["status"]["acceleratorReason"].as_str().is_some_and(|r| !r.is_empty()), "{vm}");
    assert_eq!(vm["status"]["nodeName"], pod["spec"]["nodeName"], "{vm}");
    assert_eq!(vm["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(vm["status"]["conditions"][0]["status"], "True", "{vm}");
    let owner = &pod["metadata"]["ownerReferences"][0];
    assert_eq!((owner["kind"].as_str(), owner["controller"].as_bool(), owner["uid"].as_str()), (Some("VirtualMachine"), Some(true), vm["metadata"]["uid"].as_str()));
    let requests = &pod["spec"]["containers"][0]["resources"]["requests"];
    let overhead = strata_controllers::virtualmachine::QEMU_OVERHEAD_BYTES >> 20;
    assert_eq!(requests["memory"], format!("{}Mi", 256 + overhead).as_str(), "{pod}");
    assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 90);
    let page = wait_for("the guest's HTTP server", Duration::from_secs(60), || Some(http_get(&ip)).filter(|b| b.contains("served by the strata test guest")));
    assert!(page.contains("200"), "{page}");
    let wide = s.ok(&["get", "vm", "demo", "-o", "wide"]);
    let row: Vec<&str> = wide.lines().nth(1).unwrap_or("").split_whitespace().collect();
    let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
    assert_eq!((row[1], row[2], row[3], row[4]), ("Running", node, ip.as_str(), "tcg"), "{wide}");

    // The guest powers itself off: Always starts it again on a new launcher.
    let first = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    console_line(&s, record["name"].as_str().unwrap_or(""), "poweroff");
    let (pod2, record2) = running(&s, "demo", Some(&first));
    assert_ne!(record2["id"], record["id"]);
    let vm = get(&s, "vm/demo");
    assert_eq!(vm["status"]["restartCount"], 1, "{vm}");
    assert_eq!(pod2["metadata"]["labels"]["strata.dev/vm-attempt"], "1", "{pod2}");
    assert_gone(&s, &record);
    wait_for("the replaced launcher to be deleted", Duration::from_secs(60), || (s.kubectl(&["get", "pod", &first]).status.code() == Some(1)).then(String::new));

    // Halted: the launcher is deleted, the node presses the power button and the guest powers
    // off by itself (well within the 90 s grace period).
    s.ok(&["patch", "vm", "demo", "--type", "merge", "-p", r#"{"spec":{"runStrategy":"Halted"}}"#]);
    wait_for("Stopped", BOOT, || (get(&s, "vm/demo")["status"]["printableStatus"] == "Stopped").then(String::new));
    assert_gone(&s, &record2);
    let pod2_name = pod2["metadata"]["name"].as_str().unwrap_or("").to_string();
    let events = wait_for("the PoweredOff event", Duration::from_secs(30), || {
        let e = s.ok(&["get", "events", "--field-selector", &format!("involvedObject.name={pod2_name}"), "-o", "json"]);
        e.contains("PoweredOff").then_some(e)
    });
    assert!(events.contains("after the ACPI power button") && !events.contains("ForcedOff"), "{events}");
    let pods = s.ok(&["get", "pods", "-l", "strata.dev/virtual-machine=demo", "-o", "name"]);
    assert!(pods.trim().is_empty(), "no launcher while Halted: {pods}");

    // Always again boots it; deleting the VM leaves nothing on the node.
    s.ok(&["patch", "vm", "demo", "--type", "merge", "-p", r#"{"spec":{"runStrategy":"Always"}}"#]);
    let (pod3, record3) = running(&s, "demo", Some(&pod2_name));

    // kill -9 of the server (and its agent): the VM keeps running and is adopted, not started
    // again.
    let mut s = s;
    s.restart(true);
    let node_vm = record3["name"].as_str().unwrap_or("").to_string();
    assert_eq!(qemu_processes(&node_vm), 1, "the VM outlived its agent");
    std::thread::sleep(Duration::from_secs(8));
    let vm = get(&s, "vm/demo");
    assert_eq!((vm["status"]["printableStatus"].as_str(), vm["status"]["launcherPod"].as_str()), (Some("Running"), pod3["metadata"]["name"].as_str()), "{vm}");
    assert_eq!(vm["status"]["restartCount"], 1, "{vm}");
    let now: Vec<Value> = node_vms(&s).into_iter().filter(|r| r["name"] == node_vm.as_str()).collect();
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!((now[0]["id"].as_str(), now[0]["state"].as_str()), (record3["id"].as_str(), Some("running")));
    assert_eq!(qemu_processes(&node_vm), 1, "adopted, not started twice");
    assert!(http_get(vm["status"]["ipAddress"].as_str().unwrap_or("")).contains("served by the strata test guest"));

    s.ok(&["delete", "vm", "demo", "--wait=false"]);
    assert_gone(&s, &record3);
    wait_for("the launcher pods to go", Duration::from_secs(60), || s.ok(&["get", "pods", "-l", "strata.dev/virtual-machine=demo", "-o", "name"]).trim().is_empty().then(String::new));
}

/// runStrategy RerunOnFailure: a crash (QEMU killed) starts the VM again; a clean guest
/// power-off does not (the VM stays Succeeded, no new launcher).
#[test]
fn rerun_on_failure_restarts_after_a_crash_only() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assets();
    let s = vm_server();
    s.ok_stdin(&["apply", "-f", "-"], Some(&kernel_vm("rerun", "RerunOnFailure")));
    let (pod, record) = running(&s, "rerun", None);
    let pid = record["pid"].as_i64().expect("QEMU's pid");
    let killed = Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill");
    assert!(killed.success());
    let first = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    let (pod2, record2) = running(&s, "rerun", Some(&first));
    assert_eq!(get(&s, "vm/rerun")["status"]["restartCount"], 1);
    assert_gone(&s, &record);

    console_line(&s, record2["name"].as_str().unwrap_or(""), "poweroff");
    let second = pod2["metadata"]["name"].as_str().unwrap_or("").to_string();
    wait_for("Succeeded", BOOT, || (get(&s, "vm/rerun")["status"]["printableStatus"] == "Succeeded").then(String::new));
    assert_gone(&s, &record2);
    std::thread::sleep(Duration::from_secs(5));
    let vm = get(&s, "vm/rerun");
    assert_eq!((vm["status"]["printableStatus"].as_str(), vm["status"]["launcherPod"].as_str(), vm["status"]["restartCount"].as_i64()), (Some("Succeeded"), Some(second.as_str()), Some(1)), "not started again: {vm}");
    let pods = s.ok(&["get", "pods", "-l", "strata.dev/virtual-machine=rerun", "-o", "name"]);
    assert_eq!(pods.trim(), format!("pod/{second}"), "{pods}");
    s.ok(&["delete", "vm", "rerun"]);
}
