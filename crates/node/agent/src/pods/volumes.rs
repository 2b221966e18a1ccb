//! Pod volumes on the node, under `<root_dir>/pods/<uid>/volumes/<name>`: emptyDir (a
//! directory, or a tmpfs with `medium: Memory`), hostPath (with its type checks), configMap,
//! secret (on a tmpfs), downwardAPI, projected (serviceAccountToken sources, with secrets, on a
//! tmpfs; the tokens come from the worker's TokenRequests), and persistentVolumeClaim when the claim is
//! bound to a hostPath or local PersistentVolume (the volume's directory itself, as kubelet's
//! hostPath and local plugins mount it). Files of the API-backed kinds are written as
//! kubelet's atomic writer does: a fresh timestamped directory, `..data` switched to it by one
//! rename, and each top-level name a symlink through `..data`, so a container never sees half
//! an update. Blocking (files and mounts).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Volume};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::spec::{self, PodFacts};

/// The ConfigMaps and Secrets a pod refers to, read from the API server (`None`: not found).
#[derive(Default, Clone)]
pub struct Refs {
    pub configmaps: HashMap<String, Option<ConfigMap>>,
    pub secrets: HashMap<String, Option<Secret>>,
    /// Claims by name, each with the volume it is bound to (when it is and the volume exists).
    pub claims: HashMap<String, Option<(PersistentVolumeClaim, Option<PersistentVolume>)>>,
    /// ServiceAccount tokens of projected `serviceAccountToken` sources by [`token_key`], or
    /// why the TokenRequest failed.
    pub tokens: HashMap<String, Result<String, String>>,
}

/// The key of a projected volume's `index`th source in [`Refs::tokens`].
pub fn token_key(volume: &str, index: usize) -> String {
    format!("{volume}/{index}")
}

/// Why a volume could not be set up (reported as a `FailedMount` event).
#[derive(Debug, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
pub struct VolumeError {
    pub volume: String,
    pub message: String,
}

fn verr(volume: &str, message: impl Into<String>) -> VolumeError {
    VolumeError { volume: volume.to_string(), message: message.into() }
}

/// The files of one volume: relative path -> (content, mode).
type Files = BTreeMap<PathBuf, (Vec<u8>, u32)>;

fn safe_relative(p: &str) -> Option<PathBuf> {
    let path = Path::new(p);
    (!p.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)))).then(|| path.to_path_buf())
}

fn mount_tmpfs(dir: &Path, size: Option<u64>, mode: u32) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    // By device first: the mount table has a few lines per pod, and this runs in every sync.
    if strata_driver::is_mountpoint(dir) {
        return Ok(());
    }
    let mut data = format!("mode={mode:o}");
    if let Some(s) = size {
        data.push_str(&format!(",size={s}"));
    }
    nix::mount::mount(Some("tmpfs"), dir, Some("tmpfs"), nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV, Some(data.as_str()))
        .map_err(|e| format!("mounting a tmpfs on {}: {e}", dir.display()))
}

/// Unmount whatever is mounted below `dir` and remove it (a pod's whole directory); Err says
/// what could not be removed.
pub fn remove_pod_dir(dir: &Path) -> Result<(), String> {
    let prefix = format!("{}/", dir.display());
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        if let Err(e) = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(mount = %m, error = %e, "unmounting a pod volume");
        }
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!("removing {}: {e}", dir.display())),
        _ => Ok(()),
    }
}

/// Give `path` to group `gid` as kubelet's volume ownership does for a pod's `fsGroup`: the
/// group owns it and may read it (`readonly`) or read and write it; a directory is also
/// searchable and set-group-ID, so what is created in it belongs to the group too. A symlink
/// only changes group.
fn own(path: &Path, gid: u32, readonly: bool) -> Result<(), String> {
    std::os::unix::fs::lchown(path, None, Some(gid)).map_err(|e| format!("chown {}: {e}", path.display()))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("stat {}: {e}", path.display()))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mut mask = if readonly { 0o440 } else { 0o660 };
    if meta.is_dir() {
        mask |= 0o2110;
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode | mask != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | mask)).map_err(|e| format!("chmod {}: {e}", path.display()))?;
    }
    Ok(())
}

/// [`own`] for `dir` and everything below it.
fn own_tree(dir: &Path, gid: u32, readonly: bool) -> Result<(), String> {
    own(dir, gid, readonly)?;
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        for e in std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?.flatten() {
            own_tree(&e.path(), gid, readonly)?;
        }
    }
    Ok(())
}

/// Write `files` into `dir` atomically (see the module header); nothing is written when the
/// content is already there. With `gid` (the pod's `fsGroup`) the volume belongs to that group,
/// read-only for it, as kubelet's ownership of API-backed volumes.
fn write_atomic(dir: &Path, files: &Files, gid: Option<u32>) -> Result<(), String> {
    let io = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    let owned: Files;
    let files = match gid {
        Some(_) => {
            owned = files.iter().map(|(p, (c, m))| (p.clone(), (c.clone(), m | 0o440))).collect();
            &owned
        }
        None => files,
    };
    std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    let data = dir.join("..data");
    let current: Option<Files> = std::fs::read_link(&data).ok().map(|target| {
        let mut have = Files::new();
        for rel in files.keys() {
            if let (Ok(content), Ok(meta)) = (std::fs::read(dir.join(&target).join(rel)), std::fs::metadata(dir.join(&target).join(rel))) {
                have.insert(rel.clone(), (content, meta.permissions().mode() & 0o7777));
            }
        }
        have
    });
    let old_target = std::fs::read_link(&data).ok();
    let same_names = old_target.as_ref().is_some_and(|t| count_files(&dir.join(t)) == files.len());
    if current.as_ref() == Some(files) && same_names {
        return Ok(());
    }
    let stamp = format!("..{}", chrono_stamp());
    let ts = dir.join(&stamp);
    std::fs::create_dir(&ts).map_err(|e| io("creating", &ts, e))?;
    std::fs::set_permissions(&ts, std::fs::Permissions::from_mode(0o755)).map_err(|e| io("chmod", &ts, e))?;
    for (rel, (content, mode)) in files {
        let path = ts.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
        }
        std::fs::write(&path, content).map_err(|e| io("writing", &path, e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).map_err(|e| io("chmod", &path, e))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp).map_err(|e| io("linking", &tmp, e))?;
    if let Some(g) = gid {
        own_tree(&ts, g, true)?;
        own(&tmp, g, true)?;
        own(dir, g, true)?;
    }
    std::fs::rename(&tmp, &data).map_err(|e| io("switching", &data, e))?;
    let tops: std::collections::BTreeSet<String> =
        files.keys().filter_map(|p| p.components().next()).map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(top), &link).map_err(|e| io("linking", &link, e))?;
            if let Some(g) = gid {
                own(&link, g, true)?;
            }
        }
    }
    // Names no longer projected, and the previous timestamped directory.
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !tops.contains(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Some(old) = old_target {
        if old != Path::new(&stamp) {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
    }
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => n += count_files(&e.path()),
                Ok(_) => n += 1,
                Err(_) => {}
            }
        }
    }
    n
}

fn chrono_stamp() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}_{:09}", now.as_secs(), now.subsec_nanos())
}

/// Project `data` (key -> bytes) through `items` (or every key) with modes.
#[allow(clippy::too_many_arguments)]
fn project(volume: &str, kind: &str, name: &str, data: &BTreeMap<String, Vec<u8>>, items: Option<&Vec<KeyToPath>>, default_mode: u32, optional: bool, out: &mut Files) -> Result<(), VolumeError> {
    match items {
        None => {
            for (k, v) in data {
                let rel = safe_relative(k).ok_or_else(|| verr(volume, format!("invalid key {k:?}")))?;
                out.insert(rel, (v.clone(), default_mode));
            }
        }
        Some(items) => {
            for it in items {
                let rel = safe_relative(&it.path).ok_or_else(|| verr(volume, format!("invalid path {:?}", it.path)))?;
                match data.get(&it.key) {
                    Some(v) => {
                        out.insert(rel, (v.clone(), it.mode.map(|m| m as u32).unwrap_or(default_mode)));
                    }
                    None if optional => {}
                    None => return Err(verr(volume, format!("{kind} {name:?} references non-existent key {:?}", it.key))),
                }
            }
        }
    }
    Ok(())
}

fn configmap_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut d: BTreeMap<String, Vec<u8>> = cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
    d.extend(cm.binary_data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())));
    d
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut d: BTreeMap<String, Vec<u8>> = s.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
    d.extend(s.string_data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())));
    d
}

fn downward(volume: &str, items: &[DownwardAPIVolumeFile], facts: &PodFacts, allocatable: &BTreeMap<String, Quantity>, default_mode: u32, out: &mut Files) -> Result<(), VolumeError> {
    for it in items {
        let rel = safe_relative(&it.path).ok_or_else(|| verr(volume, format!("invalid path {:?}", it.path)))?;
        let value = match (&it.field_ref, &it.resource_field_ref) {
            (Some(f), _) => spec::field_ref(f, facts),
            (None, Some(r)) => spec::resource_field_ref(r, facts.pod, None, allocatable),
            (None, None) => Err("an item needs fieldRef or resourceFieldRef".to_string()),
        }
        .map_err(|m| verr(volume, m))?;
        out.insert(rel, (value.into_bytes(), it.mode.map(|m| m as u32).unwrap_or(default_mode)));
    }
    Ok(())
}

/// `Some(sizeLimit in bytes)` when an emptyDir is memory-backed (`medium: Memory`).
fn memory_medium(ed: &k8s_openapi::api::core::v1::EmptyDirVolumeSource) -> Option<Option<u64>> {
    (ed.medium.as_deref() == Some("Memory")).then(|| ed.size_limit.as_ref().and_then(spec::milli).map(|m| (m / 1000).max(0) as u64))
}

/// The size limit of `pod`'s volume `name` when it is a memory-backed emptyDir (`Some(None)`:
/// no limit); `None` for any other volume.
pub fn memory_volume(pod: &Pod, name: &str) -> Option<Option<u64>> {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_deref()).unwrap_or(&[]);
    volumes.iter().find(|v| v.name == name).and_then(|v| v.empty_dir.as_ref()).and_then(memory_medium)
}

/// Set up (or bring up to date) every volume of `pod` under `pod_dir`; returns each volume's
/// host path, to be bind-mounted.
pub fn prepare(pod_dir: &Path, pod: &Pod, refs: &Refs, facts: &PodFacts, allocatable: &BTreeMap<String, Quantity>) -> Result<BTreeMap<String, PathBuf>, VolumeError> {
    let mut paths = BTreeMap::new();
    let volumes: &[Volume] = pod.spec.as_ref().and_then(|s| s.volumes.as_deref()).unwrap_or(&[]);
    // The group that owns the pod's emptyDir and API-backed volumes (kubelet's volume ownership).
    let fs_group = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()).and_then(|c| c.fs_group).and_then(|g| u32::try_from(g).ok());
    for v in volumes {
        let dir = pod_dir.join("volumes").join(&v.name);
        let name = v.name.as_str();
        if let Some(ed) = &v.empty_dir {
            if let Some(size) = memory_medium(ed) {
                mount_tmpfs(&dir, size, 0o777).map_err(|m| verr(name, m))?;
            } else {
                std::fs::create_dir_all(&dir).map_err(|e| verr(name, e.to_string()))?;
            }
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).map_err(|e| verr(name, e.to_string()))?;
            if let Some(g) = fs_group {
                // The directory only: what the containers write in it is theirs (kubelet sets
                // ownership once, at set-up, when nothing is in it yet).
                own(&dir, g, false).map_err(|m| verr(name, m))?;
            }
            paths.insert(v.name.clone(), dir);
        } else if let Some(hp) = &v.host_path {
            paths.insert(v.name.clone(), host_path(name, &hp.path, hp.type_.as_deref().unwrap_or(""))?);
        } else if let Some(cm) = &v.config_map {
            let mut files = Files::new();
            let mode = cm.default_mode.map(|m| m as u32).unwrap_or(0o644);
            let optional = cm.optional.unwrap_or(false);
            match refs.configmaps.get(&cm.name).cloned().flatten() {
                Some(obj) => project(name, "configmap", &cm.name, &configmap_data(&obj), cm.items.as_ref(), mode, optional, &mut files)?,
                None if optional => {}
                None => return Err(verr(name, format!("configmap {:?} not found", cm.name))),
            }
            write_atomic(&dir, &files, fs_group).map_err(|m| verr(name, m))?;
            paths.insert(v.name.clone(), dir);
        } else if let Some(s) = &v.secret {
            let secret_name = s.secret_name.clone().unwrap_or_default();
            let mut files = Files::new();
            let mode = s.default_mode.map(|m| m as u32).unwrap_or(0o644);
            let optional = s.optional.unwrap_or(false);
            match refs.secrets.get(&secret_name).cloned().flatten() {
                Some(obj) => project(name, "secret", &secret_name, &secret_data(&obj), s.items.as_ref(), mode, optional, &mut files)?,
                None if optional => {}
                None => return Err(verr(name, format!("secret {secret_name:?} not found"))),
            }
            // Secrets never touch the disk.
            mount_tmpfs(&dir, None, 0o755).map_err(|m| verr(name, m))?;
            write_atomic(&dir, &files, fs_group).map_err(|m| verr(name, m))?;
            paths.insert(v.name.clone(), dir);
        } else if let Some(d) = &v.downward_api {
            let mut files = Files::new();
            downward(name, d.items.as_deref().unwrap_or(&[]), facts, allocatable, d.default_mode.map(|m| m as u32).unwrap_or(0o644), &mut files)?;
            write_atomic(&dir, &files, fs_group).map_err(|m| verr(name, m))?;
            paths.insert(v.name.clone(), dir);
        } else if let Some(p) = &v.projected {
            let mode = p.default_mode.map(|m| m as u32).unwrap_or(0o644);
            let mut files = Files::new();
            let mut has_secret = false;
            for (i, src) in p.sources.iter().flatten().enumerate() {
                if let Some(t) = &src.service_account_token {
                    // Tokens are credentials: on a tmpfs, as secrets.
                    has_secret = true;
                    let rel = safe_relative(&t.path).ok_or_else(|| verr(name, format!("invalid path {:?}", t.path)))?;
                    match refs.tokens.get(&token_key(name, i)) {
                        Some(Ok(token)) => {
                            files.insert(rel, (token.clone().into_bytes(), mode));
                        }
                        Some(Err(why)) => return Err(verr(name, why.clone())),
                        None => return Err(verr(name, "no service account token requested")),
                    }
                } else if let Some(cm) = &src.config_map {
                    let optional = cm.optional.unwrap_or(false);
                    match refs.configmaps.get(&cm.name).cloned().flatten() {
                        Some(obj) => project(name, "configmap", &cm.name, &configmap_data(&obj), cm.items.as_ref(), mode, optional, &mut files)?,
                        None if optional => {}
                        None => return Err(verr(name, format!("configmap {:?} not found", cm.name))),
                    }
                } else if let Some(s) = &src.secret {
                    has_secret = true;
                    let optional = s.optional.unwrap_or(false);
                    match refs.secrets.get(&s.name).cloned().flatten() {
                        Some(obj) => project(name, "secret", &s.name, &secret_data(&obj), s.items.as_ref(), mode, optional, &mut files)?,
                        None if optional => {}
                        None => return Err(verr(name, format!("secret {:?} not found", s.name))),
                    }
                } else if let Some(d) = &src.downward_api {
                    downward(name, d.items.as_deref().unwrap_or(&[]), facts, allocatable, mode, &mut files)?;
                } else {
                    return Err(verr(name, "unsupported projected source (clusterTrustBundle)"));
                }
            }
            if has_secret {
                mount_tmpfs(&dir, None, 0o755).map_err(|m| verr(name, m))?;
            }
            write_atomic(&dir, &files, fs_group).map_err(|m| verr(name, m))?;
            paths.insert(v.name.clone(), dir);
        } else if let Some(c) = &v.persistent_volume_claim {
            paths.insert(v.name.clone(), claim_path(name, &c.claim_name, refs)?);
        } else {
            return Err(verr(name, "unsupported volume type on this node"));
        }
    }
    Ok(paths)
}

/// The directory of a claim's volume: a bound claim's hostPath (with its type check) or local
/// path; anything else is refused with kubelet's messages.
fn claim_path(volume: &str, claim: &str, refs: &Refs) -> Result<PathBuf, VolumeError> {
    let Some((pvc, pv)) = refs.claims.get(claim).cloned().flatten() else {
        return Err(verr(volume, format!("persistentvolumeclaim {claim:?} not found")));
    };
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let volume_name = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).unwrap_or_default();
    let Some(pv) = pv.filter(|_| bound && !volume_name.is_empty()) else {
        return Err(verr(volume, format!("PVC {claim} is not bound")));
    };
    let spec = pv.spec.unwrap_or_default();
    if let Some(hp) = &spec.host_path {
        return host_path(volume, &hp.path, hp.type_.as_deref().unwrap_or(""));
    }
    if let Some(l) = &spec.local {
        return host_path(volume, &l.path, "Directory");
    }
    Err(verr(volume, format!("persistent volume {volume_name:?} is of a type this node cannot mount (hostPath and local only)")))
}

/// A hostPath volume's path after its type check (kubelet's messages).
fn host_path(volume: &str, path: &str, kind: &str) -> Result<PathBuf, VolumeError> {
    use std::os::unix::fs::FileTypeExt;
    let p = PathBuf::from(path);
    let meta = std::fs::metadata(&p);
    let bad = |what: &str| Err(verr(volume, format!("hostPath type check failed: {path} is not a {what}")));
    match kind {
        // No check (kubelet's default); a missing path becomes a directory, as the CRI runtimes
        // under kubelet (containerd, CRI-O) create a bind mount's missing source.
        "" if p.is_absolute() && std::fs::symlink_metadata(&p).is_err() => {
            std::fs::create_dir_all(&p).map_err(|e| verr(volume, format!("creating {path}: {e}")))?;
        }
        "" => {}
        "DirectoryOrCreate" => {
            if meta.is_err() {
                std::fs::create_dir_all(&p).map_err(|e| verr(volume, format!("creating {path}: {e}")))?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).map_err(|e| verr(volume, e.to_string()))?;
            } else if !meta.as_ref().is_ok_and(|m| m.is_dir()) {
                return bad("directory");
            }
        }
        "Directory" => {
            if !meta.as_ref().is_ok_and(|m| m.is_dir()) {
                return if meta.is_err() { Err(verr(volume, format!("hostPath type check failed: {path} is not a directory"))) } else { bad("directory") };
            }
        }
        "FileOrCreate" => {
            if meta.is_err() {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| verr(volume, e.to_string()))?;
                }
                std::fs::OpenOptions::new().create(true).append(true).open(&p).map_err(|e| verr(volume, format!("creating {path}: {e}")))?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).map_err(|e| verr(volume, e.to_string()))?;
            } else if !meta.as_ref().is_ok_and(|m| m.is_file()) {
                return bad("file");
            }
        }
        "File" if !meta.as_ref().is_ok_and(|m| m.is_file()) => return bad("file"),
        "Socket" if !meta.as_ref().is_ok_and(|m| m.file_type().is_socket()) => return bad("socket"),
        "CharDevice" if !meta.as_ref().is_ok_and(|m| m.file_type().is_char_device()) => return bad("character device"),
        "BlockDevice" if !meta.as_ref().is_ok_and(|m| m.file_type().is_block_device()) => return bad("block device"),
        "File" | "Socket" | "CharDevice" | "BlockDevice" => {}
        other => return Err(verr(volume, format!("unknown hostPath type {other:?}"))),
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writer_swaps_and_prunes() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path().join("v");
        let mut files = Files::new();
        files.insert("a".into(), (b"1".to_vec(), 0o644));
        files.insert("sub/b".into(), (b"2".to_vec(), 0o600));
        write_atomic(&d, &files, None).expect("write");
        assert_eq!(std::fs::read(d.join("a")).expect("a"), b"1");
        assert_eq!(std::fs::read(d.join("sub/b")).expect("b"), b"2");
        let first = std::fs::read_link(d.join("..data")).expect("..data");
        write_atomic(&d, &files, None).expect("same again");
        assert_eq!(std::fs::read_link(d.join("..data")).expect("..data"), first, "unchanged content is not rewritten");
        files.remove(Path::new("sub/b"));
        files.insert("a".into(), (b"3".to_vec(), 0o644));
        write_atomic(&d, &files, None).expect("update");
        assert_eq!(std::fs::read(d.join("a")).expect("a"), b"3");
        assert!(std::fs::symlink_metadata(d.join("sub")).is_err(), "dropped name removed");
        assert!(!d.join(&first).exists(), "old data removed");
    }

    #[test]
    fn host_path_types() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("f");
        std::fs::write(&f, b"").expect("f");
        let fs = f.display().to_string();
        assert!(host_path("v", &fs, "File").is_ok());
        assert!(host_path("v", &fs, "Directory").is_err_and(|e| e.message.contains("is not a directory")));
        let new = dir.path().join("new/dir").display().to_string();
        assert!(host_path("v", &new, "DirectoryOrCreate").is_ok());
        assert!(Path::new(&new).is_dir());
        assert!(host_path("v", &fs, "Socket").is_err());
        assert!(safe_relative("../x").is_none() && safe_relative("/x").is_none() && safe_relative("a/b").is_some());
    }

    #[test]
    fn claims_mount_their_bound_host_path_volume() {
        use k8s_openapi::api::core::v1::{HostPathVolumeSource, PersistentVolumeClaimSpec, PersistentVolumeClaimStatus, PersistentVolumeSpec};
        let dir = tempfile::tempdir().expect("dir");
        let target = dir.path().join("pvc-1");
        let pv = PersistentVolume {
            spec: Some(PersistentVolumeSpec { host_path: Some(HostPathVolumeSource { path: target.to_string_lossy().into_owned(), type_: Some("DirectoryOrCreate".into()) }), ..Default::default() }),
            ..Default::default()
        };
        let claim = |bound: bool| PersistentVolumeClaim {
            spec: Some(PersistentVolumeClaimSpec { volume_name: bound.then(|| "pvc-1".to_string()), ..Default::default() }),
            status: Some(PersistentVolumeClaimStatus { phase: Some(if bound { "Bound" } else { "Pending" }.into()), ..Default::default() }),
            ..Default::default()
        };
        let mut refs = Refs::default();
        refs.claims.insert("bound".into(), Some((claim(true), Some(pv.clone()))));
        refs.claims.insert("pending".into(), Some((claim(false), None)));
        refs.claims.insert("gone".into(), None);
        assert_eq!(claim_path("v", "bound", &refs).expect("bound"), target);
        assert!(target.is_dir(), "DirectoryOrCreate made it");
        assert!(claim_path("v", "pending", &refs).is_err_and(|e| e.message == "PVC pending is not bound"));
        assert!(claim_path("v", "gone", &refs).is_err_and(|e| e.message.contains("not found")));
        assert!(claim_path("v", "unknown", &refs).is_err());
    }
}
