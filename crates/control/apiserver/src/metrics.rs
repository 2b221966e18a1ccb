//! Prometheus metrics with kube-apiserver's names, served on `/metrics` in the text exposition
//! format (0.0.4) by the `prometheus` crate: requests (`apiserver_request_total`,
//! `apiserver_request_duration_seconds`), watchers (`apiserver_registered_watchers`), objects
//! (`apiserver_storage_objects`, counted in the watch cache), store latencies
//! (`etcd_request_duration_seconds`, for both backends, by [`MeteredStore`]) and the process
//! (`process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_start_time_seconds`,
//! `process_open_fds`, read from `/proc` at scrape time) and the priority lanes of
//! [`crate::flowcontrol`] (`apiserver_flowcontrol_*`, by `priority_level`).
//!
//! The metrics are process-wide, as upstream's legacy registry is.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method};
use prometheus::{Counter, Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use strata_store::{Compare, KeyValue, ListResult, Op, Store, WatchStream};

use crate::resources::{self, Resource};
use crate::watchcache::WatchCache;

/// Upstream's buckets for request and etcd latencies.
const BUCKETS: &[f64] = &[0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0];

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    watchers: IntGaugeVec,
    objects: IntGaugeVec,
    store: HistogramVec,
    rss: Gauge,
    cpu: Counter,
    start: Gauge,
    fds: Gauge,
    flow: FlowMetrics,
}

/// Upstream's `apiserver_flowcontrol_*` metrics, labelled by `priority_level` only (strata has
/// no flow schemas).
struct FlowMetrics {
    executing: IntGaugeVec,
    inqueue: IntGaugeVec,
    seats: IntGaugeVec,
    dispatched: IntCounterVec,
    rejected: IntCounterVec,
    wait: HistogramVec,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new("apiserver_request_total", "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code."),
        &["verb", "dry_run", "group", "version", "resource", "subresource", "scope", "component", "code"],
    )?;
    let durations = HistogramVec::new(
        HistogramOpts::new("apiserver_request_duration_seconds", "Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.")
            .buckets(BUCKETS.to_vec()),
        &["verb", "dry_run", "group", "version", "resource", "subresource", "scope", "component"],
    )?;
    let watchers = IntGaugeVec::new(Opts::new("apiserver_registered_watchers", "Number of currently registered watchers for a given resources"), &["group", "version", "kind"])?;
    let objects = IntGaugeVec::new(Opts::new("apiserver_storage_objects", "Number of stored objects at the time of last check split by kind."), &["resource"])?;
    let store = HistogramVec::new(
        HistogramOpts::new("etcd_request_duration_seconds", "Etcd request latency in seconds for each operation and object type.").buckets(BUCKETS.to_vec()),
        &["operation", "type"],
    )?;
    let rss = Gauge::new("process_resident_memory_bytes", "Resident memory size in bytes.")?;
    let cpu = Counter::new("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.")?;
    let start = Gauge::new("process_start_time_seconds", "Start time of the process since unix epoch in seconds.")?;
    let fds = Gauge::new("process_open_fds", "Number of open file descriptors.")?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(durations.clone()))?;
    registry.register(Box::new(watchers.clone()))?;
    registry.register(Box::new(objects.clone()))?;
    registry.register(Box::new(store.clone()))?;
    registry.register(Box::new(rss.clone()))?;
    registry.register(Box::new(cpu.clone()))?;
    registry.register(Box::new(start.clone()))?;
    registry.register(Box::new(fds.clone()))?;
    let level = &["priority_level"];
    let flow = FlowMetrics {
        executing: IntGaugeVec::new(Opts::new("apiserver_flowcontrol_current_executing_requests", "Number of requests in initial (for a WATCH) or any (for a non-WATCH) execution stage in the API Priority and Fairness subsystem"), level)?,
        inqueue: IntGaugeVec::new(Opts::new("apiserver_flowcontrol_current_inqueue_requests", "Number of requests currently pending in queues of the API Priority and Fairness subsystem"), level)?,
        seats: IntGaugeVec::new(Opts::new("apiserver_flowcontrol_nominal_limit_seats", "Nominal number of execution seats configured for each priority level (0: no limit)"), level)?,
        dispatched: IntCounterVec::new(Opts::new("apiserver_flowcontrol_dispatched_requests_total", "Number of requests executed by API Priority and Fairness subsystem"), level)?,
        rejected: IntCounterVec::new(Opts::new("apiserver_flowcontrol_rejected_requests_total", "Number of requests rejected by API Priority and Fairness subsystem"), &["priority_level", "reason"])?,
        wait: HistogramVec::new(
            HistogramOpts::new("apiserver_flowcontrol_request_wait_duration_seconds", "Length of time a request spent waiting in its queue").buckets(BUCKETS.to_vec()),
            level,
        )?,
    };
    registry.register(Box::new(flow.executing.clone()))?;
    registry.register(Box::new(flow.inqueue.clone()))?;
    registry.register(Box::new(flow.seats.clone()))?;
    registry.register(Box::new(flow.dispatched.clone()))?;
    registry.register(Box::new(flow.rejected.clone()))?;
    registry.register(Box::new(flow.wait.clone()))?;
    Ok(Metrics { registry, requests, durations, watchers, objects, store, rss, cpu, start, fds, flow })
}

static METRICS: LazyLock<Option<Metrics>> = LazyLock::new(|| match build() {
    Ok(m) => Some(m),
    Err(e) => {
        tracing::warn!(error = %e, "metrics are off");
        None
    }
});

/// A request's labels, as upstream's `CleanVerb` and `CleanScope` make them.
struct RequestLabels {
    verb: String,
    dry_run: String,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: &'static str,
}

fn request_labels(method: &Method, path: &str, query: Option<&str>, headers: &HeaderMap) -> RequestLabels {
    let q = query.unwrap_or("");
    let param = |k: &str| q.split('&').find_map(|p| p.strip_prefix(k).and_then(|v| v.strip_prefix('='))).unwrap_or("");
    let dry_run = if param("dryRun").is_empty() { String::new() } else { "All".to_string() };
    let info = crate::api::parse_path(path.trim_end_matches('/')).ok().flatten();
    let Some(info) = info else {
        return RequestLabels { verb: method.as_str().to_string(), dry_run, group: String::new(), version: String::new(), resource: String::new(), subresource: String::new(), scope: "" };
    };
    let watch = matches!(param("watch"), "true" | "1");
    let apply = headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.starts_with("application/apply-patch"));
    let verb = match (method.as_str(), info.name.is_some()) {
        ("GET", false) if watch => "WATCH",
        ("GET", false) => "LIST",
        ("DELETE", false) => "DELETECOLLECTION",
        ("PATCH", _) if apply => "APPLY",
        (m, _) => m,
    }
    .to_string();
    let scope = if info.name.is_some() || method == Method::POST {
        "resource"
    } else if info.namespace.is_some() {
        "namespace"
    } else {
        "cluster"
    };
    RequestLabels {
        verb,
        dry_run,
        group: info.resource.group.to_string(),
        version: info.resource.version.to_string(),
        resource: info.resource.plural.to_string(),
        subresource: info.subresource.unwrap_or_default(),
        scope,
    }
}

/// Count one served request and its latency (for a watch: until its response started).
pub fn record_request(method: &Method, path: &str, query: Option<&str>, headers: &HeaderMap, code: u16, elapsed: Duration) {
    let Some(m) = METRICS.as_ref() else { return };
    let l = request_labels(method, path, query, headers);
    let code = code.to_string();
    let base = [l.verb.as_str(), &l.dry_run, &l.group, &l.version, &l.resource, &l.subresource, l.scope, "apiserver"];
    let mut with_code = base.to_vec();
    with_code.push(&code);
    m.requests.with_label_values(&with_code).inc();
    m.durations.with_label_values(&base).observe(elapsed.as_secs_f64());
}

/// A lane's seats (0: no limit).
pub fn flowcontrol_seats(level: &str, seats: usize) {
    if let Some(m) = METRICS.as_ref() {
        m.flow.seats.with_label_values(&[level]).set(seats as i64);
    }
}

/// A request took a seat after waiting `waited` for it.
pub fn flowcontrol_dispatched(level: &str, waited: Duration) {
    if let Some(m) = METRICS.as_ref() {
        m.flow.dispatched.with_label_values(&[level]).inc();
        m.flow.wait.with_label_values(&[level]).observe(waited.as_secs_f64());
    }
}

/// A request got a seat (+1) or gave it back (-1).
pub fn flowcontrol_executing(level: &str, delta: i64) {
    if let Some(m) = METRICS.as_ref() {
        m.flow.executing.with_label_values(&[level]).add(delta);
    }
}

/// A request started (+1) or stopped (-1) waiting for a seat.
pub fn flowcontrol_inqueue(level: &str, delta: i64) {
    if let Some(m) = METRICS.as_ref() {
        m.flow.inqueue.with_label_values(&[level]).add(delta);
    }
}

/// A request was refused a seat (`queue-full`, `time-out`).
pub fn flowcontrol_rejected(level: &str, reason: &str) {
    if let Some(m) = METRICS.as_ref() {
        m.flow.rejected.with_label_values(&[level, reason]).inc();
    }
}

/// Counts a watcher in `apiserver_registered_watchers` while it lives.
pub struct WatcherGuard(Option<prometheus::IntGauge>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            g.dec();
        }
    }
}

pub fn watcher(r: &Resource) -> WatcherGuard {
    let g = METRICS.as_ref().map(|m| m.watchers.with_label_values(&[r.group, r.version, r.kind]));
    if let Some(g) = &g {
        g.inc();
    }
    WatcherGuard(g)
}

/// The process's own figures from `/proc/self`: (resident bytes, CPU seconds, start time in
/// seconds since the epoch, open file descriptors).
fn process_figures() -> Option<(f64, f64, f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    // SAFETY: sysconf only reads configuration values.
    let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK) as f64, libc::sysconf(libc::_SC_PAGESIZE) as f64) };
    let cpu = (num(14)? + num(15)?) / ticks;
    let rss = num(24)? * page;
    let boot = std::fs::read_to_string("/proc/stat").ok()?.lines().find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<f64>().ok()))?;
    let start = boot + num(22)? / ticks;
    let fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
    Some((rss, cpu, start, fds))
}

/// The text exposition of every metric, with the object counts and process figures taken now.
pub fn render(cache: &WatchCache) -> String {
    let Some(m) = METRICS.as_ref() else { return String::new() };
    for r in resources::RESOURCES {
        let n = cache.count(&r.key_prefix());
        m.objects.with_label_values(&[&r.group_resource()]).set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    if let Some((rss, cpu, start, fds)) = process_figures() {
        m.rss.set(rss);
        m.start.set(start);
        m.fds.set(fds);
        let more = cpu - m.cpu.get();
        if more > 0.0 {
            m.cpu.inc_by(more);
        }
    }
    let families = m.registry.gather();
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::warn!(error = %e, "encoding metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The `type` label of a store key: the resource it holds (`configmaps`, `deployments.apps`).
fn key_type(key: &str) -> String {
    let mut parts = key.strip_prefix("/registry/").unwrap_or("").split('/');
    match (parts.next(), parts.next()) {
        (Some("core"), Some(plural)) => plural.to_string(),
        (Some(group), Some(plural)) if !group.is_empty() => format!("{plural}.{group}"),
        _ => String::new(),
    }
}

fn observe(operation: &str, key: &str, started: Instant) {
    if let Some(m) = METRICS.as_ref() {
        m.store.with_label_values(&[operation, &key_type(key)]).observe(started.elapsed().as_secs_f64());
    }
}

/// A [`Store`] that times every call into `etcd_request_duration_seconds` (whatever the
/// backend: the name is upstream's).
pub struct MeteredStore(pub Arc<dyn Store>);

#[async_trait::async_trait]
impl Store for MeteredStore {
    async fn get(&self, key: &str) -> strata_store::Result<Option<KeyValue>> {
        let t = Instant::now();
        let r = self.0.get(key).await;
        observe("get", key, t);
        r
    }
    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> strata_store::Result<ListResult> {
        let t = Instant::now();
        let r = self.0.list(prefix, start_after, limit).await;
        observe("list", prefix, t);
        r
    }
    async fn list_at(&self, prefix: &str, revision: u64, start_after: Option<&str>, limit: usize) -> strata_store::Result<ListResult> {
        let t = Instant::now();
        let r = self.0.list_at(prefix, revision, start_after, limit).await;
        observe("list", prefix, t);
        r
    }
    async fn readable(&self, revision: u64) -> strata_store::Result<()> {
        self.0.readable(revision).await
    }
    async fn count(&self, prefix: &str) -> strata_store::Result<u64> {
        let t = Instant::now();
        let r = self.0.count(prefix).await;
        observe("count", prefix, t);
        r
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> strata_store::Result<u64> {
        let t = Instant::now();
        let r = self.0.create(key, value).await;
        observe("create", key, t);
        r
    }
    async fn update(&self, key: &str, value: Vec<u8>, expected: u64) -> strata_store::Result<u64> {
        let t = Instant::now();
        let r = self.0.update(key, value, expected).await;
        observe("update", key, t);
        r
    }
    async fn delete(&self, key: &str, expected: u64) -> strata_store::Result<KeyValue> {
        let t = Instant::now();
        let r = self.0.delete(key, expected).await;
        observe("delete", key, t);
        r
    }
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> strata_store::Result<u64> {
        let key = match ops.first() {
            Some(Op::Put(k, _) | Op::Delete(k)) => k.clone(),
            None => String::new(),
        };
        let t = Instant::now();
        let r = self.0.txn(compares, ops).await;
        observe("txn", &key, t);
        r
    }
    async fn watch(&self, prefix: &str, after: u64) -> strata_store::Result<WatchStream> {
        let t = Instant::now();
        let r = self.0.watch(prefix, after).await;
        observe("watch", prefix, t);
        r
    }
    async fn revision(&self) -> strata_store::Result<u64> {
        let t = Instant::now();
        let r = self.0.revision().await;
        observe("revision", "", t);
        r
    }
    async fn compact(&self, revision: u64) -> strata_store::Result<()> {
        let t = Instant::now();
        let r = self.0.compact(revision).await;
        observe("compact", "", t);
        r
    }
    async fn stale(&self, key: &str) -> strata_store::Result<bool> {
        self.0.stale(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_as_upstream_cleans_them() {
        let h = HeaderMap::new();
        let l = request_labels(&Method::GET, "/api/v1/namespaces/d/configmaps", Some("watch=1"), &h);
        assert_eq!((l.verb.as_str(), l.resource.as_str(), l.scope, l.group.as_str(), l.version.as_str()), ("WATCH", "configmaps", "namespace", "", "v1"));
        let l = request_labels(&Method::GET, "/apis/apps/v1/deployments", None, &h);
        assert_eq!((l.verb.as_str(), l.scope, l.group.as_str()), ("LIST", "cluster", "apps"));
        let l = request_labels(&Method::POST, "/api/v1/namespaces/d/pods", Some("dryRun=All"), &h);
        assert_eq!((l.verb.as_str(), l.scope, l.dry_run.as_str()), ("POST", "resource", "All"));
        let l = request_labels(&Method::PUT, "/apis/apps/v1/namespaces/d/deployments/web/scale", None, &h);
        assert_eq!((l.verb.as_str(), l.subresource.as_str(), l.scope), ("PUT", "scale", "resource"));
        let mut apply = HeaderMap::new();
        apply.insert("content-type", "application/apply-patch+yaml".parse().expect("header"));
        assert_eq!(request_labels(&Method::PATCH, "/api/v1/namespaces/d/configmaps/x", None, &apply).verb, "APPLY");
        assert_eq!(request_labels(&Method::DELETE, "/api/v1/namespaces/d/configmaps", None, &h).verb, "DELETECOLLECTION");
        let l = request_labels(&Method::GET, "/healthz", None, &h);
        assert_eq!((l.verb.as_str(), l.resource.as_str(), l.scope), ("GET", "", ""));
        assert_eq!(key_type("/registry/apps/deployments/d/web"), "deployments.apps");
        assert_eq!(key_type("/registry/core/configmaps/d/x"), "configmaps");
        assert_eq!(key_type(""), "");
    }

    #[test]
    fn process_figures_are_read() {
        let (rss, cpu, start, fds) = process_figures().expect("/proc");
        assert!(rss > 0.0 && cpu >= 0.0 && fds > 0.0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
        assert!(start <= now + 1.0 && start > now - 86400.0 * 365.0, "{start} vs {now}");
    }
}
