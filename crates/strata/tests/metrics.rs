//! `/metrics` of a real `strata server`, scraped with kubectl and read with the reference
//! Prometheus parser (Python `prometheus_client`): kube-apiserver's metric names, counters that
//! move with requests, and who may read it.

mod common;

on_both_backends!(metrics_count_requests_watchers_objects_and_store_calls);

use std::process::{Command, Stdio};
use std::time::Duration;

use common::server::{ApiServer, Auth, Backend};
use serde_json::Value;

type Sample = (String, serde_json::Map<String, Value>, f64);

fn scrape(s: &ApiServer) -> Vec<Sample> {
    let text = s.ok(&["get", "--raw", "/metrics"]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/metrics_parse.py");
    let mut child = Command::new("python3").arg(script).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("python3");
    {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    }
    let out = child.wait_with_output().expect("parser");
    assert!(out.status.success(), "the Prometheus parser refused /metrics: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json");
            (v[0].as_str().unwrap_or("").to_string(), v[1].as_object().cloned().unwrap_or_default(), v[2].as_f64().unwrap_or(f64::NAN))
        })
        .collect()
}

/// The sum of the samples named `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples.iter().filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).and_then(Value::as_str) == Some(*v))).map(|s| s.2).sum()
}

fn metrics_count_requests_watchers_objects_and_store_calls(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "monitor-token,prom,1,\"system:monitoring\"\nplain-token,alice,2\n").expect("token file");
    let s = ApiServer::start_with(backend, &["--token-file", tokens.to_str().expect("path")]);
    s.ok(&["create", "namespace", "m"]);
    let before = scrape(&s);
    let post = [("verb", "POST"), ("resource", "configmaps"), ("scope", "resource"), ("code", "201"), ("group", ""), ("version", "v1"), ("component", "apiserver")];
    let list = [("verb", "LIST"), ("resource", "configmaps"), ("scope", "namespace"), ("code", "200")];
    for i in 0..3 {
        s.ok(&["create", "configmap", &format!("c{i}"), "-n", "m"]);
    }
    s.ok(&["get", "configmaps", "-n", "m"]);
    s.ok(&["get", "configmaps", "-n", "m"]);
    let mut watch = Command::new("kubectl")
        .args(["get", "configmaps", "-n", "m", "-w"])
        .env("KUBECONFIG", s.kubeconfig())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl -w");
    let watching = common::eventually(Duration::from_secs(20), || value(&scrape(&s), "apiserver_registered_watchers", &[("kind", "ConfigMap"), ("version", "v1")]) >= 1.0);
    let after = scrape(&s);
    let _ = watch.kill();
    let _ = watch.wait();

    assert!(watching, "a kubectl -w shows in apiserver_registered_watchers");
    assert_eq!(value(&after, "apiserver_request_total", &post) - value(&before, "apiserver_request_total", &post), 3.0, "three creates");
    assert!(value(&after, "apiserver_request_total", &list) - value(&before, "apiserver_request_total", &list) >= 2.0, "two lists");
    let lists = |m: &[Sample]| value(m, "apiserver_request_duration_seconds_count", &[("verb", "LIST"), ("resource", "configmaps"), ("scope", "namespace")]);
    assert!(lists(&after) - lists(&before) >= 2.0, "list latencies observed");
    assert!(value(&after, "apiserver_request_duration_seconds_bucket", &[("verb", "LIST"), ("resource", "configmaps"), ("le", "+Inf")]) >= 2.0);
    assert!(value(&after, "apiserver_request_total", &[("verb", "WATCH"), ("resource", "configmaps"), ("code", "200")]) >= 1.0);
    assert!(value(&after, "apiserver_storage_objects", &[("resource", "configmaps")]) >= 3.0, "three ConfigMaps stored (and each namespace's root CA, if any)");
    assert!(value(&after, "apiserver_storage_objects", &[("resource", "namespaces")]) >= 5.0);
    let creates = |m: &[Sample]| value(m, "etcd_request_duration_seconds_count", &[("operation", "create"), ("type", "configmaps")]);
    assert_eq!(creates(&after) - creates(&before), 3.0, "three store creates timed");
    assert!(value(&after, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(value(&after, "process_cpu_seconds_total", &[]) > 0.0);
    assert!(value(&after, "process_open_fds", &[]) > 3.0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    let start = value(&after, "process_start_time_seconds", &[]);
    assert!(start > now - 600.0 && start <= now, "started {start}, now {now}");

    // Who may read it: RBAC's `get` on the nonResourceURL /metrics (system:monitoring has it).
    let (code, body) = s.curl("GET", "/metrics", Auth::Token("monitor-token"), None, None);
    assert!(code == 200 && body.contains("apiserver_request_total"), "system:monitoring reads /metrics: {code}");
    let (code, body) = s.curl("GET", "/metrics", Auth::Token("plain-token"), None, None);
    assert_eq!(code, 403, "a user without the grant: {body}");
    let (code, _) = s.curl("GET", "/metrics", Auth::Anonymous, None, None);
    assert!(code == 401 || code == 403, "anonymous /metrics: {code}");
}
