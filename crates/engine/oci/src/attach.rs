//! A container supervisor's attach socket: how clients reach a running container's main
//! process.
//!
//! One unix socket per container; each connection carries frames `[type u8][len u32 LE]
//! [payload]`. Clients send input (to the container's stdin pipe or terminal), terminal
//! resizes and end of input, and may ask to *follow* the output: from then on the supervisor
//! sends every chunk it reads from the container's stdout and stderr (nothing already logged is
//! replayed), and closes the connection once the container has exited and its output is
//! drained. The supervisor acknowledges a follow request before sending any output, so input a
//! client sends after [`AttachClient::follow`] returns cannot produce output it misses.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use strata_supervise::logs::Stream;

// Client to supervisor.
const INPUT: u8 = 0;
const RESIZE: u8 = 1;
const CLOSE: u8 = 2;
const FOLLOW: u8 = 3;
// Supervisor to client.
const FOLLOWING: u8 = 4;
const STDOUT: u8 = 5;
const STDERR: u8 = 6;

/// Largest payload accepted (output chunks are at most one pipe read, 32 KiB).
const MAX_PAYLOAD: usize = 1 << 20;
/// Output chunks queued for one follower. A follower that falls this far behind is dropped
/// rather than stalling the container, whose output pipe would otherwise fill up.
const FOLLOWER_QUEUE: usize = 1024;
/// How long one write to a follower may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(5 + payload.len());
    buf.push(kind);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(payload);
    buf
}

/// The next frame, or `None` at the end of the connection.
fn read_frame(r: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("attach frame of {len} bytes is too large")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((head[0], payload)))
}

/// The clients following a container's output.
#[derive(Default)]
pub struct Followers(Mutex<FollowerSet>);

#[derive(Default)]
struct FollowerSet {
    queues: Vec<SyncSender<Vec<u8>>>,
    writers: Vec<JoinHandle<()>>,
    /// The output has ended: no new followers.
    closed: bool,
}

impl Followers {
    /// Send output to `conn` from now on (after an acknowledgement); false once the output has
    /// ended.
    fn add(&self, mut conn: UnixStream) -> bool {
        let Ok(mut set) = self.0.lock() else { return false };
        if set.closed {
            return false;
        }
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(FOLLOWER_QUEUE);
        // Queued first, so it precedes any output.
        if tx.try_send(encode(FOLLOWING, &[])).is_err() {
            return false;
        }
        let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
        set.writers.push(std::thread::spawn(move || {
            for frame in rx {
                if conn.write_all(&frame).is_err() {
                    break;
                }
            }
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }));
        set.queues.push(tx);
        true
    }

    /// Queue a chunk of output for every follower, dropping those that do not keep up.
    pub fn publish(&self, stream: Stream, data: &[u8]) {
        let Ok(mut set) = self.0.lock() else { return };
        if set.queues.is_empty() {
            return;
        }
        let frame = encode(if stream == Stream::Stdout { STDOUT } else { STDERR }, data);
        set.queues.retain(|q| match q.try_send(frame.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!("dropping an attached client that does not keep up with the output");
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }

    /// The output has ended: every follower gets what is queued for it, then its connection is
    /// closed. Returns when all of them are done.
    pub fn close(&self) {
        let writers = match self.0.lock() {
            Ok(mut set) => {
                set.closed = true;
                set.queues.clear();
                std::mem::take(&mut set.writers)
            }
            Err(_) => return,
        };
        for w in writers {
            let _ = w.join();
        }
    }
}

/// A container output pipe read through to the log that also feeds the followers.
pub struct Tee<R> {
    pub inner: R,
    pub stream: Stream,
    pub followers: Arc<Followers>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.followers.publish(self.stream, &buf[..n]);
        }
        Ok(n)
    }
}

/// Serve the attach socket on threads of its own: input to `input` (the container's stdin pipe
/// or terminal master), resizes to the terminal `master`, output to `followers`.
pub fn serve(listener: UnixListener, input: Option<File>, master: Option<File>, tty: bool, followers: Arc<Followers>) {
    let input = Arc::new(Mutex::new(input));
    let master = master.map(Arc::new);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let input = input.clone();
            let master = master.clone();
            let followers = followers.clone();
            std::thread::spawn(move || serve_client(conn, &input, master.as_deref(), tty, &followers));
        }
    });
}

fn serve_client(mut conn: UnixStream, input: &Mutex<Option<File>>, master: Option<&File>, tty: bool, followers: &Followers) {
    while let Ok(Some((kind, payload))) = read_frame(&mut conn) {
        let Ok(mut slot) = input.lock() else { return };
        match kind {
            INPUT => {
                if let Some(f) = slot.as_mut() {
                    let _ = f.write_all(&payload);
                }
            }
            RESIZE if payload.len() == 4 => {
                if let Some(m) = master {
                    let ws = libc::winsize {
                        ws_row: u16::from_le_bytes([payload[0], payload[1]]),
                        ws_col: u16::from_le_bytes([payload[2], payload[3]]),
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    // SAFETY: TIOCSWINSZ on a terminal master with a valid winsize.
                    unsafe { libc::ioctl(m.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
                }
            }
            CLOSE => {
                if tty {
                    // End of input on a terminal is the EOF character.
                    if let Some(f) = slot.as_mut() {
                        let _ = f.write_all(&[4]);
                    }
                } else {
                    *slot = None;
                }
            }
            FOLLOW => {
                let added = conn.try_clone().is_ok_and(|c| followers.add(c));
                if !added {
                    // The container has exited: the client sees the end of its output at once.
                    return;
                }
            }
            _ => {}
        }
    }
}

/// The client side of a container's attach socket.
pub struct AttachClient(UnixStream);

impl AttachClient {
    pub fn connect(path: &Path) -> io::Result<Self> {
        UnixStream::connect(path).map(Self)
    }

    fn send(&mut self, kind: u8, payload: &[u8]) -> io::Result<()> {
        self.0.write_all(&encode(kind, payload))
    }

    /// Bytes for the container's stdin (or terminal).
    pub fn input(&mut self, data: &[u8]) -> io::Result<()> {
        self.send(INPUT, data)
    }

    /// The terminal's new size.
    pub fn resize(&mut self, rows: u16, cols: u16) -> io::Result<()> {
        let mut p = rows.to_le_bytes().to_vec();
        p.extend_from_slice(&cols.to_le_bytes());
        self.send(RESIZE, &p)
    }

    /// End of input.
    pub fn close_input(&mut self) -> io::Result<()> {
        self.send(CLOSE, &[])
    }

    /// Follow the container's output from now on. Returns once the supervisor has registered
    /// this connection, so output caused by input sent afterwards is not missed.
    pub fn follow(mut self) -> io::Result<Output> {
        self.send(FOLLOW, &[])?;
        match read_frame(&mut self.0)? {
            // `None`: the container has already exited; the output is empty.
            Some((FOLLOWING, _)) | None => Ok(Output(self.0)),
            Some((kind, _)) => Err(io::Error::new(io::ErrorKind::InvalidData, format!("unexpected attach frame {kind}"))),
        }
    }
}

/// A followed container's output: chunks as they were read, until the container has exited.
pub struct Output(UnixStream);

impl Iterator for Output {
    type Item = io::Result<(Stream, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match read_frame(&mut self.0) {
                Ok(None) => return None,
                Ok(Some((STDOUT, data))) => return Some(Ok((Stream::Stdout, data))),
                Ok(Some((STDERR, data))) => return Some(Ok((Stream::Stderr, data))),
                Ok(Some(_)) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The protocol end to end over a real socket: input reaches the pipe, followers get output
    /// published after their acknowledgement, and closing ends their stream after the queue.
    #[test]
    fn input_follow_and_close() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("attach");
        let listener = UnixListener::bind(&path).expect("bind");
        let (pipe_r, pipe_w) = nix::unistd::pipe().expect("pipe");
        let followers = Arc::new(Followers::default());
        serve(listener, Some(File::from(pipe_w)), None, false, followers.clone());

        let mut output = AttachClient::connect(&path).expect("connect").follow().expect("follow");
        followers.publish(Stream::Stdout, b"out");
        followers.publish(Stream::Stderr, b"err");
        let mut client = AttachClient::connect(&path).expect("connect");
        client.input(b"typed").expect("input");
        client.close_input().expect("close");
        let mut typed = String::new();
        File::from(pipe_r).read_to_string(&mut typed).expect("read pipe");
        assert_eq!(typed, "typed", "input, then EOF once closed");

        followers.close();
        let chunks: Vec<_> = output.by_ref().map(|c| c.expect("chunk")).collect();
        assert_eq!(chunks, vec![(Stream::Stdout, b"out".to_vec()), (Stream::Stderr, b"err".to_vec())]);
        let late = AttachClient::connect(&path).expect("connect").follow().expect("follow after the end");
        assert_eq!(late.count(), 0, "nothing to follow once the output has ended");
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut frame = encode(INPUT, &[]);
        frame[1..5].copy_from_slice(&((MAX_PAYLOAD as u32) + 1).to_le_bytes());
        assert!(read_frame(&mut frame.as_slice()).is_err());
        assert_eq!(read_frame(&mut [].as_slice()).expect("eof"), None);
    }
}
