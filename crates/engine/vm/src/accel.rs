//! Acceleration: KVM only when a real guest is seen to run under it, TCG otherwise.
//!
//! A working `/dev/kvm` proves little: under broken nested virtualisation `KVM_CREATE_VM` and
//! `KVM_CREATE_VCPU` succeed and a real kernel still hangs. So the probe boots the VM's own
//! kernel under KVM with no root filesystem (`root=/dev/strata-probe`, `panic=-1`,
//! `-no-reboot`): a kernel that runs reaches "Kernel panic" and QEMU exits by itself within a
//! few seconds; anything else (QEMU errors, a hang past the timeout) means TCG. A VM that boots
//! from a disk image has no kernel to probe with; then a 16-byte boot sector of ours runs under
//! KVM behind SeaBIOS and must write to the `isa-debug-exit` port (a weaker proof: it does not
//! exercise a kernel's timer setup, where broken nested KVM usually hangs). The verdict is
//! cached per host boot and QEMU binary, so one probe serves every later VM.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The verdict and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub accel: Accel,
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Cached {
    boot_id: String,
    qemu: PathBuf,
    decision: Decision,
}

/// How long a probe boot may take before KVM counts as broken.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(8);

/// Decide the accelerator. `STRATA_VM_ACCEL=kvm|tcg` forces it; otherwise a cached verdict
/// (in `cache`) or a probe boot of `kernel` (or of a boot sector without one) decides.
pub fn decide(qemu: &Path, kernel: Option<&Path>, cache: &Path) -> Decision {
    match std::env::var("STRATA_VM_ACCEL").as_deref() {
        Ok("tcg") => return Decision { accel: Accel::Tcg, reason: "forced by STRATA_VM_ACCEL".into() },
        Ok("kvm") => return Decision { accel: Accel::Kvm, reason: "forced by STRATA_VM_ACCEL".into() },
        _ => {}
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return Decision { accel: Accel::Tcg, reason: format!("/dev/kvm: {e}") };
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_string();
    if let Ok(c) = std::fs::read(cache).map_err(drop).and_then(|b| serde_json::from_slice::<Cached>(&b).map_err(drop)) {
        if c.boot_id == boot_id && c.qemu == qemu {
            return c.decision;
        }
    }
    let (decision, conclusive) = match kernel {
        Some(k) => probe(qemu, k, cache.with_extension("probe.log").as_path()),
        None => probe_boot_sector(qemu, cache.with_extension("probe.img").as_path()),
    };
    if !conclusive {
        return decision;
    }
    let json = serde_json::to_vec(&Cached { boot_id, qemu: qemu.to_path_buf(), decision: decision.clone() });
    if let Ok(json) = json {
        let _ = crate::write_atomic(cache, &json);
    }
    decision
}

/// The verdict, and whether it says something about the host (rather than about this kernel or
/// a QEMU that cannot run at all): only conclusive verdicts are cached.
fn probe(qemu: &Path, kernel: &Path, serial_log: &Path) -> (Decision, bool) {
    let tcg = |reason: String, conclusive: bool| (Decision { accel: Accel::Tcg, reason }, conclusive);
    let _ = std::fs::remove_file(serial_log);
    let mut cmd = Command::new(qemu);
    cmd.args(["-machine", "microvm,accel=kvm", "-cpu", "host", "-m", "128M", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-no-reboot", "-serial"])
        .arg(format!("file:{}", serial_log.display()))
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1 root=/dev/strata-probe"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let (status, stderr) = match run_probe(cmd) {
        Ok(r) => r,
        Err(e) => return tcg(format!("cannot run the KVM probe: {e}"), false),
    };
    let serial = std::fs::read_to_string(serial_log).unwrap_or_default();
    let _ = std::fs::remove_file(serial_log);
    match status {
        None => tcg(format!("a probe guest did not finish booting under KVM within {PROBE_TIMEOUT:?}"), true),
        Some(_) if serial.contains("Kernel panic") => {
            (Decision { accel: Accel::Kvm, reason: "a probe guest booted under KVM".into() }, true)
        }
        Some(_) => {
            // A kernel QEMU cannot load says nothing about KVM: decide TCG for now, probe again
            // with the next kernel.
            let why = crate::qemu::last_line(&stderr);
            let conclusive = !why.to_ascii_lowercase().contains("kernel");
            tcg(format!("KVM probe failed: {why}"), conclusive)
        }
    }
}

/// Real-mode code: `mov al,0x10; out 0xf4,al` (QEMU exits with status 0x10 << 1 | 1 = 33),
/// then `hlt` in a loop; padded to a sector with the 0x55AA boot signature.
const BOOT_SECTOR_CODE: [u8; 7] = [0xb0, 0x10, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd];
const BOOT_SECTOR_EXIT: i32 = 33;

fn probe_boot_sector(qemu: &Path, image: &Path) -> (Decision, bool) {
    let tcg = |reason: String, conclusive: bool| (Decision { accel: Accel::Tcg, reason }, conclusive);
    let mut sector = [0u8; 512];
    sector[..BOOT_SECTOR_CODE.len()].copy_from_slice(&BOOT_SECTOR_CODE);
    sector[510] = 0x55;
    sector[511] = 0xaa;
    if let Err(e) = std::fs::write(image, sector) {
        return tcg(format!("cannot write the KVM probe image {}: {e}", image.display()), false);
    }
    let mut cmd = Command::new(qemu);
    cmd.args(["-machine", "pc,accel=kvm", "-cpu", "host", "-m", "16M", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x4", "-drive"])
        .arg(format!("file={},format=raw,if=ide", image.display().to_string().replace(',', ",,")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let outcome = run_probe(cmd);
    let _ = std::fs::remove_file(image);
    match outcome {
        Err(e) => tcg(format!("cannot run the KVM probe: {e}"), false),
        Ok((None, _)) => tcg(format!("a probe boot sector did not run under KVM within {PROBE_TIMEOUT:?}"), true),
        Ok((Some(status), _)) if status.code() == Some(BOOT_SECTOR_EXIT) => {
            (Decision { accel: Accel::Kvm, reason: "a probe boot sector ran under KVM".into() }, true)
        }
        Ok((Some(_), stderr)) => tcg(format!("KVM probe failed: {}", crate::qemu::last_line(&stderr)), true),
    }
}

/// Run a probe QEMU for at most [`PROBE_TIMEOUT`]: its exit status (`None` after a kill at the
/// deadline) and its stderr.
fn run_probe(mut cmd: Command) -> std::io::Result<(Option<std::process::ExitStatus>, String)> {
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    Ok((status, stderr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qemu_that_cannot_run_means_tcg() {
        let dir = tempfile::tempdir().expect("tmp");
        let (d, conclusive) =
            probe(Path::new("/nonexistent/qemu"), Path::new("/nonexistent/k"), &dir.path().join("p.log"));
        assert_eq!(d.accel, Accel::Tcg);
        assert!(!conclusive, "a missing QEMU is not cached as a verdict");
        // `false` exits at once without a panic message: not proof of a running guest.
        let (d, _) = probe(Path::new("/bin/false"), Path::new("/nonexistent/k"), &dir.path().join("p.log"));
        assert_eq!(d.accel, Accel::Tcg, "{d:?}");
        let (d, conclusive) = probe_boot_sector(Path::new("/nonexistent/qemu"), &dir.path().join("p.img"));
        assert_eq!(d.accel, Accel::Tcg);
        assert!(!conclusive);
        assert!(!dir.path().join("p.img").exists(), "the probe image is removed");
    }

    /// The boot sector really runs and exits through isa-debug-exit (checked under TCG, which
    /// every machine has; the probe itself asks for KVM).
    #[test]
    fn the_probe_boot_sector_exits_qemu() {
        let qemu = crate::qemu::qemu_binary().expect("QEMU (scripts/test.sh installs it)");
        let dir = tempfile::tempdir().expect("tmp");
        let img = dir.path().join("p.img");
        let mut sector = [0u8; 512];
        sector[..BOOT_SECTOR_CODE.len()].copy_from_slice(&BOOT_SECTOR_CODE);
        sector[510..].copy_from_slice(&[0x55, 0xaa]);
        std::fs::write(&img, sector).expect("write");
        let mut cmd = Command::new(qemu);
        cmd.args(["-machine", "pc,accel=tcg", "-m", "16M", "-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x4", "-drive"])
            .arg(format!("file={},format=raw,if=ide", img.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let (status, stderr) = run_probe(cmd).expect("run");
        assert_eq!(status.and_then(|s| s.code()), Some(BOOT_SECTOR_EXIT), "{stderr}");
    }
}
