//! The VM engine: QEMU virtual machines, controlled over QMP.
//!
//! - [`qemu`] builds QEMU command lines and finds the binaries (`STRATA_QEMU`, `STRATA_QEMU_IMG`).
//! - [`qmp`] is a small typed QMP client (greeting, capabilities, commands, events).
//! - [`qga`] asks a guest that runs the QEMU guest agent about itself (OS, hostname, interfaces).
//! - [`accel`] decides KVM or TCG by a real probe boot, never by the mere presence of `/dev/kvm`.
//! - [`seed`] writes cloud-init NoCloud seeds (a FAT image labelled CIDATA).
//! - [`supervisor`] is the per-VM process (`strata __vmlog CONFIG`) that launches QEMU, keeps its
//!   serial console in a rotated CRI-format log, multiplexes the console to attached clients and
//!   records how QEMU exited.
//!
//! **Invariant:** this crate knows nothing about the driver interface, names or ids: it takes
//! paths and plain values, like `strata-oci` for containers. The supervisor plumbing it shares
//! with the container shim (spawn protocol, exit records, logs, port proxy) is `strata-supervise`.

pub mod accel;
pub mod agent;
pub mod initramfs;
pub mod qemu;
pub mod qga;
pub mod qmp;
pub mod seed;
pub mod supervisor;

use std::os::unix::net::UnixStream;
use std::path::Path;

pub use strata_supervise::util::{process_alive, process_start_time, wait_pid_exit, write_atomic};

/// Connect to a Unix socket, also when its path is longer than `sun_path` (108 bytes): deep
/// state roots are common, so long paths go through `/proc/self/fd/<dir fd>/<name>`.
pub fn connect_unix(path: &Path) -> std::io::Result<UnixStream> {
    if path.as_os_str().len() < 100 {
        return UnixStream::connect(path);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| std::io::Error::other("socket path without a file name"))?;
    let d = std::fs::File::open(dir)?;
    let short = Path::new("/proc/self/fd").join(std::os::fd::AsRawFd::as_raw_fd(&d).to_string()).join(name);
    let s = UnixStream::connect(short);
    drop(d);
    s
}
