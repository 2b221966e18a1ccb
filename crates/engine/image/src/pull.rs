//! Pulling an image from a registry into the store: resolve the manifest (choosing
//! linux/amd64 from an index), fetch the config, download layers in parallel, record it.

use std::collections::VecDeque;
use std::sync::Mutex;

use oci_spec::image::{Arch, ImageIndex, ImageManifest, Os};

use crate::blob::digest_hex;
use crate::error::{Error, Result};
use crate::reference::ImageRef;
use crate::registry::{manifest_kind, Client, ManifestKind};
use crate::{Image, ImageStore, Progress, PullOptions};

const DEFAULT_CONCURRENT_DOWNLOADS: usize = 3;

/// Layer media types we can unpack (compression is sniffed, not trusted).
pub(crate) fn layer_media_type_ok(mt: &str) -> bool {
    matches!(
        mt,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.diff.tar"
    )
}

pub(crate) fn config_media_type_ok(mt: &str) -> bool {
    matches!(mt, "application/vnd.oci.image.config.v1+json" | "application/vnd.docker.container.image.v1+json")
}

/// Pick the linux/amd64 entry of an index.
pub(crate) fn pick_platform(index: &ImageIndex, reference: &str) -> Result<oci_spec::image::Descriptor> {
    index
        .manifests()
        .iter()
        .find(|d| d.platform().as_ref().is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64))
        .cloned()
        .ok_or_else(|| Error::NoMatchingPlatform { reference: reference.to_string(), platform: "linux/amd64".to_string() })
}

/// Check a parsed manifest's media types.
pub(crate) fn check_manifest(m: &ImageManifest, reference: &str) -> Result<()> {
    let cmt = m.config().media_type().to_string();
    if !config_media_type_ok(&cmt) {
        return Err(Error::UnsupportedMediaType { reference: reference.to_string(), media_type: cmt });
    }
    for l in m.layers() {
        let lmt = l.media_type().to_string();
        if !layer_media_type_ok(&lmt) {
            return Err(Error::UnsupportedMediaType { reference: reference.to_string(), media_type: lmt });
        }
        digest_hex(l.digest().as_ref())?;
    }
    Ok(())
}

pub(crate) fn parse_manifest(bytes: &[u8], reference: &str) -> Result<ImageManifest> {
    serde_json::from_slice(bytes).map_err(|e| Error::MalformedManifest { reference: reference.to_string(), detail: e.to_string() })
}

pub(crate) fn parse_index(bytes: &[u8], reference: &str) -> Result<ImageIndex> {
    serde_json::from_slice(bytes).map_err(|e| Error::MalformedManifest { reference: reference.to_string(), detail: e.to_string() })
}

pub(crate) fn pull(store: &ImageStore, reference: &str, opts: &PullOptions, progress: &dyn Progress) -> Result<Image> {
    let r = ImageRef::parse(reference)?;
    let name = r.name();
    let _gc = store.gc_shared()?;
    let client = Client::new(&r, opts);
    progress.message(&format!("resolving {name}"));
    let (mut body, mut media_type, mut digest) = client.manifest(r.manifest_reference(), &name)?;
    if manifest_kind(&media_type, &body, &name)? == ManifestKind::Index {
        let index = parse_index(&body, &name)?;
        let desc = pick_platform(&index, &name)?;
        let d = desc.digest().to_string();
        let (b, mt, got) = client.manifest(&d, &name)?;
        if b.len() as u64 != desc.size() {
            return Err(Error::SizeMismatch { digest: d, expected: desc.size(), actual: b.len() as u64 });
        }
        if manifest_kind(&mt, &b, &name)? != ManifestKind::Manifest {
            return Err(Error::MalformedManifest { reference: name, detail: format!("index entry {d} is not an image manifest") });
        }
        (body, media_type, digest) = (b, mt, got);
    }
    tracing::debug!(image = %name, %digest, %media_type, "resolved manifest");
    let manifest = parse_manifest(&body, &name)?;
    check_manifest(&manifest, &name)?;

    // Config first: it is small and tells us the diff ids.
    let cdesc = manifest.config();
    let config_digest = cdesc.digest().to_string();
    if !store.blobs.contains(&config_digest) {
        let bytes = client.small_blob(&config_digest, cdesc.size())?;
        store.blobs.write_bytes(Some(&config_digest), &bytes)?;
    }

    // Layers, in parallel.
    let workers = match opts.max_concurrent_downloads {
        0 => DEFAULT_CONCURRENT_DOWNLOADS,
        n => n,
    }
    .min(manifest.layers().len().max(1));
    let queue: Mutex<VecDeque<(String, u64)>> =
        Mutex::new(manifest.layers().iter().map(|l| (l.digest().to_string(), l.size())).collect());
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let ingest = store.ingest_dir();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                    return;
                }
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some((d, size)) = next else { return };
                if let Err(e) = client.download_layer(&d, size, &store.blobs, &ingest, progress) {
                    tracing::warn!(layer = %d, error = %e, "layer download failed");
                    if let Ok(mut slot) = first_error.lock() {
                        slot.get_or_insert(e);
                    }
                    return;
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }

    // The manifest goes in last: a stored manifest means its content is complete.
    store.blobs.write_bytes(Some(&digest), &body)?;
    let image = store.image_for(&digest, vec![name.clone()], &name)?;
    let image = store.record(image)?;
    tracing::info!(image = %name, id = %image.id, "pulled image");
    Ok(image)
}
