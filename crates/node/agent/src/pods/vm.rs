//! Launcher pods: a pod carrying a VirtualMachine's spec ([`vm::SPEC_ANNOTATION`], put there by
//! the VM controller) is one boot of that VM. Its worker runs the VM through the VM driver only
//! (named `pod-<uid>`, labelled with the pod's uid, so a restarted agent finds and adopts it):
//! the pod is Running with the guest's address as its podIP while QEMU runs, Succeeded when the
//! guest powered off cleanly (exit 0), Failed otherwise; its one container `compute` stands for
//! the VM in the pod's status; a guest whose kernel panicked is Failed whatever QEMU's exit code,
//! its container terminated with reason `GuestPanicked` and the panic line as message (and a
//! Warning event). The condition [`vm::KVM_CONDITION`] says which accelerator runs it
//! and why; [`vm::CONSOLE_CONDITION`] whether the guest wrote to its serial console within the
//! agent's boot timeout (False, reason `NoConsoleOutput`, with a Warning event: it did not boot).
//! Deleting the pod powers the guest off (ACPI power button), forced after the grace
//! period, and removes the VM (QEMU, tap, lease, overlay). A finished pod's VM is removed at once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use strata_client::vm::{self, VirtualMachineSpec};
use strata_driver::pod::labels;
use strata_driver::{CreateRequest, Driver, ExitReason, PortMapping, Resources, Status, VmDriver, VmSpec, Workload, WorkloadState};

use super::{blocking, event, pod_dir, uid_of, write_status, PodState, WORKER_BACKOFF};
use crate::Shared;

/// Is this pod the launcher of a VM?
pub(crate) fn is_launcher(pod: &Pod) -> bool {
    pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(vm::SPEC_ANNOTATION))
}

/// The driver's name of the VM a launcher pod runs.
fn vm_name(uid: &str) -> String {
    format!("pod-{uid}")
}

/// The VMs of pod `uid` (one, unless a create was interrupted).
fn vms_of(vms: &VmDriver, uid: &str) -> Result<Vec<WorkloadState>, strata_driver::Error> {
    Ok(vms.list()?.into_iter().filter(|w| w.labels.get(labels::POD_UID).map(String::as_str) == Some(uid)).collect())
}

/// The pod uids of every VM the agent started (for the sweep: a VM whose pod is gone is
/// stopped and removed).
pub(crate) fn pod_uids(vms: &VmDriver) -> Vec<String> {
    vms.list().map(|l| l.into_iter().filter_map(|w| w.labels.get(labels::POD_UID).cloned()).collect()).unwrap_or_default()
}

/// Times as the API server keeps them (whole seconds), so a status read back compares equal.
fn time(rfc3339: Option<&str>) -> Option<Time> {
    use k8s_openapi::chrono::SubsecRound;
    rfc3339.and_then(|t| k8s_openapi::chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| Time(t.with_timezone(&k8s_openapi::chrono::Utc).trunc_subsecs(0)))
}

/// What the worker knows of its VM now.
enum Seen {
    /// Not created (yet), with why it waits.
    Waiting(String, String),
    Vm(Box<WorkloadState>),
    /// It ran, and its VM is gone (removed by hand): the boot is over.
    Lost,
}

/// One sync of a launcher pod that is not being deleted.
pub(crate) async fn sync(shared: &Arc<Shared>, pod: &Pod, st: &mut PodState) {
    let uid = uid_of(pod);
    let Some(vms) = shared.vms.get().cloned() else {
        let status = finished_status(pod, "Failed", "NoVMDriver", "this node runs no virtual machines");
        write_status(shared, st, pod, status).await;
        return;
    };
    let terminal = matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
    if terminal {
        // The boot is over and recorded: free the tap, address and overlay.
        let u = uid.clone();
        let v = vms.clone();
        let _ = blocking(move || vms_of(&v, &u).and_then(|l| l.iter().try_for_each(|w| v.delete(&w.id, true)))).await;
        return;
    }
    let (u, v) = (uid.clone(), vms.clone());
    let found = match blocking(move || vms_of(&v, &u)).await {
        Some(Ok(l)) => l.into_iter().max_by(|a, b| a.created_at.cmp(&b.created_at)),
        Some(Err(e)) => {
            tracing::warn!(pod = %uid, error = %e, "listing the VMs");
            return;
        }
        None => return,
    };
    let started_before = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some() || s.terminated.is_some())));
    let seen = match found {
        Some(w) => Seen::Vm(Box::new(w)),
        None if started_before => Seen::Lost,
        None if st.retry_at.get(vm::LAUNCHER_CONTAINER).is_some_and(|t| Instant::now() < *t) => {
            let (r, m) = st.waiting.get(vm::LAUNCHER_CONTAINER).cloned().unwrap_or_else(|| ("ContainerCreating".into(), String::new()));
            Seen::Waiting(r, m)
        }
        None => match create(shared, &vms, pod).await {
            Ok(w) => {
                event(shared, st, pod, Some(vm::LAUNCHER_CONTAINER), false, "Started", format!("Started virtual machine {}", w.name)).await;
                st.waiting.remove(vm::LAUNCHER_CONTAINER);
                st.retry_at.remove(vm::LAUNCHER_CONTAINER);
                Seen::Vm(Box::new(w))
            }
            Err(msg) => {
                event(shared, st, pod, Some(vm::LAUNCHER_CONTAINER), true, "Failed", format!("Error: {msg}")).await;
                st.waiting.insert(vm::LAUNCHER_CONTAINER.into(), ("VMCreateError".into(), msg.clone()));
                st.retry_at.insert(vm::LAUNCHER_CONTAINER.into(), Instant::now() + WORKER_BACKOFF);
                Seen::Waiting("VMCreateError".into(), msg)
            }
        },
    };
    if let Seen::Vm(w) = &seen {
        if st.accelerator.is_none() {
            let (v, id) = (vms.clone(), w.id.clone());
            if let Some(Ok((_, d))) = blocking(move || v.details(&id)).await {
                st.accelerator = Some((d.accelerator, d.accelerator_reason));
            }
        }
        if st.console_output != Some(true) && w.status == Status::Running {
            check_console_output(shared, &vms, pod, w, st).await;
        }
        if w.status == Status::Running {
            st.guest_agent.poll(&vms, &w.id);
        }
        if let Some(e) = w.exit.as_ref().filter(|e| e.reason == ExitReason::GuestPanicked) {
            let why = e.message.clone().unwrap_or_default();
            event(shared, st, pod, Some(vm::LAUNCHER_CONTAINER), true, vm::GUEST_PANICKED, format!("Virtual machine {}: the guest kernel panicked: {why}", w.name)).await;
        }
    }
    let host_ip = shared.node_ip.to_string();
    let console = st.console_output.map(|seen| (seen, no_output_message(shared.config.vm_boot_timeout)));
    let agent = st.guest_agent.last.as_ref().filter(|_| matches!(&seen, Seen::Vm(w) if w.status == Status::Running));
    let status = status(pod, &seen, st.accelerator.as_ref(), console.as_ref(), agent, &host_ip);
    write_status(shared, st, pod, status).await;
}

/// How long one answer of a guest agent may take, and how often it is asked.
const GUEST_AGENT_TIMEOUT: Duration = Duration::from_secs(5);
const GUEST_AGENT_EVERY: Duration = Duration::from_secs(10);

/// A launcher's questions to its guest's QEMU guest agent: asked on a blocking thread every
/// [`GUEST_AGENT_EVERY`], never holding up the pod's worker; the last answer (or why there was
/// none) is what the pod's status reports.
#[derive(Default)]
pub(crate) struct GuestAgentPoll {
    asking: Option<tokio::task::JoinHandle<Result<vm::GuestReport, String>>>,
    next_at: Option<Instant>,
    last: Option<Result<vm::GuestReport, String>>,
}

impl GuestAgentPoll {
    /// Take a finished answer; ask again when it is time.
    fn poll(&mut self, vms: &Arc<VmDriver>, id: &str) {
        if self.asking.as_ref().is_some_and(|h| h.is_finished()) {
            if let Some(h) = self.asking.take() {
                // A finished task's result is ready: no waiting here.
                self.last = Some(futures_util::FutureExt::now_or_never(h).and_then(Result::ok).unwrap_or_else(|| Err("the guest agent query failed".into())));
            }
        }
        if self.asking.is_some() || self.next_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.next_at = Some(Instant::now() + GUEST_AGENT_EVERY);
        let (v, id) = (vms.clone(), id.to_string());
        self.asking = Some(tokio::task::spawn_blocking(move || v.guest_info(&id, GUEST_AGENT_TIMEOUT).map(|g| report(&g)).map_err(|e| e.to_string())));
    }
}

/// The guest agent's answers as the VM's status reports them (KubeVirt's fields).
fn report(g: &strata_driver::vm::GuestInfo) -> vm::GuestReport {
    let o = &g.os;
    vm::GuestReport {
        guest_os_info: vm::GuestOsInfo {
            id: o.id.clone(),
            name: o.name.clone(),
            pretty_name: o.pretty_name.clone(),
            version: o.version.clone(),
            version_id: o.version_id.clone(),
            kernel_release: o.kernel_release.clone(),
            kernel_version: o.kernel_version.clone(),
            machine: o.machine.clone(),
        },
        hostname: g.hostname.clone(),
        interfaces: g
            .interfaces
            .iter()
            .map(|i| {
                let ips: Vec<String> = i.ip_addresses.iter().map(|a| a.split('/').next().unwrap_or(a).to_string()).collect();
                vm::VirtualMachineInterface { interface_name: i.name.clone(), mac: i.mac.clone(), ip_address: ips.first().cloned(), ip_addresses: ips, info_source: vm::INFO_SOURCE_GUEST_AGENT.into() }
            })
            .collect(),
    }
}

/// Why a VM without console output is reported.
fn no_output_message(timeout: Duration) -> String {
    format!(
        "no output on the serial console {} s after the VM started: the guest did not boot (check the kernel and its command line's console=ttyS0, or the disk image's boot loader)",
        timeout.as_secs()
    )
}

/// Once the boot timeout has run out since the VM started, has it written to its serial console?
/// (Asked of the driver's log of the console; a slow guest that writes later clears it.)
async fn check_console_output(shared: &Arc<Shared>, vms: &Arc<VmDriver>, pod: &Pod, w: &WorkloadState, st: &mut PodState) {
    let timeout = shared.config.vm_boot_timeout;
    let started = w.started_at.as_deref().and_then(|t| k8s_openapi::chrono::DateTime::parse_from_rfc3339(t).ok());
    let Some(started) = started else { return };
    let age = k8s_openapi::chrono::Utc::now().signed_duration_since(started).to_std().unwrap_or_default();
    if age < timeout {
        return;
    }
    let (v, id) = (vms.clone(), w.id.clone());
    let any = blocking(move || {
        let mut any = false;
        let opts = strata_driver::LogOptions { tail: Some(1), ..Default::default() };
        v.logs(&id, &opts, &mut |_| {
            any = true;
            false
        })
        .map(|()| any)
    })
    .await;
    let Some(Ok(any)) = any else { return };
    let was = st.console_output.replace(any);
    if !any && was.is_none() {
        event(shared, st, pod, Some(vm::LAUNCHER_CONTAINER), true, "NoConsoleOutput", format!("Virtual machine {}: {}", w.name, no_output_message(timeout))).await;
    }
}

/// Create and start the pod's VM; a clear message when it cannot be.
async fn create(shared: &Arc<Shared>, vms: &Arc<VmDriver>, pod: &Pod) -> Result<WorkloadState, String> {
    let uid = uid_of(pod);
    let spec: VirtualMachineSpec = match vm::launcher_spec(pod) {
        Some(Ok(s)) => s,
        Some(Err(e)) => return Err(format!("the launcher's VM spec does not decode: {e}")),
        None => return Err("not a launcher pod".into()),
    };
    let disk = match spec.boot.disk.as_ref().map(|d| (&d.path, &d.image)) {
        Some((Some(path), _)) => Some(PathBuf::from(path)),
        Some((None, Some(image))) => Some(container_disk(shared, pod, image).await?),
        _ => None,
    };
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let (mut user_data, mut network_data) = spec.cloud_init.as_ref().map(|c| (c.user_data.clone().map(String::into_bytes), c.network_data.clone().map(String::into_bytes))).unwrap_or_default();
    if let Some(r) = spec.cloud_init.as_ref().and_then(|c| c.secret_ref.as_ref()) {
        let api: Api<Secret> = Api::namespaced(shared.client.clone(), &ns);
        let secret = api.get_opt(&r.name).await.map_err(|e| format!("reading Secret {ns}/{}: {e}", r.name))?.ok_or_else(|| format!("Secret {ns}/{} not found", r.name))?;
        let data = secret.data.unwrap_or_default();
        let key = |names: [&str; 2]| names.iter().find_map(|n| data.get(*n)).map(|b| b.0.clone());
        user_data = Some(key(["userdata", "userData"]).ok_or_else(|| format!("Secret {ns}/{} has no userdata (or userData) key", r.name))?);
        network_data = key(["networkdata", "networkData"]);
    }
    let dir = pod_dir(shared, &uid).join("cloud-init");
    let write = |name: &str, data: &Option<Vec<u8>>| -> Result<Option<PathBuf>, String> {
        let Some(d) = data else { return Ok(None) };
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path).map_err(|e| format!("writing {}: {e}", path.display()))?;
        std::io::Write::write_all(&mut f, d).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(Some(path))
    };
    let cloud_init = write("user-data", &user_data)?;
    let network_config = write("network-config", &network_data)?;
    let memory = spec.memory_bytes().ok_or_else(|| format!("memory {:?} is not a quantity", spec.memory))?;
    let disk_size_bytes = match spec.boot.disk.as_ref().and_then(|d| d.size.as_deref()) {
        Some(s) => Some(strata_client::quantity::parse_milli(s).and_then(|m| u64::try_from((m + 999) / 1000).ok()).ok_or_else(|| format!("disk size {s:?} is not a quantity"))?),
        None => None,
    };
    let ports: Vec<PortMapping> = spec
        .ports
        .iter()
        .filter_map(|p| {
            let host = u16::try_from(p.host_port?).ok()?;
            Some(PortMapping { host_ip: p.host_ip.as_deref().and_then(|i| i.parse().ok()), host_port: host, container_port: u16::try_from(p.container_port).ok()? })
        })
        .collect();
    let name_of = |f: &Option<String>| f.clone().unwrap_or_default();
    let req = CreateRequest {
        name: Some(vm_name(&uid)),
        labels: BTreeMap::from([
            (labels::POD_UID.to_string(), uid.clone()),
            (labels::POD_NAME.to_string(), name_of(&pod.metadata.name)),
            (labels::POD_NAMESPACE.to_string(), ns),
        ]),
        resources: Resources { memory_bytes: Some(memory), cpus: Some(f64::from(spec.cpus())), pids: None },
        network: VmDriver::default_network(),
        ports,
        workload: Workload::Vm(VmSpec {
            kernel: spec.boot.kernel.as_ref().map(|k| PathBuf::from(&k.path)),
            initrd: spec.boot.kernel.as_ref().and_then(|k| k.initrd.as_ref()).map(PathBuf::from),
            append: spec.boot.kernel.as_ref().and_then(|k| k.cmdline.clone()),
            disk,
            cloud_init,
            network_config,
            disk_size_bytes,
        }),
        auto_remove: false,
    };
    let v = vms.clone();
    match blocking(move || v.run(&req).and_then(|id| v.state(&id))).await {
        Some(Ok(w)) => Ok(w),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("interrupted".into()),
    }
}

/// A containerDisk (`boot.disk.image`): the image pulled into the node's image store (when it is
/// absent, or always when its tag is `latest` or missing: kubelet's default pull policy), then its
/// disk file, the VM's read-only base. Pulled with the launcher's imagePullSecrets (the VM's, or
/// its ServiceAccount's) that match the registry, each in turn as kubelet does, else anonymously.
async fn container_disk(shared: &Arc<Shared>, pod: &Pod, image: &str) -> Result<PathBuf, String> {
    let images = shared.driver.images().clone();
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let mut secrets = std::collections::HashMap::new();
    for r in pod.spec.iter().flat_map(|s| s.image_pull_secrets.iter().flatten()) {
        let api: Api<Secret> = Api::namespaced(shared.client.clone(), &ns);
        // A missing or unreadable one is skipped, as kubelet does.
        secrets.insert(r.name.clone(), api.get_opt(&r.name).await.ok().flatten());
    }
    let credentials = super::spec::pull_credentials(pod, &secrets, image);
    let latest = !image.contains('@') && image.rsplit('/').next().is_some_and(|last| !last.contains(':') || last.ends_with(":latest"));
    let present = if latest {
        None
    } else {
        let (i, r) = (images.clone(), image.to_string());
        blocking(move || i.get(&r).ok()).await.flatten()
    };
    let found = match present {
        Some(found) => found,
        None => {
            super::post_event(shared, pod, Some(vm::LAUNCHER_CONTAINER), false, "Pulling", format!("Pulling image \"{image}\"")).await;
            let started = Instant::now();
            let (i, r) = (images.clone(), image.to_string());
            match blocking(move || super::pull_with(&i, &r, credentials)).await {
                Some(Ok(found)) => {
                    let msg = format!("Successfully pulled image \"{image}\" in {:.3}s", started.elapsed().as_secs_f64());
                    super::post_event(shared, pod, Some(vm::LAUNCHER_CONTAINER), false, "Pulled", msg).await;
                    found
                }
                Some(Err(e)) => return Err(format!("pulling disk image {image}: {e}")),
                None => return Err(format!("pulling disk image {image}: interrupted")),
            }
        }
    };
    let r = image.to_string();
    match blocking(move || strata_driver::vm::container_disk(&images, &found, &r)).await {
        Some(Ok(path)) => Ok(path),
        Some(Err(e)) => Err(e.to_string()),
        None => Err(format!("unpacking disk image {image}: interrupted")),
    }
}

/// Stop pod `uid`'s VMs as a pod deletion asks: the ACPI power button, forced when `grace` has
/// run out; then remove them (QEMU, tap, lease, overlay). Returns how many there were.
pub(crate) async fn terminate(shared: &Arc<Shared>, uid: &str, pod: Option<&Pod>, grace: Duration) -> usize {
    let Some(vms) = shared.vms.get().cloned() else { return 0 };
    let (u, v) = (uid.to_string(), vms.clone());
    let Some(Ok(found)) = blocking(move || vms_of(&v, &u)).await else { return 0 };
    for w in &found {
        if matches!(w.status, Status::Running | Status::Paused | Status::Created) {
            if let Some(p) = pod {
                super::post_event(shared, p, Some(vm::LAUNCHER_CONTAINER), false, "Killing", format!("Powering off virtual machine {} (ACPI power button)", w.name)).await;
            }
            let (v, id) = (vms.clone(), w.id.clone());
            let asked = Instant::now();
            match blocking(move || v.stop(&id, grace)).await {
                Some(Ok(exit)) => {
                    // The driver forces QEMU only once the grace period has run out: an earlier
                    // end is the guest's own power-off.
                    let took = asked.elapsed();
                    let (reason, message) = if took < grace {
                        ("PoweredOff", format!("Virtual machine {} powered off after the ACPI power button in {} s (exit {})", w.name, took.as_secs(), exit.code))
                    } else {
                        ("ForcedOff", format!("Virtual machine {} did not power off within {} s; stopped by force", w.name, grace.as_secs()))
                    };
                    if let Some(p) = pod {
                        super::post_event(shared, p, Some(vm::LAUNCHER_CONTAINER), reason == "ForcedOff", reason, message).await;
                    }
                }
                Some(Err(e)) => tracing::warn!(pod = %uid, vm = %w.id, error = %e, "stopping a VM"),
                None => {}
            }
        }
        let (v, id) = (vms.clone(), w.id.clone());
        if let Some(Err(e)) = blocking(move || v.delete(&id, true)).await {
            tracing::warn!(pod = %uid, vm = %w.id, error = %e, "removing a VM");
        }
    }
    found.len()
}

fn cond(pod: &Pod, type_: &str, status: &str, reason: Option<&str>, message: Option<&str>, now: &Time) -> PodCondition {
    // The transition time is kept while the status stays (a status read back compares equal).
    let old = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let since = old.filter(|c| c.status == status).and_then(|c| c.last_transition_time.clone()).unwrap_or_else(|| now.clone());
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.map(str::to_string),
        message: message.map(str::to_string),
        last_transition_time: Some(since),
        last_probe_time: None,
    }
}

fn finished_status(pod: &Pod, phase: &str, reason: &str, message: &str) -> PodStatus {
    PodStatus {
        phase: Some(phase.into()),
        reason: Some(reason.into()),
        message: Some(message.into()),
        start_time: pod.status.as_ref().and_then(|s| s.start_time.clone()),
        qos_class: Some("Burstable".into()),
        conditions: pod.status.as_ref().and_then(|s| s.conditions.clone()),
        ..Default::default()
    }
}

/// The launcher pod's status from its VM (`console`: whether it wrote to its console by the
/// boot timeout, and the message if not). Pure.
fn status(pod: &Pod, seen: &Seen, accelerator: Option<&(String, String)>, console: Option<&(bool, String)>, agent: Option<&Result<vm::GuestReport, String>>, host_ip: &str) -> PodStatus {
    let now = super::status::now();
    let image = vm::LAUNCHER_IMAGE.to_string();
    let (phase, state, ready, ip, reason, message) = match seen {
        Seen::Waiting(r, m) => {
            let w = ContainerStateWaiting { reason: Some(r.clone()), message: Some(m.clone()).filter(|m| !m.is_empty()) };
            ("Pending", ContainerState { waiting: Some(w), ..Default::default() }, false, None, None, None)
        }
        Seen::Lost => {
            let t = ContainerStateTerminated { exit_code: 255, reason: Some("VMLost".into()), message: Some("the VM was removed from the node".into()), finished_at: Some(now.clone()), ..Default::default() };
            ("Failed", ContainerState { terminated: Some(t), ..Default::default() }, false, None, Some("VMLost"), Some("the VM was removed from the node"))
        }
        Seen::Vm(w) => match (w.status, &w.exit) {
            (Status::Running | Status::Paused, _) => {
                // A paused guest serves nothing: the pod is not Ready while its vCPUs are stopped.
                let r = ContainerStateRunning { started_at: time(w.started_at.as_deref()).or(Some(now.clone())) };
                ("Running", ContainerState { running: Some(r), ..Default::default() }, w.status == Status::Running, w.ip.map(|i| i.to_string()), None, None)
            }
            (Status::Exited | Status::Unknown, exit) => {
                let code = exit.as_ref().map_or(255, |e| e.code);
                // A guest panic is a failure whatever QEMU's code (0 after the guest's reboot).
                let panicked = exit.as_ref().filter(|e| e.reason == ExitReason::GuestPanicked);
                let t = ContainerStateTerminated {
                    container_id: Some(format!("vm://{}", w.id)),
                    exit_code: code,
                    signal: exit.as_ref().and_then(|e| e.signal),
                    reason: Some(exit.as_ref().map_or("Unknown", |e| e.reason.as_str()).into()),
                    started_at: time(w.started_at.as_deref()),
                    finished_at: exit.as_ref().and_then(|e| time(Some(&e.finished_at))),
                    message: panicked.and_then(|e| e.message.clone()),
                };
                let phase = if code == 0 && panicked.is_none() { "Succeeded" } else { "Failed" };
                (phase, ContainerState { terminated: Some(t), ..Default::default() }, false, None, None, None)
            }
            (Status::Created, _) => {
                let w = ContainerStateWaiting { reason: Some("ContainerCreating".into()), message: None };
                ("Pending", ContainerState { waiting: Some(w), ..Default::default() }, false, None, None, None)
            }
        },
    };
    let container_id = match seen {
        Seen::Vm(w) => Some(format!("vm://{}", w.id)),
        _ => None,
    };
    let running = state.running.is_some();
    let r = if ready { "True" } else { "False" };
    let not_ready = (!ready).then_some("ContainersNotReady");
    let mut conditions = vec![
        cond(pod, "PodScheduled", "True", None, None, &now),
        cond(pod, "Initialized", "True", None, None, &now),
        cond(pod, "ContainersReady", r, not_ready, None, &now),
        cond(pod, "Ready", r, not_ready, None, &now),
    ];
    if let Some((accel, why)) = accelerator {
        let kvm = accel == "kvm";
        conditions.push(cond(pod, vm::KVM_CONDITION, if kvm { "True" } else { "False" }, Some(if kvm { "KVM" } else { "TCG" }), Some(why), &now));
    }
    if matches!(seen, Seen::Vm(w) if w.status == Status::Paused) {
        conditions.push(cond(pod, vm::PAUSED_CONDITION, "True", Some(vm::PAUSED), Some("the VM's vCPUs are paused"), &now));
    }
    match agent {
        Some(Ok(r)) => conditions.push(cond(pod, vm::AGENT_CONDITION, "True", Some(vm::AGENT_CONNECTED), serde_json::to_string(r).ok().as_deref(), &now)),
        Some(Err(why)) => conditions.push(cond(pod, vm::AGENT_CONDITION, "False", Some(vm::AGENT_NOT_CONNECTED), Some(why), &now)),
        None => {}
    }
    match console {
        Some((true, _)) => conditions.push(cond(pod, vm::CONSOLE_CONDITION, "True", Some("ConsoleOutput"), None, &now)),
        Some((false, why)) if running => conditions.push(cond(pod, vm::CONSOLE_CONDITION, "False", Some(vm::NO_CONSOLE_OUTPUT), Some(why), &now)),
        _ => {}
    }
    PodStatus {
        phase: Some(phase.into()),
        reason: reason.map(str::to_string),
        message: message.map(str::to_string),
        conditions: Some(conditions),
        host_ip: Some(host_ip.to_string()),
        host_ips: Some(vec![HostIP { ip: host_ip.to_string() }]),
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        start_time: pod.status.as_ref().and_then(|s| s.start_time.clone()).or(Some(now.clone())),
        qos_class: Some("Burstable".into()),
        container_statuses: Some(vec![ContainerStatus {
            name: vm::LAUNCHER_CONTAINER.into(),
            image: image.clone(),
            image_id: String::new(),
            container_id,
            ready,
            started: Some(running),
            restart_count: 0,
            state: Some(state),
            ..Default::default()
        }]),
        ..Default::default()
    }
}
