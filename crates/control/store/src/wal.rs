//! The embedded store's write-ahead log: what makes a batch durable before its B-tree commit.
//!
//! etcd makes a write durable by appending it to its WAL and syncing that, and commits its
//! B-tree (bbolt) only every 100 ms; the embedded store does the same with redb (see
//! [`crate::embedded`]). A sync of a few appended pages costs much less than a B-tree commit
//! (its pages, its allocator state, its header), which small batches paid once each.
//!
//! The file (`<store file>-wal`, 0600) is preallocated ([`SIZE`], written with zeros once, so a
//! sync of an append never has to commit a new size or newly allocated blocks) and written
//! from its start again after every checkpoint. Each frame is `payload length (u32) |
//! CRC-32 of the payload (u32) | payload`, the payload `seq | rev | compacted (u64 each) |
//! puts (u32) | removes (u32) | each put: location (u128) | record length (u32) | record |
//! each remove: location (u128)`, all little-endian. Frames carry consecutive sequence
//! numbers; the checkpoint that makes frames up to `seq` part of the B-tree records `seq` in
//! the same commit. Reading stops at the first frame that is torn (bad length or CRC) or out of
//! sequence: bytes after it are left from an earlier round or from a write that was never
//! acknowledged.

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
    /// The log of the store file at `store`: opened (created 0600 and preallocated if new),
    /// with the frames it holds in order, from its start up to the first torn or out-of-sequence
    /// one. The next [`Wal::append`] writes at the start.
    pub(crate) fn open(store: &Path) -> Result<(Self, Vec<Frame>)> {
        let mut name = store.as_os_str().to_owned();
        name.push("-wal");
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
    pub(crate) fn append(&mut self, frame: &Frame) -> Result<()> {
        encode(frame, &mut self.buf)?;
        let err = io(&self.path);
        self.file.write_all_at(&self.buf, self.offset).map_err(&err)?;
        self.file.sync_data().map_err(&err)?;
        self.offset += self.buf.len() as u64;
        Ok(())
    }

    /// Every frame so far is in a durable checkpoint: start again from the beginning.
    pub(crate) fn restart(&mut self) {
        self.offset = 0;
    }

    /// Bytes written since the last restart.
    pub(crate) fn used(&self) -> u64 {
        self.offset
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
        let (mut wal, found) = Wal::open(&store).expect("open");
        assert!(found.is_empty());
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&path).expect("metadata");
        assert_eq!((meta.permissions().mode() & 0o777, meta.len()), (0o600, SIZE));
        let first: Vec<Frame> = (1..=5).map(|s| frame(s, s as usize)).collect();
        for f in &first {
            wal.append(f).expect("append");
        }
        drop(wal);
        let (mut wal, found) = Wal::open(&store).expect("reopen");
        assert_eq!(found, first);

        // A new round from the start: two shorter frames over the first round's.
        wal.restart();
        let second = vec![frame(6, 0), frame(7, 1)];
        for f in &second {
            wal.append(f).expect("append");
        }
        let end = wal.used();
        drop(wal);
        assert_eq!(Wal::open(&store).expect("reopen").1, second, "the first round's leftovers are not read");

        // The last frame torn: cut in the middle (within its record), or one byte of it changed.
        let bytes = std::fs::read(&path).expect("read");
        let mut cut = bytes.clone();
        cut[end as usize - 40..].fill(0);
        std::fs::write(&path, &cut).expect("write");
        assert_eq!(Wal::open(&store).expect("reopen").1, second[..1]);
        let mut flipped = bytes;
        flipped[end as usize - 20] ^= 1;
        std::fs::write(&path, &flipped).expect("write");
        assert_eq!(Wal::open(&store).expect("reopen").1, second[..1]);
    }
}
