//! Reading a workload's log (container output, VM serial console) for [`crate::Driver::logs`]:
//! both drivers keep it in the CRI log format written by a supervisor process, whose exit marks
//! the end of the log.

use std::path::Path;
use std::time::Duration;

use strata_supervise::{logs, util};

use crate::{Error, LogOptions, LogRecord, LogStream};

/// Stream the log at `path` to `sink`. `supervisor` is the writer's (pid, start time); with
/// `follow`, reading ends when it exits. `what` names the log in errors.
pub(crate) fn read(
    path: &Path,
    supervisor: Option<(i32, u64)>,
    opts: &LogOptions,
    what: &str,
    sink: &mut dyn FnMut(&LogRecord) -> bool,
) -> Result<(), Error> {
    let done = |d: Duration| match supervisor {
        Some((p, s)) => util::wait_pid_exit(p, s, Some(d)),
        None => true,
    };
    read_until(path, &done, opts, what, sink)
}

/// [`read`] for a log whose end is not a supervisor's exit: `done(d)` waits up to `d` and says
/// whether the writer has finished.
pub(crate) fn read_until(
    path: &Path,
    done: &dyn Fn(Duration) -> bool,
    opts: &LogOptions,
    what: &str,
    sink: &mut dyn FnMut(&LogRecord) -> bool,
) -> Result<(), Error> {
    let cancelled = || opts.cancel.as_ref().is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed));
    let wait_done = |d: Duration| cancelled() || done(d);
    let since = opts.since.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
    let mut left = opts.limit_bytes;
    // `since` filters before `tail` counts, so the tail is taken from the records it keeps.
    let filtered_tail = opts.tail.filter(|_| since.is_none());
    let mut kept: std::collections::VecDeque<LogRecord> = std::collections::VecDeque::new();
    let mut history_done = since.is_none() || opts.tail.is_none();
    let mut emit = |rec: LogRecord, sink: &mut dyn FnMut(&LogRecord) -> bool| -> bool {
        match left {
            Some(0) => false,
            Some(n) => {
                let size = rec.content.len() as u64 + 1;
                if size > n {
                    let mut cut = rec;
                    cut.content.truncate(n as usize);
                    left = Some(0);
                    sink(&cut);
                    false
                } else {
                    left = Some(n - size);
                    sink(&rec)
                }
            }
            None => sink(&rec),
        }
    };
    let mut written_end: Option<String> = None;
    logs::read(path, &logs::ReadOptions { tail: filtered_tail, follow: opts.follow }, &wait_done, &mut |l| {
        // Timestamps are fixed-width RFC 3339 (nanoseconds, UTC): strings compare as times.
        if since.as_deref().is_some_and(|s| l.time.as_str() < s) {
            return !cancelled();
        }
        let rec = LogRecord { time: l.time.clone(), stream: stream(l.stream), partial: l.partial, content: l.content.clone() };
        if !history_done {
            // `since` with `tail`: hold the newest N of what was already written, then flush
            // them once the first record written after this call started shows up (or at the end).
            let end = written_end.get_or_insert_with(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
            if l.time.as_str() <= end.as_str() {
                kept.push_back(rec);
                if kept.len() > opts.tail.unwrap_or(usize::MAX) {
                    kept.pop_front();
                }
                return !cancelled();
            }
            history_done = true;
            for k in std::mem::take(&mut kept) {
                if !emit(k, sink) {
                    return false;
                }
            }
        }
        emit(rec, sink) && !cancelled()
    })
    .map_err(Error::io(format!("reading {what}")))?;
    for k in kept {
        if !emit(k, sink) {
            break;
        }
    }
    Ok(())
}

/// The driver interface's name for an engine's output stream.
pub(crate) fn stream(s: logs::Stream) -> LogStream {
    match s {
        logs::Stream::Stdout => LogStream::Stdout,
        logs::Stream::Stderr => LogStream::Stderr,
    }
}
