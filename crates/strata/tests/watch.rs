//! Watches against a real `strata server`: what many watches cost the server (memory per
//! watch, and that it comes back when they close), delivery to all of them, selector
//! transitions, bookmarks, future resourceVersions, slow watchers and the long-running request
//! limit. The client is hyper over TLS with the admin certificate, HTTP/2 like client-go.

mod common;

on_both_backends!(
    many_watches_cost_little_and_memory_comes_back,
    watch_from_a_future_resource_version_waits_then_is_too_large,
    a_watcher_that_does_not_read_is_disconnected,
    selector_transitions_are_added_and_deleted,
    bookmarks_carry_the_cache_revision,
    streaming_lists_end_their_initial_events_with_a_bookmark,
);

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use hyper::client::conn::http2::SendRequest;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};

use common::server::{ApiServer, Backend};
use common::tls::admin_tls;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// An HTTP/2 connection as the admin; `window` limits what the server may send on one stream
/// before the client reads it.
async fn connect(
    s: &ApiServer,
    window: Option<u32>,
) -> (SendRequest<Body>, tokio::task::JoinHandle<()>) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
        .await
        .expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let stream = admin_tls(&s.data_dir().join("pki"))
        .connect(name, tcp)
        .await
        .expect("tls");
    let mut b = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    if let Some(w) = window {
        b.initial_stream_window_size(w);
    }
    let (send, conn) = b.handshake(TokioIo::new(stream)).await.expect("h2");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, task)
}

async fn request(
    send: &mut SendRequest<Body>,
    method: &str,
    path: &str,
    body: Option<String>,
) -> hyper::Response<hyper::body::Incoming> {
    let req = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/json")
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .expect("request");
    send.ready().await.expect("ready");
    send.send_request(req).await.expect("send")
}

async fn call(
    send: &mut SendRequest<Body>,
    method: &str,
    path: &str,
    body: Option<String>,
) -> (u16, serde_json::Value) {
    let resp = request(send, method, path, body).await;
    let code = resp.status().as_u16();
    let bytes = axum::body::to_bytes(Body::new(resp.into_body()), 64 << 20)
        .await
        .expect("body");
    (
        code,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

fn rv_of(v: &serde_json::Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .expect("a resourceVersion")
}

/// A watch's lines as they arrive.
struct Lines {
    body: futures_util::stream::BoxStream<'static, Result<Bytes, axum::Error>>,
    buf: Vec<u8>,
}

impl Lines {
    fn new(resp: hyper::Response<hyper::body::Incoming>) -> Lines {
        Lines {
            body: Body::new(resp.into_body()).into_data_stream().boxed(),
            buf: Vec::new(),
        }
    }

    /// The next event, or None at the end of the stream (or on an error).
    async fn next(&mut self) -> Option<serde_json::Value> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(serde_json::from_slice(&line).expect("an event is one JSON line"));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }

    /// The next event within `t`.
    async fn next_within(&mut self, t: Duration) -> Option<serde_json::Value> {
        tokio::time::timeout(t, self.next()).await.ok().flatten()
    }
}

fn configmap(name: &str, labels: serde_json::Value, size: usize) -> String {
    let filler: String = (0..size)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    serde_json::json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": name, "labels": labels }, "data": { "v": filler } }).to_string()
}

/// 300 watches from "now" (each first receives the namespace's ~2 MB of ConfigMaps as ADDED
/// events): the server's memory grows by little per watch (on one shared cache: the objects are
/// held once), every watch receives a later event, and the memory comes back when they close.
fn many_watches_cost_little_and_memory_comes_back(backend: Backend) {
    const WATCHES: usize = 300;
    const PER_CONN: usize = 50;
    const OBJECTS: usize = 20;
    let s = ApiServer::start(backend);
    s.ok(&["create", "namespace", "mem"]);
    let pid = s.pid().expect("server pid");
    runtime().block_on(async {
        let (mut c, _t) = connect(&s, None).await;
        for i in 0..OBJECTS {
            let (code, v) = call(&mut c, "POST", "/api/v1/namespaces/mem/configmaps", Some(configmap(&format!("cm-{i:02}"), serde_json::json!({}), 100_000)))
                .await;
            assert_eq!(code, 201, "{v}");
        }
        let path = "/api/v1/namespaces/mem/configmaps?watch=1";
        // Warm up (threads, TLS, allocator arenas), then take the baseline.
        for _ in 0..3 {
            let mut w = Lines::new(request(&mut c, "GET", path, None).await);
            for _ in 0..OBJECTS {
                w.next_within(Duration::from_secs(30)).await.expect("initial event");
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let base = rss_kib(pid);

        let mut conns = Vec::new();
        let mut watches = Vec::new();
        for i in 0..WATCHES {
            if i % PER_CONN == 0 {
                conns.push(connect(&s, None).await);
            }
            let send = &mut conns.last_mut().expect("a connection").0;
            watches.push(Lines::new(request(send, "GET", path, None).await));
        }
        // Every watch receives the whole namespace first.
        let mut tasks = Vec::new();
        for mut w in watches {
            tasks.push(tokio::spawn(async move {
                for n in 0..OBJECTS {
                    let ev = w.next_within(Duration::from_secs(120)).await.unwrap_or_else(|| panic!("initial event {n}"));
                    assert_eq!(ev["type"], "ADDED");
                }
                w
            }));
        }
        let mut watches = Vec::new();
        for t in tasks {
            watches.push(t.await.expect("watch task"));
        }
        let loaded = rss_kib(pid);
        // ... and then a change.
        let (code, v) = call(&mut c, "POST", "/api/v1/namespaces/mem/configmaps", Some(configmap("after", serde_json::json!({}), 10))).await;
        assert_eq!(code, 201, "{v}");
        let mut tasks = Vec::new();
        for mut w in watches {
            tasks.push(tokio::spawn(async move {
                let ev = w.next_within(Duration::from_secs(60)).await.expect("the event after the initial state");
                assert_eq!((ev["type"].as_str(), ev["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("after")));
            }));
        }
        for t in tasks {
            t.await.expect("every watch got the new object");
        }
        let per_watch = loaded.saturating_sub(base) / WATCHES as u64;
        eprintln!("server RSS: {base} KiB idle, {loaded} KiB with {WATCHES} watches ({per_watch} KiB per watch)");
        assert!(per_watch < 400, "each watch costs {per_watch} KiB of server memory (the namespace holds ~2000 KiB)");

        drop(conns);
        let mut after = rss_kib(pid);
        let deadline = Instant::now() + Duration::from_secs(30);
        while after > base + 30 * 1024 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            after = rss_kib(pid);
        }
        eprintln!("server RSS after the watches closed: {after} KiB");
        assert!(after <= base + 30 * 1024, "memory stays after the watches closed: {base} KiB before, {loaded} KiB with them, {after} KiB after");
    });
}

/// A watch from a revision the server has not reached waits for it (an object written within
/// the wait is delivered); past the wait it fails with Kubernetes' "Too large resource version"
/// (504, retry after 1 s).
fn watch_from_a_future_resource_version_waits_then_is_too_large(backend: Backend) {
    let s = ApiServer::start(backend);
    s.ok(&["create", "namespace", "future"]);
    runtime().block_on(async {
        let (mut c, _t) = connect(&s, None).await;
        let (_, list) = call(&mut c, "GET", "/api/v1/namespaces/future/configmaps", None).await;
        let now = rv_of(&list);

        let wanted = now + 1000;
        let started = Instant::now();
        let resp = tokio::time::timeout(
            Duration::from_secs(30),
            request(
                &mut c,
                "GET",
                &format!("/api/v1/namespaces/future/configmaps?watch=1&resourceVersion={wanted}"),
                None,
            ),
        )
        .await
        .expect("an answer, not an endless empty stream");
        let code = resp.status().as_u16();
        let retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = tokio::time::timeout(
            Duration::from_secs(30),
            axum::body::to_bytes(Body::new(resp.into_body()), 1 << 20),
        )
        .await
        .expect("a finite body")
        .expect("body");
        let st: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("a Status: {}", String::from_utf8_lossy(&body)));
        assert_eq!(
            (code, st["reason"].as_str(), retry.as_deref()),
            (504, Some("Timeout"), Some("1")),
            "{st}"
        );
        let message = st["message"].as_str().unwrap_or("");
        assert!(
            message.starts_with(&format!(
                "Timeout: Too large resource version: {wanted}, current: "
            )),
            "{st}"
        );
        assert_eq!(
            st["details"]["causes"][0]["reason"], "ResourceVersionTooLarge",
            "{st}"
        );
        assert_eq!(st["details"]["retryAfterSeconds"], 1, "{st}");
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "it waited for the cache to catch up first"
        );

        // A revision reached while the watch waits is served.
        let (_, list) = call(&mut c, "GET", "/api/v1/namespaces/future/configmaps", None).await;
        let now = rv_of(&list);
        let (mut c2, _t2) = connect(&s, None).await;
        let watch = tokio::spawn(async move {
            let resp = request(
                &mut c2,
                "GET",
                &format!(
                    "/api/v1/namespaces/future/configmaps?watch=1&resourceVersion={}",
                    now + 1
                ),
                None,
            )
            .await;
            assert_eq!(resp.status().as_u16(), 200);
            Lines::new(resp).next_within(Duration::from_secs(30)).await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (code, _) = call(
            &mut c,
            "POST",
            "/api/v1/namespaces/future/configmaps",
            Some(configmap("one", serde_json::json!({}), 10)),
        )
        .await;
        assert_eq!(code, 201);
        let (code, _) = call(
            &mut c,
            "POST",
            "/api/v1/namespaces/future/configmaps",
            Some(configmap("two", serde_json::json!({}), 10)),
        )
        .await;
        assert_eq!(code, 201);
        let ev = watch.await.expect("watch").expect("an event");
        assert_eq!(
            (
                ev["type"].as_str(),
                ev["object"]["metadata"]["name"].as_str()
            ),
            (Some("ADDED"), Some("two")),
            "{ev}"
        );
    });
}

/// A client that stops reading its watch is disconnected once its queue is full, without
/// holding up anyone else; the server stays healthy.
fn a_watcher_that_does_not_read_is_disconnected(backend: Backend) {
    let s = ApiServer::start(backend);
    s.ok(&["create", "namespace", "slow"]);
    runtime().block_on(async {
        let (mut c, _t) = connect(&s, None).await;
        let (code, v) = call(&mut c, "POST", "/api/v1/namespaces/slow/configmaps", Some(configmap("x", serde_json::json!({}), 10_000))).await;
        assert_eq!(code, 201, "{v}");
        // The slow client: a 64 KiB window it never reopens.
        let (mut slow, slow_conn) = connect(&s, Some(65_535)).await;
        let resp = request(&mut slow, "GET", &format!("/api/v1/namespaces/slow/configmaps?watch=1&resourceVersion={}", rv_of(&v)), None).await;
        assert_eq!(resp.status().as_u16(), 200);
        // A well-behaved watcher alongside.
        let (mut fast, _ft) = connect(&s, None).await;
        let mut good = Lines::new(request(&mut fast, "GET", &format!("/api/v1/namespaces/slow/configmaps?watch=1&resourceVersion={}", rv_of(&v)), None).await);
        // More than the 1,024 events a watcher may have queued.
        const UPDATES: usize = 1_600;
        let reader = tokio::spawn(async move {
            for i in 0..UPDATES {
                let ev = good.next_within(Duration::from_secs(60)).await.unwrap_or_else(|| panic!("the reading watcher got event {i}"));
                assert_eq!(ev["object"]["data"]["n"], i.to_string());
            }
        });
        let mut last = v;
        for i in 0..UPDATES {
            let mut obj = last.clone();
            obj["data"]["n"] = serde_json::json!(i.to_string());
            let (code, v) = call(&mut c, "PUT", "/api/v1/namespaces/slow/configmaps/x", Some(obj.to_string())).await;
            assert_eq!(code, 200, "{v}");
            last = v;
        }
        reader.await.expect("the reading watcher got every event");
        // The slow one was cut off: its connection is gone, and what it can still read ends
        // before the last update.
        let closed = tokio::time::timeout(Duration::from_secs(30), slow_conn).await.is_ok();
        let mut lines = Lines::new(resp);
        let mut seen = 0;
        while let Some(ev) = lines.next_within(Duration::from_secs(5)).await {
            assert_eq!(ev["type"], "MODIFIED");
            seen += 1;
        }
        assert!(closed && seen < UPDATES, "the slow watcher was not disconnected (connection closed: {closed}; it still read {seen} of {UPDATES} events)");
        // Healthy: a new watch works.
        let (code, _) = call(&mut c, "GET", "/healthz", None).await;
        assert_eq!(code, 200);
        let mut again = Lines::new(request(&mut fast, "GET", "/api/v1/namespaces/slow/configmaps?watch=1", None).await);
        let ev = again.next_within(Duration::from_secs(30)).await.expect("the current state");
        assert_eq!(ev["object"]["data"]["n"], (UPDATES - 1).to_string());
    });
}

/// With a label selector, an object that starts matching arrives as ADDED and one that stops
/// matching as DELETED (its last matching state at the revision of the change), as upstream's
/// watch cache sends them.
fn selector_transitions_are_added_and_deleted(backend: Backend) {
    let s = ApiServer::start(backend);
    s.ok(&["create", "namespace", "sel"]);
    runtime().block_on(async {
        let (mut c, _t) = connect(&s, None).await;
        let mut w = Lines::new(
            request(
                &mut c,
                "GET",
                "/api/v1/namespaces/sel/configmaps?watch=1&labelSelector=app%3Dweb",
                None,
            )
            .await,
        );
        let cms = "/api/v1/namespaces/sel/configmaps";
        let (code, _) = call(
            &mut c,
            "POST",
            cms,
            Some(configmap("a", serde_json::json!({"app": "db"}), 10)),
        )
        .await;
        assert_eq!(code, 201);
        let patch = |labels: serde_json::Value| {
            Some(serde_json::json!({ "metadata": { "labels": labels } }).to_string())
        };
        let merge = |send: &mut SendRequest<Body>, body: Option<String>| {
            let req = Request::builder()
                .method("PATCH")
                .uri(format!("https://localhost{cms}/a"))
                .header("content-type", "application/merge-patch+json")
                .body(Body::from(body.unwrap_or_default()))
                .expect("request");
            let mut send = send.clone();
            async move {
                send.ready().await.expect("ready");
                let resp = send.send_request(req).await.expect("patch");
                let code = resp.status().as_u16();
                let bytes = axum::body::to_bytes(Body::new(resp.into_body()), 1 << 20)
                    .await
                    .expect("body");
                (
                    code,
                    serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default(),
                )
            }
        };
        let (code, now_web) = merge(&mut c, patch(serde_json::json!({"app": "web"}))).await;
        assert_eq!(code, 200);
        let (code, _) = merge(&mut c, patch(serde_json::json!({"app": "web", "x": "1"}))).await;
        assert_eq!(code, 200);
        let (code, gone) = merge(&mut c, patch(serde_json::json!({"app": "db"}))).await;
        assert_eq!(code, 200);
        let (code, _) = call(&mut c, "DELETE", &format!("{cms}/a"), None).await;
        assert_eq!(code, 200);
        let (code, _) = call(
            &mut c,
            "POST",
            cms,
            Some(configmap("b", serde_json::json!({"app": "web"}), 10)),
        )
        .await;
        assert_eq!(code, 201);
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let Some(ev) = w.next_within(Duration::from_secs(30)).await else {
                break;
            };
            seen.push((
                ev["type"].as_str().unwrap_or("").to_string(),
                ev["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                ev,
            ));
        }
        let kinds: Vec<(&str, &str)> = seen
            .iter()
            .map(|(t, n, _)| (t.as_str(), n.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("ADDED", "a"),
                ("MODIFIED", "a"),
                ("DELETED", "a"),
                ("ADDED", "b")
            ]
        );
        assert_eq!(rv_of(&seen[0].2["object"]), rv_of(&now_web));
        let deleted = &seen[2].2["object"];
        assert_eq!(
            deleted["metadata"]["labels"]["app"], "web",
            "the last state that matched: {deleted}"
        );
        assert_eq!(
            rv_of(deleted),
            rv_of(&gone),
            "at the revision of the change"
        );
    });
}

/// With allowWatchBookmarks, a watch gets a BOOKMARK carrying the revision the cache has
/// reached, even when nothing it watches changed, and one before its timeout ends it.
fn bookmarks_carry_the_cache_revision(backend: Backend) {
    let s = ApiServer::start(backend);
    s.ok(&["create", "namespace", "bm"]);
    runtime().block_on(async {
        let (mut c, _t) = connect(&s, None).await;
        let (_, list) = call(&mut c, "GET", "/api/v1/namespaces/bm/configmaps", None).await;
        let now = rv_of(&list);
        let mut w = Lines::new(
            request(&mut c, "GET", &format!("/api/v1/namespaces/bm/configmaps?watch=1&allowWatchBookmarks=true&timeoutSeconds=4&resourceVersion={now}"), None).await,
        );
        // A write elsewhere moves the revision on.
        let (code, other) = call(&mut c, "POST", "/api/v1/namespaces/default/configmaps", Some(configmap("elsewhere", serde_json::json!({}), 10))).await;
        assert_eq!(code, 201);
        let started = Instant::now();
        let ev = w.next_within(Duration::from_secs(10)).await.expect("a bookmark before the timeout");
        assert_eq!(ev["type"], "BOOKMARK", "{ev}");
        assert_eq!((ev["object"]["kind"].as_str(), ev["object"]["apiVersion"].as_str()), (Some("ConfigMap"), Some("v1")));
        assert!(rv_of(&ev["object"]) >= rv_of(&other), "the bookmark carries the revision reached: {ev}");
        assert!(w.next_within(Duration::from_secs(10)).await.is_none(), "the watch ends at its timeout");
        assert!(started.elapsed() < Duration::from_secs(9));
    });
}

/// client-go's streaming lists (the WatchListClient feature kube-controller-manager 1.32 turns
/// on): a watch with `sendInitialEvents=true&resourceVersionMatch=NotOlderThan` gets the current
/// state as ADDED events, then a BOOKMARK annotated `k8s.io/initial-events-end` at that state's
/// revision, then changes; `sendInitialEvents=false` gets only changes; a mismatched query is
/// 422 as upstream's `validateWatchOptions`, and a revision not reached is too large.
fn streaming_lists_end_their_initial_events_with_a_bookmark(backend: Backend) {
    let s = ApiServer::start(backend);
    s.ok(&["create", "namespace", "sl"]);
    runtime().block_on(async {
        let (mut c, _t) = connect(&s, None).await;
        let base = "/api/v1/namespaces/sl/configmaps";
        let mut made = 0;
        for name in ["a", "b"] {
            let (code, cm) = call(&mut c, "POST", base, Some(configmap(name, serde_json::json!({}), 10))).await;
            assert_eq!(code, 201, "{cm}");
            made = rv_of(&cm);
        }
        let mut expected = vec!["a".to_string(), "b".to_string()];
        for (i, rv) in ["", "0", &made.to_string()].into_iter().enumerate() {
            let q = format!("{base}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion={rv}");
            let mut w = Lines::new(request(&mut c, "GET", &q, None).await);
            let mut names = Vec::new();
            let end = loop {
                let ev = w.next_within(Duration::from_secs(10)).await.unwrap_or_else(|| panic!("rv {rv:?}: no initial-events-end bookmark after {names:?}"));
                match ev["type"].as_str() {
                    Some("ADDED") => names.push(ev["object"]["metadata"]["name"].as_str().unwrap_or("").to_string()),
                    Some("BOOKMARK") => break ev,
                    _ => panic!("rv {rv:?}: {ev}"),
                }
            };
            expected.sort();
            assert_eq!(names, expected, "rv {rv:?}");
            assert_eq!(end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true", "{end}");
            assert!(rv_of(&end["object"]) >= made, "the bookmark carries the state's revision: {end}");
            // Then the changes after that state.
            let (code, cm) = call(&mut c, "POST", base, Some(configmap(&format!("after-{i}"), serde_json::json!({}), 10))).await;
            expected.push(format!("after-{i}"));
            assert_eq!(code, 201, "{cm}");
            let ev = w.next_within(Duration::from_secs(10)).await.expect("a later change");
            assert_eq!((ev["type"].as_str(), ev["object"]["metadata"]["name"].as_str()), (Some("ADDED"), cm["metadata"]["name"].as_str()), "{ev}");
        }
        // Without the initial state: only what changes from now on.
        let mut w = Lines::new(request(&mut c, "GET", &format!("{base}?watch=1&sendInitialEvents=false&resourceVersionMatch=NotOlderThan&resourceVersion="), None).await);
        let (_, cm) = call(&mut c, "POST", base, Some(configmap("later", serde_json::json!({}), 10))).await;
        let ev = w.next_within(Duration::from_secs(10)).await.expect("the change");
        assert_eq!((ev["type"].as_str(), ev["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("later")), "{ev} {cm}");

        for (q, want) in [
            ("sendInitialEvents=true", "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"),
            ("resourceVersionMatch=NotOlderThan&resourceVersion=1", "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"),
            ("sendInitialEvents=true&resourceVersionMatch=Exact&resourceVersion=1", "ListOptions.meta.k8s.io \"\" is invalid: [resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan, resourceVersionMatch: Unsupported value: \"Exact\": supported values: \"NotOlderThan\"]"),
        ] {
            let (code, st) = call(&mut c, "GET", &format!("{base}?watch=1&{q}"), None).await;
            assert_eq!((code, st["reason"].as_str()), (422, Some("Invalid")), "{q}: {st}");
            assert_eq!(st["message"], want, "{q}");
        }
        let (code, st) = call(&mut c, "GET", &format!("{base}?watch=1&sendInitialEvents=maybe&resourceVersionMatch=NotOlderThan"), None).await;
        assert_eq!(code, 400, "{st}");
        let far = made + 1_000_000;
        let (code, st) = call(&mut c, "GET", &format!("{base}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion={far}"), None).await;
        assert_eq!((code, st["reason"].as_str()), (504, Some("Timeout")), "{st}");
    });
}

/// Beyond `--max-long-running-requests` concurrent watches, a watch is refused with 429 and
/// Retry-After; once one closes, a new one is accepted.
#[test]
fn watches_beyond_the_limit_are_429() {
    let s = ApiServer::start_with(Backend::Embedded, &["--max-long-running-requests", "3"]);
    runtime().block_on(async {
        let (mut c, _t) = connect(&s, None).await;
        let mut open = Vec::new();
        for _ in 0..3 {
            let resp = request(
                &mut c,
                "GET",
                "/api/v1/namespaces/default/configmaps?watch=1",
                None,
            )
            .await;
            assert_eq!(resp.status().as_u16(), 200);
            open.push(resp);
        }
        let resp = request(
            &mut c,
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=1",
            None,
        )
        .await;
        let code = resp.status().as_u16();
        let retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = axum::body::to_bytes(Body::new(resp.into_body()), 1 << 20)
            .await
            .expect("body");
        let st: serde_json::Value = serde_json::from_slice(&body).expect("a Status");
        assert_eq!(
            (code, st["reason"].as_str(), retry.as_deref()),
            (429, Some("TooManyRequests"), Some("1")),
            "{st}"
        );
        // Other requests are not long-running and still served.
        let (code, _) = call(&mut c, "GET", "/api/v1/namespaces/default/configmaps", None).await;
        assert_eq!(code, 200);
        drop(open.pop());
        let mut ok = false;
        for _ in 0..50 {
            let resp = request(
                &mut c,
                "GET",
                "/api/v1/namespaces/default/configmaps?watch=1",
                None,
            )
            .await;
            if resp.status().as_u16() == 200 {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "a closed watch frees its place");
    });
}
