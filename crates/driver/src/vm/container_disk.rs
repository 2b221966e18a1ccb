//! KubeVirt's containerDisk: a VM's disk image carried in an OCI image, as the one file in its
//! `/disk` directory (`FROM scratch` + `ADD disk.qcow2 /disk/`). The image is pulled and unpacked
//! by the ordinary image store; this finds the disk in the image's unpacked layers, where the VM
//! then uses it in place as the read-only base of its overlay (QEMU never writes it).
//!
//! Layers are unpacked one by one (overlayfs lowerdirs), so `/disk` is read as overlayfs would
//! merge it: top layer first, whiteouts (character devices 0/0) hiding lower entries, an opaque
//! directory (`trusted.overlay.opaque=y`) or a non-directory `/disk` hiding lower layers.

use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use strata_image::{get_xattr, Image, ImageStore};

use crate::Error;

/// Where a containerDisk image keeps its disk (KubeVirt's convention).
pub const DISK_DIR: &str = "disk";

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// The disk file of `image` (named `reference` in errors): its layers are unpacked if they are
/// not yet, and the one regular file of its merged `/disk` directory is returned.
pub fn container_disk(images: &ImageStore, image: &Image, reference: &str) -> Result<PathBuf, Error> {
    let layers = images.layers(image)?;
    find_disk(&layers, reference)
}

fn opaque(dir: &Path) -> bool {
    get_xattr(dir, OPAQUE_XATTR).ok().flatten().is_some_and(|v| v == b"y")
}

/// The one regular file in the merged `/disk` of `layers` (bottom first).
fn find_disk(layers: &[PathBuf], reference: &str) -> Result<PathBuf, Error> {
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    let mut others = Vec::new();
    for layer in layers.iter().rev() {
        let dir = layer.join(DISK_DIR);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            // A file, a symlink or a whiteout named `disk` hides every lower `/disk`.
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if opaque(layer) {
                    break;
                }
                continue;
            }
            Err(e) => return Err(Error::Io { context: format!("reading {}", dir.display()), source: e }),
        }
        let entries = std::fs::read_dir(&dir).map_err(Error::io(format!("reading {}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(Error::io(format!("reading {}", dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !seen.insert(name.clone()) {
                continue;
            }
            let meta = entry.metadata().map_err(Error::io(format!("reading {}", entry.path().display())))?;
            if meta.file_type().is_char_device() && meta.rdev() == 0 {
                continue; // a whiteout: deleted in this layer
            }
            if meta.is_file() {
                files.push((name, entry.path()));
            } else {
                others.push(name);
            }
        }
        if opaque(&dir) || opaque(layer) {
            break;
        }
    }
    files.sort();
    match files.len() {
        1 => Ok(files.remove(0).1),
        0 if !others.is_empty() => {
            others.sort();
            Err(Error::InvalidArgument(format!("image {reference} has no disk image in /{DISK_DIR}: /{DISK_DIR}/{} is not a regular file", others[0])))
        }
        0 => Err(Error::InvalidArgument(format!("image {reference} has no disk image in /{DISK_DIR} (a containerDisk image carries one qcow2 or raw file there)"))),
        _ => {
            let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
            Err(Error::InvalidArgument(format!("image {reference} has more than one file in /{DISK_DIR} ({}): which disk to boot is ambiguous", names.join(", "))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(root: &Path, n: usize, files: &[&str]) -> PathBuf {
        let l = root.join(format!("l{n}"));
        std::fs::create_dir_all(&l).expect("layer");
        for f in files {
            let p = l.join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
            std::fs::write(&p, f.as_bytes()).expect("file");
        }
        l
    }

    fn whiteout(path: &Path) {
        nix::sys::stat::mknod(path, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0).expect("mknod (tests run as root)");
    }

    fn check(layers: &[PathBuf], want: Result<&Path, &str>) {
        match (find_disk(layers, "reg/img:1"), want) {
            (Ok(p), Ok(w)) => assert_eq!(p, w),
            (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{e} should say {w:?}"),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn the_disk_is_the_one_file_of_the_merged_disk_directory() {
        let t = tempfile::tempdir().expect("tmp");
        let r = t.path();
        // One file, in the only layer; then a lower layer's file replaced by a whiteout and a
        // new file above it.
        let l0 = layer(r, 0, &["disk/old.qcow2", "etc/x"]);
        check(std::slice::from_ref(&l0), Ok(&l0.join("disk/old.qcow2")));
        let l1 = layer(r, 1, &["disk/new.qcow2"]);
        check(&[l0.clone(), l1.clone()], Err("more than one file in /disk (new.qcow2, old.qcow2)"));
        whiteout(&l1.join("disk/old.qcow2"));
        check(&[l0.clone(), l1.clone()], Ok(&l1.join("disk/new.qcow2")));
        // An opaque /disk hides the layers below it.
        let l2 = layer(r, 2, &["disk/top.img"]);
        let _ = std::fs::remove_file(l1.join("disk/old.qcow2"));
        check(&[l0.clone(), l1.clone(), l2.clone()], Err("more than one file"));
        set_opaque(&l2.join("disk"));
        check(&[l0.clone(), l1.clone(), l2.clone()], Ok(&l2.join("disk/top.img")));
        // No /disk, a /disk whited out, a symlink instead of a file.
        let e = layer(r, 3, &["etc/y"]);
        check(std::slice::from_ref(&e), Err("has no disk image in /disk (a containerDisk image"));
        let w = layer(r, 4, &[]);
        whiteout(&w.join("disk"));
        check(&[l0.clone(), w], Err("has no disk image in /disk"));
        let s = layer(r, 5, &[]);
        std::fs::create_dir(s.join("disk")).expect("dir");
        std::os::unix::fs::symlink("/etc/shadow", s.join("disk/evil.qcow2")).expect("symlink");
        check(&[s], Err("/disk/evil.qcow2 is not a regular file"));
    }

    fn set_opaque(dir: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let p = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("path");
        let n = std::ffi::CString::new(OPAQUE_XATTR).expect("name");
        // SAFETY: valid NUL-terminated strings and a one-byte value buffer.
        let rc = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
        assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
    }
}
