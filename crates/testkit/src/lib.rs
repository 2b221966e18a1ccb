//! Test fixtures for strata's crates (dev-dependency only; panics on failure).
//!
//! - [`busybox_image`]: a one-layer OCI image built from the host's static `/bin/busybox`
//!   (Debian `busybox-static`), with users root/nobody/app, ready for real runc runs.
//! - [`write_oci_layout`] / [`write_docker_archive`]: the two import formats.
//! - [`Registry`]: a real `docker-registry` (Debian package) on a free loopback port, with
//!   [`Registry::push`] / [`Registry::push_index`] speaking the distribution HTTP API.
//! - [`tar_gz`], [`raw_entry`]: layer builders, including malformed/malicious entries that
//!   the `tar` crate's builder would refuse.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Fixed mtime for reproducible layers (and so reproducible digests).
pub const MTIME: u64 = 1_700_000_000;

pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_LAYER_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Applets linked into `/bin` by [`busybox_layer_tar_gz`].
pub const APPLETS: &[&str] = &[
    "sh", "ash", "echo", "cat", "ls", "sleep", "true", "false", "id", "hostname", "env", "pwd", "ps", "kill", "mkdir",
    "rm", "rmdir", "touch", "wc", "head", "tail", "grep", "httpd", "nc", "wget", "dd", "mount", "umount", "date", "seq",
    "yes", "printf", "test", "[", "stat", "top", "uname", "whoami", "cut", "tr", "sort", "xargs", "sync", "cp", "mv",
    "ln", "chmod", "chown", "df", "du", "free", "uptime", "vi", "sed", "awk", "find", "basename", "dirname", "readlink",
    "realpath", "tee", "timeout", "nslookup", "ip", "ifconfig", "ping", "netstat", "mkfifo", "mknod", "md5sum",
    "sha256sum", "base64", "od", "hexdump", "less", "more", "which", "expr", "usleep", "watch", "nohup", "setsid",
    "su", "login", "init", "poweroff", "reboot", "halt", "dmesg", "tar", "gzip", "gunzip", "zcat", "unshare", "nsenter",
    "chroot", "pidof", "pkill", "killall", "logger", "diff", "cmp", "uniq", "rev", "fold", "nproc", "ulimit", "stty",
];

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a digest.
pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").expect("sha256 digest")
}

/// Gzip `bytes` (deterministically).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// Un-gzip `bytes` if they are gzip, else return them as they are.
pub fn gunzip_if_needed(bytes: &[u8]) -> Vec<u8> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(bytes).read_to_end(&mut out).expect("gunzip");
        out
    } else {
        bytes.to_vec()
    }
}

/// Build a tar with `f` and gzip it.
pub fn tar_gz(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    gzip(&tar_plain(f))
}

/// Build an uncompressed tar with `f`.
pub fn tar_plain(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    f(&mut b);
    b.into_inner().expect("finish tar")
}

/// A header with fixed mtime, owner and mode.
pub fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(MTIME);
    h.set_size(size);
    h
}

pub fn add_dir(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, uid: u64, gid: u64) {
    let mut h = header(tar::EntryType::Directory, mode, uid, gid, 0);
    b.append_data(&mut h, path, std::io::empty()).expect("append dir");
}

pub fn add_file(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
    let mut h = header(tar::EntryType::Regular, mode, 0, 0, data.len() as u64);
    b.append_data(&mut h, path, data).expect("append file");
}

pub fn add_symlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
    b.append_link(&mut h, path, target).expect("append symlink");
}

/// Append an entry with raw name (and link name) bytes, bypassing the `tar` crate's path
/// validation: for absolute paths, `..` components and other hostile entries. Names must
/// fit the 100-byte ustar fields.
pub fn raw_entry(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &[u8], link: Option<&[u8]>, data: &[u8]) {
    let mut h = header(kind, if kind == tar::EntryType::Directory { 0o755 } else { 0o644 }, 0, 0, data.len() as u64);
    {
        let gnu = h.as_gnu_mut().expect("gnu header");
        assert!(name.len() < 100, "raw name too long");
        gnu.name = [0; 100];
        gnu.name[..name.len()].copy_from_slice(name);
        if let Some(l) = link {
            assert!(l.len() < 100, "raw link name too long");
            gnu.linkname = [0; 100];
            gnu.linkname[..l.len()].copy_from_slice(l);
        }
    }
    h.set_cksum();
    b.append(&h, data).expect("append raw entry");
}

/// A gzip'd layer with the host's static busybox, applet symlinks, users and basic dirs.
/// Cached per process (it is deterministic).
pub fn busybox_layer_tar_gz() -> Vec<u8> {
    static LAYER: OnceLock<Vec<u8>> = OnceLock::new();
    LAYER
        .get_or_init(|| {
            let busybox = fs::read("/bin/busybox")
                .expect("read /bin/busybox: install the busybox-static package (apt-get install -y busybox-static)");
            tar_gz(|b| {
                for (d, mode, uid) in [
                    ("bin", 0o755, 0),
                    ("dev", 0o755, 0),
                    ("etc", 0o755, 0),
                    ("home", 0o755, 0),
                    ("home/app", 0o755, 1000),
                    ("proc", 0o555, 0),
                    ("root", 0o700, 0),
                    ("sbin", 0o755, 0),
                    ("sys", 0o555, 0),
                    ("tmp", 0o1777, 0),
                    ("usr", 0o755, 0),
                    ("usr/bin", 0o755, 0),
                    ("usr/sbin", 0o755, 0),
                    ("var", 0o755, 0),
                    ("var/www", 0o755, 0),
                ] {
                    add_dir(b, d, mode, uid, uid);
                }
                add_file(b, "bin/busybox", 0o755, &busybox);
                for a in APPLETS {
                    add_symlink(b, &format!("bin/{a}"), "busybox");
                }
                add_file(
                    b,
                    "etc/passwd",
                    0o644,
                    b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
                );
                add_file(b, "etc/group", 0o644, b"root:x:0:\napp:x:1000:\nnogroup:x:65534:\n");
                add_file(b, "etc/hostname", 0o644, b"");
                add_file(b, "var/www/index.html", 0o644, b"hello from strata\n");
            })
        })
        .clone()
}

/// An image: gzip'd layer tars (bottom first) and its OCI config.
#[derive(Clone, Debug)]
pub struct TestImage {
    pub layers: Vec<Vec<u8>>,
    pub config: Value,
}

impl TestImage {
    /// Serialized config (deterministic: serde_json maps are sorted).
    pub fn config_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.config).expect("serialize config")
    }
    pub fn config_digest(&self) -> String {
        digest(&self.config_bytes())
    }
    /// The OCI manifest for this image.
    pub fn manifest_bytes(&self) -> Vec<u8> {
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| {
                let mt = if l.starts_with(&[0x1f, 0x8b]) { MT_OCI_LAYER_GZ } else { "application/vnd.oci.image.layer.v1.tar" };
                json!({"mediaType": mt, "digest": digest(l), "size": l.len()})
            })
            .collect();
        let cfg = self.config_bytes();
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": MT_OCI_CONFIG, "digest": digest(&cfg), "size": cfg.len()},
            "layers": layers,
        }))
        .expect("serialize manifest")
    }
    pub fn manifest_digest(&self) -> String {
        digest(&self.manifest_bytes())
    }
    /// A copy with the config's architecture changed (for multi-arch indexes).
    pub fn with_architecture(&self, arch: &str) -> TestImage {
        let mut img = self.clone();
        img.config["architecture"] = json!(arch);
        img
    }
}

/// A gzip'd layer holding one file `name` of `size` zero bytes, and its diff id, built as a
/// stream (a gzip bomb: a few hundred KiB that expand to `size`).
pub fn zeros_layer(name: &str, size: u64) -> (Vec<u8>, String) {
    struct Tee<W: Write> {
        gz: W,
        sha: Sha256,
    }
    impl<W: Write> Write for Tee<W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.gz.write(buf)?;
            self.sha.update(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.gz.flush()
        }
    }
    let mut tee = Tee { gz: GzEncoder::new(Vec::new(), Compression::fast()), sha: Sha256::new() };
    let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, size);
    h.set_path(name).expect("name");
    h.set_cksum();
    tee.write_all(h.as_bytes()).expect("header");
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        tee.write_all(&chunk[..n]).expect("data");
        left -= n as u64;
    }
    let pad = (512 - (size % 512) as usize) % 512;
    tee.write_all(&vec![0u8; pad + 1024]).expect("padding and end of archive");
    let diff_id = format!("sha256:{}", hex::encode(tee.sha.finalize()));
    (tee.gz.finish().expect("gzip"), diff_id)
}

/// An image from layers (gzip'd or plain) with a config whose diff ids are correct.
pub fn image_from_layers(layers: Vec<Vec<u8>>, cmd: &[&str]) -> TestImage {
    let diff_ids: Vec<String> = layers.iter().map(|l| digest(&gunzip_if_needed(l))).collect();
    image_with_diff_ids(layers, diff_ids, cmd)
}

/// An image from layers whose diff ids the caller computed (for layers too big to gunzip
/// in memory).
pub fn image_with_diff_ids(layers: Vec<Vec<u8>>, diff_ids: Vec<String>, cmd: &[&str]) -> TestImage {
    let config = json!({
        "created": "2023-11-14T22:13:20Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": cmd,
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "strata-testkit"}],
    });
    TestImage { layers, config }
}

/// Busybox image: `Cmd ["sh"]`, PATH set, linux/amd64.
pub fn busybox_image() -> TestImage {
    image_from_layers(vec![busybox_layer_tar_gz()], &["sh"])
}

fn write_blob(dir: &Path, bytes: &[u8]) -> String {
    let d = digest(bytes);
    let p = dir.join("blobs/sha256").join(hex_of(&d));
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir blobs");
    fs::write(&p, bytes).expect("write blob");
    d
}

/// Write an OCI image layout directory with one image annotated `ref_name`.
pub fn write_oci_layout(img: &TestImage, dir: &Path, ref_name: &str) {
    fs::create_dir_all(dir).expect("mkdir layout");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    for l in &img.layers {
        write_blob(dir, l);
    }
    write_blob(dir, &img.config_bytes());
    let manifest = img.manifest_bytes();
    let md = write_blob(dir, &manifest);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_INDEX,
        "manifests": [{
            "mediaType": MT_OCI_MANIFEST,
            "digest": md,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": ref_name},
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).expect("index")).expect("index.json");
}

/// Pack a directory tree into a tar file (for OCI layout tars).
pub fn tar_dir(dir: &Path, tar_path: &Path) {
    let f = fs::File::create(tar_path).expect("create tar");
    let mut b = tar::Builder::new(f);
    b.append_dir_all(".", dir).expect("tar dir");
    b.finish().expect("finish tar");
}

/// Write a `docker save`-style archive. Layers are stored uncompressed (as Docker does)
/// unless `keep_gzip`.
pub fn write_docker_archive_with(img: &TestImage, tar_path: &Path, repo_tag: &str, keep_gzip: bool) {
    let cfg = img.config_bytes();
    let cfg_name = format!("{}.json", hex_of(&digest(&cfg)));
    let layer_names: Vec<String> = (0..img.layers.len()).map(|i| format!("layer{i}/layer.tar")).collect();
    let manifest = json!([{"Config": cfg_name, "RepoTags": [repo_tag], "Layers": layer_names}]);
    let f = fs::File::create(tar_path).expect("create docker archive");
    let mut b = tar::Builder::new(f);
    let mut add = |name: &str, data: &[u8]| {
        let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, data.len() as u64);
        b.append_data(&mut h, name, data).expect("append");
    };
    add(&cfg_name, &cfg);
    for (l, name) in img.layers.iter().zip(&layer_names) {
        let data = if keep_gzip { l.clone() } else { gunzip_if_needed(l) };
        add(name, &data);
    }
    add("manifest.json", &serde_json::to_vec(&manifest).expect("manifest"));
    b.finish().expect("finish docker archive");
}

/// [`write_docker_archive_with`] with uncompressed layers.
pub fn write_docker_archive(img: &TestImage, tar_path: &Path, repo_tag: &str) {
    write_docker_archive_with(img, tar_path, repo_tag, false);
}

/// A real `docker-registry` process on `127.0.0.1:PORT`; dropped = killed and deleted.
pub struct Registry {
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// The registry's storage root (`storage.filesystem.rootdirectory`).
    pub storage: PathBuf,
    credentials: Option<(String, String)>,
    child: Child,
    dir: tempfile::TempDir,
}

/// The `p` quantile (0 to 1) of `sorted` durations in milliseconds (NaN when there are none): the
/// p50/p99 the benchmarks report.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// A child process killed and reaped when dropped (a benchmark's server or agent).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `BIN --root ROOT server EXTRA... --listen 127.0.0.1:PORT --data-dir DATA` (stderr to
/// `log`) on a free port and wait until it serves and has written its kubeconfig (60 s at most):
/// the process and its port (a benchmark's server).
pub fn start_server(bin: &str, root: &Path, extra: &[&str], data: &Path, log: &Path) -> (KillOnDrop, u16) {
    let port = free_port();
    let server = KillOnDrop(
        Command::new(bin)
            .arg("--root")
            .arg(root)
            .arg("server")
            .args(extra)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data)
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).map(Stdio::from).unwrap_or(Stdio::null()))
            .spawn()
            .expect("strata server"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(data.join("kubeconfig").exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
        assert!(Instant::now() < deadline, "server did not start; see {}", log.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port)
}

/// Join a `BIN --root ROOT agent --name NAME --data-dir AGENT_DATA EXTRA...` (environment `envs`,
/// stderr to `log`) with a fresh join token to the benchmark server on `port` whose data dir is
/// `server_data`, and wait until its node is Ready (120 s at most): the agent process.
#[allow(clippy::too_many_arguments)]
pub fn join_agent(bin: &str, root: &Path, server_data: &Path, port: u16, name: &str, agent_data: &Path, extra: &[&str], envs: &[(&str, String)], log: &Path) -> KillOnDrop {
    let token = Command::new(bin).arg("--root").arg(root).args(["token", "create", "--data-dir"]).arg(server_data).output().expect("strata token create");
    assert!(token.status.success(), "strata token create: {}", String::from_utf8_lossy(&token.stderr));
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    let agent = KillOnDrop(
        Command::new(bin)
            .arg("--root")
            .arg(root)
            .args(["agent", "--server", &format!("https://127.0.0.1:{port}"), "--token", &token, "--name", name])
            .args(extra)
            .arg("--data-dir")
            .arg(agent_data)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).map(Stdio::from).unwrap_or(Stdio::null()))
            .spawn()
            .expect("strata agent"),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let ready = r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#;
    loop {
        let out = Command::new("kubectl").arg("--kubeconfig").arg(server_data.join("kubeconfig")).args(["get", "node", name, "-o", ready]).stderr(Stdio::null()).output();
        if out.is_ok_and(|o| o.stdout == b"True") {
            return agent;
        }
        assert!(Instant::now() < deadline, "the agent's node is not Ready after 120 s; see {}", log.display());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (RSS, PSS) of a process in MiB, from `/proc/PID/smaps_rollup` (0 when it is gone): the memory
/// figures the benchmarks report.
pub fn memory_mib(pid: u32) -> (f64, f64) {
    let s = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let kb = |k: &str| s.lines().find_map(|l| l.strip_prefix(k)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).unwrap_or(0.0);
    (kb("Rss:") / 1024.0, kb("Pss:") / 1024.0)
}

/// The running processes of executable `bin` other than `skip` (a benchmark's supervisors and
/// pod processes besides its server and agent): how many, and their PSS summed in MiB.
pub fn processes_of(bin: &str, skip: &[u32]) -> (usize, f64) {
    let exe = fs::canonicalize(bin).unwrap_or_else(|_| PathBuf::from(bin));
    let mut n = 0;
    let mut pss = 0.0;
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if skip.contains(&pid) || fs::read_link(e.path().join("exe")).ok().as_deref() != Some(exe.as_path()) {
            continue;
        }
        n += 1;
        pss += memory_mib(pid).1;
    }
    (n, pss)
}

/// A loopback TCP port that is free now, for a server a test is about to start.
///
/// Ports come from 20000-32767, below Linux's ephemeral range (32768-60999): a port the kernel
/// handed out for `bind(0)` is also what it hands to the next outgoing connection, so with
/// many clients running in parallel tests, a port picked that way is often taken before the
/// server binds it. Within one test process no port is handed out twice. A server that still
/// loses the race should be started again on a new port (see `ApiServer::spawn`).
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    const LOW: u32 = 20000;
    const SPAN: u32 = 32768 - LOW;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let mut x = nanos ^ std::process::id().wrapping_mul(2_654_435_761);
    let mut given = GIVEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..SPAN {
        // xorshift: a different walk through the range for each process and moment.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let port = (LOW + x % SPAN) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in {LOW}-32767");
}

impl Registry {
    /// Start an open registry.
    pub fn start() -> Registry {
        Registry::spawn(None)
    }

    /// Start a registry requiring HTTP basic auth (htpasswd with a bcrypt hash made by the
    /// `bcrypt` crate; apache2-utils' `htpasswd` is not needed).
    pub fn start_with_htpasswd(user: &str, pass: &str) -> Registry {
        Registry::spawn(Some((user.to_string(), pass.to_string())))
    }

    fn spawn(credentials: Option<(String, String)>) -> Registry {
        let dir = tempfile::tempdir().expect("registry tempdir");
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).expect("mkdir storage");
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let mut config = format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: strata-testkit\n",
                storage.display()
            );
            if let Some((u, p)) = &credentials {
                let hash = bcrypt::hash(p, 4).expect("bcrypt");
                let htpasswd = dir.path().join("htpasswd");
                fs::write(&htpasswd, format!("{u}:{hash}\n")).expect("write htpasswd");
                config.push_str(&format!("auth:\n  htpasswd:\n    realm: strata-testkit\n    path: {}\n", htpasswd.display()));
            }
            let config_path = dir.path().join("config.yml");
            fs::write(&config_path, config).expect("write registry config");
            let log_path = dir.path().join("registry.log");
            let log = fs::File::create(&log_path).expect("registry log");
            let mut child = match Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .spawn()
            {
                Ok(c) => c,
                Err(e) => panic!("cannot start docker-registry ({e}): apt-get install -y docker-registry"),
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_log = fs::read_to_string(&log_path).unwrap_or_default();
                    eprintln!("docker-registry exited with {status}: {last_log}");
                    break;
                }
                match agent.get(&format!("http://{addr}/v2/")).call() {
                    Ok(_) | Err(ureq::Error::Status(401, _)) => {
                        return Registry { addr, storage, credentials, child, dir };
                    }
                    Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                    Err(e) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("docker-registry on {addr} did not answer: {e}");
                    }
                }
            }
        }
        panic!("docker-registry failed to start: {last_log}");
    }

    fn request(&self, method: &str, url: &str) -> ureq::Request {
        let url = if url.starts_with("http") { url.to_string() } else { format!("http://{}{url}", self.addr) };
        let mut req = ureq::request(method, &url);
        if let Some((u, p)) = &self.credentials {
            let token = base64_encode(format!("{u}:{p}").as_bytes());
            req = req.set("Authorization", &format!("Basic {token}"));
        }
        req
    }

    /// Upload one blob (skipped if the registry has it).
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let d = digest(bytes);
        if self.request("HEAD", &format!("/v2/{repo}/blobs/{d}")).call().is_ok() {
            return d;
        }
        let resp = self.request("POST", &format!("/v2/{repo}/blobs/uploads/")).call().expect("start blob upload");
        let location = resp.header("Location").expect("upload Location").to_string();
        let location = if location.starts_with('/') { format!("http://{}{location}", self.addr) } else { location };
        let sep = if location.contains('?') { '&' } else { '?' };
        self.request("PUT", &format!("{location}{sep}digest={d}"))
            .set("Content-Type", "application/octet-stream")
            .send_bytes(bytes)
            .expect("finish blob upload");
        d
    }

    /// Upload a manifest or index under `reference` (tag or digest); returns its digest.
    pub fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> String {
        self.request("PUT", &format!("/v2/{repo}/manifests/{reference}"))
            .set("Content-Type", media_type)
            .send_bytes(bytes)
            .unwrap_or_else(|e| panic!("PUT manifest {repo}:{reference}: {e}"));
        digest(bytes)
    }

    /// Push `img` as `repo:tag` with an OCI manifest; returns the manifest digest.
    pub fn push(&self, img: &TestImage, repo: &str, tag: &str) -> String {
        for l in &img.layers {
            self.push_blob(repo, l);
        }
        self.push_blob(repo, &img.config_bytes());
        self.push_manifest(repo, tag, MT_OCI_MANIFEST, &img.manifest_bytes())
    }

    /// Push a multi-arch OCI index under `repo:tag` with a linux/arm64 and a linux/amd64
    /// entry (arm64 first, so a client must really choose); returns the index digest.
    pub fn push_index(&self, img: &TestImage, repo: &str, tag: &str) -> String {
        let arm = img.with_architecture("arm64");
        let mut entries = Vec::new();
        for (i, arch) in [(&arm, "arm64"), (img, "amd64")] {
            let m = i.manifest_bytes();
            for l in &i.layers {
                self.push_blob(repo, l);
            }
            self.push_blob(repo, &i.config_bytes());
            let d = self.push_manifest(repo, &digest(&m), MT_OCI_MANIFEST, &m);
            entries.push(json!({"mediaType": MT_OCI_MANIFEST, "digest": d, "size": m.len(), "platform": {"architecture": arch, "os": "linux"}}));
        }
        let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": entries})).expect("index");
        self.push_manifest(repo, tag, MT_OCI_INDEX, &index)
    }

    /// Where the registry stores a blob's bytes (to tamper with it in tests).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = hex_of(digest);
        self.storage.join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    /// The registry's temp dir (config, log, storage).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_encode(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 { T[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if chunk.len() > 2 { T[n as usize & 63] as char } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_processes_of_this_test_binary() {
        let me = std::process::id();
        let (rss, pss) = memory_mib(me);
        assert!(rss > 1.0 && pss > 0.0 && pss <= rss + 0.01, "rss {rss} pss {pss}");
        assert_eq!(memory_mib(u32::MAX), (0.0, 0.0));
        let exe = std::env::current_exe().expect("current exe");
        let exe = exe.to_str().expect("utf-8 path");
        let (n, pss_all) = processes_of(exe, &[]);
        assert!(n >= 1 && pss_all >= pss * 0.5, "{n} processes, {pss_all} MiB");
        assert_eq!(processes_of(exe, &[me]).0, n - 1);
    }

    #[test]
    fn busybox_image_is_consistent() {
        let img = busybox_image();
        let diff = digest(&gunzip_if_needed(&img.layers[0]));
        assert_eq!(img.config["rootfs"]["diff_ids"][0], json!(diff));
        assert_eq!(busybox_layer_tar_gz(), img.layers[0], "deterministic");
        let tar = gunzip_if_needed(&img.layers[0]);
        let mut ar = tar::Archive::new(&tar[..]);
        let names: Vec<String> =
            ar.entries().expect("entries").map(|e| e.expect("entry").path().expect("path").display().to_string()).collect();
        for n in ["bin/busybox", "bin/sh", "etc/passwd", "tmp", "home/app"] {
            assert!(names.iter().any(|x| x.trim_end_matches('/') == n), "{n} missing");
        }
    }

    #[test]
    fn registry_push_and_fetch() {
        let reg = Registry::start();
        let img = busybox_image();
        let d = reg.push(&img, "busybox", "latest");
        let resp = ureq::get(&format!("http://{}/v2/busybox/manifests/latest", reg.addr))
            .set("Accept", MT_OCI_MANIFEST)
            .call()
            .expect("get manifest");
        assert_eq!(resp.header("Docker-Content-Digest"), Some(d.as_str()));
        assert!(reg.blob_data_path(&digest(&img.layers[0])).is_file());
    }
}
