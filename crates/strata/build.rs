//! Link the `strata` executable as a position-dependent binary: every `strata run` execs it
//! twice (the CLI and the container's supervisor), and a PIE of this size spends ~0.4 ms per
//! exec applying ~32,000 relative relocations (and dirtying the pages they touch). The code is
//! still compiled position-independent, which links fine into a fixed-address executable.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
