//! The image metadata database: `ROOT/images.json`, a list of [`Image`] records.
//!
//! Every read-modify-write holds an exclusive `flock` on `ROOT/locks/images.lock` and the
//! file is replaced atomically (temp file + fsync + rename), so two `strata` processes (or
//! two threads with their own [`crate::ImageStore`]) never lose each other's updates and a
//! crash never leaves a half-written database.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::blob::write_atomic;
use crate::error::{Error, Result};
use crate::Image;

/// The lock file at `path`, created if missing.
fn open_lock(path: &Path) -> Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(|e| Error::io(path, e))
}

/// Take a `flock` on `path` (created if missing); released when the guard drops.
pub(crate) fn lock_file(path: &Path, exclusive: bool) -> Result<Flock<File>> {
    let file = open_lock(path)?;
    let arg = if exclusive { FlockArg::LockExclusive } else { FlockArg::LockShared };
    Flock::lock(file, arg).map_err(|(_, errno)| Error::nix(path, errno))
}

/// Take an exclusive `flock` on `path` (created if missing) if nobody holds it; `None` if
/// someone does.
pub(crate) fn try_lock_file(path: &Path) -> Result<Option<Flock<File>>> {
    let file = open_lock(path)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(Error::nix(path, errno)),
    }
}

#[derive(Default, Serialize, Deserialize)]
struct DbFile {
    version: u32,
    images: Vec<Image>,
}

/// Handle on `images.json`.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    path: PathBuf,
    lock: PathBuf,
}

impl Db {
    pub(crate) fn new(root: &Path) -> Self {
        Db { path: root.join("images.json"), lock: root.join("locks").join("images.lock") }
    }

    fn load(&self) -> Result<Vec<Image>> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.path, e)),
        };
        let db: DbFile = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Database { path: self.path.clone(), detail: e.to_string() })?;
        Ok(db.images)
    }

    /// A consistent snapshot of all records.
    pub(crate) fn read(&self) -> Result<Vec<Image>> {
        let _guard = lock_file(&self.lock, false)?;
        self.load()
    }

    /// Read, modify and atomically write back the records under an exclusive lock.
    /// Nothing is written when `f` fails.
    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut Vec<Image>) -> Result<T>) -> Result<T> {
        let _guard = lock_file(&self.lock, true)?;
        let mut images = self.load()?;
        let out = f(&mut images)?;
        let db = DbFile { version: 1, images };
        let bytes = serde_json::to_vec_pretty(&db)
            .map_err(|e| Error::Database { path: self.path.clone(), detail: e.to_string() })?;
        write_atomic(&self.path, &bytes)?;
        Ok(out)
    }
}

/// Insert or update `img` (keyed by id). Its names are taken away from every other record;
/// a record that loses its last name that way is dropped (re-pulling a tag moves it).
pub(crate) fn upsert(images: &mut Vec<Image>, img: Image) -> Image {
    images.retain_mut(|other| {
        if other.id == img.id || other.names.is_empty() {
            return true;
        }
        other.names.retain(|n| !img.names.contains(n));
        !other.names.is_empty()
    });
    match images.iter_mut().find(|i| i.id == img.id) {
        Some(existing) => {
            for n in &img.names {
                if !existing.names.contains(n) {
                    existing.names.push(n.clone());
                }
            }
            existing.manifest_digest = img.manifest_digest;
            existing.size = img.size;
            existing.created = img.created;
            existing.config = img.config;
            existing.clone()
        }
        None => {
            images.push(img.clone());
            img
        }
    }
}
