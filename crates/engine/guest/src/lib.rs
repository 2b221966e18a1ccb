//! strata's guest agent for VM-isolated pods (the Kata agent idea, much smaller).
//!
//! [`protocol`] is what the host and the guest say to each other: length-prefixed JSON frames
//! over one byte stream (a virtio-serial port in the guest, a unix socket on the host). The
//! host sends [`protocol::HostMessage`]s (a request with an id); the guest answers each with a
//! [`protocol::GuestMessage::Reply`] of the same id and, unasked, sends its containers' output
//! and exits.
//!
//! [`agent`] is the guest side: `strata-guest` runs as PID 1 of the microVM's initramfs, mounts
//! `/proc`, `/sys`, `/dev`, loads the kernel modules the host put in the initramfs, mounts the
//! host's shared directory (virtio-9p) and serves the protocol, running each container in its own
//! mount, PID, UTS and IPC namespaces. It is Linux-only and links no host-side code.

pub mod protocol;

#[cfg(target_os = "linux")]
pub mod agent;
