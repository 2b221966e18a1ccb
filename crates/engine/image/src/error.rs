//! The error type of the image store: one enum, one single-line message per variant, each
//! naming the thing it is about (image reference, digest, registry, path).
//!
//! Messages do not repeat their `source`; callers print the chain (see docs/STYLE.md).

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in `strata-image`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reference could not be parsed (bad syntax, uppercase repository, ...).
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    /// No such image locally (get/remove) or in the registry (pull, 404).
    #[error("image not found: {0}")]
    ImageNotFound(String),

    /// A hex id prefix matched more than one image.
    #[error("image id prefix {0} is ambiguous")]
    AmbiguousImageId(String),

    /// Connection refused, DNS failure, TLS failure, timeout.
    #[error("cannot reach registry {registry}: {detail}")]
    RegistryUnreachable { registry: String, detail: String },

    /// 401/403 after authenticating (or without credentials to offer).
    #[error("registry {registry} denied access to {repository}: {detail}")]
    AccessDenied { registry: String, repository: String, detail: String },

    /// Any other unexpected answer from a registry.
    #[error("registry {registry} failed for {what}: {detail}")]
    Registry { registry: String, what: String, detail: String },

    /// Content does not hash to the digest it was fetched or stored under.
    #[error("content of {digest} does not match its digest (got {actual})")]
    DigestMismatch { digest: String, actual: String },

    /// Content has a different size than its descriptor says.
    #[error("content of {digest} has {actual} bytes, expected {expected}")]
    SizeMismatch { digest: String, expected: u64, actual: u64 },

    /// A digest string that is not `sha256:<64 hex>`.
    #[error("unsupported or malformed digest {0:?}")]
    InvalidDigest(String),

    /// A manifest, index or config that does not parse or is inconsistent.
    #[error("malformed manifest for {reference}: {detail}")]
    MalformedManifest { reference: String, detail: String },

    /// A manifest or layer media type this store cannot handle.
    #[error("unsupported media type {media_type} in {reference}")]
    UnsupportedMediaType { reference: String, media_type: String },

    /// An index/manifest list without a linux/amd64 entry.
    #[error("no {platform} image in index {reference}")]
    NoMatchingPlatform { reference: String, platform: String },

    /// A blob the image needs is not in the local store.
    #[error("blob {0} is missing from the image store")]
    BlobNotFound(String),

    /// ENOSPC while writing; the partial file has been removed.
    #[error("no space left on device while writing {}", path.display())]
    DiskFull { path: PathBuf },

    /// A layer tar entry tries to escape its directory; the whole layer is refused.
    #[error("layer {digest} is unsafe: entry {entry:?} {reason}")]
    UnsafeLayer { digest: String, entry: String, reason: String },

    /// A layer above a configured ceiling (uncompressed bytes or entries); nothing of it is kept.
    #[error("layer {digest} exceeds the limit of {limit} {what} per layer")]
    LayerTooLarge { digest: String, what: &'static str, limit: u64 },

    /// Unpacking a layer would have left less free space than the configured reserve; the
    /// partial snapshot has been removed.
    #[error("unpacking layer {digest} stopped at {entry:?}: it would leave less than the reserve of {reserve} bytes free on {} ({available} bytes available)", path.display())]
    UnpackReserve { digest: String, entry: String, path: PathBuf, available: u64, reserve: u64 },

    /// A layer that is not a readable tar (or has an unsupported compression).
    #[error("cannot unpack layer {digest}: {detail}")]
    InvalidLayer { digest: String, detail: String },

    /// An import source that is neither an OCI layout nor a docker-archive, or is inconsistent.
    #[error("cannot import {}: {detail}", path.display())]
    InvalidArchive { path: PathBuf, detail: String },

    /// The image metadata database is unreadable.
    #[error("image database {} is corrupt: {detail}", path.display())]
    Database { path: PathBuf, detail: String },

    /// Any other I/O failure, naming the path.
    #[error("I/O error on {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wrap an I/O error for `path`, turning ENOSPC into [`Error::DiskFull`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            Error::DiskFull { path }
        } else {
            Error::Io { path, source }
        }
    }

    /// Same as [`Error::io`] for nix errors.
    pub(crate) fn nix(path: impl Into<PathBuf>, errno: nix::Error) -> Error {
        Error::io(path, io::Error::from_raw_os_error(errno as i32))
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
