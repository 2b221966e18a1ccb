//! cloud-init NoCloud seeds: a small FAT image labelled `CIDATA` holding `user-data`,
//! `meta-data` and, optionally, `network-config`, attached to the guest as a read-only disk.
//! cloud-init's NoCloud datasource finds it by that label (vfat or iso9660 both qualify).
//!
//! The image is written in Rust (`fatfs`), so creating a VM needs no mkisofs/mtools on the host.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

/// What the seed holds.
#[derive(Clone, Debug, Default)]
pub struct Seed<'a> {
    pub user_data: &'a [u8],
    pub meta_data: &'a str,
    pub network_config: Option<&'a str>,
}

/// The largest user-data accepted (cloud-init's own limits are lower in practice).
pub const MAX_USER_DATA: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cloud-init user-data is {0} bytes; at most {MAX_USER_DATA} are accepted")]
    TooLarge(usize),
    #[error("writing the cloud-init seed {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Meta-data in the NoCloud format: an instance id (a new one makes cloud-init run its
/// per-instance modules again) and the hostname.
pub fn meta_data(instance_id: &str, hostname: &str) -> String {
    format!("instance-id: {instance_id}\nlocal-hostname: {hostname}\n")
}

/// Write `seed` as a FAT image at `path` (replacing nothing: the file must not exist).
/// On error the partial file is removed.
pub fn write(path: &Path, seed: &Seed) -> Result<(), SeedError> {
    if seed.user_data.len() > MAX_USER_DATA {
        return Err(SeedError::TooLarge(seed.user_data.len()));
    }
    let io = |source: std::io::Error| SeedError::Io { path: path.display().to_string(), source };
    let payload = seed.user_data.len() + seed.meta_data.len() + seed.network_config.map_or(0, str::len);
    // FAT12/16 overhead is small; leave room for clusters and directory entries.
    let size = (payload as u64 * 2 + (1 << 20)).next_multiple_of(1 << 20);
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        file.set_len(size)?;
        let opts = fatfs::FormatVolumeOptions::new().volume_label(*b"CIDATA     ");
        fatfs::format_volume(&mut file, opts)?;
        file.seek(SeekFrom::Start(0))?;
        {
            let fs = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new())?;
            {
                let root = fs.root_dir();
                let put = |name: &str, data: &[u8]| -> std::io::Result<()> {
                    let mut f = root.create_file(name)?;
                    f.truncate()?;
                    f.write_all(data)
                };
                put("user-data", seed.user_data)?;
                put("meta-data", seed.meta_data.as_bytes())?;
                if let Some(n) = seed.network_config {
                    put("network-config", n.as_bytes())?;
                }
            }
            fs.unmount()?;
        }
        file.sync_all()
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(path);
        io(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn seed_round_trips_through_fat() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("seed.img");
        let md = meta_data("i-1", "db");
        write(
            &path,
            &Seed { user_data: b"#cloud-config\nhostname: db\n", meta_data: &md, network_config: Some("version: 2\n") },
        )
        .expect("write");
        let mut f = std::fs::File::open(&path).expect("open");
        let fs = fatfs::FileSystem::new(&mut f, fatfs::FsOptions::new()).expect("fat");
        assert_eq!(fs.volume_label().trim_end(), "CIDATA");
        let read = |name: &str| {
            let mut s = String::new();
            fs.root_dir().open_file(name).expect(name).read_to_string(&mut s).expect("read");
            s
        };
        assert_eq!(read("user-data"), "#cloud-config\nhostname: db\n");
        assert_eq!(read("meta-data"), "instance-id: i-1\nlocal-hostname: db\n");
        assert_eq!(read("network-config"), "version: 2\n");
        // An existing file is never overwritten, and a failed write leaves nothing.
        assert!(write(&path, &Seed::default()).is_err());
        let big = vec![b'x'; MAX_USER_DATA + 1];
        let p2 = dir.path().join("big.img");
        assert!(matches!(write(&p2, &Seed { user_data: &big, ..Default::default() }), Err(SeedError::TooLarge(_))));
        assert!(!p2.exists());
    }
}
