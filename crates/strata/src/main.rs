//! The `strata` binary: the command line over the driver interface, and (hidden) the
//! per-container supervisor, which is the same executable started as `strata __shim CONFIG`, and
//! the per-VM supervisor (`strata __vmlog CONFIG`).

mod cli;

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc, whose arenas and chunk consolidation were a fifth of the
/// API server's CPU while it stored and watched pods at load; with it the 10,000-pod Deployment
/// row took 7.4-9.3 s against 9.1-10.2 (docs/benchmarks.md, session 12).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
