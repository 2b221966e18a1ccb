//! QEMU command lines and binaries.
//!
//! Every VM runs with its state directory as QEMU's working directory, so the sockets are
//! given by short relative names ([`QMP_SOCKET`], [`SERIAL_SOCKET`]) whatever the root's depth.

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
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub append: String,
    /// A qcow2 disk the guest need not use: it holds `savevm` snapshots.
    pub state_disk: Option<PathBuf>,
    /// Start with the vCPUs stopped (`-S`); `cont` starts them.
    pub start_paused: bool,
}

/// The `-sandbox` policy: seccomp on, and no obsolete syscalls, privilege changes, process
/// spawning or resource-control calls (all sub-options QEMU 7.2 knows).
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// QEMU's arguments (without the binary) for `m`.
pub fn args(m: &Machine) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
    push(&["-name", &m.name]);
    // microvm boots a kernel directly (no firmware, no PCI): the fastest path. ACPI on gives the
    // guest a power button, which graceful stop presses.
    match m.accel {
        Accel::Kvm => push(&["-machine", "microvm,accel=kvm,acpi=on", "-cpu", "host"]),
        Accel::Tcg => push(&["-machine", "microvm,accel=tcg,acpi=on"]),
    }
    push(&["-m", &format!("{}M", m.memory_mib), "-smp", &m.cpus.to_string()]);
    push(&["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]);
    if m.start_paused {
        push(&["-S"]);
    }
    push(&["-qmp", &format!("unix:{QMP_SOCKET},server=on,wait=off")]);
    push(&["-chardev", &format!("socket,id=ser0,path={SERIAL_SOCKET},server=on,wait=off"), "-serial", "chardev:ser0"]);
    push(&["-kernel", &m.kernel.to_string_lossy()]);
    if let Some(i) = &m.initrd {
        push(&["-initrd", &i.to_string_lossy()]);
    }
    push(&["-append", &m.append]);
    if let Some(d) = &m.state_disk {
        // Commas in a -drive value are escaped by doubling.
        let file = d.to_string_lossy().replace(',', ",,");
        push(&["-drive", &format!("if=none,id=state,format=qcow2,file={file}"), "-device", "virtio-blk-device,drive=state"]);
    }
    push(&["-sandbox", SANDBOX]);
    a
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
        .ok_or_else(|| format!("{} not found on PATH (install qemu-system-x86 / qemu-utils, or set {env})", wanted.display()))
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
    let out = Command::new(qemu_img)
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(format!("{size_mib}M"))
        .output()
        .map_err(|e| format!("running {}: {e}", qemu_img.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("qemu-img create {}: {}", path.display(), last_line(&String::from_utf8_lossy(&out.stderr))))
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
            kernel: "/k/vmlinuz".into(),
            initrd: Some("/k/initrd".into()),
            append: DEFAULT_APPEND.into(),
            state_disk: Some("/v/a,b/state.qcow2".into()),
            start_paused: true,
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
    fn diagnostics() {
        assert_eq!(last_line("x\nqemu-system-x86_64: could not load kernel '/x'\n\n"), "could not load kernel '/x'");
        assert_eq!(last_line(""), "no diagnostics");
    }
}
