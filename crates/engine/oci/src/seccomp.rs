//! The default seccomp profile for unprivileged containers.
//!
//! Docker's profile is an allow-list of ~350 system calls; strata's is the inverse: every
//! call is allowed except the ones Docker documents as blocked by default (kernel modules,
//! kexec, reboot, clock setting, keyrings, BPF, perf, mount and namespace manipulation,
//! handle-based opens, NUMA policy, ...), which fail with `EPERM`. Most of these already
//! need a capability the container does not have; the filter is a second wall in case a
//! kernel bug lets one through. The choice of a deny-list keeps new, harmless system calls
//! (which an allow-list must be updated for) working; see ARCHITECTURE.md, "Security".

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder,
};

/// System calls that fail with `EPERM` inside an unprivileged container.
pub const BLOCKED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

/// The profile: allow by default, `EPERM` for [`BLOCKED_SYSCALLS`].
pub fn default_profile() -> Result<LinuxSeccomp, oci_spec::OciSpecError> {
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32])
        .syscalls(vec![LinuxSyscallBuilder::default()
            .names(BLOCKED_SYSCALLS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::EPERM as u32)
            .build()?])
        .build()
}
