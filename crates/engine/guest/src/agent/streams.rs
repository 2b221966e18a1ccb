//! Streams: a streaming exec (`kubectl exec -i -t`: stdin, a terminal, resizes, the exit code)
//! and a port-forward connection to the guest's loopback. Each is named by the host; output
//! goes out as `Output` messages with the stream's name, the end as one `Exited` after the last
//! output. Input arrives as `Input` requests handed to a writer thread per stream, which answers
//! each once written: the request loop never blocks on a process that does not read, and the
//! host never has more than one chunk per stream in flight.

use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::container::{self, Containers, Stdio};
use super::reaper::Exit;
use super::Outbox;
use crate::protocol::{ExecRequest, GuestMessage, Response, Stream};

enum In {
    Data { reply: u64, data: Vec<u8> },
    Close,
}

struct Entry {
    input: Mutex<Option<mpsc::Sender<In>>>,
    pid: Option<i32>,
    master: Option<OwnedFd>,
    conn: Option<TcpStream>,
}

#[derive(Clone)]
pub(crate) struct Streams {
    table: Arc<Mutex<HashMap<String, Arc<Entry>>>>,
    containers: Containers,
    tx: Outbox,
}

impl Streams {
    pub fn new(containers: Containers, tx: Outbox) -> Streams {
        Streams { table: Arc::new(Mutex::new(HashMap::new())), containers, tx }
    }

    fn get(&self, stream: &str) -> Result<Arc<Entry>, String> {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).get(stream).cloned().ok_or_else(|| format!("no stream {stream:?}"))
    }

    fn check_new(&self, stream: &str) -> Result<(), String> {
        if stream.is_empty() || stream.len() > 128 {
            return Err(format!("invalid stream name {stream:?}"));
        }
        if self.table.lock().unwrap_or_else(|e| e.into_inner()).contains_key(stream) {
            return Err(format!("stream {stream:?} already exists"));
        }
        Ok(())
    }

    /// Start `req` with streamed stdio; its pid.
    pub fn exec(&self, stream: &str, req: &ExecRequest, tty: Option<(u16, u16)>, stdin: bool) -> Result<i32, String> {
        self.check_new(stream)?;
        let stdio = match tty {
            Some((rows, cols)) => Stdio::Tty { rows, cols },
            None => Stdio::Pipes { stdin },
        };
        let child = self.containers.exec_child(req, stdio)?;
        let pid = child.pid;
        let dup = |f: &OwnedFd| f.try_clone().map_err(|e| format!("dup: {e}"));
        let (input, out, err) = match &child.master {
            Some(m) => (Some(dup(m)?), Some(dup(m)?), None),
            None => (child.stdin, child.stdout, child.stderr),
        };
        let input = input.map(|fd| self.writer(stream, std::fs::File::from(fd), |_| {}));
        let entry = Arc::new(Entry { input: Mutex::new(input), pid: Some(pid), master: child.master, conn: None });
        self.table.lock().unwrap_or_else(|e| e.into_inner()).insert(stream.to_string(), entry);
        // Each reader with a copy of its pipe's read end, to see whether it has output left.
        let readers: Vec<(OwnedFd, std::thread::JoinHandle<()>)> = [(out, Stream::Stdout), (err, Stream::Stderr)]
            .into_iter()
            .filter_map(|(fd, kind)| {
                let fd = fd?;
                let watched = fd.try_clone().ok()?;
                container::forward(Some(fd), stream, kind, &self.tx).map(|h| (watched, h))
            })
            .collect();
        let (me, name) = (self.clone(), stream.to_string());
        let reaped = std::thread::Builder::new().name("exec-stream".into()).spawn(move || {
            let exit = me.containers.reaper().wait(pid, None).unwrap_or(Exit::Signal(libc::SIGKILL));
            container::wait_for_output(&readers.iter().map(|(fd, h)| (fd, h)).collect::<Vec<_>>());
            me.table.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
            let (code, signal) = match exit {
                Exit::Code(c) => (Some(c), None),
                Exit::Signal(s) => (None, Some(s)),
            };
            let _ = me.tx.send(GuestMessage::Exited { id: name, code, signal, oom_killed: false });
        });
        if let Err(e) = reaped {
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            self.table.lock().unwrap_or_else(|e| e.into_inner()).remove(stream);
            return Err(format!("exec thread: {e}"));
        }
        Ok(pid)
    }

    /// Take the input of container `id`'s main process (started with stdin or a terminal), so
    /// `Input`, `CloseInput` and `Resize` named by the container's id reach it. `Cancel` does
    /// not kill a container; the entry goes with the container ([`Streams::forget`]).
    pub fn adopt_main(&self, id: &str, main: container::MainInput) -> Result<(), String> {
        if main.input.is_none() && main.master.is_none() {
            return Ok(());
        }
        self.check_new(id)?;
        let input = main.input.map(|fd| self.writer(id, std::fs::File::from(fd), |_| {}));
        let entry = Arc::new(Entry { input: Mutex::new(input), pid: None, master: main.master, conn: None });
        self.table.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string(), entry);
        Ok(())
    }

    /// Drop what [`Streams::adopt_main`] kept of a removed container (closing its input).
    pub fn forget(&self, id: &str) {
        if let Some(e) = self.table.lock().unwrap_or_else(|e| e.into_inner()).remove(id) {
            if let Some(tx) = e.input.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = tx.send(In::Close);
            }
        }
    }

    /// Connect `stream` to `127.0.0.1:port`.
    pub fn connect(&self, stream: &str, port: u16) -> Result<(), String> {
        self.check_new(stream)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let conn = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| format!("dial tcp {addr}: {e}"))?;
        let (w, r) = match (conn.try_clone(), conn.try_clone()) {
            (Ok(w), Ok(r)) => (w, r),
            (Err(e), _) | (_, Err(e)) => return Err(format!("dup: {e}")),
        };
        let input = self.writer(stream, w, |c: &mut TcpStream| {
            let _ = c.shutdown(Shutdown::Write);
        });
        let entry = Arc::new(Entry { input: Mutex::new(Some(input)), pid: None, master: None, conn: Some(conn) });
        self.table.lock().unwrap_or_else(|e| e.into_inner()).insert(stream.to_string(), entry);
        let (me, name) = (self.clone(), stream.to_string());
        let reader = std::thread::Builder::new().name("conn".into()).spawn(move || {
            let mut r = r;
            let mut buf = vec![0u8; 32768];
            loop {
                match std::io::Read::read(&mut r, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if me.tx.send(GuestMessage::Output { id: name.clone(), stream: Stream::Stdout, data: buf[..n].to_vec() }).is_err() {
                            break;
                        }
                    }
                }
            }
            me.table.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
            let _ = me.tx.send(GuestMessage::Exited { id: name, code: Some(0), signal: None, oom_killed: false });
        });
        if let Err(e) = reader {
            self.table.lock().unwrap_or_else(|e| e.into_inner()).remove(stream);
            return Err(format!("connection thread: {e}"));
        }
        Ok(())
    }

    /// A thread writing a stream's input to `w` (answering each chunk), `close` at its end.
    fn writer<W: Write + Send + 'static>(&self, stream: &str, mut w: W, close: impl FnOnce(&mut W) + Send + 'static) -> mpsc::Sender<In> {
        let (tx_in, rx) = mpsc::channel::<In>();
        let (tx, name) = (self.tx.clone(), stream.to_string());
        let spawned = std::thread::Builder::new().name("stream-input".into()).spawn(move || {
            for i in rx {
                match i {
                    In::Data { reply, data } => {
                        let response = match w.write_all(&data).and_then(|()| w.flush()) {
                            Ok(()) => Response::Ok,
                            Err(e) => Response::Error { message: format!("input of {name}: {e}") },
                        };
                        let _ = tx.send(GuestMessage::Reply { id: reply, response });
                    }
                    In::Close => break,
                }
            }
            close(&mut w);
        });
        if let Err(e) = spawned {
            super::note!("input thread of {stream}: {e}");
        }
        tx_in
    }

    /// Queue `data` for `stream`'s input; the writer answers request `reply`.
    pub fn input(&self, reply: u64, stream: &str, data: Vec<u8>) -> Result<(), String> {
        let entry = self.get(stream)?;
        let input = entry.input.lock().unwrap_or_else(|e| e.into_inner());
        let tx = input.as_ref().ok_or_else(|| format!("the input of stream {stream:?} is closed"))?;
        tx.send(In::Data { reply, data }).map_err(|_| format!("the input of stream {stream:?} is closed"))
    }

    pub fn close_input(&self, stream: &str) -> Result<(), String> {
        let entry = self.get(stream)?;
        if let Some(tx) = entry.input.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(In::Close);
        }
        Ok(())
    }

    pub fn resize(&self, stream: &str, rows: u16, cols: u16) -> Result<(), String> {
        let entry = self.get(stream)?;
        let master = entry.master.as_ref().ok_or_else(|| format!("stream {stream:?} has no terminal"))?;
        container::resize(master, rows, cols)
    }

    pub fn cancel(&self, stream: &str) -> Result<(), String> {
        let entry = match self.get(stream) {
            Ok(e) => e,
            // Already ended.
            Err(_) => return Ok(()),
        };
        Self::end(&entry);
        Ok(())
    }

    fn end(entry: &Entry) {
        if let Some(pid) = entry.pid {
            // SAFETY: kill(2) of our own child (still in the table: not reaped yet).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Some(c) = &entry.conn {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn cancel_all(&self) {
        let entries: Vec<_> = self.table.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for e in &entries {
            Self::end(e);
        }
    }
}
