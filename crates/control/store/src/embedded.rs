//! The embedded store: one redb file and its write-ahead log, crash-safe (every batch is in
//! the synced log before it is acknowledged), with group commit, an in-memory key index and an
//! in-memory fan-out for watches.
//!
//! The layout is etcd's: every value is written once, under its revision, and which revision
//! of which key is current is an index kept in memory.
//! - `revs` (table): `(rev << 32 | index)` -> one change: a put (`0 | key length | key |
//!   create revision | value`) or a delete (`1 | key length | key`, a tombstone). A request
//!   writes one entry per key it changes, all under its revision.
//! - `meta` (table): the current and the compacted revision, and the format.
//! - [`Index`] (memory): each key's entries in `revs` that are kept, in order, with the
//!   current revision and the compaction mark. Built from `revs` when the file is opened.
//!
//! A read takes the index's read lock, picks the entries it shows (the latest of each key, or
//! the latest at or before the revision asked for), and opens a redb read transaction before
//! letting the lock go; the values come from that snapshot. The writer commits first and then
//! adds the batch to the index, so a snapshot opened after the index was read holds every entry
//! the index named; compaction takes entries out of the index before it commits their removal,
//! so no reader picks an entry that its snapshot lacks.
//!
//! History and compaction: the log of changes is `revs` itself. Compacting to revision `M`
//! removes each key's entries before `M` except the latest of them when that is a value (so
//! the state at `M` stays readable, as in etcd, and so does the value the first change from
//! `M` on replaced); entries at `M` or later stay. When
//! the current revision passes the compaction mark by twice the history size (`history`,
//! [`DEFAULT_HISTORY`] = 50,000 revisions by default), the writer compacts to
//! `current - history` (no further than the revision its batch started from). So watches and
//! past reads reach at least the last `history` revisions. A watch replays history from the
//! snapshot; the value a change replaced (`prev`) is the key's entry before it, which
//! compaction never removes while the change itself is kept.
//!
//! All writes go through one writer thread. It takes every request waiting in its queue, applies
//! them (each request sees the effects of the ones before it and gets its own revision, or is
//! refused alone: refusals are decided before anything is written; a storage error fails the
//! whole batch), appends the batch's records to the write-ahead log ([`crate::wal`]) and syncs
//! it, adds the batch to the index, and only then answers the callers and publishes the events.
//! Many concurrent writers thus share one sync, and a caller that was answered reads its own
//! write. When several requests came while the last batch was being logged, the writer lets
//! more gather for up to 2 ms before it logs the next ([`GATHER_SIBLINGS`]); a lone writer's
//! request is logged at once.
//!
//! Checkpoints (etcd's backend commit): the records logged since the last checkpoint are kept in
//! memory with the index (`unflushed`), and every [`CHECKPOINT_EVERY`] (or [`CHECKPOINT_BYTES`]
//! of log, sooner) the writer hands them (and compaction's removals) to the checkpoint thread,
//! which commits them to `revs` in one durable redb transaction that also records the log's
//! sequence number, and goes on writing batches meanwhile, logging them in the log's other file
//! (the log is two files: [`crate::wal::Log`]). When the commit is done the writer reads `revs`
//! from the new snapshot and lets the records it holds leave memory; the file they were logged
//! in is free to be written again from its start. A failed commit leaves all as it was (the
//! records in memory and in the log) for the next. One checkpoint is under way at a time, and
//! the writer never waits for one except at the end. A read takes a value from `unflushed` when
//! the index names a record still there (both seen under the index's lock), else from its redb
//! snapshot; a record leaves `unflushed` only after the commit that holds it. Opening the store
//! replays the frames of both log files past the recorded sequence number into `revs` (a crash
//! loses nothing acknowledged). A batch costs one append and one sync of a few pages instead of
//! a B-tree commit; the B-tree's commits are amortised over hundreds of writes, and their syncs
//! no longer hold up the writes behind them.
//!
//! Files of the earlier layout (`kv`: key -> value, `log`: each change with the value it
//! replaced) are converted when opened: the current values are kept, the history is not (the
//! compaction mark becomes the current revision, so a watch from before it relists).
//!
//! Dropping the last handle stops the writer thread (after a last checkpoint) and waits for it
//! (and it for the checkpoint thread), so the file can be opened again at once (redb refuses to open a file that is already open).

use std::collections::hash_map::Entry as Slot;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redb::{Database, Durability, ReadOnlyTable, ReadTransaction, ReadableTable, TableDefinition, TableHandle};
use tokio::sync::{broadcast, oneshot};

use crate::wal::{Frame, Log};
use crate::{Compare, Error, Event, EventKind, KeyValue, ListResult, Op, Result, Store, WatchStream};

const REVS: TableDefinition<u128, &[u8]> = TableDefinition::new("revs");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The layout `meta["format"]` names; a file without it is of the first layout (`kv` + `log`).
/// Format 3 is format 2 with a write-ahead log beside the file (`meta["wal_seq"]`): a strata
/// that reads format 2 only would miss the log's writes, so it must refuse the file. Format 4
/// has two log files (`-wal`, `-wal2`): a strata that reads format 3 would miss the second.
const FORMAT: u64 = 4;
/// The format with one log file, read as it is (its log is the first file of format 4's two).
const FORMAT_ONE_LOG: u64 = 3;
/// The format a file is converted from as it is (the same tables, no log yet).
const FORMAT_WITHOUT_LOG: u64 = 2;
/// Longest time records stay only in the log (and memory) before a checkpoint begins.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// Log bytes since the last checkpoint began that call for one sooner. A checkpoint runs on its
/// own thread while the writer goes on; this bounds the records it commits at once (and so
/// the time memory holds them twice over).
const CHECKPOINT_BYTES: u64 = 256 << 10;
/// How long opening waits for a file another process has open: one killed a moment ago holds
/// its lock until the kernel has torn it down (a restart right after `kill -9`).
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// How often an idle writer looks whether the checkpoint under way has ended.
const CHECKPOINT_POLL: Duration = Duration::from_millis(5);

/// How many revisions of history are kept for watches before automatic compaction.
pub const DEFAULT_HISTORY: u64 = 50_000;
/// Most requests applied in one transaction.
const MAX_BATCH: usize = 512;
/// Group commit: a writer that finds at least this many requests waiting when it comes back
/// from logging a batch (many clients writing at once) lets more gather before it logs the
/// next, for up to [`GATHER_WAIT`] or until [`GATHERED`] are waiting. Each batch costs one
/// `fdatasync`, whose kernel work on this class of host is most of what a small write costs
/// (PostgreSQL's `commit_delay` with `commit_siblings`, MySQL's
/// `binlog_group_commit_sync_delay`). Fewer than this many waiting (one client, or a few
/// writing one after another) are logged at once: their latency is not traded away.
const GATHER_SIBLINGS: usize = 3;
const GATHER_WAIT: Duration = Duration::from_millis(2);
const GATHERED: usize = 128;
/// How often a gathering writer looks at its queue.
const GATHER_STEP: Duration = Duration::from_micros(250);
/// Most values a list reads on the caller's thread (see [`Store::list`] for [`Embedded`]).
const INLINE_LIST: usize = 64;

enum Request {
    Create { key: String, value: Vec<u8> },
    Update { key: String, value: Vec<u8>, expected: u64 },
    Delete { key: String, expected: u64 },
    Txn { compares: Vec<Compare>, ops: Vec<Op> },
    Compact { revision: u64 },
    /// Stop the writer at once, without a checkpoint (what a crash leaves).
    #[cfg(test)]
    Abandon,
    /// Make the checkpoints from now on fail (`true`) or work again.
    #[cfg(test)]
    FailCheckpoints(bool),
    /// Begin a checkpoint now if there is something to commit and none is under way.
    #[cfg(test)]
    CheckpointNow,
}

enum Reply {
    Rev(u64),
    Deleted(KeyValue),
}

struct Job {
    req: Request,
    reply: oneshot::Sender<Result<Reply>>,
}

/// Where a change is in `revs`: its revision and its place among the request's changes.
type Loc = u128;

fn loc(rev: u64, index: u32) -> Loc {
    ((rev as u128) << 32) | index as u128
}

fn rev_of(at: Loc) -> u64 {
    (at >> 32) as u64
}

/// One kept entry of a key in `revs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    at: Loc,
    /// The create revision of the value written there; 0 for a delete (no write has revision
    /// 0: the first one is 2).
    create: u64,
}

impl Entry {
    fn is_value(self) -> bool {
        self.create != 0
    }

    fn kv(self, key: String, value: Vec<u8>) -> KeyValue {
        KeyValue { key, value, create_revision: self.create, mod_revision: rev_of(self.at) }
    }
}

/// The store's key index: what is current and what is kept of the past, without the values.
#[derive(Default)]
struct Index {
    /// Each key with entries kept, its entries in order (the last is its current state).
    keys: BTreeMap<String, Vec<Entry>>,
    /// The revision the indexed state is at.
    rev: u64,
    /// The compaction mark: the oldest revision whose state can be read.
    compacted: u64,
    /// The records written since the last checkpoint, which `revs` does not hold yet.
    unflushed: BTreeMap<Loc, Arc<[u8]>>,
}

impl Index {
    /// The key's entry that holds its value at `at` (`None`: now); `None` if it had none.
    fn visible(entries: &[Entry], at: Option<u64>) -> Option<Entry> {
        let upto = match at {
            None => entries.len(),
            Some(r) => entries.partition_point(|e| rev_of(e.at) <= r),
        };
        upto.checked_sub(1).map(|i| entries[i]).filter(|e| e.is_value())
    }

    /// Whether the state at `revision` can be read (etcd's rules: the compaction revision
    /// itself is the oldest readable one).
    fn readable(&self, revision: u64) -> Result<()> {
        if revision > self.rev {
            return Err(Error::FutureRevision { requested: revision, current: self.rev });
        }
        if revision < self.compacted {
            return Err(Error::Compacted { requested: revision, compacted: self.compacted });
        }
        Ok(())
    }

    /// The keys under `prefix` after `start_after`, in order, with the entry each shows at
    /// `at` (`None`: now): the first `limit` (0: all) to read, and how many more follow.
    fn page(&self, prefix: &str, start_after: Option<&str>, limit: usize, at: Option<u64>) -> (Vec<(String, Entry)>, u64) {
        // Never start before the prefix: a `start_after` below it would walk unrelated keys.
        let from = match start_after {
            Some(s) if s >= prefix => Bound::Excluded(s),
            _ => Bound::Included(prefix),
        };
        let mut page = Vec::new();
        let mut remaining = 0;
        for (key, entries) in self.keys.range::<str, _>((from, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            let Some(entry) = Self::visible(entries, at) else { continue };
            if limit == 0 || page.len() < limit {
                page.push((key.clone(), entry));
            } else {
                remaining += 1;
            }
        }
        (page, remaining)
    }

    /// Compact to `to`: take out of the index, and return for removal from `revs`, each key's
    /// entries before `to` except the latest of them when that holds a value. What stays shows
    /// the state at `to` and, for every change from `to` on, the value it replaced.
    fn compact(&mut self, to: u64) -> Vec<Loc> {
        let mut gone = Vec::new();
        self.keys.retain(|_, entries| {
            let before = entries.partition_point(|e| rev_of(e.at) < to);
            // A delete goes with all before it: the key's absence needs no entry.
            let drop = match before.checked_sub(1).map(|i| entries[i]) {
                Some(last) if last.is_value() => before - 1,
                _ => before,
            };
            gone.extend(entries.drain(..drop).map(|e| e.at));
            !entries.is_empty()
        });
        self.compacted = to;
        gone
    }
}

// The index is only ever changed by code that cannot panic half-way (no unwraps, no I/O while
// it is held), so a poisoned lock still guards a whole index.
fn read(index: &RwLock<Index>) -> RwLockReadGuard<'_, Index> {
    index.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(index: &RwLock<Index>) -> RwLockWriteGuard<'_, Index> {
    index.write().unwrap_or_else(PoisonError::into_inner)
}

/// The embedded store. Cheap to clone; the clones share one file and one writer thread.
#[derive(Clone)]
pub struct Embedded {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    index: Arc<RwLock<Index>>,
    /// `None` only while dropping.
    writer: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    events: broadcast::Sender<Arc<Event>>,
    stats: Arc<Stats>,
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

/// The store holds every Secret: its file (and its log) is the owner's alone (0600). A new file is created
/// with that mode (redb then initialises the empty file), so it is never readable by others,
/// not even for a moment; an existing file with looser bits is tightened before it is opened.
/// Returns the file, open for reading and writing.
pub(crate) fn create_private(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let unavailable = |e: std::io::Error| Error::Unavailable(format!("{}: {e}", path.display()));
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path).map_err(unavailable)?;
    let mode = file.metadata().map_err(unavailable)?.permissions().mode();
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700)).map_err(unavailable)?;
        tracing::warn!(path = %path.display(), "the store file was readable by others; its mode is now {:o}", mode & 0o700);
    }
    Ok(file)
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

fn corrupt(at: Loc) -> Error {
    Error::Backend(format!("corrupt store entry at revision {} ({})", rev_of(at), (at & 0xffff_ffff) as u32))
}

/// The length of the record of a put of `value` under `key`.
fn record_len(key: &str, value: Option<&[u8]>) -> Result<u32> {
    let len = 1 + 4 + key.len() + value.map_or(0, |v| 8 + v.len());
    u32::try_from(len).map_err(|_| Error::Backend(format!("{key}: a value of {len} bytes is too large to store")))
}

/// Write a put (`value` with its create revision) or a delete (`None`) into `buf`, which is
/// [`record_len`] long.
fn encode_record(buf: &mut [u8], key: &str, value: Option<(u64, &[u8])>) {
    buf[0] = u8::from(value.is_none());
    buf[1..5].copy_from_slice(&(key.len() as u32).to_le_bytes());
    let rest = &mut buf[5..];
    rest[..key.len()].copy_from_slice(key.as_bytes());
    if let Some((create, value)) = value {
        let rest = &mut rest[key.len()..];
        rest[..8].copy_from_slice(&create.to_le_bytes());
        rest[8..].copy_from_slice(value);
    }
}

/// A record's parts: its key, and for a put the create revision and the value.
fn decode_record(at: Loc, bytes: &[u8]) -> Result<(&str, Option<(u64, &[u8])>)> {
    let (&kind, rest) = bytes.split_first().ok_or_else(|| corrupt(at))?;
    let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(|| corrupt(at))?;
    let len = u32::from_le_bytes(*len) as usize;
    let key = rest.get(..len).ok_or_else(|| corrupt(at))?;
    let key = std::str::from_utf8(key).map_err(|_| corrupt(at))?;
    match kind {
        0 => {
            let (create, value) = rest[len..].split_first_chunk::<8>().ok_or_else(|| corrupt(at))?;
            Ok((key, Some((u64::from_le_bytes(*create), value))))
        }
        1 => Ok((key, None)),
        _ => Err(corrupt(at)),
    }
}

/// The value of the put whose record is `record`.
fn put_value(at: Loc, record: &[u8]) -> Result<Vec<u8>> {
    match decode_record(at, record)? {
        (_, Some((_, value))) => Ok(value.to_vec()),
        (_, None) => Err(corrupt(at)),
    }
}

/// The value of the put at `at`: from `recent` if it is there, else from `revs`.
fn value_at(recent: &BTreeMap<Loc, Arc<[u8]>>, revs: &impl ReadableTable<u128, &'static [u8]>, at: Loc) -> Result<Vec<u8>> {
    if let Some(record) = recent.get(&at) {
        return put_value(at, record);
    }
    let record = revs.get(at).map_err(backend)?.ok_or_else(|| Error::Backend(format!("store entry at revision {} is missing", rev_of(at))))?;
    put_value(at, record.value())
}

/// What a read sees: a redb snapshot, and the records not in it yet that the read needs, both
/// taken under the index's read lock (see the module's comment).
struct View {
    tx: ReadTransaction,
    recent: BTreeMap<Loc, Arc<[u8]>>,
}

/// Which unflushed records a read takes into its [`View`].
enum Wanted {
    At(Vec<Loc>),
    /// Every record from the first location up to (not including) the second.
    Range(Loc, Loc),
}

/// Pick what to read from the index, and take a [`View`] holding it.
fn snapshot<T>(db: &Database, index: &RwLock<Index>, pick: impl FnOnce(&Index) -> Result<(T, Wanted)>) -> Result<(T, View)> {
    let index = read(index);
    let (picked, wanted) = pick(&index)?;
    let recent = if index.unflushed.is_empty() {
        BTreeMap::new()
    } else {
        match wanted {
            Wanted::At(locs) => locs.into_iter().filter_map(|at| index.unflushed.get(&at).map(|r| (at, r.clone()))).collect(),
            Wanted::Range(from, to) if from < to => index.unflushed.range(from..to).map(|(at, r)| (*at, r.clone())).collect(),
            Wanted::Range(..) => BTreeMap::new(),
        }
    };
    let tx = db.begin_read().map_err(backend)?;
    drop(index);
    Ok((picked, View { tx, recent }))
}

/// The values of `page`'s entries, read from `view`.
fn read_page(view: &View, page: Vec<(String, Entry)>) -> Result<Vec<KeyValue>> {
    let revs = view.tx.open_table(REVS).map_err(backend)?;
    page.into_iter().map(|(key, entry)| Ok(entry.kv(key, value_at(&view.recent, &revs, entry.at)?))).collect()
}

fn read_meta(meta: &impl ReadableTable<&'static str, u64>, name: &str) -> Result<Option<u64>> {
    Ok(meta.get(name).map_err(backend)?.map(|v| v.value()))
}

/// Open the redb file at `path`, waiting up to `wait` while another process has it open.
fn open_database(path: &Path, wait: Duration) -> Result<Database> {
    let deadline = Instant::now() + wait;
    let mut waited = false;
    loop {
        match Database::create(path) {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                if !waited {
                    tracing::warn!(path = %path.display(), "the store file is open in another process; waiting up to {wait:?} for it to let go");
                    waited = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(Error::Unavailable(format!(
                    "{}: the store file is open in another process (another strata server on this data directory?); waited {wait:?}",
                    path.display()
                )))
            }
            Err(e) => return Err(Error::Unavailable(format!("{}: {e}", path.display()))),
        }
    }
}

/// Prepare the file's tables: a new file gets the current layout, a file of the first layout is
/// converted, a file of a later one is refused.
fn prepare(db: &Database, path: &Path) -> Result<()> {
    let tx = db.begin_write().map_err(backend)?;
    let legacy = tx.list_tables().map_err(backend)?.any(|t| t.name() == legacy::KV.name());
    {
        tx.open_table(REVS).map_err(backend)?;
        let mut meta = tx.open_table(META).map_err(backend)?;
        match read_meta(&meta, "format")? {
            Some(FORMAT) => {}
            Some(FORMAT_WITHOUT_LOG | FORMAT_ONE_LOG) => {
                meta.insert("format", FORMAT).map_err(backend)?;
            }
            Some(other) => {
                return Err(Error::Unavailable(format!(
                    "{}: the store's format is {other}, this strata reads format {FORMAT} (written by a newer strata?)",
                    path.display()
                )))
            }
            None => {
                if read_meta(&meta, "rev")?.is_none() {
                    meta.insert("rev", 1).map_err(backend)?;
                    meta.insert("compacted", 0).map_err(backend)?;
                }
                meta.insert("format", FORMAT).map_err(backend)?;
            }
        }
    }
    if legacy {
        let rev = {
            let meta = tx.open_table(META).map_err(backend)?;
            read_meta(&meta, "rev")?.unwrap_or(1)
        };
        let n = legacy::convert(&tx)?;
        let mut meta = tx.open_table(META).map_err(backend)?;
        meta.insert("compacted", rev).map_err(backend)?;
        tracing::info!(path = %path.display(), keys = n, revision = rev, "converted the store to format {FORMAT}: values kept, history before revision {rev} dropped");
    }
    tx.commit().map_err(backend)
}

/// Apply the log's frames (in sequence order) that the last checkpoint does not hold, in one
/// durable commit: the consecutive ones from the first after it. Returns the sequence number
/// of the last frame now in `revs`.
fn replay(db: &Database, path: &Path, frames: &[Frame]) -> Result<u64> {
    let mut tx = db.begin_write().map_err(backend)?;
    tx.set_durability(Durability::Immediate);
    let seq = {
        let mut revs = tx.open_table(REVS).map_err(backend)?;
        let mut meta = tx.open_table(META).map_err(backend)?;
        let durable = read_meta(&meta, "wal_seq")?.unwrap_or(0);
        let newer: Vec<&Frame> = frames.iter().filter(|f| f.seq > durable).collect();
        let Some(first) = newer.first() else { return Ok(durable) };
        let run = newer.iter().zip(first.seq..).take_while(|(f, seq)| f.seq == *seq).count();
        let todo = &newer[..run];
        if run < newer.len() {
            // Frames are written in order and each only after the one before it was on disk:
            // one past a gap was never acknowledged.
            tracing::warn!(path = %path.display(), after = todo.last().map_or(durable, |f| f.seq), skipped = newer.len() - run, "write-ahead log frames after a gap are not replayed");
        }
        if first.seq != durable + 1 {
            return Err(Error::Unavailable(format!(
                "{}: its write-ahead log starts at batch {}, but the store holds batches up to {durable} only",
                path.display(),
                first.seq
            )));
        }
        for frame in todo {
            for (at, record) in &frame.puts {
                revs.insert(*at, record.as_ref()).map_err(backend)?;
            }
            for at in &frame.removes {
                revs.remove(*at).map_err(backend)?;
            }
            meta.insert("rev", frame.rev).map_err(backend)?;
            meta.insert("compacted", frame.compacted).map_err(backend)?;
            meta.insert("wal_seq", frame.seq).map_err(backend)?;
        }
        tracing::info!(path = %path.display(), batches = todo.len(), "replayed the store's write-ahead log");
        todo.last().map_or(durable, |f| f.seq)
    };
    tx.commit().map_err(backend)?;
    Ok(seq)
}

/// `revs` as committed now, for the writer's reads of values not in memory.
fn open_flushed(db: &Database) -> Result<ReadOnlyTable<u128, &'static [u8]>> {
    db.begin_read().map_err(backend)?.open_table(REVS).map_err(backend)
}

/// Build the index from `revs`.
fn load_index(db: &Database) -> Result<Index> {
    let tx = db.begin_read().map_err(backend)?;
    let meta = tx.open_table(META).map_err(backend)?;
    let mut index = Index { keys: BTreeMap::new(), rev: read_meta(&meta, "rev")?.unwrap_or(1), compacted: read_meta(&meta, "compacted")?.unwrap_or(0), unflushed: BTreeMap::new() };
    let revs = tx.open_table(REVS).map_err(backend)?;
    for record in revs.iter().map_err(backend)? {
        let (at, record) = record.map_err(backend)?;
        let at = at.value();
        let (key, value) = decode_record(at, record.value())?;
        let entry = Entry { at, create: value.map_or(0, |(create, _)| create) };
        match index.keys.get_mut(key) {
            Some(entries) => entries.push(entry),
            None => {
                index.keys.insert(key.to_string(), vec![entry]);
            }
        }
    }
    Ok(index)
}

/// The first layout: `kv` (key -> create rev | mod rev | value) and `log` (the history, each
/// change with the value it replaced). Only read, to convert a file.
mod legacy {
    use super::*;

    pub(super) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
    const LOG: TableDefinition<u128, &[u8]> = TableDefinition::new("log");

    /// Write each current value of `kv` into `revs` under its mod revision, and drop `kv` and
    /// `log`. Returns how many keys were converted.
    pub(super) fn convert(tx: &redb::WriteTransaction) -> Result<usize> {
        let mut revs = tx.open_table(REVS).map_err(backend)?;
        let mut next: HashMap<u64, u32> = HashMap::new();
        let mut n = 0;
        {
            let kv = tx.open_table(KV).map_err(backend)?;
            for item in kv.iter().map_err(backend)? {
                let (key, record) = item.map_err(backend)?;
                let (key, record) = (key.value(), record.value());
                let bad = || Error::Backend(format!("corrupt record for {key} in the store's first layout"));
                let (create, rest) = record.split_first_chunk::<8>().ok_or_else(bad)?;
                let (modr, value) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
                let modr = u64::from_le_bytes(*modr);
                // Keys written by one transaction share its revision: each its own place.
                let index = next.entry(modr).or_insert(0);
                let at = loc(modr, *index);
                *index += 1;
                let mut slot = revs.insert_reserve(at, record_len(key, Some(value))?).map_err(backend)?;
                encode_record(slot.as_mut(), key, Some((u64::from_le_bytes(*create), value)));
                n += 1;
            }
        }
        drop(revs);
        tx.delete_table(KV).map_err(backend)?;
        tx.delete_table(LOG).map_err(backend)?;
        Ok(n)
    }

    #[cfg(test)]
    pub(super) fn write(path: &Path, rev: u64, compacted: u64, items: &[(&str, u64, u64, &[u8])]) {
        let db = Database::create(path).expect("create");
        let tx = db.begin_write().expect("write");
        {
            let mut kv = tx.open_table(KV).expect("kv");
            for (key, create, modr, value) in items {
                let mut v = create.to_le_bytes().to_vec();
                v.extend_from_slice(&modr.to_le_bytes());
                v.extend_from_slice(value);
                kv.insert(*key, v.as_slice()).expect("insert");
            }
            let mut log = tx.open_table(LOG).expect("log");
            log.insert(loc(rev, 0), b"an entry of the old history".as_slice()).expect("insert");
            let mut meta = tx.open_table(META).expect("meta");
            meta.insert("rev", rev).expect("rev");
            meta.insert("compacted", compacted).expect("compacted");
        }
        tx.commit().expect("commit");
    }
}

impl Embedded {
    /// Open (or create) the store file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_history(path, DEFAULT_HISTORY)
    }

    pub fn open_with_history(path: &Path, history: u64) -> Result<Self> {
        create_private(path)?;
        let db = open_database(path, LOCK_WAIT)?;
        prepare(&db, path)?;
        let (mut wal, frames) = Log::open(path)?;
        let seq = replay(&db, path, &frames)?;
        wal.replayed()?;
        let index = Arc::new(RwLock::new(load_index(&db)?));
        let flushed = open_flushed(&db)?;
        let db = Arc::new(db);
        let (events, _) = broadcast::channel(16 * 1024);
        let (writer, rx) = mpsc::channel::<Job>();
        let (queue, jobs) = mpsc::channel::<Checkpoint>();
        let (done, answers) = mpsc::channel::<Committed>();
        let checkpointer = {
            let db = db.clone();
            std::thread::Builder::new()
                .name("store-checkpoint".into())
                .spawn(move || {
                    for checkpoint in jobs {
                        if done.send(checkpoint.commit(&db)).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| Error::Unavailable(format!("starting the store checkpoint thread: {e}")))?
        };
        let stats = Arc::new(Stats::default());
        let w = Writer {
            db: db.clone(),
            index: index.clone(),
            events: events.clone(),
            history,
            wal,
            seq,
            checkpointed: seq,
            removes: Vec::new(),
            flushed,
            last_checkpoint: Instant::now(),
            running: None,
            checkpoints: Some((queue, answers)),
            checkpointer: Some(checkpointer),
            failing: false,
            stats: stats.clone(),
            #[cfg(test)]
            checkpoints_fail: false,
        };
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| Error::Unavailable(format!("starting the store writer: {e}")))?;
        Ok(Self { inner: Arc::new(Inner { db, index, writer: Some(writer), thread: Some(thread), events, stats }) })
    }

    /// What the writer has done so far (its batches and the requests in them).
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    async fn submit(&self, req: Request) -> Result<Reply> {
        let stopped = || Error::Unavailable("store writer stopped".into());
        let (tx, rx) = oneshot::channel();
        let writer = self.inner.writer.as_ref().ok_or_else(stopped)?;
        writer.send(Job { req, reply: tx }).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// What `pick` reads from the index, and a view taken while the index was held: it holds
    /// every entry `pick` saw (see the module's comment).
    fn snapshot<T>(&self, pick: impl FnOnce(&Index) -> Result<(T, Wanted)>) -> Result<(T, View)> {
        snapshot(&self.inner.db, &self.inner.index, pick)
    }

    /// Stop the writer without a checkpoint, as a crash would, and close the store.
    #[cfg(test)]
    async fn abandon(self) {
        let _ = self.submit(Request::Abandon).await;
    }

    /// Make the checkpoints from now on fail without committing (`true`), or work again.
    #[cfg(test)]
    async fn fail_checkpoints(&self, fail: bool) {
        self.submit(Request::FailCheckpoints(fail)).await.expect("fail_checkpoints");
    }

    /// Begin a checkpoint now (if there is something to commit and none is under way).
    #[cfg(test)]
    async fn checkpoint_now(&self) {
        self.submit(Request::CheckpointNow).await.expect("checkpoint_now");
    }

    /// A page of the keys under `prefix` as of `at` (`None`: now), its values read on the
    /// caller's thread when there are few, on the blocking pool otherwise.
    async fn page(&self, prefix: &str, start_after: Option<&str>, limit: usize, at: Option<u64>) -> Result<ListResult> {
        let ((page, remaining, revision), view) = self.snapshot(|index| {
            if let Some(r) = at {
                index.readable(r)?;
            }
            let (page, remaining) = index.page(prefix, start_after, limit, at);
            let wanted = Wanted::At(page.iter().map(|(_, e)| e.at).collect());
            Ok(((page, remaining, at.unwrap_or(index.rev)), wanted))
        })?;
        let items = if page.len() <= INLINE_LIST {
            read_page(&view, page)?
        } else {
            tokio::task::spawn_blocking(move || read_page(&view, page)).await.map_err(backend)??
        };
        Ok(ListResult { items, revision, more: remaining > 0, remaining })
    }
}

/// A batch's writes not yet in the index: each key's new entries, in order.
type Pending = HashMap<String, Vec<Entry>>;

/// The writer thread's state.
struct Writer {
    db: Arc<Database>,
    index: Arc<RwLock<Index>>,
    events: broadcast::Sender<Arc<Event>>,
    history: u64,
    wal: Log,
    /// The last batch's sequence number in the log.
    seq: u64,
    /// The last sequence number the B-tree holds.
    checkpointed: u64,
    /// Locations compaction took out of the index that `revs` still holds: removed by the next
    /// checkpoint.
    removes: Vec<Loc>,
    /// `revs` as of the last checkpoint.
    flushed: ReadOnlyTable<u128, &'static [u8]>,
    /// When the last checkpoint began.
    last_checkpoint: Instant,
    /// The checkpoint under way, if one is.
    running: Option<Running>,
    /// The checkpoint thread: what to commit, and each commit's outcome (on failure, with the
    /// removals it was to make, for the next one).
    checkpoints: Option<(mpsc::Sender<Checkpoint>, mpsc::Receiver<Committed>)>,
    checkpointer: Option<JoinHandle<()>>,
    /// The last checkpoint failed: the next begins on time only, not sooner for the log's size.
    failing: bool,
    stats: Arc<Stats>,
    /// Checkpoints fail without committing anything, as a crash in the middle of one would
    /// leave the files.
    #[cfg(test)]
    checkpoints_fail: bool,
}

/// A checkpoint under way on the checkpoint thread.
struct Running {
    /// The last batch it commits.
    seq: u64,
    /// The first location after its records.
    cut: Loc,
}

/// A checkpoint's outcome: on failure, the removals it was to make.
type Committed = std::result::Result<(), (Error, Vec<Loc>)>;

/// What a checkpoint commits: the records logged up to batch `seq` (the store at revision `rev`,
/// compacted to `compacted`) and the removals of compaction.
struct Checkpoint {
    records: Vec<(Loc, Arc<[u8]>)>,
    removes: Vec<Loc>,
    rev: u64,
    compacted: u64,
    seq: u64,
    /// Fail without committing anything (what a crash in the middle of it leaves).
    #[cfg(test)]
    fail: bool,
}

impl Checkpoint {
    /// Commit to `revs`, durably, with the log's sequence number. A failure commits nothing
    /// and hands back the removals.
    fn commit(self, db: &Database) -> Committed {
        #[cfg(test)]
        if self.fail {
            return Err((Error::Backend("checkpoints fail (test)".into()), self.removes));
        }
        let Checkpoint { records, removes, rev, compacted, seq, .. } = self;
        let committed = (|| -> Result<()> {
            let mut tx = db.begin_write().map_err(backend)?;
            tx.set_durability(Durability::Immediate);
            {
                let mut revs = tx.open_table(REVS).map_err(backend)?;
                let mut meta = tx.open_table(META).map_err(backend)?;
                for (at, record) in &records {
                    revs.insert(*at, record.as_ref()).map_err(backend)?;
                }
                // After the inserts: compaction may remove a record this commit inserts.
                for at in &removes {
                    revs.remove(*at).map_err(backend)?;
                }
                meta.insert("rev", rev).map_err(backend)?;
                meta.insert("compacted", compacted).map_err(backend)?;
                meta.insert("wal_seq", seq).map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })();
        committed.map_err(|e| (e, removes))
    }
}

/// Take waiting requests into `batch` until it holds `max`.
fn drain(rx: &mpsc::Receiver<Job>, batch: &mut Vec<Job>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// What the writer has done: batches logged, requests in them, and batches it let gather.
#[derive(Debug, Default)]
pub struct Stats {
    pub batches: AtomicU64,
    pub requests: AtomicU64,
    pub gathered: AtomicU64,
}

impl Writer {
    /// Batch, apply, log, index, answer, publish; checkpoint when due, when idle and at the end.
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        loop {
            // Requests that came while the last batch was written: others are on their way.
            let (first, busy) = match rx.try_recv() {
                Ok(job) => (Some(job), true),
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => (None, false),
            };
            let first = if first.is_some() {
                first
            } else if self.running.is_some() || self.seq > self.checkpointed {
                let wait = if self.running.is_some() { CHECKPOINT_POLL } else { CHECKPOINT_EVERY.saturating_sub(self.last_checkpoint.elapsed()) };
                match rx.recv_timeout(wait) {
                    Ok(job) => Some(job),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(job) => Some(job),
                    Err(_) => break,
                }
            };
            if let Some(first) = first {
                let mut batch = vec![first];
                drain(&rx, &mut batch, MAX_BATCH);
                if busy && batch.len() >= GATHER_SIBLINGS {
                    // Sleeping, not blocked on the queue: a request sent meanwhile wakes no one.
                    let until = Instant::now() + GATHER_WAIT;
                    self.stats.gathered.fetch_add(1, Ordering::Relaxed);
                    while batch.len() < GATHERED && Instant::now() < until {
                        std::thread::sleep(GATHER_STEP.min(until.saturating_duration_since(Instant::now())));
                        drain(&rx, &mut batch, MAX_BATCH);
                    }
                }
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.stats.requests.fetch_add(batch.len() as u64, Ordering::Relaxed);
                #[cfg(test)]
                if self.test_hooks(&mut batch) {
                    // What a crash leaves: no more checkpoints (the one under way ends as it
                    // may, so that the file is closed when the caller is answered).
                    self.stop_checkpointer();
                    return;
                }
                self.write(batch);
            }
            self.checkpoint_when_due();
        }
        self.finish_checkpoint(true);
        if self.seq > self.checkpointed {
            self.begin_checkpoint();
            self.finish_checkpoint(true);
        }
        self.stop_checkpointer();
    }

    /// Close the checkpoint thread's queue and wait for it to end (so that it lets the
    /// database go).
    fn stop_checkpointer(&mut self) {
        self.checkpoints.take();
        if let Some(thread) = self.checkpointer.take() {
            if thread.join().is_err() {
                tracing::error!("the store checkpoint thread panicked");
            }
        }
    }

    /// Take the test-only requests out of `batch`; true if one says to stop as by a crash.
    #[cfg(test)]
    fn test_hooks(&mut self, batch: &mut Vec<Job>) -> bool {
        let mut abandon = false;
        let mut kept = Vec::with_capacity(batch.len());
        for job in batch.drain(..) {
            match job.req {
                Request::Abandon => abandon = true,
                Request::FailCheckpoints(fail) => {
                    self.checkpoints_fail = fail;
                    let _ = job.reply.send(Ok(Reply::Rev(0)));
                }
                Request::CheckpointNow => {
                    if self.running.is_none() && self.seq > self.checkpointed {
                        self.begin_checkpoint();
                    }
                    let _ = job.reply.send(Ok(Reply::Rev(0)));
                }
                _ => kept.push(job),
            }
        }
        *batch = kept;
        abandon
    }

    /// End the checkpoint under way if it has ended, begin the next if one is due.
    fn checkpoint_when_due(&mut self) {
        self.finish_checkpoint(false);
        let due = self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY || (!self.failing && self.wal.used() >= CHECKPOINT_BYTES);
        if self.running.is_none() && self.seq > self.checkpointed && due {
            self.begin_checkpoint();
        }
    }

    fn write(&mut self, batch: Vec<Job>) {
        let mut results: Vec<Result<(Reply, Vec<Event>)>> = Vec::with_capacity(batch.len());
        let mut pending = Pending::new();
        let mut records: Vec<(Loc, Arc<[u8]>)> = Vec::new();
        let logged = (|| -> Result<Option<Frame>> {
            let indexed = read(&self.index);
            let (start, compacted) = (indexed.rev, indexed.compacted);
            let mut rev = start;
            let mut compact_to = 0;
            for job in &batch {
                let mut b = Batch { index: &indexed, flushed: &self.flushed, records: &mut records, pending: &mut pending, rev: rev + 1, events: Vec::new() };
                let r = apply(&mut b, &job.req);
                match &r {
                    Ok((_, evs)) if !evs.is_empty() => rev += 1,
                    // A storage error may strike after part of the request was written;
                    // logging the rest of the batch would log that part too, so the whole
                    // batch fails (refused requests are checked before any write).
                    Err(Error::Backend(e)) => return Err(Error::Backend(e.clone())),
                    _ => {}
                }
                if let (Request::Compact { revision }, Ok(_)) = (&job.req, &r) {
                    compact_to = compact_to.max((*revision).min(rev));
                }
                results.push(r);
            }
            drop(indexed);
            // Automatic compaction keeps the history bounded.
            if rev > compacted + 2 * self.history {
                compact_to = compact_to.max(rev - self.history);
            }
            // The index knows the revisions before this batch only.
            let to = compact_to.min(start);
            let mut removes = Vec::new();
            if to > compacted {
                let mut index = write(&self.index);
                removes = index.compact(to);
                for at in &removes {
                    index.unflushed.remove(at);
                }
                self.removes.extend_from_slice(&removes);
            }
            // Nothing changed that must survive a crash: no frame.
            if records.is_empty() && to <= compacted {
                return Ok(None);
            }
            let frame = Frame { seq: self.seq + 1, rev, compacted: to.max(compacted), puts: std::mem::take(&mut records), removes };
            self.wal.append(&frame)?;
            self.seq = frame.seq;
            Ok(Some(frame))
        })();
        match &logged {
            Ok(Some(frame)) => {
                let mut index = write(&self.index);
                for (key, entries) in pending {
                    index.keys.entry(key).or_default().extend(entries);
                }
                index.rev = frame.rev;
                index.unflushed.extend(frame.puts.iter().map(|(at, r)| (*at, r.clone())));
            }
            Ok(None) | Err(_) => {}
        }
        for (job, r) in batch.into_iter().zip(results.into_iter().chain(std::iter::repeat_with(|| Err(Error::Backend("aborted".into()))))) {
            match (&logged, r) {
                (Ok(_), Ok((reply, evs))) => {
                    for ev in evs {
                        let _ = self.events.send(Arc::new(ev));
                    }
                    let _ = job.reply.send(Ok(reply));
                }
                (Ok(_), Err(e)) => {
                    let _ = job.reply.send(Err(e));
                }
                (Err(e), _) => {
                    let _ = job.reply.send(Err(Error::Backend(e.to_string())));
                }
            }
        }
    }

    /// Begin a checkpoint of everything logged so far on the checkpoint thread, and go on
    /// logging in the other file.
    fn begin_checkpoint(&mut self) {
        self.last_checkpoint = Instant::now();
        let checkpoint = {
            let index = read(&self.index);
            // Only this thread adds records: all of them are of batches up to `seq`.
            let records = index.unflushed.iter().map(|(at, r)| (*at, r.clone())).collect();
            Checkpoint {
                records,
                removes: std::mem::take(&mut self.removes),
                rev: index.rev,
                compacted: index.compacted,
                seq: self.seq,
                #[cfg(test)]
                fail: self.checkpoints_fail,
            }
        };
        let running = Running { seq: checkpoint.seq, cut: loc(checkpoint.rev + 1, 0) };
        match &self.checkpoints {
            Some((queue, _)) => match queue.send(checkpoint) {
                Ok(()) => {
                    self.wal.switch(self.checkpointed);
                    self.running = Some(running);
                }
                Err(mpsc::SendError(checkpoint)) => {
                    tracing::error!("the store checkpoint thread has stopped; the write-ahead log keeps the writes");
                    self.removes = checkpoint.removes;
                    self.failing = true;
                }
            },
            None => self.removes = checkpoint.removes,
        }
    }

    /// Take the outcome of the checkpoint under way, waiting for it if `wait` (else only if it
    /// has ended): on success the B-tree holds its records, so they leave memory and the writer
    /// reads the new `revs`; on failure everything stays (the log keeps the writes) for the next.
    fn finish_checkpoint(&mut self, wait: bool) {
        let Some(running) = self.running.take() else { return };
        let Some((_, answers)) = &self.checkpoints else { return };
        let outcome = if wait {
            answers.recv().unwrap_or_else(|_| Err((Error::Backend("the checkpoint thread stopped".into()), Vec::new())))
        } else {
            match answers.try_recv() {
                Ok(outcome) => outcome,
                Err(mpsc::TryRecvError::Empty) => {
                    self.running = Some(running);
                    return;
                }
                Err(mpsc::TryRecvError::Disconnected) => Err((Error::Backend("the checkpoint thread stopped".into()), Vec::new())),
            }
        };
        match outcome.and_then(|()| open_flushed(&self.db).map_err(|e| (e, Vec::new()))) {
            Ok(flushed) => {
                // The new snapshot first: the writer reads what leaves memory from it.
                self.flushed = flushed;
                self.checkpointed = running.seq;
                self.failing = false;
                let mut index = write(&self.index);
                let newer = index.unflushed.split_off(&running.cut);
                index.unflushed = newer;
            }
            Err((e, mut removes)) => {
                tracing::error!(error = %e, "store checkpoint failed; the write-ahead log keeps the writes, retrying");
                removes.append(&mut self.removes);
                self.removes = removes;
                self.failing = true;
            }
        }
    }
}

/// The writer's view of keys during a batch: the index as logged, and the batch's writes.
struct Batch<'a> {
    index: &'a Index,
    flushed: &'a ReadOnlyTable<u128, &'static [u8]>,
    /// The batch's records so far, in order.
    records: &'a mut Vec<(Loc, Arc<[u8]>)>,
    pending: &'a mut Pending,
    rev: u64,
    events: Vec<Event>,
}

impl Batch<'_> {
    /// The key's latest entry if it holds a value: the batch's writes first, then the index.
    fn latest(&self, key: &str) -> Option<Entry> {
        let entries = self.pending.get(key).or_else(|| self.index.keys.get(key));
        entries.and_then(|entries| entries.last()).copied().filter(|e| e.is_value())
    }

    /// The key's current value (with its revisions), if it has one.
    fn current(&self, key: &str) -> Result<Option<KeyValue>> {
        match self.latest(key) {
            Some(entry) => {
                let value = match self.records.binary_search_by_key(&entry.at, |(at, _)| *at) {
                    Ok(i) => put_value(entry.at, &self.records[i].1)?,
                    Err(_) => value_at(&self.index.unflushed, self.flushed, entry.at)?,
                };
                Ok(Some(entry.kv(key.to_string(), value)))
            }
            None => Ok(None),
        }
    }

    /// The key's mod revision; 0 if it has no value.
    fn mod_revision(&self, key: &str) -> u64 {
        self.latest(key).map_or(0, |e| rev_of(e.at))
    }

    /// Write the next entry of this request: a put of `value`, or a delete.
    fn record(&mut self, key: &str, value: Option<(u64, &[u8])>) -> Result<()> {
        let at = loc(self.rev, self.events.len() as u32);
        let mut record = vec![0; record_len(key, value.map(|(_, v)| v))? as usize];
        encode_record(&mut record, key, value);
        self.records.push((at, Arc::from(record)));
        let entry = Entry { at, create: value.map_or(0, |(create, _)| create) };
        match self.pending.entry(key.to_string()) {
            Slot::Occupied(mut o) => o.get_mut().push(entry),
            Slot::Vacant(v) => {
                v.insert(vec![entry]);
            }
        }
        Ok(())
    }

    fn put(&mut self, key: &str, value: &[u8]) -> Result<()> {
        let prev = self.current(key)?;
        let create = prev.as_ref().map_or(self.rev, |p| p.create_revision);
        self.record(key, Some((create, value)))?;
        let kv = KeyValue { key: key.to_string(), value: value.to_vec(), create_revision: create, mod_revision: self.rev };
        self.events.push(Event { kind: EventKind::Put, kv, prev });
        Ok(())
    }

    fn delete(&mut self, key: &str) -> Result<Option<KeyValue>> {
        let Some(prev) = self.current(key)? else { return Ok(None) };
        self.record(key, None)?;
        let mut gone = prev.clone();
        gone.mod_revision = self.rev;
        self.events.push(Event { kind: EventKind::Delete, kv: gone.clone(), prev: Some(prev) });
        Ok(Some(gone))
    }
}

/// Apply one request at revision `rev` (used only if it writes). Returns its reply and events.
fn apply(b: &mut Batch<'_>, req: &Request) -> Result<(Reply, Vec<Event>)> {
    let rev = b.rev;
    let check = |b: &Batch, key: &String, expected: u64| match b.mod_revision(key) {
        0 => Err(Error::NotFound(key.clone())),
        current if expected != 0 && current != expected => Err(Error::Conflict { key: key.clone(), current }),
        _ => Ok(()),
    };
    let reply = match req {
        Request::Create { key, value } => {
            if b.mod_revision(key) != 0 {
                return Err(Error::AlreadyExists(key.clone()));
            }
            b.put(key, value)?;
            Reply::Rev(rev)
        }
        Request::Update { key, value, expected } => {
            check(b, key, *expected)?;
            b.put(key, value)?;
            Reply::Rev(rev)
        }
        Request::Delete { key, expected } => {
            check(b, key, *expected)?;
            Reply::Deleted(b.delete(key)?.ok_or_else(|| Error::NotFound(key.clone()))?)
        }
        Request::Txn { compares, ops } => {
            for c in compares {
                let Compare::ModRevision(key, want) = c;
                if b.mod_revision(key) != *want {
                    return Err(Error::TxnFailed);
                }
            }
            for op in ops {
                match op {
                    Op::Put(k, v) => b.put(k, v)?,
                    Op::Delete(k) => {
                        b.delete(k)?;
                    }
                }
            }
            // A transaction that changed nothing (no ops, or deletes of absent keys) takes no
            // revision, as in etcd: answer the current one, not the next one, which the next
            // write will get.
            Reply::Rev(if b.events.is_empty() { rev - 1 } else { rev })
        }
        Request::Compact { .. } => Reply::Rev(rev - 1),
        #[cfg(test)]
        Request::Abandon | Request::FailCheckpoints(_) | Request::CheckpointNow => Reply::Rev(rev - 1),
    };
    Ok((reply, std::mem::take(&mut b.events)))
}

#[async_trait::async_trait]
impl Store for Embedded {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let (entry, view) = self.snapshot(|index| {
            let entry = index.keys.get(key).and_then(|entries| Index::visible(entries, None));
            Ok((entry, Wanted::At(entry.map(|e| e.at).into_iter().collect())))
        })?;
        match entry {
            Some(entry) => Ok(read_page(&view, vec![(key.to_string(), entry)])?.pop()),
            None => Ok(None),
        }
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<ListResult> {
        // Most lists on a request's path are short (the LimitRanges, ResourceQuotas or
        // PriorityClasses an admission reads): their values are read here rather than pay a
        // blocking-pool hand-off for each.
        self.page(prefix, start_after, limit, None).await
    }

    async fn list_at(&self, prefix: &str, revision: u64, start_after: Option<&str>, limit: usize) -> Result<ListResult> {
        self.page(prefix, start_after, limit, (revision != 0).then_some(revision)).await
    }

    async fn readable(&self, revision: u64) -> Result<()> {
        read(&self.inner.index).readable(revision)
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let index = read(&self.inner.index);
        let keys = index.keys.range::<str, _>((Bound::Included(prefix), Bound::Unbounded)).take_while(|(key, _)| key.starts_with(prefix));
        Ok(keys.filter(|(_, entries)| Index::visible(entries, None).is_some()).count() as u64)
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
        // Subscribe before reading the index, so that every batch not yet indexed then is
        // published to this subscription; history covers the rest, up to `upto`.
        let mut live = self.inner.events.subscribe();
        let (upto, view) = self.snapshot(|index| {
            // History from the compaction mark on is kept, so a watch needing `after + 1`
            // onwards is served when `after + 1 >= compacted` (as in etcd, where a watch may
            // start at the compaction revision itself).
            if after + 1 < index.compacted {
                return Err(Error::Compacted { requested: after, compacted: index.compacted });
            }
            Ok((index.rev, Wanted::Range(loc(after + 1, 0), loc(index.rev + 1, 0))))
        })?;
        let history = if upto > after {
            let (db, index) = (self.inner.db.clone(), self.inner.index.clone());
            let prefix = prefix.to_string();
            tokio::task::spawn_blocking(move || history(&view, &db, &index, &prefix, after, upto)).await.map_err(backend)??
        } else {
            Vec::new()
        };
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
                        // Up to `upto` the history had it; a watch from the future starts after `after`.
                        if ev.kv.mod_revision <= upto.max(after) {
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
        Ok(read(&self.inner.index).rev)
    }

    async fn compact(&self, revision: u64) -> Result<()> {
        self.submit(Request::Compact { revision }).await.map(|_| ())
    }

    async fn stale(&self, _key: &str) -> Result<bool> {
        Ok(false)
    }
}

/// The changes under `prefix` after `after` up to `upto`, from `view`, each with the value it
/// replaced: the key's entry before it, from the previous change seen or, for a key's first
/// change, from the index (read through a second view: a checkpoint since the first may have
/// moved it from memory to the file).
fn history(view: &View, db: &Database, index: &RwLock<Index>, prefix: &str, after: u64, upto: u64) -> Result<Vec<Event>> {
    let revs = view.tx.open_table(REVS).map_err(backend)?;
    // (where, key, value and create revision of a put)
    let mut changes = Vec::new();
    let mut push = |at: Loc, record: &[u8]| -> Result<()> {
        let (key, value) = decode_record(at, record)?;
        if key.starts_with(prefix) {
            changes.push((at, key.to_string(), value.map(|(create, value)| (create, value.to_vec()))));
        }
        Ok(())
    };
    let (from, to) = (loc(after + 1, 0), loc(upto + 1, 0));
    let mut last = None;
    for record in revs.range(from..to).map_err(backend)? {
        let (at, record) = record.map_err(backend)?;
        push(at.value(), record.value())?;
        last = Some(at.value());
    }
    // Records in memory the snapshot lacks (a checkpoint between taking the two may have put
    // some in both).
    for (at, record) in view.recent.range(from..to) {
        if last.is_none_or(|last| *at > last) {
            push(*at, record)?;
        }
    }
    // The entry before each key's first change. Compaction never removes it while the change is
    // kept; if the index was compacted past `after` since the snapshot, the watch relists.
    let (before, earlier) = snapshot(db, index, |index| {
        if after + 1 < index.compacted {
            return Err(Error::Compacted { requested: after, compacted: index.compacted });
        }
        let mut before: HashMap<&str, Option<Entry>> = HashMap::new();
        for (at, key, _) in &changes {
            if let Slot::Vacant(slot) = before.entry(key.as_str()) {
                let entries = index.keys.get(key.as_str()).map_or(&[][..], Vec::as_slice);
                let i = entries.partition_point(|e| e.at < *at);
                slot.insert(i.checked_sub(1).map(|i| entries[i]));
            }
        }
        let wanted = Wanted::At(before.values().flatten().map(|e| e.at).collect());
        Ok((before, wanted))
    })?;
    let earlier_revs = earlier.tx.open_table(REVS).map_err(backend)?;
    let mut prev: HashMap<String, Option<KeyValue>> = HashMap::with_capacity(before.len());
    for (key, entry) in before {
        let kv = match entry.filter(|e| e.is_value()) {
            Some(e) => Some(e.kv(key.to_string(), value_at(&earlier.recent, &earlier_revs, e.at)?)),
            None => None,
        };
        prev.insert(key.to_string(), kv);
    }
    let mut events: Vec<Event> = Vec::with_capacity(changes.len());
    // Per key seen: where its latest put is in `events` (`None`: deleted since).
    let mut latest: HashMap<String, Option<usize>> = HashMap::new();
    for (at, key, value) in changes {
        let replaced = match latest.get(&key) {
            Some(Some(i)) => Some(events[*i].kv.clone()),
            Some(None) => None,
            None => prev.remove(&key).flatten(),
        };
        let event = match value {
            Some((create, value)) => {
                let kv = KeyValue { key: key.clone(), value, create_revision: create, mod_revision: rev_of(at) };
                Event { kind: EventKind::Put, kv, prev: replaced }
            }
            None => {
                let mut gone = replaced.clone().ok_or_else(|| Error::Backend(format!("the delete of {key} at revision {} has no value before it", rev_of(at))))?;
                gone.mod_revision = rev_of(at);
                Event { kind: EventKind::Delete, kv: gone, prev: replaced }
            }
        };
        latest.insert(key, (event.kind == EventKind::Put).then_some(events.len()));
        events.push(event);
    }
    Ok(events)
}

fn tokio_stream_from(rx: tokio::sync::mpsc::Receiver<Result<Event>>) -> WatchStream {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|ev| (ev, rx)) }).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_of(s: &Embedded) -> BTreeMap<String, Vec<Entry>> {
        read(&s.inner.index).keys.clone()
    }

    /// A file of the first layout (`kv` + `log`) opens with every value, its revisions and the
    /// store's revision kept; the history before is gone (a watch from it relists), the old
    /// tables are dropped, and writes go on from the revision where it stopped.
    #[tokio::test]
    async fn a_file_of_the_first_layout_is_converted() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("old.redb");
        // /a and /b written by one transaction (revision 5), /c alone.
        legacy::write(&path, 9, 3, &[("/a", 2, 5, b"a"), ("/b", 5, 5, b"b"), ("/c", 7, 9, b"c")]);
        let s = Embedded::open(&path).expect("open");
        assert_eq!(s.revision().await.expect("rev"), 9);
        let all = s.list("/", None, 0).await.expect("list").items;
        let got: Vec<_> = all.iter().map(|kv| (kv.key.as_str(), kv.create_revision, kv.mod_revision, kv.value.as_slice())).collect();
        assert_eq!(got, [("/a", 2, 5, &b"a"[..]), ("/b", 5, 5, &b"b"[..]), ("/c", 7, 9, &b"c"[..])]);
        assert!(matches!(s.watch("/", 7).await, Err(Error::Compacted { requested: 7, compacted: 9 })));
        assert_eq!(s.list_at("/", 9, None, 0).await.expect("at 9").items, all);
        assert_eq!(s.update("/a", b"a2".to_vec(), 5).await.expect("update"), 10);
        let mut w = s.watch("/", 9).await.expect("watch");
        let ev = w.next().await.expect("event").expect("ok");
        assert_eq!((ev.kv.mod_revision, ev.prev.map(|p| p.value)), (10, Some(b"a".to_vec())));
        drop((w, s));
        let db = Database::open(&path).expect("reopen");
        let tx = db.begin_read().expect("read");
        let tables: Vec<String> = tx.list_tables().expect("tables").map(|t| t.name().to_string()).collect();
        assert_eq!(tables, ["meta", "revs"]);
    }

    /// Group commit: one client writing one request after another is logged a request per
    /// batch and never made to wait; many clients writing at once, each pausing between its
    /// writes, make the writer gather (how much that saves is the scheduler bench's to show).
    #[tokio::test]
    async fn a_lone_writer_is_logged_at_once_and_many_at_once_are_gathered() {
        let dir = tempfile::tempdir().expect("dir");
        let s = Arc::new(Embedded::open(&dir.path().join("s.redb")).expect("open"));
        let stats = |s: &Embedded| {
            let st = s.stats();
            (st.batches.load(Ordering::SeqCst), st.requests.load(Ordering::SeqCst), st.gathered.load(Ordering::SeqCst))
        };
        for i in 0..30 {
            s.create(&format!("/lone/{i}"), b"v".to_vec()).await.expect("create");
        }
        assert_eq!(stats(&s), (30, 30, 0), "each write its own batch, none waited for others");

        // Threads, so that their pauses (sub-millisecond, each client its own) spread the
        // arrivals instead of lining them up on a timer tick.
        let (clients, writes) = (16u64, 20u64);
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
                    for i in 0..writes {
                        rt.block_on(s.create(&format!("/many/{c}/{i}"), b"v".to_vec())).expect("create");
                        std::thread::sleep(Duration::from_micros(100 + 53 * ((c + i) % 13)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("client");
        }
        let (batches, requests, gathered) = stats(&s);
        let (batches, requests) = (batches - 30, requests - 30);
        assert_eq!(requests, clients * writes);
        assert!(gathered > 0, "the writer never gathered: {requests} requests in {batches} batches");
        assert!(batches < requests, "{requests} requests in {batches} batches");
    }

    #[test]
    fn a_file_of_a_later_format_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("new.redb");
        {
            let db = Database::create(&path).expect("create");
            let tx = db.begin_write().expect("write");
            tx.open_table(META).expect("meta").insert("format", FORMAT + 1).expect("insert");
            tx.commit().expect("commit");
        }
        match Embedded::open(&path) {
            Err(Error::Unavailable(m)) => assert!(m.contains("format is 5, this strata reads format 4"), "{m}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a file of format 5 was opened"),
        }
    }

    /// Compacting to M keeps each key's latest value before M (and everything from M on),
    /// drops deletes before M with all before them, and the index built again from the
    /// file on reopening is the one the writer kept.
    #[tokio::test]
    async fn compaction_keeps_the_state_at_its_mark_and_nothing_older() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("c.redb");
        let s = Embedded::open(&path).expect("open");
        let a1 = s.create("/a", b"1".to_vec()).await.expect("a");
        let a2 = s.update("/a", b"2".to_vec(), a1).await.expect("a");
        let b1 = s.create("/b", b"1".to_vec()).await.expect("b");
        let b_gone = s.delete("/b", b1).await.expect("b").mod_revision;
        let c1 = s.create("/c", b"1".to_vec()).await.expect("c");
        let mark = s.update("/a", b"3".to_vec(), a2).await.expect("a");
        let c_gone = s.delete("/c", c1).await.expect("c").mod_revision;
        let a4 = s.update("/a", b"4".to_vec(), mark).await.expect("a");
        let before = s.list_at("/", mark, None, 0).await.expect("at mark").items;
        s.compact(mark).await.expect("compact");
        let revs = |key: &str| keys_of(&s).get(key).map(|es| es.iter().map(|e| (rev_of(e.at), e.is_value())).collect::<Vec<_>>());
        assert_eq!(revs("/a"), Some(vec![(a2, true), (mark, true), (a4, true)]));
        assert_eq!(revs("/b"), None, "a key deleted before the mark leaves nothing");
        assert_eq!(revs("/c"), Some(vec![(c1, true), (c_gone, false)]));
        assert!(b_gone < mark && c_gone > mark);
        assert_eq!(s.list_at("/", mark, None, 0).await.expect("at mark").items, before);
        assert!(matches!(s.list_at("/", mark - 1, None, 0).await, Err(Error::Compacted { .. })));
        // A watch from the mark replays every change from it, each with the value it replaced.
        let mut w = s.watch("/", mark - 1).await.expect("watch");
        let mut seen = Vec::new();
        for _ in 0..3 {
            let ev = w.next().await.expect("event").expect("ok");
            seen.push((ev.kv.key.clone(), ev.kv.mod_revision, ev.kind.clone(), ev.prev.map(|p| p.value)));
        }
        assert_eq!(
            seen,
            [
                ("/a".to_string(), mark, EventKind::Put, Some(b"2".to_vec())),
                ("/c".to_string(), c_gone, EventKind::Delete, Some(b"1".to_vec())),
                ("/a".to_string(), a4, EventKind::Put, Some(b"3".to_vec())),
            ]
        );
        let kept = keys_of(&s);
        drop((w, s));
        let s = Embedded::open(&path).expect("reopen");
        assert_eq!(keys_of(&s), kept);
        assert_eq!(read(&s.inner.index).compacted, mark);
    }

    /// Writes live in the log and in memory until a checkpoint, which an idle writer takes
    /// after [`CHECKPOINT_EVERY`]: then `revs` holds them with the log's sequence number, the
    /// memory is let go, and a store stopped as by a crash opens with everything, replaying
    /// nothing twice; writes after the checkpoint come back from the log alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_writer_checkpoints_and_a_crash_loses_nothing_acknowledged() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("c.redb");
        let s = Embedded::open(&path).expect("open");
        for i in 0..10 {
            s.create(&format!("/c/{i}"), vec![b'x'; 1000]).await.expect("create");
        }
        assert_eq!(read(&s.inner.index).unflushed.len(), 10, "in memory until a checkpoint");
        tokio::time::sleep(CHECKPOINT_EVERY * 3).await;
        assert!(read(&s.inner.index).unflushed.is_empty(), "an idle writer checkpointed");
        let durable = {
            let tx = s.inner.db.begin_read().expect("read");
            let meta = tx.open_table(META).expect("meta");
            (read_meta(&meta, "wal_seq").expect("seq"), read_meta(&meta, "rev").expect("rev"), redb::ReadableTableMetadata::len(&tx.open_table(REVS).expect("revs")).expect("len"))
        };
        assert_eq!(durable, (Some(10), Some(11), 10));
        s.update("/c/3", b"after".to_vec(), 0).await.expect("update");
        s.delete("/c/4", 0).await.expect("delete");
        s.abandon().await;

        let s = Embedded::open(&path).expect("reopen");
        assert_eq!(s.revision().await.expect("revision"), 13);
        let listed = s.list("/c/", None, 0).await.expect("list").items;
        assert_eq!(listed.len(), 9);
        assert_eq!(s.get("/c/3").await.expect("get").map(|kv| (kv.value, kv.create_revision, kv.mod_revision)), Some((b"after".to_vec(), 5, 12)));
        // A watch from the start replays all 12 changes, each with what it replaced.
        let events: Vec<Event> = s.watch("/c/", 1).await.expect("watch").take(12).map(|e| e.expect("event")).collect().await;
        assert_eq!(events.last().map(|e| (e.kind.clone(), e.kv.key.as_str(), e.prev.as_ref().map(|p| p.mod_revision))), Some((EventKind::Delete, "/c/4", Some(6))));
        assert_eq!(events[10].prev.as_ref().map(|p| p.value.len()), Some(1000));
        // Opened again (nothing left to replay), it is the same.
        drop(s);
        let s = Embedded::open(&path).expect("reopen");
        assert_eq!((s.revision().await.expect("revision"), s.list("/c/", None, 0).await.expect("list").items), (13, listed));
    }

    /// The durable state of the file: the log's sequence number it holds, and whether `revs`
    /// holds the record at `at`.
    fn durable(s: &Embedded, at: Loc) -> (u64, bool) {
        let tx = s.inner.db.begin_read().expect("read");
        let meta = tx.open_table(META).expect("meta");
        (read_meta(&meta, "wal_seq").expect("seq").unwrap_or(0), tx.open_table(REVS).expect("revs").get(at).expect("get").is_some())
    }

    /// A file another process still has open (as one killed a moment ago does while the kernel
    /// tears it down) is waited for, briefly: the store opens once the other lets it go.
    #[test]
    fn a_file_let_go_a_moment_later_opens() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("l.redb");
        drop(Embedded::open(&path).expect("create"));
        let held = Database::create(&path).expect("hold");
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let opened = Embedded::open(&path);
        release.join().expect("release");
        assert!(opened.is_ok(), "{:?}", opened.err().map(|e| e.to_string()));
        // Held past the wait: a clear error.
        let _held = Database::create(dir.path().join("m.redb")).expect("hold");
        let refused = open_database(&dir.path().join("m.redb"), Duration::from_millis(200)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("open in another process"), "{refused}");
    }

    /// Checkpoints run beside the writer: while they fail (or a crash cuts one short) the writes
    /// go on, in the log's second file once the first awaits its checkpoint, and stay in memory;
    /// a crash then loses nothing acknowledged (both files are replayed, in order); and once
    /// checkpoints work again, one commits everything, with the removals of a compaction made
    /// while they failed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_go_on_while_checkpoints_fail_and_a_crash_then_loses_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f.redb");
        let s = Embedded::open(&path).expect("open");
        s.fail_checkpoints(true).await;
        for i in 0..10 {
            s.create(&format!("/f/{i}"), vec![b'x'; 1000]).await.expect("create");
        }
        s.checkpoint_now().await;
        tokio::time::sleep(CHECKPOINT_EVERY / 2).await;
        for i in 10..15 {
            s.create(&format!("/f/{i}"), vec![b'y'; 1000]).await.expect("create");
        }
        // /f/0's first value (revision 2) replaced twice, then compacted away (the value
        // the revision after the mark replaced is kept).
        s.update("/f/0", b"old".to_vec(), 0).await.expect("update");
        assert_eq!(s.update("/f/0", b"new".to_vec(), 0).await.expect("update"), 18);
        s.compact(18).await.expect("compact");
        s.checkpoint_now().await;
        tokio::time::sleep(CHECKPOINT_EVERY / 2).await;
        assert_eq!(read(&s.inner.index).unflushed.len(), 16, "nothing was committed; the compacted record left memory");
        assert_eq!(durable(&s, loc(2, 0)), (0, false), "no checkpoint was committed");
        // A put's record: its key, then its create revision.
        let put = |key: &str, create: u64| [key.as_bytes(), &create.to_le_bytes()].concat();
        let files = ["f.redb-wal", "f.redb-wal2"].map(|name| std::fs::read(dir.path().join(name)).expect("log"));
        assert!(contains(&files[0], &put("/f/1", 3)) && !contains(&files[1], &put("/f/1", 3)), "the first batches are in the first file");
        assert!(contains(&files[1], &put("/f/14", 16)) && !contains(&files[0], &put("/f/14", 16)), "the writes after the first checkpoint began are in the second file");
        s.abandon().await;

        let s = Embedded::open(&path).expect("reopen");
        assert_eq!(s.revision().await.expect("revision"), 18);
        let listed = s.list("/f/", None, 0).await.expect("list").items;
        assert_eq!(listed.len(), 15);
        assert_eq!(s.get("/f/0").await.expect("get").map(|kv| kv.value), Some(b"new".to_vec()));
        assert!(matches!(s.list_at("/f/", 17, None, 0).await, Err(Error::Compacted { .. })));
        assert_eq!(durable(&s, loc(2, 0)), (18, false), "the replay committed every batch; the compacted record is not in the file");

        // Failing again, then working: one checkpoint commits both files' batches, with the
        // removal of the record compacted while they failed.
        s.fail_checkpoints(true).await;
        s.update("/f/1", b"one".to_vec(), 0).await.expect("update");
        s.checkpoint_now().await;
        tokio::time::sleep(CHECKPOINT_EVERY / 2).await;
        s.update("/f/1", b"two".to_vec(), 0).await.expect("update");
        s.compact(20).await.expect("compact");
        s.checkpoint_now().await;
        tokio::time::sleep(CHECKPOINT_EVERY / 2).await;
        assert_eq!(durable(&s, loc(3, 0)), (18, true), "nothing committed while checkpoints fail");
        s.fail_checkpoints(false).await;
        s.update("/f/2", b"three".to_vec(), 0).await.expect("update");
        let deadline = Instant::now() + Duration::from_secs(10);
        // Batches 19-22: the two updates, the compaction, this update.
        while durable(&s, loc(3, 0)).0 != 22 {
            assert!(Instant::now() < deadline, "no checkpoint committed: {:?}", durable(&s, loc(3, 0)));
            tokio::time::sleep(CHECKPOINT_EVERY / 4).await;
        }
        assert_eq!(durable(&s, loc(3, 0)), (22, false), "/f/1's first value (revision 3) was compacted away while checkpoints failed");
        tokio::time::sleep(CHECKPOINT_EVERY / 4).await;
        assert!(read(&s.inner.index).unflushed.is_empty(), "the committed records left memory");
        s.update("/f/3", b"four".to_vec(), 0).await.expect("update");
        s.abandon().await;
        let s = Embedded::open(&path).expect("reopen");
        let values: Vec<Vec<u8>> = s.list("/f/", None, 0).await.expect("list").items.into_iter().map(|kv| kv.value).collect();
        assert_eq!((values.len(), s.revision().await.expect("revision")), (15, 22));
        for want in [&b"new"[..], b"two", b"three", b"four"] {
            assert!(values.iter().any(|v| v == want), "{:?} lost", String::from_utf8_lossy(want));
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// Readers never pick an entry their snapshot lacks: gets, lists and past reads run while
    /// one key is rewritten and compacted away under them at every write (history 1).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reads_racing_compaction_always_find_their_values() {
        let dir = tempfile::tempdir().expect("dir");
        let s = Embedded::open_with_history(&dir.path().join("r.redb"), 1).expect("open");
        s.create("/k", b"0".to_vec()).await.expect("create");
        let writer = {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 1..=1500u32 {
                    s.update("/k", i.to_string().into_bytes(), 0).await.expect("update");
                }
            })
        };
        let mut readers = Vec::new();
        for _ in 0..3 {
            let s = s.clone();
            readers.push(tokio::spawn(async move {
                let mut reads = 0;
                loop {
                    let kv = s.get("/k").await.expect("get").expect("present");
                    let listed = s.list("/", None, 0).await.expect("list");
                    assert_eq!(listed.items.len(), 1);
                    match s.list_at("/", listed.revision, None, 0).await {
                        Ok(page) => assert_eq!(page.items.len(), 1),
                        Err(Error::Compacted { .. }) => {}
                        Err(e) => panic!("a past read failed: {e}"),
                    }
                    reads += 1;
                    if kv.value == b"1500" {
                        return reads;
                    }
                }
            }));
        }
        writer.await.expect("writer");
        for r in readers {
            assert!(r.await.expect("reader") > 0);
        }
        let kept = keys_of(&s);
        // At most: the one before the mark, and the revisions from the mark to 2 * history past it.
        assert!(kept["/k"].len() <= 4, "compaction kept {} entries of /k", kept["/k"].len());
    }

    /// The store against a model of etcd's semantics, over a random run of creates, updates,
    /// deletes, transactions, compactions (explicit, and automatic with a history of 12) and
    /// reopenings (closed, or abandoned without a checkpoint as a crash would leave it): after every step, the current state, the state at every readable revision,
    /// and a watch from the oldest revision it serves (each change with the value it replaced)
    /// are the model's; the readable revisions always cover the last `history`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_random_run_matches_a_model() {
        const HISTORY: u64 = 12;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("m.redb");
        let mut s = Embedded::open_with_history(&path, HISTORY).expect("open");
        // The model: the state after each revision, and every change.
        let mut states: Vec<BTreeMap<String, KeyValue>> = vec![BTreeMap::new(), BTreeMap::new()];
        let mut changes: Vec<Event> = Vec::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let keys = ["/m/a", "/m/b", "/m/c", "/m/d", "/n/e"];
        // The highest explicit compaction so far.
        let mut compacted = 0;
        for step in 0..400 {
            let rev = states.len() as u64 - 1;
            let now = states[rev as usize].clone();
            let key = keys[next(keys.len() as u64) as usize].to_string();
            let value = format!("{step}").into_bytes();
            let mut after = now.clone();
            let mut evs = Vec::new();
            let put = |after: &mut BTreeMap<String, KeyValue>, evs: &mut Vec<Event>, key: &str, value: Vec<u8>| {
                let prev = after.get(key).cloned();
                let kv = KeyValue { key: key.to_string(), value, create_revision: prev.as_ref().map_or(rev + 1, |p| p.create_revision), mod_revision: rev + 1 };
                after.insert(key.to_string(), kv.clone());
                evs.push(Event { kind: EventKind::Put, kv, prev });
            };
            let del = |after: &mut BTreeMap<String, KeyValue>, evs: &mut Vec<Event>, key: &str| {
                if let Some(prev) = after.remove(key) {
                    let mut gone = prev.clone();
                    gone.mod_revision = rev + 1;
                    evs.push(Event { kind: EventKind::Delete, kv: gone, prev: Some(prev) });
                }
            };
            match next(11) {
                0..=2 => match (s.create(&key, value.clone()).await, now.contains_key(&key)) {
                    (Ok(r), false) => {
                        assert_eq!(r, rev + 1);
                        put(&mut after, &mut evs, &key, value);
                    }
                    (Err(Error::AlreadyExists(_)), true) => {}
                    (other, exists) => panic!("step {step}: create {key} (exists: {exists}): {other:?}"),
                },
                3..=4 => {
                    let current = now.get(&key).map_or(0, |kv| kv.mod_revision);
                    let expected = [0, current, current + 1][next(3) as usize];
                    match s.update(&key, value.clone(), expected).await {
                        Ok(r) => {
                            assert!(current != 0 && (expected == 0 || expected == current), "step {step}: update of {key} at {current} expecting {expected} was accepted");
                            assert_eq!(r, rev + 1);
                            put(&mut after, &mut evs, &key, value);
                        }
                        Err(Error::NotFound(_)) => assert_eq!(current, 0),
                        Err(Error::Conflict { current: c, .. }) => assert_eq!((c, expected != 0 && expected != current), (current, true)),
                        Err(e) => panic!("step {step}: update: {e}"),
                    }
                }
                5 => match s.delete(&key, 0).await {
                    Ok(gone) => {
                        del(&mut after, &mut evs, &key);
                        assert_eq!(Some(&gone), evs.last().map(|e| &e.kv));
                    }
                    Err(Error::NotFound(_)) => assert!(!now.contains_key(&key)),
                    Err(e) => panic!("step {step}: delete: {e}"),
                },
                6..=7 => {
                    let other = keys[next(keys.len() as u64) as usize].to_string();
                    let mut ops = vec![Op::Put(key.clone(), value.clone())];
                    if other != key {
                        ops.push(if next(2) == 0 { Op::Delete(other.clone()) } else { Op::Put(other.clone(), b"t".to_vec()) });
                    }
                    let r = s.txn(vec![Compare::ModRevision(key.clone(), now.get(&key).map_or(0, |kv| kv.mod_revision))], ops.clone()).await.expect("txn");
                    for op in ops {
                        match op {
                            Op::Put(k, v) => put(&mut after, &mut evs, &k, v),
                            Op::Delete(k) => del(&mut after, &mut evs, &k),
                        }
                    }
                    assert_eq!(r, rev + 1);
                }
                8 => {
                    let to = rev.saturating_sub(next(2 * HISTORY));
                    s.compact(to).await.expect("compact");
                    compacted = compacted.max(to);
                }
                9 => {
                    // A checkpoint begins at once, or they start or stop failing (as one cut
                    // short by a crash would leave the files).
                    match next(3) {
                        0 => s.fail_checkpoints(true).await,
                        1 => s.fail_checkpoints(false).await,
                        _ => s.checkpoint_now().await,
                    }
                }
                _ => {
                    // Closed, or stopped as by a crash (no checkpoint: the log is replayed).
                    if next(2) == 0 {
                        drop(s);
                    } else {
                        s.abandon().await;
                    }
                    s = Embedded::open_with_history(&path, HISTORY).expect("reopen");
                }
            }
            if !evs.is_empty() {
                states.push(after);
                changes.extend(evs);
            }
            let rev = states.len() as u64 - 1;
            assert_eq!(s.revision().await.expect("revision"), rev, "step {step}");
            let listed = |m: &BTreeMap<String, KeyValue>| m.values().filter(|kv| kv.key.starts_with("/m/")).cloned().collect::<Vec<_>>();
            assert_eq!(s.list("/m/", None, 0).await.expect("list").items, listed(&states[rev as usize]), "step {step}");
            // The oldest readable revision: every one from it on reads as the model's; none
            // explicitly compacted, and all of the last `history`.
            let mut mark = 1;
            while s.readable(mark).await.is_err() {
                mark += 1;
            }
            assert!(mark >= compacted && mark <= compacted.max(rev.saturating_sub(HISTORY)).max(1), "step {step}: revisions from {mark} readable at {rev}, compacted to {compacted}");
            for r in mark..=rev {
                let page = s.list_at("/m/", r, None, 2).await.expect("list_at");
                let want = listed(&states[r as usize]);
                assert_eq!((page.items.as_slice(), page.remaining as usize), (&want[..want.len().min(2)], want.len().saturating_sub(2)), "step {step}: at {r}");
            }
            if mark > 1 {
                assert!(matches!(s.list_at("/m/", mark - 1, None, 0).await, Err(Error::Compacted { .. })), "step {step}");
            }
            // A watch from the mark replays the model's changes, with their previous values.
            let mut w = s.watch("/", mark.saturating_sub(1)).await.expect("watch");
            for want in changes.iter().filter(|e| e.kv.mod_revision >= mark) {
                let got = w.next().await.expect("event").expect("ok");
                assert_eq!(&got, want, "step {step}: watch from {mark}");
            }
        }
    }
}
