//! The driver interface: strata's libvirt/CRI layer.
//!
//! [`Driver`] is the one interface every workload engine implements — containers today,
//! microVMs and full VMs next — and the only thing the layers above (the CLI, the node agent,
//! the CRI server) call. It speaks in [`CreateRequest`]s, ids and [`WorkloadState`]s; nothing
//! above this crate knows that runc, overlayfs or QMP exist.
//!
//! Drivers persist everything they need on disk, so a driver opened after a restart re-adopts
//! running workloads instead of starting them again (see `ARCHITECTURE.md`, "Survival").

pub mod container;
pub mod microvm;
mod runtimes;
pub mod pod;
pub mod vm;
mod error;
mod parse;
mod registry;
mod workload_log;
mod types;

pub use container::rootfs::is_mountpoint;
pub use container::ContainerDriver;
pub use vm::VmDriver;
pub use microvm::{MicroVmConfig, MicroVmRuntime};
pub use runtimes::{PodRuntimes, VM_HANDLER};
pub use error::Error;
pub use pod::PodRuntime;
pub use parse::{parse_cpus, parse_memory, parse_signal};
pub use types::*;

/// Image operations (pull, import, list, remove, gc), re-exported for the layers above.
pub use strata_image as images;

use std::time::Duration;

/// One engine behind the common lifecycle. Every method takes a workload id (see
/// [`Driver::resolve`] for names) and is safe to call from several processes at once.
pub trait Driver: Send + Sync {
    /// What this driver can do, as data, so callers adapt instead of matching on its name.
    fn capabilities(&self) -> Capabilities;
    /// Prepare a workload (image unpacked, isolation set up, process created but not started).
    /// On error nothing is left behind.
    fn create(&self, req: &CreateRequest) -> Result<String, Error>;
    /// Start a created workload, or start again one that has exited (same id, same state on
    /// disk, output appended to its log).
    fn start(&self, id: &str) -> Result<(), Error>;
    /// Create and start in one step (drivers may do it faster than the two calls).
    fn run(&self, req: &CreateRequest) -> Result<String, Error> {
        let id = self.create(req)?;
        if let Err(e) = self.start(&id) {
            let _ = self.delete(&id, true);
            return Err(e);
        }
        Ok(id)
    }
    /// Ask the workload to stop (its stop signal, ACPI powerdown for VMs), then force it after
    /// `timeout`. Returns how it ended. Stopping a stopped workload is not an error.
    fn stop(&self, id: &str, timeout: Duration) -> Result<ExitStatus, Error>;
    /// Stop the workload (as [`Driver::stop`], also fine when it has already exited) and start
    /// it again.
    fn restart(&self, id: &str, timeout: Duration) -> Result<(), Error> {
        self.stop(id, timeout)?;
        self.start(id)
    }
    /// Send a signal to the workload's main process.
    fn kill(&self, id: &str, signal: i32) -> Result<(), Error>;
    /// Remove a workload and everything it owns. A running one needs `force` (which kills it).
    fn delete(&self, id: &str, force: bool) -> Result<(), Error>;
    fn state(&self, id: &str) -> Result<WorkloadState, Error>;
    fn list(&self) -> Result<Vec<WorkloadState>, Error>;
    /// Map a name, an id, or an unambiguous id prefix to an id.
    fn resolve(&self, name_or_id: &str) -> Result<String, Error>;
    /// Block until the workload exits (or `timeout` passes: `Error::Timeout`).
    fn wait(&self, id: &str, timeout: Option<Duration>) -> Result<ExitStatus, Error>;
    /// Stream the workload's output records to `sink` until it returns false, or (with
    /// `follow`) until the workload exits.
    fn logs(&self, id: &str, opts: &LogOptions, sink: &mut dyn FnMut(&LogRecord) -> bool) -> Result<(), Error>;
    /// Run another process inside the workload.
    fn exec(&self, id: &str, req: &ExecRequest) -> Result<ExecResult, Error>;
    fn stats(&self, id: &str) -> Result<Stats, Error>;
    /// Connect to the workload's stdin/terminal (created with `stdin` or `tty`). Output is read
    /// with [`Driver::logs`] (everything since the start) or [`Driver::attach_session`].
    fn attach(&self, id: &str) -> Result<Box<dyn AttachInput>, Error> {
        Err(Error::Unsupported(format!("attach to {id}")))
    }
    /// Attach to a running workload's main process (`strata attach`): its output from this
    /// moment on, until it exits, and its input when it has any. Output caused by input sent
    /// after this returns is never missed.
    fn attach_session(&self, id: &str) -> Result<Attachment, Error> {
        Err(Error::Unsupported(format!("attach to {id}")))
    }
    /// The processes running in the workload (`top`), by pid.
    fn processes(&self, id: &str) -> Result<Vec<ProcessInfo>, Error> {
        Err(Error::Unsupported(format!("listing the processes of {id}")))
    }
    fn pause(&self, id: &str) -> Result<(), Error> {
        Err(Error::Unsupported(format!("pause of {id}")))
    }
    fn resume(&self, id: &str) -> Result<(), Error> {
        Err(Error::Unsupported(format!("resume of {id}")))
    }
}

/// Default grace period for [`Driver::stop`], as Docker's.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The argument that makes the `strata` binary run as a container supervisor.
pub use strata_oci::shim::SHIM_ARG;

/// The argument that makes the `strata` binary run as a pod sandbox's supervisor.
pub use strata_oci::infra::POD_ARG;

/// Run as a pod sandbox's supervisor (the binary's hidden `__pod` mode: host ports, the pod's
/// PID namespace init). Never returns.
pub fn run_pod_supervisor(config: &std::path::Path) -> ! {
    strata_oci::infra::main(config)
}

/// Run as a container supervisor (the binary's hidden `__shim` mode). Never returns.
pub fn run_shim(config: &std::path::Path) -> ! {
    strata_oci::shim::main(config)
}
