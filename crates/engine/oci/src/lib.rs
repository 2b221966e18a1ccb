//! strata's OCI container engine: everything between an unpacked image and a running
//! container, on one host. Builds runtime specs, drives an OCI runtime binary, supervises each
//! container with a small shim process that owns its stdio and exit status (on the shared
//! supervisor plumbing of `strata-supervise`), reads cgroups, and wires up networking.
//!
//! This crate knows nothing about images (the `strata-image` crate) or about the driver
//! interface above it (`strata-driver`); it takes paths and plain values.

pub mod attach;
pub mod cgroups;
pub mod infra;
pub mod network;
pub mod ns;
pub mod procs;
pub mod runtime;
pub mod seccomp;
pub mod shim;
pub mod spec;

pub use runtime::{OciRuntime, RuntimeError};
