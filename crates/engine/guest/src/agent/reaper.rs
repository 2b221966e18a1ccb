//! One `waitpid(-1)` loop for the whole agent. As PID 1 the agent inherits every orphan of the
//! VM, so it must reap all children; one reaper (and no other `wait` anywhere) means no two
//! waiters race for the same child. Statuses wait in a table for whoever asks for that pid;
//! those nobody asks for (orphans) are dropped after a minute.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell's convention: the code, or 128 + the signal.
    pub fn as_code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

pub struct Reaper {
    exits: Mutex<HashMap<i32, (Exit, Instant)>>,
    cond: Condvar,
}

static REAPER: OnceLock<Arc<Reaper>> = OnceLock::new();

impl Reaper {
    /// The process's reaper, started on first use.
    pub fn start() -> std::io::Result<Arc<Reaper>> {
        if let Some(r) = REAPER.get() {
            return Ok(r.clone());
        }
        let reaper = Arc::new(Reaper { exits: Mutex::new(HashMap::new()), cond: Condvar::new() });
        if REAPER.set(reaper.clone()).is_err() {
            // Another thread won the race; use its reaper.
            return Ok(REAPER.get().cloned().unwrap_or(reaper));
        }
        let r = reaper.clone();
        std::thread::Builder::new().name("reaper".into()).spawn(move || r.run())?;
        Ok(reaper)
    }

    fn run(&self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid pointer to a local int.
            let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
            if pid < 0 {
                // ECHILD: no children now; EINTR: try again.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let exit = if libc::WIFSIGNALED(status) { Exit::Signal(libc::WTERMSIG(status)) } else { Exit::Code(libc::WEXITSTATUS(status)) };
            let mut exits = self.exits.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            exits.retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(60));
            exits.insert(pid, (exit, now));
            self.cond.notify_all();
        }
    }

    /// Wait for `pid` (a child of this process) to end; `None` when `timeout` runs out first.
    pub fn wait(&self, pid: i32, timeout: Option<Duration>) -> Option<Exit> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut exits = self.exits.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some((exit, _)) = exits.remove(&pid) {
                return Some(exit);
            }
            let wait = match deadline {
                Some(d) => d.checked_duration_since(Instant::now())?,
                None => Duration::from_secs(3600),
            };
            exits = self.cond.wait_timeout(exits, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}
