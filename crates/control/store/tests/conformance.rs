//! The store conformance suite: one set of checks, written once against `Arc<dyn Store>`, run
//! against every backend (like containerd's snapshotter testsuite). Each check gets a fresh,
//! empty store from its backend's fixture:
//! - `embedded::*` — a redb file in a temporary directory;
//! - `etcd::*` — a real `etcd` (Debian's `etcd-server`) started per test on free loopback
//!   ports with a temporary data dir, and killed when the test ends. Without `etcd` on the PATH
//!   those tests fail; they never skip.
//!
//! Backend-specific tests follow the suite: reopening and SIGKILL crash safety for the embedded
//! store (the crash test drives `examples/crash_writer.rs`, which `cargo test` builds), and
//! namespace isolation for etcd.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

#[path = "common/etcd.rs"]
mod etcd_server;

use futures_util::StreamExt;
use strata_store::{Compare, Error, Event, EventKind, KeyValue, Op, Store, WatchStream};

/// How long a watch may take to deliver an expected event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Generates one test per check per backend: `embedded::create_get`, `etcd::create_get`, ...
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let fixture = crate::fixtures::embedded();
                    crate::checks::$check(fixture.store.clone()).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let fixture = crate::fixtures::etcd().await;
                    crate::checks::$check(fixture.store.clone()).await;
                }
            )*
        }
    };
}

conformance!(
    create_get,
    create_existing_is_already_exists,
    update_and_delete_compare_revisions,
    missing_keys_are_not_found,
    unconditional_update_and_delete,
    revisions_increase_and_track_create_and_mod,
    list_respects_prefix_boundaries_and_order,
    list_paginates_2000_keys,
    count_counts_a_prefix,
    txn_applies_all_at_one_revision_or_nothing,
    watch_replays_history_then_goes_live,
    watch_after_revision_skips_older_events,
    watch_delivers_txn_events_once,
    watch_has_no_gap_or_duplicate_at_the_history_live_seam,
    watch_before_compaction_is_compacted,
    concurrent_writers_get_distinct_revisions,
    list_at_shows_the_state_at_a_revision,
    list_at_pages_one_snapshot_while_writes_go_on,
    list_at_before_compaction_is_compacted,
);

// ---------------------------------------------------------------------------------------------
// Helpers

/// The next event, failing the test on an error, the end of the stream or a timeout.
async fn next(w: &mut WatchStream) -> Event {
    match tokio::time::timeout(EVENT_TIMEOUT, w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {EVENT_TIMEOUT:?}"),
    }
}

/// Assert nothing more arrives for a moment.
async fn quiet(w: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), w.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

/// A watch at a compacted revision fails: from `watch` itself, or as the stream's first item
/// when the compaction raced with it (the trait allows both).
async fn assert_compacted(s: &Arc<dyn Store>, prefix: &str, after: u64) {
    match s.watch(prefix, after).await {
        Err(Error::Compacted { requested, compacted }) => {
            assert_eq!(requested, after);
            assert!(compacted > after + 1, "compacted at {compacted}, yet {} was requested", after + 1);
        }
        Err(e) => panic!("watch after {after}: expected Compacted, got {e}"),
        Ok(mut w) => match tokio::time::timeout(EVENT_TIMEOUT, w.next()).await {
            Ok(Some(Err(Error::Compacted { .. }))) => {}
            other => panic!("watch after {after}: expected Compacted, got {other:?}"),
        },
    }
}

fn keys(items: &[KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

/// Create many keys, a few dozen at a time (for backends where each write is a round trip).
async fn create_all(s: &Arc<dyn Store>, keys: Vec<String>) {
    futures_util::stream::iter(keys)
        .map(|k| {
            let s = s.clone();
            async move { s.create(&k, k.clone().into_bytes()).await.map_err(|e| format!("{k}: {e}")) }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// The checks: each gets a fresh, empty store.

mod checks {
    use super::*;

    pub async fn create_get(s: Arc<dyn Store>) {
        assert_eq!(s.get("/k").await.unwrap(), None);
        let rev = s.create("/k", b"v".to_vec()).await.unwrap();
        let kv = s.get("/k").await.unwrap().unwrap();
        assert_eq!(kv, KeyValue { key: "/k".into(), value: b"v".to_vec(), create_revision: rev, mod_revision: rev });
        // Empty values are values.
        let rev = s.create("/empty", Vec::new()).await.unwrap();
        let kv = s.get("/empty").await.unwrap().unwrap();
        assert_eq!((kv.value.len(), kv.mod_revision), (0, rev));
    }

    pub async fn create_existing_is_already_exists(s: Arc<dyn Store>) {
        let rev = s.create("/k", b"1".to_vec()).await.unwrap();
        match s.create("/k", b"2".to_vec()).await {
            Err(Error::AlreadyExists(k)) => assert_eq!(k, "/k"),
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
        let kv = s.get("/k").await.unwrap().unwrap();
        assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"1"[..], rev));
        assert_eq!(s.revision().await.unwrap(), rev, "a refused create must not take a revision");
    }

    pub async fn update_and_delete_compare_revisions(s: Arc<dyn Store>) {
        let r1 = s.create("/k", b"1".to_vec()).await.unwrap();
        let r2 = s.update("/k", b"2".to_vec(), r1).await.unwrap();
        assert!(r2 > r1);
        match s.update("/k", b"3".to_vec(), r1).await {
            Err(Error::Conflict { key, current }) => assert_eq!((key.as_str(), current), ("/k", r2)),
            other => panic!("expected Conflict, got {other:?}"),
        }
        match s.delete("/k", r1).await {
            Err(Error::Conflict { key, current }) => assert_eq!((key.as_str(), current), ("/k", r2)),
            other => panic!("expected Conflict, got {other:?}"),
        }
        assert_eq!(s.get("/k").await.unwrap().unwrap().value, b"2");
        assert_eq!(s.revision().await.unwrap(), r2, "refused writes must not take a revision");
        let gone = s.delete("/k", r2).await.unwrap();
        assert_eq!(gone.value, b"2");
        assert_eq!(s.get("/k").await.unwrap(), None);
    }

    pub async fn missing_keys_are_not_found(s: Arc<dyn Store>) {
        s.create("/other", b"x".to_vec()).await.unwrap();
        let rev = s.revision().await.unwrap();
        assert_eq!(s.get("/missing").await.unwrap(), None);
        for expected in [0, 1, rev] {
            match s.update("/missing", b"v".to_vec(), expected).await {
                Err(Error::NotFound(k)) => assert_eq!(k, "/missing"),
                other => panic!("update expecting {expected}: expected NotFound, got {other:?}"),
            }
            match s.delete("/missing", expected).await {
                Err(Error::NotFound(k)) => assert_eq!(k, "/missing"),
                other => panic!("delete expecting {expected}: expected NotFound, got {other:?}"),
            }
        }
        assert_eq!(s.get("/missing").await.unwrap(), None, "a refused update must not create the key");
        assert_eq!(s.revision().await.unwrap(), rev);
    }

    pub async fn unconditional_update_and_delete(s: Arc<dyn Store>) {
        let r1 = s.create("/k", b"1".to_vec()).await.unwrap();
        let r2 = s.update("/k", b"2".to_vec(), 0).await.unwrap();
        let r3 = s.update("/k", b"3".to_vec(), 0).await.unwrap();
        assert!(r1 < r2 && r2 < r3);
        let kv = s.get("/k").await.unwrap().unwrap();
        assert_eq!((kv.value.as_slice(), kv.create_revision, kv.mod_revision), (&b"3"[..], r1, r3));
        let gone = s.delete("/k", 0).await.unwrap();
        assert_eq!((gone.value.as_slice(), gone.create_revision), (&b"3"[..], r1));
        assert!(gone.mod_revision > r3);
        assert_eq!(s.get("/k").await.unwrap(), None);
    }

    pub async fn revisions_increase_and_track_create_and_mod(s: Arc<dyn Store>) {
        let r0 = s.revision().await.unwrap();
        let ra = s.create("/r/a", b"1".to_vec()).await.unwrap();
        let rb = s.create("/r/b", b"1".to_vec()).await.unwrap();
        assert!(r0 < ra && ra < rb);
        assert_eq!(s.revision().await.unwrap(), rb);

        let mut last = rb;
        for i in 2..6u8 {
            let kv = s.get("/r/a").await.unwrap().unwrap();
            let rev = s.update("/r/a", vec![i], kv.mod_revision).await.unwrap();
            assert!(rev > last);
            last = rev;
            let kv = s.get("/r/a").await.unwrap().unwrap();
            assert_eq!((kv.create_revision, kv.mod_revision), (ra, rev), "create_revision stays, mod_revision moves");
        }
        assert_eq!(s.get("/r/b").await.unwrap().unwrap().mod_revision, rb, "other keys keep their revisions");

        let gone = s.delete("/r/a", last).await.unwrap();
        assert!(gone.mod_revision > last, "a delete gets its own revision");
        assert_eq!((gone.create_revision, gone.value.as_slice()), (ra, &[5u8][..]));
        assert_eq!(s.revision().await.unwrap(), gone.mod_revision);
        let list = s.list("/r/", None, 0).await.unwrap();
        assert_eq!(list.revision, gone.mod_revision, "a list reports the store's revision");

        // A key created again starts a new life.
        let again = s.create("/r/a", b"new".to_vec()).await.unwrap();
        assert!(again > gone.mod_revision);
        let kv = s.get("/r/a").await.unwrap().unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision), (again, again));
    }

    pub async fn list_respects_prefix_boundaries_and_order(s: Arc<dyn Store>) {
        // Created out of order; lists come back in key (byte) order.
        let all = ["/a/bc/1", "/b", "/a/b/2", "/a/a", "/a/b", "/a/b/sub/x", "/a/bc", "/a/b/1", "/a/c", "/ü/1", "/üx", "/v"];
        for k in all {
            s.create(k, k.as_bytes().to_vec()).await.unwrap();
        }
        let list = |prefix: &'static str, after: Option<&'static str>, limit: usize| {
            let s = s.clone();
            async move { s.list(prefix, after, limit).await.unwrap() }
        };
        let l = list("/a/b/", None, 0).await;
        assert_eq!(keys(&l.items), ["/a/b/1", "/a/b/2", "/a/b/sub/x"], "`/a/b/` must not match `/a/b` or `/a/bc`");
        assert!(!l.more);
        assert_eq!(l.items[0].value, b"/a/b/1");
        assert_eq!(keys(&list("/a/b", None, 0).await.items), ["/a/b", "/a/b/1", "/a/b/2", "/a/b/sub/x", "/a/bc", "/a/bc/1"]);
        assert_eq!(keys(&list("/a/", None, 0).await.items), ["/a/a", "/a/b", "/a/b/1", "/a/b/2", "/a/b/sub/x", "/a/bc", "/a/bc/1", "/a/c"]);
        let mut sorted = all.to_vec();
        sorted.sort();
        assert_eq!(keys(&list("", None, 0).await.items), sorted);
        // A prefix ending in a multi-byte character.
        assert_eq!(keys(&list("/ü", None, 0).await.items), ["/ü/1", "/üx"]);
        assert_eq!(keys(&list("/ü/", None, 0).await.items), ["/ü/1"]);
        // start_after: exclusive; before the prefix means from its start; past it, nothing.
        assert_eq!(keys(&list("/a/b/", Some("/a/b/1"), 0).await.items), ["/a/b/2", "/a/b/sub/x"]);
        assert_eq!(keys(&list("/a/b/", Some("/a/b/10"), 0).await.items), ["/a/b/2", "/a/b/sub/x"]);
        assert_eq!(keys(&list("/a/b/", Some("/a/a"), 0).await.items), ["/a/b/1", "/a/b/2", "/a/b/sub/x"]);
        let l = list("/a/b/", Some("/z"), 5).await;
        assert!(l.items.is_empty() && !l.more);
        let l = list("/nothing/", None, 10).await;
        assert!(l.items.is_empty() && !l.more);
        assert_eq!(l.revision, s.revision().await.unwrap());
    }

    pub async fn list_paginates_2000_keys(s: Arc<dyn Store>) {
        let mut want: Vec<String> = (0..2000).map(|i| format!("/page/{i:05}")).collect();
        // Neighbours just outside the prefix on both sides.
        let decoys = vec!["/page".to_string(), "/page0/x".into(), "/pagd".into(), "/pagf".into(), "/page.".into()];
        let mut to_create = want.clone();
        to_create.extend(decoys);
        create_all(&s, to_create).await;
        want.sort();

        let mut got = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = s.list("/page/", after.as_deref(), 128).await.unwrap();
            pages += 1;
            assert!(page.items.len() <= 128);
            got.extend(page.items.iter().map(|kv| kv.key.clone()));
            if !page.more {
                break;
            }
            assert_eq!(page.items.len(), 128, "a page that is not the last one is full");
            assert_eq!(page.remaining as usize, 2000 - got.len(), "remaining counts the keys after the page");
            after = page.items.last().map(|kv| kv.key.clone());
        }
        assert_eq!(pages, 2000usize.div_ceil(128));
        assert_eq!(got, want);

        // Around the embedded store's 64-entry inline read (longer lists go to the blocking pool).
        for (limit, want_len, more) in [(63, 63, true), (64, 64, true), (65, 65, true), (0, 2000, false)] {
            let page = s.list("/page/", None, limit).await.unwrap();
            assert_eq!((page.items.len(), page.more, page.remaining as usize), (want_len, more, 2000 - want_len), "limit {limit}");
            assert_eq!(keys(&page.items), want[..want_len].iter().map(String::as_str).collect::<Vec<_>>());
        }
        // 10 keys under the prefix (read at once), 100 (past the inline read only to count them).
        let small = s.list("/page/0001", None, 3).await.unwrap();
        assert_eq!((keys(&small.items), small.more, small.remaining), (vec!["/page/00010", "/page/00011", "/page/00012"], true, 7));
        let counted = s.list("/page/000", None, 10).await.unwrap();
        assert_eq!((counted.items.len(), counted.more, counted.remaining), (10, true, 90));
        let exact = s.list("/page/", None, 2000).await.unwrap();
        assert_eq!((exact.items.len(), exact.more), (2000, false), "limit == count: no more");
        let short = s.list("/page/", None, 1999).await.unwrap();
        assert_eq!((short.items.len(), short.more, short.remaining), (1999, true, 1));
        let last = s.list("/page/", Some(&want[1998]), 1).await.unwrap();
        assert_eq!((keys(&last.items), last.more, last.remaining), (vec![want[1999].as_str()], false, 0));
        let middle = s.list("/page/", Some(&want[999]), 10).await.unwrap();
        assert_eq!((middle.items.len(), middle.remaining), (10, 990), "counted from start_after, decoys outside");
        let everything = s.list("/page/", None, 0).await.unwrap();
        assert_eq!((everything.items.len(), everything.more), (2000, false));
        assert_eq!(s.count("/page/").await.unwrap(), 2000);
    }

    pub async fn count_counts_a_prefix(s: Arc<dyn Store>) {
        assert_eq!(s.count("/c/").await.unwrap(), 0);
        for k in ["/c/1", "/c/2", "/c/3/x", "/cc", "/c"] {
            s.create(k, b"v".to_vec()).await.unwrap();
        }
        assert_eq!(s.count("/c/").await.unwrap(), 3);
        assert_eq!(s.count("/c").await.unwrap(), 5);
        assert_eq!(s.count("").await.unwrap(), 5);
        s.delete("/c/1", 0).await.unwrap();
        assert_eq!(s.count("/c/").await.unwrap(), 2);
    }

    pub async fn txn_applies_all_at_one_revision_or_nothing(s: Arc<dyn Store>) {
        let ra = s.create("/t/a", b"a".to_vec()).await.unwrap();
        let rb = s.create("/t/b", b"b".to_vec()).await.unwrap();

        let rev = s
            .txn(
                vec![Compare::ModRevision("/t/a".into(), ra), Compare::ModRevision("/t/b".into(), rb), Compare::ModRevision("/t/new".into(), 0)],
                vec![Op::Put("/t/a".into(), b"a2".to_vec()), Op::Delete("/t/b".into()), Op::Put("/t/new".into(), b"n".to_vec())],
            )
            .await
            .unwrap();
        assert!(rev > rb);
        let a = s.get("/t/a").await.unwrap().unwrap();
        assert_eq!((a.value.as_slice(), a.create_revision, a.mod_revision), (&b"a2"[..], ra, rev));
        assert_eq!(s.get("/t/b").await.unwrap(), None);
        let n = s.get("/t/new").await.unwrap().unwrap();
        assert_eq!((n.create_revision, n.mod_revision), (rev, rev), "every op of a txn lands at one revision");
        assert_eq!(s.revision().await.unwrap(), rev);

        // Any failing compare: nothing applies, no revision is taken.
        for compares in [
            vec![Compare::ModRevision("/t/a".into(), ra)],                                           // stale
            vec![Compare::ModRevision("/t/a".into(), 0)],                                            // "absent", but present
            vec![Compare::ModRevision("/t/new".into(), rev), Compare::ModRevision("/t/b".into(), rb)], // second fails
        ] {
            match s.txn(compares, vec![Op::Put("/t/a".into(), b"x".to_vec()), Op::Put("/t/other".into(), b"x".to_vec()), Op::Delete("/t/new".into())]).await {
                Err(Error::TxnFailed) => {}
                other => panic!("expected TxnFailed, got {other:?}"),
            }
        }
        assert_eq!(s.get("/t/a").await.unwrap().unwrap().mod_revision, rev);
        assert_eq!(s.get("/t/other").await.unwrap(), None);
        assert!(s.get("/t/new").await.unwrap().is_some());
        assert_eq!(s.revision().await.unwrap(), rev);

        // A txn that changes nothing takes no revision and reports the current one.
        let same = s.txn(vec![], vec![Op::Delete("/t/absent".into())]).await.unwrap();
        assert_eq!(same, rev);
        let next = s.create("/t/after", b"x".to_vec()).await.unwrap();
        assert!(next > rev);
        assert_eq!(s.get("/t/after").await.unwrap().unwrap().mod_revision, next);
    }

    pub async fn watch_replays_history_then_goes_live(s: Arc<dyn Store>) {
        let r1 = s.create("/w/a", b"1".to_vec()).await.unwrap();
        s.create("/x/a", b"outside".to_vec()).await.unwrap();
        s.create("/wx", b"outside".to_vec()).await.unwrap();
        let r3 = s.update("/w/a", b"2".to_vec(), r1).await.unwrap();
        let gone = s.delete("/w/a", r3).await.unwrap();

        let mut w = s.watch("/w/", 0).await.unwrap();
        let e = next(&mut w).await;
        assert_eq!((e.kind, e.kv.key.as_str(), e.kv.value.as_slice()), (EventKind::Put, "/w/a", &b"1"[..]));
        assert_eq!((e.kv.create_revision, e.kv.mod_revision, e.prev), (r1, r1, None));
        let e = next(&mut w).await;
        assert_eq!((e.kind, e.kv.value.as_slice(), e.kv.create_revision, e.kv.mod_revision), (EventKind::Put, &b"2"[..], r1, r3));
        let prev = e.prev.expect("an update carries the previous value");
        assert_eq!((prev.value.as_slice(), prev.mod_revision), (&b"1"[..], r1));
        let e = next(&mut w).await;
        assert_eq!(e.kind, EventKind::Delete);
        assert_eq!(e.kv.key, "/w/a");
        assert_eq!(e.kv.value, b"2", "a delete event carries the old value");
        assert_eq!(e.kv.mod_revision, gone.mod_revision, "... with the delete's revision");
        assert_eq!(e.kv.create_revision, r1);

        // Live, still filtered by prefix.
        let rb = s.create("/w/b", b"b".to_vec()).await.unwrap();
        s.create("/x/b", b"outside".to_vec()).await.unwrap();
        s.create("/wy", b"outside".to_vec()).await.unwrap();
        let rc = s.create("/w/c", b"c".to_vec()).await.unwrap();
        let e = next(&mut w).await;
        assert_eq!((e.kind, e.kv.key.as_str(), e.kv.mod_revision), (EventKind::Put, "/w/b", rb));
        let e = next(&mut w).await;
        assert_eq!((e.kv.key.as_str(), e.kv.mod_revision), ("/w/c", rc));
        quiet(&mut w).await;
    }

    pub async fn watch_after_revision_skips_older_events(s: Arc<dyn Store>) {
        let r1 = s.create("/w/a", b"1".to_vec()).await.unwrap();
        let r2 = s.create("/w/b", b"1".to_vec()).await.unwrap();
        let r3 = s.update("/w/a", b"2".to_vec(), r1).await.unwrap();

        let mut w = s.watch("/w/", r2).await.unwrap();
        let e = next(&mut w).await;
        assert_eq!((e.kv.key.as_str(), e.kv.mod_revision), ("/w/a", r3));

        let mut now = s.watch("/w/", r3).await.unwrap();
        quiet(&mut now).await;
        let r4 = s.delete("/w/b", 0).await.unwrap().mod_revision;
        for w in [&mut w, &mut now] {
            let e = next(w).await;
            assert_eq!((e.kind, e.kv.key.as_str(), e.kv.mod_revision), (EventKind::Delete, "/w/b", r4));
        }
        // Watching from a future revision waits for it.
        let mut future = s.watch("/w/", r4 + 1).await.unwrap();
        let r5 = s.create("/w/c", b"1".to_vec()).await.unwrap();
        let r6 = s.create("/w/d", b"1".to_vec()).await.unwrap();
        assert_eq!(r5, r4 + 1);
        let e = next(&mut future).await;
        assert_eq!((e.kv.key.as_str(), e.kv.mod_revision), ("/w/d", r6));
    }

    pub async fn watch_delivers_txn_events_once(s: Arc<dyn Store>) {
        let start = s.revision().await.unwrap();
        let live = s.watch("/tx/", start).await.unwrap();
        s.create("/tx/c", b"old".to_vec()).await.unwrap();
        let rev = s
            .txn(
                vec![],
                vec![Op::Put("/tx/a".into(), b"1".to_vec()), Op::Put("/tx/b".into(), b"1".to_vec()), Op::Delete("/tx/c".into()), Op::Put("/outside".into(), b"1".to_vec())],
            )
            .await
            .unwrap();
        let end = s.create("/tx/end", b"1".to_vec()).await.unwrap();
        let history = s.watch("/tx/", start).await.unwrap();
        for mut w in [live, history] {
            let mut got = Vec::new();
            loop {
                let e = next(&mut w).await;
                let done = e.kv.key == "/tx/end";
                got.push((e.kv.mod_revision, e.kv.key, e.kind));
                if done {
                    break;
                }
            }
            let create_c = got[0].0;
            assert_eq!(
                got,
                vec![
                    (create_c, "/tx/c".to_string(), EventKind::Put),
                    (rev, "/tx/a".to_string(), EventKind::Put),
                    (rev, "/tx/b".to_string(), EventKind::Put),
                    (rev, "/tx/c".to_string(), EventKind::Delete),
                    (end, "/tx/end".to_string(), EventKind::Put),
                ]
            );
            quiet(&mut w).await;
        }
    }

    pub async fn watch_has_no_gap_or_duplicate_at_the_history_live_seam(s: Arc<dyn Store>) {
        const WRITERS: usize = 4;
        const ROUNDS: usize = 100;
        const MAX_WATCHES: usize = 150;
        // Writers mixing single creates and two-key txns, so writes are always in flight...
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let s = s.clone();
                tokio::spawn(async move {
                    let mut written = Vec::new();
                    for i in 0..ROUNDS {
                        if i % 3 == 0 {
                            let (a, b) = (format!("/seam/{w}/{i:04}/a"), format!("/seam/{w}/{i:04}/b"));
                            let rev = s.txn(vec![], vec![Op::Put(a.clone(), vec![1]), Op::Put(b.clone(), vec![1])]).await.unwrap();
                            written.push((rev, a));
                            written.push((rev, b));
                        } else {
                            let k = format!("/seam/{w}/{i:04}");
                            let rev = s.create(&k, vec![1]).await.unwrap();
                            written.push((rev, k));
                        }
                    }
                    written
                })
            })
            .collect();
        // ...while watches start back to back, each from at or just before the current
        // revision, so that their history reads race the commits and their publication.
        let mut watches = vec![(0, s.watch("/seam/", 0).await.unwrap())];
        while watches.len() < MAX_WATCHES && !writers.iter().all(|w| w.is_finished()) {
            let after = s.revision().await.unwrap().saturating_sub(watches.len() as u64 % 3);
            watches.push((after, s.watch("/seam/", after).await.unwrap()));
            tokio::task::yield_now().await;
        }
        let mut written = Vec::new();
        for w in writers {
            written.extend(w.await.unwrap());
        }
        // Revision order; within a txn, op order (a before b).
        written.sort();
        let last = written.last().unwrap().0;
        let racing = watches.iter().filter(|(after, _)| *after > 0 && *after < last).count();
        assert!(racing >= 5, "only {racing} watches started mid-burst; the test proves little");
        let written = &written;
        futures_util::future::join_all(watches.into_iter().map(|(after, mut w)| async move {
            let want: Vec<(u64, String)> = written.iter().filter(|(rev, _)| *rev > after).cloned().collect();
            let mut got = Vec::with_capacity(want.len());
            while got.len() < want.len() {
                let e = next(&mut w).await;
                got.push((e.kv.mod_revision, e.kv.key));
            }
            assert_eq!(got, want, "watch after {after}: every write once, in revision order");
            quiet(&mut w).await;
        }))
        .await;
    }

    pub async fn watch_before_compaction_is_compacted(s: Arc<dyn Store>) {
        let r1 = s.create("/c/k", b"1".to_vec()).await.unwrap();
        let r2 = s.update("/c/k", b"2".to_vec(), r1).await.unwrap();
        let r3 = s.update("/c/k", b"3".to_vec(), r2).await.unwrap();
        let r4 = s.update("/c/k", b"4".to_vec(), r3).await.unwrap();
        s.compact(r3).await.unwrap();

        assert_compacted(&s, "/c/", 0).await;
        assert_compacted(&s, "/c/", r1).await; // needs r2, which is gone
        // History from the compaction revision on is kept.
        let mut w = s.watch("/c/", r3 - 1).await.unwrap();
        assert_eq!(next(&mut w).await.kv.mod_revision, r3);
        assert_eq!(next(&mut w).await.kv.mod_revision, r4);
        let r5 = s.update("/c/k", b"5".to_vec(), r4).await.unwrap();
        assert_eq!(next(&mut w).await.kv.mod_revision, r5);
        // Compaction forgets history, not data.
        let kv = s.get("/c/k").await.unwrap().unwrap();
        assert_eq!((kv.value.as_slice(), kv.create_revision, kv.mod_revision), (&b"5"[..], r1, r5));
        assert_eq!(s.list("/c/", None, 0).await.unwrap().items.len(), 1);

        // Compacting again, to the past or beyond the present, is harmless.
        s.compact(r3).await.unwrap();
        s.compact(r1).await.unwrap();
        s.compact(r5 + 100).await.unwrap();
        assert_compacted(&s, "/c/", r3).await;
        let mut w = s.watch("/c/", r5).await.unwrap();
        let r6 = s.update("/c/k", b"6".to_vec(), r5).await.unwrap();
        assert_eq!(next(&mut w).await.kv.mod_revision, r6);
    }

    pub async fn list_at_shows_the_state_at_a_revision(s: Arc<dyn Store>) {
        let empty = s.revision().await.unwrap();
        for k in ["/s/a", "/s/b", "/s/c", "/s/d", "/s/e", "/s/g", "/sx"] {
            s.create(k, format!("{k} v1").into_bytes()).await.unwrap();
        }
        s.update("/s/b", b"b v2".to_vec(), 0).await.unwrap();
        let (r, at_r) = state(&s, "/s/").await;
        assert_eq!(keys(&at_r), ["/s/a", "/s/b", "/s/c", "/s/d", "/s/e", "/s/g"]);

        // After R: every kind of change, inside and outside the prefix.
        let a2 = s.update("/s/a", b"a v2".to_vec(), 0).await.unwrap(); // updated...
        let (mid, at_mid) = state(&s, "/s/").await;
        assert_eq!(mid, a2);
        s.update("/s/a", b"a v3".to_vec(), 0).await.unwrap(); // ... twice
        s.delete("/s/b", 0).await.unwrap(); // deleted
        s.create("/s/ba", b"new".to_vec()).await.unwrap(); // created
        s.delete("/s/c", 0).await.unwrap(); // deleted, then created again (a new life)
        s.create("/s/c", b"c again".to_vec()).await.unwrap();
        s.create("/s/f", b"brief".to_vec()).await.unwrap(); // created and deleted after R
        s.delete("/s/f", 0).await.unwrap();
        s.txn(vec![], vec![Op::Put("/s/d".into(), b"d v2".to_vec()), Op::Delete("/s/e".into()), Op::Put("/s/0".into(), b"zero".to_vec())]).await.unwrap();
        s.update("/sx", b"outside".to_vec(), 0).await.unwrap();
        s.create("/s", b"outside too".to_vec()).await.unwrap();
        let (now, current) = state(&s, "/s/").await;
        assert_eq!(keys(&current), ["/s/0", "/s/a", "/s/ba", "/s/c", "/s/d", "/s/g"]);

        let past = s.list_at("/s/", r, None, 0).await.unwrap();
        assert_eq!((past.revision, past.more), (r, false));
        // Whole KeyValues: values, create and mod revisions as they were at R.
        assert_eq!(past.items, at_r, "the state at R");
        let b = past.items.iter().find(|kv| kv.key == "/s/b").unwrap();
        assert_eq!(b.value, b"b v2", "a deleted key is there with its value at R");
        assert!(b.create_revision < b.mod_revision && b.mod_revision <= r);
        let c = past.items.iter().find(|kv| kv.key == "/s/c").unwrap();
        assert_eq!((c.value.as_slice(), c.create_revision), (&b"/s/c v1"[..], at_r[2].create_revision), "the first life of a key created again");
        // The first change after a revision decides, not the last.
        assert_eq!(s.list_at("/s/", mid, None, 0).await.unwrap().items, at_mid);
        // Now is now; before anything was written, nothing.
        assert_eq!(s.list_at("/s/", now, None, 0).await.unwrap().items, current);
        assert_eq!(s.list_at("/s/", 0, None, 0).await.unwrap().items, current, "0 reads the current state");
        assert!(s.list_at("/s/", empty, None, 0).await.unwrap().items.is_empty());
        // Other prefixes see their own past.
        assert_eq!(s.list_at("/sx", r, None, 0).await.unwrap().items[0].value, b"/sx v1");
        assert_eq!(keys(&s.list_at("/s", r, None, 0).await.unwrap().items), ["/s/a", "/s/b", "/s/c", "/s/d", "/s/e", "/s/g", "/sx"]);
        // The future is not there yet.
        match s.list_at("/s/", now + 10, None, 0).await {
            Err(Error::FutureRevision { requested, current }) => assert_eq!((requested, current), (now + 10, now)),
            other => panic!("expected FutureRevision, got {other:?}"),
        }
    }

    pub async fn list_at_pages_one_snapshot_while_writes_go_on(s: Arc<dyn Store>) {
        create_all(&s, (0..60).map(|i| format!("/p/{:03}", i * 2)).collect()).await;
        s.create("/q", b"neighbour".to_vec()).await.unwrap();
        let (r, at_r) = state(&s, "/p/").await;
        assert_eq!(at_r.len(), 60);

        // Change a third of the keys before paging starts...
        for i in (0..60).step_by(3) {
            match i % 2 {
                0 => s.delete(&format!("/p/{:03}", i * 2), 0).await.map(|_| ()).unwrap(),
                _ => s.update(&format!("/p/{:03}", i * 2), b"changed".to_vec(), 0).await.map(|_| ()).unwrap(),
            }
            s.create(&format!("/p/{:03}", i * 2 + 1), b"between".to_vec()).await.unwrap();
        }
        // ...and keep writing between pages, all over the key space.
        let got = pages_at(&s, "/p/", r, 7, |n| {
            let s = s.clone();
            async move {
                s.create(&format!("/p/{:03}x", n * 13 % 120), b"late".to_vec()).await.unwrap();
                let k = format!("/p/{:03}", (n * 22 + 4) % 120);
                match s.delete(&k, 0).await {
                    Ok(_) | Err(Error::NotFound(_)) => {} // may be gone already
                    Err(e) => panic!("deleting {k}: {e}"),
                }
            }
        })
        .await;
        assert_eq!(got, at_r, "the pages together are exactly the state at R");

        // Page boundaries at the edges of the snapshot.
        let all = s.list_at("/p/", r, None, 60).await.unwrap();
        assert_eq!((all.items.len(), all.more), (60, false), "limit == count: no more");
        let short = s.list_at("/p/", r, None, 59).await.unwrap();
        assert_eq!((short.items.len(), short.more, short.remaining), (59, true, 1));
        // remaining counts the keys of the state at R (not those created or deleted since).
        let first = s.list_at("/p/", r, None, 7).await.unwrap();
        assert_eq!((first.items.len(), first.remaining), (7, 53));
        let mid = s.list_at("/p/", r, Some(&at_r[19].key), 10).await.unwrap();
        assert_eq!((mid.items.as_slice(), mid.remaining), (&at_r[20..30], 30));
        let last = s.list_at("/p/", r, Some(&at_r[58].key), 1).await.unwrap();
        assert_eq!((last.items.as_slice(), last.more), (&at_r[59..], false));
        // start_after: a key deleted since R, a key created since R, before and past the prefix.
        let deleted = &at_r[0].key;
        assert!(s.get(deleted).await.unwrap().is_none());
        assert_eq!(s.list_at("/p/", r, Some(deleted), 2).await.unwrap().items, at_r[1..3]);
        assert_eq!(s.list_at("/p/", r, Some("/p/001"), 2).await.unwrap().items, at_r[1..3]);
        assert_eq!(s.list_at("/p/", r, Some("/a"), 2).await.unwrap().items, at_r[..2]);
        let beyond = s.list_at("/p/", r, Some("/z"), 5).await.unwrap();
        assert!(beyond.items.is_empty() && !beyond.more);
        // Pages of one make the same list.
        assert_eq!(pages_at(&s, "/p/", r, 1, |_| async {}).await, at_r);
    }

    pub async fn list_at_before_compaction_is_compacted(s: Arc<dyn Store>) {
        let r1 = s.create("/k/a", b"1".to_vec()).await.unwrap();
        let r2 = s.update("/k/a", b"2".to_vec(), r1).await.unwrap();
        let r3 = s.update("/k/a", b"3".to_vec(), r2).await.unwrap();
        let r4 = s.create("/k/b", b"b".to_vec()).await.unwrap();
        s.compact(r3).await.unwrap();
        for gone in [r1, r2] {
            match s.list_at("/k/", gone, None, 0).await {
                Err(Error::Compacted { requested, compacted }) => {
                    assert_eq!(requested, gone);
                    assert_eq!(compacted, r3);
                }
                other => panic!("list at {gone}: expected Compacted, got {other:?}"),
            }
        }
        // `readable` answers as those reads do, for each revision.
        assert!(matches!(s.readable(r1).await, Err(Error::Compacted { requested, compacted }) if requested == r1 && compacted == r3));
        assert!(s.readable(r3).await.is_ok() && s.readable(r4).await.is_ok());
        assert!(matches!(s.readable(r4 + 100).await, Err(Error::FutureRevision { requested, .. }) if requested == r4 + 100));
        // The compaction revision itself is still readable.
        let at3 = s.list_at("/k/", r3, None, 0).await.unwrap();
        assert_eq!(at3.items, vec![KeyValue { key: "/k/a".into(), value: b"3".to_vec(), create_revision: r1, mod_revision: r3 }]);
        assert_eq!(s.list_at("/k/", r4, None, 0).await.unwrap().items.len(), 2);
        // Still after more writes.
        s.delete("/k/a", 0).await.unwrap();
        assert_eq!(s.list_at("/k/", r3, None, 0).await.unwrap().items, at3.items);
    }

    pub async fn concurrent_writers_get_distinct_revisions(s: Arc<dyn Store>) {
        const TASKS: usize = 16;
        const EACH: usize = 200;
        let start = s.revision().await.unwrap();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let s = s.clone();
                tokio::spawn(async move {
                    let mut revs = Vec::with_capacity(EACH);
                    for i in 0..EACH {
                        revs.push(s.create(&format!("/cw/{t:02}/{i:04}"), vec![t as u8]).await.unwrap());
                    }
                    revs
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            let revs = t.await.unwrap();
            assert!(revs.windows(2).all(|w| w[0] < w[1]), "one writer's revisions increase");
            all.extend(revs);
        }
        let distinct: HashSet<u64> = all.iter().copied().collect();
        assert_eq!(distinct.len(), TASKS * EACH, "every write gets its own revision");
        assert!(all.iter().all(|r| *r > start));
        assert_eq!(s.revision().await.unwrap(), *all.iter().max().unwrap());
        assert_eq!(s.count("/cw/").await.unwrap(), (TASKS * EACH) as u64);
        for t in [0, TASKS - 1] {
            let l = s.list(&format!("/cw/{t:02}/"), None, 0).await.unwrap();
            assert_eq!(l.items.len(), EACH);
        }
    }
}


/// The state of the keys under a prefix, as `list` shows it now.
async fn state(s: &Arc<dyn Store>, prefix: &str) -> (u64, Vec<KeyValue>) {
    let l = s.list(prefix, None, 0).await.unwrap();
    assert!(!l.more);
    (l.revision, l.items)
}

/// Every key under `prefix` at `revision`, read with `list_at` in pages of `limit`, calling
/// `between` after each page (to write while paging). Checks the page invariants on the way.
async fn pages_at<F, Fut>(s: &Arc<dyn Store>, prefix: &str, revision: u64, limit: usize, mut between: F) -> Vec<KeyValue>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    for n in 0.. {
        let page = s.list_at(prefix, revision, after.as_deref(), limit).await.unwrap();
        assert_eq!(page.revision, revision, "a past page reports the revision it shows");
        assert!(page.items.len() <= limit);
        got.extend(page.items.iter().cloned());
        if !page.more {
            break;
        }
        assert_eq!(page.items.len(), limit, "a page that is not the last one is full");
        after = page.items.last().map(|kv| kv.key.clone());
        between(n).await;
    }
    got
}

// ---------------------------------------------------------------------------------------------
// Backend fixtures

mod fixtures {
    use super::*;
    use strata_store::embedded::Embedded;
    use strata_store::etcd::Etcd;

    pub struct Fixture {
        pub store: Arc<dyn Store>,
        /// Kept until the test ends: the temporary directory, the etcd process.
        _keep: Box<dyn std::any::Any + Send>,
    }

    pub fn embedded() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(&dir.path().join("store.redb")).unwrap();
        Fixture { store: Arc::new(store), _keep: Box::new(dir) }
    }

    pub use crate::etcd_server::EtcdServer;

    pub async fn etcd_server() -> EtcdServer {
        assert!(
            EtcdServer::available(),
            "the etcd conformance tests need an `etcd` binary on PATH (Debian: apt-get install etcd-server)"
        );
        EtcdServer::start().await.unwrap_or_else(|log| panic!("etcd did not start; its last output:\n{log}"))
    }

    pub async fn etcd() -> Fixture {
        let server = etcd_server().await;
        // Under a namespace, as a shared etcd would be used.
        let store = Etcd::connect(std::slice::from_ref(&server.endpoint)).await.unwrap().with_namespace("/conformance");
        Fixture { store: Arc::new(store), _keep: Box::new(server) }
    }
}

// ---------------------------------------------------------------------------------------------
// Embedded-only: reopening, and crash safety under SIGKILL.

mod embedded_only {
    use std::io::{BufRead, BufReader};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    use super::*;
    use strata_store::embedded::Embedded;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopen_after_drop_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let (rev, kept, gone, compacted_to) = {
            let s: Arc<dyn Store> = Arc::new(Embedded::open(&path).unwrap());
            let r1 = s.create("/k/a", b"1".to_vec()).await.unwrap();
            s.update("/k/a", b"2".to_vec(), r1).await.unwrap();
            let rb = s.create("/k/b", b"b".to_vec()).await.unwrap();
            let gone = s.delete("/k/b", rb).await.unwrap();
            s.txn(vec![], vec![Op::Put("/k/c".into(), b"c".to_vec()), Op::Put("/k/d".into(), b"d".to_vec())]).await.unwrap();
            s.compact(r1 + 1).await.unwrap();
            let before = s.list("/k/", None, 0).await.unwrap().items;
            // A clone dropped first must not stop the store.
            let clone = s.clone();
            drop(clone);
            s.create("/k/e", b"e".to_vec()).await.unwrap();
            let kept = s.list("/k/", None, 0).await.unwrap().items;
            assert_eq!(kept.len(), before.len() + 1);
            (s.revision().await.unwrap(), kept, gone, r1 + 1)
        };
        // Reopen at once: dropping the last handle must release the file.
        let s: Arc<dyn Store> = Arc::new(Embedded::open(&path).unwrap());
        assert_eq!(s.revision().await.unwrap(), rev);
        assert_eq!(s.list("/k/", None, 0).await.unwrap().items, kept);
        assert_eq!(s.get("/k/b").await.unwrap(), None);
        // History and the compaction mark survive too.
        assert_compacted(&s, "/k/", compacted_to - 2).await;
        let mut w = s.watch("/k/", compacted_to - 1).await.unwrap();
        let e = next(&mut w).await;
        assert_eq!(e.kv.mod_revision, compacted_to);
        loop {
            let e = next(&mut w).await;
            if e.kind == EventKind::Delete {
                assert_eq!(e.kv, gone);
                break;
            }
        }
        // Revisions continue where they stopped.
        assert_eq!(s.create("/k/f", b"f".to_vec()).await.unwrap(), rev + 1);
        drop(w);
        drop(s);
        Embedded::open(&path).unwrap();
    }

    /// Past reads reach exactly as far back as the history the store keeps: at least the last
    /// `history` revisions, whatever was written, and not beyond the automatic compaction. The
    /// bound survives reopening.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn list_at_reaches_back_as_far_as_the_history_kept() {
        const HISTORY: u64 = 10;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let s: Arc<dyn Store> = Arc::new(Embedded::open_with_history(&path, HISTORY).unwrap());
        let first = s.create("/h/k", b"0".to_vec()).await.unwrap();
        s.create("/h/gone", b"x".to_vec()).await.unwrap();
        // value of /h/k by revision
        let mut values = vec![(first, b"0".to_vec())];
        for i in 1..=6 * HISTORY {
            let rev = match i % 7 {
                0 => s.txn(vec![], vec![Op::Put("/h/k".into(), i.to_string().into_bytes()), Op::Put(format!("/h/t{i}"), vec![])]).await.unwrap(),
                _ => s.update("/h/k", i.to_string().into_bytes(), 0).await.unwrap(),
            };
            values.push((rev, i.to_string().into_bytes()));
            // Every revision of the last `history` is readable, with the value it had.
            let now = s.revision().await.unwrap();
            for (rev, value) in values.iter().filter(|(r, _)| *r + HISTORY >= now) {
                let page = s.list_at("/h/k", *rev, None, 0).await.unwrap();
                assert_eq!(page.items.len(), 1, "at {rev} (now {now})");
                assert_eq!((&page.items[0].value, page.items[0].mod_revision), (value, *rev));
            }
        }
        s.delete("/h/gone", 0).await.unwrap();
        let now = s.revision().await.unwrap();
        // Older than twice the history: compacted away.
        match s.list_at("/h/", first, None, 0).await {
            Err(Error::Compacted { requested, compacted }) => {
                assert_eq!(requested, first);
                assert!(compacted > first && compacted + 2 * HISTORY >= now, "compacted at {compacted}, now {now}");
            }
            other => panic!("expected Compacted, got {other:?}"),
        }
        drop(s);
        let s: Arc<dyn Store> = Arc::new(Embedded::open_with_history(&path, HISTORY).unwrap());
        let before = s.list_at("/h/", now - 1, None, 0).await.unwrap();
        assert!(before.items.iter().any(|kv| kv.key == "/h/gone"), "history survives reopening");
        assert!(matches!(s.list_at("/h/", first, None, 0).await, Err(Error::Compacted { .. })));
    }

    fn crash_writer() -> PathBuf {
        // tests run from target/<profile>/deps/; cargo test builds examples into
        // target/<profile>/examples/.
        let exe = std::env::current_exe().unwrap();
        let bin = exe.parent().and_then(Path::parent).unwrap().join("examples").join("crash_writer");
        assert!(
            bin.exists(),
            "{} is missing: run the whole package's tests (`cargo test -p strata-store`), which build the examples",
            bin.display()
        );
        bin
    }

    /// Acknowledged writes survive SIGKILL: a child creates keys from 8 tasks and prints each
    /// one after `create` returned Ok; we kill it mid-burst, reopen, and look for every printed
    /// key. Several rounds, each killed at a different point, share one file.
    #[test]
    fn acknowledged_writes_survive_sigkill() {
        let bin = crash_writer();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut all_acked = Vec::new();
        for (round, kill_after) in [150usize, 700, 1500, 40].into_iter().enumerate() {
            let mut child = Command::new(&bin)
                .arg(&path)
                .arg(format!("run{round}"))
                .arg("8")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let mut out = BufReader::new(child.stdout.take().unwrap());
            let mut acked = Vec::new();
            let mut line = String::new();
            let mut killed = false;
            loop {
                line.clear();
                if out.read_line(&mut line).unwrap() == 0 {
                    break; // EOF: the child is gone and the pipe drained
                }
                // A line cut short by the kill was never acknowledged in full.
                if let Some(key) = line.strip_suffix('\n') {
                    acked.push(key.to_string());
                }
                if !killed && acked.len() >= kill_after {
                    child.kill().unwrap(); // SIGKILL
                    killed = true;
                }
            }
            let status = child.wait().unwrap();
            assert!(killed, "round {round}: the writer ended before it was killed: {status}");
            assert!(!status.success(), "round {round}: the writer was not killed: {status}");
            assert!(acked.len() >= kill_after);

            let (present, total) = rt.block_on(async {
                let s = Embedded::open(&path).unwrap();
                let mut missing = Vec::new();
                for key in acked.iter().chain(&all_acked) {
                    match s.get(key).await.unwrap() {
                        Some(kv) => assert_eq!(kv.value, key.as_bytes(), "{key}: wrong value"),
                        None => missing.push(key.clone()),
                    }
                }
                assert!(missing.is_empty(), "round {round}: {} acknowledged keys lost, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
                let present = s.count(&format!("/crash/run{round}/")).await.unwrap();
                (present, s.count("/crash/").await.unwrap())
            });
            // Keys committed but killed before being printed may exist too; never fewer.
            assert!(present as usize >= acked.len());
            eprintln!("round {round}: {} acknowledged, {present} present ({total} in all)", acked.len());
            all_acked.extend(acked);
        }
        let keys: BTreeSet<&String> = all_acked.iter().collect();
        assert_eq!(keys.len(), all_acked.len(), "the writer printed a key twice");
    }
}

// ---------------------------------------------------------------------------------------------
// etcd-only: namespaces keep clusters sharing one etcd apart.

mod etcd_only {
    use super::*;
    use strata_store::etcd::Etcd;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn namespaces_are_isolated() {
        let server = fixtures::etcd_server().await;
        let connect = |ns: &'static str| {
            let ep = server.endpoint.clone();
            async move { Arc::new(Etcd::connect(&[ep]).await.unwrap().with_namespace(ns)) as Arc<dyn Store> }
        };
        let (a, b, raw) = (connect("/cluster-a").await, connect("/cluster-b").await, connect("").await);
        let mut wb = b.watch("/", 0).await.unwrap();
        a.create("/registry/pods/x", b"a".to_vec()).await.unwrap();
        let rb = b.create("/registry/pods/x", b"b".to_vec()).await.unwrap();
        assert_eq!(a.get("/registry/pods/x").await.unwrap().unwrap().value, b"a");
        assert_eq!(b.get("/registry/pods/x").await.unwrap().unwrap().value, b"b");
        assert_eq!(keys(&a.list("", None, 0).await.unwrap().items), ["/registry/pods/x"], "keys come back without the namespace");
        assert_eq!(a.count("").await.unwrap(), 1);
        assert_eq!(keys(&raw.list("", None, 0).await.unwrap().items), ["/cluster-a/registry/pods/x", "/cluster-b/registry/pods/x"]);
        let e = next(&mut wb).await;
        assert_eq!((e.kv.key.as_str(), e.kv.mod_revision), ("/registry/pods/x", rb));
        quiet(&mut wb).await;
        match Etcd::connect(&["http://127.0.0.1:1".to_string()]).await {
            Err(Error::Unavailable(_)) => {}
            other => panic!("connecting to nothing: expected Unavailable, got {other:?}"),
        }
    }
}
