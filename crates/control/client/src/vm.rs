//! The `VirtualMachine` kind (`strata.dev/v1`) as the components above the API server see it:
//! one typed definition (serde + [`kube::Resource`]) shared by the VM controller and the node
//! agent, so neither walks JSON paths. The API server validates and defaults the same fields
//! from its own view of the object (`strata_apiserver::vm`); the names here are the manifest's.
//!
//! A running VM is a *launcher pod* (KubeVirt's virt-launcher idea): the VM controller creates
//! one per boot, owned by the VM, carrying the VM's spec in the annotation [`SPEC_ANNOTATION`];
//! the scheduler places it like any pod, and the node agent that gets it runs the VM through
//! the VM driver and reports the pod's status; the controller mirrors that status into the
//! VM's.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ContainerPort, LocalObjectReference, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "strata.dev";
pub const VERSION: &str = "v1";
pub const KIND: &str = "VirtualMachine";
pub const API_VERSION: &str = "strata.dev/v1";

/// On a launcher pod: the name of the VirtualMachine it runs (a label, so it can be selected).
pub const VM_LABEL: &str = "strata.dev/virtual-machine";
/// On a launcher pod: which boot of the VM it is (0, 1, ...), also in its name.
pub const ATTEMPT_LABEL: &str = "strata.dev/vm-attempt";
/// On a launcher pod: the VM's spec (JSON of [`VirtualMachineSpec`]) the node agent runs.
pub const SPEC_ANNOTATION: &str = "strata.dev/vm-spec";
/// The one container of a launcher pod (it stands for the VM in the pod's status).
pub const LAUNCHER_CONTAINER: &str = "compute";
/// The image name the launcher container carries: never pulled; the agent runs the VM itself.
pub const LAUNCHER_IMAGE: &str = "strata.dev/vm-launcher";
/// A pod condition the agent sets on a launcher pod: `True` under KVM, `False` under TCG
/// (reason `KVM` or `TCG`, the probe's verdict as the message).
pub const KVM_CONDITION: &str = "strata.dev/KVM";
/// Launcher pod condition: did the guest write to its serial console within the node's boot
/// timeout (False with reason [`NO_CONSOLE_OUTPUT`]: it did not boot)?
pub const CONSOLE_CONDITION: &str = "strata.dev/ConsoleOutput";
/// Launcher pod condition: `True` (reason [`PAUSED`]) while the VM's vCPUs are paused (QEMU
/// `stop`, e.g. `strata vm pause` on the node); absent otherwise.
pub const PAUSED_CONDITION: &str = "strata.dev/Paused";
/// The VM condition type, its reason and the printableStatus of a paused VM (KubeVirt's names).
pub const PAUSED: &str = "Paused";
/// The reason (and the VM's printableStatus) of a guest that wrote nothing to its console.
pub const NO_CONSOLE_OUTPUT: &str = "NoConsoleOutput";
/// A guest whose kernel panicked (KubeVirt's Warning event reason): the launcher container's
/// terminated reason, the VM's printableStatus when the boot is not started again, the type and
/// reason of the VM condition saying the last boot ended so, and the Warning events' reason.
pub const GUEST_PANICKED: &str = "GuestPanicked";
/// The node label saying whether VMs there run under KVM (the agent's probe).
pub const KVM_NODE_LABEL: &str = "strata.dev/kvm";
/// Launcher pod condition: does a QEMU guest agent answer in the guest? `True` (reason
/// [`AGENT_CONNECTED`]) with the JSON of a [`GuestReport`] as its message, else `False` (reason
/// [`AGENT_NOT_CONNECTED`], why as the message); absent while the VM does not run.
pub const AGENT_CONDITION: &str = "strata.dev/AgentConnected";
/// The VM condition type and reason (KubeVirt's name) of a guest whose agent answers.
pub const AGENT_CONNECTED: &str = "AgentConnected";
pub const AGENT_NOT_CONNECTED: &str = "AgentNotConnected";
/// `infoSource` of an interface the guest agent reported (KubeVirt's value).
pub const INFO_SOURCE_GUEST_AGENT: &str = "guest-agent";

/// Defaults the API server applies (see ARCHITECTURE.md, "VirtualMachines").
pub const DEFAULT_MEMORY: &str = "256Mi";
pub const DEFAULT_CPU: u32 = 1;
pub const DEFAULT_GRACE_SECONDS: i64 = 30;
/// The least memory a VM may have.
pub const MIN_MEMORY_BYTES: u64 = 32 << 20;
/// The most vCPUs a VM may have (QEMU's `microvm` and `q35` take more; this bounds mistakes).
pub const MAX_CPU: u32 = 64;

/// A full virtual machine.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VirtualMachine {
    #[serde(rename = "apiVersion", default = "api_version")]
    pub api_version: String,
    #[serde(default = "kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VirtualMachineSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VirtualMachineStatus>,
}

fn api_version() -> String {
    API_VERSION.into()
}

fn kind() -> String {
    KIND.into()
}

impl VirtualMachine {
    pub fn new(name: &str, spec: VirtualMachineSpec) -> VirtualMachine {
        VirtualMachine { api_version: api_version(), kind: kind(), metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, spec, status: None }
    }
}

impl kube::Resource for VirtualMachine {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(KIND)
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(GROUP)
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(VERSION)
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("virtualmachines")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// When the VM runs (KubeVirt's run strategies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStrategy {
    /// Always running: started at creation and again whenever it stops (a guest power-off
    /// included).
    #[default]
    Always,
    /// Started at creation and again after a failure (a crash, a non-zero exit), not after a
    /// clean guest power-off.
    RerunOnFailure,
    /// Started at creation, never again.
    Once,
    /// Not running: a running VM is powered off (ACPI, then forced after the grace period).
    Halted,
    /// The controller neither starts nor stops it.
    Manual,
}

impl RunStrategy {
    pub const ALL: [&'static str; 5] = ["Always", "RerunOnFailure", "Once", "Halted", "Manual"];
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_strategy: Option<RunStrategy>,
    /// Virtual CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Guest memory, a resource.Quantity (`256Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default)]
    pub boot: Boot,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<CloudInit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    /// Run only on nodes whose KVM works (`strata.dev/kvm=true`); by default TCG is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_kvm: Option<bool>,
    /// Secrets (`kubernetes.io/dockerconfigjson` or `dockercfg`) to pull a `boot.disk.image` with,
    /// as a pod's; none: the namespace's ServiceAccount's, as for pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
}

impl VirtualMachineSpec {
    pub fn run_strategy(&self) -> RunStrategy {
        self.run_strategy.unwrap_or_default()
    }

    /// Guest memory in bytes (the default when unset; `None` when it does not parse).
    pub fn memory_bytes(&self) -> Option<u64> {
        let q = self.memory.as_deref().unwrap_or(DEFAULT_MEMORY);
        crate::quantity::parse_milli(q).and_then(|m| u64::try_from((m + 999) / 1000).ok())
    }

    pub fn cpus(&self) -> u32 {
        self.cpu.unwrap_or(DEFAULT_CPU)
    }

    pub fn grace_seconds(&self) -> i64 {
        self.termination_grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECONDS)
    }
}

/// What the VM boots: exactly one of a kernel or a disk.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Boot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelBoot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskBoot>,
}

/// Direct kernel boot (QEMU `microvm`): files on the node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelBoot {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

/// A disk image (QEMU `q35` through the firmware): a file on the node, used as the read-only
/// base of the VM's own overlay.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskBoot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// An OCI image carrying the disk as the one file in its `/disk` (KubeVirt's containerDisk),
    /// pulled by the node into its image store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Virtual size of the VM's disk (a Quantity, at least the image's); default the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

/// A cloud-init NoCloud seed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudInit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// network-config (version 1 or 2); by default the node writes one with the VM's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_data: Option<String>,
    /// A Secret in the VM's namespace holding `userdata` (or `userData`) and optionally
    /// `networkdata` (or `networkData`), instead of the inline fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SecretRef {
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineStatus {
    /// `Stopped`, `Pending`, `Scheduled`, `Running`, `Succeeded`, `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// What `kubectl get vm` shows: `Stopped`, `Starting`, `Running`, `Stopping`,
    /// `ErrorUnschedulable`, `CrashLoopBackOff`, `Succeeded`, `Failed`, `GuestPanicked`, or the
    /// launcher's waiting reason (`VMCreateError`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub printable_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    /// `kvm` or `tcg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator: Option<String>,
    /// Why that accelerator (the node's probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator_reason: Option<String>,
    /// Times the VM was started again after it stopped (run strategy Always or RerunOnFailure).
    #[serde(default)]
    pub restart_count: i32,
    /// The launcher pod of the current (or last) boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher_pod: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<VirtualMachineCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// What the guest's QEMU guest agent says of its OS; absent without an agent.
    #[serde(rename = "guestOSInfo", default, skip_serializing_if = "Option::is_none")]
    pub guest_os_info: Option<GuestOsInfo>,
    /// The guest's hostname, as its agent reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_hostname: Option<String>,
    /// The guest's network interfaces (loopback apart), as its agent reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<VirtualMachineInterface>,
}

/// KubeVirt's `guestOSInfo` (the guest agent's `guest-get-osinfo`: `/etc/os-release`, `uname`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestOsInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretty_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
}

/// One guest network interface (KubeVirt's VMI `interfaces` item).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInterface {
    /// The name inside the guest (`eth0`).
    pub interface_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The first address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    /// Who reported it: [`INFO_SOURCE_GUEST_AGENT`].
    pub info_source: String,
}

/// What a node learnt from a guest's agent: the message of a launcher's [`AGENT_CONDITION`]
/// when `True` (JSON), mirrored by the VM controller into the VM's status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestReport {
    #[serde(rename = "guestOSInfo")]
    pub guest_os_info: GuestOsInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub interfaces: Vec<VirtualMachineInterface>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineCondition {
    /// `Ready`, or `Paused` (present, `True`, while the VM's vCPUs are paused).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False`, `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// The VM spec a launcher pod carries ([`SPEC_ANNOTATION`]), if it is one.
pub fn launcher_spec(pod: &k8s_openapi::api::core::v1::Pod) -> Option<Result<VirtualMachineSpec, serde_json::Error>> {
    pod.metadata.annotations.as_ref()?.get(SPEC_ANNOTATION).map(|s| serde_json::from_str(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_shape_round_trips() {
        let json = serde_json::json!({
            "apiVersion": "strata.dev/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": "demo"},
            "spec": {
                "runStrategy": "RerunOnFailure",
                "cpu": 2,
                "memory": "512Mi",
                "boot": {"kernel": {"path": "/srv/vmlinuz", "initrd": "/srv/initrd.gz", "cmdline": "console=ttyS0"}},
                "cloudInit": {"userData": "#cloud-config\n", "secretRef": {"name": "s"}},
                "ports": [{"containerPort": 22, "name": "ssh"}],
                "nodeSelector": {"a": "b"},
                "terminationGracePeriodSeconds": 5
            }
        });
        let vm: VirtualMachine = serde_json::from_value(json.clone()).expect("decode");
        assert_eq!(vm.spec.run_strategy(), RunStrategy::RerunOnFailure);
        assert_eq!(vm.spec.memory_bytes(), Some(512 << 20));
        assert_eq!(vm.spec.cpus(), 2);
        assert_eq!(vm.spec.boot.kernel.as_ref().map(|k| k.path.as_str()), Some("/srv/vmlinuz"));
        assert_eq!(vm.spec.cloud_init.as_ref().and_then(|c| c.secret_ref.as_ref()).map(|s| s.name.as_str()), Some("s"));
        assert_eq!(vm.spec.ports[0].container_port, 22);
        assert_eq!(serde_json::to_value(&vm).expect("encode"), json);
        let defaults = VirtualMachineSpec::default();
        assert_eq!((defaults.run_strategy(), defaults.cpus(), defaults.memory_bytes(), defaults.grace_seconds()), (RunStrategy::Always, 1, Some(256 << 20), 30));
        assert!(serde_json::from_value::<VirtualMachineSpec>(serde_json::json!({"runStrategy": "Sometimes"})).is_err());
        assert_eq!(<VirtualMachine as kube::Resource>::api_version(&()), "strata.dev/v1");
    }
}
