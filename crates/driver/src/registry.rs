//! Workload names and ids on disk, shared by every driver: random 64-hex ids, one directory per
//! workload, and unique names reserved as files linked into place with `link(2)` (atomic and
//! exclusive: two concurrent creates cannot both take a name, and a name file is never seen
//! half-written). A name file holds the id that owns it.
//!
//! Multi-step operations (create, remove) are bracketed by an *intent*: a file
//! `<root>/intents/<dir>/<id>` naming the operation and the workload's name, written before the
//! first side effect and removed after the last, and held under an exclusive `flock` by the
//! process doing the work. A process that finds an intent it can lock knows that its owner died
//! half-way ([`Registry::orphaned_intents`]); the driver then finishes or rolls back that
//! workload from what is on disk. Every name file's owner therefore has a directory or an
//! intent: a name held by neither is stale and is taken over.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::Error;

/// The records of one kind of workload under a root.
#[derive(Clone)]
pub(crate) struct Registry {
    /// One directory per workload id.
    pub dir: PathBuf,
    /// One file per name.
    pub names: PathBuf,
    /// What the workloads are called in messages (`container`, `VM`).
    pub what: &'static str,
    /// One intent file per workload being created or removed.
    pub intents: PathBuf,
}

/// What a half-done operation was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Op {
    Create,
    Remove,
}

/// The content of an intent file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct IntentInfo {
    pub op: Op,
    pub id: String,
    pub name: String,
}

/// An operation in progress: its intent file, locked by this process until [`Intent::finish`]
/// (or until this process dies, which tells others to recover).
pub(crate) struct Intent {
    path: PathBuf,
    _lock: Flock<std::fs::File>,
}

impl Intent {
    /// The operation is complete: forget it.
    pub fn finish(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Registry {
    /// Open the records under `root`, which is created (or tightened to) 0700 first: it holds
    /// image content, root filesystems and logs that no other local user may reach.
    pub fn open(root: &Path, dir: &str, names: &str, what: &'static str) -> Result<Self, Error> {
        strata_image::private_dir(root)?;
        let r = Self { dir: root.join(dir), names: root.join(names), what, intents: root.join("intents").join(dir) };
        for d in [&r.dir, &r.names, &r.intents] {
            std::fs::create_dir_all(d).map_err(Error::io(format!("creating {}", d.display())))?;
        }
        Ok(r)
    }

    /// Read workload `id`'s `record.json`.
    pub fn load<T: serde::de::DeserializeOwned>(&self, id: &str) -> Result<T, Error> {
        let path = self.dir.join(id).join("record.json");
        let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound(id.to_string()),
            _ => Error::Io { context: format!("reading {}", path.display()), source: e },
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Internal(format!("corrupt record {}: {e}", path.display())))
    }

    /// Replace workload `id`'s `record.json` atomically (readers see the old or the new one);
    /// `durable` also fsyncs it (for what must survive a power loss).
    pub fn save<T: serde::Serialize>(&self, id: &str, record: &T, durable: bool) -> Result<(), Error> {
        let path = self.dir.join(id).join("record.json");
        let json = serde_json::to_vec_pretty(record).map_err(|e| Error::Internal(e.to_string()))?;
        strata_supervise::util::replace_file(&path, &json, durable).map_err(Error::io(format!("writing {}", path.display())))
    }

    /// Every readable record (a workload being created or removed meanwhile is skipped).
    pub fn load_all<T: serde::de::DeserializeOwned>(&self) -> Result<Vec<T>, Error> {
        let entries = std::fs::read_dir(&self.dir).map_err(Error::io(format!("reading {}", self.dir.display())))?;
        Ok(entries.flatten().filter_map(|e| self.load(&e.file_name().to_string_lossy()).ok()).collect())
    }

    /// Reserve `name` for `id`: the name file is written under a temporary name and linked into
    /// place, so it exists complete or not at all. A name whose owner has neither a directory
    /// nor an intent (left by an older strata, or by hand) is stale and taken over.
    pub fn reserve(&self, name: &str, id: &str) -> Result<(), Error> {
        validate_name(name, self.what)?;
        let path = self.names.join(name);
        let tmp = self.names.join(format!(".{id}.tmp"));
        let written = std::fs::File::create(&tmp).and_then(|mut f| f.write_all(id.as_bytes()));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Io { context: format!("reserving name {name}"), source: e });
        }
        let mut result = std::fs::hard_link(&tmp, &path);
        if matches!(&result, Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists) {
            let owner = std::fs::read_to_string(&path).unwrap_or_default();
            if !owner.is_empty() && owner != id && self.is_stale_owner(&owner) && self.take_over_stale(&path, &owner) {
                result = std::fs::hard_link(&tmp, &path);
            }
        }
        let _ = std::fs::remove_file(&tmp);
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = std::fs::read_to_string(&path).unwrap_or_default();
                Err(Error::AlreadyExists(format!(
                    "the {} name \"{name}\" is already in use by {} {}; remove it or pick another name",
                    self.what,
                    self.what,
                    &owner[..owner.len().min(12)]
                )))
            }
            Err(e) => Err(Error::Io { context: format!("reserving name {name}"), source: e }),
        }
    }

    /// An owner with neither a directory nor an intent cannot be found by anyone.
    fn is_stale_owner(&self, owner: &str) -> bool {
        !self.dir.join(owner).exists() && !self.intents.join(owner).exists()
    }

    /// Remove the stale name file `path` if it still names `owner` (moved aside first, so that a
    /// concurrent taker that got there first is never undone).
    fn take_over_stale(&self, path: &Path, owner: &str) -> bool {
        let aside = self.names.join(format!(".stale.{owner}.{}", std::process::id()));
        if std::fs::rename(path, &aside).is_err() {
            return false;
        }
        let still = std::fs::read_to_string(&aside).is_ok_and(|o| o == owner);
        if still {
            tracing::info!(name = %path.display(), owner, "taking over a stale name");
            let _ = std::fs::remove_file(&aside);
        } else {
            // Someone re-reserved it between our read and the rename: put theirs back.
            let _ = std::fs::hard_link(&aside, path);
            let _ = std::fs::remove_file(&aside);
        }
        still
    }

    /// Start operation `op` on workload `id` (called `name`): write and lock its intent before
    /// any side effect.
    pub fn begin(&self, op: Op, id: &str, name: &str) -> Result<Intent, Error> {
        let info = IntentInfo { op, id: id.to_string(), name: name.to_string() };
        let json = serde_json::to_vec(&info).map_err(|e| Error::Internal(e.to_string()))?;
        let path = self.intents.join(id);
        // Locked before it appears under its name, so nobody can take it for an orphan.
        let tmp = self.intents.join(format!(".{id}.{}.tmp", std::process::id()));
        let io = Error::io(format!("writing intent {}", path.display()));
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, errno)) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::Io { context: format!("locking intent {}", path.display()), source: errno.into() });
            }
        };
        let written = (&*lock).write_all(&json).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Io { context: format!("writing intent {}", path.display()), source: e });
        }
        Ok(Intent { path, _lock: lock })
    }

    /// Is an operation on `id` in progress in a live process?
    pub fn busy(&self, id: &str) -> bool {
        let path = self.intents.join(id);
        let Ok(file) = std::fs::File::open(&path) else { return false };
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_) => false,
            Err(_) => true,
        }
    }

    /// Intents whose owner died half-way, each locked by us: `recover` finishes or rolls back
    /// the operation; on success the intent is removed. Intents of live processes are skipped.
    pub fn recover_orphans(&self, recover: &mut dyn FnMut(&IntentInfo) -> Result<(), Error>) {
        self.sweep_names_aside();
        let Ok(entries) = std::fs::read_dir(&self.intents) else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if name.starts_with('.') {
                // A temporary file of a begin() that died before the rename: nothing happened.
                if older_than_a_minute(&path) {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            let Ok(file) = std::fs::File::open(&path) else { continue };
            let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else { continue };
            // Still the same file (not finished and removed by its owner meanwhile)?
            let same = match (lock.metadata(), std::fs::metadata(&path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if !same {
                continue;
            }
            let info: IntentInfo = match std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
                Some(i) => i,
                // Never complete when locked and renamed: unreadable means damaged by hand.
                None => IntentInfo { op: Op::Remove, id: name.clone(), name: String::new() },
            };
            tracing::info!(id = %info.id, op = ?info.op, "recovering a half-done operation");
            // A create killed inside reserve() leaves its name's temporary file behind.
            let _ = std::fs::remove_file(self.names.join(format!(".{}.tmp", info.id)));
            match recover(&info) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => tracing::warn!(id = %info.id, error = %e, "recovery failed; retried next time"),
            }
            drop(lock);
        }
    }

    /// Names moved aside by a take-over whose process was killed before it removed them
    /// (`names/.stale.<owner>.<pid>`, older than a minute so a take-over in progress is not raced).
    fn sweep_names_aside(&self) {
        let Ok(entries) = std::fs::read_dir(&self.names) else { return };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".stale.") && older_than_a_minute(&e.path()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Remove the workload directory `id`: it leaves the registry at once (one rename into
    /// `<root>/trash`), and its files are deleted by a detached `rm -rf`, off the caller's
    /// path (a container's upper directory can be large; even a small one costs ~1.5 ms of
    /// journaled unlinks). If the rename or the spawn fails, the files are deleted here.
    /// Leftovers of an interrupted removal are swept by [`Registry::sweep_trash`].
    pub fn discard(&self, id: &str) -> std::io::Result<()> {
        let dir = self.dir.join(id);
        let trash = self.trash();
        let target = trash.join(format!("{id}.{}", std::process::id()));
        let moved = std::fs::create_dir_all(&trash).and_then(|()| std::fs::rename(&dir, &target));
        match moved {
            Ok(()) => {
                if spawn_remover(&target).is_err() {
                    std::fs::remove_dir_all(&target)?;
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !dir.exists() => Ok(()),
            Err(_) => match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    }

    /// Delete what interrupted removals left in the trash: an entry whose process (its name's
    /// `.PID` suffix) is gone and whose files no remover is deleting (a process killed between
    /// the rename and the spawn), and any entry older than a minute (a removal still running is
    /// not raced before that).
    pub fn sweep_trash(&self) {
        let Ok(entries) = std::fs::read_dir(self.trash()) else { return };
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let mut removers: Option<Vec<Vec<u8>>> = None;
        for e in entries.flatten() {
            let path = e.path();
            let aged = e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < old);
            let mut orphaned = || {
                let owner_gone = path
                    .extension()
                    .and_then(|x| x.to_str()?.parse::<i32>().ok())
                    .is_some_and(|pid| pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH));
                owner_gone && !removers.get_or_insert_with(remover_cmdlines).iter().any(|c| *c == remover_cmdline(&path))
            };
            if aged || orphaned() {
                let _ = spawn_remover(&path);
            }
        }
    }

    fn trash(&self) -> PathBuf {
        self.dir.parent().unwrap_or(&self.dir).join("trash")
    }

    /// Give `name` up if `id` owns it.
    pub fn release(&self, name: &str, id: &str) {
        let path = self.names.join(name);
        if std::fs::read_to_string(&path).is_ok_and(|owner| owner == id) {
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Map a name, an id, or an unambiguous id prefix (3+ hex digits) to an id.
    pub fn resolve(&self, name_or_id: &str) -> Result<String, Error> {
        if validate_name(name_or_id, self.what).is_ok() {
            if let Ok(id) = std::fs::read_to_string(self.names.join(name_or_id)) {
                if self.dir.join(&id).exists() {
                    return Ok(id);
                }
            }
        }
        if name_or_id.len() >= 3 && name_or_id.chars().all(|c| c.is_ascii_hexdigit()) {
            let matches: Vec<String> = std::fs::read_dir(&self.dir)
                .map_err(Error::io(format!("reading {}", self.dir.display())))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(name_or_id))
                .collect();
            match matches.len() {
                1 => return Ok(matches[0].clone()),
                0 => {}
                _ => return Err(Error::InvalidArgument(format!("{} id prefix {name_or_id} is ambiguous", self.what))),
            }
        }
        Err(Error::NotFound(name_or_id.to_string()))
    }
}

fn older_than_a_minute(path: &Path) -> bool {
    std::fs::metadata(path).and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|a| a.as_secs() > 60))
}

/// `rm -rf -- path` in its own session (a Ctrl-C meant for the caller does not stop it), not
/// waited for by callers that exit; a thread reaps it in long-lived ones.
/// The command line (NUL-separated, as `/proc/PID/cmdline`) of [`spawn_remover`]'s `rm`.
fn remover_cmdline(path: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut line = b"rm\0-rf\0--\0".to_vec();
    line.extend_from_slice(path.as_os_str().as_bytes());
    line.push(0);
    line
}

/// The command lines of the `rm -rf` processes running now.
fn remover_cmdlines() -> Vec<Vec<u8>> {
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    procs
        .flatten()
        .filter(|p| p.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .filter(|c| c.starts_with(b"rm\0-rf\0--\0"))
        .collect()
}

fn spawn_remover(path: &Path) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("rm");
    cmd.arg("-rf").arg("--").arg(path);
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 128 characters (Docker's rule).
pub(crate) fn validate_name(name: &str, what: &str) -> Result<(), Error> {
    let ok = name.len() <= 128
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("invalid {what} name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")))
    }
}

/// A new random 64-hex-digit id.
pub(crate) fn random_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Now, RFC 3339 with nanoseconds.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_resolve() {
        let root = tempfile::tempdir().expect("tmp");
        let reg = Registry::open(root.path(), "things", "thing-names", "thing").expect("open");
        let id = random_id();
        std::fs::create_dir(reg.dir.join(&id)).expect("dir");
        reg.reserve("web", &id).expect("reserve");
        let e = reg.reserve("web", "other").expect_err("taken");
        assert!(e.to_string().contains("\"web\" is already in use by thing"), "{e}");
        assert_eq!(reg.resolve("web").expect("name"), id);
        assert_eq!(reg.resolve(&id[..6]).expect("prefix"), id);
        assert!(matches!(reg.resolve("nope"), Err(Error::NotFound(_))));
        assert!(reg.reserve("bad/name", &id).is_err());
        reg.release("web", "someone-else");
        assert!(reg.names.join("web").exists(), "only the owner releases");
        reg.release("web", &id);
        assert!(!reg.names.join("web").exists());
    }

    #[test]
    fn intents_of_dead_owners_are_recovered_and_stale_names_taken_over() {
        let root = tempfile::tempdir().expect("tmp");
        let reg = Registry::open(root.path(), "things", "thing-names", "thing").expect("open");
        let mut seen: Vec<(Op, String, String)> = Vec::new();
        let intent = reg.begin(Op::Create, "aaa", "web").expect("begin");
        assert!(reg.busy("aaa"));
        reg.recover_orphans(&mut |i| {
            seen.push((i.op, i.id.clone(), i.name.clone()));
            Ok(())
        });
        assert!(seen.is_empty(), "an intent of a live owner is left alone");
        // Its owner dies: the lock goes, the file stays.
        drop(intent);
        assert!(!reg.busy("aaa"));
        reg.recover_orphans(&mut |_| Err(Error::Internal("not now".into())));
        assert!(reg.intents.join("aaa").exists(), "a failed recovery is retried later");
        reg.recover_orphans(&mut |i| {
            seen.push((i.op, i.id.clone(), i.name.clone()));
            Ok(())
        });
        assert_eq!(seen, [(Op::Create, "aaa".to_string(), "web".to_string())]);
        assert!(!reg.intents.join("aaa").exists());
        let done = reg.begin(Op::Remove, "bbb", "x").expect("begin");
        done.finish();
        assert_eq!(std::fs::read_dir(&reg.intents).expect("ls").count(), 0, "a finished intent is gone");

        // A name whose owner has neither a directory nor an intent is taken over; others not.
        std::fs::write(reg.names.join("old"), "deadbeef").expect("stale name");
        reg.reserve("old", "ccc").expect("stale name taken over");
        assert_eq!(std::fs::read_to_string(reg.names.join("old")).expect("read"), "ccc");
        std::fs::create_dir(reg.dir.join("ccc")).expect("dir");
        assert!(matches!(reg.reserve("old", "ddd"), Err(Error::AlreadyExists(_))));
        let _busy = reg.begin(Op::Create, "eee", "mid").expect("begin");
        std::fs::write(reg.names.join("mid"), "eee").expect("name");
        assert!(matches!(reg.reserve("mid", "fff"), Err(Error::AlreadyExists(_))), "a create in progress keeps its name");
        let tmp: Vec<_> = std::fs::read_dir(&reg.names).expect("ls").flatten().filter(|e| e.file_name().to_string_lossy().starts_with('.')).collect();
        assert!(tmp.is_empty(), "no temporary name files left");
    }

    /// A create killed between writing its name's temporary file and removing it (the window
    /// around `link(2)`) leaves `names/.<id>.tmp`: the recovery of its intent removes it, and a
    /// name moved aside by a take-over that was killed is swept once it is old.
    #[test]
    fn recovery_removes_the_temporary_name_file_of_a_dead_create() {
        let root = tempfile::tempdir().expect("tmp");
        let reg = Registry::open(root.path(), "things", "thing-names", "thing").expect("open");
        let intent = reg.begin(Op::Create, "abc", "web").expect("begin");
        std::fs::write(reg.names.join(".abc.tmp"), "abc").expect("tmp name");
        reg.recover_orphans(&mut |_| Ok(()));
        assert!(reg.names.join(".abc.tmp").exists(), "a live create keeps its temporary file");
        drop(intent);
        reg.recover_orphans(&mut |_| Ok(()));
        assert!(!reg.names.join(".abc.tmp").exists(), "the dead create's temporary name file is removed");
        let aside = reg.names.join(".stale.def.1");
        std::fs::write(&aside, "def").expect("aside");
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        std::fs::File::options().write(true).open(&aside).and_then(|f| f.set_modified(old)).expect("age");
        reg.recover_orphans(&mut |_| Ok(()));
        assert!(!aside.exists(), "an old name moved aside is swept");
    }

    #[test]
    fn discarded_directories_leave_at_once_and_are_deleted_in_the_background() {
        let root = tempfile::tempdir().expect("tmp");
        let reg = Registry::open(root.path(), "things", "thing-names", "thing").expect("open");
        let id = random_id();
        let dir = reg.dir.join(&id);
        std::fs::create_dir_all(dir.join("upper/deep")).expect("dir");
        std::fs::write(dir.join("upper/deep/file"), b"data").expect("file");
        reg.discard(&id).expect("discard");
        assert!(!dir.exists(), "gone from the registry at once");
        assert!(matches!(reg.resolve(&id), Err(Error::NotFound(_))));
        let trash = root.path().join("trash");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_dir(&trash).map(|d| d.count()).unwrap_or(0) > 0 {
            assert!(std::time::Instant::now() < deadline, "the background removal finishes");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        reg.discard(&id).expect("discarding twice is fine");

        // The leftover of a process killed between its rename and its remover's spawn is
        // swept by the next sweep (its process is gone and nothing removes it).
        let mut gone = std::process::Command::new("true").spawn().expect("spawn");
        let dead_pid = gone.id();
        gone.wait().expect("wait");
        let orphan = trash.join(format!("{id}.{dead_pid}"));
        std::fs::create_dir_all(orphan.join("x")).expect("orphan");
        reg.sweep_trash();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while orphan.exists() {
            assert!(std::time::Instant::now() < deadline, "a dead process's leftover is swept at once");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }

        // A recent entry of a live process (pid 1) may still be in removal: it is swept once it
        // is old enough.
        let stale = trash.join("stale.1");
        std::fs::create_dir_all(stale.join("x")).expect("stale");
        reg.sweep_trash();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(stale.exists(), "a recent entry may still be in removal: left alone");
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        std::fs::File::open(&stale).and_then(|f| f.set_modified(old)).expect("age it");
        reg.sweep_trash();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while stale.exists() {
            assert!(std::time::Instant::now() < deadline, "old leftovers are swept");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
