//! A pod sandbox's own small supervisor (`strata __pod CONFIG`), for what needs a process
//! rather than a pinned namespace: the pod's host ports (bound and proxied to the pod's
//! address, as the container shim does for `-p`) and, when the pod shares one PID namespace,
//! that namespace's init (pid 1, which reaps the orphans of every container in it, as
//! Kubernetes' pause container does). It is nobody's child, so it outlives the agent that
//! started it; its pid and its init's are in its state file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use strata_supervise::ports::{self, PortForward};
use strata_supervise::{daemon, util};

/// The argument that makes the `strata` binary run [`main`].
pub const POD_ARG: &str = "__pod";

/// What the pod supervisor does, written by the driver next to the sandbox's record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodConfig {
    /// Host ports proxied to the pod.
    pub ports: Vec<PortForward>,
    /// Make a PID namespace for the pod, with a child of ours as its init.
    pub pid_namespace: bool,
    /// Where the supervisor records its pid and its init's ([`util::SupervisorState`]).
    pub state_file: PathBuf,
}

/// The pod supervisor. Never returns.
pub fn main(config: &std::path::Path) -> ! {
    daemon::main("strata pod", config, false, run)
}

fn run(config: PodConfig) -> Result<(), String> {
    // Bound before anything else, so a port in use fails the sandbox cleanly.
    let listeners = ports::bind_ports(&config.ports).map_err(|e| e.to_string())?;
    let child = if config.pid_namespace {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID).map_err(|e| format!("new PID namespace: {e}"))?;
        // SAFETY: no thread exists yet in this process (ports are served after the fork).
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                // The ports and the ready pipe are the supervisor's: a copy held here would keep
                // a port bound, and the driver waiting for the end of the ready pipe, forever.
                drop(listeners);
                // SAFETY: closing our copy of a descriptor nothing else in this process uses.
                unsafe { libc::close(util::READY_FD) };
                pid1()
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => Some(child.as_raw()),
            Err(e) => return Err(format!("fork: {e}")),
        }
    } else {
        None
    };
    util::write_supervisor_state(&config.state_file, Some(child.unwrap_or(std::process::id() as i32)));
    ports::serve_ports(listeners);
    daemon::ready(child.unwrap_or(std::process::id() as i32));
    match child {
        // The namespace ends with its init; so does this supervisor.
        Some(pid) => loop {
            match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
                Err(nix::errno::Errno::EINTR) => {}
                _ => return Ok(()),
            }
        },
        None => loop {
            std::thread::park();
        },
    }
}

/// The init of the pod's PID namespace: reap whatever is orphaned to it, forever (as pid 1,
/// it gets no signal it has no handler for, so only SIGKILL from outside ends it).
fn pid1() -> ! {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    // Blocked, so that a SIGCHLD between two waits stays pending instead of being lost.
    let _ = set.thread_block();
    loop {
        loop {
            match nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = set.wait();
    }
}
