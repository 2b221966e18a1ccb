//! What every strata workload supervisor shares.
//!
//! A supervisor is the small daemon that parents one workload — the container shim
//! (`strata-oci`) or the VM supervisor (`strata-vm`) — so the workload outlives the CLI or agent
//! that started it. Both speak the same protocol and keep the same records, defined once here:
//!
//! - [`util`]: [`spawn_supervisor`](util::spawn_supervisor) and the ready pipe ([`util::READY_FD`],
//!   `ok CHILD SUPERVISOR` / `error MESSAGE`), the state file ([`util::SupervisorState`]),
//!   process identity across pid reuse, atomic file replacement, [`note!`].
//! - [`daemon`]: the supervisor's entry (fork, `setsid`, read its JSON config) and how it fails.
//! - [`exit`]: the exit record, written into space reserved while the disk had room.
//! - [`logs`]: the CRI-format log writer (rotation, partial lines, full disk) and reader.
//! - [`ports`]: published TCP ports as a userspace proxy (as Docker's `docker-proxy`).
//!
//! **Invariant:** nothing here knows containers, QEMU, ids or names: paths and plain values.

pub mod daemon;
pub mod exit;
pub mod logs;
pub mod ports;
pub mod util;
