//! A small typed QMP (QEMU Machine Protocol) client over a Unix socket.
//!
//! QMP is newline-delimited JSON: the server greets (`{"QMP": {...}}`), the client negotiates
//! with `qmp_capabilities`, then sends `{"execute": CMD, "arguments": {...}, "id": N}` and gets
//! `{"return": ..., "id": N}` or `{"error": {"class", "desc"}, "id": N}`. Asynchronous events
//! (`{"event": NAME, "data": ..., "timestamp": ...}`) may arrive between any two messages; they
//! are queued and handed out by [`Qmp::next_event`] / [`Qmp::wait_event`].
//!
//! A QEMU QMP socket serves one client at a time, so callers connect per operation and do not
//! hold the connection longer than they need it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("QMP protocol: {0}")]
    Protocol(String),
    /// QEMU refused the command.
    #[error("{desc}")]
    Command { class: String, desc: String },
    #[error("QMP: no answer within {0:?}")]
    Timeout(Duration),
}

/// The server's version, from the greeting.
#[derive(Clone, Debug, Deserialize)]
pub struct Version {
    pub qemu: VersionTriple,
    pub package: String,
}

#[derive(Clone, Copy, Debug, Deserialize)]
pub struct VersionTriple {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

#[derive(Debug, Deserialize)]
struct Greeting {
    #[serde(rename = "QMP")]
    qmp: GreetingBody,
}

#[derive(Debug, Deserialize)]
struct GreetingBody {
    version: Version,
}

/// An asynchronous event.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The guest or the host ended the VM; `reason` is QEMU's (`guest-shutdown`,
    /// `host-qmp-quit`, `host-signal`, ...).
    Shutdown { guest: bool, reason: String },
    /// The VM's CPUs stopped (pause, savevm, loadvm).
    Stop,
    /// The VM's CPUs run again.
    Resume,
    /// An ACPI power button press was requested (`system_powerdown`).
    Powerdown,
    Other { name: String, data: Value },
}

impl Event {
    fn from_json(name: &str, data: Value) -> Event {
        match name {
            "SHUTDOWN" => Event::Shutdown {
                guest: data.get("guest").and_then(Value::as_bool).unwrap_or(false),
                reason: data.get("reason").and_then(Value::as_str).unwrap_or("").to_string(),
            },
            "STOP" => Event::Stop,
            "RESUME" => Event::Resume,
            "POWERDOWN" => Event::Powerdown,
            _ => Event::Other { name: name.to_string(), data },
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Event::Shutdown { .. } => "SHUTDOWN",
            Event::Stop => "STOP",
            Event::Resume => "RESUME",
            Event::Powerdown => "POWERDOWN",
            Event::Other { name, .. } => name,
        }
    }
}

/// The VM's run state (`query-status`).
#[derive(Clone, Debug, Deserialize)]
pub struct RunStatus {
    pub running: bool,
    /// `prelaunch`, `running`, `paused`, `shutdown`, `save-vm`, `restore-vm`, ...
    pub status: String,
}

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    events: VecDeque<Event>,
    timeout: Duration,
    pub version: Version,
}

impl Qmp {
    /// Connect to the QMP socket at `path`, read the greeting and negotiate capabilities.
    /// `timeout` bounds every read (the greeting and each answer).
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        Self::handshake(crate::connect_unix(path)?, timeout)
    }

    /// Speak QMP over an already-connected stream.
    pub fn handshake(stream: UnixStream, timeout: Duration) -> Result<Qmp, QmpError> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let line = read_line(&mut reader, timeout)?;
        let greeting: Greeting =
            serde_json::from_str(&line).map_err(|e| QmpError::Protocol(format!("bad greeting {line:?}: {e}")))?;
        let mut qmp =
            Qmp { reader, writer, next_id: 1, events: VecDeque::new(), timeout, version: greeting.qmp.version };
        qmp.execute_raw("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// The connection as a plain stream for reading events only (a monitor of its own that
    /// nobody sends commands on), with the bytes already read past the last message.
    pub fn into_event_stream(self) -> (UnixStream, Vec<u8>) {
        let pending = self.reader.buffer().to_vec();
        (self.reader.into_inner(), pending)
    }

    /// Run a command and return its `return` value.
    pub fn execute_raw(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut bytes = serde_json::to_vec(&msg).map_err(|e| QmpError::Protocol(e.to_string()))?;
        bytes.push(b'\n');
        self.writer.write_all(&bytes)?;
        loop {
            let mut v = self.read_message(self.timeout)?;
            if let Some(name) = v.get("event").and_then(Value::as_str).map(str::to_string) {
                let data = v.get_mut("data").map(Value::take).unwrap_or(Value::Null);
                self.events.push_back(Event::from_json(&name, data));
                continue;
            }
            if v.get("id").and_then(Value::as_u64) != Some(id) {
                // An answer to something else (cannot happen with one request in flight).
                continue;
            }
            if let Some(err) = v.get("error") {
                return Err(QmpError::Command {
                    class: err.get("class").and_then(Value::as_str).unwrap_or("").to_string(),
                    desc: err.get("desc").and_then(Value::as_str).unwrap_or("").to_string(),
                });
            }
            return match v.get_mut("return") {
                Some(r) => Ok(r.take()),
                None => Err(QmpError::Protocol(format!("unexpected message {v}"))),
            };
        }
    }

    /// Run a command and deserialize its answer.
    pub fn execute<R: DeserializeOwned>(&mut self, command: &str, arguments: Option<Value>) -> Result<R, QmpError> {
        let v = self.execute_raw(command, arguments)?;
        serde_json::from_value(v).map_err(|e| QmpError::Protocol(format!("answer to {command}: {e}")))
    }

    /// The next event, waiting at most `timeout` for one to arrive.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>, QmpError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(Some(e));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut v = match self.read_message(left) {
                Ok(v) => v,
                Err(QmpError::Timeout(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            if let Some(name) = v.get("event").and_then(Value::as_str).map(str::to_string) {
                let data = v.get_mut("data").map(Value::take).unwrap_or(Value::Null);
                return Ok(Some(Event::from_json(&name, data)));
            }
        }
    }

    /// Wait for an event named `name` (other events are dropped); `None` on timeout.
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<Option<Event>, QmpError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left)? {
                Some(e) if e.name() == name => return Ok(Some(e)),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }

    pub fn query_status(&mut self) -> Result<RunStatus, QmpError> {
        self.execute("query-status", None)
    }

    /// Pause the vCPUs.
    pub fn stop(&mut self) -> Result<(), QmpError> {
        self.execute_raw("stop", None).map(drop)
    }

    /// Run (or resume) the vCPUs.
    pub fn cont(&mut self) -> Result<(), QmpError> {
        self.execute_raw("cont", None).map(drop)
    }

    /// Press the ACPI power button.
    pub fn system_powerdown(&mut self) -> Result<(), QmpError> {
        self.execute_raw("system_powerdown", None).map(drop)
    }

    /// End QEMU at once.
    pub fn quit(&mut self) -> Result<(), QmpError> {
        self.execute_raw("quit", None).map(drop)
    }

    /// Ask the guest's balloon driver to leave the guest `bytes` of memory.
    pub fn balloon(&mut self, bytes: u64) -> Result<(), QmpError> {
        self.execute_raw("balloon", Some(json!({ "value": bytes }))).map(drop)
    }

    /// The memory the guest has now (bytes), as its balloon driver reports it.
    pub fn query_balloon(&mut self) -> Result<u64, QmpError> {
        #[derive(Deserialize)]
        struct Info {
            actual: u64,
        }
        self.execute::<Info>("query-balloon", None).map(|i| i.actual)
    }

    /// Run a human monitor (HMP) command. HMP reports failures as text, so any output starting
    /// with `Error:` becomes a [`QmpError::Command`].
    pub fn human(&mut self, command_line: &str) -> Result<String, QmpError> {
        let out: String = self.execute("human-monitor-command", Some(json!({ "command-line": command_line })))?;
        let trimmed = out.trim();
        if let Some(msg) = trimmed.strip_prefix("Error:") {
            return Err(QmpError::Command { class: "GenericError".into(), desc: msg.trim().to_string() });
        }
        Ok(out)
    }

    /// Save the whole VM (devices, RAM) as internal snapshot `tag` of its qcow2 disks.
    pub fn savevm(&mut self, tag: &str) -> Result<(), QmpError> {
        check_tag(tag)?;
        self.human(&format!("savevm {tag}")).map(drop)
    }

    /// Return the VM to internal snapshot `tag`.
    pub fn loadvm(&mut self, tag: &str) -> Result<(), QmpError> {
        check_tag(tag)?;
        self.human(&format!("loadvm {tag}")).map(drop)
    }

    fn read_message(&mut self, timeout: Duration) -> Result<Value, QmpError> {
        self.reader.get_ref().set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let line = read_line(&mut self.reader, timeout)?;
        serde_json::from_str(&line).map_err(|e| QmpError::Protocol(format!("bad message {line:?}: {e}")))
    }
}

/// Snapshot tags go into an HMP command line: keep them to one plain word.
fn check_tag(tag: &str) -> Result<(), QmpError> {
    let ok = !tag.is_empty()
        && tag.len() <= 64
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(QmpError::Command {
            class: "InvalidParameter".into(),
            desc: format!("invalid snapshot name {tag:?}: only [a-zA-Z0-9_.-] are allowed"),
        })
    }
}

fn read_line(reader: &mut BufReader<UnixStream>, timeout: Duration) -> Result<String, QmpError> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Err(QmpError::Io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "QEMU closed the connection"))),
        Ok(_) => Ok(line),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            Err(QmpError::Timeout(timeout))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    /// A scripted QMP server: answers each command by name, emitting events where asked.
    fn server(stream: UnixStream, script: Vec<(&'static str, Vec<&'static str>, &'static str)>) {
        let mut w = stream.try_clone().expect("clone");
        let mut r = BufReader::new(stream);
        writeln!(w, r#"{{"QMP": {{"version": {{"qemu": {{"micro": 22, "minor": 2, "major": 7}}, "package": "test"}}, "capabilities": ["oob"]}}}}"#).expect("greet");
        for (expect, events, answer) in script {
            let mut line = String::new();
            r.read_line(&mut line).expect("read");
            let v: Value = serde_json::from_str(&line).expect("json");
            assert_eq!(v["execute"], expect, "command order");
            for e in events {
                writeln!(w, "{e}").expect("event");
            }
            let id = v["id"].clone();
            writeln!(w, "{}", answer.replace("ID", &id.to_string())).expect("answer");
        }
        // Stay connected a little, so the client can time out waiting rather than see EOF.
        std::thread::sleep(Duration::from_millis(300));
    }

    #[test]
    fn negotiates_runs_commands_and_queues_events() {
        let (a, b) = UnixStream::pair().expect("pair");
        let t = std::thread::spawn(move || {
            server(
                b,
                vec![
                    ("qmp_capabilities", vec![], r#"{"return": {}, "id": ID}"#),
                    (
                        "query-status",
                        vec![r#"{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}"#],
                        r#"{"return": {"status": "paused", "singlestep": false, "running": false}, "id": ID}"#,
                    ),
                    (
                        "system_powerdown",
                        vec![r#"{"event": "POWERDOWN", "timestamp": {"seconds": 1, "microseconds": 2}}"#],
                        r#"{"return": {}, "id": ID}"#,
                    ),
                    ("human-monitor-command", vec![], r#"{"return": "Error: Snapshot 'x' does not exist\r\n", "id": ID}"#),
                    ("cont", vec![], r#"{"error": {"class": "GenericError", "desc": "nope"}, "id": ID}"#),
                ],
            )
        });
        let mut q = Qmp::handshake(a, Duration::from_secs(5)).expect("handshake");
        assert_eq!(q.version.qemu.major, 7);
        let st = q.query_status().expect("status");
        assert_eq!(st.status, "paused");
        assert!(!st.running);
        q.system_powerdown().expect("powerdown");
        let err = q.loadvm("x").expect_err("hmp error is an error");
        assert!(err.to_string().contains("does not exist"), "{err}");
        let err = q.cont().expect_err("error answer");
        assert!(matches!(err, QmpError::Command { ref class, .. } if class == "GenericError"));
        assert_eq!(q.next_event(Duration::from_millis(10)).expect("ev"), Some(Event::Stop));
        assert_eq!(q.wait_event("POWERDOWN", Duration::from_millis(10)).expect("ev"), Some(Event::Powerdown));
        assert_eq!(q.next_event(Duration::from_millis(10)).expect("ev"), None);
        t.join().expect("server");
    }

    #[test]
    fn events_arrive_between_commands_and_time_out() {
        let (a, b) = UnixStream::pair().expect("pair");
        let t = std::thread::spawn(move || {
            let mut w = b.try_clone().expect("clone");
            server(b, vec![("qmp_capabilities", vec![], r#"{"return": {}, "id": ID}"#)]);
            std::thread::sleep(Duration::from_millis(50));
            writeln!(w, r#"{{"event": "SHUTDOWN", "data": {{"guest": true, "reason": "guest-shutdown"}}, "timestamp": {{"seconds": 1, "microseconds": 2}}}}"#).expect("ev");
            std::thread::sleep(Duration::from_millis(300));
        });
        let mut q = Qmp::handshake(a, Duration::from_secs(5)).expect("handshake");
        let e = q.wait_event("SHUTDOWN", Duration::from_secs(5)).expect("wait");
        assert_eq!(e, Some(Event::Shutdown { guest: true, reason: "guest-shutdown".into() }));
        assert_eq!(q.next_event(Duration::from_millis(50)).expect("none"), None);
        t.join().expect("server");
    }

    #[test]
    fn bad_snapshot_names_never_reach_hmp() {
        assert!(check_tag("s1").is_ok());
        for bad in ["", "a b", "x;quit", "../x"] {
            assert!(check_tag(bad).is_err(), "{bad:?}");
        }
    }
}
