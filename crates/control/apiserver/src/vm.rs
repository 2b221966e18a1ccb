//! The `VirtualMachine` kind (`strata.dev/v1`): defaulting, validation and its OpenAPI schema.
//!
//! The API server does not link the components' typed definition (`strata_client::vm`, above
//! it); it checks the same manifest fields on the JSON object, with the same names and
//! defaults: `runStrategy` Always, `cpu` 1, `memory` 256Mi, `terminationGracePeriodSeconds` 30.
//! Errors are `Invalid` with one cause per field, as for the built-in kinds.

use serde_json::{json, Map, Value};

use crate::openapi::{Flavor, META};
use crate::status::Cause;

pub const RUN_STRATEGIES: [&str; 5] = ["Always", "RerunOnFailure", "Once", "Halted", "Manual"];
pub const DEFAULT_MEMORY: &str = "256Mi";
/// The one container of a VM's launcher pod, whose log is the VM's serial console (the same name
/// as `strata_client::vm::LAUNCHER_CONTAINER`; the API server does not link the client).
pub const LAUNCHER_CONTAINER: &str = "compute";
const MIN_MEMORY: u128 = 32 << 20;
/// More than any host strata runs on: a typo (`256Gi` for `256Mi`) is refused here rather than
/// left unschedulable.
const MAX_MEMORY: u128 = 16 << 40;
const MAX_CPU: i64 = 64;
/// Inline cloud-init data (user-data and network-config together) travels in the launcher
/// pod's annotations, which hold 256 KiB in all: larger seeds go in a Secret (`secretRef`).
pub const MAX_INLINE_CLOUD_INIT: usize = 128 << 10;

fn cause(reason: &'static str, field: &str, message: String) -> Cause {
    Cause { reason, field: field.into(), message }
}

fn required(field: &str, why: &str) -> Cause {
    cause("FieldValueRequired", field, if why.is_empty() { "Required value".into() } else { format!("Required value: {why}") })
}

fn invalid(field: &str, value: &Value, why: &str) -> Cause {
    cause("FieldValueInvalid", field, format!("Invalid value: {value}: {why}"))
}

fn forbidden(field: &str, why: &str) -> Cause {
    Cause::forbidden(field, why)
}

/// A resource.Quantity in units (bytes), rounded up; `None` when it does not parse.
pub fn quantity(v: &Value) -> Option<u128> {
    crate::quantity::Quantity::of(v).map(|q| q.value()).and_then(|n| u128::try_from(n).ok())
}

fn absolute_path(field: &str, v: &Value, causes: &mut Vec<Cause>) {
    match v.as_str() {
        None if v.is_null() => causes.push(required(field, "")),
        Some("") => causes.push(required(field, "")),
        Some(p) if p.starts_with('/') && !p.split('/').any(|c| c == "..") => {}
        _ => causes.push(invalid(field, v, "must be an absolute path on the node without '..'")),
    }
}

/// An image reference (`REGISTRY/NAME:TAG` or `...@sha256:...`): the node's image store parses
/// it when it pulls; here only what can never be one is refused.
fn image_reference(field: &str, v: &Value, causes: &mut Vec<Cause>) {
    match v.as_str() {
        Some("") => causes.push(required(field, "")),
        Some(r) if r.chars().any(|c| c.is_whitespace() || c.is_control()) => causes.push(invalid(field, v, "must be an image reference such as registry.example/disks/debian:12, without spaces")),
        Some(_) => {}
        None => causes.push(invalid(field, v, "must be a string")),
    }
}

fn optional_string(field: &str, v: &Value, causes: &mut Vec<Cause>) {
    if !v.is_null() && !v.is_string() {
        causes.push(invalid(field, v, "must be a string"));
    }
}

/// Default and validate a VirtualMachine (`obj` already has its metadata checked).
pub fn validate(obj: &mut Value, causes: &mut Vec<Cause>) {
    if !obj["spec"].is_object() {
        causes.push(required("spec", ""));
        return;
    }
    let spec = &mut obj["spec"];
    for (k, d) in [("runStrategy", json!("Always")), ("cpu", json!(1)), ("memory", json!(DEFAULT_MEMORY)), ("terminationGracePeriodSeconds", json!(30))] {
        if spec[k].is_null() {
            spec[k] = d;
        }
    }
    if let Some(n) = spec["memory"].as_u64() {
        // A number of bytes is a valid Quantity; it is kept as the canonical string.
        spec["memory"] = json!(n.to_string());
    }
    let rs = &spec["runStrategy"];
    if !rs.as_str().is_some_and(|s| RUN_STRATEGIES.contains(&s)) {
        let supported = RUN_STRATEGIES.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
        causes.push(cause("FieldValueNotSupported", "spec.runStrategy", format!("Unsupported value: {rs}: supported values: {supported}")));
    }
    match spec["cpu"].as_i64() {
        Some(n) if (1..=MAX_CPU).contains(&n) && spec["cpu"].is_i64() => {}
        _ => causes.push(invalid("spec.cpu", &spec["cpu"], &format!("must be a whole number of virtual CPUs between 1 and {MAX_CPU}"))),
    }
    match quantity(&spec["memory"]) {
        None => causes.push(invalid("spec.memory", &spec["memory"], "must be a quantity such as 256Mi or 1Gi")),
        Some(m) if m < MIN_MEMORY => causes.push(invalid("spec.memory", &spec["memory"], "must be at least 32Mi")),
        Some(m) if m > MAX_MEMORY => causes.push(invalid("spec.memory", &spec["memory"], "must be at most 16Ti")),
        Some(_) => {}
    }
    match spec["terminationGracePeriodSeconds"].as_i64() {
        Some(n) if n >= 0 => {}
        _ => causes.push(invalid("spec.terminationGracePeriodSeconds", &spec["terminationGracePeriodSeconds"], "must be a non-negative number of seconds")),
    }
    if !spec["requireKvm"].is_null() && !spec["requireKvm"].is_boolean() {
        causes.push(invalid("spec.requireKvm", &spec["requireKvm"], "must be true or false"));
    }
    boot(&spec["boot"], causes);
    cloud_init(&spec["cloudInit"], causes);
    if !spec["ports"].is_null() && !spec["ports"].is_array() {
        causes.push(invalid("spec.ports", &spec["ports"], "must be a list"));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for (i, p) in ports.iter_mut().enumerate() {
            match p["containerPort"].as_i64() {
                Some(n) if (1..=65535).contains(&n) => {}
                None if p["containerPort"].is_null() => causes.push(required(&format!("spec.ports[{i}].containerPort"), "")),
                _ => causes.push(invalid(&format!("spec.ports[{i}].containerPort"), &p["containerPort"], "must be between 1 and 65535, inclusive")),
            }
            if let Some(h) = p.get("hostPort").filter(|h| !h.is_null()) {
                if !h.as_i64().is_some_and(|n| (1..=65535).contains(&n)) {
                    causes.push(invalid(&format!("spec.ports[{i}].hostPort"), h, "must be between 1 and 65535, inclusive"));
                }
            }
            if p.is_object() && p["protocol"].is_null() {
                p["protocol"] = json!("TCP");
            }
            if p["protocol"] != "TCP" {
                causes.push(cause("FieldValueNotSupported", &format!("spec.ports[{i}].protocol"), format!("Unsupported value: {}: supported values: \"TCP\"", p["protocol"])));
            }
        }
    }
    if !spec["nodeSelector"].is_null() && !spec["nodeSelector"].as_object().is_some_and(|m| m.values().all(Value::is_string)) {
        causes.push(invalid("spec.nodeSelector", &spec["nodeSelector"], "must be a map of strings"));
    }
    if !spec["tolerations"].is_null() && !spec["tolerations"].is_array() {
        causes.push(invalid("spec.tolerations", &spec["tolerations"], "must be a list"));
    }
    if !spec["affinity"].is_null() && !spec["affinity"].is_object() {
        causes.push(invalid("spec.affinity", &spec["affinity"], "must be an object"));
    }
    if !spec["imagePullSecrets"].is_null() {
        match spec["imagePullSecrets"].as_array() {
            None => causes.push(invalid("spec.imagePullSecrets", &spec["imagePullSecrets"], "must be a list")),
            Some(list) => {
                for (i, r) in list.iter().enumerate() {
                    if !r["name"].as_str().is_some_and(|n| !n.is_empty()) {
                        causes.push(cause("FieldValueRequired", &format!("spec.imagePullSecrets[{i}].name"), "Required value".into()));
                    }
                }
            }
        }
    }
}

fn boot(b: &Value, causes: &mut Vec<Cause>) {
    let (kernel, disk) = (&b["kernel"], &b["disk"]);
    match (kernel.is_null(), disk.is_null()) {
        (true, true) => {
            causes.push(required("spec.boot", "exactly one of kernel (a kernel and initrd on the node) or disk (a disk image) must be given"));
            return;
        }
        (false, false) => causes.push(forbidden("spec.boot.disk", "may not be specified together with spec.boot.kernel")),
        _ => {}
    }
    if !kernel.is_null() {
        absolute_path("spec.boot.kernel.path", &kernel["path"], causes);
        if !kernel["initrd"].is_null() {
            absolute_path("spec.boot.kernel.initrd", &kernel["initrd"], causes);
        }
        optional_string("spec.boot.kernel.cmdline", &kernel["cmdline"], causes);
    }
    if !disk.is_null() {
        match (disk["path"].is_null(), disk["image"].is_null()) {
            (true, true) => causes.push(required("spec.boot.disk.path", "a disk image on the node")),
            (false, false) => causes.push(forbidden("spec.boot.disk.image", "may not be specified together with spec.boot.disk.path")),
            (false, true) => absolute_path("spec.boot.disk.path", &disk["path"], causes),
            (true, false) => image_reference("spec.boot.disk.image", &disk["image"], causes),
        }
        if !disk["size"].is_null() && quantity(&disk["size"]).is_none_or(|s| s == 0) {
            causes.push(invalid("spec.boot.disk.size", &disk["size"], "must be a quantity such as 10Gi"));
        }
    }
}

fn cloud_init(c: &Value, causes: &mut Vec<Cause>) {
    if c.is_null() {
        return;
    }
    if !c.is_object() {
        causes.push(invalid("spec.cloudInit", c, "must be an object"));
        return;
    }
    optional_string("spec.cloudInit.userData", &c["userData"], causes);
    optional_string("spec.cloudInit.networkData", &c["networkData"], causes);
    let inline = c["userData"].as_str().map_or(0, str::len) + c["networkData"].as_str().map_or(0, str::len);
    if inline > MAX_INLINE_CLOUD_INIT {
        causes.push(cause(
            "FieldValueTooLong",
            "spec.cloudInit.userData",
            format!("Too long: may not be more than {MAX_INLINE_CLOUD_INIT} bytes with networkData; put larger data in a Secret (secretRef)"),
        ));
    }
    let sr = &c["secretRef"];
    if !sr.is_null() {
        if sr["name"].as_str().is_none_or(str::is_empty) {
            causes.push(required("spec.cloudInit.secretRef.name", ""));
        }
        if !c["userData"].is_null() || !c["networkData"].is_null() {
            causes.push(forbidden("spec.cloudInit.secretRef", "may not be specified together with userData or networkData"));
        }
    }
}

/// The package of the kind's definitions.
const PKG: &str = "dev.strata.v1";

fn s(description: &str) -> Value {
    json!({ "type": "string", "description": description })
}

fn obj(description: &str, props: Value, required: &[&str]) -> Value {
    let mut v = json!({ "type": "object", "description": description, "properties": props });
    if !required.is_empty() {
        v["required"] = json!(required);
    }
    v
}

/// A reference with a description beside it (v3 writes it as upstream does, `allOf`).
fn reference(flavor: Flavor, name: &str, description: &str) -> Value {
    let mut r = flavor.reference(name);
    if flavor == Flavor::V3 {
        r["description"] = json!(description);
    }
    r
}

/// The definitions of `VirtualMachine` and its parts, typed and described (what `kubectl
/// explain vm.spec` shows), plus the core types they reach.
pub(crate) fn definitions(flavor: Flavor, out: &mut Map<String, Value>) {
    let d = |n: &str| format!("{PKG}.{n}");
    let core = |n: &str| format!("io.k8s.api.core.v1.{n}");
    let vm = obj(
        "VirtualMachine is a full virtual machine (QEMU): strata runs it on a node chosen by the scheduler, through a launcher pod it owns, and keeps it running as runStrategy says.",
        json!({
            "metadata": reference(flavor, &format!("{META}.ObjectMeta"), "Standard object's metadata."),
            "spec": reference(flavor, &d("VirtualMachineSpec"), "What the VM is and when it runs."),
            "status": reference(flavor, &d("VirtualMachineStatus"), "What the VM is doing, as its controller last saw it. Read-only."),
        }),
        &[],
    );
    let spec = obj(
        "VirtualMachineSpec is what a VirtualMachine boots, how big it is, and where and when it runs.",
        json!({
            "runStrategy": s("When the VM runs: Always (default: started, and started again whenever it stops), RerunOnFailure (started again only after a failure), Once (never started again), Halted (powered off: ACPI, then forced after terminationGracePeriodSeconds), Manual (the controller neither starts nor stops it)."),
            "cpu": { "type": "integer", "format": "int32", "description": "Virtual CPUs, 1 to 64. Default 1." },
            "memory": { "type": "string", "description": "Guest memory, a quantity (256Mi, 1Gi), at least 32Mi. Default 256Mi. The launcher pod requests it plus QEMU's overhead.", "x-kubernetes-int-or-string": flavor == Flavor::V3 },
            "boot": reference(flavor, &d("VirtualMachineBoot"), "What the VM boots: exactly one of kernel or disk."),
            "cloudInit": reference(flavor, &d("VirtualMachineCloudInit"), "A cloud-init NoCloud seed given to the guest."),
            "ports": { "type": "array", "items": flavor.reference(&core("ContainerPort")), "description": "Ports the guest serves (informational; hostPort publishes one on the node)." },
            "nodeSelector": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Labels a node must have to run the VM (as a pod's nodeSelector)." },
            "tolerations": { "type": "array", "items": flavor.reference(&core("Toleration")), "description": "Taints the VM tolerates (as a pod's)." },
            "affinity": reference(flavor, &core("Affinity"), "Scheduling constraints (as a pod's)."),
            "terminationGracePeriodSeconds": { "type": "integer", "format": "int64", "description": "How long a power-off (ACPI power button) may take before the VM is stopped by force. Default 30." },
            "requireKvm": { "type": "boolean", "description": "Run only on nodes where KVM works (label strata.dev/kvm=true). By default a VM may run under TCG software emulation." },
            "imagePullSecrets": { "type": "array", "items": flavor.reference(&core("LocalObjectReference")), "description": "Secrets in the VM's namespace to pull boot.disk.image with (as a pod's imagePullSecrets). Unset: those of the namespace's default ServiceAccount." },
        }),
        &["boot"],
    );
    let boot = obj(
        "VirtualMachineBoot says what the VM boots: exactly one of kernel or disk.",
        json!({
            "kernel": reference(flavor, &d("VirtualMachineKernel"), "Boot a kernel (and initrd) directly (QEMU microvm)."),
            "disk": reference(flavor, &d("VirtualMachineDisk"), "Boot a disk image through the firmware (QEMU q35)."),
        }),
        &[],
    );
    let kernel = obj(
        "VirtualMachineKernel is a kernel booted directly, from files on the node.",
        json!({
            "path": s("Absolute path of the kernel image on the node."),
            "initrd": s("Absolute path of an initramfs on the node."),
            "cmdline": s("The kernel command line."),
        }),
        &["path"],
    );
    let disk = obj(
        "VirtualMachineDisk is a disk image the VM boots; the VM writes to its own overlay, never to the image.",
        json!({
            "path": s("Absolute path of a qcow2 or raw image on the node."),
            "image": s("An OCI image in a registry carrying the disk (KubeVirt's containerDisk): the one file in its /disk directory, a qcow2 or raw image. The node pulls it into its image store (again when the tag is latest or missing) and boots it as the read-only base of the VM's overlay."),
            "size": { "type": "string", "description": "Virtual size of the VM's disk, a quantity at least the image's (default: the image's).", "x-kubernetes-int-or-string": flavor == Flavor::V3 },
        }),
        &[],
    );
    let cloud_init = obj(
        "VirtualMachineCloudInit is a cloud-init NoCloud seed: inline, or from a Secret.",
        json!({
            "userData": s("cloud-init user-data (inline, at most 128 KiB with networkData)."),
            "networkData": s("cloud-init network-config; by default the node writes one with the VM's address."),
            "secretRef": reference(flavor, &d("VirtualMachineSecretRef"), "A Secret in the VM's namespace with userdata (or userData) and optionally networkdata (or networkData)."),
        }),
        &[],
    );
    let secret_ref = obj("VirtualMachineSecretRef names a Secret in the VM's namespace.", json!({ "name": s("The Secret's name.") }), &["name"]);
    let status = obj(
        "VirtualMachineStatus is what the VM is doing, as its controller last saw it.",
        json!({
            "phase": s("Stopped, Pending, Scheduled, Running, Succeeded or Failed (the current launcher pod's phase)."),
            "printableStatus": s("The one word kubectl get shows: Stopped, Starting, Running, Stopping, ErrorUnschedulable, CrashLoopBackOff, Succeeded, Failed, GuestPanicked, or why the launcher waits."),
            "nodeName": s("The node running the VM."),
            "ipAddress": s("The guest's address on the node's network."),
            "ipAddresses": { "type": "array", "items": { "type": "string" }, "description": "Every address of the guest." },
            "accelerator": s("kvm or tcg."),
            "acceleratorReason": s("Why that accelerator (the node's probe)."),
            "restartCount": { "type": "integer", "format": "int32", "description": "Times the VM was started again after it stopped." },
            "launcherPod": s("The launcher pod of the current (or last) boot."),
            "observedGeneration": { "type": "integer", "format": "int64", "description": "The spec generation this status is for." },
            "conditions": { "type": "array", "items": flavor.reference(&d("VirtualMachineCondition")), "description": "Ready: the guest runs; Paused: its vCPUs are stopped; AgentConnected: a QEMU guest agent answers in the guest (False when none does)." },
            "guestOSInfo": reference(flavor, &d("VirtualMachineGuestOSInfo"), "The guest's OS, as its QEMU guest agent reports it (absent without one)."),
            "guestHostname": s("The guest's hostname, as its QEMU guest agent reports it."),
            "interfaces": { "type": "array", "items": flavor.reference(&d("VirtualMachineInterface")), "description": "The guest's network interfaces, as its QEMU guest agent reports them." },
        }),
        &[],
    );
    let os_info = obj(
        "VirtualMachineGuestOSInfo is what the QEMU guest agent's guest-get-osinfo says (os-release and uname).",
        json!({
            "id": s("os-release ID."),
            "name": s("os-release NAME."),
            "prettyName": s("os-release PRETTY_NAME."),
            "version": s("os-release VERSION."),
            "versionId": s("os-release VERSION_ID."),
            "kernelRelease": s("uname -r."),
            "kernelVersion": s("uname -v."),
            "machine": s("uname -m."),
        }),
        &[],
    );
    let interface = obj(
        "VirtualMachineInterface is one network interface of the guest.",
        json!({
            "interfaceName": s("Its name in the guest."),
            "mac": s("Its MAC address."),
            "ipAddress": s("Its first address."),
            "ipAddresses": { "type": "array", "items": { "type": "string" }, "description": "Its addresses." },
            "infoSource": s("Who reported it: guest-agent."),
        }),
        &["interfaceName"],
    );
    let condition = obj(
        "VirtualMachineCondition is one condition of a VirtualMachine.",
        json!({
            "type": s("Ready, Paused or AgentConnected."),
            "status": s("True, False or Unknown."),
            "reason": s("One word why."),
            "message": s("Why, for people."),
            "lastTransitionTime": { "type": "string", "format": "date-time", "description": "When the status last changed." },
        }),
        &["type", "status"],
    );
    for (name, mut def) in [
        ("VirtualMachine", vm),
        ("VirtualMachineSpec", spec),
        ("VirtualMachineBoot", boot),
        ("VirtualMachineKernel", kernel),
        ("VirtualMachineDisk", disk),
        ("VirtualMachineCloudInit", cloud_init),
        ("VirtualMachineSecretRef", secret_ref),
        ("VirtualMachineStatus", status),
        ("VirtualMachineCondition", condition),
        ("VirtualMachineGuestOSInfo", os_info),
        ("VirtualMachineInterface", interface),
    ] {
        if flavor == Flavor::V2 {
            strip_v3(&mut def);
        }
        out.insert(d(name), def);
    }
    for m in ["ObjectMeta", "ContainerPort", "Toleration", "Affinity", "LocalObjectReference"] {
        crate::openapi::message_definitions(m, flavor, out);
    }
}

/// Remove the fields of `spec` and `status` the schema does not have (at every depth, the
/// core types they reach included); their paths go to `unknown` (see `crate::fields`).
pub(crate) fn strip_unknown(obj: &mut Value, unknown: &mut Vec<String>) {
    static DEFS: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    let defs = DEFS.get_or_init(|| {
        let mut m = Map::new();
        definitions(Flavor::V2, &mut m);
        m
    });
    for (field, def) in [("spec", "VirtualMachineSpec"), ("status", "VirtualMachineStatus")] {
        if let Some(v) = obj.get_mut(field) {
            walk(defs, &json!({ "$ref": format!("#/definitions/{PKG}.{def}") }), v, field, unknown);
        }
    }
}

fn walk(defs: &Map<String, Value>, schema: &Value, v: &mut Value, path: &str, unknown: &mut Vec<String>) {
    let schema = match schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/definitions/")) {
        Some(name) => match defs.get(name) {
            Some(d) => d,
            None => return,
        },
        None => schema,
    };
    match v {
        Value::Object(map) => {
            if let Some(props) = schema["properties"].as_object() {
                let keys: Vec<String> = map.keys().cloned().collect();
                for k in keys {
                    let here = format!("{path}.{k}");
                    match props.get(&k) {
                        None => {
                            map.remove(&k);
                            unknown.push(here);
                        }
                        Some(p) => {
                            if let Some(child) = map.get_mut(&k) {
                                walk(defs, p, child, &here, unknown);
                            }
                        }
                    }
                }
            } else if let Some(item) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, child) in map.iter_mut() {
                    walk(defs, item, child, &format!("{path}[{k}]"), unknown);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for (i, child) in items.iter_mut().enumerate() {
                    walk(defs, item, child, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

/// v2 has no `x-kubernetes-int-or-string` and no description beside a `$ref`.
fn strip_v3(v: &mut Value) {
    if let Some(m) = v.as_object_mut() {
        m.remove("x-kubernetes-int-or-string");
        if m.contains_key("$ref") {
            m.remove("description");
        }
        m.values_mut().for_each(strip_v3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: Value) -> (Value, Vec<String>) {
        let mut o = json!({ "metadata": { "name": "v" }, "spec": spec });
        let mut causes = Vec::new();
        validate(&mut o, &mut causes);
        (o, causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect())
    }

    #[test]
    fn defaults_and_refusals() {
        let (o, causes) = check(json!({ "boot": { "kernel": { "path": "/srv/vmlinuz" } } }));
        assert!(causes.is_empty(), "{causes:?}");
        assert_eq!((&o["spec"]["runStrategy"], &o["spec"]["cpu"], &o["spec"]["memory"], &o["spec"]["terminationGracePeriodSeconds"]), (&json!("Always"), &json!(1), &json!("256Mi"), &json!(30)));
        let bad = |spec: Value, want: &str| {
            let (_, causes) = check(spec);
            assert!(causes.iter().any(|c| c.contains(want)), "want {want:?} in {causes:?}");
        };
        bad(json!({}), "spec.boot: Required value: exactly one of kernel");
        bad(json!({ "boot": { "kernel": { "path": "/k" }, "disk": { "path": "/d" } } }), "spec.boot.disk: Forbidden: may not be specified together with spec.boot.kernel");
        bad(json!({ "boot": { "kernel": { "path": "/k" } }, "memory": "16Mi" }), "spec.memory: Invalid value: \"16Mi\": must be at least 32Mi");
        bad(json!({ "boot": { "kernel": { "path": "/k" } }, "memory": "lots" }), "spec.memory: Invalid value: \"lots\": must be a quantity");
        bad(json!({ "boot": { "kernel": { "path": "/k" } }, "runStrategy": "Sometimes" }), "spec.runStrategy: Unsupported value: \"Sometimes\": supported values: \"Always\"");
        bad(json!({ "boot": { "kernel": { "path": "/k" } }, "cpu": 0 }), "spec.cpu: Invalid value: 0: must be a whole number");
        bad(json!({ "boot": { "kernel": { "path": "/k" } }, "cpu": "two" }), "spec.cpu: Invalid value: \"two\"");
        bad(json!({ "boot": { "kernel": { "path": "/k" } }, "cpu": 1.5 }), "spec.cpu: Invalid value: 1.5");
        bad(json!({ "boot": { "kernel": { "path": "vmlinuz" } } }), "spec.boot.kernel.path: Invalid value: \"vmlinuz\": must be an absolute path");
        bad(json!({ "boot": { "disk": { "image": "reg/x: 1" } } }), "spec.boot.disk.image: Invalid value: \"reg/x: 1\": must be an image reference");
        bad(json!({ "boot": { "disk": { "image": "" } } }), "spec.boot.disk.image: Required value");
        bad(json!({ "boot": { "disk": { "path": "/d", "image": "reg/x:1" } } }), "spec.boot.disk.image: Forbidden");
        assert!(check(json!({ "boot": { "disk": { "image": "reg/x:1" } } })).1.is_empty(), "a registry image is a disk");
        bad(json!({ "boot": { "kernel": { "path": "/k" } }, "cloudInit": { "userData": "x", "secretRef": { "name": "s" } } }), "spec.cloudInit.secretRef: Forbidden");
        bad(json!({ "boot": { "kernel": { "path": "/k" } }, "ports": [{ "containerPort": 70000 }] }), "spec.ports[0].containerPort");
        let (o, causes) = check(json!({ "boot": { "disk": { "path": "/d.qcow2", "size": "10Gi" } }, "memory": 1073741824, "ports": [{ "containerPort": 22 }] }));
        assert!(causes.is_empty(), "{causes:?}");
        assert_eq!((&o["spec"]["memory"], &o["spec"]["ports"][0]["protocol"]), (&json!("1073741824"), &json!("TCP")));
    }

    #[test]
    fn the_schema_is_typed_and_described() {
        let doc = crate::openapi::document("apis/strata.dev/v1").expect("strata.dev/v1");
        let defs = doc["components"]["schemas"].as_object().expect("schemas");
        crate::openapi::tests::refs_resolve(&doc, "#/components/schemas/", defs);
        let vm = &defs["dev.strata.v1.VirtualMachine"];
        assert_eq!(vm["x-kubernetes-group-version-kind"][0]["kind"], "VirtualMachine");
        assert!(vm.get("x-kubernetes-preserve-unknown-fields").is_none(), "typed, not an open envelope");
        let spec = &defs["dev.strata.v1.VirtualMachineSpec"]["properties"];
        for f in ["runStrategy", "cpu", "memory", "boot", "cloudInit", "ports", "nodeSelector", "tolerations", "affinity", "terminationGracePeriodSeconds", "requireKvm", "imagePullSecrets"] {
            assert!(spec[f].is_object(), "spec.{f}");
        }
        assert!(spec["runStrategy"]["description"].as_str().is_some_and(|d| d.contains("RerunOnFailure")));
        assert_eq!(spec["cpu"]["type"], "integer");
        assert_eq!(spec["tolerations"]["items"]["allOf"][0]["$ref"], "#/components/schemas/io.k8s.api.core.v1.Toleration");
        let v2 = crate::openapi::definitions(&[crate::resources::find("strata.dev", "v1", "virtualmachines").expect("vm")], Flavor::V2);
        assert_eq!(v2["dev.strata.v1.VirtualMachineSpec"]["properties"]["boot"], json!({ "$ref": "#/definitions/dev.strata.v1.VirtualMachineBoot" }));
        assert!(v2["dev.strata.v1.VirtualMachineSpec"]["properties"]["memory"].get("x-kubernetes-int-or-string").is_none());
    }

    #[test]
    fn unknown_fields_are_found_at_every_depth() {
        let mut o = json!({ "spec": { "boot": { "kernel": { "path": "/k", "initrdd": "/i" } }, "memroy": "1Gi",
            "tolerations": [{ "key": "k", "operator": "Exists", "effectt": "NoSchedule" }], "nodeSelector": { "a": "b" },
            "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": { "nodeSelectorTerms": [{ "matchExpressions": [{ "key": "k", "operator": "In", "values": ["v"] }] }] } } } },
            "status": { "phase": "Running", "conditions": [{ "type": "Ready", "status": "True", "x": 1 }] } });
        let mut unknown = Vec::new();
        strip_unknown(&mut o, &mut unknown);
        unknown.sort();
        assert_eq!(unknown, ["spec.boot.kernel.initrdd", "spec.memroy", "spec.tolerations[0].effectt", "status.conditions[0].x"]);
        assert!(o["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0] == "v");
        assert_eq!(o["spec"]["nodeSelector"]["a"], "b");
    }

    #[test]
    fn quantities() {
        for (q, want) in [("256Mi", Some(256u128 << 20)), ("1Gi", Some(1 << 30)), ("1.5Gi", Some(3 << 29)), ("1e3", Some(1000)), ("128M", Some(128_000_000)), ("x", None), ("", None)] {
            assert_eq!(quantity(&json!(q)), want, "{q}");
        }
    }
}
