//! Published ports, served by a workload's supervisor as a userspace proxy to the workload's
//! address (as Docker's `docker-proxy`): no iptables, and connections from the host itself
//! work. TCP connections are spliced; UDP datagrams are relayed per client address, each client
//! through a socket of its own so that replies find their way back, a client silent (no reply
//! either) for [`UDP_IDLE`] forgotten.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A port's protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// One published port: connections (datagrams) to `host` are proxied to `container` (the
/// workload's address: a container's or a VM's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    pub host: SocketAddr,
    pub container: SocketAddr,
    /// TCP unless said (what supervisors recorded before UDP was forwarded reads as TCP).
    #[serde(default)]
    pub protocol: Protocol,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot publish port {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// A published port bound on the host, and where it goes.
#[derive(Debug)]
pub enum Bound {
    Tcp(TcpListener, SocketAddr),
    Udp(UdpSocket, SocketAddr),
}

/// How long a UDP client is remembered after the last datagram either way (Docker's
/// `UDPConnTrackTimeout`).
pub const UDP_IDLE: Duration = Duration::from_secs(90);
/// The most UDP clients relayed at once on one port; datagrams of more are dropped.
const UDP_MAX_CLIENTS: usize = 1024;
/// The largest datagram relayed (an IPv4 UDP payload's maximum).
const UDP_MAX_DATAGRAM: usize = 65507;

/// Bind every published port now, so that a port in use fails early and cleanly.
pub fn bind_ports(ports: &[PortForward]) -> Result<Vec<Bound>, BindError> {
    ports
        .iter()
        .map(|p| {
            let bound = match p.protocol {
                Protocol::Tcp => TcpListener::bind(p.host).map(|l| Bound::Tcp(l, p.container)),
                Protocol::Udp => UdpSocket::bind(p.host).map(|s| Bound::Udp(s, p.container)),
            };
            bound.map_err(|source| BindError { addr: p.host, source })
        })
        .collect()
}

/// Serve bound ports on background threads for the life of the process.
pub fn serve_ports(bound: Vec<Bound>) {
    for b in bound {
        match b {
            Bound::Tcp(listener, target) => {
                std::thread::spawn(move || {
                    for conn in listener.incoming().flatten() {
                        std::thread::spawn(move || proxy(conn, target));
                    }
                });
            }
            Bound::Udp(socket, target) => {
                std::thread::spawn(move || relay_udp(socket, target, UDP_IDLE));
            }
        }
    }
}

/// Relay datagrams arriving on `socket` to `target`, and `target`'s replies back to whoever
/// sent them, until `socket` fails.
fn relay_udp(socket: UdpSocket, target: SocketAddr, idle: Duration) {
    let socket = Arc::new(socket);
    let clients: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; UDP_MAX_DATAGRAM];
    loop {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            // A reply to an earlier send that was refused (ICMP) shows up here on Linux.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(_) => return,
        };
        let upstream = {
            let mut map = clients.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&from) {
                Some(u) => Some(u.clone()),
                None if map.len() >= UDP_MAX_CLIENTS => None,
                None => match client_socket(target, idle) {
                    Ok(u) => {
                        let u = Arc::new(u);
                        map.insert(from, u.clone());
                        let (socket, clients, u2) = (socket.clone(), clients.clone(), u.clone());
                        std::thread::spawn(move || {
                            relay_replies(&u2, &socket, from);
                            clients.lock().unwrap_or_else(|e| e.into_inner()).remove(&from);
                        });
                        Some(u)
                    }
                    Err(_) => None,
                },
            }
        };
        if let Some(u) = upstream {
            let _ = u.send(&buf[..n]);
        }
    }
}

/// A socket of one client's own, connected to `target`, that gives up reading after `idle`.
fn client_socket(target: SocketAddr, idle: Duration) -> io::Result<UdpSocket> {
    let any: SocketAddr = if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let u = UdpSocket::bind(any)?;
    u.connect(target)?;
    u.set_read_timeout(Some(idle))?;
    Ok(u)
}

/// `target`'s replies on `upstream` sent back to `client` through `socket`, until none came
/// for the idle time.
fn relay_replies(upstream: &UdpSocket, socket: &UdpSocket, client: SocketAddr) {
    let mut buf = vec![0u8; UDP_MAX_DATAGRAM];
    loop {
        match upstream.recv(&mut buf) {
            Ok(n) => {
                let _ = socket.send_to(&buf[..n], client);
            }
            // Nothing listens at the target yet: the client may try again.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(_) => return,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> (UdpSocket, SocketAddr) {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = s.local_addr().expect("addr");
        let server = s.try_clone().expect("clone");
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = server.recv_from(&mut buf) {
                let reply = format!("{}:{}", String::from_utf8_lossy(&buf[..n]), from.port());
                let _ = server.send_to(reply.as_bytes(), from);
            }
        });
        (s, addr)
    }

    #[test]
    fn udp_datagrams_are_relayed_and_replies_reach_each_client() {
        let (_server, target) = echo_server();
        let bound = bind_ports(&[PortForward { host: "127.0.0.1:0".parse().expect("addr"), container: target, protocol: Protocol::Udp }]).expect("bind");
        let host = match &bound[0] {
            Bound::Udp(s, _) => s.local_addr().expect("addr"),
            Bound::Tcp(..) => panic!("a TCP listener for a UDP port"),
        };
        serve_ports(bound);
        let ask = |client: &UdpSocket, what: &str| {
            client.send_to(what.as_bytes(), host).expect("send");
            let mut buf = [0u8; 1500];
            let (n, from) = client.recv_from(&mut buf).expect("a reply");
            assert_eq!(from, host, "the reply comes from the published port");
            String::from_utf8_lossy(&buf[..n]).to_string()
        };
        let (a, b) = (UdpSocket::bind("127.0.0.1:0").expect("a"), UdpSocket::bind("127.0.0.1:0").expect("b"));
        for c in [&a, &b] {
            c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        }
        let first = ask(&a, "one");
        let again = ask(&a, "two");
        let other = ask(&b, "three");
        // Each client has a socket of its own toward the target, the same one for its next
        // datagram.
        let port_of = |reply: &str| reply.rsplit(':').next().unwrap_or("").to_string();
        assert!(first.starts_with("one:") && again.starts_with("two:") && other.starts_with("three:"), "{first} {again} {other}");
        assert_eq!(port_of(&first), port_of(&again));
        assert_ne!(port_of(&first), port_of(&other));
    }

    #[test]
    fn a_quiet_udp_client_is_forgotten() {
        let (_server, target) = echo_server();
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let host = socket.local_addr().expect("addr");
        std::thread::spawn(move || relay_udp(socket, target, Duration::from_millis(300)));
        let c = UdpSocket::bind("127.0.0.1:0").expect("client");
        c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut buf = [0u8; 1500];
        c.send_to(b"x", host).expect("send");
        let n = c.recv(&mut buf).expect("reply");
        let first = String::from_utf8_lossy(&buf[..n]).to_string();
        std::thread::sleep(Duration::from_millis(800));
        c.send_to(b"y", host).expect("send");
        let n = c.recv(&mut buf).expect("reply");
        let second = String::from_utf8_lossy(&buf[..n]).to_string();
        assert_ne!(first.rsplit(':').next(), second.rsplit(':').next(), "after the idle time a new socket relays ({first}, {second})");
    }

    #[test]
    fn a_record_without_a_protocol_is_tcp() {
        let p: PortForward = serde_json::from_str(r#"{"host":"0.0.0.0:80","container":"10.0.0.2:8080"}"#).expect("old record");
        assert_eq!(p.protocol, Protocol::Tcp);
    }
}
