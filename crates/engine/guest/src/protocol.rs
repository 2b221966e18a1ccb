//! The host <-> guest agent protocol: frames of a 4-byte big-endian length followed by that many
//! bytes of JSON, at most [`MAX_FRAME`] bytes. One stream carries everything, in both
//! directions:
//!
//! - host -> guest: [`HostMessage`] `{id, request}`; ids are the host's, unique per connection;
//! - guest -> host: [`GuestMessage::Reply`] with the request's id (replies may come out of order:
//!   an `exec` answers when its process ends), and, unasked, [`GuestMessage::Output`] (a
//!   container's stdout/stderr bytes, in order) and [`GuestMessage::Exited`] (after the last
//!   output of that container).
//!
//! *Streams* (a streaming exec, a port-forward connection) are named by the host; their output
//! and end come as `Output` and `Exited` with the stream's name as `id`, their input as `Input`
//! requests, each answered once written, so a stream has at most one chunk in flight.
//!
//! JSON keeps the protocol readable in a serial log and versionable by adding fields; output
//! bytes travel as base64.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The largest frame either side accepts (a bigger length is a broken or hostile stream).
pub const MAX_FRAME: u32 = 4 << 20;

/// The most output one `exec` returns per stream (CRI's `ExecSync` limit is 16 MiB; a frame
/// must also hold both streams base64-encoded).
pub const MAX_EXEC_OUTPUT: usize = 1 << 20;

/// The virtio-serial port name the guest agent looks for (`/sys/class/virtio-ports/*/name`).
pub const PORT_NAME: &str = "strata.agent";

/// The virtio-9p mount tag of the directory the host shares with the guest, and where the
/// guest mounts it.
pub const SHARE_TAG: &str = "strata";
pub const SHARE_MOUNT: &str = "/run/strata/shared";
/// Where the guest keeps the pod's memory-backed volumes ([`Request::Volume`]): one tmpfs per
/// volume at `VOLUMES_DIR/<name>`, which containers bind-mount.
pub const VOLUMES_DIR: &str = "/run/strata/volumes";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("frame of {0} bytes is larger than the limit of {MAX_FRAME}")]
    TooLarge(u64),
    #[error("the stream ended in the middle of a frame")]
    Truncated,
    #[error("malformed frame")]
    Json(#[from] serde_json::Error),
    #[error("i/o on the agent channel")]
    Io(#[from] io::Error),
}

/// A request from the host, with the id its reply will carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMessage {
    pub id: u64,
    pub request: Request,
}

/// What the host asks of the guest agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Answered by [`Response::Hello`]: proves the agent serves, and says which kernel runs.
    Hello,
    /// Configure a network interface (the pod's NIC): address, prefix, default gateway.
    Network(NetworkConfig),
    /// Record a container; its process starts with `Start`.
    Create { id: String, spec: ContainerSpec },
    /// Make sure the pod's memory-backed volume `name` (an emptyDir with `medium: Memory`) is a
    /// tmpfs at `VOLUMES_DIR/<name>` (mode 0777, `size_bytes` if given; mounted once, kept until
    /// the VM ends, so restarted containers find it) and that its directory `sub_path` exists.
    Volume {
        name: String,
        #[serde(default)]
        size_bytes: Option<u64>,
        #[serde(default)]
        sub_path: Option<String>,
    },
    /// Start a created container's process ([`Response::Started`]).
    Start { id: String },
    /// Send a signal to a container's main process (no error if it has already exited).
    Signal { id: String, signal: i32 },
    /// Run a command in a running container's namespaces and collect its output.
    Exec(ExecRequest),
    /// Forget a container, killing it first if it runs.
    Remove { id: String },
    /// Start a command in a running container with its stdio streamed (`kubectl exec -i -t`):
    /// answered by `Started` once it runs; its output comes as [`GuestMessage::Output`] and its
    /// end as [`GuestMessage::Exited`], both with `id` = `stream` (the host's name for it,
    /// distinct from every container id).
    ExecStream {
        stream: String,
        exec: ExecRequest,
        /// Give it a terminal of this size (rows, columns): output is one stream (stdout).
        #[serde(default)]
        tty: Option<(u16, u16)>,
        /// Connect its input (without: `/dev/null`; a terminal always has input).
        #[serde(default)]
        stdin: bool,
    },
    /// Connect to `127.0.0.1:port` in the guest (`kubectl port-forward`; the pod's loopback is
    /// the guest's): answered `Ok` once connected; the bytes the server sends come as `Output`
    /// (stdout) of `stream`, its end as `Exited` with code 0.
    Connect { stream: String, port: u16 },
    /// Bytes for a stream's input (an exec's stdin or terminal, a connection), answered once
    /// written (the host sends the next after the answer: flow control).
    Input {
        stream: String,
        #[serde(with = "b64")]
        data: Vec<u8>,
    },
    /// The end of a stream's input (an exec's stdin closed, a connection's write side shut).
    CloseInput { stream: String },
    /// A new size (rows, columns) for a stream's terminal.
    Resize { stream: String, rows: u16, cols: u16 },
    /// Kill a stream's process (SIGKILL) or drop its connection.
    Cancel { stream: String },
    /// Sync and power the VM off (the reply is sent first).
    PowerOff,
}

/// A container as the guest runs it. Paths are the guest's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The root filesystem (a directory, usually under [`SHARE_MOUNT`]).
    pub rootfs: String,
    /// The program and its arguments (the program is looked up in the container's `PATH`).
    pub argv: Vec<String>,
    /// `KEY=VALUE`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory inside the container; default `/`.
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    /// The container's hostname (its own UTS namespace); default: the guest's.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Guest files or directories bound into the container (`/etc/hosts`, volumes...).
    #[serde(default)]
    pub mounts: Vec<BindMount>,
    /// Limits of the container's cgroup in the guest (cgroup v2); each container has a cgroup
    /// of its own, its execs join it.
    #[serde(default)]
    pub resources: Resources,
    /// The main process reads a pipe as stdin, fed by `Input` requests named by the container's
    /// id (`CloseInput` ends it); without, its stdin is `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
    /// The main process has a new terminal as stdin, stdout, stderr and controlling terminal
    /// (24x80 until a `Resize` named by the container's id); its output is all `Stdout`.
    #[serde(default)]
    pub tty: bool,
}

/// A container's cgroup v2 limits (kubelet's values, translated as runc does for v2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// `memory.max`.
    #[serde(default)]
    pub memory_max_bytes: Option<u64>,
    /// `cpu.max`: the CFS quota per period, microseconds.
    #[serde(default)]
    pub cpu_quota_us: Option<u64>,
    #[serde(default)]
    pub cpu_period_us: Option<u64>,
    /// `cpu.shares` (2..262144), written as `cpu.weight` by runc's conversion.
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    /// `pids.max`.
    #[serde(default)]
    pub pids_max: Option<u64>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: String,
    /// Absolute path inside the container (created when missing).
    pub destination: String,
    #[serde(default)]
    pub readonly: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// The interface; default: the first one that is not loopback.
    #[serde(default)]
    pub interface: Option<String>,
    /// The address with its prefix, e.g. `10.88.0.5/16`.
    pub address: String,
    #[serde(default)]
    pub gateway: Option<String>,
    /// The guest's hostname.
    #[serde(default)]
    pub hostname: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// The container whose namespaces and root the command runs in.
    pub id: String,
    pub argv: Vec<String>,
    /// Default: the container's environment.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// Kill the command after this long and answer `timed_out`.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The guest's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Hello {
        /// `uname -r` of the guest kernel.
        kernel_release: String,
        agent_version: String,
    },
    /// The container's main process, as the guest numbers it.
    Started { pid: i32 },
    Exec(ExecResult),
    /// The request failed; nothing was changed.
    Error { message: String },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    #[serde(with = "b64")]
    pub stdout: Vec<u8>,
    #[serde(with = "b64")]
    pub stderr: Vec<u8>,
    /// The exit code, 128 + signal when killed by one.
    pub exit_code: i32,
    /// The timeout ran out and the command was killed.
    #[serde(default)]
    pub timed_out: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What the guest sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GuestMessage {
    Reply { id: u64, response: Response },
    /// Bytes a container wrote, in order per container and stream.
    Output {
        id: String,
        stream: Stream,
        #[serde(with = "b64")]
        data: Vec<u8>,
    },
    /// A container's main process ended (sent after its last output).
    Exited {
        id: String,
        /// With a normal exit.
        code: Option<i32>,
        /// With a death by signal.
        signal: Option<i32>,
        /// The kernel's OOM killer killed a process of its cgroup (`memory.events`).
        #[serde(default)]
        oom_killed: bool,
    },
}

/// Write one frame.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), Error> {
    let body = serde_json::to_vec(msg)?;
    let len = u32::try_from(body.len()).ok().filter(|l| *l <= MAX_FRAME).ok_or(Error::TooLarge(body.len() as u64))?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Read one frame; `None` when the stream ends cleanly between frames.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<Option<T>, Error> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(Error::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(head);
    if len > MAX_FRAME {
        return Err(Error::TooLarge(len.into()));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).map_err(|e| if e.kind() == io::ErrorKind::UnexpectedEof { Error::Truncated } else { Error::Io(e) })?;
    Ok(Some(serde_json::from_slice(&body)?))
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: T) {
        let mut buf = Vec::new();
        write_frame(&mut buf, &msg).expect("write");
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        assert_eq!(len, buf.len() - 4);
        let mut r = &buf[..];
        let back: T = read_frame(&mut r).expect("read").expect("a frame");
        assert_eq!(back, msg);
        assert!(r.is_empty());
    }

    #[test]
    fn every_message_survives_a_round_trip() {
        let spec = ContainerSpec {
            rootfs: "/run/strata/shared/c1/rootfs".into(),
            argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["PATH=/bin".into()],
            cwd: Some("/tmp".into()),
            uid: 1000,
            gid: 1000,
            additional_gids: vec![10, 20],
            hostname: Some("pod".into()),
            mounts: vec![BindMount { source: "/run/strata/shared/hosts".into(), destination: "/etc/hosts".into(), readonly: true }],
            resources: Resources { memory_max_bytes: Some(64 << 20), cpu_quota_us: Some(50_000), cpu_period_us: Some(100_000), cpu_shares: Some(512), pids_max: Some(100) },
            stdin: true,
            tty: true,
        };
        for request in [
            Request::Hello,
            Request::Network(NetworkConfig { interface: None, address: "10.88.0.5/16".into(), gateway: Some("10.88.0.1".into()), hostname: Some("p".into()) }),
            Request::Create { id: "c1".into(), spec },
            Request::Volume { name: "cache".into(), size_bytes: Some(8 << 20), sub_path: Some("a/b".into()) },
            Request::Start { id: "c1".into() },
            Request::Signal { id: "c1".into(), signal: 15 },
            Request::Exec(ExecRequest { id: "c1".into(), argv: vec!["true".into()], env: None, timeout_ms: Some(500) }),
            Request::Remove { id: "c1".into() },
            Request::ExecStream {
                stream: "x1".into(),
                exec: ExecRequest { id: "c1".into(), argv: vec!["sh".into()], env: None, timeout_ms: None },
                tty: Some((24, 80)),
                stdin: true,
            },
            Request::Connect { stream: "x2".into(), port: 8080 },
            Request::Input { stream: "x1".into(), data: b"ls\n\x04\xff".to_vec() },
            Request::CloseInput { stream: "x1".into() },
            Request::Resize { stream: "x1".into(), rows: 33, cols: 99 },
            Request::Cancel { stream: "x1".into() },
            Request::PowerOff,
        ] {
            round_trip(HostMessage { id: 7, request });
        }
        for response in [
            Response::Ok,
            Response::Hello { kernel_release: "6.1.0-57-amd64".into(), agent_version: "0.1.0".into() },
            Response::Started { pid: 42 },
            Response::Exec(ExecResult { stdout: b"out\0\xff".to_vec(), stderr: b"err".to_vec(), exit_code: 3, timed_out: false }),
            Response::Error { message: "no such container".into() },
        ] {
            round_trip(GuestMessage::Reply { id: u64::MAX, response });
        }
        round_trip(GuestMessage::Output { id: "c1".into(), stream: Stream::Stderr, data: (0..=255u8).collect() });
        round_trip(GuestMessage::Exited { id: "c1".into(), code: None, signal: Some(9), oom_killed: true });
    }

    #[test]
    fn the_wire_format_is_length_prefixed_json_with_base64_output() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &GuestMessage::Output { id: "c".into(), stream: Stream::Stdout, data: b"hi\n".to_vec() }).expect("write");
        assert_eq!(&buf[4..], br#"{"kind":"output","id":"c","stream":"stdout","data":"aGkK"}"#);
        let mut buf = Vec::new();
        write_frame(&mut buf, &HostMessage { id: 1, request: Request::Start { id: "c".into() } }).expect("write");
        assert_eq!(&buf[..4], &[0, 0, 0, buf.len() as u8 - 4]);
        assert_eq!(&buf[4..], br#"{"id":1,"request":{"op":"start","id":"c"}}"#);
    }

    #[test]
    fn several_frames_in_one_stream_and_a_clean_end() {
        let mut buf = Vec::new();
        for i in 0..3 {
            write_frame(&mut buf, &HostMessage { id: i, request: Request::Hello }).expect("write");
        }
        let mut r = &buf[..];
        for i in 0..3 {
            let m: HostMessage = read_frame(&mut r).expect("read").expect("frame");
            assert_eq!(m.id, i);
        }
        assert!(read_frame::<_, HostMessage>(&mut r).expect("clean end").is_none());
    }

    #[test]
    fn broken_streams_are_errors_not_messages() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &HostMessage { id: 1, request: Request::Hello }).expect("write");
        // Cut inside the header, and inside the body.
        assert!(matches!(read_frame::<_, HostMessage>(&mut &buf[..2]), Err(Error::Truncated)));
        assert!(matches!(read_frame::<_, HostMessage>(&mut &buf[..buf.len() - 1]), Err(Error::Truncated)));
        // A length over the limit is refused before anything is allocated or read.
        let huge = (MAX_FRAME + 1).to_be_bytes();
        assert!(matches!(read_frame::<_, HostMessage>(&mut &huge[..]), Err(Error::TooLarge(n)) if n == u64::from(MAX_FRAME) + 1));
        // Not JSON, JSON of the wrong shape, an unknown op, bad base64.
        for body in [&b"\xff\xfe"[..], br#"{"id":1}"#, br#"{"id":1,"request":{"op":"format_disk"}}"#] {
            let mut f = (body.len() as u32).to_be_bytes().to_vec();
            f.extend_from_slice(body);
            assert!(matches!(read_frame::<_, HostMessage>(&mut &f[..]), Err(Error::Json(_))), "{}", String::from_utf8_lossy(body));
        }
        let body = br#"{"kind":"output","id":"c","stream":"stdout","data":"!!"}"#;
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        assert!(matches!(read_frame::<_, GuestMessage>(&mut &f[..]), Err(Error::Json(_))));
    }

    #[test]
    fn an_oversized_message_is_not_written() {
        let msg = GuestMessage::Output { id: "c".into(), stream: Stream::Stdout, data: vec![0; MAX_FRAME as usize] };
        let mut buf = Vec::new();
        assert!(matches!(write_frame(&mut buf, &msg), Err(Error::TooLarge(_))));
        assert!(buf.is_empty());
    }
}
