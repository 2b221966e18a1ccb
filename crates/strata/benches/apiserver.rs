//! API server throughput, latency and memory (issue 3), embedded store vs etcd, in one run.
//!
//! `cargo bench -p strata --bench apiserver` starts the optimized `strata server` on each
//! backend (the embedded redb store; etcd when Debian's `etcd` is installed, started here on
//! loopback) and drives it over HTTPS/HTTP2 with the admin client certificate from
//! `BENCH_CLIENTS` (default 16) concurrent connections:
//!
//! - idle resident memory of the server;
//! - `BENCH_PODS` (default 10000) pod creates: throughput and p50/p99 latency, then the
//!   server's resident memory holding them;
//! - gets of random pods, lists of all pods (one namespace), and watch delivery latency (time
//!   from sending a create to receiving its ADDED event on an open watch).
//!
//! Results print as a table; targets from the issue are marked PASS/MISS (the run itself never
//! fails on a target).

#[path = "../tests/common/tls.rs"]
mod tls;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use hyper::client::conn::http2::SendRequest;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tls::admin_tls;
use strata_testkit::free_port;

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}


fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))))
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Option<Etcd> {
        if Command::new("etcd").arg("--version").stdout(Stdio::null()).status().is_err() {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let (cp, pp) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{cp}");
        let child = Command::new("etcd")
            .args(["--data-dir", &dir.path().join("data").display().to_string()])
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{pp}"), "--initial-advertise-peer-urls", &format!("http://127.0.0.1:{pp}")])
            .args(["--initial-cluster", &format!("default=http://127.0.0.1:{pp}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", cp)).is_ok() {
                return Some(Etcd { child, url: format!("127.0.0.1:{cp}"), _dir: dir });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(store: &str) -> Server {
        let dir = tempfile::Builder::new().prefix("strata-apibench-").tempdir_in("/var/tmp").expect("tempdir");
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["server", "--no-agent", "--no-scheduler", "--listen", &format!("127.0.0.1:{port}"), "--store", store, "--data-dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("strata server");
        let deadline = Instant::now() + Duration::from_secs(30);
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

async fn call(send: &mut SendRequest<Body>, method: &str, path: &str, body: Option<String>) -> (u16, Bytes) {
    let req = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/json")
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .expect("request");
    send.ready().await.expect("ready");
    let resp = send.send_request(req).await.expect("send");
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(Body::new(resp.into_body()), 512 << 20).await.expect("body");
    (status, bytes)
}

fn pod(i: usize) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": format!("pod-{i:06}"), "labels": { "app": "bench", "shard": (i % 16).to_string() } },
        "spec": { "containers": [{ "name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"],
                                   "resources": { "requests": { "cpu": "10m", "memory": "16Mi" } } }] }
    })
    .to_string()
}

struct Report {
    backend: String,
    idle_rss_mib: f64,
    pods: usize,
    create_per_s: f64,
    create_p50: f64,
    create_p99: f64,
    loaded_rss_mib: f64,
    get_per_s: f64,
    get_p50: f64,
    get_p99: f64,
    list_p50: f64,
    list_p99: f64,
    watch_p50: f64,
    watch_p99: f64,
}

async fn run_backend(backend: &str, store: &str, clients: usize, pods: usize) -> Report {
    let server = Server::start(store);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(server.child.id()) as f64 / 1024.0;
    let connector = admin_tls(&server.dir.path().join("pki"));
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(connect(server.port, &connector).await);
    }

    // Creates.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut c in conns.clone() {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= pods {
                    return lat;
                }
                let t = Instant::now();
                let (code, body) = call(&mut c, "POST", "/api/v1/namespaces/default/pods", Some(pod(i))).await;
                assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
                lat.push(t.elapsed());
            }
        }));
    }
    let mut create = Vec::new();
    for t in tasks {
        create.extend(t.await.expect("task"));
    }
    let create_secs = started.elapsed().as_secs_f64();
    create.sort();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = rss_kib(server.child.id()) as f64 / 1024.0;

    // Gets.
    let per_client = 300;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (k, mut c) in conns.clone().into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for j in 0..per_client {
                let i = (k * 7919 + j * 104_729) % pods;
                let t = Instant::now();
                let (code, _) = call(&mut c, "GET", &format!("/api/v1/namespaces/default/pods/pod-{i:06}"), None).await;
                assert_eq!(code, 200);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut get = Vec::new();
    for t in tasks {
        get.extend(t.await.expect("task"));
    }
    let get_secs = started.elapsed().as_secs_f64();
    get.sort();

    // Lists of everything.
    let mut list = Vec::new();
    let mut c0 = conns[0].clone();
    for _ in 0..10 {
        let t = Instant::now();
        let (code, body) = call(&mut c0, "GET", "/api/v1/namespaces/default/pods", None).await;
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        list.push(t.elapsed());
        let v: serde_json::Value = serde_json::from_slice(&body).expect("list json");
        assert_eq!(v["items"].as_array().map(Vec::len), Some(pods));
    }
    list.sort();

    // Watch delivery.
    let (_, body) = call(&mut c0, "GET", "/api/v1/namespaces/default/configmaps?limit=1", None).await;
    let rv = serde_json::from_slice::<serde_json::Value>(&body).expect("json")["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    let mut wc = connect(server.port, &connector).await;
    let req = Request::builder()
        .uri(format!("https://localhost/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}"))
        .body(Body::empty())
        .expect("req");
    wc.ready().await.expect("ready");
    let resp = wc.send_request(req).await.expect("watch");
    let sent: Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>> = Arc::default();
    let n_watch = 500;
    let sent2 = sent.clone();
    let reader = tokio::spawn(async move {
        let mut stream = Body::new(resp.into_body()).into_data_stream();
        let mut buf = Vec::new();
        let mut lat = Vec::new();
        while lat.len() < n_watch {
            let Some(Ok(chunk)) = stream.next().await else { break };
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let now = Instant::now();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) {
                    let name = v["object"]["metadata"]["name"].as_str().unwrap_or("").to_string();
                    if let Some(t) = sent2.lock().expect("lock").get(&name) {
                        lat.push(now.duration_since(*t));
                    }
                }
            }
        }
        lat
    });
    for i in 0..n_watch {
        let name = format!("w-{i}");
        sent.lock().expect("lock").insert(name.clone(), Instant::now());
        let (code, _) = call(&mut c0, "POST", "/api/v1/namespaces/default/configmaps", Some(format!(r#"{{"metadata":{{"name":"{name}"}}}}"#))).await;
        assert_eq!(code, 201);
    }
    let mut watch = tokio::time::timeout(Duration::from_secs(60), reader).await.expect("watch finished").expect("task");
    watch.sort();
    drop(server);

    Report {
        backend: backend.to_string(),
        idle_rss_mib: idle,
        pods,
        create_per_s: pods as f64 / create_secs,
        create_p50: pct(&create, 0.5),
        create_p99: pct(&create, 0.99),
        loaded_rss_mib: loaded,
        get_per_s: get.len() as f64 / get_secs,
        get_p50: pct(&get, 0.5),
        get_p99: pct(&get, 0.99),
        list_p50: pct(&list, 0.5),
        list_p99: pct(&list, 0.99),
        watch_p50: pct(&watch, 0.5),
        watch_p99: pct(&watch, 0.99),
    }
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

fn main() {
    let clients = env_usize("BENCH_CLIENTS", 16);
    let pods = env_usize("BENCH_PODS", 10_000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut reports = vec![rt.block_on(run_backend("embedded", "embedded", clients, pods))];
    match Etcd::start() {
        Some(etcd) => reports.push(rt.block_on(run_backend("etcd", &format!("etcd://{}", etcd.url), clients, pods))),
        None => println!("etcd not installed: etcd backend skipped (apt-get install etcd-server)"),
    }
    println!("\napiserver bench: {clients} clients, {pods} pods");
    println!("| backend | idle RSS MiB | creates/s | create p50/p99 ms | RSS with pods MiB | gets/s | get p50/p99 ms | list-all p50/p99 ms | watch p50/p99 ms |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &reports {
        println!(
            "| {} | {:.1} | {:.0} | {:.2} / {:.2} | {:.1} | {:.0} | {:.2} / {:.2} | {:.1} / {:.1} | {:.2} / {:.2} |",
            r.backend, r.idle_rss_mib, r.create_per_s, r.create_p50, r.create_p99, r.loaded_rss_mib, r.get_per_s, r.get_p50, r.get_p99, r.list_p50, r.list_p99, r.watch_p50, r.watch_p99
        );
    }
    if let Some(e) = reports.first() {
        println!("\ntargets (embedded): idle RSS < 50 MiB: {}; {} pods held < 300 MiB: {}; >= 5000 creates/s: {}; watch p99 < 50 ms: {}",
            mark(e.idle_rss_mib < 50.0), e.pods, mark(e.loaded_rss_mib < 300.0), mark(e.create_per_s >= 5000.0), mark(e.watch_p99 < 50.0));
    }
    if reports.len() == 2 {
        println!("embedded/etcd create throughput ratio: {:.2}x", reports[0].create_per_s / reports[1].create_per_s.max(1e-9));
    }
}
