//! The OCI runtime binary (`runc` by default; `crun` and `youki` speak the same CLI).
//!
//! strata never links a runtime: it runs the binary with a state root of its own, exactly as
//! containerd's runc shim does, so any runtime that implements the runc command line works.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Errors from the runtime binary.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("OCI runtime '{0}' not found in PATH")]
    NotFound(String),
    #[error("cannot run OCI runtime {binary}: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{runtime} {verb} {id}: {message}")]
    Failed { runtime: String, verb: &'static str, id: String, message: String },
}

/// How the supervisor starts a container with the runtime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Launch {
    /// `create`: created, started later with `start`.
    #[default]
    Create,
    /// `run --detach`: created and started by one runtime call.
    RunDetached,
    /// `run` in the foreground: the runtime stays the container's parent, waits for it and
    /// deletes its own state when it exits (one runtime process for the whole life; used for
    /// containers removed on exit).
    RunForeground,
    /// `run --keep` in the foreground: as `RunForeground`, but the runtime leaves its record and
    /// the container's cgroups to `delete`, so that the supervisor can still read an OOM kill
    /// from the cgroup after the container has exited.
    RunForegroundKeep,
}

impl Launch {
    /// The runtime stays in the foreground as the container's parent.
    pub fn foreground(self) -> bool {
        matches!(self, Launch::RunForeground | Launch::RunForegroundKeep)
    }
}

/// A runtime binary plus the state directory it keeps its container records in.
#[derive(Clone, Debug)]
pub struct OciRuntime {
    name: String,
    binary: PathBuf,
    state_root: PathBuf,
}

impl OciRuntime {
    /// Find `name` (a bare name searched in `PATH`, or a path) and use `state_root` for its state.
    pub fn new(name: &str, state_root: impl Into<PathBuf>) -> Result<Self, RuntimeError> {
        let binary = find_in_path(name).ok_or_else(|| RuntimeError::NotFound(name.to_string()))?;
        let short = Path::new(name)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| name.to_string());
        Ok(Self { name: short, binary, state_root: state_root.into() })
    }

    /// The runtime's short name (`runc`, `crun`, `youki`).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn state_root(&self) -> &Path {
        &self.state_root
    }

    /// A command running `<runtime> --root STATE <args...>`; stdio is left to the caller.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.state_root).args(args);
        cmd
    }

    /// `create|run [--detach] --bundle B --pid-file P ID` as `launch` says, with the runtime's
    /// own errors logged as JSON to `log`.
    pub fn create_command(&self, id: &str, bundle: &Path, pid_file: &Path, log: &Path, launch: Launch, console_socket: Option<&Path>) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.state_root)
            .arg("--log")
            .arg(log)
            .arg("--log-format")
            .arg("json");
        match launch {
            Launch::Create => cmd.arg("create"),
            Launch::RunDetached => cmd.arg("run").arg("--detach"),
            Launch::RunForeground => cmd.arg("run"),
            Launch::RunForegroundKeep => cmd.arg("run").arg("--keep"),
        };
        if let Some(sock) = console_socket {
            cmd.arg("--console-socket").arg(sock);
        }
        cmd.arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file)
            .arg(id);
        cmd
    }

    /// `exec --process FILE ID`: run one more process in the container with the caller's stdio.
    pub fn exec_command(&self, id: &str, process_json: &Path) -> Command {
        self.exec_command_with_pid_file(id, process_json, None)
    }

    /// As [`OciRuntime::exec_command`], writing the new process's host pid to `pid_file` (so
    /// that it can be killed directly: the runtime cannot forward SIGKILL).
    pub fn exec_command_with_pid_file(&self, id: &str, process_json: &Path, pid_file: Option<&Path>) -> Command {
        let mut cmd = self.command(["exec", "--process"]);
        cmd.arg(process_json);
        if let Some(p) = pid_file {
            cmd.arg("--pid-file").arg(p);
        }
        cmd.arg(id);
        cmd
    }

    pub fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("start", id, &["start", id])
    }

    /// Send `signal` (a name such as `TERM` or a number) to the init process, or to every
    /// process in the container with `all`.
    pub fn kill(&self, id: &str, signal: &str, all: bool) -> Result<(), RuntimeError> {
        if all {
            self.run("kill", id, &["kill", "--all", id, signal])
        } else {
            self.run("kill", id, &["kill", id, signal])
        }
    }

    pub fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("pause", id, &["pause", id])
    }

    pub fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("resume", id, &["resume", id])
    }

    /// Delete the runtime's record and cgroups. A container the runtime does not know is not an
    /// error: deleting is idempotent so that cleanup after a crash can always run.
    pub fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let args: &[&str] = if force { &["delete", "--force", id] } else { &["delete", id] };
        match self.run("delete", id, args) {
            Err(RuntimeError::Failed { message, .. }) if is_not_exist(&message) => Ok(()),
            other => other,
        }
    }

    fn run(&self, verb: &'static str, id: &str, args: &[&str]) -> Result<(), RuntimeError> {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| RuntimeError::Spawn {
                binary: self.binary.display().to_string(),
                source,
            })?;
        if out.status.success() {
            return Ok(());
        }
        Err(RuntimeError::Failed {
            runtime: self.name.clone(),
            verb,
            id: id.to_string(),
            message: last_error_line(&String::from_utf8_lossy(&out.stderr)),
        })
    }
}

fn is_not_exist(message: &str) -> bool {
    message.contains("does not exist") || message.contains("not found")
}

/// The most useful line of a runtime's stderr or JSON log: the last non-empty one, with a
/// JSON log record reduced to its `msg`.
pub fn last_error_line(output: &str) -> String {
    let line = output.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    if line.starts_with('{') {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if let Some(msg) = v.get("msg").and_then(|m| m.as_str()) {
                return msg.to_string();
            }
        }
    }
    if line.is_empty() {
        "failed without a message".to_string()
    } else {
        line.to_string()
    }
}

/// Look a program up the way a shell does: a name with a `/` is taken as a path.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_line_prefers_json_msg() {
        let log = "{\"level\":\"info\",\"msg\":\"x\"}\n{\"level\":\"error\",\"msg\":\"exec: \\\"nope\\\": not found\"}\n";
        assert_eq!(last_error_line(log), "exec: \"nope\": not found");
        assert_eq!(last_error_line("a\nboom\n\n"), "boom");
    }

    #[test]
    fn missing_runtime_is_named() {
        let err = OciRuntime::new("no-such-runtime-xyz", "/tmp").expect_err("must fail");
        assert_eq!(err.to_string(), "OCI runtime 'no-such-runtime-xyz' not found in PATH");
    }
}
