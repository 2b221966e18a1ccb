//! Pulls through a real `docker-registry` (strata-testkit): by tag, by digest, via an index,
//! cached pulls, resumed downloads, tampered blobs, missing images, unreachable registries,
//! basic auth, tag moves and concurrent pulls.

use std::collections::HashSet;
use std::fs;
use std::sync::Mutex;

use strata_image::{Error, ImageStore, NoProgress, Progress, PullOptions};
use strata_testkit::{busybox_image, digest, hex_of, image_from_layers, tar_gz, Registry, TestImage};

#[derive(Default)]
struct Rec {
    started: Mutex<Vec<String>>,
    advanced: Mutex<u64>,
    done: Mutex<Vec<(String, bool)>>,
    messages: Mutex<Vec<String>>,
}

impl Progress for Rec {
    fn layer_start(&self, digest: &str, _size: u64) {
        self.started.lock().expect("lock").push(digest.to_string());
    }
    fn layer_advance(&self, _digest: &str, bytes: u64) {
        *self.advanced.lock().expect("lock") += bytes;
    }
    fn layer_done(&self, digest: &str, already_present: bool) {
        self.done.lock().expect("lock").push((digest.to_string(), already_present));
    }
    fn message(&self, msg: &str) {
        self.messages.lock().expect("lock").push(msg.to_string());
    }
}

fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = ImageStore::open(dir.path().join("images")).expect("open store");
    (dir, s)
}

/// A small image whose layer content is unique to `tag` (so digests differ per test).
fn small_image(tag: &str) -> TestImage {
    let layer = tar_gz(|b| {
        strata_testkit::add_dir(b, "data", 0o755, 0, 0);
        strata_testkit::add_file(b, "data/tag", 0o644, tag.as_bytes());
        strata_testkit::add_file(b, "data/blob", 0o644, &vec![7u8; 100_000]);
    });
    image_from_layers(vec![layer], &["sh"])
}

fn blob_count(s: &ImageStore) -> usize {
    fs::read_dir(s.root().join("blobs/sha256")).expect("blobs").count()
}

#[test]
fn pull_by_tag_then_cached_pull() {
    let reg = Registry::start();
    let img = busybox_image();
    let md = reg.push(&img, "busybox", "latest");
    let (_d, s) = store();
    let reference = format!("{}/busybox:latest", reg.addr);
    let rec = Rec::default();
    let image = s.pull(&reference, &PullOptions::default(), &rec).expect("pull");
    assert_eq!(image.id, img.config_digest());
    assert_eq!(image.manifest_digest, md);
    assert_eq!(image.names, vec![reference.clone()]);
    assert_eq!(image.size, img.layers[0].len() as u64 + img.config_bytes().len() as u64);
    assert_eq!(image.created.as_deref(), Some("2023-11-14T22:13:20Z"));
    let cmd = image.config.config().as_ref().and_then(|c| c.cmd().clone());
    assert_eq!(cmd, Some(vec!["sh".to_string()]));
    assert_eq!(*rec.advanced.lock().expect("lock"), img.layers[0].len() as u64);
    assert_eq!(rec.done.lock().expect("lock").clone(), vec![(digest(&img.layers[0]), false)]);
    assert!(s.blob_path(&digest(&img.layers[0])).expect("path").is_file());

    // The second pull downloads nothing.
    let rec2 = Rec::default();
    let again = s.pull(&reference, &PullOptions::default(), &rec2).expect("second pull");
    assert_eq!(again.id, image.id);
    assert_eq!(rec2.done.lock().expect("lock").clone(), vec![(digest(&img.layers[0]), true)]);
    assert!(rec2.started.lock().expect("lock").is_empty());
    assert_eq!(s.list().expect("list").len(), 1);

    // Usable: layers unpack to a rootfs with busybox.
    let layers = s.layers(&image).expect("layers");
    assert_eq!(layers.len(), 1);
    assert!(layers[0].join("bin/busybox").is_file());
    assert_eq!(fs::read_link(layers[0].join("bin/sh")).expect("sh link").to_str(), Some("busybox"));
    // get by name, id, and prefix.
    assert_eq!(s.get(&reference).expect("by name").id, image.id);
    assert_eq!(s.get(&image.id).expect("by id").id, image.id);
    assert_eq!(s.get(&hex_of(&image.id)[..12]).expect("by prefix").id, image.id);
    assert!(matches!(s.get(&hex_of(&image.id)[..11]), Err(Error::ImageNotFound(_))));
}

#[test]
fn pull_by_digest_and_through_an_index() {
    let reg = Registry::start();
    let img = small_image("index");
    let md = reg.push(&img, "app", "plain");
    let index_digest = reg.push_index(&img, "app", "multi");
    let (_d, s) = store();

    let by_digest = format!("{}/app@{md}", reg.addr);
    let image = s.pull(&by_digest, &PullOptions::default(), &NoProgress).expect("pull by digest");
    assert_eq!(image.manifest_digest, md);
    assert_eq!(image.names, vec![by_digest.clone()]);
    assert_eq!(s.get(&by_digest).expect("get by digest").id, image.id);

    let multi = format!("{}/app:multi", reg.addr);
    let image = s.pull(&multi, &PullOptions::default(), &NoProgress).expect("pull index");
    assert_eq!(image.id, img.config_digest(), "amd64 chosen, not arm64");
    assert_eq!(image.config.architecture().to_string(), "amd64");
    assert!(s.get(&multi).expect("get").names.contains(&multi));

    let by_index_digest = format!("{}/app@{index_digest}", reg.addr);
    let image = s.pull(&by_index_digest, &PullOptions::default(), &NoProgress).expect("pull index by digest");
    assert_eq!(image.id, img.config_digest());

    // A digest the registry does not have.
    let missing = format!("{}/app@sha256:{}", reg.addr, "0".repeat(64));
    let e = s.pull(&missing, &PullOptions::default(), &NoProgress).expect_err("unknown digest");
    assert!(matches!(e, Error::ImageNotFound(_)), "{e}");
}

#[test]
fn index_without_amd64_is_refused() {
    let reg = Registry::start();
    let arm = small_image("arm").with_architecture("arm64");
    let m = arm.manifest_bytes();
    reg.push(&arm, "armonly", "m");
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": strata_testkit::MT_OCI_INDEX, "manifests": [
        {"mediaType": strata_testkit::MT_OCI_MANIFEST, "digest": digest(&m), "size": m.len(), "platform": {"architecture": "arm64", "os": "linux"}}]});
    reg.push_manifest("armonly", "latest", strata_testkit::MT_OCI_INDEX, &serde_json::to_vec(&index).expect("json"));
    let (_d, s) = store();
    let e = s.pull(&format!("{}/armonly", reg.addr), &PullOptions::default(), &NoProgress).expect_err("no amd64");
    assert!(matches!(e, Error::NoMatchingPlatform { .. }), "{e}");
    assert!(e.to_string().contains("linux/amd64"), "{e}");
}

#[test]
fn tampered_blob_in_registry_leaves_nothing() {
    let reg = Registry::start();
    let img = small_image("tamper");
    reg.push(&img, "tamper", "latest");
    let layer_digest = digest(&img.layers[0]);
    let data = reg.blob_data_path(&layer_digest);
    let mut bytes = fs::read(&data).expect("registry blob");
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    fs::write(&data, &bytes).expect("tamper");

    let (_d, s) = store();
    let e = s.pull(&format!("{}/tamper", reg.addr), &PullOptions::default(), &NoProgress).expect_err("tampered");
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert!(e.to_string().contains(&layer_digest), "{e}");
    assert!(!s.blob_path(&layer_digest).expect("path").exists());
    let ingest: Vec<_> = fs::read_dir(s.root().join("ingest"))
        .expect("ingest")
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(ingest.is_empty(), "partial left behind: {ingest:?}");
    assert!(s.list().expect("list").is_empty());
}

#[test]
fn interrupted_download_resumes_with_range() {
    let reg = Registry::start();
    let img = small_image("resume");
    reg.push(&img, "resume", "latest");
    let (_d, s) = store();
    let layer = &img.layers[0];
    let half = layer.len() / 2;
    fs::write(s.root().join("ingest").join(hex_of(&digest(layer))), &layer[..half]).expect("seed partial");
    let rec = Rec::default();
    let image = s.pull(&format!("{}/resume", reg.addr), &PullOptions::default(), &rec).expect("resumed pull");
    assert!(rec.messages.lock().expect("lock").iter().any(|m| m.contains("resuming") && m.contains(&half.to_string())));
    assert!(!rec.messages.lock().expect("lock").iter().any(|m| m.contains("restarting")));
    assert_eq!(*rec.advanced.lock().expect("lock"), layer.len() as u64);
    assert!(s.blob_path(&digest(layer)).expect("path").is_file());
    assert!(!s.root().join("ingest").join(hex_of(&digest(layer))).exists());
    s.layers(&image).expect("resumed layer unpacks");
}

#[test]
fn corrupt_partial_download_is_discarded() {
    let reg = Registry::start();
    let img = small_image("badpartial");
    reg.push(&img, "badpartial", "latest");
    let (_d, s) = store();
    let layer = &img.layers[0];
    let partial = s.root().join("ingest").join(hex_of(&digest(layer)));
    fs::write(&partial, vec![0u8; 100]).expect("seed bad partial");
    let reference = format!("{}/badpartial", reg.addr);
    let e = s.pull(&reference, &PullOptions::default(), &NoProgress).expect_err("bad prefix");
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert!(!partial.exists());
    s.pull(&reference, &PullOptions::default(), &NoProgress).expect("retry succeeds");
}

#[test]
fn missing_image_and_unreachable_registry() {
    let reg = Registry::start();
    let (_d, s) = store();
    let reference = format!("{}/nothere:latest", reg.addr);
    let e = s.pull(&reference, &PullOptions::default(), &NoProgress).expect_err("404");
    assert!(matches!(e, Error::ImageNotFound(_)), "{e}");
    assert_eq!(e.to_string(), format!("image not found: {reference}"));

    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let e = s.pull(&format!("127.0.0.1:{port}/x"), &PullOptions::default(), &NoProgress).expect_err("refused");
    assert!(matches!(e, Error::RegistryUnreachable { .. }), "{e}");
    assert!(e.to_string().starts_with(&format!("cannot reach registry 127.0.0.1:{port}: ")), "{e}");
    assert!(!e.to_string().contains('\n'));
}

#[test]
fn basic_auth_registry() {
    let reg = Registry::start_with_htpasswd("alice", "s3cret");
    let img = small_image("auth");
    reg.push(&img, "private/app", "v1");
    let (_d, s) = store();
    let reference = format!("{}/private/app:v1", reg.addr);

    let e = s.pull(&reference, &PullOptions::default(), &NoProgress).expect_err("no creds");
    assert!(matches!(e, Error::AccessDenied { .. }), "{e}");
    assert!(e.to_string().contains(&format!("registry {} denied access to private/app", reg.addr)), "{e}");

    let wrong = PullOptions { username: Some("alice".into()), password: Some("nope".into()), ..Default::default() };
    let e = s.pull(&reference, &wrong, &NoProgress).expect_err("wrong creds");
    assert!(matches!(e, Error::AccessDenied { .. }), "{e}");

    let right = PullOptions { username: Some("alice".into()), password: Some("s3cret".into()), ..Default::default() };
    let image = s.pull(&reference, &right, &NoProgress).expect("pull with creds");
    assert_eq!(image.id, img.config_digest());
}

#[test]
fn repulling_a_tag_moves_it() {
    let reg = Registry::start();
    let a = small_image("a");
    let b = small_image("b");
    let (_d, s) = store();
    let reference = format!("{}/moving:latest", reg.addr);
    reg.push(&a, "moving", "latest");
    let ia = s.pull(&reference, &PullOptions::default(), &NoProgress).expect("pull a");
    reg.push(&b, "moving", "latest");
    let ib = s.pull(&reference, &PullOptions::default(), &NoProgress).expect("pull b");
    assert_ne!(ia.id, ib.id);
    let all = s.list().expect("list");
    assert_eq!(all.len(), 1, "old record dropped when its only name moved");
    assert_eq!(all[0].id, ib.id);
    assert_eq!(s.get(&reference).expect("get").id, ib.id);

    // gc reclaims the old image's blobs.
    let before = blob_count(&s);
    let report = s.gc(&HashSet::new()).expect("gc");
    assert_eq!(report.blobs_removed, 3, "old layer, config and manifest");
    assert_eq!(blob_count(&s), before - 3);
}

#[test]
fn concurrent_pulls_from_two_store_handles() {
    let reg = Registry::start();
    let imgs: Vec<TestImage> = (0..4).map(|i| small_image(&format!("c{i}"))).collect();
    for (i, img) in imgs.iter().enumerate() {
        reg.push(img, "conc", &format!("t{i}"));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("images");
    std::thread::scope(|sc| {
        for i in 0..4 {
            let root = root.clone();
            let addr = reg.addr.clone();
            sc.spawn(move || {
                let s = ImageStore::open(root).expect("open");
                s.pull(&format!("{addr}/conc:t{i}"), &PullOptions::default(), &NoProgress).expect("pull");
                // Every thread also pulls a shared tag.
                s.pull(&format!("{addr}/conc:t0"), &PullOptions::default(), &NoProgress).expect("pull shared");
            });
        }
    });
    let s = ImageStore::open(&root).expect("open");
    let names: HashSet<String> = s.list().expect("list").into_iter().flat_map(|i| i.names).collect();
    for i in 0..4 {
        assert!(names.contains(&format!("{}/conc:t{i}", reg.addr)), "t{i} lost: {names:?}");
    }
}
