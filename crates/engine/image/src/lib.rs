//! strata's OCI image store (engine layer): content-addressed blobs, registry pulls, imports
//! of OCI layouts and docker-archives, safe layer unpacking into overlayfs-ready snapshots,
//! image records, and garbage collection. Synchronous; no async runtime.
//!
//! On-disk layout under the store root:
//! ```text
//! images.json                 image records (see db.rs), replaced atomically under a flock
//! blobs/sha256/<hex>          verified content (manifests, configs, layers)
//! ingest/<hex>                resumable partial layer downloads (+ <hex>.lock)
//! snapshots/<chainid-hex>/fs  one unpacked layer per layer chain, an overlayfs lowerdir
//! snapshots/.tmp-<chainid-hex>-*  an unpack in progress (or killed: removed on open)
//! tmp/                        temporary files, renamed into place when complete
//! locks/                      images.lock, gc.lock, snapshot locks
//! ```
//!
//! **Invariants:** the root is 0700 ([`private_dir`]: image files keep their setuid bits and
//! device nodes, so no other user may reach them); everything under `blobs/` hashes to its name; a snapshot directory exists
//! only once it is completely unpacked and verified; nothing in a layer is ever written
//! outside its snapshot directory; unpacking stays within [`UnpackLimits`] (free-space
//! reserve, size and entry ceilings) or removes what it wrote.
//!
//! Concurrency: [`ImageStore`] is `Send + Sync` and keeps no in-memory state; pull, import
//! and [`ImageStore::layers`] hold a shared `flock` on `locks/gc.lock` and [`ImageStore::gc`]
//! holds it exclusively, so gc never deletes content that a concurrent operation (in this or
//! another process) is about to reference.

mod blob;
mod db;
mod error;
mod import;
mod limits;
mod pull;
pub mod reference;
mod registry;
mod unpack;

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::{Deserialize, Serialize};

pub use error::{Error, Result};
pub use limits::{parse_size, Reserve, UnpackLimits};
pub use reference::{normalize, ImageRef};
pub use unpack::get_xattr;

use blob::{digest_hex, sha256_digest, BlobStore, TempPath};
use db::{lock_file, try_lock_file, Db};

/// Prefix of a snapshot being unpacked: `snapshots/.tmp-<chain hex>-<unique>`.
const TMP_SNAPSHOT: &str = ".tmp-";

/// Partial downloads untouched for this long are removed by [`ImageStore::gc`].
const STALE_INGEST: Duration = Duration::from_secs(3600);

/// One image record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Image {
    /// Config digest, `sha256:...`.
    pub id: String,
    /// Digest of the (OCI or Docker v2) manifest stored for this image.
    pub manifest_digest: String,
    /// Normalized names, e.g. `127.0.0.1:5000/busybox:latest` or `repo@sha256:...`.
    pub names: Vec<String>,
    /// Sum of the compressed layer sizes plus the config size.
    pub size: u64,
    /// `created` from the image config.
    pub created: Option<String>,
    /// The image config.
    pub config: ImageConfiguration,
}

/// Options for [`ImageStore::pull`].
#[derive(Default, Clone, Debug)]
pub struct PullOptions {
    /// Registries (as written in references, `host:port`) spoken to over plain HTTP.
    /// Loopback registries always are.
    pub insecure_registries: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Parallel layer downloads; 0 means 3.
    pub max_concurrent_downloads: usize,
}

/// Pull progress callbacks; called from several download threads at once.
pub trait Progress: Sync {
    /// A layer download starts (`size` = compressed size from the manifest).
    fn layer_start(&self, digest: &str, size: u64);
    /// `bytes` more bytes of the layer are on disk (a delta, not a total).
    fn layer_advance(&self, digest: &str, bytes: u64);
    /// The layer is stored; `already_present` when nothing had to be downloaded.
    fn layer_done(&self, digest: &str, already_present: bool);
    /// A free-form status line (resolving, resuming, ...).
    fn message(&self, msg: &str);
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;

impl Progress for NoProgress {
    fn layer_start(&self, _digest: &str, _size: u64) {}
    fn layer_advance(&self, _digest: &str, _bytes: u64) {}
    fn layer_done(&self, _digest: &str, _already_present: bool) {}
    fn message(&self, _msg: &str) {}
}

/// What [`ImageStore::gc`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub blobs_removed: usize,
    pub snapshots_removed: usize,
    pub bytes_freed: u64,
}

/// Layer chain ids as defined by the OCI image spec: `chain[0] = diff[0]`,
/// `chain[n] = sha256(chain[n-1] + " " + diff[n])`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256_digest(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// The image store rooted at one directory.
#[derive(Clone, Debug)]
pub struct ImageStore {
    root: PathBuf,
    blobs: BlobStore,
    db: Db,
    limits: UnpackLimits,
}

/// How a reference matched a record (decides what `remove` takes away).
enum Match {
    Name(String),
    Id,
}

impl ImageStore {
    /// Open (creating if needed) the store at `root`, e.g. `/var/lib/strata/images`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        private_dir(&root)?;
        for d in ["blobs/sha256", "ingest", "snapshots", "tmp", "locks"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        }
        let store = ImageStore { blobs: BlobStore::new(&root), db: Db::new(&root), root, limits: UnpackLimits::default() };
        store.sweep_interrupted_unpacks();
        Ok(store)
    }

    /// Remove `snapshots/.tmp-<chain>-*` directories left by unpacks that were killed. An
    /// unpack holds `locks/snap-<chain>.lock` from before its temporary directory exists until
    /// it is renamed into place, so one whose lock is free is dead; one whose lock is held is
    /// running in some process and is left alone. Directories named without their chain (by
    /// older versions) go only when no pull, import or unpack runs at all (`gc.lock` free).
    fn sweep_interrupted_unpacks(&self) {
        let snaps = self.snapshots_dir();
        let Ok(rd) = fs::read_dir(&snaps) else { return };
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(TMP_SNAPSHOT) else { continue };
            let chain = rest.split('-').next().filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            let lock = match chain {
                Some(hex) => self.root.join("locks").join(format!("snap-{hex}.lock")),
                None => self.root.join("locks/gc.lock"),
            };
            match try_lock_file(&lock) {
                Ok(Some(_held)) => match remove_any(&entry.path()) {
                    Ok(()) => tracing::info!(dir = %entry.path().display(), "removed the temporary directory of an interrupted unpack"),
                    Err(e) => tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove the temporary directory of an interrupted unpack"),
                },
                Ok(None) => tracing::debug!(dir = %entry.path().display(), "unpack in progress elsewhere; left alone"),
                Err(e) => tracing::warn!(lock = %lock.display(), error = %e, "cannot check an unpack's lock"),
            }
        }
    }

    /// The same store, unpacking layers within `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: UnpackLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a blob in the store (whether or not it exists).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        self.blobs.path(digest)
    }

    pub(crate) fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    pub(crate) fn gc_shared(&self) -> Result<nix::fcntl::Flock<fs::File>> {
        lock_file(&self.root.join("locks/gc.lock"), false)
    }

    /// Pull `reference` from its registry: plain HTTP only for loopback hosts and
    /// `opts.insecure_registries`, Bearer/Basic auth on 401, linux/amd64 from an index,
    /// resumable parallel layer downloads. The new record takes the name from other images.
    pub fn pull(&self, reference: &str, opts: &PullOptions, progress: &dyn Progress) -> Result<Image> {
        pull::pull(self, reference, opts, progress)
    }

    /// Import an OCI layout directory, an OCI layout tar or a docker-archive tar.
    /// `tag` names the image (only allowed when the source holds exactly one image);
    /// a tag without a registry host is qualified as `localhost/NAME:TAG`.
    pub fn import(&self, path: &Path, tag: Option<&str>) -> Result<Vec<Image>> {
        Ok(import::import(self, path, tag)?.into_iter().map(|(image, _)| image).collect())
    }

    /// [`ImageStore::import`], each image with the names this import gave it: `tag`, or the
    /// source's own names (the record also keeps names it had before, e.g. `:latest`).
    pub fn import_named(&self, path: &Path, tag: Option<&str>) -> Result<Vec<(Image, Vec<String>)>> {
        import::import(self, path, tag)
    }

    /// All image records.
    pub fn list(&self) -> Result<Vec<Image>> {
        self.db.read()
    }

    /// Look an image up by name[:tag] (normalized; a short name also matches
    /// `localhost/NAME`), name@digest, full id, or unambiguous hex id prefix (>= 12 chars).
    pub fn get(&self, reference: &str) -> Result<Image> {
        let images = self.db.read()?;
        let (idx, _) = resolve(&images, reference)?;
        Ok(images[idx].clone())
    }

    /// Remove a name; the record goes when no names remain. By id (or `name@digest` that is
    /// not itself a stored name) the whole record goes. Returns the record as it was.
    /// Blobs and snapshots are reclaimed by [`ImageStore::gc`].
    pub fn remove(&self, reference: &str) -> Result<Image> {
        self.db.update(|images| {
            let (idx, how) = resolve(images, reference)?;
            let before = images[idx].clone();
            match how {
                Match::Name(n) => {
                    images[idx].names.retain(|x| x != &n);
                    if images[idx].names.is_empty() {
                        images.remove(idx);
                    }
                }
                Match::Id => {
                    images.remove(idx);
                }
            }
            tracing::info!(image = %before.id, reference, "removed image reference");
            Ok(before)
        })
    }

    /// The manifest of an image (re-verified against its digest).
    pub fn manifest(&self, image: &Image) -> Result<ImageManifest> {
        let bytes = self.blobs.read_verified(&image.manifest_digest)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::MalformedManifest {
            reference: image.manifest_digest.clone(),
            detail: e.to_string(),
        })
    }

    /// Unpacked snapshot directories of `image`, bottom layer first, ready to be overlayfs
    /// lowerdirs (in reverse order). Each layer chain is unpacked exactly once (across threads
    /// and processes) and shared by all images and containers that use it.
    pub fn layers(&self, image: &Image) -> Result<Vec<PathBuf>> {
        let _gc = self.gc_shared()?;
        let manifest = self.manifest(image)?;
        let diff_ids = image.config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(Error::MalformedManifest {
                reference: image.id.clone(),
                detail: format!("{} layers but {} diff ids", manifest.layers().len(), diff_ids.len()),
            });
        }
        let chains = chain_ids(diff_ids);
        let mut out = Vec::with_capacity(chains.len());
        for ((layer, diff_id), chain) in manifest.layers().iter().zip(diff_ids).zip(&chains) {
            let hex = digest_hex(chain)?;
            let dir = self.snapshots_dir().join(hex);
            let fs_dir = dir.join("fs");
            if !fs_dir.is_dir() {
                let _lock = lock_file(&self.root.join("locks").join(format!("snap-{hex}.lock")), true)?;
                if !fs_dir.is_dir() {
                    self.unpack_snapshot(layer.digest().as_ref(), diff_id, &dir)?;
                }
            }
            out.push(fs_dir);
        }
        Ok(out)
    }

    /// Unpack into `snapshots/.tmp-<chain>-<unique>` and rename it to `dir` (`snapshots/<chain>`);
    /// the caller holds the chain's lock throughout (see `sweep_interrupted_unpacks`).
    fn unpack_snapshot(&self, digest: &str, diff_id: &str, dir: &Path) -> Result<()> {
        let chain = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = TempPath::new(self.snapshots_dir().join(blob::unique_name(&format!("{TMP_SNAPSHOT}{chain}-"))));
        let fs_dir = tmp.path().join("fs");
        fs::create_dir_all(&fs_dir).map_err(|e| Error::io(&fs_dir, e))?;
        let started = std::time::Instant::now();
        let file = self.blobs.open(digest)?;
        unpack::unpack_layer(file, digest, diff_id, &fs_dir, &self.snapshots_dir(), self.limits)?;
        let meta = serde_json::json!({ "layer": digest, "diff_id": diff_id });
        let meta_path = tmp.path().join("snapshot.json");
        fs::write(&meta_path, meta.to_string()).map_err(|e| Error::io(&meta_path, e))?;
        fs::rename(tmp.path(), dir).map_err(|e| Error::io(dir, e))?;
        tmp.keep();
        blob::fsync_dir(&self.snapshots_dir());
        tracing::debug!(layer = digest, dir = %dir.display(), elapsed = ?started.elapsed(), "unpacked layer");
        Ok(())
    }

    /// The ids of the images whose unpacked layers hold one of `paths` (a containerDisk's disk
    /// file, used in place by a VM).
    pub fn images_holding(&self, paths: &[PathBuf]) -> Result<HashSet<String>> {
        let snapshots = self.snapshots_dir();
        let mut out = HashSet::new();
        for img in self.db.read()? {
            let holds = chain_ids(img.config.rootfs().diff_ids()).iter().filter_map(|c| digest_hex(c).ok()).any(|h| paths.iter().any(|p| p.starts_with(snapshots.join(h))));
            if holds {
                out.insert(img.id.clone());
            }
        }
        Ok(out)
    }

    /// Delete blobs and snapshots that no image record (and no image in `keep_image_ids`,
    /// which may already have lost its record) references, all temporary files, and partial
    /// downloads untouched for an hour.
    pub fn gc(&self, keep_image_ids: &HashSet<String>) -> Result<GcReport> {
        self.gc_keeping(keep_image_ids, &[])
    }

    /// [`gc`](Self::gc) that also keeps the unpacked layers holding any of `keep_paths` (a VM's
    /// containerDisk file, used in place), whether or not an image record still names them.
    pub fn gc_keeping(&self, keep_image_ids: &HashSet<String>, keep_paths: &[PathBuf]) -> Result<GcReport> {
        let _gc = lock_file(&self.root.join("locks/gc.lock"), true)?;
        let images = self.db.read()?;
        let mut keep_blobs: HashSet<String> = HashSet::new();
        let snapshots = self.snapshots_dir();
        let mut keep_snaps: HashSet<String> = keep_paths
            .iter()
            .filter_map(|p| p.strip_prefix(&snapshots).ok()?.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let keep_config = |config: &ImageConfiguration, snaps: &mut HashSet<String>| {
            for c in chain_ids(config.rootfs().diff_ids()) {
                if let Ok(h) = digest_hex(&c) {
                    snaps.insert(h.to_string());
                }
            }
        };
        let referenced_manifest = |digest: &str, keep: &mut HashSet<String>| -> bool {
            let Ok(bytes) = self.blobs.read_verified(digest) else { return false };
            let Ok(m) = serde_json::from_slice::<ImageManifest>(&bytes) else { return false };
            keep.insert(digest.to_string());
            keep.insert(m.config().digest().to_string());
            for l in m.layers() {
                keep.insert(l.digest().to_string());
            }
            true
        };
        let known: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
        for img in &images {
            keep_blobs.insert(img.id.clone());
            if !referenced_manifest(&img.manifest_digest, &mut keep_blobs) {
                tracing::warn!(image = %img.id, manifest = %img.manifest_digest, "manifest unreadable during gc");
            }
            keep_config(&img.config, &mut keep_snaps);
        }
        // Kept ids without a record: keep their config, snapshots, and any manifest naming them.
        let orphans: Vec<&String> = keep_image_ids.iter().filter(|id| !known.contains(id.as_str())).collect();
        if !orphans.is_empty() {
            for id in &orphans {
                if let Ok(bytes) = self.blobs.read_verified(id) {
                    keep_blobs.insert((*id).clone());
                    if let Ok(cfg) = serde_json::from_slice::<ImageConfiguration>(&bytes) {
                        keep_config(&cfg, &mut keep_snaps);
                    }
                }
            }
            for hex in self.blobs.list()? {
                let digest = format!("sha256:{hex}");
                let small = self.blobs.size(&digest).map(|s| s < 1 << 20).unwrap_or(false);
                if !small || keep_blobs.contains(&digest) {
                    continue;
                }
                let Ok(bytes) = self.blobs.read_verified(&digest) else { continue };
                if let Ok(m) = serde_json::from_slice::<ImageManifest>(&bytes) {
                    if orphans.iter().any(|id| id.as_str() == m.config().digest().as_ref()) {
                        referenced_manifest(&digest, &mut keep_blobs);
                    }
                }
            }
        }

        let mut report = GcReport::default();
        for hex in self.blobs.list()? {
            if !keep_blobs.contains(&format!("sha256:{hex}")) {
                report.bytes_freed += self.blobs.remove(&hex)?;
                report.blobs_removed += 1;
            }
        }
        let snaps = self.snapshots_dir();
        for entry in fs::read_dir(&snaps).map_err(|e| Error::io(&snaps, e))? {
            let entry = entry.map_err(|e| Error::io(&snaps, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep_snaps.contains(&name) {
                continue;
            }
            let p = entry.path();
            report.bytes_freed += dir_size(&p);
            remove_any(&p)?;
            if !name.starts_with('.') {
                report.snapshots_removed += 1;
                let _ = fs::remove_file(self.root.join("locks").join(format!("snap-{name}.lock")));
            }
        }
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(|e| Error::io(&tmp, e))? {
            let entry = entry.map_err(|e| Error::io(&tmp, e))?;
            report.bytes_freed += dir_size(&entry.path());
            remove_any(&entry.path())?;
        }
        let ingest = self.ingest_dir();
        let now = SystemTime::now();
        for entry in fs::read_dir(&ingest).map_err(|e| Error::io(&ingest, e))? {
            let entry = entry.map_err(|e| Error::io(&ingest, e))?;
            let meta = entry.metadata().map_err(|e| Error::io(entry.path(), e))?;
            let age = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).unwrap_or_default();
            if age >= STALE_INGEST {
                report.bytes_freed += meta.len();
                remove_any(&entry.path())?;
            }
        }
        tracing::info!(?report, "image gc finished");
        Ok(report)
    }

    /// Insert/update a record and move its names (shared by pull and import).
    pub(crate) fn record(&self, img: Image) -> Result<Image> {
        self.db.update(|images| Ok(db::upsert(images, img)))
    }

    /// Build an [`Image`] for a stored manifest (all blobs must be in the store).
    pub(crate) fn image_for(&self, manifest_digest: &str, names: Vec<String>, what: &str) -> Result<Image> {
        let bytes = self.blobs.read_verified(manifest_digest)?;
        let manifest: ImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::MalformedManifest { reference: what.to_string(), detail: e.to_string() })?;
        let config_digest = manifest.config().digest().to_string();
        let config_bytes = self.blobs.read_verified(&config_digest)?;
        let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|e| Error::MalformedManifest { reference: what.to_string(), detail: format!("image config: {e}") })?;
        if config.rootfs().diff_ids().len() != manifest.layers().len() {
            return Err(Error::MalformedManifest {
                reference: what.to_string(),
                detail: format!("{} layers but {} diff ids in the config", manifest.layers().len(), config.rootfs().diff_ids().len()),
            });
        }
        let size = manifest.layers().iter().map(|l| l.size()).sum::<u64>() + config_bytes.len() as u64;
        Ok(Image {
            id: config_digest,
            manifest_digest: manifest_digest.to_string(),
            names,
            size,
            created: config.created().clone(),
            config,
        })
    }
}

/// Create `dir` (and any missing parents) private to its owner, mode 0700, or bring an
/// existing one to 0700. Image files keep their own modes (setuid programs, device nodes,
/// world-writable directories: containers need them as the image says), so what keeps other
/// local users from running or opening them is that no path to them can be entered: the store
/// root (and the strata root above it) admit their owner only.
pub fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(dir, e)),
    }
    let meta = fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::io(dir, io::Error::from(io::ErrorKind::NotADirectory)));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| Error::io(dir, e))?;
        if mode & 0o077 != 0 {
            tracing::info!(dir = %dir.display(), mode = format!("{mode:04o}"), "directory was open to other users; now 0700");
        }
    }
    Ok(())
}

/// Find the record `reference` denotes.
fn resolve(images: &[Image], reference: &str) -> Result<(usize, Match)> {
    let not_found = || Error::ImageNotFound(reference.to_string());
    let reference = reference.trim();
    if reference.starts_with("sha256:") && digest_hex(reference).is_ok() {
        return images.iter().position(|i| i.id == reference).map(|i| (i, Match::Id)).ok_or_else(not_found);
    }
    let by_name = |name: &str| images.iter().position(|i| i.names.iter().any(|n| n == name));
    if let Ok(r) = ImageRef::parse(reference) {
        let mut candidates = vec![r.clone()];
        if ImageRef::is_short(reference) {
            if let Ok(local) = ImageRef::parse_local(reference) {
                candidates.push(local);
            }
        }
        for c in &candidates {
            let name = c.name();
            if let Some(i) = by_name(&name) {
                return Ok((i, Match::Name(name)));
            }
            if let Some(d) = &c.digest {
                let repo = c.repo_name();
                let hit = images.iter().position(|i| {
                    &i.manifest_digest == d && i.names.iter().any(|n| ImageRef::parse(n).map(|x| x.repo_name() == repo).unwrap_or(false))
                });
                if let Some(i) = hit {
                    return Ok((i, Match::Id));
                }
            }
        }
    }
    let is_hex = reference.len() >= 12 && reference.len() <= 64 && reference.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if is_hex {
        let hits: Vec<usize> = images
            .iter()
            .enumerate()
            .filter(|(_, i)| i.id.strip_prefix("sha256:").is_some_and(|h| h.starts_with(reference)))
            .map(|(n, _)| n)
            .collect();
        match hits.len() {
            0 => {}
            1 => return Ok((hits[0], Match::Id)),
            _ => return Err(Error::AmbiguousImageId(reference.to_string())),
        }
    }
    Err(not_found())
}

fn remove_any(p: &Path) -> Result<()> {
    let res = match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    res.map_err(|e| Error::io(p, e))
}

/// Apparent size of a file or directory tree (symlinks not followed).
fn dir_size(p: &Path) -> u64 {
    let Ok(m) = fs::symlink_metadata(p) else { return 0 };
    if !m.is_dir() {
        return m.len();
    }
    let mut total = 0;
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            total += dir_size(&e.path());
        }
    }
    total
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<ImageStore>();
}
