//! The microVM's boot files for VM-isolated pods: a guest kernel the node has ([`GuestKernel`],
//! `strata server|agent --vm-kernel PATH`) and an initramfs built here ([`build`]): the static
//! guest agent as `/init`, `/dev/console`, and the kernel modules the guest needs (Debian's
//! kernel has virtio-mmio, the virtio console, 9p and virtio-net as modules, so strata carries
//! them in itself), taken from the kernel's own module tree with their dependencies, in load
//! order (`/lib/modules/order`, read by the agent).
//!
//! The archive is written here (the `newc` cpio format: a 110-byte ASCII header per entry, 4-byte
//! alignment) rather than by the `cpio` program: a dozen entries, and the host needs no extra
//! package. It is not compressed: under TCG the guest kernel would spend longer inflating it than
//! QEMU spends copying it.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What the guest agent needs of the kernel, by module name (dependencies are added).
/// `virtio_balloon` reports the pages the guest frees (free page reporting), so QEMU gives them
/// back to the host: an idle pod's guest RAM stays resident only where the guest uses it.
pub const GUEST_MODULES: &[&str] = &["virtio_mmio", "virtio_console", "9pnet_virtio", "9p", "virtio_net", "overlay", "virtio_balloon"];

/// A short stamp of [`GUEST_MODULES`] for the names of cached initramfs files, so a node's
/// cache is rebuilt when strata carries other modules (FNV-1a, 32 bits).
pub fn modules_stamp() -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in GUEST_MODULES.join(",").bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("guest kernel {path}: {why}")]
    Kernel { path: PathBuf, why: String },
    #[error("kernel module {0} is not in {1}")]
    MissingModule(String, PathBuf),
    #[error("kernel module {0} is compressed ({1}); only uncompressed .ko files are supported")]
    CompressedModule(String, PathBuf),
    #[error("{context}")]
    Io { context: String, source: std::io::Error },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// A guest kernel: the image QEMU boots and its modules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestKernel {
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>`.
    pub modules: PathBuf,
    /// `uname -r` in the guest.
    pub release: String,
}

impl GuestKernel {
    /// `path` is either a kernel tree (the root of an unpacked `linux-image-*` package, or `/`:
    /// `boot/vmlinuz-<release>` and `lib/modules/<release>/`) or a `vmlinuz-<release>` file
    /// inside such a tree's `boot/`.
    pub fn open(path: &Path) -> Result<GuestKernel, Error> {
        let bad = |why: String| Error::Kernel { path: path.to_path_buf(), why };
        let (root, vmlinuz) = if path.is_dir() {
            let boot = path.join("boot");
            let mut found: Vec<PathBuf> = std::fs::read_dir(&boot)
                .map_err(|e| bad(format!("no boot/ directory ({e})")))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
                .collect();
            found.sort();
            match found.len() {
                0 => return Err(bad("no boot/vmlinuz-<release> in it".into())),
                1 => (path.to_path_buf(), found.remove(0)),
                _ => return Err(bad(format!("several kernels in boot/ ({}): give the vmlinuz file", found.len()))),
            }
        } else if path.is_file() {
            let root = path.parent().and_then(Path::parent).ok_or_else(|| bad("not inside a boot/ directory".into()))?;
            (root.to_path_buf(), path.to_path_buf())
        } else {
            return Err(bad("does not exist".into()));
        };
        let name = vmlinuz.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let release = name.strip_prefix("vmlinuz-").filter(|r| !r.is_empty()).ok_or_else(|| bad(format!("{name} is not named vmlinuz-<release>")))?;
        let modules = root.join("lib/modules").join(release);
        if !modules.is_dir() {
            return Err(bad(format!("no module directory {}", modules.display())));
        }
        Ok(GuestKernel { vmlinuz, modules, release: release.to_string() })
    }

    /// `wanted` and everything they depend on, as paths in load order (dependencies first).
    pub fn modules_in_order(&self, wanted: &[&str]) -> Result<Vec<(String, PathBuf)>, Error> {
        let mut index: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut compressed: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut stack = vec![self.modules.join("kernel")];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(io(format!("reading {}", dir.display())))?;
            for e in entries.flatten() {
                let p = e.path();
                let ft = e.file_type().map_err(io(format!("reading {}", p.display())))?;
                let file = e.file_name().to_string_lossy().into_owned();
                if ft.is_dir() {
                    stack.push(p);
                } else if let Some(stem) = file.strip_suffix(".ko") {
                    index.insert(stem.replace('-', "_"), p);
                } else if let Some((stem, _)) = file.split_once(".ko.") {
                    compressed.insert(stem.replace('-', "_"), p);
                }
            }
        }
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for w in wanted {
            self.visit(&w.replace('-', "_"), &index, &compressed, &mut seen, &mut order, 0)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        compressed: &BTreeMap<String, PathBuf>,
        seen: &mut HashSet<String>,
        order: &mut Vec<(String, PathBuf)>,
        depth: usize,
    ) -> Result<(), Error> {
        if !seen.insert(name.to_string()) || depth > 64 {
            return Ok(());
        }
        let Some(path) = index.get(name) else {
            return Err(match compressed.get(name) {
                Some(p) => Error::CompressedModule(name.to_string(), p.clone()),
                None => Error::MissingModule(name.to_string(), self.modules.clone()),
            });
        };
        let bytes = std::fs::read(path).map_err(io(format!("reading {}", path.display())))?;
        for dep in depends(&bytes) {
            self.visit(&dep.replace('-', "_"), index, compressed, seen, order, depth + 1)?;
        }
        order.push((name.to_string(), path.clone()));
        Ok(())
    }
}

/// The `depends=` entry of a module's `.modinfo` strings (what `modinfo -F depends` prints).
pub fn depends(ko: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    let Some(at) = ko.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let rest = &ko[at + key.len()..];
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// Write the initramfs for `kernel` with `agent` (the static `strata-guest`) as `/init` to
/// `out` (atomically: a temporary file renamed into place).
pub fn build(kernel: &GuestKernel, agent: &Path, out: &Path) -> Result<(), Error> {
    let modules = kernel.modules_in_order(GUEST_MODULES)?;
    let mut w = Cpio::default();
    for dir in ["dev", "proc", "sys", "run", "tmp", "lib", "lib/modules"] {
        w.dir(dir);
    }
    w.char_dev("dev/console", 0o600, 5, 1);
    let init = std::fs::read(agent).map_err(io(format!("reading the guest agent {}", agent.display())))?;
    w.file("init", 0o755, &init);
    let mut order = String::new();
    for (name, path) in &modules {
        let data = std::fs::read(path).map_err(io(format!("reading {}", path.display())))?;
        w.file(&format!("lib/modules/{name}.ko"), 0o644, &data);
        order.push_str(name);
        order.push('\n');
    }
    w.file("lib/modules/order", 0o644, order.as_bytes());
    let bytes = w.finish();
    let tmp = out.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
    f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, out).map_err(io(format!("renaming {} into place", tmp.display())))
}

/// A `newc` cpio archive in memory.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [self.ino, mode, 0, 0, nlink, 0, data.len() as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_reads_the_modinfo_string() {
        let ko = b"\x7fELF...\0license=GPL\0depends=virtio,virtio_ring\0intree=Y\0";
        assert_eq!(depends(ko), vec!["virtio", "virtio_ring"]);
        assert!(depends(b"\0depends=\0name=x\0").is_empty());
        assert!(depends(b"no modinfo").is_empty());
    }

    /// A fake module tree: modules whose only content is their modinfo strings.
    fn tree(dir: &Path, modules: &[(&str, &str, &str)]) -> GuestKernel {
        std::fs::create_dir_all(dir.join("boot")).expect("boot");
        std::fs::write(dir.join("boot/vmlinuz-6.1.0-test"), b"kernel").expect("vmlinuz");
        for (sub, name, deps) in modules {
            let d = dir.join("lib/modules/6.1.0-test/kernel").join(sub);
            std::fs::create_dir_all(&d).expect("dir");
            std::fs::write(d.join(name), format!("\0depends={deps}\0name=x\0")).expect("ko");
        }
        GuestKernel::open(dir).expect("open")
    }

    #[test]
    fn modules_come_with_their_dependencies_first() {
        let t = tempfile::tempdir().expect("tmp");
        let k = tree(
            t.path(),
            &[("fs/9p", "9p.ko", "9pnet,netfs"), ("net/9p", "9pnet.ko", ""), ("fs/netfs", "netfs.ko", ""), ("x", "virtio-ring.ko", ""), ("x", "virtio.ko", "virtio_ring")],
        );
        assert_eq!(k.release, "6.1.0-test");
        assert_eq!(k.vmlinuz, t.path().join("boot/vmlinuz-6.1.0-test"));
        assert_eq!(GuestKernel::open(&k.vmlinuz).expect("by file"), k);
        let names: Vec<String> = k.modules_in_order(&["9p", "virtio", "9pnet"]).expect("order").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["9pnet", "netfs", "9p", "virtio_ring", "virtio"]);
        assert!(matches!(k.modules_in_order(&["vsock"]), Err(Error::MissingModule(n, _)) if n == "vsock"));
        std::fs::write(t.path().join("lib/modules/6.1.0-test/kernel/x/zz.ko.xz"), b"").expect("xz");
        assert!(matches!(k.modules_in_order(&["zz"]), Err(Error::CompressedModule(..))));
    }

    #[test]
    fn a_path_that_is_not_a_kernel_is_refused_clearly() {
        let t = tempfile::tempdir().expect("tmp");
        let e = GuestKernel::open(&t.path().join("nope")).expect_err("missing");
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = GuestKernel::open(t.path()).expect_err("no boot");
        assert!(e.to_string().contains("no boot/"), "{e}");
        std::fs::create_dir_all(t.path().join("boot")).expect("boot");
        std::fs::write(t.path().join("boot/vmlinuz-1.2"), b"k").expect("k");
        let e = GuestKernel::open(t.path()).expect_err("no modules");
        assert!(e.to_string().contains("no module directory"), "{e}");
    }

    #[test]
    fn the_archive_is_newc_as_the_cpio_program_reads_it() {
        let t = tempfile::tempdir().expect("tmp");
        let k = tree(
            t.path(),
            &[("a", "virtio_mmio.ko", "virtio"), ("a", "virtio.ko", ""), ("a", "virtio_console.ko", "virtio"), ("b", "9pnet_virtio.ko", "9pnet"),
              ("b", "9pnet.ko", ""), ("b", "9p.ko", "9pnet"), ("c", "virtio_net.ko", "virtio"), ("d", "overlay.ko", ""), ("e", "virtio_balloon.ko", "virtio")],
        );
        let agent = t.path().join("agent");
        std::fs::write(&agent, b"#!agent").expect("agent");
        let out = t.path().join("initramfs.cpio");
        build(&k, &agent, &out).expect("build");
        let listing = std::process::Command::new("cpio").args(["-itv", "--quiet"]).stdin(std::fs::File::open(&out).expect("open")).output().expect("cpio (apt-get install cpio)");
        assert!(listing.status.success(), "{}", String::from_utf8_lossy(&listing.stderr));
        let text = String::from_utf8_lossy(&listing.stdout);
        let names: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().last()).collect();
        assert!(names.contains(&"init") && names.contains(&"dev/console") && names.contains(&"lib/modules/9p.ko"), "{text}");
        let console = text.lines().find(|l| l.ends_with("dev/console")).expect("console");
        assert!(console.starts_with("crw-------") && console.contains("5,"), "{console}");
        let init = text.lines().find(|l| l.ends_with(" init")).expect("init");
        assert!(init.starts_with("-rwxr-xr-x"), "{init}");
        let x = t.path().join("x");
        std::fs::create_dir(&x).expect("x");
        let st = std::process::Command::new("cpio")
            .args(["-id", "--quiet", "--no-absolute-filenames", "lib/modules/order", "init"])
            .current_dir(&x)
            .stdin(std::fs::File::open(&out).expect("open"))
            .status()
            .expect("cpio");
        assert!(st.success());
        assert_eq!(std::fs::read(x.join("init")).expect("init"), b"#!agent");
        let order = std::fs::read_to_string(x.join("lib/modules/order")).expect("order");
        let pos = |m: &str| order.lines().position(|l| l == m).unwrap_or_else(|| panic!("{m} not in {order}"));
        assert!(pos("virtio") < pos("virtio_mmio") && pos("9pnet") < pos("9p") && pos("9pnet") < pos("9pnet_virtio"), "{order}");
        assert!(pos("virtio") < pos("virtio_balloon"), "{order}");
        assert_eq!(order.lines().count(), 9);
    }
}
