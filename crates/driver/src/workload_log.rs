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
    let wait_done = |d: Duration| match supervisor {
        Some((p, s)) => util::wait_pid_exit(p, s, Some(d)),
        None => true,
    };
    logs::read(path, &logs::ReadOptions { tail: opts.tail, follow: opts.follow }, &wait_done, &mut |l| {
        sink(&LogRecord {
            time: l.time.clone(),
            stream: stream(l.stream),
            partial: l.partial,
            content: l.content.clone(),
        })
    })
    .map_err(Error::io(format!("reading {what}")))
}

/// The driver interface's name for an engine's output stream.
pub(crate) fn stream(s: logs::Stream) -> LogStream {
    match s {
        logs::Stream::Stdout => LogStream::Stdout,
        logs::Stream::Stderr => LogStream::Stderr,
    }
}
