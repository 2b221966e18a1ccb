//! Watch cost (issue 8 part 3): server memory with many watches on a namespace holding ~6 MB
//! of ConfigMaps, memory after they close, and event delivery latency to all of them.
//!
//! `cargo bench -p strata --bench watch` starts `strata server` (embedded store), creates
//! `BENCH_OBJECTS` (60) ConfigMaps of `BENCH_OBJECT_KB` (100) KiB, then opens `BENCH_WATCHES`
//! (2000) watches with resourceVersion "" (each first receives the whole namespace) over HTTP/2
//! connections of 100 streams, like client-go. It reports the server's RSS idle, with the
//! watches (and its peak, `VmHWM`, reached while the initial states go out), some seconds after
//! they close, and the delivery latency (time from sending a
//! create until a watch reads its event) of `BENCH_EVENTS` (20) creates to every watch.
//! `STRATA_BIN` measures another `strata` binary (e.g. one built from an older commit).

#[path = "../tests/common/tls.rs"]
mod tls;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use futures_util::StreamExt;
use hyper::client::conn::http2::SendRequest;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tls::admin_tls;

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A `/proc/PID/status` figure in MiB: `VmRSS` (resident now) or `VmHWM` (the peak).
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix(field).and_then(|v| v.trim_start_matches(':').trim().trim_end_matches("kB").trim().parse::<f64>().ok())))
        .unwrap_or(0.0)
        / 1024.0
}

fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS")
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(bin: &str, watches: usize) -> Server {
        let dir = tempfile::Builder::new().prefix("strata-watchbench-").tempdir_in("/var/tmp").expect("tempdir");
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["server", "--no-agent", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"]).arg(dir.path());
        let help = Command::new(bin).args(["server", "--help"]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        // The API server alone (a scheduler would add its own writes to the pods).
        if help.contains("--no-scheduler") {
            cmd.arg("--no-scheduler");
        }
        if help.contains("--max-long-running-requests") {
            cmd.args(["--max-long-running-requests", &(watches + 100).to_string()]);
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("strata server");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(dir.path().join("kubeconfig").exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, port, dir }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(port: u16, connector: &tokio_rustls::TlsConnector) -> SendRequest<Body> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let stream = connector.connect(name, tcp).await.expect("tls");
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("h2");
    tokio::spawn(conn);
    send
}

async fn send(c: &mut SendRequest<Body>, method: &str, path: &str, body: Option<String>) -> hyper::Response<hyper::body::Incoming> {
    let req = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/json")
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .expect("request");
    c.ready().await.expect("ready");
    c.send_request(req).await.expect("send")
}

/// Reads one watch: counts the initial events, then times each later event named `ev-N`
/// against `sent[N]`.
async fn read_watch(resp: hyper::Response<hyper::body::Incoming>, initial: usize, events: usize, sent: Arc<std::sync::Mutex<Vec<Option<Instant>>>>, ready: Arc<tokio::sync::Semaphore>) -> Vec<Duration> {
    let mut body = Body::new(resp.into_body()).into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut lines = 0usize;
    let mut lat = Vec::new();
    while let Some(Ok(chunk)) = body.next().await {
        let now = Instant::now();
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            lines += 1;
            if lines == initial {
                ready.add_permits(1);
            }
            if lines > initial {
                // `"name":"ev-N"`: the first occurrence is the object's own name.
                let text = String::from_utf8_lossy(&line);
                if let Some(n) = text.split("\"name\":\"ev-").nth(1).and_then(|r| r.split('"').next()).and_then(|n| n.parse::<usize>().ok()) {
                    if let Some(Some(t)) = sent.lock().expect("lock").get(n) {
                        lat.push(now.duration_since(*t));
                    }
                }
                if lat.len() == events {
                    return lat;
                }
            }
        }
    }
    lat
}

fn main() {
    let watches = env_usize("BENCH_WATCHES", 2000);
    let objects = env_usize("BENCH_OBJECTS", 60);
    let object_kb = env_usize("BENCH_OBJECT_KB", 100);
    let events = env_usize("BENCH_EVENTS", 20);
    let bin = std::env::var("STRATA_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_strata").to_string());
    println!("watch bench: {watches} watches, {objects} ConfigMaps of {object_kb} KiB, {events} events; binary {bin}; load {}", load());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let server = Server::start(&bin, watches);
        let pid = server.child.id();
        let connector = admin_tls(&server.dir.path().join("pki"));
        let mut c = connect(server.port, &connector).await;
        let ns = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"bench"}}"#;
        assert_eq!(send(&mut c, "POST", "/api/v1/namespaces", Some(ns.into())).await.status().as_u16(), 201);
        let filler: String = (0..object_kb * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        for i in 0..objects {
            let cm = serde_json::json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": format!("cm-{i:03}") }, "data": { "v": filler } });
            let resp = send(&mut c, "POST", "/api/v1/namespaces/bench/configmaps", Some(cm.to_string())).await;
            assert_eq!(resp.status().as_u16(), 201);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = rss_mib(pid);

        let sent: Arc<std::sync::Mutex<Vec<Option<Instant>>>> = Arc::new(std::sync::Mutex::new(vec![None; events]));
        let ready = Arc::new(tokio::sync::Semaphore::new(0));
        let mut conns = Vec::new();
        let mut readers = Vec::new();
        let started = Instant::now();
        for i in 0..watches {
            if i % 100 == 0 {
                conns.push(connect(server.port, &connector).await);
            }
            let conn = conns.last_mut().expect("connection");
            let resp = send(conn, "GET", "/api/v1/namespaces/bench/configmaps?watch=1", None).await;
            assert_eq!(resp.status().as_u16(), 200, "watch {i}");
            readers.push(tokio::spawn(read_watch(resp, objects, events, sent.clone(), ready.clone())));
        }
        let all_ready = ready.acquire_many(u32::try_from(watches).expect("watches")).await.expect("ready");
        all_ready.forget();
        let setup = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let loaded = rss_mib(pid);
        let peak = status_mib(pid, "VmHWM");

        for n in 0..events {
            let cm = serde_json::json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": format!("ev-{n}") }, "data": { "n": n.to_string() } });
            sent.lock().expect("lock")[n] = Some(Instant::now());
            let resp = send(&mut c, "POST", "/api/v1/namespaces/bench/configmaps", Some(cm.to_string())).await;
            assert_eq!(resp.status().as_u16(), 201);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut lat = Vec::new();
        for r in readers {
            lat.extend(tokio::time::timeout(Duration::from_secs(120), r).await.expect("events delivered").expect("reader"));
        }
        lat.sort();
        let delivered = lat.len();
        drop(conns);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let after = rss_mib(pid);

        println!("\n| watches | idle RSS MiB | RSS with watches MiB | per watch KiB | peak RSS MiB | RSS 10 s after close MiB | setup s | events delivered | delivery p50 / p99 ms |");
        println!("|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {watches} | {idle:.1} | {loaded:.1} | {:.0} | {peak:.1} | {after:.1} | {setup:.1} | {delivered}/{} | {:.1} / {:.1} |",
            (loaded - idle) * 1024.0 / watches as f64,
            watches * events,
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
        let mark = |ok: bool| if ok { "PASS" } else { "MISS" };
        println!(
            "targets: RSS with {watches} watches (peak included) < 300 MiB: {}; back near idle (< idle + 30 MiB): {}; p99 < 50 ms: {}; load now {}",
            mark(loaded.max(peak) < 300.0),
            mark(after < idle + 30.0),
            mark(pct(&lat, 0.99) < 50.0),
            load()
        );
    });
}
