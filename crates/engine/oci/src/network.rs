//! Container networking on the host: network namespaces, the CNI bridge, published ports.
//!
//! A container on the default `bridge` network gets its own network namespace (bind-mounted
//! under [`NETNS_DIR`] so it outlives any process), configured by the CNI reference plugins
//! from Debian's `containernetworking-plugins`: `loopback`, and `bridge` with `host-local`
//! IPAM on the `strata0` bridge. Published ports (`-p 8080:80`) are served by the container's
//! supervisor (`strata_supervise::ports`).

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// Where network namespaces are bind-mounted.
pub const NETNS_DIR: &str = "/run/strata/netns";
/// Where supervisors put their unix sockets (console, attach).
pub const SOCKET_DIR: &str = "/run/strata/sock";
/// Where host-local IPAM keeps its leases (shared by every strata root on the host).
pub const IPAM_DIR: &str = "/run/strata/ipam";
/// Where the CNI plugins are looked for, first to last.
pub const CNI_PLUGIN_DIRS: &[&str] = &["/usr/lib/cni", "/opt/cni/bin", "/usr/libexec/cni"];
/// Name of the host bridge.
pub const BRIDGE: &str = "strata0";
/// Subnet of the default bridge network.
pub const SUBNET: &str = "10.89.0.0/16";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network namespace {path}: {source}")]
    Netns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("CNI plugin '{0}' not found (install containernetworking-plugins)")]
    PluginNotFound(String),
    #[error("CNI plugin {plugin} {command}: {message}")]
    Plugin { plugin: String, command: &'static str, message: String },
}

/// Create a network namespace bind-mounted at `path`.
pub fn create_netns(path: &Path) -> Result<(), NetworkError> {
    let err = |source| NetworkError::Netns { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::File::create(path).map_err(err)?;
    let target = path.to_path_buf();
    // unshare(CLONE_NEWNET) affects only the calling thread: do it on a throwaway thread and
    // pin the namespace with a bind mount before the thread exits.
    let result = std::thread::spawn(move || -> Result<(), nix::Error> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
    })
    .join()
    .unwrap_or(Err(nix::Error::EIO));
    if let Err(e) = result {
        let _ = std::fs::remove_file(path);
        return Err(err(e.into()));
    }
    Ok(())
}

/// Is `path` a network namespace (an nsfs bind mount), not just the file it is mounted on?
pub fn is_netns(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 as i64 == NSFS_MAGIC)
}

/// Unmount and remove a network namespace; absent is fine.
pub fn remove_netns(path: &Path) -> Result<(), NetworkError> {
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetworkError::Netns { path: path.to_path_buf(), source }),
    }
}

/// The default bridge network, configured through CNI plugins.
#[derive(Clone, Debug)]
pub struct BridgeNetwork {
    plugin_dir: PathBuf,
}

impl BridgeNetwork {
    /// Find the CNI plugins; fails with a clear error if they are not installed.
    pub fn discover() -> Result<Self, NetworkError> {
        CNI_PLUGIN_DIRS
            .iter()
            .map(PathBuf::from)
            .find(|d| d.join("bridge").exists() && d.join("loopback").exists() && d.join("host-local").exists())
            .map(|plugin_dir| Self { plugin_dir })
            .ok_or_else(|| NetworkError::PluginNotFound("bridge".into()))
    }

    fn bridge_conf() -> serde_json::Value {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "strata",
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": SUBNET }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": IPAM_DIR,
            }
        })
    }

    fn loopback_conf() -> serde_json::Value {
        serde_json::json!({ "cniVersion": "1.0.0", "name": "lo", "type": "loopback" })
    }

    /// Attach the namespace: loopback up, `eth0` on the bridge. Returns the container's IPv4.
    pub fn add(&self, id: &str, netns: &Path) -> Result<IpAddr, NetworkError> {
        self.exec("loopback", "ADD", id, netns, "lo", &Self::loopback_conf())?;
        let result = self.exec("bridge", "ADD", id, netns, "eth0", &Self::bridge_conf())?;
        let ip = result["ips"]
            .as_array()
            .and_then(|ips| ips.iter().find_map(|ip| ip["address"].as_str()))
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse::<IpAddr>().ok())
            .ok_or_else(|| NetworkError::Plugin {
                plugin: "bridge".into(),
                command: "ADD",
                message: format!("result has no IP address: {result}"),
            })?;
        Ok(ip)
    }

    /// Detach and release the address. Safe to call twice or after a failed add, and when the
    /// namespace is gone or was never mounted (a create killed half-way): the plugins are then
    /// given no namespace, as CNI specifies, and only release the address.
    pub fn del(&self, id: &str, netns: &Path) -> Result<(), NetworkError> {
        let netns_arg = if is_netns(netns) { netns.to_path_buf() } else { PathBuf::new() };
        self.exec("bridge", "DEL", id, &netns_arg, "eth0", &Self::bridge_conf()).map(|_| ())
    }

    fn exec(
        &self,
        plugin: &str,
        command: &'static str,
        id: &str,
        netns: &Path,
        ifname: &str,
        conf: &serde_json::Value,
    ) -> Result<serde_json::Value, NetworkError> {
        let bin = self.plugin_dir.join(plugin);
        if !bin.exists() {
            return Err(NetworkError::PluginNotFound(plugin.to_string()));
        }
        let fail = |message: String| NetworkError::Plugin { plugin: plugin.to_string(), command, message };
        let mut child = Command::new(&bin)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", &self.plugin_dir)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(conf.to_string().as_bytes()).map_err(|e| fail(e.to_string()))?;
        }
        let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
        let value: serde_json::Value = if out.stdout.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
        };
        if !out.status.success() {
            let msg = value["msg"].as_str().map(str::to_string).unwrap_or_else(|| {
                let s = String::from_utf8_lossy(&out.stderr).trim().to_string();
                if s.is_empty() {
                    format!("exited with {}", out.status)
                } else {
                    s
                }
            });
            let details = value["details"].as_str().map(|d| format!(": {d}")).unwrap_or_default();
            return Err(fail(format!("{msg}{details}")));
        }
        Ok(value)
    }
}

/// The address used for a published port when none is given.
pub const ANY_V4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// An IPv4 address leased on the bridge network without a network namespace (for VMs, whose
/// guest configures the address itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// The placeholder namespace named to IPAM-only plugin calls (VMs have no namespace).
const NO_NETNS: &str = "/proc/self/ns/net";

impl BridgeNetwork {
    /// The bridge network's `host-local` IPAM configuration on its own: the same leases as
    /// containers use, so VMs and containers never collide.
    fn ipam_conf() -> serde_json::Value {
        let bridge = Self::bridge_conf();
        serde_json::json!({ "cniVersion": "1.0.0", "name": bridge["name"], "ipam": bridge["ipam"] })
    }

    /// Lease an address for `id` from the bridge network's IPAM.
    pub fn lease(&self, id: &str) -> Result<Lease, NetworkError> {
        // host-local never enters the namespace, but CNI's ADD requires one to be named.
        let result = self.exec("host-local", "ADD", id, Path::new(NO_NETNS), "eth0", &Self::ipam_conf())?;
        let bad = || NetworkError::Plugin {
            plugin: "host-local".into(),
            command: "ADD",
            message: format!("unexpected result: {result}"),
        };
        let ip = result["ips"].as_array().and_then(|ips| ips.first()).ok_or_else(bad)?;
        let (addr, prefix) = ip["address"].as_str().and_then(|a| a.split_once('/')).ok_or_else(bad)?;
        Ok(Lease {
            address: addr.parse().map_err(|_| bad())?,
            prefix: prefix.parse().map_err(|_| bad())?,
            gateway: ip["gateway"].as_str().and_then(|g| g.parse().ok()).ok_or_else(bad)?,
        })
    }

    /// Give `id`'s lease back. Safe to call twice.
    pub fn release(&self, id: &str) -> Result<(), NetworkError> {
        self.exec("host-local", "DEL", id, Path::new(NO_NETNS), "eth0", &Self::ipam_conf()).map(drop)
    }
}

/// Tap devices on the node bridge, for VMs: created persistent by strata (so QEMU needs no
/// privilege to create interfaces, only to open this one by name) and removed with the VM.
pub mod tap {
    use std::ffi::CString;
    use std::io;
    use std::net::Ipv4Addr;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::path::Path;

    // From <linux/sockios.h>; the libc crate does not export the bridge ioctls for Linux.
    const SIOCBRADDBR: libc::c_ulong = 0x89a0;
    const SIOCBRADDIF: libc::c_ulong = 0x89a2;

    /// Does a network interface of this name exist?
    pub fn exists(name: &str) -> bool {
        Path::new("/sys/class/net").join(name).exists()
    }

    fn ifreq(name: &str) -> io::Result<libc::ifreq> {
        let c = CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        let bytes = c.as_bytes_with_nul();
        if bytes.len() > libc::IFNAMSIZ {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("interface name {name:?} is too long")));
        }
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        Ok(req)
    }

    fn socket() -> io::Result<OwnedFd> {
        // SAFETY: plain socket(2); the result is checked and owned.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn ioctl(fd: &OwnedFd, request: libc::c_ulong, req: &mut libc::ifreq, what: &str) -> io::Result<()> {
        // SAFETY: every request used here takes a struct ifreq, which `req` is.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, req as *mut libc::ifreq) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
        }
        Ok(())
    }

    fn set_up(sock: &OwnedFd, name: &str) -> io::Result<()> {
        let mut req = ifreq(name)?;
        ioctl(sock, libc::SIOCGIFFLAGS, &mut req, &format!("reading the flags of {name}"))?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        ioctl(sock, libc::SIOCSIFFLAGS, &mut req, &format!("bringing {name} up"))
    }

    fn sockaddr_in(ip: Ipv4Addr) -> libc::sockaddr {
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in and sockaddr have the same size on Linux; this is how the ioctl
        // API passes IPv4 addresses.
        unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
    }

    /// Make sure `bridge` exists and is up, with `gateway/prefix` as its address when this
    /// creates it (the CNI bridge plugin creates the same bridge the same way for containers).
    pub fn ensure_bridge(bridge: &str, gateway: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let sock = socket()?;
        if !exists(bridge) {
            let c =
                CString::new(bridge).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in bridge name"))?;
            // SAFETY: SIOCBRADDBR takes the bridge name as a C string.
            let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCBRADDBR as _, c.as_ptr()) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(io::Error::new(e.kind(), format!("creating bridge {bridge}: {e}")));
                }
            }
            let mut req = ifreq(bridge)?;
            req.ifr_ifru.ifru_addr = sockaddr_in(gateway);
            ioctl(&sock, libc::SIOCSIFADDR, &mut req, &format!("setting the address of {bridge}"))?;
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            let mut req = ifreq(bridge)?;
            req.ifr_ifru.ifru_netmask = sockaddr_in(Ipv4Addr::from(mask));
            ioctl(&sock, libc::SIOCSIFNETMASK, &mut req, &format!("setting the netmask of {bridge}"))?;
        }
        set_up(&sock, bridge)
    }

    /// Open the tap `name` (creating it if needed) and set whether it outlives this descriptor.
    fn set_persistent(name: &str, persist: bool) -> io::Result<()> {
        let tun = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
        let mut req = ifreq(name)?;
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
        // SAFETY: TUNSETIFF takes a struct ifreq.
        if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF as _, &mut req as *mut libc::ifreq) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("opening tap {name}: {e}")));
        }
        // SAFETY: TUNSETPERSIST takes an integer argument.
        if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST as _, libc::c_ulong::from(persist)) } < 0 {
            let e = io::Error::last_os_error();
            let what = if persist { "making tap persistent" } else { "removing tap" };
            return Err(io::Error::new(e.kind(), format!("{what} {name}: {e}")));
        }
        Ok(())
    }

    /// Create the persistent tap `name`, attach it to `bridge` and bring it up.
    pub fn create(name: &str, bridge: &str) -> io::Result<()> {
        set_persistent(name, true)?;
        let attach = (|| {
            let sock = socket()?;
            let c =
                CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
            // SAFETY: if_nametoindex reads a C string.
            let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
            if index == 0 {
                return Err(io::Error::last_os_error());
            }
            let mut req = ifreq(bridge)?;
            req.ifr_ifru.ifru_ifindex = index as libc::c_int;
            ioctl(&sock, SIOCBRADDIF, &mut req, &format!("attaching {name} to {bridge}"))?;
            set_up(&sock, name)
        })();
        if attach.is_err() {
            let _ = remove(name);
        }
        attach
    }

    /// Remove the tap `name` if it exists.
    ///
    /// Removing opens the tap, which fails with `EBUSY` while another descriptor is attached to
    /// it. That is brief when the other descriptor is a copy inherited by a child that any
    /// thread of this process is forking (it goes at the child's exec), so `EBUSY` is retried
    /// for up to a second; after that the error is returned (a QEMU still holds the tap).
    pub fn remove(name: &str) -> io::Result<()> {
        if !exists(name) {
            return Ok(());
        }
        let busy_until = std::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            match set_persistent(name, false) {
                Err(e) if e.kind() == io::ErrorKind::ResourceBusy && std::time::Instant::now() < busy_until => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other,
            }
        }?;
        // The kernel unregisters the device after our descriptor closes, asynchronously: wait
        // for it, so that the name is free (and gone from /sys) when this returns.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while exists(name) {
            if std::time::Instant::now() > deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("tap {name} is still registered")));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Runs as root (like every strata test that touches the host network).
        #[test]
        fn tap_on_a_bridge_and_gone_again() {
            let (bridge, name) =
                (format!("stbr{}", std::process::id() % 100000), format!("sttap{}", std::process::id() % 100000));
            ensure_bridge(&bridge, Ipv4Addr::new(10, 231, 0, 1), 24).expect("bridge");
            ensure_bridge(&bridge, Ipv4Addr::new(10, 231, 0, 1), 24).expect("idempotent");
            create(&name, &bridge).expect("tap");
            let master = std::fs::read_link(format!("/sys/class/net/{name}/master")).expect("master");
            assert_eq!(master.file_name().and_then(|n| n.to_str()), Some(bridge.as_str()));
            let flags = std::fs::read_to_string(format!("/sys/class/net/{name}/flags")).expect("flags");
            assert!(u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).expect("hex") & 1 == 1, "up");
            remove(&name).expect("remove");
            assert!(!exists(&name));
            remove(&name).expect("removing twice is fine");
            assert!(create("x".repeat(20).as_str(), &bridge).is_err(), "too long a name");
            // Remove the test bridge: down, then SIOCBRDELBR.
            let sock = socket().expect("socket");
            let mut r = ifreq(&bridge).expect("ifreq");
            ioctl(&sock, libc::SIOCGIFFLAGS, &mut r, "flags").expect("flags");
            // SAFETY: SIOCGIFFLAGS filled the flags member.
            unsafe { r.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short) };
            ioctl(&sock, libc::SIOCSIFFLAGS, &mut r, "down").expect("down");
            let c = CString::new(bridge.clone()).expect("c");
            // SAFETY: SIOCBRDELBR (0x89a1) takes the bridge name as a C string.
            unsafe { libc::ioctl(sock.as_raw_fd(), 0x89a1 as _, c.as_ptr()) };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while exists(&bridge) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            assert!(!exists(&bridge));
        }

        /// A descriptor of the tap held for a moment by someone else — as a child forked by any
        /// thread of this process holds a copy of every descriptor until it execs — makes
        /// opening the tap fail with EBUSY; removing it waits for that copy to go.
        #[test]
        fn a_tap_held_for_a_moment_is_still_removed() {
            let name = format!("sthold{}", std::process::id() % 100000);
            set_persistent(&name, true).expect("tap");
            let tun = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun").expect("tun");
            let mut req = ifreq(&name).expect("ifreq");
            req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
            // SAFETY: TUNSETIFF takes a struct ifreq.
            let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF as _, &mut req as *mut libc::ifreq) };
            assert_eq!(rc, 0, "attaching: {}", io::Error::last_os_error());
            let holder = std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(300));
                drop(tun);
            });
            let removed = remove(&name);
            holder.join().expect("holder");
            let _ = remove(&name);
            removed.expect("remove while held for 300 ms");
            assert!(!exists(&name));
        }
    }
}
