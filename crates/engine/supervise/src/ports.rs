//! Published TCP ports, served by a workload's supervisor as a userspace proxy to the
//! workload's address (as Docker's `docker-proxy`): no iptables, and connections from the host
//! itself work.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};

use serde::{Deserialize, Serialize};

/// One published TCP port: connections to `host` are proxied to `container` (the workload's
/// address: a container's or a VM's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    pub host: SocketAddr,
    pub container: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot publish port {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// Bind every published port now, so that a port in use fails early and cleanly.
pub fn bind_ports(ports: &[PortForward]) -> Result<Vec<(TcpListener, SocketAddr)>, BindError> {
    ports
        .iter()
        .map(|p| TcpListener::bind(p.host).map(|l| (l, p.container)).map_err(|source| BindError { addr: p.host, source }))
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
    let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let (mut c1, mut u1) = (client, upstream);
    let t = std::thread::spawn(move || {
        let _ = io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut u1, &mut c1);
    let _ = c1.shutdown(Shutdown::Write);
    let _ = t.join();
}
