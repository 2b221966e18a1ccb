//! The host's side of the guest agent protocol ([`strata_guest::protocol`]): a client over a
//! unix socket (QEMU's chardev socket of the agent's virtio-serial port, or the pod supervisor's
//! control socket, which speaks the same protocol). Requests are answered by id, from any
//! number of threads at once; what the guest sends unasked (output, exits) goes to an optional
//! channel.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub use strata_guest::protocol;
use strata_guest::protocol::{GuestMessage, HostMessage, Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no guest agent at {path} after {waited:?}")]
    Connect { path: String, waited: Duration, source: std::io::Error },
    #[error("the guest agent did not answer {what} within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    #[error("the connection to the guest agent closed")]
    Closed,
    #[error("guest agent: {0}")]
    Agent(String),
    #[error("guest agent channel")]
    Protocol(#[from] protocol::Error),
    #[error("the guest agent answered {0} with something else")]
    Unexpected(String),
}

type Pending = Arc<Mutex<Option<HashMap<u64, mpsc::Sender<Response>>>>>;

pub struct AgentClient {
    writer: Mutex<UnixStream>,
    next: AtomicU64,
    pending: Pending,
}

impl AgentClient {
    /// Connect to the socket at `path`, retrying until `timeout` (QEMU creates it as it starts).
    /// Unasked messages go to `events`, if given.
    pub fn connect(path: &Path, timeout: Duration, events: Option<mpsc::Sender<GuestMessage>>) -> Result<AgentClient, Error> {
        let start = Instant::now();
        let stream = loop {
            match crate::connect_unix(path) {
                Ok(s) => break s,
                Err(e) if start.elapsed() >= timeout => {
                    return Err(Error::Connect { path: path.display().to_string(), waited: start.elapsed(), source: e });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        AgentClient::over(stream, events)
    }

    /// A client over a connected stream.
    pub fn over(stream: UnixStream, events: Option<mpsc::Sender<GuestMessage>>) -> Result<AgentClient, Error> {
        let mut reader = stream.try_clone().map_err(protocol::Error::Io)?;
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let p = pending.clone();
        std::thread::Builder::new()
            .name("guest-agent-reader".into())
            .spawn(move || {
                loop {
                    match protocol::read_frame::<_, GuestMessage>(&mut reader) {
                        Ok(Some(GuestMessage::Reply { id, response })) => {
                            let tx = p.lock().unwrap_or_else(|e| e.into_inner()).as_mut().and_then(|m| m.remove(&id));
                            if let Some(tx) = tx {
                                let _ = tx.send(response);
                            }
                        }
                        Ok(Some(other)) => {
                            if let Some(ev) = &events {
                                let _ = ev.send(other);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "guest agent channel broke");
                            break;
                        }
                    }
                }
                // Every caller still waiting learns the channel is gone.
                p.lock().unwrap_or_else(|e| e.into_inner()).take();
            })
            .map_err(protocol::Error::Io)?;
        Ok(AgentClient { writer: Mutex::new(stream), next: AtomicU64::new(1), pending })
    }

    /// Send `request` and wait up to `timeout` for its answer.
    pub fn call(&self, request: Request, timeout: Duration) -> Result<Response, Error> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let what = format!("{request:?}").chars().take(80).collect::<String>();
        let (tx, rx) = mpsc::channel();
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).as_mut().ok_or(Error::Closed)?.insert(id, tx);
        let sent = protocol::write_frame(&mut *self.writer.lock().unwrap_or_else(|e| e.into_inner()), &HostMessage { id, request });
        if let Err(e) = sent {
            self.forget(id);
            return Err(e.into());
        }
        match rx.recv_timeout(timeout) {
            Ok(Response::Error { message }) => Err(Error::Agent(message)),
            Ok(r) => Ok(r),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.forget(id);
                Err(Error::Timeout { what, timeout })
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::Closed),
        }
    }

    /// [`call`](Self::call) for requests answered by a plain `Ok`.
    pub fn call_ok(&self, request: Request, timeout: Duration) -> Result<(), Error> {
        let what = format!("{request:?}").chars().take(80).collect::<String>();
        match self.call(request, timeout)? {
            Response::Ok => Ok(()),
            _ => Err(Error::Unexpected(what)),
        }
    }

    fn forget(&self, id: u64) {
        if let Some(m) = self.pending.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            m.remove(&id);
        }
    }
}

impl Drop for AgentClient {
    fn drop(&mut self) {
        let _ = self.writer.lock().unwrap_or_else(|e| e.into_inner()).shutdown(std::net::Shutdown::Both);
    }
}
