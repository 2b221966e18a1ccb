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
        ("  boot: {disk: {image: \"reg.example/a b:1\"}}\n", "spec.boot.disk.image: Invalid value: \"reg.example/a b:1\": must be an image reference such as registry.example/disks/debian:12, without spaces"),
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

/// The VM's condition of type `t` (Null when it has none).
fn condition<'a>(vm: &'a Value, t: &str) -> &'a Value {
    vm["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == t)).unwrap_or(&Value::Null)
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
    // This guest runs no QEMU guest agent: AgentConnected False, no guest-reported fields.
    let vm = wait_for("AgentConnected False", BOOT, || {
        let v = get(&s, "vm/demo");
        (condition(&v, "AgentConnected")["status"] == "False").then(|| v.to_string())
    });
    let vm: Value = serde_json::from_str(&vm).expect("json");
    assert_eq!(condition(&vm, "AgentConnected")["reason"], "AgentNotConnected", "{vm}");
    assert!(condition(&vm, "AgentConnected")["message"].as_str().is_some_and(|m| m.contains("no QEMU guest agent answered")), "{vm}");
    for f in ["guestOSInfo", "guestHostname", "interfaces"] {
        assert!(vm["status"].get(f).is_none(), "status.{f} without a guest agent: {vm}");
    }

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

/// A VM of the test guest's kernel and initramfs told to run no init at all (`rdinit=` and
/// `init=` name nothing, no root disk): the kernel panics ("VFS: Unable to mount root fs").
/// `panic`: the kernel's `panic=` (-1 reboots at once, which `-no-reboot` turns into QEMU's exit
/// as after a power-off; 0 stays halted).
fn panicking_vm(name: &str, strategy: &str, panic: i32) -> String {
    let a = assets();
    manifest(
        name,
        &format!(
            "{DISK_PRESSURE}  runStrategy: {strategy}\n  memory: 256Mi\n  boot:\n    kernel:\n      path: {}\n      initrd: {}\n      cmdline: console=ttyS0 earlyprintk=ttyS0 panic={panic} tsc_early_khz=2000000 no_timer_check rdinit=/nonexistent init=/nonexistent\n",
            a.join("vmlinuz").display(),
            a.join("initrd.gz").display()
        ),
    )
}

const PANIC_LINE: &str = "Kernel panic - not syncing: VFS: Unable to mount root fs";

/// A guest whose kernel panics is a failure, not a power-off: with RerunOnFailure it is started
/// again, again and again with a back-off (CrashLoopBackOff saying why), restartCount growing;
/// each boot's panic is a Warning event `GuestPanicked` with the panic line on the VM (and its
/// launcher pod), and the VM's condition `GuestPanicked` carries the line (`kubectl describe
/// vm`). With Once it ends `GuestPanicked` (`kubectl get vm`'s STATUS), Failed, not started
/// again. A kernel that stays halted after its panic (`panic=0`) is stopped, not left running.
/// Nothing is left on the node after delete.
#[test]
fn a_guest_kernel_panic_is_a_failure_that_is_reported_and_restarted() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assets();
    let s = vm_server();
    s.ok_stdin(&["apply", "-f", "-"], Some(&panicking_vm("panicky", "RerunOnFailure", -1)));
    s.ok_stdin(&["apply", "-f", "-"], Some(&panicking_vm("halts", "Once", 0)));

    // RerunOnFailure: restarted after each panic, then backing off.
    let msg = trouble(&s, "panicky", "CrashLoopBackOff", BOOT);
    assert!(msg.contains(PANIC_LINE), "CrashLoopBackOff says why: {msg}");
    wait_warning(&s, "VirtualMachine", "panicky", "GuestPanicked", PANIC_LINE);
    let vm = wait_for("restartCount 2", BOOT, || {
        let v = get(&s, "vm/panicky");
        (v["status"]["restartCount"].as_i64() >= Some(2)).then(|| v.to_string())
    });
    let vm: Value = serde_json::from_str(&vm).expect("json");
    let c = condition(&vm, "GuestPanicked");
    assert_eq!((c["status"].as_str(), c["reason"].as_str()), (Some("True"), Some("GuestPanicked")), "{vm}");
    assert!(c["message"].as_str().is_some_and(|m| m.contains(PANIC_LINE)), "{vm}");
    let panics = warnings(&s, "VirtualMachine", "panicky").into_iter().filter(|(r, _)| r == "GuestPanicked").count();
    assert!(panics >= 2, "one GuestPanicked event per boot: {:?}", warnings(&s, "VirtualMachine", "panicky"));
    let described = s.ok(&["describe", "vm", "panicky"]);
    assert!(described.contains("GuestPanicked") && described.contains(PANIC_LINE), "{described}");
    let wide = s.ok(&["get", "vm", "panicky", "-o", "wide"]);
    let row: Vec<&str> = wide.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert!(row.last().and_then(|r| r.parse::<i64>().ok()) >= Some(2), "RESTARTS: {wide}");

    // Once, panic=0: the halted kernel's QEMU is stopped; the VM ends GuestPanicked.
    let msg = trouble(&s, "halts", "GuestPanicked", BOOT);
    assert!(msg.contains(PANIC_LINE), "{msg}");
    let vm = get(&s, "vm/halts");
    assert_eq!((vm["status"]["phase"].as_str(), vm["status"]["restartCount"].as_i64()), (Some("Failed"), Some(0)), "{vm}");
    let launcher = vm["status"]["launcherPod"].as_str().unwrap_or("").to_string();
    let pod = get(&s, &format!("pod/{launcher}"));
    let t = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!((pod["status"]["phase"].as_str(), t["reason"].as_str()), (Some("Failed"), Some("GuestPanicked")), "{pod}");
    assert!(t["message"].as_str().is_some_and(|m| m.contains(PANIC_LINE)), "{pod}");
    wait_warning(&s, "Pod", &launcher, "GuestPanicked", PANIC_LINE);
    let table = s.ok(&["get", "vm", "halts"]);
    assert_eq!(table.lines().nth(1).unwrap_or("").split_whitespace().nth(1), Some("GuestPanicked"), "{table}");
    std::thread::sleep(Duration::from_secs(5));
    let vm = get(&s, "vm/halts");
    assert_eq!((vm["status"]["launcherPod"].as_str(), vm["status"]["printableStatus"].as_str()), (Some(launcher.as_str()), Some("GuestPanicked")), "not started again: {vm}");
    let node_name = format!("pod-{}", pod["metadata"]["uid"].as_str().unwrap_or(""));
    wait_for("the halted guest's QEMU to be gone", Duration::from_secs(60), || (qemu_processes(&node_name) == 0).then(String::new));

    for vm in ["panicky", "halts"] {
        s.ok(&["delete", "vm", vm, "--wait=false"]);
    }
    wait_for(&format!("nothing left on the node: {:?}", node_vms(&s)), Duration::from_secs(120), || node_vms(&s).is_empty().then(String::new));
    let pods = wait_for("the launcher pods to go", Duration::from_secs(60), || {
        let p = s.ok(&["get", "pods", "-l", "strata.dev/virtual-machine", "-o", "name"]);
        p.trim().is_empty().then_some(p)
    });
    assert!(pods.trim().is_empty());
}

// ---- VMs from disk images, with cloud-init ----

/// A VM booting the test guest's disk image (SeaBIOS + SYSLINUX on q35, tests/vms.rs's
/// `disk.qcow2`) with the cloud-init given as `cloud_init` (YAML under `cloudInit:`); the guest
/// serves HTTP on port 80, listed in spec.ports.
fn disk_vm(name: &str, disk: &str, cloud_init: &str) -> String {
    manifest(name, &format!("{DISK_PRESSURE}  memory: 256Mi\n  ports: [{{containerPort: 80, name: http}}]\n  boot:\n    disk: {disk}\n  cloudInit:\n{cloud_init}"))
}

/// The VM is Running on the node with the status a user reads (node, IP, accelerator and why,
/// Ready), its guest answers HTTP on its IP from the node, and its console shows `user_data_line`
/// (the guest prints each user-data line of its NoCloud seed); returns the node's VM record.
fn boots_with_seed(s: &ApiServer, vm: &str, user_data_line: &str) -> (Value, Value) {
    let (pod, record) = running(s, vm, None);
    let v = get(s, &format!("vm/{vm}"));
    let st = &v["status"];
    let ip = st["ipAddress"].as_str().expect("ip").to_string();
    assert_eq!((st["nodeName"].as_str(), pod["status"]["podIP"].as_str(), record["ip"].as_str()), (pod["spec"]["nodeName"].as_str(), Some(ip.as_str()), Some(ip.as_str())), "{v}");
    assert_eq!(st["accelerator"], "tcg", "{v}");
    assert!(st["acceleratorReason"].as_str().is_some_and(|r| !r.is_empty()), "{v}");
    let ready = st["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready").cloned().unwrap_or(Value::Null);
    assert_eq!(ready["status"], "True", "{v}");
    // The guest takes its address from the seed's network-config (without one it would sit at
    // 10.0.2.15): its answer from the node proves the seed reached it.
    let page = wait_for(&format!("the guest's HTTP server at {ip}"), Duration::from_secs(60), || Some(http_get(&ip)).filter(|b| b.contains("served by the strata test guest")));
    assert!(page.contains("200"), "{page}");
    let launcher = pod["metadata"]["name"].as_str().expect("launcher").to_string();
    wait_for(&format!("SEED-USERDATA {user_data_line} in the launcher's log"), Duration::from_secs(30), || {
        s.ok(&["logs", &launcher]).contains(&format!("SEED-USERDATA {user_data_line}")).then(String::new)
    });
    (pod, record)
}

/// A VirtualMachine from a qcow2 disk with cloud-init through kubectl: first with inline
/// `cloudInit.userData`, then with `cloudInit.secretRef` (the node agent reads the Secret with its
/// own node credentials: the Node authorizer lets a node read a Secret only while a pod bound to
/// it, here the launcher, references it). Each reaches Running with its status filled, answers
/// from the node on its IP, shows its user-data, and `kubectl delete` leaves no QEMU, tap, lease
/// or overlay on the node.
#[test]
fn a_vm_boots_a_disk_with_cloud_init_inline_and_from_a_secret() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let a = assets();
    let disk = format!("{{path: {}}}", a.join("disk.qcow2").display());
    let s = vm_server();

    s.ok_stdin(&["apply", "-f", "-"], Some(&disk_vm("inline", &disk, "    userData: |\n      #cloud-config\n      # strata-inline-marker\n")));
    let (_, record) = boots_with_seed(&s, "inline", "# strata-inline-marker");
    // Paused on the node (its vCPUs stopped): the VM says so (printableStatus and condition
    // Paused, not Ready) and its guest answers nothing; resumed, it is Running and answers again.
    let node_vm = record["name"].as_str().unwrap_or("").to_string();
    strata_on_node(&s, &["vm", "pause", &node_vm]);
    // Ready and Paused (this guest runs no QEMU guest agent: AgentConnected is False throughout).
    let conds = |v: &Value| v["status"]["conditions"].as_array().into_iter().flatten().filter(|c| c["type"] != "AgentConnected").map(|c| format!("{}={}/{}", c["type"].as_str().unwrap_or(""), c["status"].as_str().unwrap_or(""), c["reason"].as_str().unwrap_or(""))).collect::<Vec<_>>();
    wait_for(&format!("VM inline Paused: {}", get(&s, "vm/inline")), Duration::from_secs(60), || {
        let v = get(&s, "vm/inline");
        (v["status"]["printableStatus"] == "Paused" && conds(&v) == ["Ready=False/Paused", "Paused=True/Paused"]).then(String::new)
    });
    let ip = get(&s, "vm/inline")["status"]["ipAddress"].as_str().unwrap_or("").to_string();
    assert!(!http_get(&ip).contains("served by the strata test guest"), "a paused guest answered");
    strata_on_node(&s, &["vm", "resume", &node_vm]);
    wait_for(&format!("VM inline Running again: {}", get(&s, "vm/inline")), Duration::from_secs(60), || {
        let v = get(&s, "vm/inline");
        (v["status"]["printableStatus"] == "Running" && conds(&v) == ["Ready=True/Running"]).then(String::new)
    });
    assert!(wait_for("the resumed guest's answer", Duration::from_secs(30), || Some(http_get(&ip)).filter(|b| b.contains("served by the strata test guest"))).contains("200"));
    s.ok(&["delete", "vm", "inline"]);
    assert_gone(&s, &record);

    let tmp = tempfile::tempdir().expect("tmp");
    s.ok_stdin(&["apply", "-f", "-"], Some("apiVersion: v1\nkind: Secret\nmetadata:\n  name: seed\nstringData:\n  userdata: |\n    #cloud-config\n    # strata-secret-marker\n"));
    s.ok_stdin(&["apply", "-f", "-"], Some("apiVersion: v1\nkind: Secret\nmetadata:\n  name: unrelated\nstringData:\n  userdata: nothing\n"));
    s.ok_stdin(&["apply", "-f", "-"], Some(&disk_vm("fromsecret", &disk, "    secretRef: {name: seed}\n")));
    let (pod, record) = boots_with_seed(&s, "fromsecret", "# strata-secret-marker");
    // What the node may read: the Secret its launcher pod uses, not another.
    let node = pod["spec"]["nodeName"].as_str().expect("node").to_string();
    let (key, crt) = s.node_cert(tmp.path(), &node);
    let as_node = |name: &str| s.curl("GET", &format!("/api/v1/namespaces/default/secrets/{name}"), common::server::Auth::Cert(&key, &crt), None, None);
    let (code, body) = as_node("seed");
    assert_eq!(code, 200, "{body}");
    let (code, body) = as_node("unrelated");
    assert_eq!(code, 403, "{body}");
    s.ok(&["delete", "vm", "fromsecret"]);
    assert_gone(&s, &record);
    wait_for("the node to lose the Secret once no pod of it uses it", Duration::from_secs(60), || (as_node("seed").0 == 403).then(String::new));
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// `boot.disk.image` (KubeVirt's containerDisk): the test guest's qcow2 in an OCI image (one
/// layer, `/disk/guest.qcow2`, owned by 107 as KubeVirt builds them) in a real local registry,
/// pulled by the node through its image store. The VM boots from the pulled file as its read-only
/// base (never written: its sha256 is unchanged), with cloud-init, answers on its IP and goes
/// without a trace; an image with no disk in `/disk` and an image that does not exist are
/// `VMCreateError`s that say so.
#[test]
fn a_vm_boots_a_container_disk_pulled_from_a_registry() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let a = assets();
    let qcow2 = std::fs::read(a.join("disk.qcow2")).expect("disk.qcow2");
    let layer = strata_testkit::tar_gz(|b| {
        let mut h = strata_testkit::header(tar::EntryType::Directory, 0o555, 107, 107, 0);
        b.append_data(&mut h, "disk", std::io::empty()).expect("dir");
        let mut h = strata_testkit::header(tar::EntryType::Regular, 0o444, 107, 107, qcow2.len() as u64);
        b.append_data(&mut h, "disk/guest.qcow2", qcow2.as_slice()).expect("file");
    });
    let reg = strata_testkit::Registry::start();
    reg.push(&strata_testkit::image_from_layers(vec![layer], &[]), "vmdisks/guest", "v1");
    reg.push(&strata_testkit::busybox_image(), "vmdisks/busybox", "v1");
    let image = format!("{}/vmdisks/guest:v1", reg.addr);
    let s = vm_server();

    s.ok_stdin(&["apply", "-f", "-"], Some(&disk_vm("cdisk", &format!("{{image: {image}}}"), "    userData: |\n      #cloud-config\n      # strata-containerdisk\n")));
    let (pod, record) = boots_with_seed(&s, "cdisk", "# strata-containerdisk");
    let base = PathBuf::from(record["image"].as_str().unwrap_or_default());
    assert!(base.starts_with(s.root().join("images")) && base.ends_with("disk/guest.qcow2"), "the base is the pulled file in the node's image store: {record}");
    let launcher = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    let events = s.ok(&["get", "events", "--field-selector", &format!("involvedObject.name={launcher}"), "-o", "json"]);
    assert!(events.contains(&format!("Successfully pulled image \\\"{image}\\\"")), "{events}");
    s.ok(&["delete", "vm", "cdisk"]);
    assert_gone(&s, &record);
    assert_eq!(sha256_of(&base), sha256_of(&a.join("disk.qcow2")), "the pulled base was never written");

    s.ok_stdin(&["apply", "-f", "-"], Some(&disk_vm("notadisk", &format!("{{image: {}/vmdisks/busybox:v1}}", reg.addr), "    userData: x\n")));
    s.ok_stdin(&["apply", "-f", "-"], Some(&disk_vm("missing", &format!("{{image: {}/vmdisks/nothing:v1}}", reg.addr), "    userData: x\n")));
    let msg = trouble(&s, "notadisk", "VMCreateError", Duration::from_secs(120));
    assert!(msg.contains(&format!("image {}/vmdisks/busybox:v1 has no disk image in /disk", reg.addr)), "{msg}");
    let msg = trouble(&s, "missing", "VMCreateError", Duration::from_secs(120));
    assert!(msg.contains(&format!("pulling disk image {}/vmdisks/nothing:v1", reg.addr)), "{msg}");
    for vm in ["notadisk", "missing"] {
        s.ok(&["delete", "vm", vm]);
    }
    wait_for(&format!("nothing left on the node: {:?}", node_vms(&s)), Duration::from_secs(120), || node_vms(&s).is_empty().then(String::new));
}

// ---- The serial console through the API server (`virtualmachines/console`) ----

type TlsWs = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Open `virtualmachines/<vm>/console` over WebSocket as the admin (client certificate) or with
/// a bearer token, offering the plain console subprotocol. Ok: the chosen subprotocol and the
/// socket; Err: the refusal's HTTP status and body.
async fn ws_console(s: &ApiServer, ns: &str, vm: &str, token: Option<&str>) -> Result<(String, TlsWs), (u16, String)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let pki = s.data_dir().join("pki");
    let read = |n: &str| std::fs::read(pki.join(n)).expect("pki file");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut read("ca.crt").as_slice()) {
        roots.add(c.expect("ca")).expect("add ca");
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut cfg = match token {
        Some(_) => builder.with_no_client_auth(),
        None => {
            let certs: Vec<_> = rustls_pemfile::certs(&mut read("admin.crt").as_slice()).map(|c| c.expect("cert")).collect();
            let key = rustls_pemfile::private_key(&mut read("admin.key").as_slice()).expect("key").expect("key present");
            builder.with_client_auth_cert(certs, key).expect("client auth")
        }
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port)).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(name, tcp).await.expect("tls");
    let url = format!("wss://127.0.0.1:{}/apis/strata.dev/v1/namespaces/{ns}/virtualmachines/{vm}/console", s.port);
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert("sec-websocket-protocol", "plain.strata.dev".parse().expect("header"));
    if let Some(t) = token {
        req.headers_mut().insert("authorization", format!("Bearer {t}").parse().expect("header"));
    }
    match tokio_tungstenite::client_async(req, tls).await {
        Ok((ws, resp)) => {
            let p = resp.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            Ok((p, ws))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            let body = r.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            Err((r.status().as_u16(), body))
        }
        Err(e) => Err((0, e.to_string())),
    }
}

/// Read binary messages until their bytes contain `want` (all text read is returned).
async fn ws_read_until(ws: &mut TlsWs, want: &str, timeout: Duration) -> String {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !String::from_utf8_lossy(&seen).contains(want) {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => seen.extend_from_slice(&b),
            Ok(Some(Ok(Message::Text(t)))) => panic!("the console sends binary messages, got text {t:?}"),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("console read: {e}; seen {:?}", String::from_utf8_lossy(&seen)),
            Ok(None) => panic!("the console closed before {want:?}; seen {:?}", String::from_utf8_lossy(&seen)),
            Err(_) => panic!("no {want:?} on the console in {timeout:?}; seen {:?}", String::from_utf8_lossy(&seen)),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// `strata console` as the server's admin (its kubeconfig), stdin and stdout piped.
fn strata_console(s: &ApiServer, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("console")
        .args(args)
        .env("KUBECONFIG", s.kubeconfig())
        .env_remove("HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strata console")
}

/// Read `child`'s stdout on a thread until it holds `want`; the text read.
fn read_until(out: std::process::ChildStdout, want: &str, timeout: Duration) -> Result<String, String> {
    use std::io::Read;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = out;
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(b) => seen.extend_from_slice(&b),
            Err(_) => return Err(String::from_utf8_lossy(&seen).into_owned()),
        }
    }
    Ok(String::from_utf8_lossy(&seen).into_owned())
}

/// A child's exit within `limit` (killed after it), with its stderr.
fn finish(mut c: std::process::Child, limit: Duration) -> (Option<i32>, String) {
    use std::io::Read;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = c.try_wait().expect("wait") {
            break st.code();
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = c.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status, err)
}

/// The serial console through the API server: a WebSocket (`plain.strata.dev`, binary messages
/// of raw bytes both ways) shows the guest's output and carries input to it; `strata console`
/// does the same through pipes and through a terminal (Ctrl-] detaches); `kubectl logs` of the
/// launcher pod is the captured serial output, and so is `virtualmachines/log` (`kubectl get
/// --raw`, `strata logs vm/NAME`; view may read it). RBAC: `get` on `virtualmachines/console`, which
/// `edit` has (aggregated) and `view` has not (403). A Halted VM's console is a clear 409.
#[test]
fn the_console_through_the_api_server_shows_output_carries_input_and_is_authorized() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assets();
    let tokens_dir = tempfile::tempdir().expect("tmp");
    let tokens = tokens_dir.path().join("tokens.csv");
    std::fs::write(&tokens, "viewer-token,viewer,3001\neditor-token,editor,3002\n").expect("tokens");
    let s = ApiServer::start_opts(
        Backend::Embedded,
        Options { agent: true, scheduler: true, controllers: true, extra: vec!["--token-file".into(), tokens.display().to_string()], ..Options::default() },
    );
    s.ok(&["create", "rolebinding", "viewer", "--clusterrole=view", "--user=viewer"]);
    s.ok(&["create", "rolebinding", "editor", "--clusterrole=edit", "--user=editor"]);
    s.ok_stdin(&["apply", "-f", "-"], Some(&kernel_vm("con", "Always")));
    let (pod, _record) = running(&s, "con", None);
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    // The admin's WebSocket: input in, the guest's answer out.
    rt.block_on(async {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let (protocol, mut ws) = ws_console(&s, "default", "con", None).await.unwrap_or_else(|e| panic!("console refused: {e:?}"));
        assert_eq!(protocol, "plain.strata.dev");
        ws.send(Message::Binary(b"hello-console\n".to_vec().into())).await.expect("send");
        ws_read_until(&mut ws, "GOT: hello-console", Duration::from_secs(60)).await;
        let _ = ws.close(None).await;
    });

    // RBAC: view may read the VM but not open its console; edit (aggregated) may.
    s.ok(&["get", "vm", "con", "--token", "viewer-token", "--kubeconfig", "/dev/null", "--server", &s.url(), "--certificate-authority", &s.data_dir().join("pki/ca.crt").display().to_string()]);
    let refused = rt.block_on(ws_console(&s, "default", "con", Some("viewer-token"))).err().expect("viewer refused");
    assert_eq!(refused.0, 403, "{refused:?}");
    assert!(refused.1.contains(r#"cannot get resource \"virtualmachines/console\" in API group \"strata.dev\""#), "{refused:?}");
    rt.block_on(async {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let (_, mut ws) = ws_console(&s, "default", "con", Some("editor-token")).await.unwrap_or_else(|e| panic!("editor refused: {e:?}"));
        ws.send(Message::Binary(b"from-editor\n".to_vec().into())).await.expect("send");
        ws_read_until(&mut ws, "GOT: from-editor", Duration::from_secs(60)).await;
    });

    // `strata console` through pipes (no terminal: no detach key; killed once seen).
    let mut c = strata_console(&s, &["vm/con"]);
    c.stdin.as_mut().expect("stdin").write_all(b"via-pipe\n").expect("write");
    let seen = read_until(c.stdout.take().expect("stdout"), "GOT: via-pipe", Duration::from_secs(60));
    let _ = c.kill();
    let (_, err) = finish(c, Duration::from_secs(10));
    assert!(seen.is_ok(), "strata console: {seen:?} {err}");

    // Through a terminal: raw mode (a carriage return reaches the guest as typed), Ctrl-] detaches
    // with exit code 0.
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = std::fs::File::from(pty.slave);
    let mut term = Command::new(env!("CARGO_BIN_EXE_strata"));
    term.args(["console", "vm/con", "-n", "default"]).env("KUBECONFIG", s.kubeconfig());
    term.stdin(slave.try_clone().expect("fd")).stdout(slave.try_clone().expect("fd")).stderr(slave);
    let mut child = term.spawn().expect("strata console on a terminal");
    let mut master = std::fs::File::from(pty.master);
    let reader = master.try_clone().expect("fd");
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut r = reader;
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut screen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = false;
    while !String::from_utf8_lossy(&screen).contains("GOT: via-tty") {
        assert!(Instant::now() < deadline, "no answer on the terminal: {:?}", String::from_utf8_lossy(&screen));
        if !sent && String::from_utf8_lossy(&screen).contains("detach with Ctrl-]") {
            master.write_all(b"via-tty\r").expect("type");
            sent = true;
        }
        if let Ok(b) = rx.recv_timeout(Duration::from_millis(200)) {
            screen.extend_from_slice(&b);
        }
    }
    master.write_all(&[0x1d]).expect("Ctrl-]");
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("Ctrl-] did not detach: {:?}", String::from_utf8_lossy(&screen));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0), "{:?}", String::from_utf8_lossy(&screen));

    // The captured serial console is the launcher pod's log.
    let launcher = pod["metadata"]["name"].as_str().expect("launcher").to_string();
    let logs = s.ok(&["logs", &launcher]);
    assert!(logs.contains("STRATA-GUEST-UP") && logs.contains("GOT: hello-console") && logs.contains("GOT: via-pipe"), "{logs}");
    // And the VM's own `virtualmachines/log`: raw, through `strata logs vm/NAME`, and for view.
    let log_path = "/apis/strata.dev/v1/namespaces/default/virtualmachines/con/log";
    let raw = s.ok(&["get", "--raw", &format!("{log_path}?tailLines=1000")]);
    assert!(raw.contains("GOT: hello-console") && raw.contains("GOT: via-tty"), "{raw}");
    let out = Command::new(env!("CARGO_BIN_EXE_strata")).args(["logs", "vm/con", "--namespace", "default"]).env("KUBECONFIG", s.kubeconfig()).stdin(Stdio::null()).output().expect("strata logs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("STRATA-GUEST-UP") && text.contains("GOT: from-editor"), "{text} {}", String::from_utf8_lossy(&out.stderr));
    let (code, body) = s.curl("GET", log_path, common::server::Auth::Token("viewer-token"), None, None);
    assert!(code == 200 && body.contains("GOT: hello-console"), "{code} {body}");

    // A VM that does not exist, and a Halted one: clear errors, no hang.
    let (code, err) = finish(strata_console(&s, &["vm/nope"]), Duration::from_secs(30));
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains(r#"virtualmachines.strata.dev "nope" not found"#), "{err}");
    s.ok(&["patch", "vm", "con", "--type", "merge", "-p", r#"{"spec":{"runStrategy":"Halted"}}"#]);
    wait_for("Stopped", BOOT, || (get(&s, "vm/con")["status"]["printableStatus"] == "Stopped").then(String::new));
    let refused = rt.block_on(ws_console(&s, "default", "con", None)).err().expect("a Halted VM's console is refused");
    assert_eq!(refused.0, 409, "{refused:?}");
    assert!(refused.1.contains("VirtualMachine con is not running") && refused.1.contains("runStrategy is Halted"), "{refused:?}");
    let (code, err) = finish(strata_console(&s, &["vm/con"]), Duration::from_secs(30));
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("VirtualMachine con is not running"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_strata")).args(["logs", "vm/con"]).env("KUBECONFIG", s.kubeconfig()).stdin(Stdio::null()).output().expect("strata logs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("VirtualMachine con is not running"), "{err}");
    s.ok(&["delete", "vm", "con"]);
}

// ---- Bad input for VMs in the control plane ----

const DISK_PRESSURE: &str = "  tolerations: [{key: node.kubernetes.io/disk-pressure, operator: Exists, effect: NoSchedule}]\n";

/// Wait until VM `vm`'s printableStatus is `want`; its Ready condition's message.
fn trouble(s: &ApiServer, vm: &str, want: &str, timeout: Duration) -> String {
    wait_for(&format!("VM {vm} {want}: {}", get(s, &format!("vm/{vm}"))), timeout, || {
        let v = get(s, &format!("vm/{vm}"));
        let ready = v["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready").cloned().unwrap_or(Value::Null);
        (v["status"]["printableStatus"] == want && ready["status"] == "False" && ready["reason"] == want).then(|| ready["message"].as_str().unwrap_or("").to_string())
    })
}

/// The Warning events about object `kind/name`: (reason, message) pairs.
fn warnings(s: &ApiServer, kind: &str, name: &str) -> Vec<(String, String)> {
    let e: Value = serde_json::from_str(&s.ok(&["get", "events", "--field-selector", &format!("involvedObject.name={name}"), "-o", "json"])).unwrap_or(Value::Null);
    e["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["kind"] == kind && e["type"] == "Warning")
        .map(|e| (e["reason"].as_str().unwrap_or("").to_string(), e["message"].as_str().unwrap_or("").to_string()))
        .collect()
}

fn wait_warning(s: &ApiServer, kind: &str, name: &str, reason: &str, says: &str) {
    wait_for(&format!("a Warning {reason} on {kind} {name} saying {says:?}: {:?}", warnings(s, kind, name)), Duration::from_secs(60), || {
        warnings(s, kind, name).iter().any(|(r, m)| r == reason && m.contains(says)).then(String::new)
    });
}

/// A missing disk image, a disk image that is not a file or not a disk, and QEMU missing on the node are
/// `VMCreateError` (the Ready condition's message says what; a Warning event on the VM and on its
/// launcher pod); a kernel that writes nothing to the serial console within the node's boot
/// timeout (`--vm-boot-timeout`) is `NoConsoleOutput` (the same); deleted, they leave nothing on
/// the node.
#[test]
fn bad_vm_input_is_a_clear_status_condition_and_event() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let a = assets();
    let s = ApiServer::start_opts(
        Backend::Embedded,
        Options { agent: true, scheduler: true, controllers: true, extra: vec!["--vm-boot-timeout".into(), "15".into()], ..Options::default() },
    );
    s.ok_stdin(&["apply", "-f", "-"], Some(&manifest("nodisk", &format!("{DISK_PRESSURE}  boot:\n    disk: {{path: /nonexistent/disk.qcow2}}\n"))));
    s.ok_stdin(&["apply", "-f", "-"], Some(&manifest("dirdisk", &format!("{DISK_PRESSURE}  boot:\n    disk: {{path: {}}}\n", a.display()))));
    // A file that is no disk image (qemu-img calls it raw; firmware could not boot it).
    let junk = s.data_dir().join("junk.img");
    std::fs::write(&junk, vec![b'x'; 4096]).expect("junk");
    s.ok_stdin(&["apply", "-f", "-"], Some(&manifest("junkdisk", &format!("{DISK_PRESSURE}  boot:\n    disk: {{path: {}}}\n", junk.display()))));
    // The test guest's kernel told to use the screen only: nothing ever reaches the serial line.
    let silent = format!(
        "{DISK_PRESSURE}  memory: 256Mi\n  boot:\n    kernel:\n      path: {}\n      initrd: {}\n      cmdline: console=tty0 quiet panic=-1\n",
        a.join("vmlinuz").display(),
        a.join("initrd.gz").display()
    );
    s.ok_stdin(&["apply", "-f", "-"], Some(&manifest("silent", &silent)));

    let msg = trouble(&s, "nodisk", "VMCreateError", Duration::from_secs(120));
    assert!(msg.contains("disk image /nonexistent/disk.qcow2: No such file or directory"), "{msg}");
    wait_warning(&s, "VirtualMachine", "nodisk", "VMCreateError", "disk image /nonexistent/disk.qcow2");
    let launcher = get(&s, "vm/nodisk")["status"]["launcherPod"].as_str().unwrap_or("").to_string();
    wait_warning(&s, "Pod", &launcher, "Failed", "disk image /nonexistent/disk.qcow2");
    let msg = trouble(&s, "dirdisk", "VMCreateError", Duration::from_secs(120));
    assert!(msg.contains(&format!("disk image {}: not a regular file", a.display())), "{msg}");
    let msg = trouble(&s, "junkdisk", "VMCreateError", Duration::from_secs(120));
    assert!(msg.contains(&format!("disk image {}: not a bootable disk image: a raw image without a boot sector", junk.display())), "{msg}");

    let msg = trouble(&s, "silent", "NoConsoleOutput", BOOT);
    assert!(msg.contains("no output on the serial console 15 s after the VM started: the guest did not boot"), "{msg}");
    wait_warning(&s, "VirtualMachine", "silent", "NoConsoleOutput", "no output on the serial console");
    let launcher = get(&s, "vm/silent")["status"]["launcherPod"].as_str().unwrap_or("").to_string();
    let pod = get(&s, &format!("pod/{launcher}"));
    let cond = pod["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "strata.dev/ConsoleOutput").cloned().unwrap_or(Value::Null);
    assert_eq!((cond["status"].as_str(), cond["reason"].as_str()), (Some("False"), Some("NoConsoleOutput")), "{pod}");
    wait_warning(&s, "Pod", &launcher, "NoConsoleOutput", "no output on the serial console");

    for vm in ["nodisk", "dirdisk", "junkdisk", "silent"] {
        s.ok(&["delete", "vm", vm, "--wait=false"]);
    }
    wait_for(&format!("nothing left on the node: {:?}", node_vms(&s)), Duration::from_secs(120), || node_vms(&s).is_empty().then(String::new));

    // QEMU missing on the node.
    let s2 = ApiServer::start_opts(
        Backend::Embedded,
        Options { agent: true, scheduler: true, controllers: true, env: vec![("STRATA_QEMU".into(), "/nonexistent/qemu-system-x86_64".into())], ..Options::default() },
    );
    s2.ok_stdin(&["apply", "-f", "-"], Some(&kernel_vm("noqemu", "Always")));
    let msg = trouble(&s2, "noqemu", "VMCreateError", Duration::from_secs(120));
    assert!(msg.contains("QEMU binary /nonexistent/qemu-system-x86_64 not found"), "{msg}");
    wait_warning(&s2, "VirtualMachine", "noqemu", "VMCreateError", "QEMU binary /nonexistent/qemu-system-x86_64 not found");
    s2.ok(&["delete", "vm", "noqemu"]);
    assert!(node_vms(&s2).is_empty(), "{:?}", node_vms(&s2));
}

/// A containerDisk in a registry that wants credentials: without any the pull fails
/// (`VMCreateError` saying so); the VM's `imagePullSecrets` authenticate it; a VM without them
/// uses its namespace's default ServiceAccount's (which the ServiceAccount admission copies into
/// the launcher pod, as into any pod without its own). While the VM runs, its image is neither
/// removed (`strata image rm` refuses) nor garbage-collected (forced, `image gc` keeps its disk).
#[test]
fn a_container_disk_is_pulled_with_pull_secrets_and_kept_while_a_vm_uses_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let a = assets();
    let qcow2 = std::fs::read(a.join("disk.qcow2")).expect("disk.qcow2");
    let layer = strata_testkit::tar_gz(|b| {
        let mut h = strata_testkit::header(tar::EntryType::Regular, 0o444, 107, 107, qcow2.len() as u64);
        b.append_data(&mut h, "disk/guest.qcow2", qcow2.as_slice()).expect("file");
    });
    let reg = strata_testkit::Registry::start_with_htpasswd("vmpuller", "vm-pass");
    let disk = strata_testkit::image_from_layers(vec![layer], &[]);
    reg.push(&disk, "private/guest", "v1");
    reg.push(&disk, "private/guest", "v2");
    let s = vm_server();
    let server = format!("--docker-server={}", reg.addr);
    s.ok(&["create", "secret", "docker-registry", "regcred", &server, "--docker-username=vmpuller", "--docker-password=vm-pass"]);
    let vm = |name: &str, tag: &str, secrets: &str| manifest(name, &format!("{DISK_PRESSURE}  memory: 256Mi\n{secrets}  boot:\n    disk: {{image: {}/private/guest:{tag}}}\n", reg.addr));
    // The Running launcher of `name`, once the node pulled its disk and started QEMU.
    let started = |name: &str| -> Value {
        let pod = wait_for(&format!("VM {name} Running: {}", get(&s, &format!("vm/{name}"))), BOOT, || {
            let v = get(&s, &format!("vm/{name}"));
            (v["status"]["printableStatus"] == "Running").then(|| v["status"]["launcherPod"].as_str().unwrap_or("").to_string())
        });
        get(&s, &format!("pod/{pod}"))
    };
    let gone = |name: &str| {
        s.ok(&["delete", "vm", name]);
        wait_for(&format!("nothing of {name} left on the node: {:?}", node_vms(&s)), Duration::from_secs(120), || node_vms(&s).is_empty().then(String::new));
    };

    s.ok_stdin(&["apply", "-f", "-"], Some(&vm("nocred", "v1", "")));
    let msg = trouble(&s, "nocred", "VMCreateError", Duration::from_secs(120));
    assert!(msg.contains(&format!("pulling disk image {}/private/guest:v1", reg.addr)), "{msg}");
    gone("nocred");

    s.ok_stdin(&["apply", "-f", "-"], Some(&vm("withcred", "v1", "  imagePullSecrets: [{name: regcred}]\n")));
    let pod = started("withcred");
    assert_eq!(pod["spec"]["imagePullSecrets"], serde_json::json!([{"name": "regcred"}]), "{pod}");
    gone("withcred");

    s.ok(&["patch", "serviceaccount", "default", "-p", r#"{"imagePullSecrets":[{"name":"regcred"}]}"#]);
    s.ok_stdin(&["apply", "-f", "-"], Some(&vm("fromsa", "v2", "")));
    let pod = started("fromsa");
    assert_eq!(pod["spec"]["imagePullSecrets"], serde_json::json!([{"name": "regcred"}]), "the ServiceAccount's: {pod}");
    let launcher = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    let events = s.ok(&["get", "events", "--field-selector", &format!("involvedObject.name={launcher}"), "-o", "json"]);
    assert!(events.contains(&format!("Successfully pulled image \\\"{}/private/guest:v2\\\"", reg.addr)), "{events}");

    // The image whose disk the VM uses is not removed from under it: `image rm` refuses, and
    // forced, the garbage collection keeps the disk file.
    let base = PathBuf::from(node_vms(&s).first().and_then(|r| r["image"].as_str()).unwrap_or_default());
    assert!(base.starts_with(s.root().join("images")), "the base is in the node's image store: {base:?}");
    let strata = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_strata")).arg("--root").arg(s.root()).args(args).stdin(Stdio::null()).output().expect("strata");
    let (v1, v2) = (format!("{}/private/guest:v1", reg.addr), format!("{}/private/guest:v2", reg.addr));
    let rm = strata(&["image", "rm", &v1, &v2]);
    assert!(!rm.status.success() && String::from_utf8_lossy(&rm.stderr).contains("in use by a container or a VM"), "{rm:?}");
    assert!(strata(&["image", "rm", "--force", &v1, &v2]).status.success());
    let gc = strata(&["image", "gc"]);
    assert!(gc.status.success(), "{gc:?}");
    assert!(base.is_file(), "image gc removed the disk of a running VM: {base:?}");
    assert_eq!(sha256_of(&base), sha256_of(&a.join("disk.qcow2")), "the base is whole");
    gone("fromsa");
}

/// Guest-reported data (KubeVirt's guest agent fields): a guest running the QEMU guest agent
/// (Debian's qemu-ga, in the test guest's initrd-qga.gz) on the port strata gives every VM gets
/// `status.guestOSInfo` (its os-release and kernel), `guestHostname` (the hostname its cloud-init
/// seed set) and `interfaces` (eth0 with the VM's address and MAC), and the condition
/// AgentConnected True; once the launcher is gone they go with it. (A guest without an agent:
/// `a_vm_runs_restarts_halts_and_goes`.)
#[test]
fn a_guest_agent_reports_the_guest_os_hostname_and_interfaces() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let a = assets();
    let release = std::fs::read_dir(a)
        .expect("assets")
        .flatten()
        .find_map(|e| e.file_name().to_str()?.strip_prefix("linux-image-")?.split('_').next().map(str::to_string))
        .expect("the guest kernel's package");
    let s = vm_server();
    s.ok_stdin(&["apply", "-f", "-"], Some(&kernel_vm("agent", "Always").replace("initrd.gz", "initrd-qga.gz")));
    let (pod, record) = running(&s, "agent", None);
    let vm = wait_for(&format!("AgentConnected True: {}", get(&s, "vm/agent")), BOOT, || {
        let v = get(&s, "vm/agent");
        (condition(&v, "AgentConnected")["status"] == "True" && v["status"]["interfaces"][0]["ipAddress"].is_string()).then(|| v.to_string())
    });
    let vm: Value = serde_json::from_str(&vm).expect("json");
    let st = &vm["status"];
    assert_eq!(condition(&vm, "AgentConnected")["reason"], "AgentConnected", "{vm}");
    let os = &st["guestOSInfo"];
    assert_eq!((os["name"].as_str(), os["id"].as_str(), os["machine"].as_str()), (Some("strata test guest"), Some("strata-test"), Some("x86_64")), "{vm}");
    assert_eq!(os["kernelRelease"], release.as_str(), "the guest's kernel, not the host's: {vm}");
    assert_eq!(st["guestHostname"], record["name"], "the hostname of the VM's cloud-init seed: {vm}");
    let ifs = st["interfaces"].as_array().expect("interfaces");
    assert_eq!(ifs.len(), 1, "loopback left out: {vm}");
    assert_eq!((ifs[0]["interfaceName"].as_str(), ifs[0]["infoSource"].as_str()), (Some("eth0"), Some("guest-agent")), "{vm}");
    assert_eq!(ifs[0]["ipAddress"], st["ipAddress"], "the guest's own view of its address: {vm}");
    assert_eq!(ifs[0]["mac"], record["mac"], "{vm}");
    let pod = get(&s, &format!("pod/{}", pod["metadata"]["name"].as_str().unwrap_or("")));
    assert!(pod["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "strata.dev/AgentConnected" && c["status"] == "True")), "{pod}");
    let json = s.ok(&["get", "vm", "agent", "-o", "jsonpath={.status.guestOSInfo.prettyName}"]);
    assert!(json.starts_with("strata test guest"), "{json}");

    s.ok(&["patch", "vm", "agent", "--type", "merge", "-p", r#"{"spec":{"runStrategy":"Halted"}}"#]);
    wait_for("Stopped", BOOT, || (get(&s, "vm/agent")["status"]["printableStatus"] == "Stopped").then(String::new));
    let vm = get(&s, "vm/agent");
    for f in ["guestOSInfo", "guestHostname", "interfaces"] {
        assert!(vm["status"].get(f).is_none(), "status.{f} of a stopped VM: {vm}");
    }
    assert!(condition(&vm, "AgentConnected").is_null(), "{vm}");
    s.ok(&["delete", "vm", "agent"]);
    assert_gone(&s, &record);
}
