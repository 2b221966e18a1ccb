//! A real `strata server` process on a free loopback port with a private data dir, and
//! helpers to drive it with the real `kubectl`, `curl` and the Python `kubernetes` client.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Which store the server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Etcd,
}

/// A real etcd (Debian's `etcd-server`) on free loopback ports, killed on drop.
pub struct EtcdProcess {
    child: Child,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl EtcdProcess {
    pub fn start() -> EtcdProcess {
        let dir = tempfile::tempdir().expect("etcd dir");
        // A port taken between free_port() and etcd's bind makes etcd exit: try new ports.
        for _ in 0..5 {
            let (cp, pp) = (super::free_port(), super::free_port());
            let client = format!("http://127.0.0.1:{cp}");
            let peer = format!("http://127.0.0.1:{pp}");
            let _ = std::fs::remove_dir_all(dir.path().join("data"));
            let mut child = Command::new("etcd")
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &format!("default={peer}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("etcd must be installed (apt-get install etcd-server)");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", cp)).is_ok() {
                    return EtcdProcess { child, endpoint: format!("127.0.0.1:{cp}"), _dir: dir };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("etcd did not start");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("etcd exited at start five times (ports in use?)");
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct ApiServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    /// Extra `strata server` flags (the store's included); change them between restarts.
    pub extra: Vec<String>,
    /// The server's `--data-dir`: the temporary directory itself, or a directory in it that
    /// the server creates ([`Options::data_subdir`]).
    data: PathBuf,
    /// How the server runs; change `env` or `umask` between restarts.
    pub opts: Options,
    _etcd: Option<EtcdProcess>,
    /// Starts retried because the store was unavailable.
    store_retries: u32,
}

/// How [`ApiServer::start_opts`] runs the server, beyond its flags.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Extra `strata server` flags.
    pub extra: Vec<String>,
    /// Extra environment variables of the server process.
    pub env: Vec<(String, String)>,
    /// Let the server create its data dir as this directory inside the test's one.
    pub data_subdir: Option<String>,
    /// The server's umask (e.g. 0 to prove that it sets every mode itself).
    pub umask: Option<u32>,
    /// Run the node agent (without it the server gets `--no-agent`); its strata root (driver
    /// state) is [`ApiServer::root`].
    pub agent: bool,
    /// Run the in-process scheduler (off by default, so that tests of the API server see only
    /// their own writes to pods).
    pub scheduler: bool,
    /// Run the controllers in the server (off by default: most tests look at the API server
    /// alone and must not see pods or ServiceAccounts appear). Without them the ServiceAccount
    /// admission plugin is off too (nothing would make the `default` ServiceAccounts).
    pub controllers: bool,
    /// Run on this etcd (`127.0.0.1:PORT`) instead of one of its own (a second server on
    /// another's store).
    pub etcd_endpoint: Option<String>,
    /// Listen on this address instead of 127.0.0.1 (an address of this host the test made,
    /// e.g. on a bridge to a network namespace).
    pub listen_host: Option<String>,
}

impl ApiServer {
    pub fn start(backend: Backend) -> ApiServer {
        Self::start_with(backend, &[])
    }

    /// Start with extra `strata server` flags (e.g. `--token-file`).
    pub fn start_with(backend: Backend, extra: &[&str]) -> ApiServer {
        Self::start_opts(backend, Options { extra: extra.iter().map(|s| s.to_string()).collect(), ..Options::default() })
    }

    pub fn start_opts(backend: Backend, opts: Options) -> ApiServer {
        let dir = tempfile::Builder::new().prefix("strata-api-").tempdir_in("/var/tmp").expect("tempdir");
        let port = super::free_port();
        let mut extra = opts.extra.clone();
        let data = match &opts.data_subdir {
            Some(sub) => dir.path().join(sub),
            None => dir.path().to_path_buf(),
        };
        if !opts.controllers {
            // No ServiceAccount controller makes `default`: pods would be refused.
            extra.push("--no-controllers".to_string());
            extra.push("--disable-admission-plugins=ServiceAccount".to_string());
        }
        let etcd = match backend {
            Backend::Embedded => None,
            Backend::Etcd if opts.etcd_endpoint.is_some() => {
                extra.extend(["--store".to_string(), format!("etcd://{}", opts.etcd_endpoint.clone().unwrap_or_default())]);
                None
            }
            Backend::Etcd => {
                let e = EtcdProcess::start();
                extra.extend(["--store".to_string(), format!("etcd://{}", e.endpoint)]);
                Some(e)
            }
        };
        let mut s = ApiServer { dir, port, child: None, extra, data, opts, _etcd: etcd, store_retries: 0 };
        s.spawn();
        s
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The strata root of the server's node agent (images, containers, pod volumes).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data.join("kubeconfig")
    }

    fn host(&self) -> &str {
        self.opts.listen_host.as_deref().unwrap_or("127.0.0.1")
    }

    pub fn url(&self) -> String {
        format!("https://{}:{}", self.host(), self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("server.log")).expect("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
        cmd.arg("--root").arg(self.root()).arg("server");
        if !self.opts.agent {
            cmd.arg("--no-agent");
        }
        cmd.args(["--listen", &format!("{}:{}", self.host(), self.port), "--data-dir"])
            .arg(&self.data)
            .args(if self.opts.scheduler { &[][..] } else { &["--no-scheduler"][..] })
            .args(&self.extra)
            .envs(self.opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(mask) = self.opts.umask {
            use std::os::unix::process::CommandExt;
            // SAFETY: umask is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(mask as libc::mode_t);
                    Ok(())
                });
            }
        }
        // The server writes the kubeconfig once it listens: its presence (with the port
        // answering) says this run is up, not a previous one.
        let _ = std::fs::remove_file(self.kubeconfig());
        let log_len = std::fs::metadata(self.dir.path().join("server.log")).map(|m| m.len()).unwrap_or(0);
        let child = cmd.spawn().expect("spawn strata server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                // Another process took the port between free_port() and the server's bind:
                // start again on a new one (the server rewrites the kubeconfig's URL).
                let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
                let this_run = log.get(log_len as usize..).unwrap_or_default();
                if this_run.contains("cannot listen") && this_run.contains("in use") {
                    self.child = None;
                    self.port = super::free_port();
                    return self.spawn();
                }
                // The test's etcd refused the connection at start (seen once in CI under
                // load): try again a few times before calling it a failure.
                if this_run.contains("store unavailable") && self.store_retries < 5 {
                    self.store_retries += 1;
                    self.child = None;
                    std::thread::sleep(Duration::from_millis(500));
                    return self.spawn();
                }
                panic!("strata server exited ({status}): {log}");
            }
            if std::net::TcpStream::connect((self.host(), self.port)).is_ok() && self.kubeconfig().exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("strata server did not come up: {}", std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default());
    }

    /// Stop with SIGTERM (or SIGKILL with `hard`) and start again on the same data dir.
    pub fn restart(&mut self, hard: bool) {
        self.stop(hard);
        self.spawn();
    }

    pub fn stop(&mut self, hard: bool) {
        if let Some(mut c) = self.child.take() {
            if hard {
                let _ = c.kill();
            } else {
                let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            }
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.kubectl_bin("kubectl", args, stdin)
    }

    /// A `bin` command (e.g. `kubectl`, [`kubectl_of`]`("1.27")`) set up to reach this server as the admin.
    pub fn kubectl_command(&self, bin: &str) -> Command {
        let mut c = Command::new(bin);
        c.env("KUBECONFIG", self.kubeconfig()).env("HOME", self.dir.path());
        c
    }

    /// Run a given kubectl binary (e.g. [`kubectl_of`]`("1.27")`) against this server.
    pub fn kubectl_bin(&self, bin: &str, args: &[&str], stdin: Option<&str>) -> Output {
        self.kubectl_timed(bin, args, stdin.map(str::as_bytes), Duration::from_secs(600))
    }

    /// `bin ARGS` with `stdin` against this server, killed (and the test failed) after `limit`.
    pub fn kubectl_timed(&self, bin: &str, args: &[&str], stdin: Option<&[u8]>, limit: Duration) -> Output {
        use std::io::Write;
        let mut c = self
            .kubectl_command(bin)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        if let Some(b) = stdin {
            c.stdin.take().expect("stdin").write_all(b).expect("write stdin");
        }
        super::wait_bounded(c, limit)
    }

    /// `kubectl ARGS`, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_stdin(args, None)
    }

    pub fn ok_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_stdin(args, stdin);
        assert!(out.status.success(), "kubectl {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl ARGS`, asserting failure; returns stderr.
    pub fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_stdin(args, stdin);
        assert!(!out.status.success(), "kubectl {args:?} unexpectedly succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A raw HTTPS request with curl as the admin (client certificate) or with a token or
    /// anonymously. Returns (HTTP status, body).
    /// GET `path` as the admin: the object, or `Null` when it is not found (404).
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.curl("GET", path, Auth::Admin, None, None);
        assert!(code == 200 || code == 404, "GET {path}: {code} {body}");
        if code == 404 {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    /// The items of the list at `path` (none when it is not found).
    pub fn items(&self, path: &str) -> Vec<serde_json::Value> {
        self.get_json(path)["items"].as_array().cloned().unwrap_or_default()
    }

    pub fn curl(&self, method: &str, path: &str, auth: Auth, content_type: Option<&str>, body: Option<&[u8]>) -> (u16, String) {
        let ct = content_type.map(|ct| format!("Content-Type: {ct}"));
        self.curl_headers(method, path, auth, ct.as_slice(), body)
    }

    /// [`ApiServer::curl`] with any request headers (`"Accept: ..."`, `"Content-Type: ..."`).
    pub fn curl_headers<S: AsRef<str>>(&self, method: &str, path: &str, auth: Auth, headers: &[S], body: Option<&[u8]>) -> (u16, String) {
        use std::io::Write;
        let pki = self.data.join("pki");
        let mut c = Command::new("curl");
        c.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method, "--cacert"]).arg(pki.join("ca.crt"));
        curl_auth(&mut c, &pki, auth);
        for h in headers {
            c.arg("-H").arg(h.as_ref());
        }
        if body.is_some() {
            c.args(["--data-binary", "@-"]);
        }
        c.arg(format!("{}{path}", self.url())).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("curl");
        if let Some(b) = body {
            let mut stdin = child.stdin.take().expect("stdin");
            let _ = stdin.write_all(b);
        } else {
            drop(child.stdin.take());
        }
        curl_result(&child.wait_with_output().expect("curl output"))
    }

    /// A POST of `body` whose last `held` bytes are not sent yet: from the moment its headers
    /// arrive it holds a flow-control seat (or a place in its lane's queue), until
    /// [`HeldRequest::finish`] sends the rest.
    pub fn post_held(&self, path: &str, auth: Auth, body: &[u8], held: usize) -> HeldRequest {
        use std::io::Write;
        let pki = self.data.join("pki");
        let mut c = Command::new("curl");
        // `-T -` streams stdin as the body; `Expect:` keeps curl from waiting for a 100.
        c.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", "POST", "-T", "-", "-H", "Content-Type: application/json", "-H", "Expect:", "--cacert"]).arg(pki.join("ca.crt"));
        curl_auth(&mut c, &pki, auth);
        c.arg(format!("{}{path}", self.url())).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("curl");
        let mut stdin = child.stdin.take().expect("stdin");
        let split = body.len().saturating_sub(held);
        stdin.write_all(&body[..split]).expect("first part of the body");
        stdin.flush().expect("flush");
        HeldRequest { child, stdin, rest: body[split..].to_vec() }
    }

    /// A client certificate for `system:node:NAME` in `system:nodes`, signed with the cluster
    /// CA's key by openssl, written under `dir`: (key, certificate).
    pub fn node_cert(&self, dir: &Path, node: &str) -> (PathBuf, PathBuf) {
        let (key, csr, crt) = (dir.join(format!("{node}.key")), dir.join(format!("{node}.csr")), dir.join(format!("{node}.crt")));
        let pki = self.data.join("pki");
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).output().expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let p = |p: &Path| p.to_str().expect("path").to_string();
        run(&["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", &p(&key), "-out", &p(&csr), "-subj", &format!("/O=system:nodes/CN=system:node:{node}")]);
        // A v3 client certificate (webpki takes no other).
        let ext = dir.join(format!("{node}.ext"));
        std::fs::write(&ext, "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n").expect("ext");
        let serial = dir.join("ca.srl");
        run(&["x509", "-req", "-in", &p(&csr), "-CA", &p(&pki.join("ca.crt")), "-CAkey", &p(&pki.join("ca.key")), "-CAserial", &p(&serial), "-CAcreateserial", "-extfile", &p(&ext), "-out", &p(&crt), "-days", "1"]);
        (key, crt)
    }

    /// A GET as the admin with extra request headers (`"Accept: ..."`). Returns (HTTP status,
    /// response headers in lower case, body bytes).
    pub fn get_with_headers(&self, path: &str, headers: &[&str]) -> (u16, String, Vec<u8>) {
        let pki = self.data.join("pki");
        let head = self.dir.path().join(format!("headers-{}", std::process::id()));
        let mut c = Command::new("curl");
        c.args(["-sS", "-o", "-", "-D"]).arg(&head).arg("--cacert").arg(pki.join("ca.crt"));
        c.arg("--cert").arg(pki.join("admin.crt")).arg("--key").arg(pki.join("admin.key"));
        for h in headers {
            c.arg("-H").arg(h);
        }
        let out = c.arg(format!("{}{path}", self.url())).stdin(Stdio::null()).output().expect("curl");
        let head = std::fs::read_to_string(&head).unwrap_or_default();
        let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (code, head.to_ascii_lowercase(), out.stdout)
    }

    /// The etcd this server runs on, if any (`127.0.0.1:PORT`).
    pub fn etcd_endpoint(&self) -> Option<&str> {
        self._etcd.as_ref().map(|e| e.endpoint.as_str())
    }

    /// Compact the etcd this server runs on at `revision`, through etcd's JSON gateway (there is
    /// no `etcdctl` here). Panics without etcd.
    pub fn compact_etcd(&self, revision: u64) {
        let ep = self.etcd_endpoint().expect("an etcd backend");
        let body = format!(r#"{{"revision":"{revision}","physical":true}}"#);
        let out = Command::new("curl")
            .args(["-sS", "-X", "POST", "-d", &body, &format!("http://{ep}/v3/kv/compaction")])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && !text.contains("\"error\""), "etcd compaction failed: {text}");
    }

    /// Push every revision written so far out of the embedded store's history, the way a busy
    /// server would (the stand-in for an etcd compaction): stop the server, open its store with
    /// a history of a few revisions, write more than twice that many (the store compacts by
    /// itself) and start the server again. Panics on an etcd backend.
    pub fn outlive_embedded_history(&mut self) {
        use strata_store::Store;
        const HISTORY: u64 = 4;
        assert!(self._etcd.is_none(), "an embedded backend");
        self.stop(false);
        let path = self.data.join("store.redb");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let store = strata_store::embedded::Embedded::open_with_history(&path, HISTORY).expect("opening the store");
            let before = store.revision().await.expect("revision");
            // Outside every resource's prefix, and gone again at the end.
            let key = "/strata-test/filler";
            store.create(key, b"0".to_vec()).await.expect("filler");
            for i in 1..=3 * HISTORY {
                store.update(key, i.to_string().into_bytes(), 0).await.expect("filler");
            }
            store.delete(key, 0).await.expect("filler");
            match store.list_at("/", before, None, 1).await {
                Err(strata_store::Error::Compacted { .. }) => {}
                other => panic!("revision {before} should be beyond the store's history now: {other:?}"),
            }
        });
        self.spawn();
    }

    /// Run a Python script from tests/python with the kubeconfig; asserts it succeeds.
    pub fn python(&self, script: &str, args: &[&str]) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
        let out = Command::new("python3").arg(path).args(args).env("KUBECONFIG", self.kubeconfig()).output().expect("python3");
        assert!(out.status.success(), "{script} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A request from [`ApiServer::post_held`].
pub struct HeldRequest {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    rest: Vec<u8>,
}

impl HeldRequest {
    /// Send the rest of the body: (status, response body).
    pub fn finish(self) -> (u16, String) {
        use std::io::Write;
        let HeldRequest { child, mut stdin, rest } = self;
        let _ = stdin.write_all(&rest);
        drop(stdin);
        let out = child.wait_with_output().expect("curl output");
        let (code, body) = curl_result(&out);
        (code, format!("{body}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// (status, body) of a curl run with `-w "\n%{http_code}"`.
fn curl_result(out: &std::process::Output) -> (u16, String) {
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// curl's arguments for `auth`.
fn curl_auth(c: &mut Command, pki: &Path, auth: Auth) {
    match auth {
        Auth::Admin => {
            c.arg("--cert").arg(pki.join("admin.crt")).arg("--key").arg(pki.join("admin.key"));
        }
        Auth::Token(t) => {
            c.arg("-H").arg(format!("Authorization: Bearer {t}"));
        }
        Auth::Cert(key, crt) => {
            c.arg("--cert").arg(crt).arg("--key").arg(key);
        }
        Auth::Anonymous => {}
    }
}

#[derive(Clone, Copy)]
pub enum Auth<'a> {
    Admin,
    Token(&'a str),
    /// A client certificate: (key, certificate), e.g. from [`ApiServer::node_cert`].
    Cert(&'a Path, &'a Path),
    Anonymous,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop(true);
        // Remove whatever the agent left running (containers outlive the server by design).
        if self.opts.agent && self.root().exists() {
            // Pod sandboxes (with their containers, netns, IP leases, cgroups), then any other
            // container, then volume mounts the agent had no time to remove.
            use strata_driver::PodRuntime;
            let images = strata_driver::images::ImageStore::open(self.root().join("images")).map(std::sync::Arc::new);
            if let Ok(images) = images {
                if let Ok(driver) = strata_driver::ContainerDriver::open(&self.root(), "runc", images.clone(), env!("CARGO_BIN_EXE_strata").into()) {
                    for sb in driver.list_pod_sandboxes(&strata_driver::pod::SandboxFilter::default()).unwrap_or_default() {
                        let _ = driver.remove_pod_sandbox(&sb.id);
                    }
                }
                // VM-isolated pods (their QEMUs outlive the agent too) through their own runtime,
                // opened as the agent opened it.
                let env = |k: &str| self.opts.env.iter().find(|(n, _)| n == k).map(|(_, v)| PathBuf::from(v));
                if let (Some(kernel), Some(agent)) = (env("STRATA_VM_KERNEL"), env("STRATA_GUEST_AGENT")) {
                    let config = strata_driver::MicroVmConfig::new(kernel, agent);
                    if let Ok(vms) = strata_driver::MicroVmRuntime::open(&self.root(), images, env!("CARGO_BIN_EXE_strata").into(), config) {
                        for sb in vms.list_pod_sandboxes(&strata_driver::pod::SandboxFilter::default()).unwrap_or_default() {
                            let _ = vms.remove_pod_sandbox(&sb.id);
                        }
                    }
                }
            }
            let strata = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_strata")).arg("--root").arg(self.root()).args(args).stdin(Stdio::null()).output();
            // VMs (launcher pods' QEMUs outlive the agent too), with their taps and leases.
            if let Ok(out) = strata(&["vm", "list", "-o", "json"]) {
                let vms: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                for id in vms.as_array().into_iter().flatten().filter_map(|v| v["id"].as_str()) {
                    let _ = strata(&["vm", "rm", "-f", id]);
                }
            }
            if let Ok(out) = strata(&["ps", "-aq", "--no-trunc"]) {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = strata(&["rm", "-f", id]);
                }
            }
            let prefix = format!("{}/", self.dir.path().display());
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let mut points: Vec<&str> = mounts.lines().filter_map(|l| l.split_whitespace().nth(4)).filter(|m| m.starts_with(&prefix)).collect();
            points.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in points {
                let _ = Command::new("umount").args(["-l", m]).status();
            }
        }
    }
}

/// Run a test body once per store backend, as two separate tests.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn embedded() {
                    super::$name($crate::common::server::Backend::Embedded)
                }
                #[test]
                fn etcd() {
                    super::$name($crate::common::server::Backend::Etcd)
                }
            }
        )*
    };
}

/// The installed kubectl of minor version `v` ("1.27" ... "1.33"): the machine's `kubectl` is a
/// dispatcher that picks one by the server's version; these are the binaries beside it.
pub fn kubectl_of(v: &str) -> String {
    let dispatcher = std::fs::canonicalize(which("kubectl")).unwrap_or_else(|e| panic!("kubectl: {e}"));
    let bin = dispatcher.with_file_name(format!("kubectl.{v}"));
    assert!(bin.exists(), "{} is not installed", bin.display());
    bin.to_string_lossy().into_owned()
}

fn which(cmd: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(cmd)).find(|p| p.exists()))
        .unwrap_or_else(|| panic!("{cmd} is not on PATH"))
}
