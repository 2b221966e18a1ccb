//! A container's root filesystem: an overlayfs mount of the image's unpacked layers (shared,
//! read-only) under a per-container upper directory, plus the generated `/etc` files.

use std::path::{Path, PathBuf};

use crate::Error;

/// Mount `layers` (bottom first) with `upper`/`work` at `target`. A `volatile` mount (for
/// containers removed when they exit) skips every sync of the upper directory, including the
/// one at unmount; its upper directory cannot be mounted again after a host crash, which a
/// container that never restarts does not need. Kernels before 5.10 get a normal mount.
pub fn mount_overlay(layers: &[PathBuf], upper: &Path, work: &Path, target: &Path, volatile: bool) -> Result<(), Error> {
    if layers.is_empty() {
        return Err(Error::InvalidArgument("image has no layers".into()));
    }
    // overlayfs lists lower dirs top first.
    let lower: Vec<String> = layers.iter().rev().map(|p| p.display().to_string()).collect();
    for p in layers.iter().chain([upper.to_path_buf(), work.to_path_buf()].iter()) {
        if p.to_string_lossy().contains([',', ':']) {
            return Err(Error::Internal(format!("path {} cannot be used in an overlay mount", p.display())));
        }
    }
    let data = format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), upper.display(), work.display());
    if data.len() >= 4000 {
        return Err(Error::Unsupported(format!("images with {} layers (overlay mount options too long)", layers.len())));
    }
    let mount = |data: &str| nix::mount::mount(Some("overlay"), target, Some("overlay"), nix::mount::MsFlags::empty(), Some(data));
    let result = match volatile {
        true => mount(&format!("{data},volatile")).or_else(|e| if e == nix::errno::Errno::EINVAL { mount(&data) } else { Err(e) }),
        false => mount(&data),
    };
    result.map_err(|e| Error::Io { context: format!("mounting overlay rootfs at {}", target.display()), source: e.into() })
}

/// Unmount a rootfs if mounted. Lazy as a last resort so a stuck reference cannot wedge delete.
pub fn unmount(target: &Path) -> Result<(), Error> {
    if !is_mountpoint(target) {
        return Ok(());
    }
    match nix::mount::umount(target) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| Error::Io { context: format!("unmounting {}", target.display()), source: e.into() }),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::Io { context: format!("unmounting {}", target.display()), source: e.into() }),
    }
}

/// Is `path` the root of a mount? (Its device differs from its parent's, or it is listed.)
pub fn is_mountpoint(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(m), Some(parent)) = (std::fs::metadata(path), path.parent()) else { return false };
    match std::fs::metadata(parent) {
        Ok(pm) if pm.dev() != m.dev() => true,
        // overlay on the same device as its parent is rare; fall back to the mount table.
        _ => std::fs::read_to_string("/proc/self/mountinfo")
            .map(|t| {
                let p = path.display().to_string();
                t.lines().any(|l| l.split(' ').nth(4) == Some(p.as_str()))
            })
            .unwrap_or(false),
    }
}

/// Create `cwd` inside the rootfs if missing (as Docker does for WORKDIR), refusing to walk
/// through symlinks so an image cannot make strata create directories on the host.
pub fn ensure_dir(rootfs: &Path, cwd: &str, uid: u32, gid: u32) -> Result<(), Error> {
    let mut p = rootfs.to_path_buf();
    for part in cwd.split('/').filter(|s| !s.is_empty() && *s != ".") {
        if part == ".." {
            return Err(Error::InvalidArgument(format!("working directory {cwd:?} must not contain '..'")));
        }
        p.push(part);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => return Ok(()), // leave it to the runtime, inside the container
            Ok(_) => {}
            Err(_) => {
                std::fs::create_dir(&p).map_err(Error::io(format!("creating working directory {cwd}")))?;
                let _ = nix::unistd::chown(&p, Some(uid.into()), Some(gid.into()));
            }
        }
    }
    Ok(())
}

/// Write `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` for the container into `dir`;
/// returns (host file, container path) pairs to bind-mount.
pub fn etc_files(dir: &Path, hostname: &str, ip: Option<std::net::IpAddr>) -> Result<Vec<(PathBuf, PathBuf)>, Error> {
    let mut hosts = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    match ip {
        Some(ip) => hosts.push_str(&format!("{ip}\t{hostname}\n")),
        None => hosts.push_str(&format!("127.0.1.1\t{hostname}\n")),
    }
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let files = [("hostname", format!("{hostname}\n")), ("hosts", hosts), ("resolv.conf", resolv)];
    let mut out = Vec::new();
    for (name, content) in files {
        let host = dir.join(name);
        std::fs::write(&host, content).map_err(Error::io(format!("writing {}", host.display())))?;
        out.push((host, PathBuf::from("/etc").join(name)));
    }
    Ok(out)
}
