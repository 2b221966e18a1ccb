//! The control plane's store: one [`Store`] trait with revisions, compare-and-swap,
//! transactions and watch, the semantics of etcd v3 that Kubernetes relies on.
//!
//! - Every successful write bumps one global revision; each key remembers the revision that
//!   created it and the one that last modified it (its `resourceVersion`).
//! - [`Store::watch`] delivers every change under a prefix after a given revision, in
//!   revision order, first from history and then live; a revision older than the last
//!   compaction is [`Error::Compacted`] ("too old, relist").
//! - [`Store::list_at`] reads the state as of an earlier revision (etcd's MVCC snapshot read),
//!   back to the last compaction; older is [`Error::Compacted`] too.
//! - A write is acknowledged only once it is durable.
//!
//! Backends: [`embedded::Embedded`] (redb, the default) and [`etcd::Etcd`] (an etcd v3
//! cluster). `tests/conformance.rs` runs one suite of checks against both.

pub mod embedded;
pub mod etcd;
mod wal;

use std::pin::Pin;

use futures_util::Stream;

/// A stored value with its revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: u64,
    pub mod_revision: u64,
}

/// A page of a list.
#[derive(Clone, Debug, Default)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    /// The revision whose state the page shows: the store's current one for [`Store::list`],
    /// the requested one for [`Store::list_at`].
    pub revision: u64,
    /// More keys follow the last item.
    pub more: bool,
    /// How many keys under the prefix follow the last item (in the page's state): etcd's
    /// range `count` less the page (what Kubernetes reports as `remainingItemCount`); 0 when
    /// not [`ListResult::more`].
    pub remaining: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change. For a delete, `kv` is the value as it was before deletion and
/// `kv.mod_revision` is the revision of the delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// For puts that replaced a value, the previous value.
    pub prev: Option<KeyValue>,
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event>> + Send>>;

/// A condition on a key for [`Store::txn`].
#[derive(Clone, Debug)]
pub enum Compare {
    /// The key's mod revision equals this (0 = the key does not exist).
    ModRevision(String, u64),
}

/// One write in a transaction.
#[derive(Clone, Debug)]
pub enum Op {
    Put(String, Vec<u8>),
    Delete(String),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {0} not found")]
    NotFound(String),
    /// The compare-and-swap failed: `current` is the key's mod revision now (0 = absent).
    #[error("key {key} was modified (now at revision {current})")]
    Conflict { key: String, current: u64 },
    #[error("transaction conditions failed")]
    TxnFailed,
    /// The requested revision is older than the oldest one kept.
    #[error("revision {requested} has been compacted (oldest kept is {compacted})")]
    Compacted { requested: u64, compacted: u64 },
    /// A read at a revision the store has not reached.
    #[error("revision {requested} is in the future (current is {current})")]
    FutureRevision { requested: u64, current: u64 },
    /// A watcher fell too far behind the live stream and must relist.
    #[error("watch fell behind; relist")]
    Lagged,
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store backend: {0}")]
    Backend(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The store interface. Keys are `/`-separated strings; values opaque bytes.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Keys starting with `prefix`, in key order, after `start_after` (exclusive), at most
    /// `limit` (0 = all).
    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<ListResult>;
    /// [`Store::list`] of the state as of `revision`: values and create/mod revisions as they
    /// were then, keys deleted since present, keys created since absent. The page's
    /// `revision` is `revision`; `0` reads the current state (as in etcd).
    ///
    /// [`Error::Compacted`] when `revision` is older than the last compaction (the compaction
    /// revision itself is readable), [`Error::FutureRevision`] when the store has not reached it.
    async fn list_at(&self, prefix: &str, revision: u64, start_after: Option<&str>, limit: usize) -> Result<ListResult>;
    /// Whether the state at `revision` can be read: the errors [`Store::list_at`] would fail
    /// with, without reading anything (a read served elsewhere, e.g. from a cache, answers as a
    /// read of the store would).
    async fn readable(&self, revision: u64) -> Result<()> {
        // No key starts with NUL: an empty range at `revision`.
        self.list_at("\0", revision, None, 1).await.map(|_| ())
    }
    /// Count keys under a prefix.
    async fn count(&self, prefix: &str) -> Result<u64>;
    /// Create if absent; returns the new revision.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<u64>;
    /// Replace if the key's mod revision is `expected` (0 = any existing value).
    async fn update(&self, key: &str, value: Vec<u8>, expected: u64) -> Result<u64>;
    /// Delete if the key's mod revision is `expected` (0 = any); returns the deleted value with
    /// `mod_revision` set to the delete's revision.
    async fn delete(&self, key: &str, expected: u64) -> Result<KeyValue>;
    /// Apply `ops` atomically if every compare holds; returns the new revision.
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<u64>;
    /// Changes under `prefix` with revision > `after`, history first, then live.
    ///
    /// If `after + 1` has been compacted away this is [`Error::Compacted`]; a compaction racing
    /// with the call may instead arrive as the stream's first item, so watchers handle both.
    /// A stream that fails yields one error and ends.
    async fn watch(&self, prefix: &str, after: u64) -> Result<WatchStream>;
    /// The current revision.
    async fn revision(&self) -> Result<u64>;
    /// Forget history up to (and excluding) `revision`.
    async fn compact(&self, revision: u64) -> Result<()>;
    /// Whether the value stored under `key` is in an older storage form than the one a write
    /// would produce now (encryption at rest read it with a key other than the first one), so
    /// that an unchanged object is written again when a client re-writes it. Plain stores have
    /// one form (false); a decorator must forward it (there is no default, so that a new
    /// decorator cannot silently break key rotation).
    async fn stale(&self, key: &str) -> Result<bool>;
}

/// Compact `store` as kube-apiserver compacts etcd: at every `interval`, forget the history
/// before the revision seen at the previous tick, so watches and paginated lists always have at
/// least one interval of history. Runs until the task is dropped. (The embedded store also
/// bounds its history by size on write; this adds kube-apiserver's time bound.)
pub async fn compact_periodically(store: std::sync::Arc<dyn Store>, interval: std::time::Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    let mut seen: Option<u64> = None;
    let mut compacted = 0;
    loop {
        tick.tick().await;
        if let Some(rev) = seen.filter(|r| *r > compacted) {
            match store.compact(rev).await {
                Ok(()) | Err(Error::Compacted { .. }) => {
                    tracing::debug!(revision = rev, "compacted the store");
                    compacted = rev;
                }
                Err(e) => tracing::warn!(revision = rev, error = %e, "compacting the store"),
            }
        }
        match store.revision().await {
            Ok(r) => seen = Some(r),
            Err(e) => tracing::warn!(error = %e, "reading the store's revision for compaction"),
        }
    }
}
