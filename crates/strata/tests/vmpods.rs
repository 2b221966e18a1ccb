//! VM-isolated pods end to end (`runtimeClassName: strata-vm`): `strata server` with a guest
//! kernel, kubectl, a real registry, QEMU on TCG. The agent only picks the runtime from the
//! pod's RuntimeClass; everything else is the same path as container pods.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::eventually;
use common::server::{ApiServer, Backend, Options};
use serde_json::Value;
use strata_testkit::{busybox_image, Registry};

fn script(name: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash").arg(repo.join("scripts").join(name)).stderr(Stdio::inherit()).output().expect("run script");
    assert!(out.status.success(), "scripts/{name} failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn pod(server: &ApiServer, name: &str) -> Value {
    let out = server.kubectl(&["get", "pod", name, "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn container<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["status"]["containerStatuses"].as_array().and_then(|cs| cs.iter().find(|c| c["name"] == name)).unwrap_or(&Value::Null)
}

/// Processes whose command line mentions `root` (QEMU's carries the initramfs path under it).
fn processes_under(root: &Path) -> Vec<String> {
    let needle = root.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle) && c.contains("qemu"))
        .collect()
}

#[test]
fn a_strata_vm_pod_runs_in_a_microvm_with_logs_exec_and_exit_codes() {
    let kernel = script("guest-kernel.sh");
    let release = std::fs::read_dir(kernel.join("lib/modules")).expect("modules").flatten().next().expect("a release").file_name().to_string_lossy().into_owned();
    let host = nix::sys::utsname::uname().expect("uname").release().to_string_lossy().into_owned();
    assert_ne!(release, host, "the test needs a guest kernel other than the host's");
    let agent = std::env::var_os("STRATA_GUEST_AGENT").map(PathBuf::from).unwrap_or_else(|| script("guest-agent.sh"));

    let registry = Registry::start();
    registry.push(&busybox_image(), "busybox", "latest");
    let image = format!("{}/busybox:latest", registry.addr);
    let env = vec![
        ("STRATA_VM_ACCEL".to_string(), "tcg".to_string()),
        ("STRATA_UNPACK_RESERVE".to_string(), "512MiB".to_string()),
        ("STRATA_VM_KERNEL".to_string(), kernel.display().to_string()),
        ("STRATA_GUEST_AGENT".to_string(), agent.display().to_string()),
    ];
    let server = ApiServer::start_opts(Backend::Embedded, Options { agent: true, extra: vec!["--node-name".into(), "node-a".into()], env, ..Options::default() });

    // The class is there from the start, with its measured overhead.
    let rc: Value = serde_json::from_str(&server.ok(&["get", "runtimeclass", "strata-vm", "-o", "json"])).expect("json");
    assert_eq!(rc["handler"], "strata-vm");
    assert_eq!(rc["overhead"]["podFixed"]["memory"], "144Mi");

    server.ok_stdin(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: vm-pod\nspec:\n  nodeName: node-a\n  runtimeClassName: strata-vm\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: uname\n    image: {image}\n    command: [sh, -c, 'uname -r; exit 3']\n  - name: main\n    image: {image}\n    command: [sleep, '1000']\n"
        )),
    );
    let mut last = Value::Null;
    let ok = eventually(Duration::from_secs(300), || {
        last = pod(&server, "vm-pod");
        last["status"]["phase"] == "Running" && container(&last, "uname")["state"]["terminated"]["exitCode"] == 3 && container(&last, "main")["state"]["running"].is_object()
    });
    if !ok {
        let events = server.kubectl(&["get", "events", "-o", "wide"]);
        panic!("vm-pod not Running with uname exited 3: {last:#}\nevents: {}\nlog: {}", String::from_utf8_lossy(&events.stdout), server.log());
    }
    assert_eq!(last["spec"]["overhead"]["memory"], "144Mi", "the RuntimeClass admission set the overhead");
    assert!(last["status"]["podIP"].is_string(), "{last}");

    // kubectl logs: the guest kernel's release, not the host's.
    let logs = server.ok(&["logs", "vm-pod", "-c", "uname"]);
    assert_eq!(logs.trim(), release);
    // kubectl exec: in the microVM, with the command's exit code.
    assert_eq!(server.ok(&["exec", "vm-pod", "-c", "main", "--", "uname", "-r"]).trim(), release);
    assert_eq!(server.ok(&["exec", "vm-pod", "-c", "main", "--", "cat", "/proc/1/comm"]).trim(), "sleep");
    let out = server.kubectl(&["exec", "vm-pod", "-c", "main", "--", "sh", "-c", "exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!processes_under(&server.root()).is_empty(), "no QEMU runs the pod");

    // Deleting the pod powers the microVM off and leaves nothing.
    server.ok(&["delete", "pod", "vm-pod", "--wait=false"]);
    let gone = eventually(Duration::from_secs(120), || pod(&server, "vm-pod").is_null() && processes_under(&server.root()).is_empty());
    assert!(gone, "pod or QEMU left: {:?}\nlog: {}", processes_under(&server.root()), server.log());
    let vms = server.root().join("microvm/vms");
    assert!(eventually(Duration::from_secs(30), || std::fs::read_dir(&vms).map(|d| d.count() == 0).unwrap_or(true)), "VM state left in {}", vms.display());
}
