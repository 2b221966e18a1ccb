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

