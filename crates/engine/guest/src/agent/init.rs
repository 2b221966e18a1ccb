//! PID 1's setup: the pseudo filesystems, the kernel modules the host packed into the
//! initramfs, the host's shared directory, and the host channel (a virtio-serial port).

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};

use super::note;
use crate::protocol::{PORT_NAME, SHARE_MOUNT, SHARE_TAG};

/// The initramfs's list of modules to load, in order (written by the host: dependencies first).
pub const MODULE_ORDER: &str = "/lib/modules/order";

pub fn setup() {
    // Without a console the kernel gives init no fds 0-2: fill them so no pipe lands there.
    loop {
        // SAFETY: open(2) of a constant path; kept open for the life of PID 1.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        if fd < 0 || fd > 2 {
            if fd > 2 {
                // SAFETY: closing the fd just opened.
                unsafe { libc::close(fd) };
            }
            break;
        }
    }
    for (src, dir, fstype, flags) in [
        ("proc", "/proc", "proc", MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC),
        ("sysfs", "/sys", "sysfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC),
        ("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID),
        ("tmpfs", "/run", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV),
        ("tmpfs", "/tmp", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV),
    ] {
        let _ = std::fs::create_dir_all(dir);
        if let Err(e) = mount(Some(src), dir, Some(fstype), flags, None::<&str>) {
            note!("mount {dir}: {e}");
        }
    }
    // Terminals of streamed execs (`kubectl exec -t`); devtmpfs's /dev/ptmx opens this one.
    let _ = std::fs::create_dir_all("/dev/pts");
    if let Err(e) = mount(Some("devpts"), "/dev/pts", Some("devpts"), MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("gid=5,mode=0620,ptmxmode=0666")) {
        note!("mount /dev/pts: {e}");
    }
    // Containers' limits: cgroup v2 with the cpu, memory and pids controllers for the
    // containers' cgroups (the root cgroup, where the agent stays, may hold processes).
    match mount(Some("cgroup2"), "/sys/fs/cgroup", Some("cgroup2"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None::<&str>) {
        Ok(()) => {
            if let Err(e) = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+cpu +memory +pids") {
                note!("enabling cgroup controllers: {e}");
            }
        }
        Err(e) => note!("mount /sys/fs/cgroup: {e}"),
    }
    load_modules();
    let _ = std::fs::create_dir_all(SHARE_MOUNT);
    // The share is optional (a VM without one serves containers from elsewhere).
    if let Err(e) = mount(Some(SHARE_TAG), SHARE_MOUNT, Some("9p"), MsFlags::empty(), Some("trans=virtio,version=9p2000.L,msize=262144,cache=none")) {
        note!("no shared directory ({SHARE_TAG}): {e}");
    }
}

fn load_modules() {
    let Ok(order) = std::fs::read_to_string(MODULE_ORDER) else {
        return;
    };
    for name in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = format!("/lib/modules/{name}.ko");
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                note!("module {name}: {e}");
                continue;
            }
        };
        // SAFETY: finit_module(2) with an open fd and empty parameters.
        let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), c"".as_ptr(), 0) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                note!("module {name}: {e}");
            }
        }
    }
}

/// The host channel: the virtio-serial port named [`PORT_NAME`] (its device appears shortly
/// after the console driver loads), else, for running outside a VM, `STRATA_GUEST_PORT`.
pub fn open_port() -> std::io::Result<File> {
    if let Ok(p) = std::env::var("STRATA_GUEST_PORT") {
        return File::options().read(true).write(true).open(p);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(dir) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in dir.flatten() {
                let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if name.trim() == PORT_NAME {
                    let dev = Path::new("/dev").join(e.file_name());
                    if let Ok(f) = File::options().read(true).write(true).open(&dev) {
                        return Ok(f);
                    }
                }
            }
        }
        if Instant::now() > deadline {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("no virtio-serial port named {PORT_NAME}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The port as input: a read while no host is connected returns 0 (not the end of the stream:
/// the host may connect again), so wait and read again.
pub struct Port(pub File);

impl Read for Port {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.0.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let mut pfd = libc::pollfd { fd: self.0.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: poll(2) on one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, 100) };
            if pfd.revents & libc::POLLHUP != 0 {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

pub fn power_off() -> ! {
    nix::unistd::sync();
    // SAFETY: reboot(2) with the power-off command, as PID 1.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    // If that failed, exiting PID 1 panics the kernel, which `panic=-1` and `-no-reboot` turn
    // into QEMU's exit.
    std::process::exit(1)
}

