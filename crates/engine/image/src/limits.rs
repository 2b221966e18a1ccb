//! Bounds on unpacking a layer: a free-space reserve on the store's filesystem, and ceilings on
//! one layer's uncompressed size and entry count. A layer is hostile input: 10 MB of gzip can
//! hold 10 GB of zeros (or millions of empty files), so without bounds one pull could fill the
//! node's disk.
//!
//! The reserve is checked before each entry is written, against the size reading the entry
//! yields (PAX `size` and GNU sparse lengths included), so unpacking stops *before* free space
//! falls under the reserve (other writers on the same filesystem aside); the ceilings are
//! checked against the tar stream's position plus that size, and the entry count. The caller removes the partial snapshot on any of these errors.

use std::path::Path;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Free space unpacking must leave on the store's filesystem.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reserve {
    /// A share of the filesystem's size, in percent (0-100).
    Percent(f64),
    /// A number of bytes.
    Bytes(u64),
}

impl Reserve {
    /// The reserve in bytes on a filesystem of `total` bytes.
    pub fn bytes(&self, total: u64) -> u64 {
        match *self {
            Reserve::Percent(p) => (total as f64 * p / 100.0) as u64,
            Reserve::Bytes(b) => b,
        }
    }
}

impl std::fmt::Display for Reserve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reserve::Percent(p) => write!(f, "{p}%"),
            Reserve::Bytes(b) => write!(f, "{b} bytes"),
        }
    }
}

impl FromStr for Reserve {
    type Err = String;

    /// `5%`, `0.5%`, `1GiB`, `512m`, `0`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Some(p) = s.trim().strip_suffix('%') {
            return match p.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(Reserve::Percent(p)),
                _ => Err(format!("invalid reserve {s:?}: a percentage must be between 0% and 100%")),
            };
        }
        parse_size(s).map(Reserve::Bytes).ok_or_else(|| format!("invalid reserve {s:?}: expected a percentage (5%) or a size (1GiB)"))
    }
}

/// `1048576`, `512k`, `64m`, `1g`, `1GiB`, `2tb` -> bytes (binary units; a bare number is bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let digits_end = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let n: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    (n.is_finite() && n >= 0.0).then_some((n * mult as f64) as u64)
}

/// What unpacking one layer may use. The defaults: leave 5% of the filesystem free (it scales
/// with the disk, as kubelet's eviction thresholds do, and still lets small filesystems hold
/// images), at most 64 GiB uncompressed and 1,000,000 entries per layer (far above real
/// layers, far below what a bomb needs to hurt).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnpackLimits {
    pub reserve: Reserve,
    /// Ceiling on a layer's uncompressed tar stream.
    pub max_layer_bytes: u64,
    /// Ceiling on a layer's tar entries (files, directories, links, whiteouts...).
    pub max_layer_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits { reserve: Reserve::Percent(5.0), max_layer_bytes: 64 << 30, max_layer_entries: 1_000_000 }
    }
}

/// Free space is measured again after this much was written since the last look, so that
/// other writers on the same filesystem are noticed.
const RECHECK_BYTES: u64 = 64 << 20;
/// What one entry costs beyond its data, rounded as a filesystem block (inode, directory entry).
const ENTRY_OVERHEAD: u64 = 4096;

/// The running account of one layer's unpacking against [`UnpackLimits`].
pub(crate) struct Budget<'a> {
    limits: UnpackLimits,
    digest: &'a str,
    /// Where free space is measured.
    dest: &'a Path,
    /// What errors name as the filesystem.
    store: &'a Path,
    entries: u64,
    /// Bytes that may still be written before the reserve, as of the last look.
    room: u64,
    /// Bytes charged since the last look.
    spent: u64,
}

impl<'a> Budget<'a> {
    pub(crate) fn new(limits: UnpackLimits, digest: &'a str, dest: &'a Path, store: &'a Path) -> Result<Self> {
        let mut b = Budget { limits, digest, dest, store, entries: 0, room: 0, spent: 0 };
        b.look()?;
        Ok(b)
    }

    /// Measure free space again; returns (available, reserve) in bytes.
    fn look(&mut self) -> Result<(u64, u64)> {
        let st = nix::sys::statvfs::statvfs(self.dest).map_err(|e| Error::nix(self.dest, e))?;
        let frsize = st.fragment_size() as u64;
        let available = st.blocks_available() as u64 * frsize;
        let reserve = self.limits.reserve.bytes(st.blocks() as u64 * frsize);
        self.room = available.saturating_sub(reserve);
        self.spent = 0;
        Ok((available, reserve))
    }

    /// One more entry whose data ends at `end` in the uncompressed stream and takes `size` bytes.
    pub(crate) fn charge(&mut self, entry: &Path, end: u64, size: u64) -> Result<()> {
        self.entries += 1;
        if self.entries > self.limits.max_layer_entries {
            return Err(self.too_large("entries", self.limits.max_layer_entries));
        }
        if end > self.limits.max_layer_bytes {
            return Err(self.too_large("uncompressed bytes", self.limits.max_layer_bytes));
        }
        let cost = size.div_ceil(ENTRY_OVERHEAD) * ENTRY_OVERHEAD + ENTRY_OVERHEAD;
        if self.spent + cost > self.room || self.spent >= RECHECK_BYTES {
            let (available, reserve) = self.look()?;
            if cost > self.room {
                return Err(Error::UnpackReserve {
                    digest: self.digest.to_string(),
                    entry: entry.display().to_string(),
                    path: self.store.to_path_buf(),
                    available,
                    reserve,
                });
            }
        }
        self.spent += cost;
        Ok(())
    }

    fn too_large(&self, what: &'static str, limit: u64) -> Error {
        Error::LayerTooLarge { digest: self.digest.to_string(), what, limit }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_reserves_parse() {
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("1.5k"), Some(1536));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!("5%".parse::<Reserve>(), Ok(Reserve::Percent(5.0)));
        assert_eq!("2g".parse::<Reserve>(), Ok(Reserve::Bytes(2 << 30)));
        assert!("120%".parse::<Reserve>().is_err());
        assert!("x".parse::<Reserve>().is_err());
        assert_eq!(Reserve::Percent(5.0).bytes(1000), 50);
        assert_eq!(Reserve::Bytes(7).bytes(1000), 7);
    }
}
