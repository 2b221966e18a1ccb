//! Pod streams end to end: `kubectl logs`, `exec`, `attach`, `port-forward` and `cp` through the
//! real API server (RBAC, the proxy to the node's agent) to the agent's real stream server, with
//! kubectl 1.32 (WebSocket v5 exec, SPDY tunnelled in WebSocket for port-forward) and 1.27
//! (SPDY/3.1), and the Python client's `stream()`.
//!
//! The node here is a simulated one (`common/hostnode.rs`): its "containers" are host processes
//! behind the stream server's `PodStreams` interface, so these tests prove the protocols and the
//! proxy, not the driver.

mod common;
#[path = "common/hostnode.rs"]
mod hostnode;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostnode::HostNode;
use common::server::{ApiServer, Auth, Backend};
use common::{text, wait_bounded};

const NODE: &str = "host-sim";
/// The oldest kubectl installed: SPDY/3.1 for exec, attach and port-forward.
const OLD: &str = "1.27";
/// The newest installed.
const NEWEST: &str = "1.33";

/// kubectl of `version` (None: the dispatcher's default, 1.32) as the admin.
fn kubectl_cmd(s: &ApiServer, version: Option<&str>) -> Command {
    s.kubectl_command(&version.map_or_else(|| "kubectl".to_string(), common::server::kubectl_of))
}

fn run(s: &ApiServer, version: Option<&str>, args: &[&str], stdin: Option<&[u8]>) -> Output {
    s.kubectl_timed(&version.map_or_else(|| "kubectl".to_string(), common::server::kubectl_of), args, stdin, Duration::from_secs(120))
}

/// A server, a simulated node serving streams, and pod `p` (containers `c`, `d`) Running on it.
fn cluster() -> (ApiServer, Arc<HostNode>) {
    let s = ApiServer::start(Backend::Embedded);
    let node = HostNode::new();
    let addr = node.serve(&s.data_dir().join("pki"));
    register_node(&s, NODE, Some(addr));
    s.ok_stdin(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  nodeName: {NODE}\n  containers: [{{name: c, image: busybox}}, {{name: d, image: busybox}}]\n"
        )),
    );
    s.ok(&["patch", "pod", "p", "--subresource=status", "--type=merge", "-p", r#"{"status":{"phase":"Running"}}"#]);
    (s, node)
}

/// A Node whose agent listens at `addr` (None: a Node with no address).
fn register_node(s: &ApiServer, name: &str, addr: Option<std::net::SocketAddr>) {
    s.ok_stdin(&["apply", "-f", "-"], Some(&format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n")));
    if let Some(a) = addr {
        let status = format!(
            r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"{}"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{}}}}}}}}}"#,
            a.ip(),
            a.port()
        );
        s.ok(&["patch", "node", name, "--subresource=status", "--type=merge", "-p", &status]);
    }
}

#[test]
fn exec_carries_stdin_output_and_the_exit_code_over_websocket_and_spdy() {
    let (s, _node) = cluster();
    // kubectl 1.32 speaks WebSocket v5 (it would fall back to SPDY silently: check).
    let out = run(&s, None, &["exec", "-v=4", "p", "-c", "c", "--", "true"], None);
    assert!(out.status.success() && text(&out.stderr).contains("The subprotocol is v5.channel.k8s.io"), "{}", text(&out.stderr));
    for v in [None, Some(OLD), Some(NEWEST)] {
        let out = run(&s, v, &["exec", "p", "-c", "c", "--", "sh", "-c", "echo out; echo err >&2; exit 3"], None);
        assert_eq!(out.status.code(), Some(3), "{v:?}: {}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(text(&out.stdout), "out\n", "{v:?}");
        assert!(text(&out.stderr).contains("err\n"), "{v:?}: {}", text(&out.stderr));
        let out = run(&s, v, &["exec", "-i", "p", "-c", "d", "--", "sh", "-c", "while read l; do echo got:$l; done; echo eof"], Some(b"one\ntwo\n"));
        assert!(out.status.success(), "{v:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "got:one\ngot:two\neof\n", "{v:?}");
        // A terminal: the command sees one, and its exit code still comes back.
        let cmd = format!(
            "{} exec -it p -c c -- sh -c 'tty; exit 5'",
            v.map(|v| format!("/usr/lib/google-cloud-sdk/bin/kubectl.{v}")).unwrap_or("kubectl".into())
        );
        let c = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("KUBECONFIG", s.kubeconfig())
            .env("HOME", s.data_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script");
        let out = wait_bounded(c, Duration::from_secs(120));
        assert!(text(&out.stdout).contains("/dev/pts/"), "{v:?}: {}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(5), "{v:?}: {}", text(&out.stdout));
        // A container the pod does not have, and a command that does not exist.
        let out = run(&s, v, &["exec", "p", "-c", "nope", "--", "true"], None);
        assert!(text(&out.stderr).contains("container nope is not valid for pod p"), "{v:?}: {}", text(&out.stderr));
        let out = run(&s, v, &["exec", "p", "-c", "c", "--", "/no/such/command"], None);
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains("/no/such/command"), "{v:?}: {}", text(&out.stderr));
    }
}

#[test]
fn cp_copies_both_ways_through_tar_over_exec() {
    let (s, _node) = cluster();
    for (i, v) in [None, Some(OLD)].into_iter().enumerate() {
        let local = tempfile::tempdir().expect("tmp");
        // The simulated pod's filesystem is the host's.
        let remote = tempfile::Builder::new().prefix("strata-cp-").tempdir_in("/var/tmp").expect("tmp");
        let big: Vec<u8> = (0..300_000u32).flat_map(|n| n.to_le_bytes()).collect();
        std::fs::write(local.path().join("data.bin"), &big).expect("write");
        let dst = format!("p:{}/in-{i}.bin", remote.path().display());
        let out = run(&s, v, &["cp", "-c", "c", local.path().join("data.bin").to_str().expect("path"), &dst], None);
        assert!(out.status.success(), "{v:?}: {}", text(&out.stderr));
        assert_eq!(std::fs::read(remote.path().join(format!("in-{i}.bin"))).expect("copied in"), big, "{v:?}");
        let back = local.path().join("back.bin");
        let out = run(&s, v, &["cp", "-c", "c", &dst, back.to_str().expect("path")], None);
        assert!(out.status.success(), "{v:?}: {}", text(&out.stderr));
        assert_eq!(std::fs::read(&back).expect("copied out"), big, "{v:?}");
    }
}

#[test]
fn logs_tail_timestamps_previous_since_and_follow() {
    let (s, node) = cluster();
    {
        let mut l = node.logs.lock().expect("lock");
        l.previous = vec![("2026-01-01T00:00:00.000000001Z".into(), "before the restart".into())];
        l.current = vec![
            ("2026-01-01T00:00:01.5Z".into(), "one".into()),
            ("2026-01-01T00:00:02Z".into(), "two".into()),
            ("2026-01-01T00:00:03Z".into(), "three".into()),
        ];
    }
    assert_eq!(s.ok(&["logs", "p", "-c", "c"]), "one\ntwo\nthree\n");
    assert_eq!(s.ok(&["logs", "p", "-c", "c", "--tail", "1"]), "three\n");
    assert_eq!(s.ok(&["logs", "p", "-c", "c", "--timestamps", "--tail", "2"]), "2026-01-01T00:00:02Z two\n2026-01-01T00:00:03Z three\n");
    assert_eq!(s.ok(&["logs", "p", "-c", "c", "--since-time", "2026-01-01T00:00:02Z"]), "two\nthree\n");
    assert_eq!(s.ok(&["logs", "p", "-c", "c", "--limit-bytes", "6"]), "one\ntw");
    assert_eq!(s.ok(&["logs", "p", "-c", "c", "-p"]), "before the restart\n");
    let (code, body) = s.curl("GET", "/api/v1/namespaces/default/pods/p/log?container=c&tailLines=-1", Auth::Admin, None, None);
    assert_eq!(code, 400, "{body}");
    // Follow: lines appended later arrive, and the stream ends when the client goes away.
    let mut f = kubectl_cmd(&s, None).args(["logs", "-f", "p", "-c", "c", "--tail", "1"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("logs -f");
    let mut lines = BufReader::new(f.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("three"));
    node.logs.lock().expect("lock").current.push(("2026-01-01T00:00:04Z".into(), "four".into()));
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("four"));
    let _ = f.kill();
    let _ = f.wait();
}

#[test]
fn attach_joins_the_main_process() {
    let (s, _node) = cluster();
    for v in [None, Some(OLD)] {
        let mut cmd = kubectl_cmd(&s, v);
        cmd.args(["attach", "-i", "p", "-c", "c"]);
        let (seen, out) = common::echoes(cmd, b"hello\n", "main:hello");
        assert!(seen, "{v:?}: no echo from the main process: {}", text(&out.stderr));
    }
}

/// A one-shot HTTP server on 127.0.0.1 (the simulated pod's port).
fn http_server() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                // The request may come in pieces (each hop may split it): read to its blank line.
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&req).into_owned();
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                let body = format!("hello from the pod, you asked for {path}");
                let _ = write!(c, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            });
        }
    });
    port
}

#[test]
fn port_forward_reaches_a_server_in_the_pod() {
    let (s, _node) = cluster();
    let target = http_server();
    for v in [None, Some(OLD), Some(NEWEST)] {
        // Local port 0: kubectl picks a free one and names it (a port chosen here could be
        // taken by someone else before kubectl binds it).
        let mut pf = kubectl_cmd(&s, v)
            .args(["port-forward", "-v=4", "pod/p", &format!(":{target}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("port-forward");
        let mut lines = BufReader::new(pf.stdout.take().expect("stdout")).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let local = common::forwarded_from(&first).unwrap_or_else(|| panic!("{v:?}: {first}"));
        for i in 0..3 {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", local)).expect("connect");
            c.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
            let mut resp = String::new();
            let sent = c.write_all(format!("GET /try-{i} HTTP/1.0\r\n\r\n").as_bytes()).and_then(|()| c.read_to_string(&mut resp));
            if let Err(e) = sent {
                // kubectl's own account of what happened says more than the socket error.
                let _ = pf.kill();
                let out = pf.wait_with_output().expect("port-forward");
                panic!("{v:?}: request {i}: {e}; kubectl: {}", text(&out.stderr));
            }
            assert!(resp.ends_with(&format!("hello from the pod, you asked for /try-{i}")), "{v:?}: {resp}");
        }
        // A port nothing listens on in the pod: the connection closes and kubectl says why.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mut pf2 = kubectl_cmd(&s, v).args(["port-forward", "pod/p", &format!(":{closed}")]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("port-forward");
        let mut lines2 = BufReader::new(pf2.stdout.take().expect("stdout")).lines();
        let first2 = lines2.next().and_then(Result::ok).unwrap_or_default();
        let local2 = common::forwarded_from(&first2).unwrap_or_else(|| panic!("{v:?}: {first2}"));
        let mut c = std::net::TcpStream::connect(("127.0.0.1", local2)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let _ = c.write_all(b"GET / HTTP/1.0\r\n\r\n");
        let mut resp = Vec::new();
        let _ = c.read_to_end(&mut resp);
        assert!(resp.is_empty(), "{v:?}: {}", text(&resp));
        std::thread::sleep(Duration::from_millis(500));
        let _ = pf2.kill();
        let out2 = pf2.wait_with_output().expect("port-forward");
        assert!(text(&out2.stderr).contains(&format!("error forwarding port {closed} to pod p")), "{v:?}: {}", text(&out2.stderr));
        let _ = pf.kill();
        let out = pf.wait_with_output().expect("port-forward");
        if v.is_none() {
            // 1.32 tunnels SPDY in WebSocket (and would fall back to plain SPDY silently).
            assert!(text(&out.stderr).contains("negotiated protocol: portforward.k8s.io"), "{}", text(&out.stderr));
        }
    }
}

#[test]
fn the_python_client_streams_exec_and_port_forward() {
    let (s, _node) = cluster();
    let out = s.python("stream_exec.py", &["default", "p", "c"]);
    assert_eq!(out, "stdout=hi from python\nreturncode=7\n");
    let target = http_server();
    let out = s.python("port_forward.py", &["default", "p", &target.to_string()]);
    assert_eq!(out, "hello from the pod, you asked for /py\n");
}

#[test]
fn exec_needs_create_on_pods_exec_and_unreachable_agents_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "viewer-token,viewer,2001\n").expect("tokens");
    let s = ApiServer::start_with(Backend::Embedded, &["--token-file", tokens.to_str().expect("path")]);
    let node = HostNode::new();
    let addr = node.serve(&s.data_dir().join("pki"));
    register_node(&s, NODE, Some(addr));
    s.ok_stdin(&["apply", "-f", "-"], Some(&format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  nodeName: {NODE}\n  containers: [{{name: c, image: busybox}}]\n")));
    s.ok(&["patch", "pod", "p", "--subresource=status", "--type=merge", "-p", r#"{"status":{"phase":"Running"}}"#]);
    // viewer may read pods and their logs, and get (but not create) pods/exec.
    s.ok(&["create", "role", "viewer", "--verb=get,list", "--resource=pods,pods/log,pods/exec"]);
    s.ok(&["create", "rolebinding", "viewer", "--role=viewer", "--user=viewer"]);
    let ca: PathBuf = s.data_dir().join("pki/ca.crt");
    let as_viewer = |v: Option<&str>, args: &[&str]| {
        let mut c = kubectl_cmd(&s, v);
        c.args(["--server", &s.url(), "--certificate-authority", ca.to_str().expect("path"), "--token", "viewer-token"])
            .args(args)
            .env("KUBECONFIG", s.data_dir().join("none"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        wait_bounded(c.spawn().expect("kubectl"), Duration::from_secs(120))
    };
    node.logs.lock().expect("lock").current = vec![("2026-01-01T00:00:00Z".into(), "visible".into())];
    let out = as_viewer(None, &["logs", "p"]);
    assert_eq!(text(&out.stdout), "visible\n", "{}", text(&out.stderr));
    for v in [None, Some(OLD)] {
        let out = as_viewer(v, &["exec", "p", "--", "echo", "no"]);
        assert!(!out.status.success(), "{v:?}");
        assert!(text(&out.stdout).is_empty(), "{v:?}");
        assert!(text(&out.stderr).contains(r#"cannot create resource "pods/exec""#), "{v:?}: {}", text(&out.stderr));
    }
    // The WebSocket GET alone is refused without create, with the Status of a 403.
    let (code, body) = s.curl("GET", "/api/v1/namespaces/default/pods/p/exec?command=true&stdout=true", Auth::Token("viewer-token"), None, None);
    assert_eq!(code, 403, "{body}");
    // Only the API server may call the agent: the admin's certificate is refused there.
    let admin = tls_client_identity(&s);
    let refused = std::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--cert", &admin.0, "--key", &admin.1, &format!("https://{addr}/containerLogs/default/p/c")])
        .output()
        .expect("curl");
    assert_eq!(text(&refused.stdout), "403");
    let no_cert = std::process::Command::new("curl").args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", &format!("https://{addr}/healthz")]).output().expect("curl");
    assert_ne!(text(&no_cert.stdout), "200", "a caller without a certificate got through");
    // A pod on a Node that does not exist, one with no address, one whose agent is gone.
    for (pod, node_name) in [("ghost", "no-such-node"), ("bare", "bare-node"), ("gone", "gone-node")] {
        s.ok_stdin(&["apply", "-f", "-"], Some(&format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}}}\nspec:\n  nodeName: {node_name}\n  containers: [{{name: c, image: busybox}}]\n")));
    }
    register_node(&s, "bare-node", None);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    register_node(&s, "gone-node", Some(closed));
    let err = s.fails(&["logs", "ghost"], None);
    assert!(err.contains(r#"nodes "no-such-node" not found"#), "{err}");
    let err = s.fails(&["logs", "bare"], None);
    assert!(err.contains("node bare-node has no InternalIP or ExternalIP address"), "{err}");
    let (code, body) = s.curl("GET", "/api/v1/namespaces/default/pods/gone/log", Auth::Admin, None, None);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("error dialing backend"), "{body}");
}

/// The admin's client certificate and key as files (for curl).
fn tls_client_identity(s: &ApiServer) -> (String, String) {
    let pki = s.data_dir().join("pki");
    (pki.join("admin.crt").to_string_lossy().into_owned(), pki.join("admin.key").to_string_lossy().into_owned())
}


/// `strata server` with its agent serving streams, and a busybox image in a local registry.
fn agent_cluster(node: &str) -> (ApiServer, strata_testkit::Registry, String) {
    let registry = strata_testkit::Registry::start();
    registry.push(&strata_testkit::busybox_image(), "busybox", "latest");
    let image = format!("{}/busybox:latest", registry.addr);
    let env = vec![("STRATA_VM_ACCEL".to_string(), "tcg".to_string()), ("STRATA_UNPACK_RESERVE".to_string(), "512MiB".to_string())];
    let extra = vec!["--node-name".to_string(), node.to_string(), "--kubelet-port".to_string(), "0".to_string()];
    let s = ApiServer::start_opts(Backend::Embedded, common::server::Options { agent: true, extra, env, ..Default::default() });
    (s, registry, image)
}

/// Attach to a real pod's main process (stdin: true), follow a log as it grows, the previous
/// attempt's log after a restart, and the Python client's exec, on pods the agent runs.
#[test]
fn attach_follow_previous_and_python_on_agent_pods() {
    let (s, _registry, image) = agent_cluster("node-t");
    s.ok_stdin(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: talk}}\nspec:\n  nodeName: node-t\n  containers:\n  - name: c\n    image: {image}\n    stdin: true\n    command: [sh, -c, 'echo ready; while read l; do echo main:$l; done']\n  - name: ticker\n    image: {image}\n    command: [sh, -c, 'i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done']\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: crash}}\nspec:\n  nodeName: node-t\n  containers:\n  - name: c\n    image: {image}\n    command: [sh, -c, 'echo attempt started; sleep 1; exit 1']\n"
        )),
    );
    let running = common::eventually(Duration::from_secs(120), || s.kubectl(&["get", "pod", "talk", "-o", "jsonpath={.status.phase}"]).stdout == b"Running");
    assert!(running, "pod not Running: {}\n{}", text(&s.kubectl(&["get", "pod", "talk", "-o", "yaml"]).stdout), s.log());
    for v in [None, Some(OLD)] {
        let mut a = kubectl_cmd(&s, v).args(["attach", "-i", "talk", "-c", "c"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("attach");
        let mut stdin = a.stdin.take().expect("stdin");
        let stdout = a.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = false;
        while !seen && Instant::now() < deadline {
            let _ = stdin.write_all(b"hello\n").and_then(|_| stdin.flush());
            if let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
                seen = l == "main:hello";
            }
        }
        let _ = a.kill();
        let out = a.wait_with_output().expect("attach");
        assert!(seen, "{v:?}: no echo from the main process: {}", text(&out.stderr));
    }
    // Follow: ticks keep coming; the stream ends when kubectl goes.
    let mut f = kubectl_cmd(&s, None).args(["logs", "-f", "talk", "-c", "ticker", "--tail", "1"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("logs -f");
    let mut lines = BufReader::new(f.stdout.take().expect("stdout")).lines();
    let n = |l: Option<String>| l.and_then(|l| l.strip_prefix("tick ").and_then(|n| n.parse::<u64>().ok()));
    let first = n(lines.next().and_then(Result::ok)).expect("a tick");
    let later = (0..5).filter_map(|_| n(lines.next().and_then(Result::ok))).last().expect("more ticks");
    assert!(later >= first + 5, "{first} then {later}");
    let _ = f.kill();
    let _ = f.wait();
    // The previous attempt's log once the container restarted.
    let restarted = common::eventually(Duration::from_secs(90), || {
        text(&s.kubectl(&["get", "pod", "crash", "-o", "jsonpath={.status.containerStatuses[0].restartCount}"]).stdout).parse::<u32>().unwrap_or(0) >= 1
    });
    assert!(restarted, "crash did not restart: {}", text(&s.kubectl(&["get", "pod", "crash", "-o", "yaml"]).stdout));
    assert_eq!(s.ok(&["logs", "crash", "-p"]), "attempt started\n");
    // The Python client's exec (WebSocket) on a real container.
    let out = s.python("stream_exec.py", &["default", "talk", "c"]);
    assert_eq!(out, "stdout=hi from python\nreturncode=7\n");
}

/// A pod run by the real node agent (inside `strata server`) from a local registry's busybox:
/// logs, exec (exit code, stdin, terminal), cp and port-forward to its HTTP server, with
/// kubectl 1.32 and 1.27, through the agent's stream endpoint over the driver.
#[test]
fn streams_of_a_pod_the_agent_runs() {
    let (s, _registry, image) = agent_cluster("node-s");
    s.ok_stdin(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  nodeName: node-s\n  containers:\n  - name: c\n    image: {image}\n    command: [sh, -c, 'echo one; echo two; echo three; mkdir -p /www; echo hello-from-pod > /www/index.html; exec httpd -f -p 127.0.0.1:8080 -h /www']\n"
        )),
    );
    let running = common::eventually(Duration::from_secs(120), || {
        s.kubectl(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"]).stdout == b"Running"
    });
    assert!(running, "pod not Running: {}\n{}", text(&s.kubectl(&["get", "pod", "web", "-o", "yaml"]).stdout), s.log());
    assert!(common::eventually(Duration::from_secs(30), || s.kubectl(&["logs", "web"]).stdout == b"one\ntwo\nthree\n"), "logs: {}", text(&s.kubectl(&["logs", "web"]).stderr));
    assert_eq!(s.ok(&["logs", "web", "--tail", "1"]), "three\n");
    let ts = s.ok(&["logs", "web", "--tail", "1", "--timestamps"]);
    let (time, line) = ts.split_once(' ').expect("timestamped line");
    assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok() && line == "three\n", "{ts}");
    for v in [None, Some(OLD)] {
        let out = run(&s, v, &["exec", "web", "--", "sh", "-c", "echo out; echo err >&2; exit 3"], None);
        assert_eq!(out.status.code(), Some(3), "{v:?}: {}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(text(&out.stdout), "out\n", "{v:?}");
        let out = run(&s, v, &["exec", "-i", "web", "--", "sh", "-c", "while read l; do echo got:$l; done; echo eof"], Some(b"one\ntwo\n"));
        assert_eq!(text(&out.stdout), "got:one\ngot:two\neof\n", "{v:?}: {}", text(&out.stderr));
        let cmd = format!(
            "{} exec -it web -- sh -c 'tty; exit 4'",
            v.map(|v| format!("/usr/lib/google-cloud-sdk/bin/kubectl.{v}")).unwrap_or("kubectl".into())
        );
        let c = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("KUBECONFIG", s.kubeconfig())
            .env("HOME", s.data_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script");
        let out = wait_bounded(c, Duration::from_secs(120));
        assert!(text(&out.stdout).contains("/dev/pts/"), "{v:?}: {}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(4), "{v:?}: {}", text(&out.stdout));
        // cp in and back out (tar over exec).
        let local = tempfile::tempdir().expect("tmp");
        let data: Vec<u8> = (0..50_000u32).flat_map(|n| n.to_le_bytes()).collect();
        std::fs::write(local.path().join("in.bin"), &data).expect("write");
        let out = run(&s, v, &["cp", local.path().join("in.bin").to_str().expect("path"), "web:/tmp/in.bin"], None);
        assert!(out.status.success(), "{v:?}: {}", text(&out.stderr));
        let back = local.path().join("back.bin");
        let out = run(&s, v, &["cp", "web:/tmp/in.bin", back.to_str().expect("path")], None);
        assert!(out.status.success(), "{v:?}: {}", text(&out.stderr));
        assert_eq!(std::fs::read(&back).expect("back"), data, "{v:?}");
        // port-forward to the pod's HTTP server, which listens on the pod's loopback only.
        let mut pf = kubectl_cmd(&s, v).args(["port-forward", "pod/web", ":8080"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("port-forward");
        let mut lines = BufReader::new(pf.stdout.take().expect("stdout")).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let port = common::forwarded_from(&first).unwrap_or_else(|| panic!("{v:?}: {first}"));
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        c.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").expect("request");
        let mut resp = String::new();
        let _ = c.read_to_string(&mut resp);
        let _ = pf.kill();
        let _ = pf.wait();
        assert!(resp.contains("200") && resp.ends_with("hello-from-pod\n"), "{v:?}: {resp}");
    }
    s.ok(&["delete", "pod", "web", "--grace-period=1", "--wait=false"]);
}
