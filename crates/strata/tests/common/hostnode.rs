//! A node whose "containers" are processes on this host (named as such: a simulated node), for
//! the stream protocols end to end before pods run: the agent's real stream server
//! (`strata_agent::streams`) with this [`PodStreams`] behind it, reached through the real API
//! server by the real kubectl. Pod `p` has containers `c` and `d`; exec runs the command on the
//! host (with a pseudo-terminal for `tty`); attach joins `c`'s main process (`sh` echoing
//! `main:LINE` for each input line); logs are records the test appends; port-forward connects
//! to 127.0.0.1.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_agent::streams::{self, AttachInput, LogRequest, LogStream, OutputChunk, PodError, PodStreams, Process, Target};

pub const POD: &str = "p";
pub const CONTAINERS: [&str; 2] = ["c", "d"];

/// Log records of container `c`: (RFC 3339 time, line).
#[derive(Default)]
pub struct Logs {
    pub current: Vec<(String, String)>,
    pub previous: Vec<(String, String)>,
}

pub struct HostNode {
    pub logs: Mutex<Logs>,
    main: Mutex<Option<Main>>,
}

/// `c`'s main process: its stdin and the attached clients' output channels.
struct Main {
    stdin: Arc<Mutex<std::process::ChildStdin>>,
    subscribers: Arc<Mutex<Vec<std::sync::mpsc::Sender<OutputChunk>>>>,
    _child: std::process::Child,
}

impl HostNode {
    pub fn new() -> Arc<HostNode> {
        Arc::new(HostNode { logs: Mutex::new(Logs::default()), main: Mutex::new(None) })
    }

    /// Serve it as a node agent would (TLS for `names`, signed by the cluster CA in `pki`);
    /// returns the address. The server runs on its own runtime thread until the test ends.
    pub fn serve(self: &Arc<Self>, pki: &std::path::Path) -> SocketAddr {
        let pki = strata_apiserver::pki::Pki { dir: pki.to_path_buf() };
        let (cert, key) = strata_apiserver::pki::serving_identity(&pki, "system:node:host", &["127.0.0.1".to_string()], time::Duration::days(1)).expect("serving cert");
        let ca = std::fs::read_to_string(pki.ca_cert()).expect("ca");
        let cfg = streams::Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            serving_cert_pem: cert,
            serving_key_pem: key,
            client_ca_pem: ca,
            allowed_users: vec![streams::API_SERVER_USER.to_string()],
        };
        let me: Arc<dyn PodStreams> = self.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(async move {
                let server = streams::bind(cfg, me).await.expect("bind");
                tx.send(server.local_addr()).expect("addr");
                server.run().await;
            });
        });
        rx.recv_timeout(Duration::from_secs(30)).expect("stream server up")
    }

    fn container(t: &Target) -> Result<(), PodError> {
        if t.pod != POD {
            return Err(PodError::NotFound("pod does not exist".into()));
        }
        if !CONTAINERS.contains(&t.container.as_str()) {
            return Err(PodError::NotFound(format!("container not found ({:?})", t.container)));
        }
        Ok(())
    }

    fn main_process(&self) -> Result<(Arc<Mutex<std::process::ChildStdin>>, std::sync::mpsc::Receiver<OutputChunk>), PodError> {
        let mut g = self.main.lock().expect("lock");
        if g.is_none() {
            let mut child = Command::new("sh")
                .args(["-c", "while read l; do echo \"main:$l\"; done"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| PodError::Internal(e.to_string()))?;
            let stdin = Arc::new(Mutex::new(child.stdin.take().expect("stdin")));
            let mut out = child.stdout.take().expect("stdout");
            let subscribers: Arc<Mutex<Vec<std::sync::mpsc::Sender<OutputChunk>>>> = Arc::default();
            let subs = subscribers.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let chunk = OutputChunk { stream: LogStream::Stdout, data: buf[..n].to_vec() };
                    subs.lock().expect("lock").retain(|s| s.send(chunk.clone()).is_ok());
                }
            });
            *g = Some(Main { stdin, subscribers, _child: child });
        }
        let m = g.as_ref().expect("main");
        let (tx, rx) = std::sync::mpsc::channel();
        m.subscribers.lock().expect("lock").push(tx);
        Ok((m.stdin.clone(), rx))
    }
}

impl Drop for HostNode {
    fn drop(&mut self) {
        if let Ok(mut g) = self.main.lock() {
            if let Some(mut m) = g.take() {
                let _ = m._child.kill();
                let _ = m._child.wait();
            }
        }
    }
}

/// Input to a host process: a pipe, or a terminal's master side.
struct HostInput {
    pipe: Option<std::process::ChildStdin>,
    tty: Option<Arc<OwnedFd>>,
}

impl AttachInput for HostInput {
    fn input(&mut self, data: &[u8]) -> std::io::Result<()> {
        if let Some(fd) = &self.tty {
            return std::fs::File::from(fd.try_clone()?).write_all(data);
        }
        match &mut self.pipe {
            Some(p) => p.write_all(data),
            None => Ok(()),
        }
    }
    fn resize(&mut self, rows: u16, cols: u16) -> std::io::Result<()> {
        if let Some(fd) = &self.tty {
            let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
            // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer; the fd is open.
            unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        }
        Ok(())
    }
    fn close_input(&mut self) -> std::io::Result<()> {
        if self.tty.is_some() {
            // The terminal's end-of-file character.
            return self.input(&[4]);
        }
        self.pipe = None;
        Ok(())
    }
}

/// Input of an attached client: `c`'s main stdin (never closed by one client).
struct MainInput(Arc<Mutex<std::process::ChildStdin>>);

impl AttachInput for MainInput {
    fn input(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.lock().map_err(|_| std::io::Error::other("lock"))?.write_all(data)
    }
    fn resize(&mut self, _: u16, _: u16) -> std::io::Result<()> {
        Ok(())
    }
    fn close_input(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn reader_thread(mut r: impl Read + Send + 'static, stream: LogStream, tx: std::sync::mpsc::Sender<OutputChunk>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(OutputChunk { stream, data: buf[..n].to_vec() }).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

impl PodStreams for HostNode {
    fn check_pod(&self, _namespace: &str, pod: &str) -> Result<(), PodError> {
        if pod == POD {
            Ok(())
        } else {
            Err(PodError::NotFound("pod does not exist".into()))
        }
    }

    fn logs(&self, t: &Target, req: &LogRequest, out: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), PodError> {
        Self::container(t)?;
        let pick = |l: &Logs| if req.previous { l.previous.clone() } else { l.current.clone() };
        let keep = |time: &str| req.since.is_none_or(|s| chrono::DateTime::parse_from_rfc3339(time).is_ok_and(|t| t >= s));
        let records: Vec<(String, String)> = pick(&self.logs.lock().expect("lock")).into_iter().filter(|(t, _)| keep(t)).collect();
        let skip = req.tail_lines.map_or(0, |n| records.len().saturating_sub(n as usize));
        let mut sent = records.len();
        for (time, line) in &records[skip..] {
            if !out(&streams::format_line(time, line.as_bytes(), false, req.timestamps)) {
                return Ok(());
            }
        }
        if !req.follow || req.previous {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let now: Vec<(String, String)> = pick(&self.logs.lock().expect("lock"));
            for (time, line) in now.iter().skip(sent) {
                if !out(&streams::format_line(time, line.as_bytes(), false, req.timestamps)) {
                    return Ok(());
                }
            }
            sent = now.len();
            if !out(&[]) {
                return Ok(());
            }
        }
        Ok(())
    }

    fn exec(&self, t: &Target, command: &[String], stdin: bool, tty: bool) -> Result<Process, PodError> {
        Self::container(t)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..]);
        let (child, input) = if tty {
            let pty = nix::pty::openpty(None, None).map_err(|e| PodError::Internal(e.to_string()))?;
            let slave = pty.slave;
            cmd.stdin(Stdio::from(slave.try_clone().map_err(|e| PodError::Internal(e.to_string()))?))
                .stdout(Stdio::from(slave.try_clone().map_err(|e| PodError::Internal(e.to_string()))?))
                .stderr(Stdio::from(slave));
            use std::os::unix::process::CommandExt;
            // SAFETY: setsid and ioctl are async-signal-safe; fd 0 is the terminal.
            unsafe {
                cmd.pre_exec(|| {
                    libc::setsid();
                    libc::ioctl(0, libc::TIOCSCTTY, 0);
                    Ok(())
                });
            }
            let child = cmd.spawn().map_err(|e| PodError::Internal(format!("{}: {e}", command[0])))?;
            drop(cmd);
            let master = Arc::new(pty.master);
            // SAFETY: dup gives a new descriptor this File owns.
            let reader = unsafe { std::fs::File::from_raw_fd(libc::dup(master.as_raw_fd())) };
            reader_thread(reader, LogStream::Stdout, tx);
            (child, Some(Box::new(HostInput { pipe: None, tty: Some(master) }) as Box<dyn AttachInput>))
        } else {
            cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut child = cmd.spawn().map_err(|e| PodError::Internal(format!("{}: {e}", command[0])))?;
            reader_thread(child.stdout.take().expect("stdout"), LogStream::Stdout, tx.clone());
            reader_thread(child.stderr.take().expect("stderr"), LogStream::Stderr, tx);
            let input = child.stdin.take().map(|p| Box::new(HostInput { pipe: Some(p), tty: None }) as Box<dyn AttachInput>);
            (child, input)
        };
        let child = Arc::new(Mutex::new(child));
        Ok(Process {
            tty,
            input,
            output: Box::new(rx.into_iter().map(Ok)),
            wait: Some(Box::new(move || {
                use std::os::unix::process::ExitStatusExt;
                let st = child.lock().map_err(|_| PodError::Internal("lock".into()))?.wait().map_err(|e| PodError::Internal(e.to_string()))?;
                Ok(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)))
            })),
        })
    }

    fn attach(&self, t: &Target, stdin: bool, _tty: bool) -> Result<Process, PodError> {
        Self::container(t)?;
        let (input, rx) = self.main_process()?;
        Ok(Process {
            tty: false,
            input: stdin.then(|| Box::new(MainInput(input)) as Box<dyn AttachInput>),
            output: Box::new(rx.into_iter().map(Ok)),
            wait: None,
        })
    }

    fn port_forward(&self, _namespace: &str, pod: &str, port: u16) -> Result<std::net::TcpStream, PodError> {
        if pod != POD {
            return Err(PodError::NotFound("pod does not exist".into()));
        }
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| PodError::Internal(e.to_string()))
    }
}
