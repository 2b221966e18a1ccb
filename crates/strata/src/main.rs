//! The `strata` binary: the command line over the driver interface, and (hidden) the
//! per-container supervisor, which is the same executable started as `strata __shim CONFIG`, and
//! the per-VM supervisor (`strata __vmlog CONFIG`).

use std::process::ExitCode;

mod alloc;
mod cli;

/// mimalloc for the control plane, glibc's malloc for the supervisors ([`alloc`]).
#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;

fn main() -> ExitCode {
    // The supervisor must fork before any thread exists, so it is dispatched before anything
    // else (argument parsing included) runs.
    let mut args = std::env::args_os();
    let mode = args.nth(1);
    if mode.as_deref() == Some(std::ffi::OsStr::new(strata_driver::vm::SUPERVISOR_ARG)) {
        match args.next() {
            Some(config) => strata_driver::vm::run_supervisor(std::path::Path::new(&config)),
            None => {
                eprintln!("strata: {} needs a config path", strata_driver::vm::SUPERVISOR_ARG);
                return ExitCode::from(2);
            }
        }
    }
    if mode.as_deref() == Some(std::ffi::OsStr::new(strata_driver::POD_ARG)) {
        match args.next() {
            Some(config) => strata_driver::run_pod_supervisor(std::path::Path::new(&config)),
            None => {
                eprintln!("strata: {} needs a config path", strata_driver::POD_ARG);
                return ExitCode::from(2);
            }
        }
    }
    if mode.as_deref() == Some(std::ffi::OsStr::new(strata_driver::SHIM_ARG)) {
        match args.next() {
            Some(config) => strata_driver::run_shim(std::path::Path::new(&config)),
            None => {
                eprintln!("strata: {} needs a config path", strata_driver::SHIM_ARG);
                return ExitCode::from(2);
            }
        }
    }
    cli::main()
}
