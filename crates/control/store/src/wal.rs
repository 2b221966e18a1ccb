//! The embedded store's write-ahead log: what makes a batch durable before its B-tree commit.
//!
//! etcd makes a write durable by appending it to its WAL and syncing that, and commits its
//! B-tree (bbolt) only every 100 ms; the embedded store does the same with redb (see
//! [`crate::embedded`]). A sync of a few appended pages costs much less than a B-tree commit
//! (its pages, its allocator state, its header), which small batches paid once each.
//!
//! The log is two files ([`Log`]: `<store file>-wal` and `<store file>-wal2`, 0600), so that a
//! checkpoint can commit the frames of one while new frames go to the other. Each file is
//! preallocated ([`SIZE`], written with zeros once, so a sync of an append never has to commit
//! a new size or newly allocated blocks) and written from its start again when the writer
//! switches to it, which it does only once a checkpoint holds every frame in it. Each frame is
//! `payload length (u32) | CRC-32 of the payload (u32) | payload`, the payload `seq | rev |
//! compacted (u64 each) | puts (u32) | removes (u32) | each put: location (u128) | record
//! length (u32) | record | each remove: location (u128)`, all little-endian. Frames carry
//! consecutive sequence numbers across both files; the checkpoint that makes frames up to `seq`
//! part of the B-tree records `seq` in the same commit. Reading a file stops at the first frame
//! that is torn (bad length or CRC) or out of sequence: bytes after it are left from an earlier
//! round or from a write that was never acknowledged. The writer never switches files while the
//! last append failed (its frame may be on disk in part or whole, and is overwritten by the next
//! append at the same place), so no sequence number is ever in both files with two contents.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{Error, Result};

/// The file's preallocated size; a round of frames longer than this grows it.
pub(crate) const SIZE: u64 = 1 << 20;
const HEADER: usize = 8;
const FIXED: usize = 8 * 3 + 4 * 2;

/// A batch as the log keeps it: the records it wrote (at their locations in `revs`), the
/// locations compaction removed, and the store's revision and compaction mark after it.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Frame {
    pub seq: u64,
    pub rev: u64,
    pub compacted: u64,
    pub puts: Vec<(u128, Arc<[u8]>)>,
    pub removes: Vec<u128>,
}

pub(crate) struct Wal {
    file: File,
    path: PathBuf,
    /// Where the next frame goes.
    offset: u64,
    buf: Vec<u8>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Backend(format!("{}: {e}", path.display()))
}

impl Wal {
    /// The log file `<store><suffix>`: opened (created 0600 and preallocated if new), with the
    /// frames it holds in order, from its start up to the first torn or out-of-sequence one. The
    /// next [`Wal::append`] writes at the start.
    fn open(store: &Path, suffix: &str) -> Result<(Self, Vec<Frame>)> {
        let mut name = store.as_os_str().to_owned();
        name.push(suffix);
        let path = PathBuf::from(name);
        let file = crate::embedded::create_private(&path)?;
        let err = io(&path);
        let len = file.metadata().map_err(&err)?.len();
        let mut bytes = vec![0; len as usize];
        file.read_exact_at(&mut bytes, 0).map_err(&err)?;
        let frames = parse(&bytes);
        if len < SIZE {
            let zeros = vec![0u8; (SIZE - len) as usize];
            file.write_all_at(&zeros, len).map_err(&err)?;
            file.sync_all().map_err(&err)?;
            // A new file's name must be durable too before a frame in it is acknowledged.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir).and_then(|d| d.sync_all()).map_err(&err)?;
            }
        }
        drop(err);
        Ok((Wal { file, path, offset: 0, buf: Vec::new() }, frames))
    }

    /// Write `frame` after the last one and wait until it is on disk.
    fn append(&mut self, frame: &Frame) -> Result<()> {
        encode(frame, &mut self.buf)?;
        let err = io(&self.path);
        self.file.write_all_at(&self.buf, self.offset).map_err(&err)?;
        self.file.sync_data().map_err(&err)?;
        self.offset += self.buf.len() as u64;
        Ok(())
    }

    /// Every frame in the file is in a durable checkpoint: start again from the beginning.
    fn restart(&mut self) {
        self.offset = 0;
    }
}

/// The two log files and which one is written.
pub(crate) struct Log {
    files: [Wal; 2],
    active: usize,
    /// The last sequence number appended to each file since it was last started again (or
    /// found in it when opened).
    last: [u64; 2],
    /// The last append failed: its frame may be in the active file, in part or whole, until the
    /// next append writes over it.
    failed: bool,
}

impl Log {
    /// The log of the store file at `store`, with the frames its files hold in sequence order
    /// (each file's frames from its start up to the first torn or out-of-sequence one). The next
    /// [`Log::append`] writes at the start of the first file.
    pub(crate) fn open(store: &Path) -> Result<(Self, Vec<Frame>)> {
        let (first, mut frames) = Wal::open(store, "-wal")?;
        let (second, more) = Wal::open(store, "-wal2")?;
        let last = [0, more.last().map_or(0, |f| f.seq)];
        frames.extend(more);
        frames.sort_by_key(|f| f.seq);
        let mut merged: Vec<Frame> = Vec::with_capacity(frames.len());
        for frame in frames {
            match merged.last() {
                Some(prev) if prev.seq == frame.seq && *prev == frame => {}
                Some(prev) if prev.seq == frame.seq => {
                    return Err(Error::Unavailable(format!(
                        "{}: its two write-ahead log files hold different batches numbered {}",
                        store.display(),
                        frame.seq
                    )))
                }
                _ => merged.push(frame),
            }
        }
        Ok((Log { files: [first, second], active: 0, last, failed: false }, merged))
    }

    /// The frames [`Log::open`] found are all in a durable checkpoint now: empty the second file
    /// (its first frame's header zeroed, so no frame of it is read again, not even one after a
    /// gap that was not replayed) before new frames, which start in the first file, reuse their
    /// sequence numbers.
    pub(crate) fn replayed(&mut self) -> Result<()> {
        let second = &mut self.files[1];
        let err = io(&second.path);
        second.file.write_all_at(&[0; HEADER], 0).map_err(&err)?;
        second.file.sync_data().map_err(&err)?;
        second.offset = 0;
        self.last = [0, 0];
        Ok(())
    }

    /// Write `frame` after the last one and wait until it is on disk.
    pub(crate) fn append(&mut self, frame: &Frame) -> Result<()> {
        let written = self.files[self.active].append(frame);
        self.failed = written.is_err();
        if written.is_ok() {
            self.last[self.active] = frame.seq;
        }
        written
    }

    /// A checkpoint of every frame up to now begins, and the B-tree holds the frames up to
    /// `durable`: go on in the other file, from its start, if every frame in it is durable and
    /// the last append did not fail. Returns whether it switched; if not, frames go on after
    /// the ones being checkpointed, in the same file.
    pub(crate) fn switch(&mut self, durable: u64) -> bool {
        let other = 1 - self.active;
        if self.failed || self.last[other] > durable {
            return false;
        }
        self.active = other;
        self.files[other].restart();
        self.last[other] = 0;
        true
    }

    /// Bytes written to the active file since it was last started again.
    pub(crate) fn used(&self) -> u64 {
        self.files[self.active].offset
    }
}

fn encode(frame: &Frame, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    buf.extend_from_slice(&[0; HEADER]);
    buf.extend_from_slice(&frame.seq.to_le_bytes());
    buf.extend_from_slice(&frame.rev.to_le_bytes());
    buf.extend_from_slice(&frame.compacted.to_le_bytes());
    let count = |n: usize| u32::try_from(n).map_err(|_| Error::Backend(format!("a batch of {n} changes is too large for the write-ahead log")));
    buf.extend_from_slice(&count(frame.puts.len())?.to_le_bytes());
    buf.extend_from_slice(&count(frame.removes.len())?.to_le_bytes());
    for (at, record) in &frame.puts {
        buf.extend_from_slice(&at.to_le_bytes());
        buf.extend_from_slice(&count(record.len())?.to_le_bytes());
        buf.extend_from_slice(record);
    }
    for at in &frame.removes {
        buf.extend_from_slice(&at.to_le_bytes());
    }
    let len = count(buf.len() - HEADER)?;
    let crc = crc32fast::hash(&buf[HEADER..]);
    buf[..4].copy_from_slice(&len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The frames at the start of `bytes`, in sequence.
fn parse(bytes: &[u8]) -> Vec<Frame> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut rest = bytes;
    while let Some(frame) = next_frame(&mut rest) {
        if frames.last().is_some_and(|last| frame.seq != last.seq + 1) {
            break;
        }
        frames.push(frame);
    }
    frames
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
    *rest = tail;
    Some(head)
}

fn u32_of(rest: &mut &[u8]) -> Option<u32> {
    take(rest, 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes)
}

fn u64_of(rest: &mut &[u8]) -> Option<u64> {
    take(rest, 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
}

fn u128_of(rest: &mut &[u8]) -> Option<u128> {
    take(rest, 16).and_then(|b| b.try_into().ok()).map(u128::from_le_bytes)
}

/// The frame at the start of `rest` if it is whole, moving `rest` past it.
fn next_frame(rest: &mut &[u8]) -> Option<Frame> {
    let mut r = *rest;
    let len = u32_of(&mut r)? as usize;
    let crc = u32_of(&mut r)?;
    if len < FIXED {
        return None;
    }
    let mut payload = take(&mut r, len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let (seq, rev, compacted) = (u64_of(&mut payload)?, u64_of(&mut payload)?, u64_of(&mut payload)?);
    let (puts, removes) = (u32_of(&mut payload)? as usize, u32_of(&mut payload)? as usize);
    let mut frame = Frame { seq, rev, compacted, puts: Vec::with_capacity(puts.min(len)), removes: Vec::with_capacity(removes.min(len)) };
    for _ in 0..puts {
        let at = u128_of(&mut payload)?;
        let n = u32_of(&mut payload)? as usize;
        frame.puts.push((at, Arc::from(take(&mut payload, n)?)));
    }
    for _ in 0..removes {
        frame.removes.push(u128_of(&mut payload)?);
    }
    *rest = r;
    Some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, puts: usize) -> Frame {
        let puts = (0..puts).map(|i| ((seq as u128) << 32 | i as u128, Arc::from(format!("record {seq}/{i}").into_bytes()))).collect();
        Frame { seq, rev: seq + 1, compacted: seq / 2, puts, removes: vec![seq as u128, 7] }
    }

    /// Frames come back as written; a round started again over older frames ends where its
    /// own frames end; a torn frame (cut short, or a flipped byte) ends the log before it; the
    /// file is private and preallocated.
    #[test]
    fn frames_round_trip_and_reading_stops_at_a_torn_or_stale_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store.redb");
        let path = dir.path().join("store.redb-wal");
        let (mut wal, found) = Wal::open(&store, "-wal").expect("open");
        assert!(found.is_empty());
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&path).expect("metadata");
        assert_eq!((meta.permissions().mode() & 0o777, meta.len()), (0o600, SIZE));
        let first: Vec<Frame> = (1..=5).map(|s| frame(s, s as usize)).collect();
        for f in &first {
            wal.append(f).expect("append");
        }
        drop(wal);
        let (mut wal, found) = Wal::open(&store, "-wal").expect("reopen");
        assert_eq!(found, first);

        // A new round from the start: two shorter frames over the first round's.
        wal.restart();
        let second = vec![frame(6, 0), frame(7, 1)];
        for f in &second {
            wal.append(f).expect("append");
        }
        let end = wal.offset;
        drop(wal);
        assert_eq!(Wal::open(&store, "-wal").expect("reopen").1, second, "the first round's leftovers are not read");

        // The last frame torn: cut in the middle (within its record), or one byte of it changed.
        let bytes = std::fs::read(&path).expect("read");
        let mut cut = bytes.clone();
        cut[end as usize - 40..].fill(0);
        std::fs::write(&path, &cut).expect("write");
        assert_eq!(Wal::open(&store, "-wal").expect("reopen").1, second[..1]);
        let mut flipped = bytes;
        flipped[end as usize - 20] ^= 1;
        std::fs::write(&path, &flipped).expect("write");
        assert_eq!(Wal::open(&store, "-wal").expect("reopen").1, second[..1]);
    }

    /// The two files of a [`Log`]: frames go on in the other file after a switch and come back
    /// merged in sequence order; no switch while the other file holds frames not yet durable;
    /// both files hold frames numbered the same but different is refused; after a replay the
    /// second file's frames are gone and new ones start in the first.
    #[test]
    fn the_log_switches_files_only_to_a_durable_one_and_reads_both_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store.redb");
        let (mut log, found) = Log::open(&store).expect("open");
        assert!(found.is_empty());
        use std::os::unix::fs::PermissionsExt;
        for name in ["store.redb-wal", "store.redb-wal2"] {
            let meta = std::fs::metadata(dir.path().join(name)).expect("metadata");
            assert_eq!((meta.permissions().mode() & 0o777, meta.len()), (0o600, SIZE), "{name}");
        }
        let frames: Vec<Frame> = (1..=6).map(|s| frame(s, 2)).collect();
        for f in &frames[..3] {
            log.append(f).expect("append");
        }
        // A checkpoint of 1..=3 begins; nothing is durable yet but the other file is empty.
        assert!(log.switch(0));
        assert_eq!(log.used(), 0);
        log.append(&frames[3]).expect("append");
        // The next checkpoint begins before the first ended: the first file is not free.
        assert!(!log.switch(0), "the first file holds batches 1-3, not yet durable");
        log.append(&frames[4]).expect("append");
        drop(log);
        let (log, found) = Log::open(&store).expect("reopen");
        assert_eq!(found, frames[..5]);
        drop(log);

        // The first file written again from its start (as after a reopen), with a batch 4
        // that is not the second file's batch 4: which is right cannot be told.
        let (mut log, _) = Log::open(&store).expect("reopen");
        for f in &frames[..3] {
            log.append(f).expect("append");
        }
        let mut other = frames[3].clone();
        other.rev += 100;
        log.append(&other).expect("append");
        drop(log);
        let refused = Log::open(&store).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("different batches numbered 4"), "{refused}");

        // Once replayed, the second file is emptied; new frames start in the first.
        std::fs::write(dir.path().join("store.redb-wal"), vec![0; SIZE as usize]).expect("clear");
        let (mut log, found) = Log::open(&store).expect("reopen");
        assert_eq!(found, frames[3..5]);
        log.replayed().expect("replayed");
        log.append(&frames[5]).expect("append");
        drop(log);
        assert_eq!(Log::open(&store).expect("reopen").1, frames[5..]);
    }
}
