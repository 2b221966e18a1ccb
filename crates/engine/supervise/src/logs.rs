//! Container logs: the CRI log file format, written by the supervisor and read by `logs`.
//!
//! One line per record: `<RFC 3339 nano time> <stdout|stderr> <F|P> <content>`, the format
//! kubelet and CRI runtimes use (`P` marks a partial line split at [`MAX_LINE`] bytes). The
//! file rotates at a size limit, keeping a fixed number of older files (`ctr.log.1`, ...).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Lines longer than this are split into partial records.
pub const MAX_LINE: usize = 16 * 1024;
/// Default size at which a log file is rotated.
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// Default number of rotated files kept besides the current one.
pub const DEFAULT_MAX_FILES: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub time: String,
    pub stream: Stream,
    pub partial: bool,
    pub content: Vec<u8>,
}

impl LogLine {
    /// Parse one line of the file (without its trailing newline).
    pub fn parse(line: &[u8]) -> Option<LogLine> {
        let mut parts = line.splitn(4, |b| *b == b' ');
        let time = std::str::from_utf8(parts.next()?).ok()?.to_string();
        let stream = match parts.next()? {
            b"stdout" => Stream::Stdout,
            b"stderr" => Stream::Stderr,
            _ => return None,
        };
        let partial = match parts.next()? {
            b"P" => true,
            b"F" => false,
            _ => return None,
        };
        let content = parts.next().unwrap_or(b"").to_vec();
        Some(LogLine { time, stream, partial, content })
    }
}

/// Appends records to a log file, rotating it at `max_size`.
///
/// A record that cannot be written (a full disk) is counted and dropped, never an error: the
/// supervisor must keep draining the workload's output, or the workload would block on a full
/// pipe. The partial write is cut off again, and once writing works again a marker record
/// says how much was dropped and why.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: usize,
    dropped: Dropped,
}

#[derive(Default)]
struct Dropped {
    records: u64,
    bytes: u64,
    error: String,
}

impl LogWriter {
    pub fn open(path: &Path, max_size: u64, max_files: usize) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self { path: path.to_path_buf(), file, size, max_size, max_files, dropped: Dropped::default() })
    }

    /// Write one record; `content` must not contain a newline. A record that cannot be written
    /// is dropped and counted (see [`LogWriter`]); errors are reserved for a broken caller.
    pub fn write_record(&mut self, stream: Stream, partial: bool, content: &[u8]) -> io::Result<()> {
        if self.dropped.records > 0 {
            let d = &self.dropped;
            let marker = format!(
                "[strata: {} log record(s), {} bytes of output, were dropped: {}]",
                d.records, d.bytes, d.error
            );
            if self.append(stream, false, marker.as_bytes()).is_err() {
                self.drop_record(content.len(), None);
                return Ok(());
            }
            self.dropped = Dropped::default();
        }
        if let Err(e) = self.append(stream, partial, content) {
            self.drop_record(content.len(), Some(e));
        }
        Ok(())
    }

    /// Records dropped since the last one written.
    pub fn dropped(&self) -> u64 {
        self.dropped.records
    }

    fn drop_record(&mut self, bytes: usize, error: Option<io::Error>) {
        if self.dropped.records == 0 {
            if let Some(e) = &error {
                crate::note!("strata: log {}: {e}; dropping output until it can be written", self.path.display());
            }
        }
        self.dropped.records += 1;
        self.dropped.bytes += bytes as u64;
        if let Some(e) = error {
            self.dropped.error = e.to_string();
        }
    }

    /// Append one record, or nothing: a failed write is cut off again so the file never holds a
    /// torn record.
    fn append(&mut self, stream: Stream, partial: bool, content: &[u8]) -> io::Result<()> {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.9fZ");
        let mut rec = Vec::with_capacity(content.len() + 48);
        write!(rec, "{now} {} {} ", stream.as_str(), if partial { 'P' } else { 'F' })?;
        rec.extend_from_slice(content);
        rec.push(b'\n');
        if self.size > 0 && self.size + rec.len() as u64 > self.max_size {
            self.rotate()?;
        }
        if let Err(e) = self.file.write_all(&rec) {
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.size += rec.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.max_files == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for i in (1..self.max_files).rev() {
            let from = rotated(&self.path, i);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, i + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn rotated(path: &Path, i: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

/// Copy a stream (a container's stdout or stderr pipe) into the log until EOF. With
/// `immediate` (a terminal: prompts have no newline) whatever was read is written at once, as
/// partial records, instead of waiting for the end of the line.
pub fn copy_stream(mut reader: impl Read, stream: Stream, writer: Arc<Mutex<LogWriter>>, immediate: bool) -> io::Result<()> {
    let mut buf = vec![0u8; 32 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let flush = |pending: &mut Vec<u8>, partial: bool| -> io::Result<()> {
        let mut w = writer.lock().map_err(|_| io::Error::other("log writer poisoned"))?;
        w.write_record(stream, partial, pending)?;
        pending.clear();
        Ok(())
    };
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                flush(&mut pending, false)?;
            } else {
                pending.push(b);
                if pending.len() >= MAX_LINE {
                    flush(&mut pending, true)?;
                }
            }
        }
        if immediate && !pending.is_empty() {
            flush(&mut pending, true)?;
        }
    }
    if !pending.is_empty() {
        // The stream ended without a newline: keep the text, marked partial as CRI does.
        flush(&mut pending, true)?;
    }
    Ok(())
}

/// What to read.
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    /// Only the last N records (of the whole history, rotated files included).
    pub tail: Option<usize>,
    /// Keep reading as the file grows until `done` says the writer has finished.
    pub follow: bool,
}

/// Read the log at `path` (rotated files first). Each record goes to `sink`; returning `false`
/// stops. With `follow`, keeps reading as the file grows (and rotates) until the writer is done,
/// then drains. `wait_done(d)` blocks for at most `d` and says whether the writer has finished;
/// it should return as soon as it finishes (e.g. by waiting on the writer's pidfd), so that a
/// follower sees the end without a polling delay.
pub fn read(
    path: &Path,
    opts: &ReadOptions,
    wait_done: &dyn Fn(Duration) -> bool,
    sink: &mut dyn FnMut(&LogLine) -> bool,
) -> io::Result<()> {
    let mut rotated_files: Vec<PathBuf> =
        (1..=16).map(|i| rotated(path, i)).filter(|p| p.exists()).collect();
    rotated_files.reverse();

    // History first: everything written so far, filtered by `tail`.
    let mut history: VecDeque<LogLine> = VecDeque::new();
    let mut stopped = false;
    let mut hist = |rec: &LogLine| -> bool {
        match opts.tail {
            Some(n) => {
                if n > 0 {
                    if history.len() == n {
                        history.pop_front();
                    }
                    history.push_back(rec.clone());
                }
                true
            }
            None => {
                stopped = !sink(rec);
                !stopped
            }
        }
    };
    for f in &rotated_files {
        let Ok(mut cursor) = Cursor::open(f) else { continue };
        if !cursor.drain(&mut hist)? {
            return Ok(());
        }
    }
    let mut cursor = match Cursor::open(path) {
        Ok(c) => Some(c),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if let Some(c) = cursor.as_mut() {
        if !c.drain(&mut hist)? {
            return Ok(());
        }
    }
    if stopped {
        return Ok(());
    }
    for rec in &history {
        if !sink(rec) {
            return Ok(());
        }
    }
    if !opts.follow {
        return Ok(());
    }
    let mut finished = wait_done(Duration::ZERO);
    loop {
        match cursor.as_mut() {
            Some(c) => {
                if !c.drain(sink)? {
                    return Ok(());
                }
            }
            None => cursor = Cursor::open(path).ok(),
        }
        if finished {
            return Ok(());
        }
        finished = wait_done(Duration::from_millis(20));
        if let (Some(c), Ok(meta)) = (cursor.as_mut(), std::fs::metadata(path)) {
            if meta.ino() != c.ino {
                // Rotated: finish the old file, then continue with the new one.
                if !c.drain(sink)? {
                    return Ok(());
                }
                cursor = Cursor::open(path).ok();
            }
        }
    }
}

/// A read position in one log file, carrying an incomplete last line between reads.
struct Cursor {
    file: File,
    ino: u64,
    carry: Vec<u8>,
}

impl Cursor {
    fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let ino = file.metadata()?.ino();
        Ok(Self { file, ino, carry: Vec::new() })
    }

    /// Emit every complete record up to the current end of file; `false` if the sink stopped.
    fn drain(&mut self, sink: &mut dyn FnMut(&LogLine) -> bool) -> io::Result<bool> {
        self.file.read_to_end(&mut self.carry)?;
        let mut start = 0;
        while let Some(i) = self.carry[start..].iter().position(|b| *b == b'\n') {
            let line = &self.carry[start..start + i];
            start += i + 1;
            if let Some(rec) = LogLine::parse(line) {
                if !sink(&rec) {
                    return Ok(false);
                }
            }
        }
        self.carry.drain(..start);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(path: &Path, tail: Option<usize>) -> Vec<String> {
        let mut out = Vec::new();
        read(path, &ReadOptions { tail, follow: false }, &|_| true, &mut |l| {
            out.push(String::from_utf8_lossy(&l.content).into_owned());
            true
        })
        .expect("read");
        out
    }

    #[test]
    fn lines_partial_records_and_rotation() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("ctr.log");
        let w = Arc::new(Mutex::new(LogWriter::open(&path, 200, 2).expect("open")));
        let input = b"one\ntwo\nthree-without-newline".to_vec();
        copy_stream(&input[..], Stream::Stdout, w.clone(), false).expect("copy");
        assert_eq!(collect(&path, None), ["one", "two", "three-without-newline"]);
        assert_eq!(collect(&path, Some(1)), ["three-without-newline"]);
        for i in 0..20 {
            w.lock().expect("lock").write_record(Stream::Stderr, false, format!("line {i}").as_bytes()).expect("w");
        }
        assert!(rotated(&path, 1).exists() && rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists(), "only max_files rotated files are kept");
        let all = collect(&path, None);
        assert_eq!(all.last().map(String::as_str), Some("line 19"));
        // Rotation drops the oldest records but never reorders.
        let nums: Vec<usize> = all.iter().filter_map(|l| l.strip_prefix("line ")?.parse().ok()).collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[test]
    fn long_lines_are_split() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("ctr.log");
        let w = Arc::new(Mutex::new(LogWriter::open(&path, DEFAULT_MAX_SIZE, 1).expect("open")));
        let mut input = vec![b'x'; MAX_LINE + 10];
        input.push(b'\n');
        copy_stream(&input[..], Stream::Stdout, w, false).expect("copy");
        let mut recs = Vec::new();
        read(&path, &ReadOptions::default(), &|_| true, &mut |l| {
            recs.push((l.partial, l.content.len()));
            true
        })
        .expect("read");
        assert_eq!(recs, [(true, MAX_LINE), (false, 10)]);
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!(LogLine::parse(b"2026 stdout X hi").is_none());
        assert!(LogLine::parse(b"2026 other F hi").is_none());
        let l = LogLine::parse(b"2026 stderr F a b c").expect("parse");
        assert_eq!((l.stream, l.content.as_slice()), (Stream::Stderr, &b"a b c"[..]));
    }
}
