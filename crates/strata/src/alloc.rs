//! The process's allocator: mimalloc for the control plane and the command line (`strata server`,
//! `scheduler`, `controllers`, `agent`, ...), glibc's malloc for the supervisors — one small
//! process per container, pod or VM (`__shim`, `__pod`, `__vmlog`), where mimalloc's own pages
//! and metadata cost more than its speed gives (docs/benchmarks.md, session 12: the supervisors'
//! PSS 0.58-0.63 MiB per pod with mimalloc against 0.32-0.36 with glibc; the API server 15-20 %
//! less CPU per pod with mimalloc).
//!
//! The choice is made once, at the process's first allocation, from its command line read with
//! plain system calls into a stack buffer (nothing allocated), and holds for the life of the
//! process, so a block is always freed by the allocator that gave it out; a forked child
//! inherits the choice with the memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};

use mimalloc::MiMalloc;

const UNDECIDED: u8 = 0;
const GLIBC: u8 = 1;
const MIMALLOC: u8 = 2;

static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// The `#[global_allocator]` of the strata binary.
pub struct Allocator;

/// Called on every allocation and free: one relaxed load, inlined (an out-of-line call here was
/// 1.8 % of the API server's samples in the Deployment row).
#[inline(always)]
fn choice() -> u8 {
    match CHOICE.load(Ordering::Relaxed) {
        UNDECIDED => decide(),
        decided => decided,
    }
}

/// The first allocation's choice, kept for the life of the process.
#[cold]
#[inline(never)]
fn decide() -> u8 {
    let decided = if supervisor(&cmdline(&mut [0; 4096])) { GLIBC } else { MIMALLOC };
    match CHOICE.compare_exchange(UNDECIDED, decided, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => decided,
        Err(earlier) => earlier,
    }
}

/// The start of `/proc/self/cmdline` (NUL-separated arguments), read into `buf`; empty if it
/// cannot be read.
fn cmdline(buf: &mut [u8]) -> &[u8] {
    // SAFETY: open(2) of a NUL-terminated constant path; the descriptor is closed below.
    let fd = unsafe { libc::open(c"/proc/self/cmdline".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return &[];
    }
    let mut len = 0;
    while len < buf.len() {
        // SAFETY: read(2) into the unused tail of `buf`, whose length bounds the count.
        let n = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        if n <= 0 {
            break;
        }
        len += n as usize;
    }
    // SAFETY: closes the descriptor opened above, once.
    unsafe { libc::close(fd) };
    &buf[..len]
}

/// Is this command line (`/proc/self/cmdline`) one of a supervisor's?
fn supervisor(cmdline: &[u8]) -> bool {
    let Some(first) = cmdline.split(|b| *b == 0).nth(1) else { return false };
    [strata_driver::SHIM_ARG, strata_driver::POD_ARG, strata_driver::vm::SUPERVISOR_ARG].iter().any(|arg| arg.as_bytes() == first)
}

// SAFETY: every call goes to the allocator chosen for the process, which is fixed at the first
// call, so each block is reallocated and freed by the allocator that returned it; both uphold
// GlobalAlloc's contract themselves.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { if choice() == GLIBC { System.alloc(layout) } else { MiMalloc.alloc(layout) } }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { if choice() == GLIBC { System.alloc_zeroed(layout) } else { MiMalloc.alloc_zeroed(layout) } }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from the same allocator (the choice never changes).
        unsafe { if choice() == GLIBC { System.dealloc(ptr, layout) } else { MiMalloc.dealloc(ptr, layout) } }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from the same allocator (the choice never changes).
        unsafe { if choice() == GLIBC { System.realloc(ptr, layout, new_size) } else { MiMalloc.realloc(ptr, layout, new_size) } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervisors_are_told_by_their_first_argument() {
        assert!(supervisor(b"/usr/bin/strata\0__shim\0/run/strata/c/config.json\0"));
        assert!(supervisor(b"strata\0__pod\0cfg\0"));
        assert!(supervisor(b"strata\0__vmlog\0cfg\0"));
        assert!(!supervisor(b"strata\0server\0--data-dir\0__shim\0"), "only the first argument counts");
        assert!(!supervisor(b"strata\0__shimmy\0"));
        assert!(!supervisor(b"strata\0"));
        assert!(!supervisor(b""));
    }

    #[test]
    fn this_process_reads_its_own_command_line() {
        let mut buf = [0; 4096];
        let line = cmdline(&mut buf);
        let argv0 = std::env::args_os().next().expect("argv0");
        assert!(line.starts_with(argv0.as_encoded_bytes()), "{:?}", String::from_utf8_lossy(line));
        assert!(!supervisor(line));
        assert_eq!(choice(), MIMALLOC, "the test binary is no supervisor");
    }
}
