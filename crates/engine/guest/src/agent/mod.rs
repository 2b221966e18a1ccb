//! The guest side: `strata-guest` as PID 1 ([`main`]) and the request loop ([`serve`]), which
//! also runs on a plain host process over any byte stream (the crate's tests drive it over a
//! socket pair, as root, with real namespaces).
//!
//! Threads: the request loop (reads frames, answers the quick requests itself), one writer
//! (owns the output side; everything sent goes through its bounded queue, so a host that does
//! not read blocks the senders instead of growing memory), one reaper (`waitpid(-1)`: as PID 1
//! the agent inherits every orphan), and per container a monitor and two output readers; per
//! exec a thread; per stream (`streams.rs`) a waiter, its output readers and an input writer.

mod container;
mod init;
mod net;
mod reaper;
mod streams;

use std::io::{Read, Write};
use std::sync::mpsc::{sync_channel, SyncSender};

use crate::protocol::{self, GuestMessage, HostMessage, Request, Response};

pub use reaper::Reaper;

/// Write a line to the agent's stderr (the VM's console): PID 1 has no other log.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "strata-guest: {}", format_args!($($arg)*));
    }};
}
pub(crate) use note;

/// What the loop does on [`Request::PowerOff`] once it has answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnPowerOff {
    /// `sync` and power the machine off (PID 1 in a VM).
    PowerOff,
    /// Return from [`serve`] (tests).
    Return,
}

/// The entry of `strata-guest`: set the VM up when PID 1, find the host's port and serve it
/// until powered off. Returns an exit code (PID 1 returning means a kernel panic, which
/// `panic=-1` turns into a reboot that `-no-reboot` turns into QEMU's exit).
pub fn main() -> i32 {
    let pid1 = std::process::id() == 1;
    if pid1 {
        init::setup();
    }
    let port = match init::open_port() {
        Ok(p) => p,
        Err(e) => {
            note!("no host channel: {e}");
            return 1;
        }
    };
    let output = match port.try_clone() {
        Ok(f) => f,
        Err(e) => {
            note!("host channel: {e}");
            return 1;
        }
    };
    note!("serving on port {}", protocol::PORT_NAME);
    let on_power_off = if pid1 { OnPowerOff::PowerOff } else { OnPowerOff::Return };
    match serve(init::Port(port), output, on_power_off) {
        Ok(()) => 0,
        Err(e) => {
            note!("request loop ended: {e}");
            1
        }
    }
}

/// The writer's queue: messages, and flush markers (answered once everything before them is
/// written).
enum Out {
    Msg(GuestMessage),
    Flush(std::sync::mpsc::Sender<()>),
}

#[derive(Clone)]
pub(crate) struct Outbox(SyncSender<Out>);

impl Outbox {
    pub fn send(&self, msg: GuestMessage) -> Result<(), ()> {
        self.0.send(Out::Msg(msg)).map_err(drop)
    }

    /// Wait (at most `timeout`) until everything sent so far is written.
    fn flush(&self, timeout: std::time::Duration) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.0.send(Out::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(timeout);
        }
    }
}

/// Serve requests read from `input`, writing replies and events to `output`, until the input
/// ends (`Ok`) or breaks. Containers still running when it returns are killed.
pub fn serve<R: Read, W: Write + Send + 'static>(mut input: R, mut output: W, on_power_off: OnPowerOff) -> Result<(), protocol::Error> {
    let (tx, rx) = sync_channel::<Out>(256);
    let tx = Outbox(tx);
    std::thread::Builder::new().name("writer".into()).spawn(move || {
        for out in rx {
            match out {
                Out::Msg(msg) => {
                    if let Err(e) = protocol::write_frame(&mut output, &msg) {
                        note!("writing to the host: {e}");
                        return;
                    }
                }
                Out::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    })?;
    let reaper = Reaper::start()?;
    let containers = container::Containers::new(reaper, tx.clone());
    let streams = streams::Streams::new(containers.clone(), tx.clone());
    let result = loop {
        let msg: HostMessage = match protocol::read_frame(&mut input) {
            Ok(Some(m)) => m,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        let id = msg.id;
        let reply = |response: Response| {
            let _ = tx.send(GuestMessage::Reply { id, response });
        };
        match msg.request {
            Request::Hello => {
                let release = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
                reply(Response::Hello { kernel_release: release, agent_version: env!("CARGO_PKG_VERSION").to_string() });
            }
            Request::Network(cfg) => reply(result_of(net::configure(&cfg))),
            Request::Create { id: cid, spec } => reply(result_of(containers.create(&cid, spec))),
            Request::Volume { name, size_bytes, sub_path } => reply(result_of(volume(&name, size_bytes, sub_path.as_deref()))),
            Request::Start { id: cid } => reply(match containers.start(&cid).and_then(|(pid, main)| streams.adopt_main(&cid, main).map(|()| pid)) {
                Ok(pid) => Response::Started { pid },
                Err(e) => Response::Error { message: e },
            }),
            Request::Signal { id: cid, signal } => reply(result_of(containers.signal(&cid, signal))),
            Request::Exec(req) => {
                // Answers when the command ends: on a thread of its own.
                let containers = containers.clone();
                let tx = tx.clone();
                let spawned = std::thread::Builder::new().name("exec".into()).spawn(move || {
                    let response = match containers.exec(&req) {
                        Ok(r) => Response::Exec(r),
                        Err(e) => Response::Error { message: e },
                    };
                    let _ = tx.send(GuestMessage::Reply { id, response });
                });
                if let Err(e) = spawned {
                    reply(Response::Error { message: format!("exec thread: {e}") });
                }
            }
            Request::Remove { id: cid } => {
                streams.forget(&cid);
                reply(result_of(containers.remove(&cid)))
            }
            Request::ExecStream { stream, exec, tty, stdin } => reply(match streams.exec(&stream, &exec, tty, stdin) {
                Ok(pid) => Response::Started { pid },
                Err(e) => Response::Error { message: e },
            }),
            Request::Connect { stream, port } => {
                // A connect may wait (a full backlog): on a thread of its own.
                let (streams, tx) = (streams.clone(), tx.clone());
                let spawned = std::thread::Builder::new().name("connect".into()).spawn(move || {
                    let _ = tx.send(GuestMessage::Reply { id, response: result_of(streams.connect(&stream, port)) });
                });
                if let Err(e) = spawned {
                    reply(Response::Error { message: format!("connect thread: {e}") });
                }
            }
            // Answered by the stream's writer once written.
            Request::Input { stream, data } => {
                if let Err(e) = streams.input(id, &stream, data) {
                    reply(Response::Error { message: e });
                }
            }
            Request::CloseInput { stream } => reply(result_of(streams.close_input(&stream))),
            Request::Resize { stream, rows, cols } => reply(result_of(streams.resize(&stream, rows, cols))),
            Request::Cancel { stream } => reply(result_of(streams.cancel(&stream))),
            Request::PowerOff => {
                streams.cancel_all();
                containers.kill_all();
                reply(Response::Ok);
                if on_power_off == OnPowerOff::PowerOff {
                    // Let the writer send the reply before the machine goes.
                    tx.flush(std::time::Duration::from_secs(5));
                    init::power_off();
                }
                break Ok(());
            }
        }
    };
    streams.cancel_all();
    containers.kill_all();
    drop(containers);
    drop(tx);
    Ok(result?)
}

/// [`Request::Volume`]: a tmpfs per volume name under [`protocol::VOLUMES_DIR`], mounted the first
/// time and found mounted later (a mount point has another device than its parent).
fn volume(name: &str, size_bytes: Option<u64>, sub_path: Option<&str>) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    use std::path::{Component, Path};
    let plain = |p: &str| !p.is_empty() && Path::new(p).components().all(|c| matches!(c, Component::Normal(_)));
    if !plain(name) || name.contains('/') {
        return Err(format!("volume name {name:?} must be one path component"));
    }
    if sub_path.is_some_and(|s| !plain(s)) {
        return Err(format!("volume {name}: subPath {:?} must be a relative path without '..'", sub_path.unwrap_or_default()));
    }
    let parent = Path::new(protocol::VOLUMES_DIR);
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).map_err(|e| format!("{}: {e}", p.display()));
    if dev(&dir)? == dev(parent)? {
        let opts = match size_bytes {
            Some(b) => format!("mode=0777,size={b}"),
            None => "mode=0777".to_string(),
        };
        let flags = nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV;
        nix::mount::mount(Some("tmpfs"), &dir, Some("tmpfs"), flags, Some(opts.as_str())).map_err(|e| format!("mounting volume {name}: {e}"))?;
        note!("volume {name}: tmpfs ({opts})");
    }
    if let Some(sub) = sub_path {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    Ok(())
}

fn result_of(r: Result<(), String>) -> Response {
    match r {
        Ok(()) => Response::Ok,
        Err(message) => Response::Error { message },
    }
}
