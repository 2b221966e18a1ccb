//! Namespaces kept alive without a process ("pinned"), as CRI-O's `pinns` does: a throwaway
//! thread unshares the namespace and bind-mounts its `/proc/thread-self/ns/<kind>` file onto a
//! path; containers then join it by that path (OCI `linux.namespaces[].path`), and it lives until
//! the path is unmounted. A pod sandbox pins its IPC and UTS namespaces this way (its network
//! namespace is pinned by [`crate::network::create_netns`]).

use std::io;
use std::path::{Path, PathBuf};

/// Where pinned IPC and UTS namespaces are bind-mounted (`<id>.ipc`, `<id>.uts`).
pub const NS_DIR: &str = "/run/strata/ns";

/// The kinds that can be pinned here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ipc,
    Uts,
}

impl Kind {
    fn proc_name(self) -> &'static str {
        match self {
            Kind::Ipc => "ipc",
            Kind::Uts => "uts",
        }
    }

    fn flag(self) -> nix::sched::CloneFlags {
        match self {
            Kind::Ipc => nix::sched::CloneFlags::CLONE_NEWIPC,
            Kind::Uts => nix::sched::CloneFlags::CLONE_NEWUTS,
        }
    }
}

/// The path a pinned namespace of `id` has.
pub fn pin_path(id: &str, kind: Kind) -> PathBuf {
    Path::new(NS_DIR).join(format!("{id}.{}", kind.proc_name()))
}

/// Create a new namespace of `kind` and pin it at `path`; a new UTS namespace gets `hostname`.
pub fn pin(path: &Path, kind: Kind, hostname: Option<&str>) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::File::create(path)?;
    let target = path.to_path_buf();
    let hostname = hostname.map(str::to_string);
    // unshare affects only the calling thread: do it on a thread of its own, which exits
    // after pinning (its namespaces then live on through the bind mount only).
    let result = std::thread::spawn(move || -> Result<(), nix::Error> {
        nix::sched::unshare(kind.flag())?;
        if let (Kind::Uts, Some(h)) = (kind, hostname.as_deref()) {
            nix::unistd::sethostname(h)?;
        }
        let source = format!("/proc/thread-self/ns/{}", kind.proc_name());
        nix::mount::mount(Some(source.as_str()), &target, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
    })
    .join()
    .unwrap_or(Err(nix::Error::EIO));
    if let Err(e) = result {
        let _ = std::fs::remove_file(path);
        return Err(io::Error::new(io::Error::from(e).kind(), format!("pinning a {} namespace at {}: {e}", kind.proc_name(), path.display())));
    }
    Ok(())
}

/// Unpin (unmount and remove) a namespace file; absent is fine.
pub fn unpin(path: &Path) -> io::Result<()> {
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs as root (like every strata test that touches host namespaces).
    #[test]
    fn pinned_uts_namespace_keeps_its_hostname() {
        let id = format!("nstest{}", std::process::id());
        let path = pin_path(&id, Kind::Uts);
        pin(&path, Kind::Uts, Some("pinned-host")).expect("pin");
        // Join it from a child process: `nsenter` is util-linux, always present here.
        let out = std::process::Command::new("nsenter").arg(format!("--uts={}", path.display())).arg("hostname").output().expect("nsenter");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pinned-host");
        unpin(&path).expect("unpin");
        assert!(!path.exists());
        unpin(&path).expect("twice is fine");
    }
}
