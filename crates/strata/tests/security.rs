//! End-to-end security tests of `strata` (the real binary, real runc, a real registry), kept
//! apart from the functional ones: what a default container may not do, and what other local
//! users may not reach in the store. Run as root (CI does).

mod common;

use std::path::Path;
use std::process::Command;

use common::Env;
use strata_testkit::{add_file, busybox_layer_tar_gz, image_from_layers, tar_gz, write_docker_archive};

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
    let src = dir.join("nsprobe.c");
    let bin = dir.join("nsprobe");
    std::fs::write(&src, NSPROBE_C).expect("write source");
    let out = Command::new("gcc").args(["-static", "-O1", "-pthread", "-o"]).arg(&bin).arg(&src).output().expect("run gcc");
    assert!(out.status.success(), "gcc failed: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(&bin).expect("read binary")
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
