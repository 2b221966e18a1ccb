//! Streaming exec ([`PodRuntime::exec_session`]): `runc exec` with pipes, or with a terminal.
//!
//! With a terminal, the runtime is given the slave side of a pseudo-terminal we open as its
//! stdio and controlling terminal (its own session): it makes the container process's terminal
//! and copies between the two, and when the caller resizes our side (`TIOCSWINSZ` on the
//! master) the kernel sends the runtime SIGWINCH, on which it resizes the container's.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};

use crate::pod::{ExecProcess, ExecSession, ExecSessionRequest};
use crate::{Error, ExecRequest};

use super::ContainerDriver;

struct RuncExec {
    child: Child,
    /// The terminal's master, for resizes.
    master: Option<File>,
    /// Where the runtime wrote the process's host pid (to kill it: SIGKILL is not forwarded).
    pid_file: PathBuf,
    /// The process file must outlive the runtime's reading of it.
    _process_file: tempfile::NamedTempFile,
    code: Option<i32>,
}

fn code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

impl ExecProcess for RuncExec {
    fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        let Some(m) = &self.master else {
            return Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "the exec has no terminal"));
        };
        set_size(m.as_raw_fd(), rows, cols)
    }

    fn wait(&mut self) -> std::io::Result<i32> {
        if let Some(c) = self.code {
            return Ok(c);
        }
        let c = code_of(self.child.wait()?);
        self.code = Some(c);
        let _ = std::fs::remove_file(&self.pid_file);
        Ok(c)
    }

    fn try_wait(&mut self) -> std::io::Result<Option<i32>> {
        if self.code.is_none() {
            self.code = self.child.try_wait()?.map(code_of);
        }
        Ok(self.code)
    }

    fn kill(&mut self) {
        if self.code.is_some() {
            return;
        }
        if let Some(p) = std::fs::read_to_string(&self.pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.child.kill();
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RuncExec {
    fn drop(&mut self) {
        // Reap the runtime if it has ended (a session dropped unwaited); leave it running
        // otherwise: dropping a session does not stop its process.
        let _ = self.try_wait();
        if self.code.is_some() {
            let _ = std::fs::remove_file(&self.pid_file);
        }
    }
}

fn set_size(fd: i32, rows: u16, cols: u16) -> std::io::Result<()> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ takes a pointer to a winsize.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl ContainerDriver {
    pub(super) fn start_exec_session(&self, id: &str, req: &ExecSessionRequest) -> Result<ExecSession, Error> {
        let r = self.running_record(id, "exec in")?;
        let file = self.exec_process_file(&r, &ExecRequest { command: req.command.clone(), tty: req.tty, ..Default::default() })?;
        let pid_file = file.path().with_extension("pid");
        let mut cmd = self.runtime.exec_command_with_pid_file(id, file.path(), Some(&pid_file));
        let spawn_err = Error::io(format!("running {} exec", self.runtime.name()));
        if req.tty {
            let (rows, cols) = req.size.unwrap_or((24, 80));
            let ws = nix::pty::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
            let pty = nix::pty::openpty(Some(&ws), None).map_err(|e| Error::Io { context: "opening a terminal".into(), source: e.into() })?;
            let slave: OwnedFd = pty.slave;
            let master = File::from(pty.master);
            let dup = |f: &OwnedFd| f.try_clone().map_err(Error::io("terminal"));
            cmd.stdin(Stdio::from(dup(&slave)?)).stdout(Stdio::from(dup(&slave)?)).stderr(Stdio::from(dup(&slave)?));
            // SAFETY: setsid and ioctl are async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd.spawn().map_err(spawn_err)?;
            drop(cmd);
            drop(slave);
            let stdin = master.try_clone().map_err(Error::io("terminal"))?;
            let stdout = master.try_clone().map_err(Error::io("terminal"))?;
            let inner = RuncExec { child, master: Some(master), pid_file, _process_file: file, code: None };
            return Ok(ExecSession { stdin: Some(stdin), stdout: Some(stdout), stderr: None, tty: true, inner: Box::new(inner) });
        }
        cmd.stdin(if req.stdin { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let stdin = child.stdin.take().map(|s| File::from(OwnedFd::from(s)));
        let stdout = child.stdout.take().map(|s| File::from(OwnedFd::from(s)));
        let stderr = child.stderr.take().map(|s| File::from(OwnedFd::from(s)));
        let inner = RuncExec { child, master: None, pid_file, _process_file: file, code: None };
        Ok(ExecSession { stdin, stdout, stderr, tty: false, inner: Box::new(inner) })
    }
}
