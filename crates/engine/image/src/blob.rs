//! Content-addressed blob store: `ROOT/blobs/sha256/<hex>`.
//!
//! **Invariant:** a file under `blobs/` always hashes to its name. Content is written to a
//! temporary file under `ROOT/tmp/` (or a resumable partial under `ROOT/ingest/`), hashed
//! while it is written, checked against the expected digest and size, fsynced, and only then
//! renamed into place. A tampered, truncated or oversized download, or a full disk, leaves
//! nothing under `blobs/`.
//!
//! Verification on read: small JSON blobs (manifests, configs) are re-hashed every time they
//! are read ([`BlobStore::read_verified`]); layers are re-hashed while they are unpacked
//! (the unpacker compares both the compressed digest and the uncompressed diff id), so a blob
//! corrupted on disk after it was stored is never silently used.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// Largest manifest/index/config we accept (the registry spec suggests 4 MiB for manifests).
pub(crate) const MAX_JSON_BLOB: u64 = 16 << 20;

/// Validate `sha256:<64 lowercase hex>` and return the hex part.
pub(crate) fn digest_hex(digest: &str) -> Result<&str> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(Error::InvalidDigest(digest.to_string())),
    }
}

/// `sha256:<hex>` of some bytes.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A reader that hashes and counts everything read through it.
pub(crate) struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashReader { inner, hasher: Sha256::new(), count: 0 }
    }
    /// Read (and hash) whatever is left, then return `(digest, bytes read)`.
    pub(crate) fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        let (digest, count, _) = self.into_parts();
        Ok((digest, count))
    }
    pub(crate) fn get_ref(&self) -> &R {
        &self.inner
    }
    /// `(digest, bytes read, inner reader)` without draining.
    pub(crate) fn into_parts(self) -> (String, u64, R) {
        (format!("sha256:{}", hex::encode(self.hasher.finalize())), self.count, self.inner)
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A path removed on drop unless [`TempPath::keep`] is called.
pub(crate) struct TempPath {
    path: Option<PathBuf>,
}

impl TempPath {
    pub(crate) fn new(path: PathBuf) -> Self {
        TempPath { path: Some(path) }
    }
    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }
    pub(crate) fn keep(mut self) -> PathBuf {
        self.path.take().unwrap_or_default()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
                Ok(_) => fs::remove_file(&p),
                Err(_) => Ok(()),
            };
        }
    }
}

/// A unique name for a temporary file or directory.
pub(crate) fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Create `dir` with `name` exclusively; retries are not needed because names are unique.
pub(crate) fn fsync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

/// The blob directory of one store.
#[derive(Clone, Debug)]
pub(crate) struct BlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    pub(crate) fn new(root: &Path) -> Self {
        BlobStore { blobs: root.join("blobs").join("sha256"), tmp: root.join("tmp") }
    }

    pub(crate) fn path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.blobs.join(digest_hex(digest)?))
    }

    pub(crate) fn contains(&self, digest: &str) -> bool {
        self.path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// Size of a stored blob.
    pub(crate) fn size(&self, digest: &str) -> Result<u64> {
        let p = self.path(digest)?;
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::BlobNotFound(digest.to_string())),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    /// Copy `reader` into the store, verifying `expected` digest and size when given.
    /// Returns `(digest, size)`. Nothing is left behind on any error.
    pub(crate) fn write(&self, expected: Option<&str>, expected_size: Option<u64>, reader: impl Read) -> Result<(String, u64)> {
        if let Some(d) = expected {
            digest_hex(d)?;
        }
        let tmp = TempPath::new(self.tmp.join(unique_name("blob-")));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp.path())
            .map_err(|e| Error::io(tmp.path(), e))?;
        // Read one byte more than expected so an oversized stream is detected.
        let limit = expected_size.map(|s| s + 1).unwrap_or(u64::MAX);
        let mut hr = HashReader::new(reader.take(limit));
        io::copy(&mut hr, &mut file).map_err(|e| Error::io(tmp.path(), e))?;
        file.sync_all().map_err(|e| Error::io(tmp.path(), e))?;
        drop(file);
        let (digest, size) = hr.finish().map_err(|e| Error::io(tmp.path(), e))?;
        let label = expected.unwrap_or(&digest).to_string();
        if let Some(es) = expected_size {
            if es != size {
                return Err(Error::SizeMismatch { digest: label, expected: es, actual: size });
            }
        }
        if let Some(ed) = expected {
            if ed != digest {
                return Err(Error::DigestMismatch { digest: label, actual: digest });
            }
        }
        self.commit(tmp, &digest)?;
        Ok((digest, size))
    }

    /// Store in-memory bytes (manifests, configs), verifying `expected` when given.
    pub(crate) fn write_bytes(&self, expected: Option<&str>, bytes: &[u8]) -> Result<String> {
        let digest = sha256_digest(bytes);
        if let Some(ed) = expected {
            digest_hex(ed)?;
            if ed != digest {
                return Err(Error::DigestMismatch { digest: ed.to_string(), actual: digest });
            }
        }
        if self.contains(&digest) {
            return Ok(digest);
        }
        self.write(Some(&digest), Some(bytes.len() as u64), bytes)?;
        Ok(digest)
    }

    /// Rename an already verified file into place.
    pub(crate) fn commit(&self, tmp: TempPath, digest: &str) -> Result<()> {
        let dest = self.path(digest)?;
        fs::rename(tmp.path(), &dest).map_err(|e| Error::io(&dest, e))?;
        tmp.keep();
        fsync_dir(&self.blobs);
        Ok(())
    }

    /// Read a (small) blob fully and re-verify its digest.
    pub(crate) fn read_verified(&self, digest: &str) -> Result<Vec<u8>> {
        let p = self.path(digest)?;
        let file = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::BlobNotFound(digest.to_string())),
            Err(e) => return Err(Error::io(p, e)),
        };
        let mut buf = Vec::new();
        file.take(MAX_JSON_BLOB).read_to_end(&mut buf).map_err(|e| Error::io(&p, e))?;
        let actual = sha256_digest(&buf);
        if actual != digest {
            return Err(Error::DigestMismatch { digest: digest.to_string(), actual });
        }
        Ok(buf)
    }

    /// Open a blob for streaming; the caller verifies through a [`HashReader`].
    pub(crate) fn open(&self, digest: &str) -> Result<File> {
        let p = self.path(digest)?;
        match File::open(&p) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::BlobNotFound(digest.to_string())),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    /// Delete a blob; returns the bytes freed.
    pub(crate) fn remove(&self, hex: &str) -> Result<u64> {
        let p = self.blobs.join(hex);
        let size = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&p) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    /// Hex names of all stored blobs.
    pub(crate) fn list(&self) -> Result<Vec<String>> {
        let rd = fs::read_dir(&self.blobs).map_err(|e| Error::io(&self.blobs, e))?;
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(&self.blobs, e))?;
            if let Some(name) = entry.file_name().to_str() {
                out.push(name.to_string());
            }
        }
        Ok(out)
    }
}

/// Write `bytes` to `path` atomically (temp file in the same directory, fsync, rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = TempPath::new(dir.join(unique_name(".tmp-")));
    let mut f = OpenOptions::new().write(true).create_new(true).open(tmp.path()).map_err(|e| Error::io(tmp.path(), e))?;
    f.write_all(bytes).map_err(|e| Error::io(tmp.path(), e))?;
    f.sync_all().map_err(|e| Error::io(tmp.path(), e))?;
    drop(f);
    fs::rename(tmp.path(), path).map_err(|e| Error::io(path, e))?;
    tmp.keep();
    fsync_dir(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("blobs/sha256")).expect("mkdir");
        fs::create_dir_all(dir.path().join("tmp")).expect("mkdir");
        let s = BlobStore::new(dir.path());
        (dir, s)
    }

    fn tmp_is_empty(dir: &Path) -> bool {
        fs::read_dir(dir.join("tmp")).expect("read tmp").next().is_none()
    }

    #[test]
    fn write_and_read_verified() {
        let (dir, s) = store();
        let d = sha256_digest(b"hello");
        let (got, size) = s.write(Some(&d), Some(5), &b"hello"[..]).expect("write");
        assert_eq!((got.as_str(), size), (d.as_str(), 5));
        assert_eq!(s.read_verified(&d).expect("read"), b"hello");
        assert!(tmp_is_empty(dir.path()));
    }

    #[test]
    fn mismatches_leave_nothing() {
        let (dir, s) = store();
        let d = sha256_digest(b"hello");
        let e = s.write(Some(&d), Some(5), &b"hellO"[..]).expect_err("tampered");
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
        assert!(e.to_string().contains(&d), "{e}");
        let e = s.write(Some(&d), Some(5), &b"hell"[..]).expect_err("truncated");
        assert!(matches!(e, Error::SizeMismatch { actual: 4, .. }), "{e}");
        let e = s.write(Some(&d), Some(5), &b"hello!"[..]).expect_err("oversized");
        assert!(matches!(e, Error::SizeMismatch { actual: 6, .. }), "{e}");
        assert!(!s.contains(&d));
        assert!(tmp_is_empty(dir.path()));
        assert!(s.list().expect("list").is_empty());
    }

    #[test]
    fn read_detects_corruption_on_disk() {
        let (_dir, s) = store();
        let d = s.write_bytes(None, b"{}").expect("write");
        fs::write(s.path(&d).expect("path"), b"[]").expect("corrupt");
        assert!(matches!(s.read_verified(&d), Err(Error::DigestMismatch { .. })));
    }

    #[test]
    fn bad_digests_are_rejected() {
        for bad in ["md5:abc", "sha256:xyz", "sha256:ABCDEF", "nocolon", &format!("sha256:{}", "A".repeat(64))] {
            assert!(matches!(digest_hex(bad), Err(Error::InvalidDigest(_))), "{bad}");
        }
    }
}
