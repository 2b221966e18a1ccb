//! QEMU command lines and binaries.
//!
//! Every VM runs with its state directory as QEMU's working directory, so the sockets are
//! given by short relative names ([`QMP_SOCKET`], [`SERIAL_SOCKET`]) whatever the root's depth.

use std::ffi::OsStr;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::accel::Accel;

/// QMP control socket (QEMU listens).
pub const QMP_SOCKET: &str = "qmp.sock";
/// The serial port's chardev socket (QEMU listens; the supervisor is its one client).
pub const SERIAL_SOCKET: &str = "serial.sock";
/// The supervisor's console socket (the supervisor listens; any number of clients).
pub const CONSOLE_SOCKET: &str = "console.sock";
/// A second QMP monitor (QEMU listens), for the supervisor alone: it only listens for events
/// (`GUEST_PANICKED`), so the driver keeps [`QMP_SOCKET`] for its commands. Full VMs only.
pub const EVENTS_SOCKET: &str = "events.sock";

/// The default kernel command line. `earlyprintk=ttyS0` matters on `microvm` with ACPI: the
/// 8250 driver does not find the legacy port through ACPI there, the early console does.
/// `tsc_early_khz` and `no_timer_check` skip the early TSC/PIT calibration and the timer check,
/// where Debian's kernel under TCG on a busy host stalled in 3 of 8 boots (0 of 12 with them).
pub const DEFAULT_APPEND: &str = "console=ttyS0 earlyprintk=ttyS0 panic=-1 tsc_early_khz=2000000 no_timer_check";

/// What to boot and how big.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    /// Shown by `ps` (`-name`).
    pub name: String,
    pub accel: Accel,
    pub memory_mib: u64,
    pub cpus: u32,
    /// Direct kernel boot on the `microvm` machine. Without a kernel the VM boots its `disk`
    /// through firmware (SeaBIOS) on `q35`.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// The kernel command line (direct kernel boot only).
    pub append: String,
    /// The VM's own qcow2 overlay over its base image (the base is only read).
    #[serde(default)]
    pub disk: Option<PathBuf>,
    /// A cloud-init NoCloud seed, attached read-only.
    #[serde(default)]
    pub seed: Option<PathBuf>,
    /// The NIC, if any.
    #[serde(default)]
    pub net: Option<Nic>,
    /// A qcow2 disk the guest need not use: it holds `savevm` snapshots (VMs without a disk).
    pub state_disk: Option<PathBuf>,
    /// Start with the vCPUs stopped (`-S`); `cont` starts them.
    pub start_paused: bool,
    /// Drop to this uid (and the same gid) once the machine is built (`-runas`): files, taps
    /// and sockets are opened as root before.
    #[serde(default)]
    pub run_as: Option<u32>,
    /// The devices of a VM-isolated pod's microVM (its guest agent's channel, the shared directory).
    #[serde(default)]
    pub guest: Option<GuestDevices>,
}

/// The guest agent's channel is a virtio-serial port (`strata.agent`) whose host side is the
/// chardev socket [`AGENT_SOCKET`] (QEMU listens): this host has no `/dev/vhost-vsock`. The
/// directory `share` is exported over virtio-9p with tag `strata` (passthrough: QEMU must run as
/// root to keep the files' owners).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestDevices {
    pub share: Option<PathBuf>,
}

/// The guest agent's virtio-serial chardev socket (QEMU listens; one client at a time).
pub const AGENT_SOCKET: &str = "agent.sock";

/// A virtio NIC and its backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// `52:54:00:xx:xx:xx` (QEMU's locally administered prefix).
    pub mac: String,
    pub backend: NetBackend,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetBackend {
    /// QEMU's user-mode network (slirp): guest 10.0.2.15, gateway 10.0.2.2, no privileges;
    /// host ports reach the guest through `hostfwd` rules.
    User { forwards: Vec<Forward> },
    /// A tap device (created beforehand) that QEMU opens by name.
    Tap { ifname: String },
}

/// A host TCP port forwarded into the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// `None`: every host address.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub guest_port: u16,
}

/// The `-sandbox` policy: seccomp on, and no obsolete syscalls, privilege changes, process
/// spawning or resource-control calls (all sub-options QEMU 7.2 knows).
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";
/// The policy when QEMU drops to an unprivileged user with `-runas`: its own setuid happens
/// after the filter is installed, so set*id stays allowed; having dropped every privilege it
/// cannot regain any, and `spawn=deny` keeps it from executing set-uid programs.
pub const SANDBOX_RUNAS: &str = "on,obsolete=deny,spawn=deny,resourcecontrol=deny";

/// First uid/gid of the range unprivileged QEMUs run as (one per VM, none in /etc/passwd),
/// so that a compromised QEMU can touch neither the host nor another VM's QEMU.
pub const RUNAS_BASE: u32 = 1_900_000_000;

/// The uid (= gid) VM `id` (hex) runs QEMU as: [`RUNAS_BASE`] plus 24 bits of the id.
pub fn runas_id(id: &str) -> u32 {
    RUNAS_BASE + u32::from_str_radix(id.get(..6).unwrap_or("0"), 16).unwrap_or(0)
}

/// QEMU's arguments (without the binary) for `m`.
pub fn args(m: &Machine) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
    push(&["-name", &m.name]);
    // microvm boots a kernel directly (no firmware, no PCI): the fastest path. A disk image
    // boots through firmware on q35. ACPI gives the guest a power button, which graceful stop
    // presses.
    let (machine, bus) = if m.kernel.is_some() { ("microvm", "device") } else { ("q35", "pci") };
    match m.accel {
        Accel::Kvm => push(&["-machine", &format!("{machine},accel=kvm{}", acpi(machine)), "-cpu", "host"]),
        Accel::Tcg => push(&["-machine", &format!("{machine},accel=tcg{}", acpi(machine))]),
    }
    push(&["-m", &format!("{}M", m.memory_mib), "-smp", &m.cpus.to_string()]);
    push(&["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]);
    if m.start_paused {
        push(&["-S"]);
    }
    push(&["-qmp", &format!("unix:{QMP_SOCKET},server=on,wait=off")]);
    push(&["-chardev", &format!("socket,id=ser0,path={SERIAL_SOCKET},server=on,wait=off"), "-serial", "chardev:ser0"]);
    if let Some(k) = &m.kernel {
        push(&["-kernel", &k.to_string_lossy()]);
        if let Some(i) = &m.initrd {
            push(&["-initrd", &i.to_string_lossy()]);
        }
        push(&["-append", &m.append]);
    }
    // Commas in a -drive value are escaped by doubling.
    let file = |p: &Path| p.to_string_lossy().replace(',', ",,");
    if let Some(d) = &m.disk {
        push(&["-drive", &format!("if=none,id=disk0,format=qcow2,discard=unmap,file={}", file(d))]);
        let boot = if bus == "pci" { ",bootindex=0" } else { "" };
        push(&["-device", &format!("virtio-blk-{bus},drive=disk0{boot}")]);
    }
    if let Some(seed) = &m.seed {
        push(&["-drive", &format!("if=none,id=seed,format=raw,readonly=on,file={}", file(seed))]);
        push(&["-device", &format!("virtio-blk-{bus},drive=seed")]);
    }
    if let Some(d) = &m.state_disk {
        push(&["-drive", &format!("if=none,id=state,format=qcow2,file={}", file(d))]);
        push(&["-device", &format!("virtio-blk-{bus},drive=state")]);
    }
    // A balloon lets the host take memory back from a running guest (`set-memory`); the guest
    // may deflate it again under memory pressure rather than OOM. strata's own guest (which
    // loads virtio_balloon) also reports the pages it frees, which QEMU gives back to the host.
    let reporting = if m.guest.is_some() { ",free-page-reporting=on" } else { "" };
    push(&["-device", &format!("virtio-balloon-{bus},deflate-on-oom=on{reporting}")]);
    if m.guest.is_none() {
        // A guest kernel with the pvpanic driver (Debian's `pvpanic-mmio`, loaded by udev)
        // reports its panic through this ISA device: QMP `GUEST_PANICKED`, which the supervisor
        // hears on its own monitor (and it reads the console's panic line for other kernels).
        push(&["-device", "pvpanic"]);
        push(&["-chardev", &format!("socket,id=events,path={EVENTS_SOCKET},server=on,wait=off"), "-mon", "chardev=events,mode=control"]);
        // A full VM's guest may run the QEMU guest agent (`qemu-ga`): its port, which the node
        // asks about the guest (`crate::qga`); a guest without one never opens it.
        push(&["-chardev", &format!("socket,id=qga,path={},server=on,wait=off", crate::qga::QGA_SOCKET)]);
        push(&["-device", &format!("virtio-serial-{bus},id=qgaserial"), "-device", &format!("virtserialport,bus=qgaserial.0,chardev=qga,name={}", crate::qga::QGA_PORT)]);
    }
    if let Some(g) = &m.guest {
        push(&["-chardev", &format!("socket,id=agent,path={AGENT_SOCKET},server=on,wait=off")]);
        push(&["-device", &format!("virtio-serial-{bus}"), "-device", "virtserialport,chardev=agent,name=strata.agent"]);
        if let Some(dir) = &g.share {
            push(&["-fsdev", &format!("local,id=share,path={},security_model=passthrough", file(dir))]);
            push(&["-device", &format!("virtio-9p-{bus},fsdev=share,mount_tag=strata")]);
        }
    }
    if let Some(nic) = &m.net {
        push(&["-netdev", &netdev(&nic.backend)]);
        push(&["-device", &format!("virtio-net-{bus},netdev=net0,mac={}", nic.mac)]);
    }
    match m.run_as {
        Some(uid) => push(&["-runas", &format!("{uid}:{uid}"), "-sandbox", SANDBOX_RUNAS]),
        None => push(&["-sandbox", SANDBOX]),
    }
    a
}

fn acpi(machine: &str) -> &'static str {
    if machine == "microvm" {
        ",acpi=on"
    } else {
        ""
    }
}

/// The `-netdev` value for a backend.
fn netdev(b: &NetBackend) -> String {
    match b {
        NetBackend::User { forwards } => {
            let mut v = "user,id=net0".to_string();
            for f in forwards {
                let ip = match f.host_ip {
                    None => String::new(),
                    Some(IpAddr::V4(ip)) if ip.is_unspecified() => String::new(),
                    Some(IpAddr::V4(ip)) => ip.to_string(),
                    Some(IpAddr::V6(ip)) => format!("[{ip}]"),
                };
                v.push_str(&format!(",hostfwd=tcp:{ip}:{}-:{}", f.host_port, f.guest_port));
            }
            v
        }
        NetBackend::Tap { ifname } => {
            format!("tap,id=net0,ifname={ifname},script=no,downscript=no")
        }
    }
}

/// A stable MAC address for a VM id (hex): QEMU's 52:54:00 prefix and three bytes of the id.
pub fn mac_for(id: &str) -> String {
    let b = id.as_bytes();
    let byte = |i: usize| -> u8 {
        let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
        (hex(*b.get(2 * i).unwrap_or(&b'0')) << 4) | hex(*b.get(2 * i + 1).unwrap_or(&b'0'))
    };
    format!("52:54:00:{:02x}:{:02x}:{:02x}", byte(0), byte(1), byte(2))
}

/// Resolve a binary: the environment override `env` if set, else `default` on `PATH`.
pub fn find_binary(env: &str, default: &str) -> Result<PathBuf, String> {
    let wanted = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default));
    if wanted.components().count() > 1 {
        return if is_executable(&wanted) {
            Ok(wanted)
        } else {
            Err(format!("QEMU binary {} not found (set by {env})", wanted.display()))
        };
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(&wanted))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            format!("{} not found on PATH (install qemu-system-x86 / qemu-utils, or set {env})", wanted.display())
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The `qemu-system-x86_64` binary (`STRATA_QEMU` overrides).
pub fn qemu_binary() -> Result<PathBuf, String> {
    find_binary("STRATA_QEMU", "qemu-system-x86_64")
}

/// The `qemu-img` binary (`STRATA_QEMU_IMG` overrides).
pub fn qemu_img_binary() -> Result<PathBuf, String> {
    find_binary("STRATA_QEMU_IMG", "qemu-img")
}

/// Create an empty qcow2 image of `size_mib`.
pub fn create_qcow2(qemu_img: &Path, path: &Path, size_mib: u64) -> Result<(), String> {
    let size = format!("{size_mib}M");
    qemu_img_run(
        qemu_img,
        &[
            OsStr::new("create"),
            OsStr::new("-q"),
            OsStr::new("-f"),
            OsStr::new("qcow2"),
            path.as_os_str(),
            OsStr::new(&size),
        ],
    )
    .map(drop)
    .map_err(|e| format!("qemu-img create {}: {e}", path.display()))
}

/// What `qemu-img info` says about a disk image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// `qcow2`, `raw`, `vmdk`, ...
    pub format: String,
    pub virtual_size: u64,
}

/// Inspect a disk image (format probing is done once here, then always passed explicitly, so a
/// raw image whose content looks like another format can never be misread later).
pub fn image_info(qemu_img: &Path, path: &Path) -> Result<ImageInfo, String> {
    let out =
        qemu_img_run(qemu_img, &[OsStr::new("info"), OsStr::new("--output=json"), OsStr::new("-U"), path.as_os_str()])?;
    #[derive(Deserialize)]
    struct Info {
        format: String,
        #[serde(rename = "virtual-size")]
        virtual_size: u64,
    }
    let info: Info = serde_json::from_slice(&out).map_err(|e| format!("unreadable qemu-img info output: {e}"))?;
    Ok(ImageInfo { format: info.format, virtual_size: info.virtual_size })
}

/// Create a qcow2 overlay at `path` whose backing file is `base` (read, never written).
/// `size` (bytes) grows the virtual disk; `None` keeps the base's size.
pub fn create_overlay(
    qemu_img: &Path,
    path: &Path,
    base: &Path,
    base_format: &str,
    size: Option<u64>,
) -> Result<(), String> {
    let mut args =
        vec![OsStr::new("create"), OsStr::new("-q"), OsStr::new("-f"), OsStr::new("qcow2"), OsStr::new("-b")];
    args.extend([base.as_os_str(), OsStr::new("-F"), OsStr::new(base_format), path.as_os_str()]);
    let size = size.map(|s| s.to_string());
    if let Some(s) = &size {
        args.push(OsStr::new(s));
    }
    qemu_img_run(qemu_img, &args).map(drop).map_err(|e| format!("qemu-img create {}: {e}", path.display()))
}

fn qemu_img_run(qemu_img: &Path, args: &[&OsStr]) -> Result<Vec<u8>, String> {
    let out = Command::new(qemu_img).args(args).output().map_err(|e| format!("running {}: {e}", qemu_img.display()))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(last_line(&String::from_utf8_lossy(&out.stderr)))
    }
}

/// The last non-empty line of QEMU's diagnostics, without the program-name prefix.
pub fn last_line(text: &str) -> String {
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no diagnostics");
    match line.split_once(": ") {
        Some((prog, rest)) if prog.starts_with("qemu") => rest.to_string(),
        _ => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            name: "demo".into(),
            accel: Accel::Tcg,
            memory_mib: 256,
            cpus: 1,
            kernel: Some("/k/vmlinuz".into()),
            initrd: Some("/k/initrd".into()),
            append: DEFAULT_APPEND.into(),
            disk: None,
            seed: None,
            net: None,
            state_disk: Some("/v/a,b/state.qcow2".into()),
            start_paused: true,
            run_as: None,
            guest: None,
        }
    }

    fn has(a: &[String], pair: [&str; 2]) -> bool {
        a.windows(2).any(|w| w[0] == pair[0] && w[1] == pair[1])
    }

    #[test]
    fn command_line() {
        let a = args(&machine());
        assert!(has(&a, ["-name", "demo"]));
        assert!(has(&a, ["-machine", "microvm,accel=tcg,acpi=on"]));
        assert!(has(&a, ["-m", "256M"]));
        assert!(has(&a, ["-qmp", "unix:qmp.sock,server=on,wait=off"]));
        assert!(has(&a, ["-serial", "chardev:ser0"]));
        assert!(has(&a, ["-sandbox", SANDBOX]));
        assert!(has(&a, ["-drive", "if=none,id=state,format=qcow2,file=/v/a,,b/state.qcow2"]));
        assert!(a.contains(&"-S".to_string()) && a.contains(&"-no-reboot".to_string()));
        let mut m = machine();
        m.accel = Accel::Kvm;
        m.start_paused = false;
        let a = args(&m);
        assert!(has(&a, ["-cpu", "host"]) && !a.contains(&"-S".to_string()));
    }

    #[test]
    fn disk_boot_and_networks() {
        let mut m = machine();
        m.kernel = None;
        m.state_disk = None;
        m.disk = Some("/v/disk.qcow2".into());
        m.seed = Some("/v/seed.img".into());
        m.net = Some(Nic {
            mac: mac_for("0a1b2c3d"),
            backend: NetBackend::User {
                forwards: vec![
                    Forward { host_ip: None, host_port: 2222, guest_port: 22 },
                    Forward { host_ip: Some([127, 0, 0, 1].into()), host_port: 8080, guest_port: 80 },
                ],
            },
        });
        let a = args(&m);
        assert!(has(&a, ["-machine", "q35,accel=tcg"]));
        assert!(!a.contains(&"-kernel".to_string()) && !a.contains(&"-append".to_string()));
        assert!(has(&a, ["-drive", "if=none,id=disk0,format=qcow2,discard=unmap,file=/v/disk.qcow2"]));
        assert!(has(&a, ["-device", "virtio-blk-pci,drive=disk0,bootindex=0"]));
        assert!(has(&a, ["-drive", "if=none,id=seed,format=raw,readonly=on,file=/v/seed.img"]));
        assert!(has(&a, ["-netdev", "user,id=net0,hostfwd=tcp::2222-:22,hostfwd=tcp:127.0.0.1:8080-:80"]));
        assert!(has(&a, ["-device", "virtio-net-pci,netdev=net0,mac=52:54:00:0a:1b:2c"]));
        assert!(has(&a, ["-device", "virtio-balloon-pci,deflate-on-oom=on"]));
        m.kernel = Some("/k".into());
        m.net = Some(Nic { mac: mac_for("ff"), backend: NetBackend::Tap { ifname: "vt1".into() } });
        let a = args(&m);
        assert!(has(&a, ["-device", "virtio-blk-device,drive=disk0"]));
        assert!(has(&a, ["-netdev", "tap,id=net0,ifname=vt1,script=no,downscript=no"]));
        assert!(has(&a, ["-device", "virtio-net-device,netdev=net0,mac=52:54:00:ff:00:00"]));
        m.run_as = Some(runas_id("0000ff"));
        let a = args(&m);
        assert!(has(&a, ["-runas", "1900000255:1900000255"]) && has(&a, ["-sandbox", SANDBOX_RUNAS]));
        // A full VM: the QEMU guest agent's port, and neither strata's agent nor a share.
        assert!(has(&a, ["-chardev", "socket,id=qga,path=qga.sock,server=on,wait=off"]));
        assert!(has(&a, ["-device", "pvpanic"]) && has(&a, ["-mon", "chardev=events,mode=control"]));
        assert!(has(&a, ["-chardev", "socket,id=events,path=events.sock,server=on,wait=off"]));
        assert!(has(&a, ["-device", "virtio-serial-device,id=qgaserial"]) && has(&a, ["-device", "virtserialport,bus=qgaserial.0,chardev=qga,name=org.qemu.guest_agent.0"]));
        assert!(!a.iter().any(|x| x.contains("strata.agent") || x.contains("9p")));
        m.guest = Some(GuestDevices { share: Some("/s/a,b".into()) });
        let a = args(&m);
        assert!(!a.iter().any(|x| x.contains("qga")), "a VM-isolated pod's guest runs strata's agent only");
        assert!(!a.iter().any(|x| x == "pvpanic" || x.contains(EVENTS_SOCKET)), "no pvpanic or event monitor in a microVM: {a:?}");
        assert!(has(&a, ["-chardev", "socket,id=agent,path=agent.sock,server=on,wait=off"]));
        assert!(has(&a, ["-device", "virtio-serial-device"]) && has(&a, ["-device", "virtserialport,chardev=agent,name=strata.agent"]));
        assert!(has(&a, ["-fsdev", "local,id=share,path=/s/a,,b,security_model=passthrough"]));
        assert!(has(&a, ["-device", "virtio-9p-device,fsdev=share,mount_tag=strata"]));
        assert!(has(&a, ["-device", "virtio-balloon-device,deflate-on-oom=on,free-page-reporting=on"]));
    }

    #[test]
    fn diagnostics() {
        assert_eq!(last_line("x\nqemu-system-x86_64: could not load kernel '/x'\n\n"), "could not load kernel '/x'");
        assert_eq!(last_line(""), "no diagnostics");
    }
}
