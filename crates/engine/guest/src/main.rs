//! `strata-guest`: PID 1 of a VM-isolated pod's microVM (see the crate documentation).

fn main() {
    std::process::exit(strata_guest::agent::main());
}
