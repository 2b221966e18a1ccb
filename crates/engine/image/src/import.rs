//! Importing images from an OCI image layout (directory or tar) or a docker-archive tar
//! (`docker save` format: `manifest.json` with `Config`/`RepoTags`/`Layers`; layers plain or
//! gzip). Every blob is verified: OCI layout blobs against their path's digest and their
//! descriptor's size, docker-archive configs and layers by the config's diff ids when the
//! layer is unpacked. Docker-archive images are recorded with a synthesized OCI manifest.
//!
//! Names: OCI `org.opencontainers.image.ref.name` annotations that contain `:` or `/` are
//! references (qualified as `localhost/NAME` when they have no registry host); a bare tag is
//! combined with the layout's file name (`localhost/<basename>:<tag>`). Docker-archive
//! `RepoTags` follow Docker rules (`busybox:1` -> `docker.io/library/busybox:1`).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::blob::{digest_hex, MAX_JSON_BLOB};
use crate::error::{Error, Result};
use crate::pull::{check_manifest, parse_index, parse_manifest, pick_platform};
use crate::reference::ImageRef;
use crate::registry::{manifest_kind, ManifestKind, MT_OCI_MANIFEST};
use crate::{Image, ImageStore};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Where import reads files from.
enum Source {
    Dir(PathBuf),
    /// Tar already streamed into the blob store: path -> (digest, size); small JSON files
    /// are also kept in memory; symlinks map to their (resolved) target path.
    Tar { files: HashMap<String, (String, u64)>, small: HashMap<String, Vec<u8>>, links: HashMap<String, String> },
}

fn clean(p: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str()?.to_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(parts.join("/"))
}

impl Source {
    fn invalid(&self, archive: &Path, detail: impl Into<String>) -> Error {
        Error::InvalidArchive { path: archive.to_path_buf(), detail: detail.into() }
    }

    fn resolve(&self, rel: &str) -> String {
        let mut cur = rel.to_string();
        if let Source::Tar { links, .. } = self {
            for _ in 0..16 {
                match links.get(&cur) {
                    Some(t) => cur = t.clone(),
                    None => break,
                }
            }
        }
        cur
    }

    fn exists(&self, rel: &str) -> bool {
        match self {
            Source::Dir(d) => d.join(rel).is_file(),
            Source::Tar { small, files, .. } => {
                let r = self.resolve(rel);
                small.contains_key(&r) || files.contains_key(&r)
            }
        }
    }

    fn read_small(&self, archive: &Path, rel: &str) -> Result<Vec<u8>> {
        match self {
            Source::Dir(d) => {
                let p = d.join(rel);
                let f = File::open(&p).map_err(|e| Error::io(&p, e))?;
                let mut buf = Vec::new();
                f.take(MAX_JSON_BLOB).read_to_end(&mut buf).map_err(|e| Error::io(&p, e))?;
                Ok(buf)
            }
            Source::Tar { small, .. } => {
                small.get(&self.resolve(rel)).cloned().ok_or_else(|| self.invalid(archive, format!("{rel} is missing")))
            }
        }
    }

    /// Make sure the file at `rel` is in the store; verify `expected` digest/size when given.
    /// Returns `(digest, size)`.
    fn store_blob(&self, store: &ImageStore, archive: &Path, rel: &str, expected: Option<(&str, u64)>) -> Result<(String, u64)> {
        match self {
            Source::Dir(d) => {
                if let Some((digest, size)) = expected {
                    if store.blobs.contains(digest) && store.blobs.size(digest)? == size {
                        return Ok((digest.to_string(), size));
                    }
                }
                let p = d.join(rel);
                let f = File::open(&p).map_err(|e| Error::io(&p, e))?;
                store.blobs.write(expected.map(|e| e.0), expected.map(|e| e.1), f)
            }
            Source::Tar { files, .. } => {
                let (digest, size) = files.get(&self.resolve(rel)).cloned().ok_or_else(|| self.invalid(archive, format!("{rel} is missing")))?;
                if let Some((ed, es)) = expected {
                    if ed != digest {
                        return Err(Error::DigestMismatch { digest: ed.to_string(), actual: digest });
                    }
                    if es != size {
                        return Err(Error::SizeMismatch { digest: ed.to_string(), expected: es, actual: size });
                    }
                }
                Ok((digest, size))
            }
        }
    }
}

/// Stream a tar into the store: every regular file becomes a blob.
fn read_tar(store: &ImageStore, path: &Path) -> Result<Source> {
    let invalid = |d: String| Error::InvalidArchive { path: path.to_path_buf(), detail: d };
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut archive = tar::Archive::new(file);
    let mut files = HashMap::new();
    let mut small = HashMap::new();
    let mut links = HashMap::new();
    for entry in archive.entries().map_err(|e| invalid(e.to_string()))? {
        let mut entry = entry.map_err(|e| invalid(e.to_string()))?;
        let p = entry.path().map_err(|e| invalid(e.to_string()))?.into_owned();
        let Some(rel) = clean(&p) else { continue };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().unwrap_or(u64::MAX);
                let is_meta = rel.ends_with(".json") || rel == "oci-layout" || rel == "repositories";
                if is_meta && size <= MAX_JSON_BLOB {
                    let mut buf = Vec::new();
                    entry.read_to_end(&mut buf).map_err(|e| invalid(format!("{rel}: {e}")))?;
                    let digest = store.blobs.write_bytes(None, &buf)?;
                    files.insert(rel.clone(), (digest, buf.len() as u64));
                    small.insert(rel, buf);
                } else {
                    let (digest, size) = store.blobs.write(None, None, &mut entry)?;
                    files.insert(rel, (digest, size));
                }
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                if let Ok(Some(target)) = entry.link_name() {
                    let base = if entry.header().entry_type() == tar::EntryType::Symlink {
                        p.parent().map(Path::to_path_buf).unwrap_or_default().join(target)
                    } else {
                        target.into_owned()
                    };
                    if let Some(t) = clean(&base) {
                        links.insert(rel, t);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Source::Tar { files, small, links })
}

/// Each image imported with the names this import gave it (the record may hold more, from
/// earlier pulls and imports of the same image).
pub(crate) fn import(store: &ImageStore, path: &Path, tag: Option<&str>) -> Result<Vec<(Image, Vec<String>)>> {
    let _gc = store.gc_shared()?;
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let source = if meta.is_dir() { Source::Dir(path.to_path_buf()) } else { read_tar(store, path)? };
    let tag_name = match tag {
        Some(t) => Some(ImageRef::parse_local(t)?.name()),
        None => None,
    };
    let found: Vec<(String, Vec<String>)> = if source.exists("index.json") && source.exists("oci-layout") {
        import_oci(store, path, &source)?
    } else if source.exists("manifest.json") {
        import_docker(store, path, &source)?
    } else {
        return Err(source.invalid(path, "neither an OCI image layout (oci-layout, index.json) nor a docker-archive (manifest.json)"));
    };
    if found.is_empty() {
        return Err(source.invalid(path, "contains no images"));
    }
    if tag_name.is_some() && found.len() != 1 {
        return Err(source.invalid(path, format!("a tag needs exactly one image, the archive holds {}", found.len())));
    }
    let mut out = Vec::new();
    for (manifest_digest, names) in found {
        let names = match &tag_name {
            Some(t) => vec![t.clone()],
            None => names,
        };
        let img = store.image_for(&manifest_digest, names.clone(), &path.display().to_string())?;
        out.push((store.record(img)?, names));
    }
    tracing::info!(path = %path.display(), images = out.len(), "imported images");
    Ok(out)
}

/// Store a manifest's config and layers from the source and return nothing on success.
fn store_manifest_content(store: &ImageStore, archive: &Path, source: &Source, m: &ImageManifest) -> Result<()> {
    let blob_rel = |d: &str| -> Result<String> { Ok(format!("blobs/sha256/{}", digest_hex(d)?)) };
    let c = m.config();
    source.store_blob(store, archive, &blob_rel(c.digest().as_ref())?, Some((c.digest().as_ref(), c.size())))?;
    for l in m.layers() {
        source.store_blob(store, archive, &blob_rel(l.digest().as_ref())?, Some((l.digest().as_ref(), l.size())))?;
    }
    Ok(())
}

fn import_oci(store: &ImageStore, archive: &Path, source: &Source) -> Result<Vec<(String, Vec<String>)>> {
    let what = archive.display().to_string();
    let layout: serde_json::Value = serde_json::from_slice(&source.read_small(archive, "oci-layout")?)
        .map_err(|e| source.invalid(archive, format!("oci-layout: {e}")))?;
    if layout.get("imageLayoutVersion").and_then(|v| v.as_str()).is_none() {
        return Err(source.invalid(archive, "oci-layout has no imageLayoutVersion"));
    }
    let index: ImageIndex = parse_index(&source.read_small(archive, "index.json")?, &what)?;
    let base = archive
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.split('.').next().unwrap_or(n).to_ascii_lowercase())
        .unwrap_or_else(|| "image".to_string());
    let mut out = Vec::new();
    for desc in index.manifests() {
        let mut d = desc.clone();
        let mt = d.media_type().to_string();
        let mut rel = format!("blobs/sha256/{}", digest_hex(d.digest().as_ref())?);
        let (mut digest, _) = source.store_blob(store, archive, &rel, Some((d.digest().as_ref(), d.size())))?;
        let mut bytes = store.blobs.read_verified(&digest)?;
        if manifest_kind(&mt, &bytes, &what)? == ManifestKind::Index {
            let nested = parse_index(&bytes, &what)?;
            d = pick_platform(&nested, &what)?;
            rel = format!("blobs/sha256/{}", digest_hex(d.digest().as_ref())?);
            (digest, _) = source.store_blob(store, archive, &rel, Some((d.digest().as_ref(), d.size())))?;
            bytes = store.blobs.read_verified(&digest)?;
        }
        let m = parse_manifest(&bytes, &what)?;
        check_manifest(&m, &what)?;
        store_manifest_content(store, archive, source, &m)?;
        let mut names = Vec::new();
        if let Some(n) = desc.annotations().as_ref().and_then(|a| a.get(REF_NAME)) {
            let name = if n.contains(':') || n.contains('/') {
                ImageRef::parse_local(n)?.name()
            } else {
                ImageRef::parse_local(&format!("{base}:{n}"))?.name()
            };
            names.push(name);
        }
        out.push((digest, names));
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn import_docker(store: &ImageStore, archive: &Path, source: &Source) -> Result<Vec<(String, Vec<String>)>> {
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(&source.read_small(archive, "manifest.json")?)
        .map_err(|e| source.invalid(archive, format!("manifest.json: {e}")))?;
    let mut out = Vec::new();
    for e in entries {
        let (config_digest, config_size) = source.store_blob(store, archive, &e.config, None)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let (digest, size) = source.store_blob(store, archive, l, None)?;
            let gz = crate::unpack::is_gzip(store.blobs.open(&digest)?);
            let mt = if gz { "application/vnd.oci.image.layer.v1.tar+gzip" } else { "application/vnd.oci.image.layer.v1.tar" };
            layers.push(serde_json::json!({ "mediaType": mt, "digest": digest, "size": size }));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size },
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest).map_err(|err| source.invalid(archive, err.to_string()))?;
        let digest = store.blobs.write_bytes(None, &bytes)?;
        let mut names = Vec::new();
        for t in e.repo_tags.unwrap_or_default() {
            names.push(ImageRef::parse(&t)?.name());
        }
        out.push((digest, names));
    }
    Ok(out)
}
