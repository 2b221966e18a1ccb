//! VM-isolated pods end to end (`runtimeClassName: strata-vm`): `strata server` with a guest
//! kernel, kubectl, a real registry, QEMU on TCG. The agent only picks the runtime from the
//! pod's RuntimeClass; everything else is the same path as container pods.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{eventually, text, wait_bounded};
use common::server::{ApiServer, Backend, Options};
use serde_json::Value;
use strata_apiserver::runtimeclass::VM_CLASS_OVERHEAD_MEMORY;
use strata_testkit::{busybox_image, Registry};

fn pod(server: &ApiServer, name: &str) -> Value {
    let out = server.kubectl(&["get", "pod", name, "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn container<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["status"]["containerStatuses"].as_array().and_then(|cs| cs.iter().find(|c| c["name"] == name)).unwrap_or(&Value::Null)
}

/// Command lines of the QEMUs whose command line mentions `root` (it carries the initramfs path
/// under it).
fn processes_under(root: &Path) -> Vec<String> {
    qemu_pids(root).into_iter().filter_map(|p| std::fs::read(format!("/proc/{p}/cmdline")).ok()).map(|c| String::from_utf8_lossy(&c).replace('\0', " ")).collect()
}

/// Pids of the QEMUs whose command line mentions `root`.
fn qemu_pids(root: &Path) -> Vec<i32> {
    let needle = root.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|p| Some((p.file_name().to_str()?.parse::<i32>().ok()?, std::fs::read(p.path().join("cmdline")).ok()?)))
        .filter(|(_, c)| String::from_utf8_lossy(c).contains(&needle) && String::from_utf8_lossy(c).contains("qemu"))
        .map(|(pid, _)| pid)
        .collect()
}

fn is_qemu(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains("qemu"))
}

/// QEMUs this test saw start, killed (by pid) when the test ends, so a failing test leaves none.
struct KillOnDrop(Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            if is_qemu(*pid) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// The pod sandboxes of VM-isolated pods under `root`.
fn vm_sandboxes(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("microvm/sandboxes")).into_iter().flatten().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
}

/// What a sandbox left on the host outside the test's directory: its netns pin, its IP lease.
fn sandbox_traces(id: &str) -> Vec<String> {
    let mut found = Vec::new();
    let netns = Path::new("/run/strata/netns").join(id);
    if netns.exists() {
        found.push(format!("netns {}", netns.display()));
    }
    for e in std::fs::read_dir("/run/strata/ipam/strata").into_iter().flatten().flatten() {
        if std::fs::read_to_string(e.path()).is_ok_and(|o| o.lines().next() == Some(id)) {
            found.push(format!("lease {}", e.path().display()));
        }
    }
    found
}

/// A server whose agent runs VM-isolated pods (QEMU on TCG, the test guest kernel and agent) as
/// node `node-a`, and a registry holding busybox.
struct VmCluster {
    server: ApiServer,
    _registry: Registry,
    image: String,
    /// The guest kernel's release, and the host's.
    release: String,
    host: String,
}

fn vm_cluster() -> VmCluster {
    let (kernel, agent) = common::vm_guest();
    let release = std::fs::read_dir(kernel.join("lib/modules")).expect("modules").flatten().next().expect("a release").file_name().to_string_lossy().into_owned();
    let host = nix::sys::utsname::uname().expect("uname").release().to_string_lossy().into_owned();
    assert_ne!(release, host, "the test needs a guest kernel other than the host's");
    let registry = Registry::start();
    registry.push(&busybox_image(), "busybox", "latest");
    let image = format!("{}/busybox:latest", registry.addr);
    let env = vec![
        ("STRATA_VM_ACCEL".to_string(), "tcg".to_string()),
        ("STRATA_UNPACK_RESERVE".to_string(), "512MiB".to_string()),
        ("STRATA_VM_KERNEL".to_string(), kernel.display().to_string()),
        ("STRATA_GUEST_AGENT".to_string(), agent.display().to_string()),
    ];
    let server = ApiServer::start_opts(Backend::Embedded, Options { agent: true, extra: vec!["--node-name".into(), "node-a".into()], env, ..Options::default() });
    VmCluster { server, _registry: registry, image, release, host }
}

/// A `runtimeClassName: strata-vm` pod on a node started without a guest kernel: the pod's
/// FailedCreatePodSandBox event says why and what to do; no sandbox (netns, lease, VM) is made,
/// and deleting the pod leaves nothing.
#[test]
fn a_vm_pod_on_a_node_without_a_guest_kernel_says_why_and_leaves_nothing() {
    let server = ApiServer::start_opts(Backend::Embedded, Options { agent: true, extra: vec!["--node-name".into(), "node-a".into()], ..Options::default() });
    server.ok_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata:\n  name: no-kernel\nspec:\n  nodeName: node-a\n  runtimeClassName: strata-vm\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: 127.0.0.1:9/none:latest\n    command: [sleep, '1000']\n"),
    );
    let want = "Failed to create pod sandbox: runtime handler \"strata-vm\" is not served on this node: it was started without a guest kernel (strata server|agent --vm-kernel PATH)";
    let mut events = String::new();
    let said = eventually(Duration::from_secs(120), || {
        events = server.ok(&["get", "events", "--field-selector", "involvedObject.name=no-kernel", "-o", "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message", "--no-headers"]);
        events.lines().any(|l| l.starts_with("Warning") && l.contains("FailedCreatePodSandBox") && l.contains(want))
    });
    assert!(said, "want {want:?} in the pod's events: {events}\nlog: {}", server.log());
    let p = pod(&server, "no-kernel");
    assert_eq!(p["status"]["phase"], "Pending", "{p}");
    let uid = p["metadata"]["uid"].as_str().expect("uid").to_string();

    // No sandbox of this pod in either runtime, so no netns, lease or VM.
    let sandboxes_of_pod = || {
        use strata_driver::PodRuntime;
        let images = std::sync::Arc::new(strata_driver::images::ImageStore::open(server.root().join("images")).expect("image store"));
        let driver = strata_driver::ContainerDriver::open(&server.root(), "runc", images, env!("CARGO_BIN_EXE_strata").into()).expect("driver");
        let filter = strata_driver::pod::SandboxFilter { labels: [(strata_driver::pod::labels::POD_UID.to_string(), uid.clone())].into_iter().collect(), ..Default::default() };
        driver.list_pod_sandboxes(&filter).expect("sandboxes").into_iter().map(|s| s.id).collect::<Vec<_>>()
    };
    assert_eq!(sandboxes_of_pod(), Vec::<String>::new());
    assert!(vm_sandboxes(&server.root()).is_empty(), "{:?}", vm_sandboxes(&server.root()));
    assert!(processes_under(&server.root()).is_empty(), "{:?}", processes_under(&server.root()));

    server.ok(&["delete", "pod", "no-kernel", "--wait=false"]);
    assert!(eventually(Duration::from_secs(60), || pod(&server, "no-kernel").is_null()), "the pod was not removed: {}", pod(&server, "no-kernel"));
    assert_eq!(sandboxes_of_pod(), Vec::<String>::new());
    assert!(vm_sandboxes(&server.root()).is_empty() && !server.root().join("microvm").exists(), "nothing of a microVM runtime on a node without one");
}

#[test]
fn a_strata_vm_pod_runs_in_a_microvm_with_logs_exec_and_exit_codes() {
    let VmCluster { server, _registry, image, release, .. } = vm_cluster();

    // The class is there from the start, with its measured overhead.
    let rc: Value = serde_json::from_str(&server.ok(&["get", "runtimeclass", "strata-vm", "-o", "json"])).expect("json");
    assert_eq!(rc["handler"], "strata-vm");
    assert_eq!(rc["overhead"]["podFixed"]["memory"], VM_CLASS_OVERHEAD_MEMORY);

    server.ok_stdin(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: vm-pod\nspec:\n  nodeName: node-a\n  runtimeClassName: strata-vm\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: uname\n    image: {image}\n    command: [sh, -c, 'uname -r; exit 3']\n  - name: main\n    image: {image}\n    command: [sleep, '1000']\n"
        )),
    );
    let mut last = Value::Null;
    let ok = eventually(Duration::from_secs(300), || {
        last = pod(&server, "vm-pod");
        last["status"]["phase"] == "Running" && container(&last, "uname")["state"]["terminated"]["exitCode"] == 3 && container(&last, "main")["state"]["running"].is_object()
    });
    if !ok {
        let events = server.kubectl(&["get", "events", "-o", "wide"]);
        panic!("vm-pod not Running with uname exited 3: {last:#}\nevents: {}\nlog: {}", String::from_utf8_lossy(&events.stdout), server.log());
    }
    assert_eq!(last["spec"]["overhead"]["memory"], VM_CLASS_OVERHEAD_MEMORY, "the RuntimeClass admission set the overhead");
    assert!(last["status"]["podIP"].is_string(), "{last}");

    // kubectl logs: the guest kernel's release, not the host's.
    let logs = server.ok(&["logs", "vm-pod", "-c", "uname"]);
    assert_eq!(logs.trim(), release);
    // kubectl exec: in the microVM, with the command's exit code.
    assert_eq!(server.ok(&["exec", "vm-pod", "-c", "main", "--", "uname", "-r"]).trim(), release);
    assert_eq!(server.ok(&["exec", "vm-pod", "-c", "main", "--", "cat", "/proc/1/comm"]).trim(), "sleep");
    let out = server.kubectl(&["exec", "vm-pod", "-c", "main", "--", "sh", "-c", "exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!processes_under(&server.root()).is_empty(), "no QEMU runs the pod");

    // Deleting the pod powers the microVM off and leaves nothing.
    server.ok(&["delete", "pod", "vm-pod", "--wait=false"]);
    let gone = eventually(Duration::from_secs(120), || pod(&server, "vm-pod").is_null() && processes_under(&server.root()).is_empty());
    assert!(gone, "pod or QEMU left: {:?}\nlog: {}", processes_under(&server.root()), server.log());
    let vms = server.root().join("microvm/vms");
    assert!(eventually(Duration::from_secs(30), || std::fs::read_dir(&vms).map(|d| d.count() == 0).unwrap_or(true)), "VM state left in {}", vms.display());
}

/// kubectl (the dispatcher's default) against `server`, with input, bounded in time.
fn kubectl_bounded(server: &ApiServer, args: &[&str], stdin: Option<&[u8]>) -> Output {
    server.kubectl_timed("kubectl", args, stdin, Duration::from_secs(180))
}

/// An HTTP/1.0 GET of `/` at `addr`; the body.
fn http_get(addr: std::net::SocketAddr) -> Result<String, String> {
    let mut c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| format!("connect {addr}: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    write!(c, "GET /index.html HTTP/1.0\r\n\r\n").map_err(|e| e.to_string())?;
    let mut resp = String::new();
    c.read_to_string(&mut resp).map_err(|e| format!("read {addr}: {e}"))?;
    Ok(resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or(resp))
}

/// The pod of the parity test: `web` serves `ok` on the pod's 127.0.0.1:8080 only and on every
/// address at 8081, `client` fails its liveness probe once (its first attempt leaves a marker on
/// an emptyDir and never makes the probe's file), `fail` exits 7.
fn parity_pod(name: &str, class: Option<&str>, image: &str) -> String {
    let class = class.map(|c| format!("  runtimeClassName: {c}\n")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: node-a\n{class}  terminationGracePeriodSeconds: 2\n  volumes:\n  - name: data\n    emptyDir: {{}}\n  containers:\n  - name: web\n    image: {image}\n    command: [sh, -c, 'mkdir -p /srv && echo ok > /srv/index.html && echo hello-log && busybox httpd -p 8081 -h /srv && exec busybox httpd -f -p 127.0.0.1:8080 -h /srv']\n  - name: client\n    image: {image}\n    command: [sh, -c, 'if [ -e /data/once ]; then touch /tmp/alive; else touch /data/once; fi; exec sleep 100000']\n    volumeMounts: [{{name: data, mountPath: /data}}]\n    livenessProbe: {{exec: {{command: [cat, /tmp/alive]}}, initialDelaySeconds: 1, periodSeconds: 2, failureThreshold: 2, timeoutSeconds: 20}}\n  - name: fail\n    image: {image}\n    command: [sh, -c, 'echo failing; exit 7']\n"
    )
}

/// The same behaviour, asserted the same way, for a container pod (the default runtime) and a
/// `runtimeClassName: strata-vm` pod: only `uname -r` differs (the host's release vs the guest
/// kernel's).
#[test]
fn container_and_vm_pods_behave_the_same_through_kubectl() {
    let VmCluster { server, _registry, image, release, host } = vm_cluster();
    let pods = [("par-runc", None, host.as_str()), ("par-vm", Some("strata-vm"), release.as_str())];
    for (name, class, _) in &pods {
        server.ok_stdin(&["apply", "-f", "-"], Some(&parity_pod(name, *class, &image)));
    }
    for (name, class, expected_release) in pods {
        let what = format!("{name} ({})", class.unwrap_or("default runtime"));
        let mut last = Value::Null;
        let running = eventually(Duration::from_secs(300), || {
            last = pod(&server, name);
            last["status"]["phase"] == "Running" && container(&last, "web")["state"]["running"].is_object() && container(&last, "client")["state"]["running"].is_object()
        });
        if !running {
            let events = server.kubectl(&["get", "events", "-o", "wide"]);
            panic!("{what} not Running: {last:#}\nevents: {}\nlog: {}", text(&events.stdout), server.log());
        }
        // uname -r: the host's kernel for a container, the guest's for a microVM.
        assert_eq!(server.ok(&["exec", name, "-c", "web", "--", "uname", "-r"]).trim(), expected_release, "{what}");
        // Logs.
        let logs = server.ok(&["logs", name, "-c", "web"]);
        assert!(logs.contains("hello-log"), "{what}: {logs}");
        // Exec with stdin: input reaches the command, its end is an end of file.
        let out = kubectl_bounded(&server, &["exec", "-i", name, "-c", "web", "--", "sh", "-c", "while read l; do echo got:$l; done; echo eof"], Some(b"one\ntwo\n"));
        assert!(out.status.success(), "{what}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "got:one\ngot:two\neof\n", "{what}");
        // Exec with a terminal (kubectl exec -it under script(1)): the command has one, its
        // size comes from the client (it may come just after the start), and its exit code
        // comes back.
        let cmd = format!("stty cols 99 rows 33; kubectl exec -it {name} -c web -- sh -c 'busybox tty; for i in $(seq 20); do [ \"$(stty size)\" = \"33 99\" ] && break; sleep 0.5; done; stty size; exit 5'");
        let c = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("KUBECONFIG", server.kubeconfig())
            .env("HOME", server.data_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script");
        let out = wait_bounded(c, Duration::from_secs(180));
        assert!(text(&out.stdout).contains("/dev/pts/"), "{what}: {}{}", text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stdout).contains("33 99"), "{what}: the terminal size: {}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(5), "{what}: {}", text(&out.stdout));
        // Exec's exit code.
        let out = kubectl_bounded(&server, &["exec", name, "-c", "web", "--", "sh", "-c", "exit 4"], None);
        assert_eq!(out.status.code(), Some(4), "{what}: {}", text(&out.stderr));
        // A container's non-zero exit code in the pod's status.
        let exited_7 = eventually(Duration::from_secs(120), || {
            last = pod(&server, name);
            let c = container(&last, "fail");
            c["state"]["terminated"]["exitCode"] == 7 || c["lastState"]["terminated"]["exitCode"] == 7
        });
        assert!(exited_7, "{what}: no exit code 7 for container fail: {last:#}");
        // Its log (a restarted attempt that has not yet printed has an empty one: ask again).
        let mut logs = String::new();
        let logged = eventually(Duration::from_secs(60), || {
            logs = text(&server.kubectl(&["logs", name, "-c", "fail"]).stdout);
            logs.trim() == "failing"
        });
        assert!(logged, "{what}: logs of container fail: {logs:?}");
        // The liveness probe restarts `client` once.
        let restarted = eventually(Duration::from_secs(180), || {
            last = pod(&server, name);
            let c = container(&last, "client");
            c["restartCount"].as_i64().unwrap_or(0) >= 1 && c["state"]["running"].is_object() && c["ready"] == true
        });
        assert!(restarted, "{what}: client not restarted by its liveness probe: {last:#}");
        // Two containers over localhost: client reaches web's 127.0.0.1:8080.
        let out = kubectl_bounded(&server, &["exec", name, "-c", "client", "--", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.html"], None);
        assert_eq!(text(&out.stdout), "ok\n", "{what}: {}", text(&out.stderr));
        // The pod IP answers from the node.
        let ip: std::net::IpAddr = last["status"]["podIP"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{what}: no podIP: {last:#}"));
        let mut got = Err(String::new());
        assert!(eventually(Duration::from_secs(60), || {
            got = http_get((ip, 8081).into());
            got.as_deref() == Ok("ok\n")
        }), "{what}: GET {ip}:8081 from the node: {got:?}");
        // kubectl port-forward reaches the server that listens on the pod's 127.0.0.1 only.
        let mut pf = Command::new("kubectl")
            .args(["port-forward", &format!("pod/{name}"), ":8080"])
            .env("KUBECONFIG", server.kubeconfig())
            .env("HOME", server.data_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("port-forward");
        let mut lines = BufReader::new(pf.stdout.take().expect("stdout")).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let local = common::forwarded_from(&first).unwrap_or_else(|| panic!("{what}: {first}"));
        let forwarded: Vec<Result<String, String>> = (0..2).map(|_| http_get(([127, 0, 0, 1], local).into())).collect();
        let _ = pf.kill();
        let out = pf.wait_with_output().expect("port-forward");
        for r in forwarded {
            assert_eq!(r.as_deref(), Ok("ok\n"), "{what}: port-forward: {}", text(&out.stderr));
        }
    }
    for (name, _, _) in pods {
        server.ok(&["delete", "pod", name, "--wait=false"]);
    }
    let gone = eventually(Duration::from_secs(120), || pods.iter().all(|(n, _, _)| pod(&server, n).is_null()) && processes_under(&server.root()).is_empty());
    assert!(gone, "pods or QEMU left: {:?}\nlog: {}", processes_under(&server.root()), server.log());
}

/// A pod whose `hog` goes over its 32Mi memory limit and whose `info` asks for 1.5 cpu and 200Mi.
fn limits_pod(name: &str, class: Option<&str>, image: &str) -> String {
    let class = class.map(|c| format!("  runtimeClassName: {c}\n")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: node-a\n{class}  restartPolicy: Never\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: hog\n    image: {image}\n    command: [sh, -c, 'echo start; exec tail /dev/zero']\n    resources: {{limits: {{memory: 32Mi}}}}\n  - name: info\n    image: {image}\n    command: [sleep, '100000']\n    resources: {{requests: {{cpu: 1500m, memory: 200Mi}}, limits: {{cpu: '2', memory: 200Mi}}}}\n"
    )
}

/// Containers' limits hold for both runtime classes (a container over its memory limit is
/// OOMKilled, exit 137), and a VM-isolated pod's guest is sized from the pod: 256 MiB plus the
/// pod's memory limits (32 + 200 MiB), vCPUs for its cpu (1.5 rounded up).
#[test]
fn limits_hold_for_both_runtime_classes_and_size_the_guest() {
    let VmCluster { server, _registry, image, .. } = vm_cluster();
    let host_cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let pods = [("lim-runc", None), ("lim-vm", Some("strata-vm"))];
    for (name, class) in &pods {
        server.ok_stdin(&["apply", "-f", "-"], Some(&limits_pod(name, *class, &image)));
    }
    for (name, class) in pods {
        let what = format!("{name} ({})", class.unwrap_or("default runtime"));
        let mut last = Value::Null;
        let ok = eventually(Duration::from_secs(300), || {
            last = pod(&server, name);
            container(&last, "hog")["state"]["terminated"].is_object() && container(&last, "info")["state"]["running"].is_object()
        });
        assert!(ok, "{what}: hog not ended or info not running: {last:#}\nlog: {}", server.log());
        let t = &container(&last, "hog")["state"]["terminated"];
        assert_eq!((t["reason"].as_str(), t["exitCode"].as_i64()), (Some("OOMKilled"), Some(137)), "{what}: {t:#}");
        assert_eq!(server.ok(&["logs", name, "-c", "hog"]).trim(), "start", "{what}");
        let meminfo = server.ok(&["exec", name, "-c", "info", "--", "cat", "/proc/meminfo"]);
        let total_mib = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok()).expect("MemTotal") / 1024;
        let nproc: usize = server.ok(&["exec", name, "-c", "info", "--", "nproc"]).trim().parse().expect("nproc");
        if class.is_some() {
            // 488 MiB of guest RAM, less what the kernel keeps for itself.
            assert!((400..=488).contains(&total_mib), "{what}: guest MemTotal {total_mib} MiB");
            assert_eq!(nproc, 2.min(host_cpus).max(1), "{what}: vCPUs");
        } else {
            assert_eq!(nproc, host_cpus, "{what}");
        }
    }
    for (name, _) in pods {
        server.ok(&["delete", "pod", name, "--wait=false"]);
    }
    let gone = eventually(Duration::from_secs(120), || pods.iter().all(|(n, _)| pod(&server, n).is_null()) && processes_under(&server.root()).is_empty());
    assert!(gone, "pods or QEMU left: {:?}", processes_under(&server.root()));
}

/// A test that fails while a VM-isolated pod runs ends by dropping its server: the harness's
/// sweep removes what the killed agent left, the pod's QEMU, tap (in its netns) and IP lease
/// included (QEMU outlives the agent by design, and its directory is deleted with the test's).
#[test]
fn dropping_a_server_with_a_running_vm_pod_leaves_no_qemu_netns_or_lease() {
    let VmCluster { server, _registry, image, .. } = vm_cluster();
    server.ok_stdin(
        &["apply", "-f", "-"],
        Some(&format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: left\nspec:\n  nodeName: node-a\n  runtimeClassName: strata-vm\n  containers:\n  - name: c\n    image: {image}\n    command: [sleep, '100000']\n")),
    );
    let mut last = Value::Null;
    let running = eventually(Duration::from_secs(300), || {
        last = pod(&server, "left");
        last["status"]["phase"] == "Running"
    });
    assert!(running, "pod not Running: {last:#}\nlog: {}", server.log());
    let root = server.root();
    let qemus = KillOnDrop(qemu_pids(&root));
    assert_eq!(qemus.0.len(), 1, "one QEMU for the pod");
    let sandboxes = vm_sandboxes(&root);
    assert_eq!(sandboxes.len(), 1, "one sandbox: {sandboxes:?}");
    assert!(!sandbox_traces(&sandboxes[0]).is_empty(), "the pod has a netns and a lease");
    drop(server);
    assert!(eventually(Duration::from_secs(30), || !qemus.0.iter().any(|p| is_qemu(*p))), "QEMU {:?} still runs after the server's sweep", qemus.0);
    for sb in &sandboxes {
        assert_eq!(sandbox_traces(sb), Vec::<String>::new(), "sandbox {sb} left traces");
    }
}

/// The agent killed while a VM-isolated pod's guest boots (kill -9 of the server, then a new
/// start): the half-booted VM (no network, nobody waiting for its agent) is not taken for a
/// ready sandbox. Its QEMU is stopped and the pod gets a new microVM whose guest has the pod's
/// network; deleting the pod then leaves no QEMU.
#[test]
fn a_vm_pod_whose_agent_died_while_its_guest_booted_gets_a_working_microvm() {
    let VmCluster { mut server, _registry, image, .. } = vm_cluster();
    server.ok_stdin(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: reboot\nspec:\n  nodeName: node-a\n  runtimeClassName: strata-vm\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: web\n    image: {image}\n    command: [sh, -c, 'mkdir -p /srv && echo ok > /srv/index.html && exec busybox httpd -f -p 8081 -h /srv']\n"
        )),
    );
    let root = server.root();
    let mut first = KillOnDrop(Vec::new());
    assert!(eventually(Duration::from_secs(120), || {
        first.0 = qemu_pids(&root);
        !first.0.is_empty()
    }), "no QEMU started for the pod: {}", server.log());
    // A TCG guest takes many seconds to boot: the pod cannot be Running yet.
    assert_ne!(pod(&server, "reboot")["status"]["phase"], "Running", "the guest booted before the agent could be killed");
    server.restart(true);
    let mut last = Value::Null;
    let running = eventually(Duration::from_secs(300), || {
        last = pod(&server, "reboot");
        last["status"]["phase"] == "Running" && container(&last, "web")["state"]["running"].is_object()
    });
    assert!(running, "pod not Running after the agent's restart: {last:#}\nlog: {}", server.log());
    let ip: std::net::IpAddr = last["status"]["podIP"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no podIP: {last:#}"));
    let mut got = Err(String::new());
    assert!(eventually(Duration::from_secs(60), || {
        got = http_get((ip, 8081).into());
        got.as_deref() == Ok("ok\n")
    }), "GET {ip}:8081 from the node: {got:?}");
    assert!(!first.0.iter().any(|p| is_qemu(*p)), "the half-booted QEMU {:?} still runs", first.0);
    let now = KillOnDrop(qemu_pids(&root));
    assert_eq!(now.0.len(), 1, "one QEMU for the pod: {:?}", now.0);
    server.ok(&["delete", "pod", "reboot", "--wait=false"]);
    let gone = eventually(Duration::from_secs(120), || pod(&server, "reboot").is_null() && qemu_pids(&root).is_empty());
    assert!(gone, "pod or QEMU left: {:?}\nlog: {}", qemu_pids(&root), server.log());
    let vms = root.join("microvm/vms");
    assert!(eventually(Duration::from_secs(30), || std::fs::read_dir(&vms).map(|d| d.count() == 0).unwrap_or(true)), "VM state left in {}", vms.display());
}

fn memory_volume_pod(name: &str, class: Option<&str>, image: &str) -> String {
    let class = class.map(|c| format!("  runtimeClassName: {c}\n")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: node-a\n{class}  terminationGracePeriodSeconds: 2\n  volumes:\n  - name: cache\n    emptyDir: {{medium: Memory, sizeLimit: 8Mi}}\n  containers:\n  - name: writer\n    image: {image}\n    command: [sh, -c, 'echo from-writer > /cache/note; mkdir -p /cache/sub; echo in-sub > /cache/sub/f; sleep 100000']\n    volumeMounts: [{{name: cache, mountPath: /cache}}]\n  - name: reader\n    image: {image}\n    command: [sh, -c, 'trap \"exit 7\" TERM; while true; do sleep 1; done']\n    volumeMounts: [{{name: cache, mountPath: /data}}, {{name: cache, mountPath: /only-sub, subPath: sub}}]\n"
    )
}

/// An emptyDir with `medium: Memory` is a tmpfs shared by the pod's containers, sized by its
/// `sizeLimit`, for both runtime classes (in a VM-isolated pod a tmpfs in the guest's memory,
/// kept for the pod's life: a restarted container finds what was written).
#[test]
fn memory_empty_dirs_are_shared_tmpfs_for_both_runtime_classes() {
    let VmCluster { server, _registry, image, .. } = vm_cluster();
    let pods = [("mem-runc", None), ("mem-vm", Some("strata-vm"))];
    for (name, class) in &pods {
        server.ok_stdin(&["apply", "-f", "-"], Some(&memory_volume_pod(name, *class, &image)));
    }
    for (name, class) in pods {
        let what = format!("{name} ({})", class.unwrap_or("default runtime"));
        let mut last = Value::Null;
        let ok = eventually(Duration::from_secs(300), || {
            last = pod(&server, name);
            ["writer", "reader"].iter().all(|c| container(&last, c)["state"]["running"].is_object())
        });
        assert!(ok, "{what}: not running: {last:#}\nlog: {}", server.log());
        let note = eventually(Duration::from_secs(60), || server.kubectl(&["exec", name, "-c", "reader", "--", "cat", "/data/note"]).stdout == b"from-writer\n");
        assert!(note, "{what}: the reader does not see the writer's file");
        assert_eq!(server.ok(&["exec", name, "-c", "reader", "--", "cat", "/only-sub/f"]), "in-sub\n", "{what}: subPath");
        let mounts = server.ok(&["exec", name, "-c", "reader", "--", "cat", "/proc/mounts"]);
        let fs = |at: &str| mounts.lines().find(|l| l.split_whitespace().nth(1) == Some(at)).and_then(|l| l.split_whitespace().nth(2)).map(str::to_string);
        assert_eq!((fs("/data"), fs("/only-sub")), (Some("tmpfs".into()), Some("tmpfs".into())), "{what}: {mounts}");
        let df = server.ok(&["exec", name, "-c", "reader", "--", "df", "-k", "/data"]);
        let size_kib: u64 = df.lines().nth(1).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).expect("df size");
        assert_eq!(size_kib, 8192, "{what}: sizeLimit: {df}");
        // A write the limit cannot hold fails; the volume outlives a container restart.
        let big = server.kubectl(&["exec", name, "-c", "reader", "--", "sh", "-c", "head -c 9437184 /dev/zero > /data/big"]);
        assert!(!big.status.success(), "{what}: 9 MiB fit in an 8 MiB volume");
        server.ok(&["exec", name, "-c", "reader", "--", "rm", "-f", "/data/big"]);
        server.ok(&["exec", name, "-c", "reader", "--", "kill", "1"]);
        let mut last = Value::Null;
        let restarted = eventually(Duration::from_secs(120), || {
            last = pod(&server, name);
            container(&last, "reader")["restartCount"].as_i64() >= Some(1) && container(&last, "reader")["state"]["running"].is_object()
        });
        assert!(restarted, "{what}: reader not restarted: {last:#}");
        assert_eq!(server.ok(&["exec", name, "-c", "reader", "--", "cat", "/data/note"]), "from-writer\n", "{what}: after a restart");
    }
    for (name, _) in pods {
        server.ok(&["delete", "pod", name, "--wait=false"]);
    }
    let gone = eventually(Duration::from_secs(120), || pods.iter().all(|(n, _)| pod(&server, n).is_null()) && processes_under(&server.root()).is_empty());
    assert!(gone, "pods or QEMU left: {:?}", processes_under(&server.root()));
}

fn attach_pod(name: &str, class: Option<&str>, image: &str) -> String {
    let class = class.map(|c| format!("  runtimeClassName: {c}\n")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: node-a\n{class}  terminationGracePeriodSeconds: 2\n  containers:\n  - name: shell\n    image: {image}\n    stdin: true\n    command: [sh, -c, 'while read l; do echo main:$l; done; echo stdin-closed; sleep 100000']\n  - name: ticker\n    image: {image}\n    command: [sh, -c, 'i=0; while true; do i=$((i+1)); echo tick-$i; sleep 1; done']\n  - name: term\n    image: {image}\n    stdin: true\n    tty: true\n    command: [sh, -c, 'tty; stty size; sleep 100000']\n"
    )
}

/// `kubectl attach` joins a running container's main process in both runtime classes: its input
/// (`stdin: true`) and its output from the moment of attaching; a `tty: true` container has a
/// terminal.
#[test]
fn attach_and_terminals_work_for_both_runtime_classes() {
    let VmCluster { server, _registry, image, .. } = vm_cluster();
    let pods = [("att-runc", None), ("att-vm", Some("strata-vm"))];
    for (name, class) in &pods {
        server.ok_stdin(&["apply", "-f", "-"], Some(&attach_pod(name, *class, &image)));
    }
    for (name, class) in pods {
        let what = format!("{name} ({})", class.unwrap_or("default runtime"));
        let mut last = Value::Null;
        let ok = eventually(Duration::from_secs(300), || {
            last = pod(&server, name);
            ["shell", "ticker", "term"].iter().all(|c| container(&last, c)["state"]["running"].is_object())
        });
        assert!(ok, "{what}: not running: {last:#}\nlog: {}", server.log());
        // Input reaches the main process; its answers come back.
        let mut cmd = server.kubectl_command("kubectl");
        cmd.args(["attach", "-i", name, "-c", "shell"]);
        let (seen, out) = common::echoes(cmd, b"hello\n", "main:hello");
        assert!(seen, "{what}: no echo from the main process: {}", text(&out.stderr));
        // Output only, from the moment of attaching (a ticker's new lines, not its first).
        let mut t = server.kubectl_command("kubectl").args(["attach", name, "-c", "ticker"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("attach");
        let mut lines = BufReader::new(t.stdout.take().expect("stdout")).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let second = lines.next().and_then(Result::ok).unwrap_or_default();
        let _ = t.kill();
        let out = wait_bounded(t, Duration::from_secs(30));
        let n = |l: &str| l.strip_prefix("tick-").and_then(|n| n.parse::<u64>().ok());
        assert!(n(&first).is_some_and(|a| a > 1 && n(&second) == Some(a + 1)), "{what}: attached output {first:?} {second:?}: {}", text(&out.stderr));
        // A terminal: tty names it, stty reads its size.
        let logs = server.ok(&["logs", name, "-c", "term"]);
        assert!(logs.lines().next().is_some_and(|l| l.trim().starts_with("/dev/pts/")), "{what}: {logs:?}");
    }
    for (name, _) in pods {
        server.ok(&["delete", "pod", name, "--wait=false"]);
    }
    let gone = eventually(Duration::from_secs(120), || pods.iter().all(|(n, _)| pod(&server, n).is_null()) && processes_under(&server.root()).is_empty());
    assert!(gone, "pods or QEMU left: {:?}", processes_under(&server.root()));
}
