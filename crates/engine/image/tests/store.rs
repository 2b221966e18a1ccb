//! Import (OCI layout dir/tar, docker-archive), layer unpacking (whiteouts, metadata,
//! refusal of path-escaping layers), snapshots, get/remove, gc, and disk-full handling.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use strata_image::{get_xattr, Error, Image, ImageStore};
use strata_testkit::{
    add_dir, add_file, add_symlink, busybox_image, digest, header, hex_of, image_from_layers, raw_entry, tar_dir, tar_gz,
    tar_plain, write_docker_archive, write_docker_archive_with, write_oci_layout, TestImage, MTIME,
};

fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = ImageStore::open(dir.path().join("images")).expect("open store");
    (dir, s)
}

fn import_image(s: &ImageStore, img: &TestImage, work: &Path, name: &str) -> Image {
    let layout = work.join(format!("layout-{}", hex_of(&img.manifest_digest())));
    write_oci_layout(img, &layout, name);
    let mut imgs = s.import(&layout, None).expect("import layout");
    assert_eq!(imgs.len(), 1);
    imgs.remove(0)
}

fn entries(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn import_oci_layout_dir_and_names() {
    let (d, s) = store();
    let img = busybox_image();
    let image = import_image(&s, &img, d.path(), "busybox:1.36");
    assert_eq!(image.id, img.config_digest());
    assert_eq!(image.manifest_digest, img.manifest_digest());
    assert_eq!(image.names, vec!["localhost/busybox:1.36".to_string()]);
    // Short names find localhost/ images too.
    assert_eq!(s.get("busybox:1.36").expect("short name").id, image.id);
    assert!(matches!(s.get("busybox:latest"), Err(Error::ImageNotFound(_))));
    // A bare tag is combined with the layout's directory name.
    let layout = d.path().join("myimg");
    write_oci_layout(&img, &layout, "v2");
    let imgs = s.import(&layout, None).expect("import");
    assert!(imgs[0].names.contains(&"localhost/myimg:v2".to_string()), "{:?}", imgs[0].names);
    // A full reference is kept.
    let layout = d.path().join("full");
    write_oci_layout(&img, &layout, "127.0.0.1:5000/bb:x");
    let imgs = s.import(&layout, None).expect("import");
    assert_eq!(s.get("127.0.0.1:5000/bb:x").expect("get").id, imgs[0].id);
    // All names ended up on the one record.
    assert_eq!(s.list().expect("list").len(), 1);
    assert_eq!(s.list().expect("list")[0].names.len(), 3);
}

#[test]
fn import_oci_layout_tar_with_tag() {
    let (d, s) = store();
    let img = busybox_image();
    let layout = d.path().join("layout");
    write_oci_layout(&img, &layout, "ignored");
    let tarball = d.path().join("layout.tar");
    tar_dir(&layout, &tarball);
    let imgs = s.import(&tarball, Some("tagged:v1")).expect("import tar");
    assert_eq!(imgs[0].names, vec!["localhost/tagged:v1".to_string()]);
    assert_eq!(imgs[0].id, img.config_digest());
    let layers = s.layers(&imgs[0]).expect("layers");
    assert!(layers[0].join("bin/busybox").is_file());
}

#[test]
fn import_docker_archive_plain_and_gzip_layers() {
    let (d, s) = store();
    let img = busybox_image();
    let plain = d.path().join("plain.tar");
    write_docker_archive(&img, &plain, "busybox:1");
    let imgs = s.import(&plain, None).expect("import docker archive");
    assert_eq!(imgs.len(), 1);
    assert_eq!(imgs[0].id, img.config_digest());
    assert_eq!(imgs[0].names, vec!["docker.io/library/busybox:1".to_string()]);
    assert_eq!(s.get("busybox:1").expect("docker name").id, imgs[0].id);
    let manifest = s.manifest(&imgs[0]).expect("synthesized manifest");
    assert_eq!(manifest.layers()[0].media_type().to_string(), "application/vnd.oci.image.layer.v1.tar");
    let layers = s.layers(&imgs[0]).expect("layers");
    assert!(layers[0].join("bin/busybox").is_file());

    let gz = d.path().join("gz.tar");
    write_docker_archive_with(&img, &gz, "busybox:gz", true);
    let imgs = s.import(&gz, None).expect("import gzip docker archive");
    assert_eq!(imgs[0].id, img.config_digest(), "same config, same image");
    let manifest = s.manifest(&imgs[0]).expect("manifest");
    assert_eq!(manifest.layers()[0].media_type().to_string(), "application/vnd.oci.image.layer.v1.tar+gzip");
    // Same diff id => same chain => same snapshot.
    assert_eq!(s.layers(&imgs[0]).expect("layers"), layers);
}

#[test]
fn import_rejects_tampered_and_garbage_input() {
    let (d, s) = store();
    let img = image_from_layers(vec![tar_gz(|b| add_file(b, "f", 0o644, b"original"))], &["sh"]);
    let layout = d.path().join("tampered");
    write_oci_layout(&img, &layout, "t:1");
    let layer_digest = digest(&img.layers[0]);
    let blob = layout.join("blobs/sha256").join(hex_of(&layer_digest));
    let mut bytes = fs::read(&blob).expect("read");
    let n = bytes.len();
    bytes[n - 10] ^= 1;
    fs::write(&blob, bytes).expect("tamper");
    let e = s.import(&layout, None).expect_err("tampered layout");
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert!(e.to_string().contains(&layer_digest), "{e}");
    assert!(!s.blob_path(&layer_digest).expect("path").exists());
    assert!(s.list().expect("list").is_empty());
    assert!(entries(&s.root().join("tmp")).is_empty());

    let garbage = d.path().join("garbage.tar");
    fs::write(&garbage, tar_plain(|b| add_file(b, "hello.txt", 0o644, b"hi"))).expect("write");
    let e = s.import(&garbage, None).expect_err("garbage");
    assert!(matches!(e, Error::InvalidArchive { .. }), "{e}");
    assert!(e.to_string().contains("garbage.tar"), "{e}");

    let e = s.import(&d.path().join("missing"), None).expect_err("missing path");
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn whiteouts_are_converted_and_metadata_preserved() {
    let (d, s) = store();
    let lower = tar_gz(|b| {
        add_dir(b, "a", 0o755, 0, 0);
        add_file(b, "a/f1", 0o644, b"one");
        add_file(b, "a/f2", 0o644, b"two");
        add_dir(b, "d", 0o755, 0, 0);
        add_file(b, "d/old", 0o644, b"old");
    });
    let upper = tar_gz(|b| {
        add_dir(b, "a", 0o755, 0, 0);
        raw_entry(b, tar::EntryType::Regular, b"a/.wh.f1", None, b"");
        add_dir(b, "d", 0o755, 0, 0);
        raw_entry(b, tar::EntryType::Regular, b"d/.wh..wh..opq", None, b"");
        add_file(b, "d/new", 0o644, b"new");
        // Metadata: owner, mode with setuid, mtime, symlink, hardlink, fifo, char device.
        let mut h = header(tar::EntryType::Regular, 0o4755, 1000, 1001, 3);
        b.append_data(&mut h, "bin/tool", &b"abc"[..]).expect("append");
        add_symlink(b, "bin/link", "tool");
        let mut h = header(tar::EntryType::Link, 0o644, 0, 0, 0);
        b.append_link(&mut h, "bin/hard", "bin/tool").expect("hardlink");
        let mut h = header(tar::EntryType::Fifo, 0o600, 0, 0, 0);
        b.append_data(&mut h, "run/fifo", std::io::empty()).expect("fifo");
        let mut h = header(tar::EntryType::Char, 0o666, 0, 0, 0);
        h.set_device_major(1).expect("major");
        h.set_device_minor(3).expect("minor");
        b.append_data(&mut h, "dev/null", std::io::empty()).expect("chardev");
        add_dir(b, "home/app", 0o750, 1000, 1000);
        // PAX xattrs: user.* is kept, a forged overlay attribute is dropped.
        b.append_pax_extensions([("SCHILY.xattr.user.note", &b"hi"[..]), ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..])])
            .expect("pax");
        add_dir(b, "xa", 0o755, 0, 0);
        b.append_pax_extensions([("SCHILY.xattr.user.note", &b"file"[..])]).expect("pax");
        add_file(b, "xa/f", 0o644, b"x");
    });
    let img = image_from_layers(vec![lower, upper], &["sh"]);
    let image = import_image(&s, &img, d.path(), "wh:1");
    let layers = s.layers(&image).expect("layers");
    assert_eq!(layers.len(), 2);
    assert!(layers[0].join("a/f1").is_file(), "bottom layer first");
    let up = &layers[1];

    let wh = fs::symlink_metadata(up.join("a/f1")).expect("whiteout");
    assert!(wh.file_type().is_char_device());
    assert_eq!((wh.rdev(), wh.uid(), wh.gid()), (0, 0, 0));
    assert!(!up.join("a/.wh.f1").exists());
    assert_eq!(get_xattr(&up.join("d"), "trusted.overlay.opaque").expect("xattr"), Some(b"y".to_vec()));
    assert!(!up.join("d/.wh..wh..opq").exists());
    assert_eq!(get_xattr(&up.join("a"), "trusted.overlay.opaque").expect("xattr"), None);

    let tool = fs::metadata(up.join("bin/tool")).expect("tool");
    assert_eq!((tool.uid(), tool.gid(), tool.permissions().mode() & 0o7777), (1000, 1001, 0o4755));
    assert_eq!(tool.mtime(), MTIME as i64);
    assert_eq!(fs::read_link(up.join("bin/link")).expect("link").to_str(), Some("tool"));
    let hard = fs::metadata(up.join("bin/hard")).expect("hard");
    assert_eq!(hard.ino(), tool.ino());
    assert!(fs::symlink_metadata(up.join("run/fifo")).expect("fifo").file_type().is_fifo());
    let null = fs::symlink_metadata(up.join("dev/null")).expect("null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert_eq!(get_xattr(&up.join("xa"), "user.note").expect("xattr"), Some(b"hi".to_vec()));
    assert_eq!(get_xattr(&up.join("xa"), "trusted.overlay.opaque").expect("xattr"), None, "forged overlay xattr");
    assert_eq!(get_xattr(&up.join("xa/f"), "user.note").expect("xattr"), Some(b"file".to_vec()));
    let home = fs::metadata(up.join("home/app")).expect("home");
    assert_eq!((home.uid(), home.gid(), home.permissions().mode() & 0o7777), (1000, 1000, 0o750));
    assert_eq!(home.mtime(), MTIME as i64, "directory mtimes are set after their children");
}

#[test]
fn layers_are_unpacked_once_and_shared() {
    let (d, s) = store();
    let img = busybox_image();
    let image = import_image(&s, &img, d.path(), "once:1");
    let first = s.layers(&image).expect("layers");
    let marker = first[0].join("marker-from-test");
    fs::write(&marker, b"x").expect("marker");
    // Concurrently from several threads and store handles: same dirs, no re-unpack.
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| {
                let s2 = ImageStore::open(s.root()).expect("open");
                assert_eq!(s2.layers(&image).expect("layers"), first);
            });
        }
    });
    assert!(marker.exists(), "snapshot was not re-created");
    // A second image sharing the bottom layer shares its snapshot (same chain id).
    let extra = tar_gz(|b| add_file(b, "extra", 0o644, b"extra"));
    let img2 = image_from_layers(vec![img.layers[0].clone(), extra], &["sh"]);
    let image2 = import_image(&s, &img2, d.path(), "two:1");
    let second = s.layers(&image2).expect("layers");
    assert_eq!(second[0], first[0]);
    assert_eq!(second.len(), 2);
    let chain = strata_image::chain_ids(image2.config.rootfs().diff_ids());
    assert_eq!(second[1], s.root().join("snapshots").join(hex_of(&chain[1])).join("fs"));
}

#[test]
fn corrupted_blob_on_disk_is_not_unpacked() {
    let (d, s) = store();
    let img = image_from_layers(vec![tar_gz(|b| add_file(b, "f", 0o644, &vec![1u8; 5000]))], &["sh"]);
    let image = import_image(&s, &img, d.path(), "corrupt:1");
    let blob = s.blob_path(&digest(&img.layers[0])).expect("path");
    // A different valid gzip'd tar in place of the stored layer.
    fs::write(&blob, tar_gz(|b| add_file(b, "evil", 0o644, b"x"))).expect("replace");
    let e = s.layers(&image).expect_err("corrupt");
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert!(entries(&s.root().join("snapshots")).is_empty(), "{:?}", entries(&s.root().join("snapshots")));
}

/// Each case: a layer that must be refused as a whole, with nothing written outside.
fn malicious_layers(sentinel: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let sent = sentinel.to_str().expect("utf8").as_bytes().to_vec();
    let pwned = [sent.as_slice(), b"/pwned"].concat();
    let depth = b"../../../../../../../../../../../../..".to_vec();
    let rel_escape = [depth.as_slice(), sent.as_slice(), b"/pwned"].concat();
    let rel_link = [depth.as_slice(), sent.as_slice()].concat();
    vec![
        ("absolute path", tar_gz(|b| raw_entry(b, tar::EntryType::Regular, &pwned, None, b"x"))),
        ("dotdot path", tar_gz(|b| raw_entry(b, tar::EntryType::Regular, &rel_escape, None, b"x"))),
        (
            "dotdot inside",
            tar_gz(|b| {
                add_dir(b, "a", 0o755, 0, 0);
                raw_entry(b, tar::EntryType::Regular, b"a/../../x", None, b"x");
            }),
        ),
        (
            "write through absolute symlink",
            tar_gz(|b| {
                raw_entry(b, tar::EntryType::Symlink, b"evil", Some(&sent), b"");
                raw_entry(b, tar::EntryType::Regular, b"evil/pwned", None, b"x");
            }),
        ),
        (
            "write through relative symlink",
            tar_gz(|b| {
                raw_entry(b, tar::EntryType::Symlink, b"evil", Some(&rel_link), b"");
                raw_entry(b, tar::EntryType::Regular, b"evil/pwned", None, b"x");
            }),
        ),
        (
            "directory through symlink",
            tar_gz(|b| {
                raw_entry(b, tar::EntryType::Symlink, b"evil", Some(&sent), b"");
                raw_entry(b, tar::EntryType::Directory, b"evil/sub/", None, b"");
            }),
        ),
        (
            "whiteout through symlink",
            tar_gz(|b| {
                raw_entry(b, tar::EntryType::Symlink, b"evil", Some(&sent), b"");
                raw_entry(b, tar::EntryType::Regular, b"evil/.wh.keep", None, b"");
            }),
        ),
        (
            "opaque through symlink",
            tar_gz(|b| {
                raw_entry(b, tar::EntryType::Symlink, b"evil", Some(&sent), b"");
                raw_entry(b, tar::EntryType::Regular, b"evil/.wh..wh..opq", None, b"");
            }),
        ),
        (
            "hardlink to absolute target",
            tar_gz(|b| raw_entry(b, tar::EntryType::Link, b"h", Some(&[sent.as_slice(), b"/keep"].concat()), b"")),
        ),
        ("hardlink with dotdot", tar_gz(|b| raw_entry(b, tar::EntryType::Link, b"h", Some(&rel_escape), b""))),
        (
            "hardlink through symlink",
            tar_gz(|b| {
                raw_entry(b, tar::EntryType::Symlink, b"evil", Some(&sent), b"");
                raw_entry(b, tar::EntryType::Link, b"h", Some(b"evil/keep"), b"");
            }),
        ),
        (
            "symlink placed through symlink",
            tar_gz(|b| {
                raw_entry(b, tar::EntryType::Symlink, b"evil", Some(&sent), b"");
                raw_entry(b, tar::EntryType::Symlink, b"evil/pwned", Some(b"/etc/shadow"), b"");
            }),
        ),
    ]
}

#[test]
fn path_escaping_layers_are_refused() {
    let (d, s) = store();
    let sentinel: PathBuf = d.path().join("sentinel");
    fs::create_dir_all(&sentinel).expect("sentinel");
    fs::write(sentinel.join("keep"), b"untouched").expect("keep");
    for (case, layer) in malicious_layers(&sentinel) {
        let img = image_from_layers(vec![layer.clone()], &["sh"]);
        let image = import_image(&s, &img, d.path(), &format!("evil:{}", case.replace(' ', "-")));
        let e = s.layers(&image).expect_err(case);
        match &e {
            Error::UnsafeLayer { digest: dg, .. } => assert_eq!(dg, &digest(&layer), "{case}"),
            other => panic!("{case}: expected UnsafeLayer, got {other}"),
        }
        assert!(!e.to_string().contains('\n'));
        let mut left = entries(&sentinel);
        left.sort();
        assert_eq!(left, vec!["keep".to_string()], "{case}: something was written outside");
        assert_eq!(fs::read(sentinel.join("keep")).expect("keep"), b"untouched", "{case}");
        assert!(entries(&s.root().join("snapshots")).is_empty(), "{case}: snapshot left behind");
    }
    // Nothing escaped anywhere else in the temp dir either.
    assert!(!d.path().join("pwned").exists() && !d.path().join("x").exists());
}

#[test]
fn get_and_remove() {
    let (d, s) = store();
    let img = busybox_image();
    let image = import_image(&s, &img, d.path(), "rm:1");
    let layout = d.path().join("second");
    write_oci_layout(&img, &layout, "rm:2");
    s.import(&layout, None).expect("import");
    assert_eq!(s.get("localhost/rm:1").expect("get").names.len(), 2);

    let e = s.remove("localhost/nothere:1").expect_err("unknown");
    assert!(matches!(e, Error::ImageNotFound(ref r) if r == "localhost/nothere:1"), "{e}");
    assert_eq!(e.to_string(), "image not found: localhost/nothere:1");
    let e = s.get("sha256:0000000000000000000000000000000000000000000000000000000000000000").expect_err("unknown id");
    assert!(matches!(e, Error::ImageNotFound(_)), "{e}");

    s.remove("rm:1").expect("remove one name");
    assert!(matches!(s.get("rm:1"), Err(Error::ImageNotFound(_))));
    assert_eq!(s.get("rm:2").expect("other name stays").id, image.id);
    s.remove("localhost/rm:2").expect("remove last name");
    assert!(s.list().expect("list").is_empty(), "record goes with its last name");
    // Removing by id takes the whole record.
    let image = import_image(&s, &img, d.path(), "rm:3");
    s.remove(&hex_of(&image.id)[..12]).expect("remove by prefix");
    assert!(s.list().expect("list").is_empty());
}

#[test]
fn gc_reclaims_unreferenced_content() {
    let (d, s) = store();
    let keep = busybox_image();
    let gone = image_from_layers(vec![tar_gz(|b| add_file(b, "g", 0o644, b"gone"))], &["sh"]);
    let kept_image = import_image(&s, &keep, d.path(), "keep:1");
    let gone_image = import_image(&s, &gone, d.path(), "gone:1");
    s.layers(&kept_image).expect("layers");
    s.layers(&gone_image).expect("layers");
    // Stale temp file and an old and a fresh partial download.
    fs::write(s.root().join("tmp/stale"), b"junk").expect("tmp");
    let old = s.root().join("ingest").join("a".repeat(64));
    fs::write(&old, b"old partial").expect("old");
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    fs::File::options().write(true).open(&old).expect("open").set_modified(two_hours_ago).expect("mtime");
    let fresh = s.root().join("ingest").join("b".repeat(64));
    fs::write(&fresh, b"fresh partial").expect("fresh");

    let report = s.gc(&HashSet::new()).expect("gc with everything referenced");
    assert_eq!((report.blobs_removed, report.snapshots_removed), (0, 0));
    assert!(!s.root().join("tmp/stale").exists());
    assert!(!old.exists());
    assert!(fresh.exists());

    s.remove("gone:1").expect("remove");
    // Kept by id even without a record.
    let keep_ids: HashSet<String> = [gone_image.id.clone()].into();
    let report = s.gc(&keep_ids).expect("gc keeping the removed id");
    assert_eq!((report.blobs_removed, report.snapshots_removed), (0, 0));

    // A file in its unpacked layer that something uses in place (a VM's containerDisk) keeps
    // that layer, not the blobs.
    let g = s.layers(&gone_image).expect("layers")[0].join("g");
    let report = s.gc_keeping(&HashSet::new(), &[g.clone()]).expect("gc keeping a file of the removed image");
    assert_eq!((report.blobs_removed, report.snapshots_removed), (3, 0));
    assert_eq!(fs::read(&g).expect("kept file"), b"gone");

    let report = s.gc(&HashSet::new()).expect("gc");
    assert_eq!(report.blobs_removed, 0, "layer, config, manifest of the removed image went before");
    assert_eq!(report.snapshots_removed, 1);
    assert!(report.bytes_freed > 0);
    assert!(!s.blob_path(&gone_image.id).expect("path").exists());
    assert!(s.blob_path(&kept_image.id).expect("path").exists());
    assert!(s.layers(&kept_image).expect("kept image still usable")[0].join("bin/busybox").is_file());
    // Nothing left to collect.
    assert_eq!(s.gc(&HashSet::new()).expect("gc").blobs_removed, 0);
}

/// ENOSPC: a 512 KiB tmpfs cannot hold the busybox layer; the import fails with DiskFull and
/// leaves no partial blob. Needs root (mount); CI runs as root.
#[test]
fn disk_full_leaves_no_partial_blob() {
    let d = tempfile::tempdir().expect("tempdir");
    let mnt = d.path().join("small");
    fs::create_dir_all(&mnt).expect("mkdir");
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(&mnt)
        .status()
        .expect("run mount");
    assert!(status.success(), "mounting a tmpfs failed (tests run as root)");
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Umount(mnt.clone());
    let s = ImageStore::open(mnt.join("images")).expect("open");
    let img = busybox_image();
    let archive = d.path().join("bb.tar");
    write_docker_archive(&img, &archive, "busybox:full");
    let e = s.import(&archive, None).expect_err("disk full");
    assert!(matches!(e, Error::DiskFull { .. }), "{e}");
    assert!(e.to_string().contains("no space left"), "{e}");
    for name in entries(&s.root().join("blobs/sha256")) {
        let data = fs::read(s.root().join("blobs/sha256").join(&name)).expect("read");
        assert_eq!(hex_of(&digest(&data)), name, "only complete blobs");
        assert!(data.len() < 100_000, "no layer-sized blob");
    }
    assert!(entries(&s.root().join("tmp")).is_empty(), "{:?}", entries(&s.root().join("tmp")));
    assert!(s.list().expect("list").is_empty());
}
