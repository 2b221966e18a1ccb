//! The guest's network: the pod's address on its NIC, a default route, the hostname. Plain
//! ioctls on an `AF_INET` socket (as busybox `ifconfig`/`route`), so the agent needs no
//! netlink library; IPv4 only for now.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::protocol::NetworkConfig;

pub fn configure(cfg: &NetworkConfig) -> Result<(), String> {
    let (addr, prefix) = cfg.address.split_once('/').ok_or_else(|| format!("address {:?} needs a /prefix", cfg.address))?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| format!("address {addr:?} is not an IPv4 address"))?;
    let prefix: u32 = prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("bad prefix length in {:?}", cfg.address))?;
    let gateway: Option<Ipv4Addr> = cfg.gateway.as_deref().map(|g| g.parse().map_err(|_| format!("gateway {g:?} is not an IPv4 address"))).transpose()?;
    let iface = match &cfg.interface {
        Some(i) => i.clone(),
        None => first_interface()?,
    };
    // SAFETY: socket(2); owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    set_up(&sock, "lo")?;
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    set_addr(&sock, &iface, libc::SIOCSIFADDR, addr)?;
    set_addr(&sock, &iface, libc::SIOCSIFNETMASK, Ipv4Addr::from(mask))?;
    set_up(&sock, &iface)?;
    if let Some(gw) = gateway {
        // SAFETY: an all-zero rtentry is valid; the fields are filled below.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr(gw);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        // SAFETY: SIOCADDRT with a valid rtentry.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT, &rt) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(format!("default route via {gw}: {e}"));
            }
        }
    }
    if let Some(h) = &cfg.hostname {
        nix::unistd::sethostname(h).map_err(|e| format!("hostname {h:?}: {e}"))?;
    }
    Ok(())
}

fn first_interface() -> Result<String, String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map_err(|e| format!("/sys/class/net: {e}"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names.into_iter().next().ok_or_else(|| "the guest has no network interface".to_string())
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in { sin_family: libc::AF_INET as libc::sa_family_t, sin_port: 0, sin_addr: libc::in_addr { s_addr: u32::from(a).to_be() }, sin_zero: [0; 8] };
    // SAFETY: sockaddr_in and sockaddr have the same size; this is how the ioctls take it.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ifreq(name: &str) -> Result<libc::ifreq, String> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(format!("bad interface name {name:?}"));
    }
    // SAFETY: an all-zero ifreq is valid.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(r)
}

fn set_addr(sock: &OwnedFd, name: &str, req: libc::c_ulong, a: Ipv4Addr) -> Result<(), String> {
    let mut r = ifreq(name)?;
    r.ifr_ifru.ifru_addr = sockaddr(a);
    // SAFETY: the ioctl reads a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), req, &r) } != 0 {
        return Err(format!("{name}: setting {a}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn set_up(sock: &OwnedFd, name: &str) -> Result<(), String> {
    let mut r = ifreq(name)?;
    // SAFETY: SIOCGIFFLAGS fills the flags of a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut r) } != 0 {
        return Err(format!("{name}: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the flags member was just filled.
    unsafe { r.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: the ioctl reads a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &r) } != 0 {
        return Err(format!("{name}: up: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}
