//! End-to-end security tests of `strata` (the real binary, real runc, a real registry), kept
//! apart from the functional ones: what a default container may not do, and what other local
//! users may not reach in the store. Run as root (CI does).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{compile_c, Env};
use strata_testkit::{add_file, busybox_layer_tar_gz, header, image_from_layers, tar_gz, write_docker_archive};

/// A static C program that tries to create namespaces every way a process can, and a normal
/// fork and thread, and prints one `what=ok` or `what=ERRNAME(n)` line for each.
const NSPROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#ifndef SYS_clone3
#define SYS_clone3 435
#endif

static const char *name(int e) {
  switch (e) {
  case EPERM: return "EPERM";
  case ENOSYS: return "ENOSYS";
  case EINVAL: return "EINVAL";
  case EUSERS: return "EUSERS";
  case ENOSPC: return "ENOSPC";
  default: return "OTHER";
  }
}
static void report(const char *what, long rc, int err) {
  if (rc < 0) printf("%s=%s(%d)\n", what, name(err), err);
  else printf("%s=ok\n", what);
}
/* The child of a fork-like clone leaves at once; the parent reaps it. */
static void reap(long pid) {
  if (pid == 0) _exit(0);
  if (pid > 0) waitpid((pid_t)pid, NULL, 0);
}
struct clone_args_v0 { uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls; };
static void *thread_main(void *arg) { return arg; }

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  long rc; int e;
  rc = syscall(SYS_clone, (long)(CLONE_NEWUSER | CLONE_NEWNET | SIGCHLD), 0L, 0L, 0L, 0L);
  e = errno; reap(rc); report("clone_newuser_newnet", rc, e);
  rc = syscall(SYS_clone, (long)(CLONE_NEWNET | SIGCHLD), 0L, 0L, 0L, 0L);
  e = errno; reap(rc); report("clone_newnet", rc, e);
  struct clone_args_v0 ca;
  memset(&ca, 0, sizeof ca);
  ca.flags = CLONE_NEWUSER;
  ca.exit_signal = SIGCHLD;
  rc = syscall(SYS_clone3, &ca, sizeof ca);
  e = errno; reap(rc); report("clone3_newuser", rc, e);
  pid_t p = fork();
  if (p == 0) _exit(unshare(CLONE_NEWUSER) == 0 ? 0 : errno);
  int st = 0;
  if (p > 0) waitpid(p, &st, 0);
  report("fork", p, errno);
  int ue = WIFEXITED(st) ? WEXITSTATUS(st) : 255;
  report("unshare_newuser", ue ? -1 : 0, ue);
  rc = syscall(SYS_clone, (long)SIGCHLD, 0L, 0L, 0L, 0L);
  e = errno; reap(rc); report("clone_plain", rc, e);
  pthread_t t;
  int tr = pthread_create(&t, NULL, thread_main, NULL);
  if (tr == 0) pthread_join(t, NULL);
  report("thread", tr ? -1 : 0, tr);
  return 0;
}
"#;

/// Compile [`NSPROBE_C`] statically (gcc and libc6-dev: scripts/test.sh installs them).
fn compile_probe(dir: &Path) -> Vec<u8> {
    compile_c(dir, "nsprobe", NSPROBE_C)
}

/// Import an image of busybox plus `files` (path, mode, bytes) under `name`.
fn import_image(env: &Env, work: &Path, name: &str, files: &[(&str, u32, &[u8])]) {
    let extra = tar_gz(|b| {
        for (path, mode, data) in files {
            add_file(b, path, *mode, data);
        }
    });
    let img = image_from_layers(vec![busybox_layer_tar_gz(), extra], &["sh"]);
    let archive = work.join(format!("{}.tar", name.replace(['/', ':'], "_")));
    write_docker_archive(&img, &archive, name);
    env.ok(&["image", "import", archive.to_str().expect("path")]);
}

/// `what=result` lines of the probe's output.
fn results(out: &str) -> std::collections::BTreeMap<String, String> {
    out.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn assert_confined(out: &str, who: &str) {
    let r = results(out);
    let get = |k: &str| r.get(k).cloned().unwrap_or_else(|| panic!("{who}: no {k} in {out}"));
    assert!(get("clone_newuser_newnet").starts_with("EPERM"), "{who}: clone(NEWUSER|NEWNET): {out}");
    assert!(get("clone_newnet").starts_with("EPERM"), "{who}: clone(NEWNET): {out}");
    assert!(get("clone3_newuser").starts_with("ENOSYS"), "{who}: clone3(NEWUSER) must be ENOSYS so libc falls back to clone: {out}");
    assert!(get("unshare_newuser").starts_with("EPERM"), "{who}: unshare(NEWUSER): {out}");
    for ok in ["fork", "clone_plain", "thread"] {
        assert_eq!(get(ok), "ok", "{who}: {ok} must still work: {out}");
    }
}

/// Issue 13 part 1: default containers (as root and as a non-root user, and processes added
/// with `exec`) cannot create user or network namespaces by clone, clone3 or unshare; normal
/// forks and threads work; a privileged container can.
#[test]
fn default_containers_cannot_create_namespaces() {
    let env = Env::new();
    let work = tempfile::tempdir().expect("tmp");
    let probe = compile_probe(work.path());
    import_image(&env, work.path(), "local/nsprobe:1", &[("nsprobe", 0o755, &probe)]);
    let img = "local/nsprobe:1";

    let out = env.ok(&["run", "--rm", "--pull", "never", img, "/nsprobe"]);
    assert_confined(&out, "root");
    let out = env.ok(&["run", "--rm", "--pull", "never", "--user", "1000", img, "/nsprobe"]);
    assert_confined(&out, "uid 1000");

    env.ok(&["run", "-d", "--pull", "never", "--name", "probe-exec", img, "sleep", "1000"]);
    let out = env.ok(&["exec", "probe-exec", "/nsprobe"]);
    assert_confined(&out, "exec");
    let out = env.ok(&["exec", "--user", "1000", "probe-exec", "/nsprobe"]);
    assert_confined(&out, "exec as uid 1000");
    env.ok(&["rm", "-f", "probe-exec"]);

    let out = env.ok(&["run", "--rm", "--pull", "never", "--privileged", img, "/nsprobe"]);
    let r = results(&out);
    for k in ["clone_newuser_newnet", "clone3_newuser", "unshare_newuser", "fork", "thread"] {
        assert_eq!(r.get(k).map(String::as_str), Some("ok"), "privileged: {k}: {out}");
    }
}

/// `strata --root ROOT ARGS`, asserting success.
fn strata_ok(root: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strata")).arg("--root").arg(root).args(args).stdin(Stdio::null()).output().expect("run strata");
    assert!(
        out.status.success(),
        "strata {args:?} failed: stdout={} stderr={}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes a container of another root than [`Env`]'s when the test ends, passed or not.
struct RemoveOnDrop(PathBuf, &'static str);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_strata")).arg("--root").arg(&self.0).args(["rm", "-f", self.1]).output();
    }
}

/// Run `argv` as `nobody` with a login-like switch (`runuser`, as `su nobody -c` would).
/// Not `setpriv --reuid`: it keeps its capabilities until `execve` has looked the program
/// up, so it runs programs in directories `nobody` cannot enter.
fn as_nobody(argv: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .args(argv)
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv")
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
}

/// Files below `dir` named `name` (as root, which may look everywhere).
fn find_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if e.file_name() == name {
            out.push(p.clone());
        }
        if ft.is_dir() && !ft.is_symlink() {
            out.extend(find_named(&p, name));
        }
    }
    out
}

/// Issue 13 part 2: the store is private to its owner. A root strata creates is 0700, so no
/// other local user can list it, run a setuid-root program from a pulled image, open a device
/// node a layer carried, or read a container's files; a root found with looser modes is
/// tightened when opened. Containers still run as non-root users over such a store.
#[test]
fn store_is_private_to_root() {
    let env = Env::new();
    // The test's own directory is reachable by everyone: only strata's modes protect its root.
    std::fs::set_permissions(env.root(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let root = env.root().join("fresh");
    let work = tempfile::tempdir().expect("tmp");
    let euid = compile_c(work.path(), "euid", common::EUID_C);
    let extra = tar_gz(|b| {
        add_file(b, "rootprog", 0o4755, &euid);
        for (name, kind, major, minor) in [("charnode", tar::EntryType::Char, 1, 3), ("blocknode", tar::EntryType::Block, 7, 0)] {
            let mut h = header(kind, 0o666, 0, 0, 0);
            h.set_device_major(major).expect("major");
            h.set_device_minor(minor).expect("minor");
            b.append_data(&mut h, name, std::io::empty()).expect("append node");
        }
    });
    let img = image_from_layers(vec![busybox_layer_tar_gz(), extra], &["sh"]);
    env.registry.push(&img, "private", "latest");
    let image = format!("{}/private:latest", env.registry.addr);
    strata_ok(&root, &["pull", "-q", &image]);
    // Non-root container users still read and run what the image gives them (no_new_privs:
    // the setuid bit does not apply inside).
    assert_eq!(strata_ok(&root, &["run", "--rm", "--user", "1000", &image, "/rootprog"]).trim(), "euid=1000");
    assert_eq!(strata_ok(&root, &["run", "--rm", "--user", "1000", &image, "cat", "/etc/passwd"]).lines().next().map(|l| l.starts_with("root:")), Some(true));
    strata_ok(&root, &["run", "-d", "--name", "private-svc", &image, "sh", "-c", "echo secret-output; sleep 1000"]);
    let _svc = RemoveOnDrop(root.clone(), "private-svc");

    let setuid = find_named(&root.join("images/snapshots"), "rootprog");
    assert!(!setuid.is_empty(), "the layer was unpacked");
    assert_ne!(mode_of(&setuid[0]) & 0o4000, 0, "the image's setuid bit is kept (containers may need it)");
    let nodes = [find_named(&root.join("images/snapshots"), "charnode"), find_named(&root.join("images/snapshots"), "blocknode")].concat();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    let logs = find_named(&root.join("containers"), "ctr.log");
    assert!(!logs.is_empty());
    let in_rootfs = find_named(&root.join("containers"), "rootprog");

    let s = |p: &Path| p.to_str().expect("path").to_string();
    for dir in [root.clone(), root.join("images"), root.join("images/snapshots"), root.join("containers")] {
        let out = as_nobody(&["ls", &s(&dir)]);
        assert!(!out.status.success(), "nobody listed {}: {}", dir.display(), String::from_utf8_lossy(&out.stdout));
    }
    for prog in setuid.iter().chain(&in_rootfs) {
        let out = as_nobody(&[&s(prog)]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success() && !stdout.contains("euid="), "nobody ran {}: {stdout}", prog.display());
    }
    for node in &nodes {
        let out = as_nobody(&["dd", &format!("if={}", s(node)), "of=/dev/null", "count=1"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("Permission denied"), "nobody opened {}: {err}", node.display());
    }
    for log in &logs {
        let out = as_nobody(&["cat", &s(log)]);
        assert!(!out.status.success(), "nobody read {}", log.display());
    }
    assert_eq!(mode_of(&root), 0o700, "the root is created private");
    strata_ok(&root, &["rm", "-f", "private-svc"]);

    // A root left with loose modes (an older strata, a hand-made directory) is tightened.
    let loose = env.root().join("loose");
    std::fs::create_dir_all(loose.join("images")).expect("mkdir");
    for d in [&loose, &loose.join("images")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    strata_ok(&loose, &["images"]);
    assert_eq!(mode_of(&loose), 0o700);
    assert_eq!(mode_of(&loose.join("images")), 0o700);
    let loose_vm = env.root().join("loose-vm");
    std::fs::create_dir_all(&loose_vm).expect("mkdir");
    std::fs::set_permissions(&loose_vm, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    strata_ok(&loose_vm, &["vm", "list"]);
    assert_eq!(mode_of(&loose_vm), 0o700);
}

/// The sockets that reach a container's input (attach) live outside the root, in
/// `/run/strata/sock`: even when strata runs with a umask of 0 no other local user may
/// connect to them (and so type into a container's shell).
#[test]
fn attach_sockets_are_private_whatever_the_umask() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let mut cmd = env.cmd();
    cmd.args(["run", "-d", "-i", "--name", "umask-probe", &env.image, "cat"]);
    // SAFETY: umask is async-signal-safe and touches nothing but the child's own mask.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let out = cmd.output().expect("run strata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let socket = Path::new("/run/strata/sock").join(format!("{}.attach", &id[..32]));
    assert!(common::eventually(std::time::Duration::from_secs(10), || socket.exists()), "{} exists", socket.display());
    let probe = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect(sys.argv[1]); print('CONNECTED')\nexcept OSError as e:\n print('REFUSED', e)";
    let out = as_nobody(&["python3", "-c", probe, socket.to_str().expect("path")]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("REFUSED") && said.contains("Permission denied"), "nobody reached the attach socket: {said}");
    env.ok(&["rm", "-f", "umask-probe"]);
}
