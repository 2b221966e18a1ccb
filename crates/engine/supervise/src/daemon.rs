//! The supervisor's side of [`spawn_supervisor`](crate::util::spawn_supervisor): become a
//! daemon, read the JSON config, run, and report failure on the ready pipe.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::util::READY_FD;

/// The entry of a supervisor process (`strata MODE CONFIG`). Never returns.
///
/// Forks (the first process exits, so the supervisor is nobody's child and outlives its
/// starter), `setsid`s, optionally becomes a child subreaper (so orphans of the workload are
/// reaped by it), reads `config_path` as JSON and calls `run`. `run` reports readiness itself
/// (`ok CHILD SUPERVISOR` on [`READY_FD`]); an `Err` from it, or from any step before it, is
/// reported with [`fail`]. `name` prefixes the supervisor's diagnostics.
pub fn main<C: DeserializeOwned>(name: &str, config_path: &Path, subreaper: bool, run: impl FnOnce(C) -> Result<(), String>) -> ! {
    // SAFETY: fcntl on a descriptor number we own by convention; failure is harmless.
    unsafe { libc::fcntl(READY_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: fork before any thread exists in this process.
    match unsafe { nix::unistd::fork() } {
        // SAFETY: _exit in the parent of a fork is always sound.
        Ok(nix::unistd::ForkResult::Parent { .. }) => unsafe { libc::_exit(0) },
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(e) => fail(name, &format!("fork: {e}")),
    }
    let _ = nix::unistd::setsid();
    if subreaper {
        // SAFETY: plain prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let config: C = match std::fs::read(config_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => fail(name, &format!("reading {}: {e}", config_path.display())),
    };
    match run(config) {
        Ok(()) => std::process::exit(0),
        Err(msg) => fail(name, &msg),
    }
}

/// Report an error on the ready pipe (if still open: after readiness this only logs) and exit 1.
pub fn fail(name: &str, msg: &str) -> ! {
    crate::note!("{name}: {msg}");
    // SAFETY: READY_FD is ours; if it was already closed this write just fails.
    let mut ready = unsafe { File::from_raw_fd(READY_FD) };
    let _ = writeln!(ready, "error {}", msg.replace('\n', " "));
    std::process::exit(1)
}

/// Report readiness: `ok CHILD SUPERVISOR` on [`READY_FD`], which is then closed so the
/// waiting [`spawn_supervisor`](crate::util::spawn_supervisor) returns.
pub fn ready(child_pid: i32) {
    // SAFETY: READY_FD is ours; dropping the File closes it.
    let mut ready = unsafe { File::from_raw_fd(READY_FD) };
    let _ = writeln!(ready, "ok {child_pid} {}", std::process::id());
}
