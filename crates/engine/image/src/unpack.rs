//! Safe layer unpacking into a directory usable as an overlayfs lowerdir.
//!
//! Each layer is unpacked on its own (not on top of its parents), so OCI whiteouts are
//! converted to overlay form: `.wh.NAME` becomes a 0/0 character device `NAME`, and
//! `.wh..wh..opq` becomes the xattr `trusted.overlay.opaque=y` on its directory.
//!
//! **Invariant (security):** nothing is ever created outside the destination directory.
//! Every entry is created relative to directory file descriptors opened one component at a
//! time with `O_NOFOLLOW`; an entry whose path is absolute or has a `..` component, a hard link
//! whose target is absolute or has `..`, and any entry below an existing symlink are refused
//! with [`Error::UnsafeLayer`], which fails the whole layer.
//!
//! While unpacking, both the compressed stream (the blob digest) and the uncompressed stream
//! (the diff id) are hashed; a mismatch fails the layer. Callers unpack into a temporary
//! directory and rename it into place only on success.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fchmodat, fstatat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::blob::HashReader;
use crate::error::{Error, Result};
use crate::limits::{Budget, UnpackLimits};

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Most bytes of tar stream between the end of one entry's data and the start of the next's:
/// its header and any GNU long name/link and PAX records, which the tar reader holds in memory
/// (Go's archive/tar allows 1 MiB per record).
const MAX_ENTRY_METADATA: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Is this blob gzip-compressed? (Used to pick a media type for docker-archive layers.)
pub(crate) fn is_gzip(mut r: impl Read) -> bool {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).is_ok() && sniff(&head) == Compression::Gzip
}

/// Unpack the layer blob `file` (digest `digest`, uncompressed digest `diff_id`) into the
/// existing empty directory `dest`, within `limits` (free space is measured on `dest`'s
/// filesystem; errors name it as `store`).
pub(crate) fn unpack_layer(file: File, digest: &str, diff_id: &str, dest: &Path, store: &Path, limits: UnpackLimits) -> Result<()> {
    let invalid = |detail: String| Error::InvalidLayer { digest: digest.to_string(), detail };
    let too_large = || Error::LayerTooLarge { digest: digest.to_string(), what: "uncompressed bytes", limit: limits.max_layer_bytes };
    let budget = Budget::new(limits, digest, dest, store)?;
    let mut buffered = BufReader::with_capacity(256 * 1024, HashReader::new(file));
    let head = buffered.fill_buf().map_err(|e| invalid(e.to_string()))?;
    let compression = sniff(head);
    // The uncompressed stream is capped as well as each entry: data after the tar's end
    // (which the diff id covers) must not let a small blob expand without bound either.
    let decoded: Box<dyn Read + '_> = match compression {
        Compression::Zstd => return Err(invalid("zstd-compressed layers are not supported".to_string())),
        Compression::Gzip => Box::new(MultiGzDecoder::new(&mut buffered)),
        Compression::None => Box::new(&mut buffered),
    };
    let mut hr = HashReader::new(Capped::new(decoded, limits.max_layer_bytes));
    if let Err(e) = unpack_tar(&mut hr, digest, dest, budget) {
        return Err(if hr.get_ref().hit { too_large() } else { e });
    }
    let (diff_actual, _, _) = hr.finish_inner().map_err(|e| if is_cap(&e) { too_large() } else { invalid(e.to_string()) })?;
    let raw = buffered.into_inner();
    let (compressed_actual, _, _) = raw.finish_inner().map_err(|e| invalid(e.to_string()))?;
    if compressed_actual != digest {
        return Err(Error::DigestMismatch { digest: digest.to_string(), actual: compressed_actual });
    }
    if diff_actual != diff_id {
        return Err(Error::DigestMismatch { digest: diff_id.to_string(), actual: diff_actual });
    }
    Ok(())
}

/// A reader that fails once more than `limit` bytes were asked of it.
struct Capped<R> {
    inner: R,
    remaining: u64,
    hit: bool,
}

/// The message of [`Capped`]'s error, to tell it from other read errors.
const CAP_MESSAGE: &str = "layer exceeds its uncompressed size limit";

impl<R> Capped<R> {
    fn new(inner: R, limit: u64) -> Self {
        Capped { inner, remaining: limit, hit: false }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            // One byte more tells a stream of exactly `limit` bytes from a longer one.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.hit = true;
            return Err(io::Error::other(CAP_MESSAGE));
        }
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn is_cap(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Other && e.to_string() == CAP_MESSAGE
}

/// Open a directory relative to `dir` without following symlinks.
fn open_dir_at(dir: RawFd, name: &OsStr) -> nix::Result<OwnedFd> {
    let fd = openat(Some(dir), name, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())?;
    // SAFETY: `fd` was just returned by openat and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

struct Unpacker<'a> {
    digest: &'a str,
    dest: &'a Path,
    root: OwnedFd,
    budget: Budget<'a>,
    /// Directories whose mtime is set at the end (creating children changes it).
    dir_times: Vec<(Vec<OsString>, u64)>,
}

impl Unpacker<'_> {
    fn unsafe_entry(&self, entry: &Path, reason: &str) -> Error {
        Error::UnsafeLayer { digest: self.digest.to_string(), entry: entry.display().to_string(), reason: reason.to_string() }
    }

    fn invalid(&self, entry: &Path, detail: impl std::fmt::Display) -> Error {
        Error::InvalidLayer { digest: self.digest.to_string(), detail: format!("entry {:?}: {detail}", entry.display().to_string()) }
    }

    fn io(&self, entry: &Path, errno: nix::Error) -> Error {
        let e = io::Error::from_raw_os_error(errno as i32);
        if e.raw_os_error() == Some(libc::ENOSPC) {
            return Error::DiskFull { path: self.dest.join(entry) };
        }
        self.invalid(entry, e)
    }

    /// Split a tar path into normal components, refusing absolute paths and `..`.
    fn components(&self, entry: &Path, what: &str) -> Result<Vec<OsString>> {
        let mut out = Vec::new();
        for c in entry.components() {
            match c {
                Component::Normal(n) => out.push(n.to_os_string()),
                Component::CurDir => {}
                Component::ParentDir => return Err(self.unsafe_entry(entry, &format!("has a '..' component in its {what}"))),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.unsafe_entry(entry, &format!("has an absolute {what}")))
                }
            }
        }
        Ok(out)
    }

    /// Walk to the directory `comps` below the root, creating missing directories (0755) when
    /// `create`; refuses any existing component that is a symlink.
    fn walk(&self, entry: &Path, comps: &[OsString], create: bool) -> Result<OwnedFd> {
        let mut cur = self.root.try_clone().map_err(|e| self.invalid(entry, e))?;
        for c in comps {
            match fstatat(Some(cur.as_raw_fd()), c.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => {
                    let fmt = st.st_mode & libc::S_IFMT;
                    if fmt == libc::S_IFLNK {
                        return Err(self.unsafe_entry(entry, &format!("would be written through the symlink {:?}", c)));
                    }
                    if fmt != libc::S_IFDIR {
                        return Err(self.invalid(entry, format!("parent {c:?} is not a directory")));
                    }
                }
                Err(nix::errno::Errno::ENOENT) if create => {
                    mkdirat(Some(cur.as_raw_fd()), c.as_os_str(), Mode::from_bits_truncate(0o755)).map_err(|e| self.io(entry, e))?;
                }
                Err(e) => return Err(self.io(entry, e)),
            }
            cur = open_dir_at(cur.as_raw_fd(), c).map_err(|e| match e {
                nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => {
                    self.unsafe_entry(entry, &format!("would be written through the symlink {:?}", c))
                }
                e => self.io(entry, e),
            })?;
        }
        Ok(cur)
    }

    /// Remove whatever is at `name` in `dir` unless it is a directory and `keep_dir`.
    /// Returns true when a directory was kept.
    fn clear(&self, entry: &Path, dir: &OwnedFd, comps: &[OsString], name: &OsStr, keep_dir: bool) -> Result<bool> {
        match fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                if keep_dir {
                    return Ok(true);
                }
                // std's remove_dir_all does not follow symlinks; the parents were checked by walk.
                let mut p = self.dest.to_path_buf();
                p.extend(comps);
                p.push(name);
                std::fs::remove_dir_all(&p).map_err(|e| self.invalid(entry, e))?;
                Ok(false)
            }
            Ok(_) => {
                unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir).map_err(|e| self.io(entry, e))?;
                Ok(false)
            }
            Err(nix::errno::Errno::ENOENT) => Ok(false),
            Err(e) => Err(self.io(entry, e)),
        }
    }

    fn entry<R: Read>(&mut self, mut e: tar::Entry<'_, R>) -> Result<()> {
        let path: PathBuf = e.path().map_err(|err| Error::InvalidLayer { digest: self.digest.to_string(), detail: err.to_string() })?.into_owned();
        let comps = self.components(&path, "path")?;
        // Before anything of the entry is written: its size against the ceilings and the
        // free-space reserve. That is the size reading the entry yields (a PAX `size` record
        // overrides the header's; a GNU sparse file reads as its full length, holes as zeros,
        // and is written so), not the header's size field.
        let size = e.size();
        self.budget.charge(&path, e.raw_file_position().saturating_add(size), size)?;
        let Some((name, parents)) = comps.split_last() else { return Ok(()) };
        let xattrs = pax_xattrs(&mut e);
        let header = e.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(|err| self.invalid(&path, err))? & 0o7777;
        let uid = header.uid().map_err(|err| self.invalid(&path, err))? as u32;
        let gid = header.gid().map_err(|err| self.invalid(&path, err))? as u32;
        let mtime = header.mtime().unwrap_or(0);
        let name_bytes = name.as_bytes();

        // Whiteouts.
        if name_bytes == b".wh..wh..opq" {
            let dir = self.walk(&path, parents, true)?;
            return set_xattr(&dir, OPAQUE_XATTR, b"y").map_err(|err| self.invalid(&path, err));
        }
        if name_bytes.starts_with(b".wh..wh.") {
            return Ok(()); // aufs bookkeeping (e.g. .wh..wh.plnk), meaningless here
        }
        if let Some(target) = name_bytes.strip_prefix(b".wh.") {
            if target.is_empty() {
                return Err(self.invalid(&path, "empty whiteout name"));
            }
            let target = OsStr::from_bytes(target);
            let dir = self.walk(&path, parents, true)?;
            self.clear(&path, &dir, parents, target, false)?;
            mknodat(Some(dir.as_raw_fd()), target, SFlag::S_IFCHR, Mode::empty(), 0).map_err(|err| self.io(&path, err))?;
            fchownat(Some(dir.as_raw_fd()), target, Some(Uid::from_raw(0)), Some(Gid::from_raw(0)), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|err| self.io(&path, err))?;
            return Ok(());
        }

        let dir = self.walk(&path, parents, true)?;
        let dfd = dir.as_raw_fd();
        let owner = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        let times = TimeSpec::new(mtime as i64, 0);
        match kind {
            tar::EntryType::Directory => {
                if !self.clear(&path, &dir, parents, name, true)? {
                    mkdirat(Some(dfd), name.as_os_str(), Mode::from_bits_truncate(0o700)).map_err(|err| self.io(&path, err))?;
                }
                let d = open_dir_at(dfd, name).map_err(|err| self.io(&path, err))?;
                fchown(d.as_raw_fd(), owner.0, owner.1).map_err(|err| self.io(&path, err))?;
                fchmod(d.as_raw_fd(), Mode::from_bits_truncate(mode)).map_err(|err| self.io(&path, err))?;
                self.apply_xattrs(&path, &d, &xattrs)?;
                self.dir_times.push((comps.clone(), mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.clear(&path, &dir, parents, name, false)?;
                let fd = openat(
                    Some(dfd),
                    name.as_os_str(),
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|err| self.io(&path, err))?;
                // SAFETY: `fd` was just returned by openat and is owned by nothing else.
                let mut f = unsafe { File::from_raw_fd(fd) };
                io::copy(&mut e, &mut f).map_err(|err| {
                    if err.raw_os_error() == Some(libc::ENOSPC) {
                        Error::DiskFull { path: self.dest.join(&path) }
                    } else {
                        self.invalid(&path, err)
                    }
                })?;
                fchown(f.as_raw_fd(), owner.0, owner.1).map_err(|err| self.io(&path, err))?;
                // chmod after chown: chown clears setuid/setgid bits.
                fchmod(f.as_raw_fd(), Mode::from_bits_truncate(mode)).map_err(|err| self.io(&path, err))?;
                self.apply_xattrs(&path, &f, &xattrs)?;
                futimens(f.as_raw_fd(), &times, &times).map_err(|err| self.io(&path, err))?;
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name()
                    .map_err(|err| self.invalid(&path, err))?
                    .ok_or_else(|| self.invalid(&path, "symlink without a target"))?
                    .into_owned();
                self.clear(&path, &dir, parents, name, false)?;
                // The target is stored, never followed by us; overlayfs resolves it inside
                // the container's root.
                symlinkat(target.as_os_str(), Some(dfd), name.as_os_str()).map_err(|err| self.io(&path, err))?;
                fchownat(Some(dfd), name.as_os_str(), owner.0, owner.1, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|err| self.io(&path, err))?;
                utimensat(Some(dfd), name.as_os_str(), &times, &times, UtimensatFlags::NoFollowSymlink).map_err(|err| self.io(&path, err))?;
            }
            tar::EntryType::Link => {
                let target = e
                    .link_name()
                    .map_err(|err| self.invalid(&path, err))?
                    .ok_or_else(|| self.invalid(&path, "hard link without a target"))?
                    .into_owned();
                let tcomps = self.components(&target, "hard link target")?;
                let Some((tname, tparents)) = tcomps.split_last() else {
                    return Err(self.invalid(&path, "hard link to the layer root"));
                };
                let tdir = self.walk(&path, tparents, false)?;
                if tcomps == comps {
                    return Ok(());
                }
                self.clear(&path, &dir, parents, name, false)?;
                linkat(Some(tdir.as_raw_fd()), tname.as_os_str(), Some(dfd), name.as_os_str(), AtFlags::empty())
                    .map_err(|err| self.io(&path, err))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                self.clear(&path, &dir, parents, name, false)?;
                mknodat(Some(dfd), name.as_os_str(), sflag, Mode::from_bits_truncate(mode), libc::makedev(major, minor))
                    .map_err(|err| self.io(&path, err))?;
                fchownat(Some(dfd), name.as_os_str(), owner.0, owner.1, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|err| self.io(&path, err))?;
                // Freshly created by us in a private directory: not a symlink.
                fchmodat(Some(dfd), name.as_os_str(), Mode::from_bits_truncate(mode), FchmodatFlags::FollowSymlink)
                    .map_err(|err| self.io(&path, err))?;
                utimensat(Some(dfd), name.as_os_str(), &times, &times, UtimensatFlags::NoFollowSymlink).map_err(|err| self.io(&path, err))?;
            }
            other => {
                tracing::debug!(layer = self.digest, entry = %path.display(), kind = ?other, "skipping tar entry");
            }
        }
        Ok(())
    }

    /// Apply PAX `SCHILY.xattr.*` attributes that are safe to carry: `user.*` and file
    /// capabilities. Everything else (notably `trusted.overlay.*`, which would let a layer
    /// forge whiteouts or redirects) is dropped.
    fn apply_xattrs(&self, entry: &Path, fd: &impl AsRawFd, xattrs: &[(String, Vec<u8>)]) -> Result<()> {
        for (name, value) in xattrs {
            if name.starts_with("user.") || name == "security.capability" {
                match set_xattr(fd, name, value) {
                    Ok(()) => {}
                    Err(err) if err.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                        tracing::warn!(layer = self.digest, entry = %entry.display(), xattr = %name, "filesystem does not support xattr; dropped");
                    }
                    Err(err) => return Err(self.invalid(entry, format!("xattr {name}: {err}"))),
                }
            } else {
                tracing::debug!(layer = self.digest, entry = %entry.display(), xattr = %name, "dropping xattr");
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        for (comps, mtime) in self.dir_times.iter().rev() {
            let p: PathBuf = comps.iter().collect();
            let d = self.walk(&p, comps, false)?;
            let t = TimeSpec::new(*mtime as i64, 0);
            futimens(d.as_raw_fd(), &t, &t).map_err(|err| self.io(&p, err))?;
        }
        Ok(())
    }
}

/// `SCHILY.xattr.NAME` PAX records of an entry.
fn pax_xattrs<R: Read>(e: &mut tar::Entry<'_, R>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(Some(exts)) = e.pax_extensions() {
        for ext in exts.flatten() {
            if let Ok(key) = ext.key() {
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    out
}

fn set_xattr(dir: &impl AsRawFd, name: &str, value: &[u8]) -> io::Result<()> {
    let cname = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: fd is a valid open directory; name is NUL-terminated; value points to
    // `value.len()` readable bytes.
    let rc = unsafe { libc::fsetxattr(dir.as_raw_fd(), cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Read the xattr `name` of `path` (tests and diagnostics).
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let cname = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut buf = vec![0u8; 256];
    // SAFETY: valid NUL-terminated strings and a writable buffer of the given length.
    let n = unsafe { libc::lgetxattr(cpath.as_ptr(), cname.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENODATA) { Ok(None) } else { Err(e) };
    }
    buf.truncate(n as usize);
    Ok(Some(buf))
}

/// The tar reader's view of the stream: it may read up to `allowed` (the end of the current
/// entry's data plus [`MAX_ENTRY_METADATA`]), so what it holds in memory between entries (long
/// names, PAX records) is bounded.
struct MetadataBound<R> {
    inner: R,
    pos: u64,
    allowed: std::rc::Rc<std::cell::Cell<u64>>,
    hit: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R: Read> Read for MetadataBound<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = self.allowed.get().saturating_sub(self.pos);
        if room == 0 && !buf.is_empty() {
            self.hit.set(true);
            return Err(io::Error::other("an entry's headers (long names, PAX records) exceed their limit"));
        }
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn unpack_tar<'a, R: Read>(reader: R, digest: &'a str, dest: &'a Path, budget: Budget<'a>) -> Result<R> {
    let root = File::open(dest).map_err(|e| Error::io(dest, e))?;
    let mut u = Unpacker { digest, dest, root: OwnedFd::from(root), budget, dir_times: Vec::new() };
    let allowed = std::rc::Rc::new(std::cell::Cell::new(MAX_ENTRY_METADATA));
    let hit = std::rc::Rc::new(std::cell::Cell::new(false));
    let bounded = MetadataBound { inner: reader, pos: 0, allowed: allowed.clone(), hit: hit.clone() };
    let mut archive = tar::Archive::new(bounded);
    let refuse = |e: io::Error| {
        if hit.get() {
            Error::LayerTooLarge { digest: digest.to_string(), what: "bytes of headers for one entry", limit: MAX_ENTRY_METADATA }
        } else {
            Error::InvalidLayer { digest: digest.to_string(), detail: e.to_string() }
        }
    };
    let entries = archive.entries().map_err(refuse)?;
    for entry in entries {
        let entry = entry.map_err(refuse)?;
        // The tar reader may read this entry's data (padded to a block), then the next
        // entry's headers.
        let end = entry.raw_file_position().saturating_add(entry.size().saturating_add(511) & !511);
        allowed.set(end.saturating_add(MAX_ENTRY_METADATA));
        u.entry(entry)?;
    }
    u.finish()?;
    Ok(archive.into_inner().inner)
}

impl<R: Read> HashReader<R> {
    /// Drain, then return `(digest, bytes, inner reader)`.
    pub(crate) fn finish_inner(mut self) -> io::Result<(String, u64, R)> {
        io::copy(&mut self, &mut io::sink())?;
        let (digest, count, inner) = self.into_parts();
        Ok((digest, count, inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A GNU header of a 0644 file owned by root, dated 0.
    fn header() -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    }

    fn octal(field: &mut [u8], v: u64) {
        let s = format!("{v:0width$o}\0", width = field.len() - 1);
        field.copy_from_slice(s.as_bytes());
    }

    /// Unpack the raw tar `bytes` with a 1 MiB ceiling; the error and whether `name` was
    /// created.
    fn unpack_capped(bytes: &[u8], name: &str) -> (Result<()>, bool) {
        let dir = tempfile::tempdir().expect("tmp");
        let blob = dir.path().join("blob");
        std::fs::File::create(&blob).and_then(|mut f| f.write_all(bytes)).expect("blob");
        let dest = dir.path().join("dest");
        std::fs::create_dir(&dest).expect("dest");
        let limits = UnpackLimits { max_layer_bytes: 1 << 20, ..UnpackLimits::default() };
        let r = unpack_layer(File::open(&blob).expect("open"), "sha256:layer", "sha256:diff", &dest, dir.path(), limits);
        (r, dest.join(name).symlink_metadata().is_ok())
    }

    fn finish(mut tar: Vec<u8>) -> Vec<u8> {
        tar.resize(tar.len().div_ceil(512) * 512 + 1024, 0);
        tar
    }

    /// A GNU sparse entry of 64 MiB that is all hole: nothing of it is in the stream, but
    /// reading it yields 64 MiB of zeros, which unpacking writes out. Its size is the one the
    /// ceiling and the reserve are checked against, not the header's stored size (0).
    #[test]
    fn sparse_entries_count_at_their_real_size() {
        let mut h = header();
        h.set_path("hole").expect("path");
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_size(0);
        let gnu = h.as_gnu_mut().expect("gnu");
        octal(&mut gnu.realsize, 64 << 20);
        octal(&mut gnu.sparse[0].offset, 64 << 20);
        octal(&mut gnu.sparse[0].numbytes, 0);
        h.set_cksum();
        let (r, created) = unpack_capped(&finish(h.as_bytes().to_vec()), "hole");
        assert!(matches!(r, Err(Error::LayerTooLarge { what: "uncompressed bytes", .. })), "{r:?}");
        assert!(!created, "nothing of an entry over the ceiling is written");
    }

    /// A PAX `size` record overrides the header's size field (0 here): the entry's data is
    /// 2 MiB, which the ceiling must see before the file is written.
    #[test]
    fn pax_size_is_the_size_checked() {
        let data = vec![7u8; 2 << 20];
        let record = format!("16 size={}\n", data.len());
        let mut x = tar::Header::new_ustar();
        x.set_path("PaxHeaders/big").expect("path");
        x.set_entry_type(tar::EntryType::XHeader);
        x.set_size(record.len() as u64);
        x.set_cksum();
        let mut h = header();
        h.set_path("big").expect("path");
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(0);
        h.set_cksum();
        let mut tar = x.as_bytes().to_vec();
        tar.extend_from_slice(record.as_bytes());
        tar.resize(1024, 0);
        tar.extend_from_slice(h.as_bytes());
        tar.extend_from_slice(&data);
        let (r, created) = unpack_capped(&finish(tar), "big");
        assert!(matches!(r, Err(Error::LayerTooLarge { what: "uncompressed bytes", .. })), "{r:?}");
        assert!(!created, "nothing of an entry over the ceiling is written");
    }

    /// A GNU long name (or PAX record set) is read into memory whole before the entry it
    /// describes is seen: one of 2 MiB (a few KB of gzip could declare gigabytes) is refused
    /// as it is read, not held.
    #[test]
    fn entry_metadata_is_bounded_in_memory() {
        let name = vec![b'a'; 2 << 20];
        let mut l = header();
        l.as_gnu_mut().expect("gnu").name[..13].copy_from_slice(b"././@LongLink");
        l.set_entry_type(tar::EntryType::GNULongName);
        l.set_size(name.len() as u64);
        l.set_cksum();
        let mut h = header();
        h.set_path("short").expect("path");
        h.set_size(0);
        h.set_cksum();
        let mut tar = l.as_bytes().to_vec();
        tar.extend_from_slice(&name);
        tar.extend_from_slice(h.as_bytes());
        let dir = tempfile::tempdir().expect("tmp");
        let blob = dir.path().join("blob");
        std::fs::File::create(&blob).and_then(|mut f| f.write_all(&finish(tar))).expect("blob");
        let dest = dir.path().join("dest");
        std::fs::create_dir(&dest).expect("dest");
        let r = unpack_layer(File::open(&blob).expect("open"), "sha256:layer", "sha256:diff", &dest, dir.path(), UnpackLimits::default());
        assert!(matches!(r, Err(Error::LayerTooLarge { limit: MAX_ENTRY_METADATA, .. })), "{r:?}");

        // Ordinary long names, and data larger than the headers' limit, still unpack (the
        // digests given here are wrong, which is checked after the whole stream was read).
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/file", "d".repeat(200));
        let mut h = header();
        h.set_size(3 << 20);
        b.append_data(&mut h, &long, &vec![1u8; 3 << 20][..]).expect("append");
        let mut h = header();
        h.set_size(1);
        b.append_data(&mut h, "after", &b"x"[..]).expect("append");
        let bytes = b.into_inner().expect("tar");
        std::fs::File::create(&blob).and_then(|mut f| f.write_all(&bytes)).expect("blob");
        let dest = dir.path().join("dest2");
        std::fs::create_dir(&dest).expect("dest");
        let r = unpack_layer(File::open(&blob).expect("open"), "sha256:layer", "sha256:diff", &dest, dir.path(), UnpackLimits::default());
        assert!(matches!(r, Err(Error::DigestMismatch { .. })), "{r:?}");
        assert_eq!(std::fs::metadata(dest.join(&long)).expect("long").len(), 3 << 20);
        assert!(dest.join("after").exists());
    }
}
