//! Files that hold credentials or cluster state: the data directory, the PKI, the kubeconfig,
//! the store. They belong to the server's user alone: directories 0700, files 0600, created
//! with those modes (never created looser and tightened afterwards, which would leave a window
//! in which another local user could open them), and tightened at start when an older version
//! or an operator left them looser.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What failed, on which path.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FileError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn err(path: &Path) -> impl Fn(std::io::Error) -> FileError + '_ {
    move |source| FileError { path: path.to_path_buf(), source }
}

/// Create `dir` (and missing parents) as 0700, or tighten an existing one to 0700.
pub fn private_dir(dir: &Path) -> Result<(), FileError> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err(dir))?;
    tighten(dir, 0o700)
}

/// Remove group and other permission bits from `path` if it has any (missing: nothing to do).
pub fn tighten(path: &Path, mode: u32) -> Result<(), FileError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(path)(e)),
    };
    let current = meta.permissions().mode() & 0o7777;
    if current & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(current & mode)).map_err(err(path))?;
        tracing::warn!(path = %path.display(), "was accessible to other users; mode tightened from {current:o} to {:o}", current & mode);
    }
    Ok(())
}

/// Replace `path` atomically with `data`, as a file only its owner can read (`secret`, 0600)
/// or anyone can (0644, for certificates). The new file is created with its final mode.
pub fn write_atomic(path: &Path, data: &[u8], secret: bool) -> Result<(), FileError> {
    let mode = if secret { 0o600 } else { 0o644 };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    // A leftover of a crashed write may have any mode: never reuse it.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(&tmp)(e)),
    }
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn created_private_whatever_the_umask_and_loose_ones_tightened() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base.path().join("a/b");
        private_dir(&dir).expect("dir");
        assert_eq!(mode(&dir), 0o700);
        let key = dir.join("k.key");
        write_atomic(&key, b"secret", true).expect("write");
        assert_eq!(mode(&key), 0o600);
        write_atomic(&dir.join("c.crt"), b"cert", false).expect("write");
        assert_eq!(mode(&dir.join("c.crt")), 0o644);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        private_dir(&dir).expect("dir");
        tighten(&key, 0o600).expect("tighten");
        assert_eq!((mode(&dir), mode(&key)), (0o700, 0o600));
        tighten(&dir.join("missing"), 0o600).expect("missing is fine");
    }
}
