//! The pod-shaped driver interface (`strata_driver::PodRuntime`) against real runc, real CNI
//! plugins and a real registry: sandboxes, the containers in them, exec, logs, re-adoption and
//! leaks. Run as root (CI does).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, host_traces, Env};
use strata_driver::images::ImageStore;
use strata_driver::pod::{
    ContainerConfig, ContainerFilter, ContainerMetadata, ContainerState, ContainerStatus, Mount, MountSource, PodSandboxConfig,
    PodSandboxMetadata, SandboxFilter, SandboxState,
};
use strata_driver::{ContainerDriver, Error, LogOptions, PodRuntime};

/// A strata root with the test image pulled, and a driver over it. Dropping it removes every
/// sandbox left behind by a failed test.
struct Pods {
    rt: ContainerDriver,
    env: Env,
}

impl Pods {
    fn new() -> Pods {
        let env = Env::new();
        env.ok(&["pull", &env.image]);
        let rt = open_driver(env.root());
        Pods { rt, env }
    }

    fn sandbox(&self, name: &str) -> String {
        self.rt.run_pod_sandbox(&sandbox_config(name)).expect("run sandbox")
    }

    fn container(&self, name: &str, attempt: u32, args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: ContainerMetadata { name: name.into(), attempt },
            image: self.env.image.clone(),
            command: vec![],
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// Create and start a container in `sandbox`.
    fn run(&self, sandbox: &str, config: &ContainerConfig) -> String {
        let id = self.rt.create_container(sandbox, config).expect("create container");
        self.rt.start_container(&id).expect("start container");
        id
    }

    fn wait_state(&self, id: &str, state: ContainerState) -> ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.rt.container_status(id).expect("status");
            if s.state == state {
                return s;
            }
            assert!(Instant::now() < deadline, "container {id} never became {state:?}: {s:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn exec(&self, id: &str, cmd: &[&str]) -> String {
        let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        let r = self.rt.exec_sync(id, &cmd, Some(Duration::from_secs(30))).expect("exec_sync");
        assert_eq!(r.exit_code, 0, "{cmd:?}: stdout={} stderr={}", String::from_utf8_lossy(&r.stdout), String::from_utf8_lossy(&r.stderr));
        String::from_utf8_lossy(&r.stdout).into_owned()
    }

    fn log_lines(&self, id: &str, opts: &LogOptions) -> Vec<String> {
        let mut out = Vec::new();
        self.rt
            .container_logs(id, opts, &mut |r| {
                out.push(String::from_utf8_lossy(&r.content).into_owned());
                true
            })
            .expect("logs");
        out
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        if let Ok(all) = self.rt.list_pod_sandboxes(&SandboxFilter::default()) {
            for s in all {
                let _ = self.rt.remove_pod_sandbox(&s.id);
            }
        }
    }
}

fn open_driver(root: &Path) -> ContainerDriver {
    // The unpack reserve is not under test here: 1 GiB instead of 5% of a shared disk that
    // seven parallel builds fill.
    let limits = strata_driver::images::UnpackLimits { reserve: strata_driver::images::Reserve::Bytes(1 << 30), ..Default::default() };
    let images = Arc::new(ImageStore::open(root.join("images")).expect("image store").with_limits(limits));
    ContainerDriver::open(root, "runc", images, PathBuf::from(env!("CARGO_BIN_EXE_strata"))).expect("open driver")
}

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn sandbox_config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: PodSandboxMetadata { name: name.into(), namespace: "team-a".into(), uid: unique("uid"), attempt: 0 },
        labels: BTreeMap::from([("app".to_string(), name.to_string())]),
        ..Default::default()
    }
}

/// Everything a sandbox (and the containers that were in it) could leave on the host.
fn pod_traces(root: &Path, sandbox: &str, containers: &[String]) -> Vec<String> {
    let mut found: Vec<String> = containers.iter().flat_map(|c| host_traces(root, c)).collect();
    found.extend(host_traces(root, sandbox).into_iter().filter(|t| !t.starts_with("dir: containers")));
    for p in [
        Path::new("/run/strata/netns").join(sandbox),
        Path::new("/run/strata/ns").join(format!("{sandbox}.ipc")),
        Path::new("/run/strata/ns").join(format!("{sandbox}.uts")),
        root.join("sandboxes").join(sandbox),
    ] {
        if p.exists() {
            found.push(format!("path: {}", p.display()));
        }
    }
    for e in std::fs::read_dir("/run/strata/ipam/strata").into_iter().flatten().flatten() {
        if std::fs::read_to_string(e.path()).is_ok_and(|owner| owner.lines().next() == Some(sandbox)) {
            found.push(format!("lease: {}", e.path().display()));
        }
    }
    for c in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        for q in ["guaranteed", "burstable", "besteffort"] {
            let d = c.path().join("strata-pods").join(q).join(format!("pod{sandbox}"));
            if d.exists() {
                found.push(format!("cgroup: {}", d.display()));
            }
        }
    }
    for e in std::fs::read_dir(root.join("sandbox-names")).into_iter().flatten().flatten() {
        if std::fs::read_to_string(e.path()).is_ok_and(|owner| owner == sandbox) {
            found.push(format!("name: {}", e.path().display()));
        }
    }
    found
}

#[test]
fn containers_of_a_pod_share_its_network_ipc_hostname_and_volumes() {
    let pods = Pods::new();
    let sb = pods.sandbox("web-0");
    let status = pods.rt.pod_sandbox_status(&sb).expect("status");
    assert_eq!(status.state, SandboxState::Ready);
    let ip = status.ip.expect("the pod has an IP");
    assert_eq!(status.hostname, "web-0");

    // An emptyDir-like directory shared by both containers.
    let vol = pods.env.root().join("volumes/www");
    std::fs::create_dir_all(&vol).expect("volume");
    let www = Mount { container_path: "/www".into(), source: MountSource::Bind { host_path: vol.clone(), propagation: Default::default() }, readonly: false };
    let mut server = pods.container("server", 0, &["httpd", "-f", "-p", "8080", "-h", "/www"]);
    server.mounts = vec![Mount { readonly: true, ..www.clone() }];
    let mut writer = pods.container("writer", 0, &["sh", "-c", "echo shared-content > /www/index.html; exec sleep 1000"]);
    writer.mounts = vec![www];
    let server = pods.run(&sb, &server);
    let writer = pods.run(&sb, &writer);
    pods.wait_state(&server, ContainerState::Running);
    assert!(eventually(Duration::from_secs(10), || std::fs::read_to_string(vol.join("index.html")).is_ok_and(|s| s == "shared-content\n")));

    // Over localhost, from the other container.
    let got = pods.exec(&writer, &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.html"]);
    assert_eq!(got, "shared-content\n");
    // The server's mount is read-only.
    let r = pods.rt.exec_sync(&server, &["sh".into(), "-c".into(), "echo x > /www/other".into()], Some(Duration::from_secs(30))).expect("exec");
    assert_ne!(r.exit_code, 0, "a read-only mount refuses writes");
    // The pod IP answers from the node.
    let mut body = String::new();
    assert!(eventually(Duration::from_secs(10), || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&(ip, 8080).into(), Duration::from_secs(2)) else { return false };
        let _ = s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n");
        body.clear();
        s.read_to_string(&mut body).is_ok() && body.contains("shared-content")
    }), "{body}");
    // One hostname, one IPC namespace, the pod's /etc/hosts naming the pod IP.
    for c in [&server, &writer] {
        assert_eq!(pods.exec(c, &["hostname"]).trim(), "web-0");
        assert!(pods.exec(c, &["cat", "/etc/hosts"]).contains(&format!("{ip}\tweb-0")));
    }
    assert_eq!(pods.exec(&server, &["readlink", "/proc/self/ns/ipc"]), pods.exec(&writer, &["readlink", "/proc/self/ns/ipc"]));
    assert_eq!(pods.exec(&server, &["readlink", "/proc/self/ns/net"]), pods.exec(&writer, &["readlink", "/proc/self/ns/net"]));

    // Status and list as CRI has them; the pod's labels are on its containers.
    let s = pods.rt.container_status(&server).expect("status");
    assert_eq!((s.state, s.sandbox_id.as_str(), s.metadata.name.as_str()), (ContainerState::Running, sb.as_str(), "server"));
    assert!(s.pid.is_some() && s.started_at.is_some() && s.exit_code.is_none());
    assert!(s.image_ref.starts_with("sha256:"), "{}", s.image_ref);
    assert_eq!(s.labels.get("io.kubernetes.pod.name").map(String::as_str), Some("web-0"));
    assert_eq!(s.labels.get("io.kubernetes.pod.namespace").map(String::as_str), Some("team-a"));
    let listed = pods.rt.list_containers(&ContainerFilter { sandbox_id: Some(sb.clone()), ..Default::default() }).expect("list");
    assert_eq!(listed.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), [server.clone(), writer.clone()], "oldest first");
    let by_label = pods.rt.list_pod_sandboxes(&SandboxFilter { labels: BTreeMap::from([("app".into(), "web-0".into())]), ..Default::default() });
    assert_eq!(by_label.expect("list").len(), 1);

    // `strata ps` shows the pod and its namespace.
    let ps = pods.env.ok(&["ps"]);
    assert!(ps.lines().next().is_some_and(|h| h.contains("POD") && h.contains("NAMESPACE")), "{ps}");
    assert!(ps.lines().any(|l| l.starts_with(&server[..12]) && l.contains("web-0") && l.contains("team-a")), "{ps}");
}

#[test]
fn a_restarted_container_keeps_the_pod_ip_and_each_attempt_its_log() {
    let pods = Pods::new();
    let sb = pods.sandbox("restarts");
    let ip = pods.rt.pod_sandbox_status(&sb).expect("status").ip.expect("ip");
    let first = pods.run(&sb, &pods.container("app", 0, &["sh", "-c", "echo attempt-0; exit 3"]));
    let s = pods.wait_state(&first, ContainerState::Exited);
    assert_eq!((s.exit_code, s.reason.as_deref()), (Some(3), Some("Error")), "{s:?}");
    assert!(s.finished_at.is_some());
    let e = pods.rt.start_container(&first).expect_err("an exited pod container is not started again");
    assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");

    let second = pods.run(&sb, &pods.container("app", 1, &["sh", "-c", "echo attempt-1; exec sleep 1000"]));
    pods.wait_state(&second, ContainerState::Running);
    assert!(pods.exec(&second, &["ip", "-4", "addr", "show", "eth0"]).contains(&format!("inet {ip}/")));
    assert_eq!(pods.rt.pod_sandbox_status(&sb).expect("status").ip, Some(ip));
    // Attempt 0's log is still there while attempt 1 runs (`kubectl logs --previous`).
    let (s0, s1) = (pods.rt.container_status(&first).expect("s0"), pods.rt.container_status(&second).expect("s1"));
    assert_ne!(s0.log_path, s1.log_path);
    assert!(s0.log_path.ends_with("app/0.log") && s1.log_path.ends_with("app/1.log"), "{s0:?} {s1:?}");
    assert_eq!(pods.log_lines(&first, &LogOptions::default()), ["attempt-0"]);
    assert!(eventually(Duration::from_secs(10), || pods.log_lines(&second, &LogOptions::default()) == ["attempt-1"]));
    // The same name and attempt twice in one sandbox is refused.
    let e = pods.rt.create_container(&sb, &pods.container("app", 1, &["true"])).expect_err("duplicate attempt");
    assert!(matches!(e, Error::AlreadyExists(_)), "{e}");

    // A container stopped on its own leaves the pod ready; removing it removes its log.
    pods.rt.stop_container(&second, Duration::from_secs(1)).expect("stop");
    let s = pods.rt.container_status(&second).expect("status");
    assert_eq!((s.state, s.exit_code), (ContainerState::Exited, Some(137)));
    pods.rt.remove_container(&first).expect("remove");
    assert!(!s0.log_path.exists());
    assert!(matches!(pods.rt.container_status(&first), Err(Error::NotFound(_))));
    pods.rt.remove_container(&first).expect("removing twice is fine");
    assert_eq!(pods.rt.pod_sandbox_status(&sb).expect("status").state, SandboxState::Ready);
}

#[test]
fn exec_sync_gives_output_and_exit_code_and_honours_its_timeout() {
    let pods = Pods::new();
    let sb = pods.sandbox("probes");
    let c = pods.run(&sb, &pods.container("app", 0, &["sleep", "1000"]));
    pods.wait_state(&c, ContainerState::Running);
    let cmd = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let r = pods.rt.exec_sync(&c, &cmd(&["sh", "-c", "echo out; echo err >&2; exit 7"]), Some(Duration::from_secs(30))).expect("exec");
    assert_eq!((r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code), (&b"out\n"[..], &b"err\n"[..], 7));

    let t = Instant::now();
    let e = pods.rt.exec_sync(&c, &cmd(&["sh", "-c", "echo before; exec sleep 60"]), Some(Duration::from_secs(1))).expect_err("timeout");
    assert!(matches!(e, Error::Timeout(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(15), "took {:?}", t.elapsed());
    // The timed-out command was killed, not left running in the container.
    assert!(eventually(Duration::from_secs(10), || !pods.exec(&c, &["ps", "-o", "args"]).contains("sleep 60")));

    let e = pods.rt.exec_sync(&c, &cmd(&["/no/such/binary"]), Some(Duration::from_secs(30)));
    assert!(e.is_err() || e.as_ref().is_ok_and(|r| r.exit_code != 0), "{e:?}");
    pods.rt.stop_container(&c, Duration::from_secs(1)).expect("stop");
    let e = pods.rt.exec_sync(&c, &cmd(&["true"]), Some(Duration::from_secs(5))).expect_err("not running");
    assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
}

#[test]
fn removing_a_sandbox_leaves_nothing_behind() {
    let pods = Pods::new();
    let sb = pods.sandbox("leaky");
    let mut a = pods.container("a", 0, &["sleep", "1000"]);
    a.mounts = vec![Mount { container_path: "/scratch".into(), source: MountSource::Tmpfs { size_bytes: Some(1 << 20) }, readonly: false }];
    let a = pods.run(&sb, &a);
    let b = pods.run(&sb, &pods.container("b", 0, &["sh", "-c", "exit 0"]));
    pods.wait_state(&a, ContainerState::Running);
    pods.wait_state(&b, ContainerState::Exited);
    assert!(pods.exec(&a, &["cat", "/proc/mounts"]).contains("/scratch tmpfs"));
    // Created but never started.
    let c = pods.rt.create_container(&sb, &pods.container("c", 0, &["true"])).expect("create");
    let ids = vec![a.clone(), b.clone(), c.clone()];
    assert!(pod_traces(pods.env.root(), &sb, &[]).iter().any(|t| t.contains("lease")), "the check sees a live sandbox's lease");

    pods.rt.stop_pod_sandbox(&sb).expect("stop");
    let st = pods.rt.pod_sandbox_status(&sb).expect("status");
    assert_eq!((st.state, st.ip), (SandboxState::NotReady, None));
    assert_eq!(pods.rt.container_status(&a).expect("a").state, ContainerState::Exited);
    let e = pods.rt.create_container(&sb, &pods.container("d", 0, &["true"])).expect_err("stopped sandbox");
    assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
    pods.rt.stop_pod_sandbox(&sb).expect("stopping twice is fine");

    pods.rt.remove_pod_sandbox(&sb).expect("remove");
    let traces = pod_traces(pods.env.root(), &sb, &ids);
    assert!(traces.is_empty(), "left behind: {traces:#?}");
    assert!(matches!(pods.rt.pod_sandbox_status(&sb), Err(Error::NotFound(_))));
    pods.rt.remove_pod_sandbox(&sb).expect("removing twice is fine");

    // Removing a ready sandbox with a running container directly leaves nothing either.
    let sb2 = pods.sandbox("leaky2");
    let x = pods.run(&sb2, &pods.container("x", 0, &["sleep", "1000"]));
    pods.wait_state(&x, ContainerState::Running);
    pods.rt.remove_pod_sandbox(&sb2).expect("remove");
    let traces = pod_traces(pods.env.root(), &sb2, &[x]);
    assert!(traces.is_empty(), "left behind: {traces:#?}");
}

#[test]
fn a_new_driver_finds_the_same_sandboxes_and_containers() {
    let pods = Pods::new();
    let sb = pods.sandbox("survivor");
    let ip = pods.rt.pod_sandbox_status(&sb).expect("status").ip;
    let c = pods.run(&sb, &pods.container("app", 0, &["sh", "-c", "echo up; exec sleep 1000"]));
    let done = pods.run(&sb, &pods.container("job", 0, &["sh", "-c", "exit 4"]));
    let pid = pods.wait_state(&c, ContainerState::Running).pid;
    pods.wait_state(&done, ContainerState::Exited);

    // As a restarted agent would: a new driver over the same root.
    let again = open_driver(pods.env.root());
    let listed = again.list_pod_sandboxes(&SandboxFilter::default()).expect("list");
    assert_eq!(listed.iter().map(|s| (s.id.clone(), s.ip)).collect::<Vec<_>>(), [(sb.clone(), ip)]);
    let s = again.container_status(&c).expect("status");
    assert_eq!((s.state, s.pid), (ContainerState::Running, pid), "the same process, not a second one");
    let s = again.container_status(&done).expect("status");
    assert_eq!((s.state, s.exit_code), (ContainerState::Exited, Some(4)));
    let r = again.exec_sync(&c, &["hostname".to_string()], Some(Duration::from_secs(30))).expect("exec");
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "survivor");
    let mut lines = Vec::new();
    again
        .container_logs(&c, &LogOptions::default(), &mut |r| {
            lines.push(String::from_utf8_lossy(&r.content).into_owned());
            true
        })
        .expect("logs");
    assert_eq!(lines, ["up"]);
    again.remove_pod_sandbox(&sb).expect("remove through the new driver");
    assert!(pod_traces(pods.env.root(), &sb, &[c, done]).is_empty());
}

/// Read `f` until `want` shows up in what was read (or 20 s pass); returns everything read.
fn read_until(f: &mut std::fs::File, want: &str) -> String {
    use std::io::Read;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut f = f.try_clone().expect("clone");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&got).contains(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => got.extend(chunk),
            Err(_) => panic!("never read {want:?}; got {:?}", String::from_utf8_lossy(&got)),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn streaming_exec_with_pipes_and_with_a_resizable_terminal() {
    use std::io::{Read, Write};
    use strata_driver::pod::ExecSessionRequest;
    let pods = Pods::new();
    let sb = pods.sandbox("streams");
    let c = pods.run(&sb, &pods.container("app", 0, &["sleep", "1000"]));
    pods.wait_state(&c, ContainerState::Running);
    let cmd = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // Pipes: input until end of input, separate output streams, the exit code.
    let mut s = pods
        .rt
        .exec_session(&c, &ExecSessionRequest { command: cmd(&["sh", "-c", "read x; echo got:$x; echo oops >&2; exit 5"]), stdin: true, ..Default::default() })
        .expect("exec session");
    assert!(!s.tty && s.stderr.is_some());
    s.stdin.take().expect("stdin").write_all(b"hello\n").expect("write");
    let mut out = String::new();
    s.stdout.take().expect("stdout").read_to_string(&mut out).expect("read");
    let mut err = String::new();
    s.stderr.take().expect("stderr").read_to_string(&mut err).expect("read");
    assert_eq!((out.as_str(), err.as_str(), s.wait().expect("wait")), ("got:hello\n", "oops\n", 5));

    // A terminal of the asked size, resized while the process runs.
    let mut t = pods
        .rt
        .exec_session(&c, &ExecSessionRequest { command: cmd(&["sh"]), tty: true, stdin: true, size: Some((24, 80)) })
        .expect("tty session");
    assert!(t.tty && t.stderr.is_none());
    let mut input = t.stdin.take().expect("stdin");
    let mut output = t.stdout.take().expect("stdout");
    // Wait for the shell's prompt first: input typed before the shell runs is only echoed by
    // the terminal, and a `stty` racing the terminal's set-up once failed ("stty: standard
    // input") under load; then ask until the asked size shows.
    // (read_until's reader may still take one more chunk after it returns: the loop asks again.)
    read_until(&mut output, "# ");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    while !(seen.contains("IS-A-TTY") && seen.contains("24 80")) {
        assert!(Instant::now() < deadline, "the terminal never had the asked size: {seen:?}");
        input.write_all(b"[ -t 0 ] && echo IS-A-TTY; stty size\n").expect("write");
        let mut buf = [0u8; 4096];
        let n = output.read(&mut buf).expect("read");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        std::thread::sleep(Duration::from_millis(100));
    }
    t.resize(40, 100).expect("resize");
    // The runtime applies the size when its SIGWINCH arrives: ask until it shows.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        input.write_all(b"stty size\n").expect("write");
        let mut buf = [0u8; 4096];
        let n = output.read(&mut buf).expect("read");
        if String::from_utf8_lossy(&buf[..n]).contains("40 100") {
            break;
        }
        assert!(Instant::now() < deadline, "the terminal was never resized");
        std::thread::sleep(Duration::from_millis(100));
    }
    input.write_all(b"exit 3\n").expect("write");
    assert_eq!(t.wait().expect("wait"), 3);

    // A session killed from our side ends, and its process is gone from the container.
    let mut k = pods.rt.exec_session(&c, &ExecSessionRequest { command: cmd(&["sleep", "777"]), ..Default::default() }).expect("session");
    assert!(eventually(Duration::from_secs(10), || pods.exec(&c, &["ps", "-o", "args"]).contains("sleep 777")));
    k.kill();
    assert_eq!(k.wait().expect("wait"), 137);
    assert!(eventually(Duration::from_secs(10), || !pods.exec(&c, &["ps", "-o", "args"]).contains("sleep 777")));
}

#[test]
fn the_events_feed_reports_starts_exits_and_oom_kills() {
    use strata_driver::pod::{PodEvent, PodEventKind};
    let pods = Pods::new();
    let sb = pods.sandbox("events");
    let events = pods.rt.subscribe().expect("subscribe");
    let next = |id: &str, what: &dyn Fn(&PodEventKind) -> bool| -> PodEvent {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = events.recv_timeout(left).unwrap_or_else(|_| panic!("no event for {id}"));
            if e.container_id == id && what(&e.kind) {
                return e;
            }
        }
    };
    let job = pods.run(&sb, &pods.container("job", 0, &["sh", "-c", "sleep 1; exit 4"]));
    next(&job, &|k| *k == PodEventKind::Created);
    let e = next(&job, &|k| *k == PodEventKind::Started);
    assert_eq!(e.sandbox_id, sb);
    let t = Instant::now();
    let e = next(&job, &|k| matches!(k, PodEventKind::Exited(_)));
    let PodEventKind::Exited(exit) = e.kind else { unreachable!() };
    assert_eq!((exit.code, exit.oom_killed), (4, false));
    assert!(t.elapsed() < Duration::from_secs(10), "reported when it happens, not on a slow poll: {:?}", t.elapsed());

    let mut hog = pods.container("hog", 0, &["sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo ${#x}"]);
    hog.resources.memory_limit_bytes = Some(16 << 20);
    let hog = pods.run(&sb, &hog);
    let e = next(&hog, &|k| matches!(k, PodEventKind::Exited(_)));
    let PodEventKind::Exited(exit) = e.kind else { unreachable!() };
    assert!(exit.oom_killed && exit.code == 137, "{exit:?}");
    let s = pods.rt.container_status(&hog).expect("status");
    assert_eq!((s.reason.as_deref(), s.exit_code), (Some("OOMKilled"), Some(137)));

    // A container killed from outside (the host) is reported too.
    let victim = pods.run(&sb, &pods.container("victim", 0, &["sleep", "1000"]));
    let pid = pods.wait_state(&victim, ContainerState::Running).pid.expect("pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill");
    let e = next(&victim, &|k| matches!(k, PodEventKind::Exited(_)));
    assert!(matches!(&e.kind, PodEventKind::Exited(x) if x.code == 137 && x.signal == Some(9)), "{e:?}");
    pods.rt.remove_container(&victim).expect("remove");
    next(&victim, &|k| *k == PodEventKind::Removed);
}

/// The value of `key:` in a container's `/proc/self/status`.
fn proc_status(pods: &Pods, id: &str, key: &str) -> String {
    let status = pods.exec(id, &["cat", "/proc/self/status"]);
    status.lines().find_map(|l| l.strip_prefix(&format!("{key}:"))).map(|v| v.trim().to_string()).unwrap_or_default()
}

/// A cgroup v1 file of a pod container (this machine's cgroups are hybrid).
fn cgroup_file(controller: &str, cgroup: &str, file: &str) -> String {
    let p = Path::new("/sys/fs/cgroup").join(controller).join(cgroup.trim_start_matches('/')).join(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).trim().to_string()
}

#[test]
fn security_context_command_and_resources_apply() {
    use strata_driver::pod::{ContainerResources, QosClass, SeccompProfile, SecurityContext};
    let pods = Pods::new();
    let mut cfg = sandbox_config("secure");
    cfg.qos_class = QosClass::Burstable;
    cfg.memory_limit_bytes = Some(256 << 20);
    cfg.cpu_shares = Some(512);
    cfg.dns = Some(strata_driver::pod::DnsConfig { servers: vec!["10.96.0.10".into()], searches: vec!["team-a.svc.cluster.local".into()], options: vec!["ndots:5".into()] });
    cfg.host_aliases = vec![("10.1.2.3".parse().expect("ip"), vec!["db.local".into()])];
    let sb = pods.rt.run_pod_sandbox(&cfg).expect("sandbox");
    let parent = pods.rt.pod_sandbox_status(&sb).expect("status").cgroup_parent;
    assert_eq!(parent, format!("/strata-pods/burstable/pod{sb}"));

    // Command and args as Kubernetes merges them with the image; env; working directory.
    let mut app = pods.container("app", 0, &["-c", "echo $0:$GREETING:$(pwd); exec sleep 1000"]);
    app.command = vec!["sh".into()];
    app.envs = vec!["GREETING=hi".into()];
    app.working_dir = Some("/work/dir".into());
    app.security = SecurityContext {
        run_as_user: Some(1000),
        run_as_group: Some(3000),
        supplemental_groups: vec![4000],
        readonly_rootfs: true,
        capabilities_drop: vec!["ALL".into()],
        capabilities_add: vec!["NET_BIND_SERVICE".into()],
        ..Default::default()
    };
    app.mounts = vec![Mount { container_path: "/tmp".into(), source: MountSource::Tmpfs { size_bytes: None }, readonly: false }];
    app.resources = ContainerResources { cpu_shares: Some(256), cpu_quota_us: Some(50_000), memory_limit_bytes: Some(64 << 20), pids_limit: Some(64), ..Default::default() };
    app.annotations = BTreeMap::from([("note".to_string(), "kept".to_string())]);
    let app = pods.run(&sb, &app);
    pods.wait_state(&app, ContainerState::Running);
    let mut lines = Vec::new();
    assert!(eventually(Duration::from_secs(10), || {
        lines = pods.log_lines(&app, &LogOptions::default());
        !lines.is_empty()
    }));
    assert_eq!(lines, ["sh:hi:/work/dir"]);
    assert_eq!(pods.exec(&app, &["id", "-u"]).trim(), "1000");
    assert_eq!(pods.exec(&app, &["id", "-g"]).trim(), "3000");
    assert!(pods.exec(&app, &["id", "-G"]).split_whitespace().any(|g| g == "4000"));
    let r = pods.rt.exec_sync(&app, &["touch".into(), "/rootfs-file".into()], Some(Duration::from_secs(30))).expect("exec");
    assert_ne!(r.exit_code, 0, "read-only root filesystem");
    pods.exec(&app, &["touch", "/tmp/ok"]);
    // Only CAP_NET_BIND_SERVICE (bit 10) is left, and a non-root user has none effective.
    assert_eq!(proc_status(&pods, &app, "CapBnd"), "0000000000000400");
    assert_eq!(proc_status(&pods, &app, "CapEff"), "0000000000000000");
    assert_eq!(proc_status(&pods, &app, "NoNewPrivs"), "1");
    assert_eq!(proc_status(&pods, &app, "Seccomp"), "2");
    // The pod's DNS settings and host aliases.
    let resolv = pods.exec(&app, &["cat", "/etc/resolv.conf"]);
    assert_eq!(resolv, "search team-a.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n");
    assert!(pods.exec(&app, &["cat", "/etc/hosts"]).contains("10.1.2.3\tdb.local"));
    // Resources in the container's cgroup, under the pod's, which has the pod's limits.
    let cg = format!("{parent}/{app}");
    assert_eq!(cgroup_file("memory", &cg, "memory.limit_in_bytes"), (64u64 << 20).to_string());
    assert_eq!(cgroup_file("cpu", &cg, "cpu.shares"), "256");
    assert_eq!(cgroup_file("cpu", &cg, "cpu.cfs_quota_us"), "50000");
    assert_eq!(cgroup_file("pids", &cg, "pids.max"), "64");
    assert_eq!(cgroup_file("memory", &parent, "memory.limit_in_bytes"), (256u64 << 20).to_string());
    assert_eq!(cgroup_file("cpu", &parent, "cpu.shares"), "512");
    let bundle = pods.env.root().join("containers").join(&app).join("bundle/config.json");
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle).expect("config.json")).expect("json");
    assert_eq!(spec["annotations"]["note"], "kept");

    // Root with privilege escalation allowed, no seccomp filter.
    let mut loose = pods.container("loose", 0, &["sleep", "1000"]);
    loose.security.no_new_privs = Some(false);
    loose.security.seccomp = SeccompProfile::Unconfined;
    let loose = pods.run(&sb, &loose);
    pods.wait_state(&loose, ContainerState::Running);
    assert_eq!(proc_status(&pods, &loose, "NoNewPrivs"), "0");
    assert_eq!(proc_status(&pods, &loose, "Seccomp"), "0");

    // A profile from the node: everything allowed but mkdir.
    let profile = pods.env.root().join("no-mkdir.json");
    std::fs::write(&profile, r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#).expect("profile");
    let mut custom = pods.container("custom", 0, &["sleep", "1000"]);
    custom.security.seccomp = SeccompProfile::Localhost(profile);
    let custom = pods.run(&sb, &custom);
    pods.wait_state(&custom, ContainerState::Running);
    let r = pods.rt.exec_sync(&custom, &["mkdir".into(), "/tmp/d".into()], Some(Duration::from_secs(30))).expect("exec");
    assert_ne!(r.exit_code, 0, "mkdir is refused by the profile");
    pods.exec(&custom, &["touch", "/tmp/f"]);

    // Bad input: a clear error and nothing left behind.
    let before = std::fs::read_dir(pods.env.root().join("containers")).expect("ls").count();
    let mut bad = pods.container("bad", 0, &["true"]);
    bad.security.capabilities_add = vec!["NOT_A_CAP".into()];
    let e = pods.rt.create_container(&sb, &bad).expect_err("unknown capability");
    assert!(matches!(&e, Error::InvalidArgument(m) if m.contains("NOT_A_CAP")), "{e}");
    let mut bad = pods.container("bad", 0, &["true"]);
    bad.mounts = vec![Mount { container_path: "/data".into(), source: MountSource::Bind { host_path: "/no/such/dir".into(), propagation: Default::default() }, readonly: false }];
    let e = pods.rt.create_container(&sb, &bad).expect_err("missing host path");
    assert!(matches!(&e, Error::InvalidArgument(m) if m.contains("/no/such/dir")), "{e}");
    let mut bad = pods.container("bad", 0, &["true"]);
    bad.security.seccomp = SeccompProfile::Localhost(pods.env.root().join("missing.json"));
    assert!(matches!(pods.rt.create_container(&sb, &bad), Err(Error::InvalidArgument(_))));
    let mut bad = pods.container("bad", 0, &["true"]);
    bad.image = "no-such-image:latest".into();
    assert!(pods.rt.create_container(&sb, &bad).is_err());
    assert!(matches!(pods.rt.create_container("0000000000000000000000000000000000000000000000000000000000000000", &pods.container("x", 0, &["true"])), Err(Error::NotFound(_))));
    assert_eq!(std::fs::read_dir(pods.env.root().join("containers")).expect("ls").count(), before, "refused creates leave no container");
}

#[test]
fn logs_select_by_tail_since_and_bytes_and_a_follower_can_be_cancelled() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let pods = Pods::new();
    let sb = pods.sandbox("logs");
    let c = pods.run(&sb, &pods.container("app", 0, &["sh", "-c", "for i in 1 2 3 4 5; do echo line-$i; done; sleep 2; echo late >&2; exec sleep 1000"]));
    assert!(eventually(Duration::from_secs(20), || pods.log_lines(&c, &LogOptions::default()).len() == 6));
    let all = {
        let mut v = Vec::new();
        pods.rt.container_logs(&c, &LogOptions::default(), &mut |r| {
            v.push(r.clone());
            true
        }).expect("logs");
        v
    };
    assert_eq!(all.last().map(|r| r.stream), Some(strata_driver::LogStream::Stderr));
    assert!(all.iter().all(|r| chrono::DateTime::parse_from_rfc3339(&r.time).is_ok()), "every record has its time");
    assert_eq!(pods.log_lines(&c, &LogOptions { tail: Some(2), ..Default::default() }), ["line-5", "late"]);
    let late: chrono::DateTime<chrono::Utc> = all[5].time.parse().expect("time");
    let since = late - chrono::Duration::milliseconds(500);
    assert_eq!(pods.log_lines(&c, &LogOptions { since: Some(since), ..Default::default() }), ["late"]);
    let first: chrono::DateTime<chrono::Utc> = all[0].time.parse().expect("time");
    assert_eq!(pods.log_lines(&c, &LogOptions { since: Some(first), tail: Some(2), ..Default::default() }), ["line-5", "late"]);
    // 7 bytes for "line-1\n", then the next record is cut.
    assert_eq!(pods.log_lines(&c, &LogOptions { limit_bytes: Some(10), ..Default::default() }), ["line-1", "lin"]);

    // A follower of a silent container ends when its client goes away.
    let cancel = Arc::new(AtomicBool::new(false));
    let rt = open_driver(pods.env.root());
    let (id, flag) = (c.clone(), cancel.clone());
    let follower = std::thread::spawn(move || {
        let mut n = 0;
        rt.container_logs(&id, &LogOptions { follow: true, cancel: Some(flag), ..Default::default() }, &mut |_| {
            n += 1;
            true
        }).map(|()| n)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(!follower.is_finished(), "follows while the container runs");
    let t = Instant::now();
    cancel.store(true, Ordering::Relaxed);
    while !follower.is_finished() {
        assert!(t.elapsed() < Duration::from_secs(5), "the follower did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(follower.join().expect("join").expect("logs"), 6);
}

#[test]
fn host_ports_reach_the_pod_and_a_taken_port_is_refused_cleanly() {
    use strata_driver::pod::{HostPortMapping, PortProtocol};
    let pods = Pods::new();
    let port = common::free_port();
    let mut cfg = sandbox_config("ported");
    let local = Some("127.0.0.1".parse().expect("ip"));
    // TCP and UDP on the same host port number are two mappings, no conflict.
    cfg.port_mappings = vec![
        HostPortMapping { container_port: 8080, host_port: port, host_ip: local, protocol: PortProtocol::Tcp },
        HostPortMapping { container_port: 8081, host_port: port, host_ip: local, protocol: PortProtocol::Udp },
    ];
    let sb = pods.rt.run_pod_sandbox(&cfg).expect("sandbox");
    let web = pods.run(&sb, &pods.container("web", 0, &["httpd", "-f", "-p", "8080", "-h", "/var/www"]));
    pods.wait_state(&web, ContainerState::Running);
    let mut body = String::new();
    assert!(eventually(Duration::from_secs(10), || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
        let _ = s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n");
        body.clear();
        s.read_to_string(&mut body).is_ok() && body.contains("hello from strata")
    }), "{body}");
    // UDP: datagrams relayed to the pod and its replies back (an echo server in the pod's
    // network namespace, the one this test's sandbox made).
    let mut echo = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/strata/netns/{sb}"))
        .args(["python3", "-c", "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',8081))\nwhile True:\n d,a=s.recvfrom(2048)\n s.sendto(b'echo:'+d,a)\n"])
        .spawn()
        .expect("nsenter");
    let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("client");
    client.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    let mut reply = String::new();
    let relayed = eventually(Duration::from_secs(10), || {
        let mut buf = [0u8; 64];
        let _ = client.send_to(b"ping", ("127.0.0.1", port));
        match client.recv_from(&mut buf) {
            Ok((n, _)) => {
                reply = String::from_utf8_lossy(&buf[..n]).to_string();
                true
            }
            Err(_) => false,
        }
    });
    let _ = echo.kill();
    let _ = echo.wait();
    assert!(relayed && reply == "echo:ping", "the UDP host port did not reach the pod: {reply:?}");
    assert_eq!(pods.rt.pod_sandbox_status(&sb).expect("status").port_mappings, cfg.port_mappings);
    let ps = pods.env.ok(&["ps"]);
    assert!(ps.lines().any(|l| l.starts_with(&web[..12]) && l.contains(&format!("127.0.0.1:{port}->8080/tcp"))), "{ps}");

    // The same host port for another pod: refused, and nothing of that sandbox is left.
    let mut other = sandbox_config("ported-2");
    other.port_mappings = cfg.port_mappings.clone();
    let e = pods.rt.run_pod_sandbox(&other).expect_err("port in use");
    assert!(e.to_string().contains(&port.to_string()), "{e}");
    assert_eq!(pods.rt.list_pod_sandboxes(&SandboxFilter::default()).expect("list").len(), 1);
    assert_eq!(std::fs::read_dir(pods.env.root().join("sandboxes")).expect("ls").count(), 1);
    assert_eq!(std::fs::read_dir(pods.env.root().join("sandbox-names")).expect("ls").count(), 1);

    // Stopping the sandbox frees its port.
    pods.rt.stop_pod_sandbox(&sb).expect("stop");
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free again");
    std::net::UdpSocket::bind(("127.0.0.1", port)).expect("the UDP port is free again");
    pods.rt.remove_pod_sandbox(&sb).expect("remove");
    let traces = pod_traces(pods.env.root(), &sb, &[web]);
    assert!(traces.is_empty(), "left behind: {traces:#?}");
}

#[test]
fn a_shared_pid_namespace_shows_every_container_process() {
    use strata_driver::pod::{NamespaceMode, PodNamespaces};
    let pods = Pods::new();
    let mut cfg = sandbox_config("shared-pids");
    cfg.namespaces = PodNamespaces { pid: NamespaceMode::Pod, ..Default::default() };
    let sb = pods.rt.run_pod_sandbox(&cfg).expect("sandbox");
    let a = pods.run(&sb, &pods.container("a", 0, &["sleep", "4242"]));
    let b = pods.run(&sb, &pods.container("b", 0, &["sleep", "1000"]));
    pods.wait_state(&a, ContainerState::Running);
    pods.wait_state(&b, ContainerState::Running);
    let ps = pods.exec(&b, &["ps", "-o", "pid,args"]);
    assert!(ps.contains("sleep 4242"), "b sees a's process: {ps}");
    // Neither container is pid 1: the pod's init is.
    assert!(!ps.lines().any(|l| l.split_whitespace().next() == Some("1") && l.contains("sleep")), "{ps}");
    assert_eq!(pods.exec(&a, &["readlink", "/proc/self/ns/pid"]), pods.exec(&b, &["readlink", "/proc/self/ns/pid"]));
    // Without sharing, a container sees only its own.
    let sb2 = pods.sandbox("own-pids");
    let c = pods.run(&sb2, &pods.container("c", 0, &["sleep", "1000"]));
    pods.wait_state(&c, ContainerState::Running);
    assert!(!pods.exec(&c, &["ps", "-o", "args"]).contains("sleep 4242"));

    // A new driver finds the pod's PID namespace: containers created later join it.
    let again = open_driver(pods.env.root());
    let late = again.create_container(&sb, &pods.container("late", 0, &["sleep", "1000"])).expect("create");
    again.start_container(&late).expect("start");
    pods.wait_state(&late, ContainerState::Running);
    assert!(pods.exec(&late, &["ps", "-o", "args"]).contains("sleep 4242"));

    // (Every mount under the root counts as a trace: the other pod goes first.)
    pods.rt.remove_pod_sandbox(&sb2).expect("remove");
    pods.rt.remove_pod_sandbox(&sb).expect("remove");
    let mut traces = pod_traces(pods.env.root(), &sb, &[a, b, late]);
    traces.extend(pod_traces(pods.env.root(), &sb2, &[c]));
    assert!(traces.is_empty(), "left behind: {traces:#?}");
}
