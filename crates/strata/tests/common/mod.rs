//! Shared end-to-end fixture: a real `docker-registry` holding a busybox image built from the
//! host's static busybox, a private strata root, and helpers to run the real `strata` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use strata_testkit::{busybox_image, Registry};

/// A child process killed (and reaped) when the test lets go of it, pass or fail.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Env {
    pub registry: Registry,
    pub root: tempfile::TempDir,
    /// `127.0.0.1:PORT/busybox:latest`
    pub image: String,
}

impl Env {
    pub fn new() -> Env {
        let registry = Registry::start();
        registry.push(&busybox_image(), "busybox", "latest");
        let image = format!("{}/busybox:latest", registry.addr);
        // Not /tmp: the overlay upper dir must be on a filesystem overlayfs accepts.
        let root = tempfile::Builder::new().prefix("strata-e2e-").tempdir_in("/var/tmp").expect("root tempdir");
        Env { registry, root, image }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
        c.arg("--root").arg(self.root.path()).stdin(Stdio::null());
        c
    }

    /// Run `strata ARGS` and return its output whatever the exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run strata")
    }

    /// Run `strata ARGS`, assert success, return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "strata {args:?} failed with {}: stdout={} stderr={}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `strata ARGS`, assert failure, return (exit code, stderr).
    pub fn fail(&self, args: &[&str]) -> (i32, String) {
        let out = self.run(args);
        assert!(!out.status.success(), "strata {args:?} unexpectedly succeeded: {}", String::from_utf8_lossy(&out.stdout));
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// The container's state from `strata inspect`.
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.ok(&["inspect", name]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect json");
        v[0].clone()
    }

    pub fn container_dirs(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.root().join("containers")) {
            Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
            Err(_) => vec![],
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Remove whatever a failed test left running.
        if let Ok(out) = self.cmd().args(["ps", "-aq", "--no-trunc"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.cmd().args(["rm", "-f", id]).output();
            }
        }
    }
}

/// Poll `f` until it is true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

pub fn free_port() -> u16 {
    strata_testkit::free_port()
}

/// The local port of `kubectl port-forward`'s first line, `Forwarding from 127.0.0.1:PORT ->
/// REMOTE`. Tests let kubectl pick the port (`:REMOTE`): one chosen by the test could be taken
/// by someone else before kubectl binds it, and kubectl would then listen on [::1] only.
pub fn forwarded_from(line: &str) -> Option<u16> {
    let addr = line.strip_prefix("Forwarding from 127.0.0.1:")?;
    addr.split_whitespace().next()?.parse().ok()
}

/// Every trace a container with this id could leave on the host.
pub fn host_traces(root: &Path, id: &str) -> Vec<String> {
    let mut found = Vec::new();
    // Removed workloads' files are deleted in the background (`<root>/trash`): give that a
    // moment, then count whatever is still there as a trace.
    let trash = root.join("trash");
    let trash_entries = || std::fs::read_dir(&trash).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_else(|_| Vec::new());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !trash_entries().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for e in trash_entries() {
        found.push(format!("trash: {}", e.display()));
    }
    // The remover may still be exiting once its directory is gone.
    let trash_prefix = format!("rm\0-rf\0--\0{}", trash.display());
    let removers = || {
        std::fs::read_dir("/proc").into_iter().flatten().flatten().any(|p| {
            std::fs::read_to_string(p.path().join("cmdline")).is_ok_and(|c| c.starts_with(&trash_prefix) && c.contains(id))
        })
    };
    while removers() && std::time::Instant::now() < deadline + std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for l in mounts.lines() {
        if l.contains(id) || l.contains(&root.display().to_string()) {
            found.push(format!("mount: {l}"));
        }
    }
    for dir in strata_cgroup_dirs(id) {
        if dir.exists() {
            found.push(format!("cgroup: {}", dir.display()));
        }
    }
    let netns = Path::new("/run/strata/netns").join(id);
    if netns.exists() {
        found.push(format!("netns: {}", netns.display()));
    }
    if root.join("containers").join(id).exists() {
        found.push(format!("dir: containers/{id}"));
    }
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read_to_string(p.path().join("cmdline")) {
            if cmd.contains(id) {
                found.push(format!("process {}: {}", p.file_name().to_string_lossy(), cmd.replace('\0', " ")));
            }
        }
    }
    found
}

fn strata_cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/sys/fs/cgroup/strata").join(id)];
    for c in ["memory", "cpu", "cpuacct", "pids", "devices", "freezer", "blkio", "cpuset", "systemd", "unified"] {
        v.push(Path::new("/sys/fs/cgroup").join(c).join("strata").join(id));
    }
    v
}

/// What `scripts/NAME` prints (a path), the script run from the repository's root.
pub fn script(name: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash").arg(repo.join("scripts").join(name)).stderr(Stdio::inherit()).output().expect("run script");
    assert!(out.status.success(), "scripts/{name} failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A stock upstream component (k8s.io/kubernetes v1.32.0 `cmd/COMPONENT`: `kube-scheduler`,
/// `kube-controller-manager`), from `$ENV_VAR` or built from the Go module proxy by
/// scripts/kube-peer.sh (cached); `None`, said on stderr, when neither `go` nor the variable is
/// here (the check is then left out, never faked).
pub fn stock_component(component: &str, env_var: &str) -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os(env_var) {
        return Some(PathBuf::from(bin));
    }
    if Command::new("go").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        eprintln!("no go here and no {env_var}: the stock {component} cannot be built on this machine");
        return None;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash").arg(repo.join("scripts/kube-peer.sh")).arg(component).stderr(Stdio::piped()).output().expect("run scripts/kube-peer.sh");
    assert!(out.status.success(), "scripts/kube-peer.sh {component} failed: {}", String::from_utf8_lossy(&out.stderr));
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The guest kernel tree and the static guest agent of VM-isolated pods: `scripts/guest-kernel.sh`,
/// and `STRATA_GUEST_AGENT` (scripts/test.sh builds it once) or else `scripts/guest-agent.sh`.
pub fn vm_guest() -> (PathBuf, PathBuf) {
    let kernel = script("guest-kernel.sh");
    let agent = std::env::var_os("STRATA_GUEST_AGENT").map(PathBuf::from).unwrap_or_else(|| script("guest-agent.sh"));
    (kernel, agent)
}

/// A key and a CSR (PEM) for `cn` in `orgs`, made with openssl.
pub fn openssl_csr(dir: &Path, name: &str, cn: &str, orgs: &[&str]) -> (PathBuf, String) {
    let key = dir.join(format!("{name}.key"));
    let subj: String = orgs.iter().map(|o| format!("/O={o}")).collect::<String>() + &format!("/CN={cn}");
    let out = Command::new("openssl")
        .args(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout"])
        .arg(&key)
        .args(["-subj", &subj])
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", text(&out.stderr));
    (key, text(&out.stdout))
}

pub mod server;
pub mod simnode;
pub mod tls;

/// Spawn `cmd` (e.g. `kubectl attach -i POD -c C`) and write `input` to its stdin every 2 s until
/// a line of its stdout equals `want` (at most 60 s: an attach session may take a moment to be
/// up), then kill it: whether `want` came back, and the output (stderr for the failure message).
pub fn echoes(mut cmd: std::process::Command, input: &[u8], want: &str) -> (bool, std::process::Output) {
    use std::io::{BufRead, Write};
    use std::process::Stdio;
    let mut c = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut stdin = c.stdin.take().expect("stdin");
    let stdout = c.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = false;
    while !seen && Instant::now() < deadline {
        let _ = stdin.write_all(input).and_then(|_| stdin.flush());
        while let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
            if l == want {
                seen = true;
                break;
            }
        }
    }
    let _ = c.kill();
    (seen, wait_bounded(c, Duration::from_secs(30)))
}

/// Bytes (a command's output) as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Wait for a child at most `limit` (then kill it and fail). Its stdout and stderr are read
/// meanwhile: a child writing more than a pipe holds (`kubectl get pods -o json` of many pods)
/// would otherwise block on the write and never exit.
pub fn wait_bounded(mut c: std::process::Child, limit: Duration) -> std::process::Output {
    use std::io::Read;
    let drain = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(c.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(c.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + limit;
    let (status, timed_out) = loop {
        if let Some(status) = c.try_wait().expect("wait") {
            break (status, false);
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            break (c.wait().expect("wait"), true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::process::Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() };
    if timed_out {
        panic!("timed out: {}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    }
    output
}

/// Compile a C program statically (gcc and libc6-dev: scripts/test.sh installs them) in `dir`;
/// the binary's bytes.
pub fn compile_c(dir: &Path, name: &str, source: &str) -> Vec<u8> {
    let src = dir.join(format!("{name}.c"));
    let bin = dir.join(name);
    std::fs::write(&src, source).expect("write source");
    let out = Command::new("gcc").args(["-static", "-O1", "-pthread", "-o"]).arg(&bin).arg(&src).output().expect("run gcc");
    assert!(out.status.success(), "gcc failed: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(&bin).expect("read binary")
}

/// A program that prints its effective uid (`euid=N`): installed setuid root, it shows whether
/// the setuid bit took effect.
pub const EUID_C: &str = r#"
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("euid=%d\n", (int)geteuid()); return 0; }
"#;
