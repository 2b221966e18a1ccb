//! [`PodStreams`] over the pod driver interface ([`PodRuntime`]): the node's pods and their
//! containers are found by the labels the driver puts on them (namespace, pod name, container
//! name), the current attempt is the highest, `previous` the one before it. A VM's launcher pod
//! has no containers: its VM (the VM driver's, labelled the same) gives the pod's log (the
//! captured serial console) and its console.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use strata_driver::pod::{labels, ContainerFilter, ContainerStatus, ExecSession, ExecSessionRequest, SandboxFilter, SandboxState};
use strata_driver::{Driver, LogOptions, PodRuntime, VmDriver, WorkloadState};

use super::{format_line, AttachInput, LogRequest, LogStream, OutputChunk, PodError, PodStreams, Process, Target};

/// The pods of a [`PodRuntime`].
pub struct DriverPods {
    runtime: Arc<dyn PodRuntime>,
    vms: Option<Arc<VmDriver>>,
}

impl DriverPods {
    pub fn new(runtime: Arc<dyn PodRuntime>) -> DriverPods {
        DriverPods { runtime, vms: None }
    }

    /// Also serve the VMs of launcher pods (their logs and consoles).
    pub fn with_vms(mut self, vms: Arc<VmDriver>) -> DriverPods {
        self.vms = Some(vms);
        self
    }

    /// The VM launcher pod `namespace/pod` runs here (uid `uid` when given), the newest if a
    /// create was repeated.
    fn vm_of(&self, namespace: &str, pod: &str, uid: Option<&str>) -> Result<Option<(Arc<VmDriver>, WorkloadState)>, PodError> {
        let Some(vms) = &self.vms else { return Ok(None) };
        let is = |w: &WorkloadState, k: &str, v: &str| w.labels.get(k).map(String::as_str) == Some(v);
        let found = vms
            .list()
            .map_err(driver_error)?
            .into_iter()
            .filter(|w| is(w, labels::POD_NAMESPACE, namespace) && is(w, labels::POD_NAME, pod) && uid.is_none_or(|u| is(w, labels::POD_UID, u)))
            .max_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok(found.map(|w| (vms.clone(), w)))
    }

    fn attempts(&self, t: &Target) -> Result<Vec<ContainerStatus>, PodError> {
        let mut f = ContainerFilter::default();
        f.labels.insert(labels::POD_NAMESPACE.into(), t.namespace.clone());
        f.labels.insert(labels::POD_NAME.into(), t.pod.clone());
        let all = self.runtime.list_containers(&f).map_err(driver_error)?;
        if all.is_empty() {
            self.check_pod(&t.namespace, &t.pod)?;
        }
        let mut mine: Vec<ContainerStatus> = all.into_iter().filter(|c| c.metadata.name == t.container).collect();
        mine.sort_by_key(|c| c.metadata.attempt);
        if mine.is_empty() {
            return Err(PodError::NotFound(format!("container not found ({:?})", t.container)));
        }
        Ok(mine)
    }

    /// The current attempt of the container.
    fn current(&self, t: &Target) -> Result<ContainerStatus, PodError> {
        let mut a = self.attempts(t)?;
        a.pop().ok_or_else(|| PodError::NotFound(format!("container not found ({:?})", t.container)))
    }
}

fn driver_error(e: strata_driver::Error) -> PodError {
    match e {
        strata_driver::Error::NotFound(m) => PodError::NotFound(m),
        strata_driver::Error::InvalidArgument(m) | strata_driver::Error::FailedPrecondition(m) => PodError::BadRequest(m),
        strata_driver::Error::Unsupported(m) => PodError::Unsupported(m),
        other => PodError::Internal(other.to_string()),
    }
}

/// Output of an exec'd process: its stdout (and stderr) files read on threads, in order per
/// stream. A terminal's `EIO` is its end.
fn output(session: &mut ExecSession) -> Box<dyn Iterator<Item = std::io::Result<OutputChunk>> + Send> {
    let (tx, rx) = std::sync::mpsc::channel();
    for (file, stream) in [(session.stdout.take(), LogStream::Stdout), (session.stderr.take(), LogStream::Stderr)] {
        let Some(mut f) = file else { continue };
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.send(Ok(OutputChunk { stream, data: buf[..n].to_vec() })).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    // EIO: the terminal closed.
                    Err(_) => break,
                }
            }
        });
    }
    Box::new(rx.into_iter())
}

/// Input of an exec'd process: its stdin file and the session's terminal.
struct ExecInput {
    stdin: Option<std::fs::File>,
    session: Arc<Mutex<ExecSession>>,
    tty: bool,
}

impl AttachInput for ExecInput {
    fn input(&mut self, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        match &mut self.stdin {
            Some(f) => f.write_all(data),
            None => Ok(()),
        }
    }
    fn resize(&mut self, rows: u16, cols: u16) -> std::io::Result<()> {
        self.session.lock().map_err(|_| std::io::Error::other("exec session lock"))?.resize(rows, cols)
    }
    fn close_input(&mut self) -> std::io::Result<()> {
        if self.tty {
            // The terminal's end-of-file character.
            return self.input(&[4]);
        }
        self.stdin = None;
        Ok(())
    }
}

impl PodStreams for DriverPods {
    fn check_pod(&self, namespace: &str, pod: &str) -> Result<(), PodError> {
        let mut f = SandboxFilter { state: Some(SandboxState::Ready), ..Default::default() };
        f.labels.insert(labels::POD_NAMESPACE.into(), namespace.into());
        f.labels.insert(labels::POD_NAME.into(), pod.into());
        let found = self.runtime.list_pod_sandboxes(&f).map_err(driver_error)?;
        if found.is_empty() {
            return Err(PodError::NotFound("pod does not exist".into()));
        }
        Ok(())
    }

    fn logs(&self, t: &Target, req: &LogRequest, out: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), PodError> {
        if let Some((vms, vm)) = self.vm_of(&t.namespace, &t.pod, t.uid.as_deref())? {
            if req.previous {
                return Err(PodError::BadRequest(format!("previous terminated container {:?} in pod {:?} not found (each boot of a VM is a new pod)", t.container, t.pod)));
            }
            let cancel = req.cancel.clone().unwrap_or_else(|| Arc::new(AtomicBool::new(false)));
            let opts = LogOptions { follow: req.follow, tail: req.tail_lines.map(|n| n as usize), since: req.since, limit_bytes: req.limit_bytes, cancel: Some(cancel.clone()) };
            let timestamps = req.timestamps;
            return vms
                .logs(&vm.id, &opts, &mut |r| {
                    let ok = out(&format_line(&r.time, &r.content, r.partial, timestamps));
                    if !ok {
                        cancel.store(true, Ordering::Relaxed);
                    }
                    ok
                })
                .map_err(driver_error);
        }
        let mut attempts = self.attempts(t)?;
        let current = attempts.pop().ok_or_else(|| PodError::NotFound(format!("container not found ({:?})", t.container)))?;
        let (c, follow) = if req.previous {
            let prev = attempts.pop().ok_or_else(|| PodError::BadRequest(format!("previous terminated container {:?} in pod {:?} not found", t.container, t.pod)))?;
            (prev, false)
        } else {
            (current, req.follow)
        };
        let cancel = req.cancel.clone().unwrap_or_else(|| Arc::new(AtomicBool::new(false)));
        let opts = LogOptions {
            follow,
            tail: req.tail_lines.map(|n| n as usize),
            since: req.since,
            limit_bytes: req.limit_bytes,
            cancel: Some(cancel.clone()),
        };
        let timestamps = req.timestamps;
        self.runtime
            .container_logs(&c.id, &opts, &mut |r| {
                let ok = out(&format_line(&r.time, &r.content, r.partial, timestamps));
                if !ok {
                    cancel.store(true, Ordering::Relaxed);
                }
                ok
            })
            .map_err(driver_error)
    }

    fn exec(&self, t: &Target, command: &[String], stdin: bool, tty: bool) -> Result<Process, PodError> {
        let c = self.current(t)?;
        let req = ExecSessionRequest { command: command.to_vec(), tty, stdin, size: None };
        let mut session = self.runtime.exec_session(&c.id, &req).map_err(driver_error)?;
        let output = output(&mut session);
        let stdin_file = session.stdin.take();
        let session = Arc::new(Mutex::new(session));
        let input: Option<Box<dyn AttachInput>> = (stdin || tty).then(|| Box::new(ExecInput { stdin: stdin_file, session: session.clone(), tty }) as Box<dyn AttachInput>);
        Ok(Process {
            tty,
            input,
            output,
            wait: Some(Box::new(move || {
                let mut s = session.lock().map_err(|_| PodError::Internal("exec session lock".into()))?;
                s.wait().map_err(|e| PodError::Internal(e.to_string()))
            })),
        })
    }

    fn attach(&self, t: &Target, stdin: bool, _tty: bool) -> Result<Process, PodError> {
        let c = self.current(t)?;
        let a = self.runtime.attach_container(&c.id).map_err(driver_error)?;
        Ok(Process { tty: a.tty, input: if stdin || a.tty { a.input } else { None }, output: a.output, wait: None })
    }

    fn vm_console(&self, namespace: &str, pod: &str, uid: &str) -> Result<std::os::unix::net::UnixStream, PodError> {
        if self.vms.is_none() {
            return Err(PodError::Unsupported("this node runs no virtual machines".into()));
        }
        let (vms, vm) = self.vm_of(namespace, pod, Some(uid))?.ok_or_else(|| PodError::NotFound(format!("pod {namespace}/{pod} runs no virtual machine on this node")))?;
        vms.console(&vm.id).map_err(|e| match e {
            strata_driver::Error::FailedPrecondition(m) => PodError::Conflict(m),
            other => driver_error(other),
        })
    }

    fn port_forward(&self, namespace: &str, pod: &str, port: u16) -> Result<std::net::TcpStream, PodError> {
        let mut f = SandboxFilter { state: Some(SandboxState::Ready), ..Default::default() };
        f.labels.insert(labels::POD_NAMESPACE.into(), namespace.into());
        f.labels.insert(labels::POD_NAME.into(), pod.into());
        let sandbox = self.runtime.list_pod_sandboxes(&f).map_err(driver_error)?.pop().ok_or_else(|| PodError::NotFound("pod does not exist".into()))?;
        // On the pod's loopback, as kubelet does: a server listening on 127.0.0.1 only is reached.
        self.runtime.port_forward(&sandbox.id, port).map_err(driver_error)
    }
}
