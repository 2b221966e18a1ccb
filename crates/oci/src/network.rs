//! Container networking on the host: network namespaces, the CNI bridge, published ports.
//!
//! A container on the default `bridge` network gets its own network namespace (bind-mounted
//! under [`NETNS_DIR`] so it outlives any process), configured by the CNI reference plugins
//! from Debian's `containernetworking-plugins`: `loopback`, and `bridge` with `host-local`
//! IPAM on the `strata0` bridge. Published ports (`-p 8080:80`) are served by the container's
//! supervisor as a userspace TCP proxy to the container's address, the way Docker's
//! `docker-proxy` does; it needs no iptables and works for connections from the host itself.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
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
    #[error("cannot publish port {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// One published TCP port: connections to `host` are proxied to `container`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    pub host: SocketAddr,
    pub container: SocketAddr,
}

/// Bind every published port now, so that a port in use fails early and cleanly.
pub fn bind_ports(ports: &[PortForward]) -> Result<Vec<(TcpListener, SocketAddr)>, NetworkError> {
    ports
        .iter()
        .map(|p| {
            TcpListener::bind(p.host)
                .map(|l| (l, p.container))
                .map_err(|source| NetworkError::Bind { addr: p.host, source })
        })
        .collect()
}

/// Serve bound ports on background threads for the life of the process.
pub fn serve_ports(listeners: Vec<(TcpListener, SocketAddr)>) {
    for (listener, target) in listeners {
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || proxy(conn, target));
            }
        });
    }
}

fn proxy(client: TcpStream, target: SocketAddr) {
    let Ok(upstream) = TcpStream::connect(target) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else { return };
    let (mut c1, mut u1) = (client, upstream);
    let t = std::thread::spawn(move || {
        let _ = io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut u1, &mut c1);
    let _ = c1.shutdown(Shutdown::Write);
    let _ = t.join();
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

    /// Detach and release the address. Safe to call twice or after a failed add.
    pub fn del(&self, id: &str, netns: &Path) -> Result<(), NetworkError> {
        let netns_arg = if netns.exists() { netns.to_path_buf() } else { PathBuf::new() };
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
                if s.is_empty() { format!("exited with {}", out.status) } else { s }
            });
            let details = value["details"].as_str().map(|d| format!(": {d}")).unwrap_or_default();
            return Err(fail(format!("{msg}{details}")));
        }
        Ok(value)
    }
}

/// The address used for a published port when none is given.
pub const ANY_V4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
