//! Bounded unpacking (issue 13 part 3): a free-space reserve, ceilings on a layer's
//! uncompressed size and entry count; a refused layer leaves no snapshot and no temporary
//! directory behind.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use strata_image::{Error, Image, ImageStore, Reserve, UnpackLimits};
use strata_testkit::{add_file, busybox_layer_tar_gz, gzip, image_from_layers, image_with_diff_ids, tar_gz, write_oci_layout, zeros_layer, digest, hex_of};

fn entries(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

fn import(s: &ImageStore, img: &strata_testkit::TestImage, work: &Path) -> Image {
    let layout = work.join(format!("layout-{}", hex_of(&img.manifest_digest())));
    write_oci_layout(img, &layout, "latest");
    s.import(&layout, None).expect("import").remove(0)
}

/// A small tmpfs, unmounted when dropped (needs root; CI runs as root).
struct Tmpfs(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let d = tempfile::tempdir().expect("tempdir");
        let mnt = d.path().join("small");
        fs::create_dir_all(&mnt).expect("mkdir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mnt)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs failed (tests run as root)");
        Tmpfs(mnt, d)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn available(p: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(p).expect("statvfs");
    st.blocks_available() as u64 * st.fragment_size() as u64
}

/// The snapshot directory holds exactly the chains in `keep` (no half-unpacked layer, no
/// `.tmp-*`).
fn assert_snapshots(s: &ImageStore, keep: &[&str], what: &str) {
    let mut found = entries(&s.root().join("snapshots"));
    found.sort();
    let mut want: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(found, want, "{what}");
}

/// A layer bigger than what the filesystem can hold above its reserve is refused before the
/// disk fills (main filled the disk and failed with ENOSPC), and takes nothing with it.
#[test]
fn unpacking_stops_at_the_free_space_reserve() {
    let fs_ = Tmpfs::new("64m");
    let work = tempfile::tempdir().expect("work");
    let s = ImageStore::open(fs_.0.join("images")).expect("open");
    let (layer, diff_id) = zeros_layer("big", 80 << 20);
    let base_diff = digest(&strata_testkit::gunzip_if_needed(&busybox_layer_tar_gz()));
    let img = image_with_diff_ids(vec![busybox_layer_tar_gz(), layer.clone()], vec![base_diff.clone(), diff_id], &["sh"]);
    let image = import(&s, &img, work.path());
    let before = available(&fs_.0);
    let e = s.layers(&image).expect_err("refused");
    let layer_digest = digest(&layer);
    match &e {
        Error::UnpackReserve { digest, reserve, .. } => {
            assert_eq!(digest, &layer_digest);
            assert_eq!(*reserve, (64u64 << 20) / 20, "default reserve: 5% of the filesystem");
        }
        other => panic!("expected UnpackReserve, got {other:?}: {other}"),
    }
    let msg = e.to_string();
    assert!(msg.contains(&layer_digest) && msg.contains("reserve"), "{msg}");
    assert_snapshots(&s, &[hex_of(&base_diff)], "only the base layer, nothing of the refused one");
    // Only the base layer (busybox, ~2 MiB) was written.
    assert!(available(&fs_.0) + (4 << 20) >= before, "the partial work is gone");
}

/// The reserve is configurable, as a size or a share.
#[test]
fn the_reserve_is_configurable() {
    let fs_ = Tmpfs::new("64m");
    let work = tempfile::tempdir().expect("work");
    let (layer, diff_id) = zeros_layer("mid", 30 << 20);
    let img = image_with_diff_ids(vec![layer.clone()], vec![diff_id.clone()], &["sh"]);
    let strict = ImageStore::open(fs_.0.join("images"))
        .expect("open")
        .with_limits(UnpackLimits { reserve: Reserve::Bytes(40 << 20), ..UnpackLimits::default() });
    let image = import(&strict, &img, work.path());
    let e = strict.layers(&image).expect_err("40 MiB reserve on 64 MiB leaves no room for 30 MiB");
    assert!(matches!(e, Error::UnpackReserve { .. }), "{e}");
    assert_snapshots(&strict, &[], "nothing kept");
    let lax = strict.with_limits(UnpackLimits { reserve: Reserve::Percent(10.0), ..UnpackLimits::default() });
    let dirs = lax.layers(&image).expect("30 MiB fits above a 10% reserve");
    assert_eq!(fs::metadata(dirs[0].join("mid")).expect("file").len(), 30 << 20);
}

/// A gzip bomb (300 MiB of zeros in a few hundred KiB), a layer of too many entries, and data
/// hidden after the tar's end are refused by the ceilings, naming the layer.
#[test]
fn layer_ceilings_refuse_bombs() {
    let work = tempfile::tempdir().expect("work");
    let s = ImageStore::open(work.path().join("images"))
        .expect("open")
        .with_limits(UnpackLimits { max_layer_bytes: 64 << 20, max_layer_entries: 100, ..UnpackLimits::default() });

    let (bomb, bomb_diff) = zeros_layer("bomb", 300 << 20);
    // A bomb: it expands at least 50-fold (zlib-rs, flate2's backend since the SPDY streams
    // needed zlib dictionaries, packs 300 MiB of zeros into ~3 MiB; miniz_oxide into ~0.3 MiB).
    assert!(bomb.len() * 50 < 300 << 20, "a bomb: {} compressed bytes", bomb.len());
    let image = import(&s, &image_with_diff_ids(vec![bomb.clone()], vec![bomb_diff], &["sh"]), work.path());
    let e = s.layers(&image).expect_err("bomb refused");
    assert!(matches!(&e, Error::LayerTooLarge { what: "uncompressed bytes", limit, .. } if *limit == 64 << 20), "{e}");
    assert!(e.to_string().contains(&digest(&bomb)), "{e}");

    let many = tar_gz(|b| {
        for n in 0..500 {
            add_file(b, &format!("f{n}"), 0o644, b"");
        }
    });
    let image = import(&s, &image_from_layers(vec![many.clone()], &["sh"]), work.path());
    let e = s.layers(&image).expect_err("too many entries");
    assert!(matches!(&e, Error::LayerTooLarge { what: "entries", limit: 100, .. }), "{e}");
    assert!(e.to_string().contains(&digest(&many)), "{e}");

    // A valid small tar followed by 200 MiB of zeros: the entries pass, the stream does not.
    let mut tail = strata_testkit::tar_plain(|b| add_file(b, "small", 0o644, b"x"));
    tail.resize(tail.len() + (200 << 20), 0);
    let tail_diff = digest(&tail);
    let trailing = gzip(&tail);
    drop(tail);
    let image = import(&s, &image_with_diff_ids(vec![trailing], vec![tail_diff], &["sh"]), work.path());
    let e = s.layers(&image).expect_err("trailing data refused");
    assert!(matches!(&e, Error::LayerTooLarge { what: "uncompressed bytes", .. }), "{e}");

    assert_snapshots(&s, &[], "no snapshot and no temporary directory of a refused layer");
    // Within the ceilings all is well.
    let image = import(&s, &image_from_layers(vec![busybox_layer_tar_gz()], &["sh"]), work.path());
    assert!(s.layers(&image).is_err_and(|e| matches!(e, Error::LayerTooLarge { what: "entries", .. })), "busybox has >100 entries");
    let s = s.with_limits(UnpackLimits::default());
    assert!(s.layers(&image).expect("default ceilings")[0].join("bin/busybox").is_file());
}

/// Temporary snapshot directories of killed unpacks are removed when the store opens; one
/// whose chain lock is held (an unpack running in another process: here `flock(1)` holds it
/// the way an unpacker does) is left alone until the lock is free.
#[test]
fn opening_sweeps_killed_unpacks_but_not_running_ones() {
    let work = tempfile::tempdir().expect("work");
    let root = work.path().join("images");
    let s = ImageStore::open(&root).expect("open");
    let chain = "ab".repeat(32);
    let running = s.root().join(format!("snapshots/.tmp-{chain}-4242-0-1"));
    let dead = s.root().join(format!("snapshots/.tmp-{}-4243-0-2", "cd".repeat(32)));
    let legacy = s.root().join("snapshots/.tmp-4244-0-3");
    for d in [&running, &dead, &legacy] {
        fs::create_dir_all(d.join("fs/usr/lib")).expect("mkdir");
        fs::write(d.join("fs/usr/lib/partial"), vec![0u8; 4096]).expect("write");
    }
    let lock = s.root().join(format!("locks/snap-{chain}.lock"));
    // Its own process group: `sleep` inherits the locked descriptor, so both must go.
    let mut holder = std::process::Command::new("flock").arg(&lock).args(["sleep", "600"]).process_group(0).spawn().expect("flock");
    struct KillGroup(i32);
    impl Drop for KillGroup {
        fn drop(&mut self) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::Signal::SIGKILL);
        }
    }
    let group = KillGroup(holder.id() as i32);
    let held = || !std::process::Command::new("flock").arg("-n").arg(&lock).arg("true").status().expect("flock -n").success();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !held() {
        assert!(std::time::Instant::now() < deadline, "flock took the lock");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    ImageStore::open(&root).expect("reopen");
    assert!(running.join("fs/usr/lib/partial").exists(), "an unpack in progress is left alone");
    assert!(!dead.exists(), "a dead unpack's directory is removed");
    assert!(!legacy.exists(), "so is an old-style one while nothing runs");

    drop(group);
    holder.wait().expect("reap");
    // The orphaned `sleep` dies (and drops the lock) asynchronously.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while held() {
        assert!(std::time::Instant::now() < deadline, "the lock was released");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    ImageStore::open(&root).expect("reopen");
    assert!(!running.exists(), "removed once its unpacker is gone");
}
