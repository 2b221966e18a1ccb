//! The embedded store: one redb file, crash-safe (every commit is fsync'd before it is
//! acknowledged), with group commit and an in-memory fan-out for watches.
//!
//! Tables: `kv` (key -> create rev, mod rev, value), `log` ((rev << 32 | index) -> event, the
//! history watches replay from) and `meta` (current and compacted revision).
//!
//! Every log entry holds the key's new value *and* the one it replaced (`prev`), so the log
//! serves reads of the past too ([`Store::list_at`]): the state at revision R is the current
//! state with each key changed after R put back as the `prev` of its first change after R
//! (no `prev`: the key did not exist at R). Nothing extra is written for this.
//!
//! History is bounded by revisions: when the current revision passes the compaction mark by
//! twice the history size (`history`, [`DEFAULT_HISTORY`] = 50,000 revisions by default), the
//! writer compacts to `current - history` in the same transaction. So watches and past reads
//! reach at least the last `history` revisions and the log holds at most `2 * history`
//! revisions of entries (each one request: a key's value and its previous value, or a txn's
//! ops), on disk, not in memory. A past read holds in memory the names (not the values) of the
//! keys changed under its prefix since its revision, and one page of results.
//!
//! All writes go through one writer thread. It takes every request waiting in its queue, applies
//! them in one redb write transaction (each request sees the effects of the ones before it and
//! gets its own revision, or is refused alone: refusals are decided before anything is written;
//! a storage error fails the whole batch), commits once, and only then answers the callers and
//! publishes the events. Many concurrent writers thus share one fsync.
//!
//! Dropping the last handle stops the writer thread and waits for it, so the file can be
//! opened again at once (redb refuses to open a file that is already open).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use futures_util::StreamExt;
use redb::{Database, Durability, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, oneshot};

use crate::{Compare, Error, Event, EventKind, KeyValue, ListResult, Op, Result, Store, WatchStream};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<u128, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// How many revisions of history are kept for watches before automatic compaction.
pub const DEFAULT_HISTORY: u64 = 50_000;
/// Most requests applied in one transaction.
const MAX_BATCH: usize = 512;

enum Request {
    Create { key: String, value: Vec<u8> },
    Update { key: String, value: Vec<u8>, expected: u64 },
    Delete { key: String, expected: u64 },
    Txn { compares: Vec<Compare>, ops: Vec<Op> },
    Compact { revision: u64 },
}

enum Reply {
    Rev(u64),
    Deleted(KeyValue),
}

struct Job {
    req: Request,
    reply: oneshot::Sender<Result<Reply>>,
}

/// The embedded store. Cheap to clone; the clones share one file and one writer thread.
#[derive(Clone)]
pub struct Embedded {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    /// `None` only while dropping.
    writer: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    events: broadcast::Sender<Arc<Event>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the writer loop once it has answered what was queued; waiting
        // for it releases its handle on the database before the caller may reopen the file.
        self.writer.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the store writer thread panicked");
            }
        }
    }
}

/// The store holds every Secret: its file is the owner's alone (0600). A new file is created
/// with that mode (redb then initialises the empty file), so it is never readable by others,
/// not even for a moment; an existing file with looser bits is tightened before it is opened.
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let unavailable = |e: std::io::Error| Error::Unavailable(format!("{}: {e}", path.display()));
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path).map_err(unavailable)?;
    let mode = file.metadata().map_err(unavailable)?.permissions().mode();
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700)).map_err(unavailable)?;
        tracing::warn!(path = %path.display(), "the store file was readable by others; its mode is now {:o}", mode & 0o700);
    }
    Ok(())
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

fn encode_kv(create: u64, modr: u64, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + value.len());
    v.extend_from_slice(&create.to_le_bytes());
    v.extend_from_slice(&modr.to_le_bytes());
    v.extend_from_slice(value);
    v
}

fn decode_kv(key: &str, bytes: &[u8]) -> Result<KeyValue> {
    if bytes.len() < 16 {
        return Err(Error::Backend(format!("corrupt record for {key}")));
    }
    let (c, rest) = bytes.split_at(8);
    let (m, value) = rest.split_at(8);
    Ok(KeyValue {
        key: key.to_string(),
        value: value.to_vec(),
        create_revision: u64::from_le_bytes(c.try_into().map_err(backend)?),
        mod_revision: u64::from_le_bytes(m.try_into().map_err(backend)?),
    })
}

/// Log entry: kind(1) | key len(4) | key | kv record | prev present(1) | [prev record].
/// Records are `len(4) | encode_kv`.
fn encode_event(ev: &Event) -> Vec<u8> {
    let mut v = Vec::new();
    v.push(match ev.kind {
        EventKind::Put => 0,
        EventKind::Delete => 1,
    });
    v.extend_from_slice(&(ev.kv.key.len() as u32).to_le_bytes());
    v.extend_from_slice(ev.kv.key.as_bytes());
    let mut push = |kv: &KeyValue| {
        let rec = encode_kv(kv.create_revision, kv.mod_revision, &kv.value);
        v.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        v.extend_from_slice(&rec);
    };
    push(&ev.kv);
    match &ev.prev {
        Some(p) => {
            v.push(1);
            let rec = encode_kv(p.create_revision, p.mod_revision, &p.value);
            v.extend_from_slice(&(rec.len() as u32).to_le_bytes());
            v.extend_from_slice(&rec);
        }
        None => v.push(0),
    }
    v
}

fn decode_event(bytes: &[u8]) -> Result<Event> {
    let bad = || Error::Backend("corrupt log entry".into());
    let take = |b: &mut &[u8], n: usize| -> Result<Vec<u8>> {
        if b.len() < n {
            return Err(bad());
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Ok(h.to_vec())
    };
    let mut b = bytes;
    let kind = match take(&mut b, 1)?[0] {
        0 => EventKind::Put,
        _ => EventKind::Delete,
    };
    let len = |b: &mut &[u8]| -> Result<usize> {
        let v = take(b, 4)?;
        Ok(u32::from_le_bytes(v.try_into().map_err(|_| bad())?) as usize)
    };
    let klen = len(&mut b)?;
    let key = String::from_utf8(take(&mut b, klen)?).map_err(|_| bad())?;
    let rlen = len(&mut b)?;
    let kv = decode_kv(&key, &take(&mut b, rlen)?)?;
    let prev = if take(&mut b, 1)?[0] == 1 {
        let plen = len(&mut b)?;
        Some(decode_kv(&key, &take(&mut b, plen)?)?)
    } else {
        None
    };
    Ok(Event { kind, kv, prev })
}

/// The key of an encoded log entry, without decoding its values.
fn event_key(bytes: &[u8]) -> Result<&str> {
    let bad = || Error::Backend("corrupt log entry".into());
    let len = bytes.get(1..5).ok_or_else(bad)?;
    let len = u32::from_le_bytes(len.try_into().map_err(|_| bad())?) as usize;
    let key = bytes.get(5..5 + len).ok_or_else(bad)?;
    std::str::from_utf8(key).map_err(|_| bad())
}

fn log_key(rev: u64, index: u32) -> u128 {
    ((rev as u128) << 32) | index as u128
}

impl Embedded {
    /// Open (or create) the store file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_history(path, DEFAULT_HISTORY)
    }

    pub fn open_with_history(path: &Path, history: u64) -> Result<Self> {
        create_private(path)?;
        let db = Database::create(path).map_err(|e| Error::Unavailable(format!("{}: {e}", path.display())))?;
        {
            let tx = db.begin_write().map_err(backend)?;
            {
                tx.open_table(KV).map_err(backend)?;
                tx.open_table(LOG).map_err(backend)?;
                let mut meta = tx.open_table(META).map_err(backend)?;
                if meta.get("rev").map_err(backend)?.is_none() {
                    meta.insert("rev", 1).map_err(backend)?;
                    meta.insert("compacted", 0).map_err(backend)?;
                }
            }
            tx.commit().map_err(backend)?;
        }
        let db = Arc::new(db);
        let (events, _) = broadcast::channel(16 * 1024);
        let (writer, rx) = mpsc::channel::<Job>();
        let wdb = db.clone();
        let wevents = events.clone();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(&wdb, rx, &wevents, history))
            .map_err(|e| Error::Unavailable(format!("starting the store writer: {e}")))?;
        Ok(Self { inner: Arc::new(Inner { db, writer: Some(writer), thread: Some(thread), events }) })
    }

    async fn submit(&self, req: Request) -> Result<Reply> {
        let stopped = || Error::Unavailable("store writer stopped".into());
        let (tx, rx) = oneshot::channel();
        let writer = self.inner.writer.as_ref().ok_or_else(stopped)?;
        writer.send(Job { req, reply: tx }).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    fn read_meta(&self, name: &str) -> Result<u64> {
        let tx = self.inner.db.begin_read().map_err(backend)?;
        let meta = tx.open_table(META).map_err(backend)?;
        Ok(meta.get(name).map_err(backend)?.map(|v| v.value()).unwrap_or(0))
    }
}

/// The writer thread: batch, apply, commit, answer, publish.
fn writer_loop(db: &Database, rx: mpsc::Receiver<Job>, events: &broadcast::Sender<Arc<Event>>, history: u64) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut results: Vec<Result<(Reply, Vec<Event>)>> = Vec::with_capacity(batch.len());
        let committed = (|| -> Result<()> {
            let mut tx = db.begin_write().map_err(backend)?;
            tx.set_durability(Durability::Immediate);
            {
                let mut kv = tx.open_table(KV).map_err(backend)?;
                let mut log = tx.open_table(LOG).map_err(backend)?;
                let mut meta = tx.open_table(META).map_err(backend)?;
                let mut rev = meta.get("rev").map_err(backend)?.map(|v| v.value()).unwrap_or(1);
                let mut compacted = meta.get("compacted").map_err(backend)?.map(|v| v.value()).unwrap_or(0);
                for job in &batch {
                    let r = apply(&mut kv, &mut log, rev + 1, &job.req, &mut compacted);
                    match &r {
                        Ok((_, evs)) if !evs.is_empty() => rev += 1,
                        // A storage error may strike after part of the request was written;
                        // committing the rest of the batch would commit that part too, so the
                        // whole batch fails (refused requests are checked before any write).
                        Err(Error::Backend(e)) => return Err(Error::Backend(e.clone())),
                        _ => {}
                    }
                    results.push(r);
                }
                // Automatic compaction keeps the history bounded.
                if rev > compacted + 2 * history {
                    let to = rev - history;
                    compact_log(&mut log, to)?;
                    compacted = to;
                }
                meta.insert("rev", rev).map_err(backend)?;
                meta.insert("compacted", compacted).map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })();
        for (job, r) in batch.into_iter().zip(results.into_iter().chain(std::iter::repeat_with(|| Err(Error::Backend("aborted".into()))))) {
            match (&committed, r) {
                (Ok(()), Ok((reply, evs))) => {
                    for ev in evs {
                        let _ = events.send(Arc::new(ev));
                    }
                    let _ = job.reply.send(Ok(reply));
                }
                (Ok(()), Err(e)) => {
                    let _ = job.reply.send(Err(e));
                }
                (Err(e), _) => {
                    let _ = job.reply.send(Err(Error::Backend(e.to_string())));
                }
            }
        }
    }
}

fn compact_log(log: &mut redb::Table<u128, &[u8]>, to: u64) -> Result<()> {
    let keys: Vec<u128> = log
        .range(..log_key(to, 0))
        .map_err(backend)?
        .map(|e| e.map(|(k, _)| k.value()))
        .collect::<std::result::Result<_, _>>()
        .map_err(backend)?;
    for k in keys {
        log.remove(k).map_err(backend)?;
    }
    Ok(())
}

fn current(kv: &redb::Table<&str, &[u8]>, key: &str) -> Result<Option<KeyValue>> {
    match kv.get(key).map_err(backend)? {
        Some(v) => Ok(Some(decode_kv(key, v.value())?)),
        None => Ok(None),
    }
}

/// Apply one request at revision `rev` (used only if it writes). Returns its reply and events.
fn apply(
    kv: &mut redb::Table<&str, &[u8]>,
    log: &mut redb::Table<u128, &[u8]>,
    rev: u64,
    req: &Request,
    compacted: &mut u64,
) -> Result<(Reply, Vec<Event>)> {
    let mut events = Vec::new();
    let put = |kv: &mut redb::Table<&str, &[u8]>, key: &str, value: &[u8], events: &mut Vec<Event>| -> Result<()> {
        let prev = current(kv, key)?;
        let create = prev.as_ref().map_or(rev, |p| p.create_revision);
        kv.insert(key, encode_kv(create, rev, value).as_slice()).map_err(backend)?;
        events.push(Event {
            kind: EventKind::Put,
            kv: KeyValue { key: key.to_string(), value: value.to_vec(), create_revision: create, mod_revision: rev },
            prev,
        });
        Ok(())
    };
    let del = |kv: &mut redb::Table<&str, &[u8]>, key: &str, events: &mut Vec<Event>| -> Result<Option<KeyValue>> {
        let Some(prev) = current(kv, key)? else { return Ok(None) };
        kv.remove(key).map_err(backend)?;
        let mut gone = prev.clone();
        gone.mod_revision = rev;
        events.push(Event { kind: EventKind::Delete, kv: gone.clone(), prev: Some(prev) });
        Ok(Some(gone))
    };
    let reply = match req {
        Request::Create { key, value } => {
            if current(kv, key)?.is_some() {
                return Err(Error::AlreadyExists(key.clone()));
            }
            put(kv, key, value, &mut events)?;
            Reply::Rev(rev)
        }
        Request::Update { key, value, expected } => {
            let cur = current(kv, key)?.ok_or_else(|| Error::NotFound(key.clone()))?;
            if *expected != 0 && cur.mod_revision != *expected {
                return Err(Error::Conflict { key: key.clone(), current: cur.mod_revision });
            }
            put(kv, key, value, &mut events)?;
            Reply::Rev(rev)
        }
        Request::Delete { key, expected } => {
            let cur = current(kv, key)?.ok_or_else(|| Error::NotFound(key.clone()))?;
            if *expected != 0 && cur.mod_revision != *expected {
                return Err(Error::Conflict { key: key.clone(), current: cur.mod_revision });
            }
            let gone = del(kv, key, &mut events)?.ok_or_else(|| Error::NotFound(key.clone()))?;
            Reply::Deleted(gone)
        }
        Request::Txn { compares, ops } => {
            for c in compares {
                let Compare::ModRevision(key, want) = c;
                let have = current(kv, key)?.map_or(0, |k| k.mod_revision);
                if have != *want {
                    return Err(Error::TxnFailed);
                }
            }
            for op in ops {
                match op {
                    Op::Put(k, v) => put(kv, k, v, &mut events)?,
                    Op::Delete(k) => {
                        del(kv, k, &mut events)?;
                    }
                }
            }
            // A transaction that changed nothing (no ops, or deletes of absent keys) takes no
            // revision, as in etcd: answer the current one, not the next one, which the next
            // write will get.
            Reply::Rev(if events.is_empty() { rev - 1 } else { rev })
        }
        Request::Compact { revision } => {
            let to = (*revision).min(rev - 1);
            if to > *compacted {
                compact_log(log, to)?;
                *compacted = to;
            }
            return Ok((Reply::Rev(rev - 1), Vec::new()));
        }
    };
    for (i, ev) in events.iter().enumerate() {
        log.insert(log_key(rev, i as u32), encode_event(ev).as_slice()).map_err(backend)?;
    }
    Ok((reply, events))
}

/// The `kv` entries from `max(prefix, start_after)` up to the end of `prefix` (approximately:
/// callers stop at the first key without the prefix).
/// Most entries a list reads on the caller's thread (see [`Store::list`] for [`Embedded`]).
const INLINE_LIST: usize = 64;

/// A page of the keys under `prefix` at the current revision, and how many follow it; `None` if
/// that means walking more than `budget` entries (nothing is kept of a list given up).
fn list_now(db: &Database, prefix: &str, start_after: Option<&str>, limit: usize, budget: Option<usize>) -> Result<Option<ListResult>> {
    let tx = db.begin_read().map_err(backend)?;
    let kv = tx.open_table(KV).map_err(backend)?;
    let meta = tx.open_table(META).map_err(backend)?;
    let revision = meta.get("rev").map_err(backend)?.map(|v| v.value()).unwrap_or(1);
    let mut items = Vec::new();
    let mut more = false;
    let mut remaining = 0;
    for entry in prefix_range(&kv, prefix, start_after)? {
        let (k, v) = entry.map_err(backend)?;
        let key = k.value();
        if start_after == Some(key) {
            continue;
        }
        if !key.starts_with(prefix) {
            // The range starts at or after the prefix: past it, nothing matches any more.
            break;
        }
        // Every entry walked counts, those past the page too.
        if budget.is_some_and(|b| items.len() + remaining as usize == b) {
            return Ok(None);
        }
        if limit > 0 && items.len() == limit {
            // Past the page: only counted (keys, no values decoded).
            more = true;
            remaining += 1;
            continue;
        }
        items.push(decode_kv(key, v.value())?);
    }
    Ok(Some(ListResult { items, revision, more, remaining }))
}

fn prefix_range(
    kv: &redb::ReadOnlyTable<&str, &[u8]>,
    prefix: &str,
    start_after: Option<&str>,
) -> Result<redb::Range<'static, &'static str, &'static [u8]>> {
    // Never start before the prefix: a `start_after` below it would walk unrelated keys, and
    // one beyond its end would make an inverted range.
    let start = match start_after {
        Some(s) if s > prefix => s,
        _ => prefix,
    };
    match prefix_end(prefix) {
        Some(end) if start < end.as_str() => kv.range::<&str>(start..end.as_str()),
        Some(_) => kv.range::<&str>(start..start),
        None => kv.range::<&str>(start..),
    }
    .map_err(backend)
}

fn prefix_end(prefix: &str) -> Option<String> {
    // The smallest string greater than every string with this prefix.
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).ok();
        }
    }
    None
}

/// Whether `tx` can show the state at `revision`; the current revision if so.
fn readable_in(tx: &redb::ReadTransaction, revision: u64) -> Result<u64> {
    let meta = tx.open_table(META).map_err(backend)?;
    let current = meta.get("rev").map_err(backend)?.map(|v| v.value()).unwrap_or(1);
    let compacted = meta.get("compacted").map_err(backend)?.map(|v| v.value()).unwrap_or(0);
    if revision > current {
        return Err(Error::FutureRevision { requested: revision, current });
    }
    // As in etcd, the compaction revision itself is the oldest readable one (the log also
    // holds what reconstructing `compacted - 1` would need, but etcd does not serve it).
    if revision < compacted {
        return Err(Error::Compacted { requested: revision, compacted });
    }
    Ok(current)
}

/// [`Store::list_at`]: one read transaction (a consistent view of `kv`, `log` and `meta`), the
/// current keys merged in key order with the keys changed since `revision`, the latter as their
/// first change after `revision` found them.
fn list_at(db: &Database, prefix: &str, revision: u64, start_after: Option<&str>, limit: usize) -> Result<ListResult> {
    let tx = db.begin_read().map_err(backend)?;
    let current = readable_in(&tx, revision)?;
    let kv = tx.open_table(KV).map_err(backend)?;
    let log = tx.open_table(LOG).map_err(backend)?;
    let wanted = |key: &str| key.starts_with(prefix) && !matches!(start_after, Some(after) if key <= after);
    // Key -> log entry of its first change after `revision` (names only: values are read for
    // the keys that make it into the page).
    let mut changed: BTreeMap<String, u128> = BTreeMap::new();
    if revision < current {
        for entry in log.range(log_key(revision + 1, 0)..).map_err(backend)? {
            let (at, ev) = entry.map_err(backend)?;
            let key = event_key(ev.value())?;
            if wanted(key) && !changed.contains_key(key) {
                changed.insert(key.to_string(), at.value());
            }
        }
    }
    let mut live = prefix_range(&kv, prefix, start_after)?;
    let mut live_done = false;
    // The next current key; its value only while the page is not full (past the page keys are
    // only counted: decoding every later value for each page made paging through a long list
    // quadratic).
    let mut next_live = |decode: bool| -> Result<Option<(String, Option<KeyValue>)>> {
        if live_done {
            return Ok(None);
        }
        for entry in live.by_ref() {
            let (k, v) = entry.map_err(backend)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            if wanted(key) {
                let value = if decode { Some(decode_kv(key, v.value())?) } else { None };
                return Ok(Some((key.to_string(), value)));
            }
        }
        live_done = true;
        Ok(None)
    };
    let mut items = Vec::new();
    let page_open = |items: &Vec<KeyValue>| limit == 0 || items.len() < limit;
    let mut head = next_live(true)?;
    let mut changed = changed.into_iter().peekable();
    let mut more = false;
    let mut remaining = 0;
    loop {
        let from_log = match (&head, changed.peek()) {
            (None, None) => break,
            (Some((l, _)), Some((c, _))) => c.as_str() <= l.as_str(),
            (None, Some(_)) => true,
            (Some(_), None) => false,
        };
        let item = if from_log {
            let Some((key, at)) = changed.next() else { break };
            if head.as_ref().is_some_and(|(l, _)| *l == key) {
                head = next_live(page_open(&items))?;
            }
            let entry = log.get(at).map_err(backend)?.ok_or_else(|| Error::Backend(format!("log entry of {key} vanished")))?;
            match decode_event(entry.value())?.prev {
                Some(then) => Some(then),
                // Created after `revision`.
                None => continue,
            }
        } else {
            let Some((_, kv)) = head.take() else { break };
            head = next_live(page_open(&items))?;
            kv
        };
        match item {
            // A value is missing only for keys read once the page was full.
            Some(item) if page_open(&items) => items.push(item),
            _ => {
                more = true;
                remaining += 1;
            }
        }
    }
    Ok(ListResult { items, revision, more, remaining })
}

#[async_trait::async_trait]
impl Store for Embedded {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let tx = self.inner.db.begin_read().map_err(backend)?;
        let kv = tx.open_table(KV).map_err(backend)?;
        let v = kv.get(key).map_err(backend)?;
        v.map(|v| decode_kv(key, v.value())).transpose()
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<ListResult> {
        // Most lists on a request's path are short (the LimitRanges, ResourceQuotas or
        // PriorityClasses an admission reads): read those here rather than pay a blocking-pool
        // hand-off for each; a list that turns out longer is read again on the blocking pool.
        if let Some(page) = list_now(&self.inner.db, prefix, start_after, limit, Some(INLINE_LIST))? {
            return Ok(page);
        }
        let db = self.inner.db.clone();
        let prefix = prefix.to_string();
        let start_after = start_after.map(str::to_string);
        tokio::task::spawn_blocking(move || list_now(&db, &prefix, start_after.as_deref(), limit, None).map(|page| page.unwrap_or_default()))
            .await
            .map_err(backend)?
    }

    async fn list_at(&self, prefix: &str, revision: u64, start_after: Option<&str>, limit: usize) -> Result<ListResult> {
        if revision == 0 {
            return self.list(prefix, start_after, limit).await;
        }
        let db = self.inner.db.clone();
        let prefix = prefix.to_string();
        let start_after = start_after.map(str::to_string);
        tokio::task::spawn_blocking(move || list_at(&db, &prefix, revision, start_after.as_deref(), limit))
            .await
            .map_err(backend)?
    }

    async fn readable(&self, revision: u64) -> Result<()> {
        let tx = self.inner.db.begin_read().map_err(backend)?;
        readable_in(&tx, revision).map(|_| ())
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let db = self.inner.db.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || -> Result<u64> {
            let tx = db.begin_read().map_err(backend)?;
            let kv = tx.open_table(KV).map_err(backend)?;
            let mut n = 0;
            for entry in prefix_range(&kv, &prefix, None)? {
                let (k, _) = entry.map_err(backend)?;
                if !k.value().starts_with(&prefix) {
                    break;
                }
                n += 1;
            }
            Ok(n)
        })
        .await
        .map_err(backend)?
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<u64> {
        match self.submit(Request::Create { key: key.into(), value }).await? {
            Reply::Rev(r) => Ok(r),
            Reply::Deleted(kv) => Ok(kv.mod_revision),
        }
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: u64) -> Result<u64> {
        match self.submit(Request::Update { key: key.into(), value, expected }).await? {
            Reply::Rev(r) => Ok(r),
            Reply::Deleted(kv) => Ok(kv.mod_revision),
        }
    }

    async fn delete(&self, key: &str, expected: u64) -> Result<KeyValue> {
        match self.submit(Request::Delete { key: key.into(), expected }).await? {
            Reply::Deleted(kv) => Ok(kv),
            Reply::Rev(_) => Err(Error::Backend("unexpected reply to delete".into())),
        }
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<u64> {
        match self.submit(Request::Txn { compares, ops }).await? {
            Reply::Rev(r) => Ok(r),
            Reply::Deleted(kv) => Ok(kv.mod_revision),
        }
    }

    async fn watch(&self, prefix: &str, after: u64) -> Result<WatchStream> {
        // Subscribe before reading history so nothing committed in between is missed; events
        // seen in both are dropped by revision.
        let mut live = self.inner.events.subscribe();
        let db = self.inner.db.clone();
        let p = prefix.to_string();
        let (history, compacted) = tokio::task::spawn_blocking(move || -> Result<(Vec<Event>, u64)> {
            let tx = db.begin_read().map_err(backend)?;
            let meta = tx.open_table(META).map_err(backend)?;
            let compacted = meta.get("compacted").map_err(backend)?.map(|v| v.value()).unwrap_or(0);
            // History from `compacted` on is kept, so a watch needing `after + 1` onwards is
            // served when `after + 1 >= compacted` (as in etcd, where a watch may start at the
            // compaction revision itself).
            if after + 1 < compacted {
                return Ok((Vec::new(), compacted));
            }
            let log = tx.open_table(LOG).map_err(backend)?;
            let mut out = Vec::new();
            for entry in log.range(log_key(after + 1, 0)..).map_err(backend)? {
                let (_, v) = entry.map_err(backend)?;
                let ev = decode_event(v.value())?;
                if ev.kv.key.starts_with(&p) {
                    out.push(ev);
                }
            }
            Ok((out, compacted))
        })
        .await
        .map_err(backend)??;
        if after + 1 < compacted {
            return Err(Error::Compacted { requested: after, compacted });
        }
        // Live events at or below the last revision replayed from history were already sent.
        let cutoff = history.last().map_or(after, |e| e.kv.mod_revision);
        let prefix = prefix.to_string();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event>>(1024);
        tokio::spawn(async move {
            for ev in history {
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            loop {
                // Also wake when the watcher goes away, or an idle watch would keep its task
                // and broadcast receiver until the next matching event.
                let next = tokio::select! {
                    next = live.recv() => next,
                    () = tx.closed() => return,
                };
                match next {
                    Ok(ev) => {
                        if ev.kv.mod_revision <= cutoff {
                            continue;
                        }
                        if ev.kv.key.starts_with(&prefix) && tx.send(Ok((*ev).clone())).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(Err(Error::Lagged)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(tokio_stream_from(rx))
    }

    async fn revision(&self) -> Result<u64> {
        self.read_meta("rev")
    }

    async fn compact(&self, revision: u64) -> Result<()> {
        self.submit(Request::Compact { revision }).await.map(|_| ())
    }

    async fn stale(&self, _key: &str) -> Result<bool> {
        Ok(false)
    }
}

fn tokio_stream_from(rx: tokio::sync::mpsc::Receiver<Result<Event>>) -> WatchStream {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|ev| (ev, rx)) }).boxed()
}
