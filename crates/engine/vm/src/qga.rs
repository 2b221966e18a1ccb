//! The host's side of the QEMU guest agent (`qemu-ga`, the protocol libvirt and KubeVirt speak
//! to a guest): JSON commands, one per line, over the VM's virtio-serial port
//! `org.qemu.guest_agent.0`, whose host end is QEMU's chardev socket [`QGA_SOCKET`]. Only guests
//! that run an agent answer; strata never needs one.
//!
//! A session starts with `guest-sync-delimited` (a fresh id): the agent answers it after a
//! `0xFF` byte, so whatever an earlier, abandoned session left in the channel is skipped up to the
//! answer carrying this id. Then the read-only commands [`query`] asks: `guest-get-osinfo`,
//! `guest-get-host-name`, `guest-network-get-interfaces`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The chardev socket of the guest agent's port (QEMU listens; one client at a time).
pub const QGA_SOCKET: &str = "qga.sock";
/// The port's name, which `qemu-ga` looks for (`/dev/virtio-ports/org.qemu.guest_agent.0`).
pub const QGA_PORT: &str = "org.qemu.guest_agent.0";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to the guest agent's socket {path}")]
    Connect { path: String, source: std::io::Error },
    #[error("no QEMU guest agent answered within {0:?}")]
    NoAnswer(Duration),
    #[error("the guest agent's channel")]
    Io(#[from] std::io::Error),
    #[error("the guest agent answered {command} with something unreadable: {detail}")]
    Unreadable { command: String, detail: String },
    #[error("the guest agent refused {command}: {message}")]
    Refused { command: String, message: String },
}

/// What the guest says about itself (KubeVirt's `guestOSInfo`, hostname and interfaces).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestInfo {
    pub os: OsInfo,
    pub hostname: Option<String>,
    pub interfaces: Vec<Interface>,
}

/// `guest-get-osinfo` (`/etc/os-release` and `uname` in a Linux guest).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct OsInfo {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub pretty_name: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub version_id: Option<String>,
    #[serde(default)]
    pub kernel_release: Option<String>,
    #[serde(default)]
    pub kernel_version: Option<String>,
    #[serde(default)]
    pub machine: Option<String>,
}

/// One of `guest-network-get-interfaces`' interfaces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    /// The MAC address (`hardware-address`).
    pub mac: Option<String>,
    /// `ADDRESS/PREFIX`, IPv4 and IPv6.
    pub ip_addresses: Vec<String>,
}

/// Ask the agent behind `socket` everything [`GuestInfo`] holds; each answer within `timeout`.
pub fn query(socket: &Path, timeout: Duration) -> Result<GuestInfo, Error> {
    let stream = crate::connect_unix(socket).map_err(|e| Error::Connect { path: socket.display().to_string(), source: e })?;
    let mut s = Session::new(stream, timeout)?;
    s.sync()?;
    let os: OsInfo = serde_json::from_value(s.call("guest-get-osinfo")?).map_err(|e| unreadable("guest-get-osinfo", e))?;
    let hostname = s.call("guest-get-host-name")?["host-name"].as_str().map(str::to_string);
    let interfaces = interfaces(&s.call("guest-network-get-interfaces")?).map_err(|e| unreadable("guest-network-get-interfaces", e))?;
    Ok(GuestInfo { os, hostname, interfaces })
}

fn unreadable(command: &str, e: impl std::fmt::Display) -> Error {
    Error::Unreadable { command: command.into(), detail: e.to_string() }
}

/// The interfaces of a `guest-network-get-interfaces` answer, loopback left out.
pub fn interfaces(v: &Value) -> Result<Vec<Interface>, String> {
    let list = v.as_array().ok_or("not a list")?;
    let mut out = Vec::new();
    for i in list {
        let name = i["name"].as_str().ok_or("an interface without a name")?;
        if name == "lo" {
            continue;
        }
        let ips = i["ip-addresses"].as_array().map(Vec::as_slice).unwrap_or_default();
        let ip_addresses = ips.iter().filter_map(|a| Some(format!("{}/{}", a["ip-address"].as_str()?, a["prefix"].as_u64()?))).collect();
        out.push(Interface { name: name.into(), mac: i["hardware-address"].as_str().map(str::to_string), ip_addresses });
    }
    Ok(out)
}

struct Session {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    timeout: Duration,
}

impl Session {
    fn new(stream: UnixStream, timeout: Duration) -> Result<Session, Error> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Session { writer: stream.try_clone()?, reader: BufReader::new(stream), timeout })
    }

    fn send(&mut self, command: &str, arguments: Option<Value>) -> Result<(), Error> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(|e| self.io(e))
    }

    /// A read that ran out of time means no agent is listening (or it hangs).
    fn io(&self, e: std::io::Error) -> Error {
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Error::NoAnswer(self.timeout),
            _ => Error::Io(e),
        }
    }

    /// Skip to the `0xFF` that precedes the answer to a fresh `guest-sync-delimited`, then to
    /// that answer (a line of an abandoned session may come first).
    fn sync(&mut self) -> Result<(), Error> {
        let id = (u64::from(std::process::id()) << 32) | rand_id();
        self.send("guest-sync-delimited", Some(json!({ "id": id })))?;
        loop {
            let mut skipped = Vec::new();
            self.reader.read_until(0xFF, &mut skipped).map_err(|e| self.io(e))?;
            if skipped.last() != Some(&0xFF) {
                return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            let line = self.line()?;
            if serde_json::from_str::<Value>(&line).is_ok_and(|v| v["return"].as_u64() == Some(id)) {
                return Ok(());
            }
        }
    }

    fn line(&mut self) -> Result<String, Error> {
        let mut line = String::new();
        let n = (&mut self.reader).take(1 << 20).read_line(&mut line).map_err(|e| self.io(e))?;
        if n == 0 {
            return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(line)
    }

    /// Run `command` (no arguments) and return its `return` value.
    fn call(&mut self, command: &str) -> Result<Value, Error> {
        self.send(command, None)?;
        let line = self.line()?;
        let v: Value = serde_json::from_str(&line).map_err(|e| unreadable(command, e))?;
        if let Some(e) = v.get("error") {
            return Err(Error::Refused { command: command.into(), message: e["desc"].as_str().unwrap_or("no description").into() });
        }
        v.get("return").cloned().ok_or_else(|| unreadable(command, "no \"return\""))
    }
}

/// 32 bits of the clock's nanoseconds: sync ids need only differ between sessions.
fn rand_id() -> u64 {
    u64::from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An agent on the other end of a socket pair: answers the sync (after stale output of an
    /// earlier session) and the three queries with what qemu-ga 7.2 sent from the test guest.
    #[test]
    fn a_session_skips_stale_output_and_reads_the_answers() {
        let (host, guest) = UnixStream::pair().expect("pair");
        let agent = std::thread::spawn(move || {
            let mut r = BufReader::new(guest.try_clone().expect("clone"));
            let mut w = guest;
            let mut line = String::new();
            r.read_line(&mut line).expect("sync");
            let id = serde_json::from_str::<Value>(&line).expect("json")["arguments"]["id"].as_u64().expect("id");
            // An abandoned session's answer, then this one's, each after 0xFF.
            w.write_all(b"{\"return\": {\"host-name\": \"old\"}}\n\xff{\"return\": 1}\n").expect("stale");
            w.write_all(b"\xff").expect("delimiter");
            w.write_all(format!("{{\"return\": {id}}}\n").as_bytes()).expect("sync answer");
            for answer in [
                r##"{"return": {"name": "strata test guest", "kernel-release": "6.1.0-57-amd64", "version": "3 (busybox)", "pretty-name": "strata test guest 3", "version-id": "3", "kernel-version": "#1 SMP", "machine": "x86_64", "id": "strata-test"}}"##,
                r#"{"return": {"host-name": "demo"}}"#,
                r#"{"return": [{"name": "lo", "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8}], "hardware-address": "00:00:00:00:00:00"}, {"name": "eth0", "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "10.0.2.15", "prefix": 24}, {"ip-address-type": "ipv6", "ip-address": "fe80::1", "prefix": 64}], "hardware-address": "52:54:00:12:34:56"}]}"#,
            ] {
                line.clear();
                r.read_line(&mut line).expect("command");
                w.write_all(answer.as_bytes()).expect("answer");
                w.write_all(b"\n").expect("newline");
            }
        });
        let mut s = Session::new(host, Duration::from_secs(10)).expect("session");
        s.sync().expect("sync");
        let os: OsInfo = serde_json::from_value(s.call("guest-get-osinfo").expect("osinfo")).expect("os");
        assert_eq!((os.name.as_deref(), os.kernel_release.as_deref(), os.version_id.as_deref()), (Some("strata test guest"), Some("6.1.0-57-amd64"), Some("3")));
        assert_eq!(s.call("guest-get-host-name").expect("host name")["host-name"], "demo");
        let ifs = interfaces(&s.call("guest-network-get-interfaces").expect("interfaces")).expect("parsed");
        assert_eq!(ifs, vec![Interface { name: "eth0".into(), mac: Some("52:54:00:12:34:56".into()), ip_addresses: vec!["10.0.2.15/24".into(), "fe80::1/64".into()] }]);
        agent.join().expect("agent");
    }

    /// Nobody answers (a guest without an agent): the sync runs out of time, clearly.
    #[test]
    fn a_silent_channel_is_no_answer() {
        let (host, _guest) = UnixStream::pair().expect("pair");
        let mut s = Session::new(host, Duration::from_millis(200)).expect("session");
        let e = s.sync().expect_err("no agent");
        assert!(matches!(e, Error::NoAnswer(_)), "{e:?}");
        assert_eq!(e.to_string(), "no QEMU guest agent answered within 200ms");
    }
}
