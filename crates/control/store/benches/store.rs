//! The store's own cost, embedded against etcd in one run (`cargo bench -p strata-store --bench
//! store`): what the API server asks of it when pods are created and bound, without the API
//! server around it.
//!
//! Each backend gets `BENCH_KEYS` (default 20,000) keys of `BENCH_VALUE` bytes (default 2,500,
//! about a pod), created from `BENCH_WRITERS` (default 64) concurrent tasks, then as many
//! unconditional updates of random keys (a binding, a status), then full lists of the prefix.
//! Reported: writes per second, p50/p99 latency, CPU per write (the whole process: this
//! bench's tasks, the store's writer thread, and for etcd its server process too, read from
//! `/proc`), and the time to list every key in pages of 500. The etcd peer is the machine's
//! `etcd` on loopback with a throwaway data dir (skipped, and said so, when there is none).

#[path = "../tests/common/etcd.rs"]
mod etcd_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_store::embedded::Embedded;
use strata_store::etcd::Etcd;
use strata_store::Store;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// User + system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: state is 3rd, utime 14th, stime 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
}

struct Phase {
    writes_per_s: f64,
    p50: f64,
    p99: f64,
    cpu_us: f64,
}

/// `total` writes from `writers` tasks; `write(i)` does the i-th.
async fn phase<F, Fut>(writers: usize, total: usize, cpu: &dyn Fn() -> f64, write: F) -> Phase
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let write = Arc::new(write);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (cpu0, t0) = (cpu(), Instant::now());
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (write, next) = (write.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return lat;
                }
                let t = Instant::now();
                write(i).await;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut lat = Vec::with_capacity(total);
    for t in tasks {
        lat.extend(t.await.expect("writer task"));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    lat.sort();
    Phase { writes_per_s: total as f64 / elapsed, p50: pct(&lat, 0.5), p99: pct(&lat, 0.99), cpu_us: (cpu() - cpu0) / total as f64 * 1e6 }
}

async fn run(name: &str, store: Arc<dyn Store>, cpu: &dyn Fn() -> f64) {
    let (keys, value, writers) = (env_usize("BENCH_KEYS", 20_000), env_usize("BENCH_VALUE", 2_500), env_usize("BENCH_WRITERS", 64));
    let key = |i: usize| format!("/registry/pods/default/pod-{:08x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32);
    let body = Arc::new(vec![b'x'; value]);
    let create = {
        let (store, body) = (store.clone(), body.clone());
        phase(writers, keys, cpu, move |i| {
            let (store, body, k) = (store.clone(), body.clone(), key(i));
            async move {
                store.create(&k, body.to_vec()).await.expect("create");
            }
        })
        .await
    };
    let update = {
        let (store, body) = (store.clone(), body.clone());
        phase(writers, keys, cpu, move |i| {
            // A different key each time, in an order unrelated to the creates'.
            let (store, body, k) = (store.clone(), body.clone(), key((i * 7919) % keys));
            async move {
                store.update(&k, body.to_vec(), 0).await.expect("update");
            }
        })
        .await
    };
    let mut lists = Vec::new();
    for _ in 0..5 {
        // In pages of 500, as the API server reads a long list (and as etcd's 4 MiB message
        // limit requires).
        let t = Instant::now();
        let (mut after, mut n) = (None::<String>, 0);
        loop {
            let page = store.list("/registry/pods/", after.as_deref(), 500).await.expect("list");
            n += page.items.len();
            after = page.items.last().map(|kv| kv.key.clone());
            if !page.more {
                break;
            }
        }
        assert_eq!(n, keys);
        lists.push(t.elapsed());
    }
    lists.sort();
    for (what, p) in [("create", &create), ("update", &update)] {
        println!(
            "{name:>8} {what:>6} {:>9.0} {:>8.2} {:>8.2} {:>10.1} {:>9.1}",
            p.writes_per_s,
            p.p50,
            p.p99,
            p.cpu_us,
            pct(&lists, 0.5)
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!(
        "{} keys of {} bytes, {} writers; CPU per write is this process's (and etcd's) user + system time",
        env_usize("BENCH_KEYS", 20_000),
        env_usize("BENCH_VALUE", 2_500),
        env_usize("BENCH_WRITERS", 64)
    );
    println!("{:>8} {:>6} {:>9} {:>8} {:>8} {:>10} {:>9}", "backend", "op", "writes/s", "p50 ms", "p99 ms", "CPU us/wr", "list ms");
    let me = std::process::id();
    let only = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "embedded,etcd".into());
    if only.contains("embedded") {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("store.redb");
        let store: Arc<dyn Store> = Arc::new(Embedded::open(&path).expect("open"));
        run("embedded", store, &|| cpu_seconds(me)).await;
    }
    if only.contains("etcd") {
        let started = if etcd_server::EtcdServer::available() { etcd_server::EtcdServer::start().await.ok() } else { None };
        match started {
            Some(etcd) => {
                let store: Arc<dyn Store> = Arc::new(Etcd::connect(std::slice::from_ref(&etcd.endpoint)).await.expect("connect"));
                let pid = etcd.pid();
                run("etcd", store, &|| cpu_seconds(me) + cpu_seconds(pid)).await;
            }
            None => println!("    etcd (no `etcd` binary, or it did not start: skipped)"),
        }
    }
}
