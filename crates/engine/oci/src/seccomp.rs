//! The default seccomp profile for unprivileged containers.
//!
//! Docker's profile is an allow-list of ~350 system calls; strata's is the inverse: every
//! call is allowed except the ones Docker documents as blocked by default (kernel modules,
//! kexec, reboot, clock setting, keyrings, BPF, perf, mount and namespace manipulation,
//! handle-based opens, NUMA policy, ...) and io_uring (which Docker 25+ and containerd also
//! refuse), which fail with `EPERM`. Most of these already
//! need a capability the container does not have; the filter is a second wall in case a
//! kernel bug lets one through. The choice of a deny-list keeps new, harmless system calls
//! (which an allow-list must be updated for) working; see ARCHITECTURE.md, "Security".
//!
//! Namespaces need more than a name: creating a user namespace needs no capability at all,
//! and inside one a process holds every capability over the namespaces it creates with it
//! (network namespaces bring netfilter and other kernel code within reach). As in Docker's
//! profile, `clone` is refused with `EPERM` when its flags ask for any new namespace (an
//! argument filter: one masked compare per namespace flag, since a deny-list needs "any of
//! these bits set", which one masked compare cannot say), and `clone3`, whose flags sit in
//! memory a filter cannot read, is answered `ENOSYS` so that libc falls back to `clone`.
//! `unshare` and `setns` are refused outright. Privileged containers run without the profile.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator,
    LinuxSyscall, LinuxSyscallBuilder,
};

/// The `clone` flags that create a namespace (Docker's mask 0x7E020000: `CLONE_NEWNS`,
/// `CLONE_NEWCGROUP`, `CLONE_NEWUTS`, `CLONE_NEWIPC`, `CLONE_NEWUSER`, `CLONE_NEWPID`,
/// `CLONE_NEWNET`); `clone` with any of them fails with `EPERM`.
pub const NAMESPACE_CLONE_FLAGS: &[i32] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
];

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
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
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
    "stime",
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

/// The profile: allow by default, `EPERM` for [`BLOCKED_SYSCALLS`] and for `clone` with any of
/// [`NAMESPACE_CLONE_FLAGS`], `ENOSYS` for `clone3`.
pub fn default_profile() -> Result<LinuxSeccomp, oci_spec::OciSpecError> {
    let mut syscalls: Vec<LinuxSyscall> = vec![LinuxSyscallBuilder::default()
        .names(BLOCKED_SYSCALLS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(libc::EPERM as u32)
        .build()?];
    // Rules of one action are ORed, the conditions inside one rule ANDed: one rule per flag
    // says "clone with this bit set". The flags are argument 0 on every x86 ABI.
    for flag in NAMESPACE_CLONE_FLAGS {
        let bit = *flag as u32 as u64;
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(libc::EPERM as u32)
                .args(vec![LinuxSeccompArgBuilder::default()
                    .index(0usize)
                    .value(bit)
                    .value_two(bit)
                    .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                    .build()?])
                .build()?,
        );
    }
    syscalls.push(
        LinuxSyscallBuilder::default()
            .names(vec!["clone3".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::ENOSYS as u32)
            .build()?,
    );
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32])
        .syscalls(syscalls)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_is_filtered_by_namespace_flag_and_clone3_is_enosys() {
        let json = serde_json::to_value(default_profile().expect("profile")).expect("json");
        let rules = json["syscalls"].as_array().expect("rules");
        let clone_bits: u64 = rules
            .iter()
            .filter(|r| r["names"] == serde_json::json!(["clone"]))
            .map(|r| {
                assert_eq!(r["action"], "SCMP_ACT_ERRNO");
                assert_eq!(r["errnoRet"], libc::EPERM);
                let arg = &r["args"][0];
                assert_eq!(arg["index"], 0);
                assert_eq!(arg["op"], "SCMP_CMP_MASKED_EQ");
                assert_eq!(arg["value"], arg["valueTwo"], "bit set under its own mask");
                arg["value"].as_u64().expect("value")
            })
            .fold(0, |acc, bit| {
                assert_eq!(bit.count_ones(), 1);
                acc | bit
            });
        assert_eq!(clone_bits, 0x7E02_0000, "Docker's namespace mask");
        let clone3 = rules.iter().find(|r| r["names"] == serde_json::json!(["clone3"])).expect("clone3 rule");
        assert_eq!(clone3["errnoRet"], libc::ENOSYS);
        let blocked = &rules[0]["names"];
        // io_uring: as Docker 25+ and containerd, refused (a large share of recent kernel
        // privilege escalations went through it); stime: i386 clock setting.
        for name in ["unshare", "setns", "io_uring_setup", "io_uring_enter", "io_uring_register", "stime"] {
            assert!(blocked.as_array().expect("names").iter().any(|n| n == name), "{name}");
        }
    }
}
