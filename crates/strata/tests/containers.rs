//! End-to-end tests of `strata` containers: the real binary, real runc, a real registry.
//! Run as root (CI does); see README.md for the packages they need.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{eventually, free_port, host_traces, Env};

#[test]
fn pull_images_run_and_exit_codes() {
    let env = Env::new();
    env.ok(&["pull", &env.image]);
    let images = env.ok(&["images"]);
    let repo = env.image.trim_end_matches(":latest");
    assert!(images.lines().any(|l| l.starts_with(repo) && l.contains("latest")), "images: {images}");
    assert_eq!(env.ok(&["run", "--rm", &env.image, "echo", "hello"]), "hello\n");
    let out = env.run(&["run", "--rm", &env.image, "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    let out = env.run(&["run", "--rm", &env.image, "sh", "-c", "echo to-stderr >&2; exit 0"]);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-stderr\n");
    assert!(env.container_dirs().is_empty(), "--rm leaves nothing: {:?}", env.container_dirs());
}

/// A relative `--root` (or `STRATA_ROOT`) is taken from the working directory: the container's
/// bundle paths (hostname, hosts, resolv.conf mounts) were relative before and runc could not
/// find them.
#[test]
fn a_relative_root_is_resolved_from_the_working_directory() {
    let env = Env::new();
    let parent = env.root().parent().expect("parent");
    let name = env.root().file_name().expect("name").to_string_lossy().into_owned();
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_strata")).current_dir(parent).arg("--root").arg(&name).args(args).stdin(Stdio::null()).output().expect("strata");
    let out = run(&["pull", &env.image]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["run", "--rm", &env.image, "cat", "/etc/hostname"]);
    assert!(out.status.success(), "run with --root {name} from {}: {}", parent.display(), String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
    assert!(env.container_dirs().is_empty(), "--rm leaves nothing: {:?}", env.container_dirs());
}

#[test]
fn env_workdir_user_hostname() {
    let env = Env::new();
    let out = env.ok(&[
        "run", "--rm", "-e", "GREETING=hi there", "-w", "/data/sub", "-u", "app", "--hostname", "box", &env.image,
        "sh", "-c", "echo \"$GREETING\"; pwd; id -u; id -g; echo $HOME; hostname",
    ]);
    assert_eq!(out, "hi there\n/data/sub\n1000\n1000\n/home/app\nbox\n");
    let out = env.ok(&["run", "--rm", "-u", "4242:4343", &env.image, "sh", "-c", "id -u; id -g"]);
    assert_eq!(out, "4242\n4343\n");
    let (code, err) = env.fail(&["run", "--rm", "-u", "nosuchuser", &env.image, "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("unable to find user nosuchuser"), "{err}");
}

#[test]
fn detached_logs_exec_stop_kill() {
    let env = Env::new();
    let script = "trap 'echo got TERM; exit 0' TERM; echo started; echo warn >&2; while true; do sleep 0.1; done";
    let id = env.ok(&["run", "-d", "--name", "svc", &env.image, "sh", "-c", script]);
    assert_eq!(id.trim().len(), 64);
    assert!(eventually(Duration::from_secs(10), || env.ok(&["logs", "svc"]).contains("started")));
    let ps = env.ok(&["ps"]);
    assert!(ps.lines().any(|l| l.contains("svc") && l.contains("Up")), "{ps}");

    assert_eq!(env.ok(&["exec", "svc", "cat", "/etc/hostname"]).trim(), &id.trim()[..12]);
    let out = env.run(&["exec", "-e", "X=42", "svc", "sh", "-c", "echo $X; exit 7"]);
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned()), (Some(7), "42\n".into()));

    // -i connects stdin; without it the process reads EOF at once.
    let mut child = env
        .cmd()
        .args(["exec", "-i", "svc", "sh", "-c", "read line; echo got:$line"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("exec -i");
    child.stdin.take().expect("stdin").write_all(b"typed\n").expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got:typed\n");
    // -t gives the process a terminal (util-linux `script` provides one to the CLI).
    let strata = env!("CARGO_BIN_EXE_strata");
    let root = env.root().display().to_string();
    let out = std::process::Command::new("script")
        .args(["-qec", &format!("{strata} --root {root} exec -it svc sh -c 'test -t 0 && echo IS-A-TTY'"), "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script");
    assert!(String::from_utf8_lossy(&out.stdout).contains("IS-A-TTY"), "{}", String::from_utf8_lossy(&out.stdout));
    let (_, err) = env.fail(&["exec", "-t", "svc", "true"]);
    assert!(err.contains("not a TTY"), "{err}");

    // Graceful: the trap runs and the container exits 0 well before the 30 s grace period.
    env.ok(&["stop", "--time", "30", "svc"]);
    let state = env.inspect("svc");
    assert_eq!(state["status"], "exited");
    assert_eq!(state["exit"]["code"], 0, "{state}");
    assert!(env.ok(&["logs", "svc"]).contains("got TERM"));
    let out = env.run(&["logs", "svc"]);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "warn\n");
    assert!(env.ok(&["logs", "-t", "--tail", "1", "svc"]).contains("Z got TERM"));

    // A process ignoring SIGTERM is killed after the grace period.
    env.ok(&["run", "-d", "--name", "stubborn", &env.image, "sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]);
    env.ok(&["stop", "-t", "1", "stubborn"]);
    assert_eq!(env.inspect("stubborn")["exit"]["code"], 137);

    env.ok(&["run", "-d", "--name", "victim", &env.image, "sleep", "1000"]);
    env.ok(&["kill", "victim"]);
    assert_eq!(env.ok(&["wait", "victim"]).trim(), "137");
    let (_, err) = env.fail(&["kill", "victim"]);
    assert!(err.contains("victim") && err.contains("exited"), "{err}");

    // Removing a running container needs force.
    env.ok(&["run", "-d", "--name", "busy", &env.image, "sleep", "1000"]);
    let (_, err) = env.fail(&["rm", "busy"]);
    assert!(err.contains("running"), "{err}");
    env.ok(&["rm", "-f", "busy", "svc", "stubborn", "victim"]);
    assert!(env.ok(&["ps", "-aq"]).trim().is_empty());
}

#[test]
fn memory_limit_oom_kills() {
    let env = Env::new();
    let out = env.run(&[
        "run", "--name", "hog", "--memory", "16m", "--network", "none", &env.image, "sh", "-c",
        "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo ${#x}",
    ]);
    assert_eq!(out.status.code(), Some(137), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(env.inspect("hog")["exit"]["oom_killed"], true);
    env.ok(&["rm", "hog"]);
    // Removed on exit (the runtime in the foreground): still 137, and while the record is there
    // it says OOM; removing it then leaves nothing behind.
    let hog = "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo ${#x}";
    let out = env.run(&["run", "--rm", "--memory", "16m", "--network", "none", &env.image, "sh", "-c", hog]);
    assert_eq!(out.status.code(), Some(137), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let id = env.ok(&["run", "-d", "--rm", "--memory", "16m", "--network", "none", &env.image, "sh", "-c", hog]).trim().to_string();
    assert_eq!(env.ok(&["wait", &id]).trim(), "137");
    assert_eq!(env.inspect(&id)["exit"]["oom_killed"], true, "{}", env.inspect(&id));
    assert!(!env.ok(&["ps", "-aq", "--no-trunc"]).contains(&id), "the next listing removes it");
    assert!(host_traces(env.root(), &id).is_empty(), "{:?}", host_traces(env.root(), &id));
    // Within the limit the same program is fine.
    let out = env.ok(&["run", "--rm", "--memory", "64m", "--cpus", "0.5", "--pids-limit", "50", "--network", "none", &env.image, "sh", "-c", "x=$(head -c 1000000 /dev/zero | tr '\\0' a); echo ${#x}"]);
    assert_eq!(out.trim(), "1000000");
}

#[test]
fn published_port_reached_from_host() {
    let env = Env::new();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    env.ok(&[
        "run", "-d", "--name", "web", "-p", &publish, &env.image, "sh", "-c",
        "mkdir -p /www && echo hello-from-container > /www/index.html && exec httpd -f -p 80 -h /www",
    ]);
    let state = env.inspect("web");
    assert!(state["ip"].as_str().is_some_and(|ip| ip.starts_with("10.")), "{state}");
    let mut body = String::new();
    let reached = eventually(Duration::from_secs(10), || {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        if s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").is_err() {
            return false;
        }
        body.clear();
        s.read_to_string(&mut body).is_ok() && body.contains("hello-from-container")
    });
    assert!(reached, "no answer through the published port: {body:?}");
    // The port is taken while the container runs: a second one cannot publish it.
    let (code, err) = env.fail(&["run", "-d", "--name", "web2", "-p", &publish, &env.image, "sleep", "10"]);
    assert_eq!(code, 125);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert_eq!(env.container_dirs().len(), 1, "the failed create left nothing");
}

#[test]
fn containers_outlive_the_cli() {
    let env = Env::new();
    // A foreground `run` whose CLI is killed: the container keeps running under its supervisor.
    let mut fg = env.cmd().args(["run", "--name", "fg", &env.image, "sh", "-c", "echo up; sleep 1000"]).stdout(std::process::Stdio::null()).spawn().expect("spawn");
    let logs_say_up = || {
        let out = env.run(&["logs", "fg"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("up")
    };
    assert!(eventually(Duration::from_secs(20), logs_say_up));
    let cli_pid = fg.id();
    fg.kill().expect("kill -9 the CLI");
    let _ = fg.wait();
    let state = env.inspect("fg");
    assert_eq!(state["status"], "running", "{state}");
    let pid = state["pid"].as_i64().expect("pid");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    // The supervisor is not the CLI's child: its parent is init or a subreaper, not cli_pid.
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.root().join("containers").join(state["id"].as_str().expect("id")).join("record.json")).expect("record"),
    )
    .expect("json");
    let shim = record["shim_pid"].as_i64().expect("shim pid");
    let stat = std::fs::read_to_string(format!("/proc/{shim}/stat")).expect("shim alive");
    let ppid: u32 = stat[stat.rfind(')').expect(")") + 2..].split_whitespace().nth(1).expect("ppid").parse().expect("num");
    assert_ne!(ppid, cli_pid);

    // A new CLI process sees and controls it, and its exit is still recorded.
    assert!(env.ok(&["ps"]).contains("fg"));
    assert_eq!(env.ok(&["exec", "fg", "echo", "still here"]), "still here\n");
    // pid 1 of a pid namespace ignores signals it has no handler for, so use KILL.
    env.ok(&["kill", "-s", "KILL", "fg"]);
    assert_eq!(env.ok(&["wait", "fg"]).trim(), "137");
}

#[test]
fn isolation_and_secure_defaults() {
    let env = Env::new();
    let host_procs = std::fs::read_dir("/proc").expect("proc").flatten().filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok()).count();
    let out = env.ok(&["run", "--rm", &env.image, "sh", "-c", "ls /proc | grep -c '^[0-9]'; cat /proc/1/cmdline | tr '\\0' ' '; echo"]);
    let mut lines = out.lines();
    let seen: usize = lines.next().expect("count").trim().parse().expect("number");
    assert!(seen <= 3 && host_procs > seen, "container sees {seen} processes, host has {host_procs}");
    assert!(lines.next().expect("cmdline").starts_with("sh -c"), "pid 1 is the container's own command");

    let out = env.ok(&["run", "--rm", &env.image, "sh", "-c", "(echo h > /proc/sysrq-trigger) 2>/dev/null && echo WROTE || echo DENIED"]);
    assert_eq!(out.trim(), "DENIED");

    let status = env.ok(&["run", "--rm", &env.image, "cat", "/proc/self/status"]);
    let field = |s: &str, k: &str| s.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string()).expect(k);
    let cap_eff = u64::from_str_radix(&field(&status, "CapEff:"), 16).expect("hex");
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    assert_eq!(cap_eff & CAP_SYS_ADMIN, 0, "no CAP_SYS_ADMIN by default");
    assert_eq!(field(&status, "NoNewPrivs:"), "1");
    assert_eq!(field(&status, "Seccomp:"), "2", "a seccomp filter is installed");
    let out = env.run(&["run", "--rm", &env.image, "sh", "-c", "mount -t tmpfs none /mnt"]);
    assert_ne!(out.status.code(), Some(0), "mount must be denied");

    let status = env.ok(&["run", "--rm", "--privileged", &env.image, "cat", "/proc/self/status"]);
    let cap_eff = u64::from_str_radix(&field(&status, "CapEff:"), 16).expect("hex");
    assert_ne!(cap_eff & CAP_SYS_ADMIN, 0, "--privileged grants CAP_SYS_ADMIN");
    assert_eq!(field(&status, "Seccomp:"), "0");
}

#[test]
fn bad_input_is_refused_cleanly() {
    let env = Env::new();
    let missing = format!("{}/nope:latest", env.registry.addr);
    let (code, err) = env.fail(&["run", "--rm", &missing, "true"]);
    assert_eq!(code, 125);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("strata:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {err}");
    assert!(errors[0].contains("image not found") && errors[0].contains("nope"), "{err}");

    let (_, err) = env.fail(&["pull", "127.0.0.1:1/busybox:latest"]);
    assert!(err.contains("127.0.0.1:1"), "{err}");

    let (_, err) = env.fail(&["run", "--memory", "lots", &env.image, "true"]);
    assert!(err.contains("invalid memory value \"lots\""), "{err}");
    let (_, err) = env.fail(&["run", "--cpus=-1", &env.image, "true"]);
    assert!(err.contains("invalid cpus value"), "{err}");
    let (_, err) = env.fail(&["run", "-p", "99999:80", &env.image, "true"]);
    assert!(err.contains("invalid port mapping"), "{err}");
    let (_, err) = env.fail(&["--runtime", "no-such-runtime", "run", &env.image, "true"]);
    assert!(err.contains("OCI runtime 'no-such-runtime' not found"), "{err}");
    let (_, err) = env.fail(&["run", "--name", "bad/name", &env.image, "true"]);
    assert!(err.contains("invalid container name"), "{err}");
    let (_, err) = env.fail(&["run", "--rm", &env.image, "/no/such/binary"]);
    assert!(err.contains("/no/such/binary"), "{err}");
    assert!(env.container_dirs().is_empty(), "failed creates leave nothing: {:?}", env.container_dirs());
    let names: Vec<_> = std::fs::read_dir(env.root().join("names")).expect("names").collect();
    assert!(names.is_empty(), "no name stays reserved");

    env.ok(&["run", "-d", "--name", "taken", &env.image, "sleep", "100"]);
    let (_, err) = env.fail(&["run", "-d", "--name", "taken", &env.image, "sleep", "100"]);
    assert!(err.contains("\"taken\" is already in use"), "{err}");
    assert_eq!(env.container_dirs().len(), 1);
    let (_, err) = env.fail(&["logs", "nobody"]);
    assert!(err.contains("no such container: nobody"), "{err}");
}

#[test]
fn lifecycle_leaves_no_traces() {
    let env = Env::new();
    env.ok(&["pull", &env.image]);
    for i in 0..6 {
        let network = ["bridge", "none", "host"][i % 3];
        let mut args = vec!["run", "-d", "--network", network];
        let publish = format!("{}:80", free_port());
        if network == "bridge" {
            args.extend(["-p", publish.as_str()]);
        }
        args.extend([env.image.as_str(), "sleep", "100"]);
        let id = env.ok(&args).trim().to_string();
        env.ok(&["exec", &id, "true"]);
        if i % 2 == 0 {
            env.ok(&["stop", "-t", "1", &id]);
            env.ok(&["rm", &id]);
        } else {
            env.ok(&["rm", "-f", &id]);
        }
        let traces = host_traces(env.root(), &id);
        assert!(traces.is_empty(), "container {id} ({network}) left {traces:?}");
    }
    assert!(env.container_dirs().is_empty());
    assert!(env.ok(&["ps", "-aq"]).trim().is_empty());
}

#[test]
fn auto_remove_containers_go_away() {
    let env = Env::new();
    // Foreground --rm: the exit code comes through and nothing stays.
    let out = env.run(&["run", "--rm", "--network", "none", &env.image, "sh", "-c", "echo bye; exit 5"]);
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned()), (Some(5), "bye\n".to_string()));
    assert!(env.container_dirs().is_empty());
    // A signal from outside: 128 + 9.
    let mut fg = env.cmd().args(["run", "--rm", "--name", "victim", "--network", "none", &env.image, "sleep", "100"]).spawn().expect("spawn");
    let running = || {
        let out = env.run(&["inspect", "victim"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"status\": \"running\"")
    };
    assert!(eventually(Duration::from_secs(10), running));
    env.ok(&["kill", "victim"]);
    assert_eq!(fg.wait().expect("wait").code(), Some(137));
    // -d --rm: once it has exited, the next listing removes it.
    let id = env.ok(&["run", "-d", "--rm", "--network", "none", &env.image, "true"]).trim().to_string();
    assert!(eventually(Duration::from_secs(10), || !env.ok(&["ps", "-aq", "--no-trunc"]).contains(&id)));
    assert!(host_traces(env.root(), &id).is_empty());
    assert!(env.container_dirs().is_empty());
}

#[test]
fn interactive_run_with_stdin_and_terminal() {
    let env = Env::new();
    env.ok(&["pull", &env.image]);
    // -i: our stdin is the container's.
    let mut child = env
        .cmd()
        .args(["run", "--rm", "-i", "--network", "none", &env.image, "sh", "-c", "read a; read b; echo \"$b $a\"; cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run -i");
    child.stdin.take().expect("stdin").write_all(b"first\nsecond\nrest\n").expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "second first\nrest\n");
    assert_eq!(out.status.code(), Some(0), "EOF on stdin ends cat");

    // -it: a terminal, typed input and the exit code (util-linux `script` gives us a pty).
    let strata = env!("CARGO_BIN_EXE_strata");
    let root = env.root().display().to_string();
    let cmd = format!("{strata} --root {root} run --rm -it --network none {} sh", env.image);
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script");
    let mut stdin = child.stdin.take().expect("stdin");
    std::thread::sleep(Duration::from_millis(1500));
    stdin.write_all(b"tty; echo typed-$((20+22))\n").expect("type");
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(b"exit 3\n").expect("exit");
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/0") && text.contains("typed-42"), "{text}");
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(env.container_dirs().is_empty());

    // -t needs a terminal; attach needs -i or -t.
    let (_, err) = env.fail(&["run", "-t", &env.image, "true"]);
    assert!(err.contains("not a TTY"), "{err}");
}


/// A child's output gathered on a thread, to wait for text while the child runs.
struct Collected(Arc<Mutex<Vec<u8>>>);

impl Collected {
    fn new(mut from: impl Read + Send + 'static) -> Collected {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = from.read(&mut chunk) {
                sink.lock().expect("lock").extend_from_slice(&chunk[..n]);
            }
        });
        Collected(buf)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }

    fn wait_for(&self, needle: &str) -> bool {
        eventually(Duration::from_secs(20), || self.text().contains(needle))
    }
}

/// Wait for a child to exit, killing it after `timeout`.
fn exit_code_within(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn attach_pipes_input_and_output_and_passes_the_exit_code() {
    let env = Env::new();
    let script = "echo before-attach; while read l; do echo got:$l; echo err:$l >&2; done; echo bye; exit 4";
    env.ok(&["run", "-d", "-i", "--name", "echo", "--network", "none", &env.image, "sh", "-c", script]);
    assert!(eventually(Duration::from_secs(10), || env.ok(&["logs", "echo"]).contains("before-attach")));

    let mut child = env
        .cmd()
        .args(["attach", "echo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("attach");
    // EOF on our stdin closes the container's, which ends its loop.
    child.stdin.take().expect("stdin").write_all(b"one\ntwo\n").expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got:one\ngot:two\nbye\n", "only output from the moment of attaching");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err:one\nerr:two\n");
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(env.inspect("echo")["exit"]["code"], 4);

    for (args, expected) in [(["attach", "echo"], "cannot attach to container echo: it is exited"), (["attach", "nobody"], "no such container: nobody")] {
        let (code, err) = env.fail(&args);
        assert_eq!(code, 125, "{err}");
        assert_eq!(err.trim_end(), format!("strata: {expected}"), "one line");
    }
}

#[test]
fn attach_without_stdin_follows_the_output_to_the_end() {
    let env = Env::new();
    // Reads stdin in the background: anything forwarded would show up as got:/stdin-closed.
    let script = "trap 'echo stopping; exit 7' TERM; (while read l; do echo got:$l; done; echo stdin-closed) & \
                  echo early; while true; do echo tick; sleep 0.1; done";
    env.ok(&["run", "-d", "-i", "--name", "ticker", "--network", "none", &env.image, "sh", "-c", script]);
    assert!(eventually(Duration::from_secs(10), || env.ok(&["logs", "ticker"]).contains("early")));
    let mut child = env
        .cmd()
        .args(["attach", "--no-stdin", "ticker"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("attach");
    child.stdin.take().expect("stdin").write_all(b"ignored\n").expect("write");
    let out = Collected::new(child.stdout.take().expect("stdout"));
    assert!(out.wait_for("tick"), "{}", out.text());
    env.ok(&["stop", "ticker"]);
    assert_eq!(exit_code_within(&mut child, Duration::from_secs(20)), Some(7), "{}", out.text());
    let text = out.text();
    assert!(text.ends_with("tick\nstopping\n") && !text.contains("early"), "{text}");
    assert!(!text.contains("got:") && !text.contains("stdin-closed"), "--no-stdin forwards nothing: {text}");
}

#[test]
fn attach_to_a_terminal_and_detach_with_ctrl_p_ctrl_q() {
    let env = Env::new();
    env.ok(&["run", "-d", "-it", "--name", "shell", "--network", "none", &env.image, "sh"]);
    let strata = env!("CARGO_BIN_EXE_strata");
    let root = env.root().display().to_string();
    // util-linux `script` gives strata a terminal; keystrokes typed before strata reads them
    // wait in that terminal.
    let in_terminal = |args: &str| {
        let mut child = Command::new("script")
            .args(["-qec", &format!("{strata} --root {root} {args}"), "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("script");
        let out = Collected::new(child.stdout.take().expect("stdout"));
        (child, out)
    };
    let attach = || in_terminal("attach shell");

    let (mut child, out) = attach();
    let mut keys = child.stdin.take().expect("stdin");
    keys.write_all(b"echo hello-$((6*7)); tty\n").expect("type");
    assert!(out.wait_for("hello-42"), "{}", out.text());
    assert!(out.wait_for("/dev/pts/0"), "{}", out.text());
    let top = env.ok(&["top", "shell"]);
    assert!(top.lines().any(|l| l.contains("pts/0") && l.ends_with(" sh")), "{top}");
    keys.write_all(&[0x10, 0x11]).expect("detach keys");
    assert_eq!(exit_code_within(&mut child, Duration::from_secs(10)), Some(0), "{}", out.text());
    drop(keys);
    assert_eq!(env.inspect("shell")["status"], "running", "detaching leaves it running");

    // Attached again, the shell's exit code becomes ours.
    let (mut child, out) = attach();
    let mut keys = child.stdin.take().expect("stdin");
    keys.write_all(b"echo again-$((1+1))\n").expect("type");
    assert!(out.wait_for("again-2"), "{}", out.text());
    keys.write_all(b"exit 5\n").expect("type");
    assert_eq!(exit_code_within(&mut child, Duration::from_secs(10)), Some(5), "{}", out.text());
    assert_eq!(env.inspect("shell")["exit"]["code"], 5);

    // A terminal container needs a terminal on stdin, unless stdin stays out of it.
    env.ok(&["run", "-d", "-it", "--name", "shell2", "--network", "none", &env.image, "sh"]);
    let (code, err) = env.fail(&["attach", "shell2"]);
    assert!(code == 125 && err.contains("not a TTY"), "{err}");
    let (_, err) = env.fail(&["attach", "--detach-keys", "ctrl-", "shell2"]);
    assert!(err.contains("invalid detach keys"), "{err}");

    // `run -it` is the same session: other detach keys work there too.
    let (mut child, out) = in_terminal(&format!("run -it --detach-keys ctrl-x --name fg --network none {} sh", env.image));
    let mut keys = child.stdin.take().expect("stdin");
    keys.write_all(b"echo fg-$((2*3))\n").expect("type");
    assert!(out.wait_for("fg-6"), "{}", out.text());
    keys.write_all(&[0x18]).expect("ctrl-x");
    assert_eq!(exit_code_within(&mut child, Duration::from_secs(10)), Some(0), "{}", out.text());
    assert_eq!(env.inspect("fg")["status"], "running");
}

#[test]
fn restart_keeps_the_container_and_appends_to_its_log() {
    let env = Env::new();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    // Counts its runs in its own filesystem and serves the count on the published port.
    let script = "n=$(( $(cat /runs 2>/dev/null || echo 0) + 1 )); echo $n > /runs; echo run-$n; \
                  mkdir -p /www; echo run-$n > /www/index.html; exec httpd -f -p 80 -h /www";
    env.ok(&["run", "-d", "--name", "web", "-p", &publish, &env.image, "sh", "-c", script]);
    let served = |text: &str| {
        eventually(Duration::from_secs(10), || {
            let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut body = String::new();
            s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").is_ok() && s.read_to_string(&mut body).is_ok() && body.contains(text)
        })
    };
    assert!(served("run-1"));
    let first = env.inspect("web");

    // httpd as pid 1 ignores SIGTERM: --time 1 kills it after a second, not the default ten.
    let started = Instant::now();
    assert_eq!(env.ok(&["restart", "--time", "1", "web"]), "web\n");
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
    assert!(served("run-2"), "the new run publishes the port again");
    let second = env.inspect("web");
    assert_eq!((second["id"].clone(), second["status"].clone()), (first["id"].clone(), "running".into()));
    assert_ne!(second["pid"], first["pid"]);
    assert_ne!(second["started_at"], first["started_at"]);

    // An exited container restarts too (as `start` does).
    env.ok(&["stop", "-t", "1", "web"]);
    assert_eq!(env.inspect("web")["status"], "exited");
    env.ok(&["restart", "web"]);
    assert!(served("run-3"));
    let logs = env.ok(&["logs", "web"]);
    assert_eq!(logs.lines().filter(|l| l.starts_with("run-")).collect::<Vec<_>>(), ["run-1", "run-2", "run-3"], "{logs}");
    env.ok(&["stop", "-t", "1", "web"]);
    assert_eq!(env.ok(&["start", "web"]), "web\n");
    assert!(served("run-4"));

    let (_, err) = env.fail(&["restart", "nobody"]);
    assert!(err.contains("no such container: nobody"), "{err}");
    // Containers removed on exit are refused before they are stopped.
    env.ok(&["run", "-d", "--rm", "--name", "temp", "--network", "none", &env.image, "sleep", "100"]);
    let (_, err) = env.fail(&["restart", "-t", "0", "temp"]);
    assert!(err.contains("--rm"), "{err}");
    assert_eq!(env.inspect("temp")["status"], "running");
}

#[test]
fn port_and_top() {
    let env = Env::new();
    let (p1, p2) = (free_port(), free_port());
    let (local, any) = (format!("127.0.0.1:{p1}:80"), format!("{p2}:8080"));
    env.ok(&["run", "-d", "--name", "svc", "-u", "app", "-p", &local, "-p", &any, &env.image, "sh", "-c", "sleep 1000 & exec sleep 1001"]);
    assert_eq!(env.ok(&["port", "svc"]), format!("80/tcp -> 127.0.0.1:{p1}\n8080/tcp -> 0.0.0.0:{p2}\n"));
    assert_eq!(env.ok(&["port", "svc", "8080/tcp"]), format!("0.0.0.0:{p2}\n"));
    let (code, err) = env.fail(&["port", "svc", "81"]);
    assert!(code == 125 && err.contains("no public port 81/tcp published for svc"), "{err}");

    // Pids as the container sees them: the exec'd sleep is pid 1, its child's parent.
    let mut top = String::new();
    // Until the background child has exec'd `sleep 1000` its row reads `sh -c sleep 1000 & ...`:
    // wait for rows that are the two sleeps themselves.
    let is_sleep = |top: &str, arg: &str| top.lines().any(|l| l.split_whitespace().collect::<Vec<_>>().ends_with(&["sleep", arg]));
    assert!(eventually(Duration::from_secs(10), || {
        top = env.ok(&["top", "svc"]);
        is_sleep(&top, "1000") && is_sleep(&top, "1001")
    }), "{top}");
    let rows: Vec<Vec<&str>> = top.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["USER", "PID", "PPID", "%CPU", "ELAPSED", "TTY", "TIME", "COMMAND"]);
    let row = |cmd: &str| rows.iter().find(|r| r.ends_with(&["sleep", cmd])).cloned().unwrap_or_else(|| panic!("{top}"));
    let (init, child) = (row("1001"), row("1000"));
    assert_eq!((init[0], init[1], init[2], init[5]), ("app", "1", "0", "?"), "{top}");
    assert_eq!((child[0], child[2]), ("app", "1"), "{top}");
    assert!(init[4].ends_with('s') && init[3].parse::<f64>().is_ok(), "{top}");
    assert_eq!(rows.len(), 3, "nothing from outside the container: {top}");

    env.ok(&["run", "-d", "--name", "quiet", "--network", "none", &env.image, "sleep", "100"]);
    assert_eq!(env.ok(&["port", "quiet"]), "");
    env.ok(&["kill", "quiet"]);
    env.ok(&["wait", "quiet"]);
    let (code, err) = env.fail(&["top", "quiet"]);
    assert!(code == 125 && err.contains("it is exited"), "{err}");
}

/// A tiny xorshift generator (the seed is printed so a failure can be replayed).
struct Rng(u64);

impl Rng {
    fn from_time() -> Rng {
        let seed = std::env::var("STRATA_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1
        });
        eprintln!("random seed: STRATA_TEST_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Every id that has a workload directory in any strata root under /var/tmp (tests' roots
/// live there), to tell a leaked host object from one owned by a workload of another test.
/// The ids of every workload the `strata` commands of one root began to create while this
/// watches: a create writes `<root>/intents/<kind>/<id>` (through `.<id>.<pid>.tmp`) before it
/// makes anything else (directory, lease, netns, cgroup), and inotify reports each file even
/// when a killed create's recovery removed it long before anyone looked. Host-wide objects of
/// other ids (other tests, other engineers' servers on the same host) are not this run's.
struct IdsMade {
    fd: std::os::fd::OwnedFd,
    ids: std::collections::HashSet<String>,
}

impl IdsMade {
    fn watch(root: &std::path::Path) -> IdsMade {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: inotify_init1 takes flags only; the fd it returns is owned here.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(raw >= 0, "inotify_init1: {}", std::io::Error::last_os_error());
        // SAFETY: raw is a new descriptor nobody else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        for kind in ["containers", "sandboxes"] {
            let dir = root.join("intents").join(kind);
            std::fs::create_dir_all(&dir).expect("intents dir");
            let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("path");
            // SAFETY: fd is an inotify descriptor and path a NUL-terminated string.
            let wd = unsafe { libc::inotify_add_watch(std::os::fd::AsRawFd::as_raw_fd(&fd), path.as_ptr(), libc::IN_CREATE | libc::IN_MOVED_TO) };
            assert!(wd >= 0, "inotify_add_watch {}: {}", dir.display(), std::io::Error::last_os_error());
        }
        IdsMade { fd, ids: Default::default() }
    }

    /// The ids seen so far (reads the events queued since the last call).
    fn ids(&mut self) -> &std::collections::HashSet<String> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: buf is valid for buf.len() bytes.
            let n = unsafe { libc::read(std::os::fd::AsRawFd::as_raw_fd(&self.fd), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                let e = std::io::Error::last_os_error();
                assert!(n == 0 || e.kind() == std::io::ErrorKind::WouldBlock, "reading inotify: {e}");
                break;
            }
            let mut off = 0usize;
            let header = std::mem::size_of::<libc::inotify_event>();
            while off + header <= n as usize {
                // SAFETY: the kernel wrote a whole inotify_event at off (read_unaligned: no alignment assumed).
                let ev: libc::inotify_event = unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                assert!(ev.mask & libc::IN_Q_OVERFLOW == 0, "inotify queue overflowed: ids may be missing");
                let name = &buf[off + header..off + header + ev.len as usize];
                let name = String::from_utf8_lossy(name.split(|b| *b == 0).next().unwrap_or_default()).into_owned();
                let id: String = name.trim_start_matches('.').chars().take(64).collect();
                if id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()) {
                    self.ids.insert(id);
                }
                off += header + ev.len as usize;
            }
        }
        &self.ids
    }
}

/// Host-wide objects named by workload id (IPAM leases, network namespaces, cgroups) of the
/// ids this run made whose workload has no directory under `root`: leaks. Only what is
/// orphaned in two looks a few seconds apart counts (a removal may be finishing).
fn orphaned_host_objects(root: &std::path::Path, made: &mut IdsMade) -> Vec<String> {
    let first = orphans_now(root, made.ids());
    if first.is_empty() {
        return first;
    }
    std::thread::sleep(Duration::from_secs(3));
    let second = orphans_now(root, made.ids());
    first.into_iter().filter(|o| second.contains(o)).collect()
}

fn orphans_now(root: &std::path::Path, ours: &std::collections::HashSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    // Listed first, directories second: an object made after the listing cannot be missed,
    // and every create makes the directory before these objects.
    let mut objects: Vec<(String, String)> = Vec::new();
    for e in std::fs::read_dir("/run/strata/ipam/strata").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<std::net::Ipv4Addr>().is_ok() {
            let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
            let id = owner.lines().next().unwrap_or("").trim().to_string();
            objects.push((id, format!("lease {name}")));
        }
    }
    for e in std::fs::read_dir("/run/strata/netns").into_iter().flatten().flatten() {
        objects.push((e.file_name().to_string_lossy().into_owned(), format!("netns {}", e.path().display())));
    }
    for c in ["memory", "pids", "cpu", "freezer", "unified"] {
        for e in std::fs::read_dir(std::path::Path::new("/sys/fs/cgroup").join(c).join("strata")).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                objects.push((e.file_name().to_string_lossy().into_owned(), format!("cgroup {}", e.path().display())));
            }
        }
    }
    let live = |id: &str| ["containers", "sandboxes"].iter().any(|k| root.join(k).join(id).exists());
    for (id, what) in objects {
        if ours.contains(&id) && !live(&id) {
            found.push(format!("{what} (owner {id})"));
        }
    }
    found
}

/// What one container could leave on the host (mounts, cgroups, netns, its directory,
/// processes), other containers of the same root aside.
fn traces_of(root: &std::path::Path, id: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    found.extend(mounts.lines().filter(|l| l.contains(id)).map(|l| format!("mount: {l}")));
    for c in ["memory", "pids", "cpu", "freezer", "devices", "unified"] {
        let d = std::path::Path::new("/sys/fs/cgroup").join(c).join("strata").join(id);
        if d.exists() {
            found.push(format!("cgroup: {}", d.display()));
        }
    }
    for p in [std::path::Path::new("/run/strata/netns").join(id), root.join("containers").join(id), root.join("run/runc").join(id)] {
        if p.exists() {
            found.push(format!("path: {}", p.display()));
        }
    }
    // Its files are deleted in the background (`<root>/trash`): give that a moment.
    let in_trash = || {
        std::fs::read_dir(root.join("trash")).into_iter().flatten().flatten().any(|e| e.file_name().to_string_lossy().starts_with(id))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_trash() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if in_trash() {
        found.push(format!("trash: {id}"));
    }
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read_to_string(p.path().join("cmdline")) {
            // A remover of the trash whose directory is gone is only exiting.
            if cmd.contains(id) && !cmd.starts_with("rm\0-rf\0--\0") {
                found.push(format!("process {}: {}", p.file_name().to_string_lossy(), cmd.replace('\0', " ")));
            }
        }
    }
    found
}

/// `kill -9` of `strata run -d` at random moments leaves nothing half-done: every listed
/// container's state matches the facts (a running one answers exec), each is removable with
/// `rm -f` at once, no name is held by a container nobody can find, leases belong to listed
/// containers, and once everything is removed nothing is left on the host.
#[test]
fn kill_9_of_run_leaves_nothing_half_done() {
    let env = Env::new();
    env.ok(&["pull", &env.image]);
    let mut made = IdsMade::watch(env.root());
    let mut rng = Rng::from_time();
    let marker = format!("{}", 900_000 + std::process::id() % 99_999);
    let iterations = 75;
    let names: Vec<String> = (0..iterations).map(|i| format!("k{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let mut args = vec!["run", "-d", "--name", name.as_str()];
        let publish = format!("127.0.0.1:{}:80", free_port());
        match i % 4 {
            0 => args.extend(["-p", publish.as_str()]),
            1 => args.extend(["--network", "none"]),
            _ => {}
        }
        args.extend([env.image.as_str(), "sleep", marker.as_str()]);
        let mut child = env.cmd().args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
        // 5-150 ms; the last few later, to also reach the end of a create (here it takes a few
        // hundred milliseconds) and so exercise finishing as well as rolling back.
        let delay = if i < 60 { 5 + rng.below(146) } else { 150 + rng.below(500) };
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
    }

    let list: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["ps", "-a", "--format", "json"])).expect("ps json");
    let listed: std::collections::HashMap<String, serde_json::Value> =
        list.iter().map(|c| (c["id"].as_str().expect("id").to_string(), c.clone())).collect();
    eprintln!("{} of {iterations} containers listed", listed.len());
    for c in &list {
        let (id, name, status) = (c["id"].as_str().expect("id"), c["name"].as_str().expect("name"), c["status"].as_str().expect("status"));
        assert!(["created", "running"].contains(&status), "{name} is {status}: {c}");
        // The name resolves to this container.
        assert_eq!(env.inspect(name)["id"], id, "the name {name} resolves to its container");
        let pid = c["pid"].as_i64();
        // The facts: the processes in the container's cgroup.
        let procs: Vec<String> = ["pids", "memory", "unified"]
            .iter()
            .find_map(|c| std::fs::read_to_string(format!("/sys/fs/cgroup/{c}/strata/{id}/cgroup.procs")).ok())
            .unwrap_or_default()
            .lines()
            .map(|p| std::fs::read_to_string(format!("/proc/{}/cmdline", p.trim())).unwrap_or_default().replace('\0', " "))
            .collect();
        let runs_program = procs.iter().any(|c| c.contains(&marker));
        assert_eq!(status == "running", runs_program, "{name} is {status} and its processes are {procs:?}: {c}");
        if status == "created" && pid.is_none() {
            assert!(procs.is_empty(), "{name} is created without a process, but has {procs:?}");
        }
        match status {
            "running" => {
                let pid = pid.unwrap_or_else(|| panic!("running without a pid: {c}"));
                let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                assert!(cmdline.contains(&marker), "a running container runs its program: {c} {cmdline:?}");
                assert_eq!(env.ok(&["exec", id, "echo", "in"]), "in\n", "exec in {name}");
            }
            _ => {
                if let Some(pid) = pid {
                    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    assert!(comm.starts_with("runc:[2:INIT]"), "a created container has not started its program: {c} {comm:?}");
                }
            }
        }
        // Its address is its lease.
        if let Some(ip) = c["ip"].as_str() {
            let lease = std::fs::read_to_string(format!("/run/strata/ipam/strata/{ip}")).unwrap_or_default();
            assert!(lease.starts_with(id), "the lease of {ip} is held by {name}: {lease:?}");
        }
    }
    // Every name is held by a listed container; every other name is free.
    for e in std::fs::read_dir(env.root().join("names")).expect("names").flatten() {
        let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
        assert!(listed.contains_key(&owner), "name {:?} is held by {owner:?}, which is not listed", e.file_name());
    }
    for name in &names {
        if !list.iter().any(|c| c["name"] == name.as_str()) {
            let out = env.run(&["inspect", name]);
            assert!(!out.status.success(), "an unlisted name resolves: {name}");
        }
    }
    // No lease, namespace or cgroup of this run's containers without its container.
    assert!(made.ids().len() >= listed.len(), "{} ids seen, {} containers listed", made.ids().len(), listed.len());
    let orphans = orphaned_host_objects(env.root(), &mut made);
    assert!(orphans.is_empty(), "leaked: {orphans:#?}");

    // Every listed container is removable with rm -f, quickly (nothing waits a stop timeout).
    for id in listed.keys() {
        let t = Instant::now();
        env.ok(&["rm", "-f", id]);
        assert!(t.elapsed() < Duration::from_secs(5), "rm -f of {} took {:?}", listed[id], t.elapsed());
        let traces = traces_of(env.root(), id);
        assert!(traces.is_empty(), "{id} left {traces:?}");
    }
    assert!(env.ok(&["ps", "-aq"]).trim().is_empty());
    // Nothing left anywhere: names, runtime state, mounts, processes, leases, trash.
    for dir in ["names", "containers", "run/runc"] {
        let left: Vec<_> = std::fs::read_dir(env.root().join(dir)).into_iter().flatten().flatten().map(|e| e.path()).collect();
        assert!(left.is_empty(), "{dir} still holds {left:?}");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let root = env.root().display().to_string();
    assert!(!mounts.lines().any(|l| l.contains(&root)), "mounts left under the root");
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmd = std::fs::read_to_string(p.path().join("cmdline")).unwrap_or_default().replace('\0', " ");
        assert!(!cmd.contains(&root) && !cmd.contains(&format!("sleep {marker}")), "process left: {cmd}");
    }
    let orphans = orphaned_host_objects(env.root(), &mut made);
    assert!(orphans.is_empty(), "leaked: {orphans:#?}");
    // The trash is emptied in the background (rm -rf of 75 root filesystems: slow when the
    // disk is busy with other work; CI once needed more than 20 s).
    let trash = || std::fs::read_dir(env.root().join("trash")).into_iter().flatten().flatten().map(|e| e.path()).collect::<Vec<_>>();
    assert!(eventually(Duration::from_secs(90), || trash().is_empty()), "trash not emptied: {:?}", trash());
    // Every name is free again.
    for name in names.iter().take(5) {
        env.ok(&["run", "-d", "--name", name, "--network", "none", &env.image, "true"]);
    }
}

/// How a container ended is shown with a reason: a signal by name, an OOM kill, an error code.
#[test]
fn exit_reasons_in_ps_and_inspect() {
    let env = Env::new();
    env.ok(&["run", "-d", "--name", "sig", "--network", "none", &env.image, "sleep", "1000"]);
    env.ok(&["kill", "sig"]);
    assert_eq!(env.ok(&["wait", "sig"]).trim(), "137");
    let exit = &env.inspect("sig")["exit"];
    assert_eq!((exit["code"].as_i64(), exit["signal"].as_i64()), (Some(137), Some(9)), "{exit}");
    assert_eq!((exit["reason"].as_str(), exit["signal_name"].as_str()), (Some("Signaled"), Some("SIGKILL")), "{exit}");

    env.run(&["run", "--name", "err", "--network", "none", &env.image, "sh", "-c", "exit 137"]);
    let exit = &env.inspect("err")["exit"];
    assert_eq!((exit["code"].as_i64(), exit["reason"].as_str()), (Some(137), Some("Error")), "a code of 137 is not a signal: {exit}");
    assert!(exit["signal"].is_null() && exit["signal_name"].is_null(), "{exit}");
    env.ok(&["run", "--name", "done", "--network", "none", &env.image, "true"]);
    assert_eq!(env.inspect("done")["exit"]["reason"], "Completed");

    let hog = "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo ${#x}";
    let out = env.run(&["run", "--name", "hog", "--memory", "16m", "--network", "none", &env.image, "sh", "-c", hog]);
    assert_eq!(out.status.code(), Some(137));
    let exit = &env.inspect("hog")["exit"];
    assert_eq!((exit["reason"].as_str(), exit["oom_killed"].as_bool()), (Some("OOMKilled"), Some(true)), "{exit}");

    let ps = env.ok(&["ps", "-a"]);
    let row = |name: &str| ps.lines().find(|l| l.trim_end().ends_with(name)).unwrap_or_else(|| panic!("{name} in {ps}")).to_string();
    assert!(row("sig").contains("Exited (137, SIGKILL)"), "{ps}");
    assert!(row("hog").contains("Exited (137, OOMKilled)"), "{ps}");
    assert!(row("err").contains("Exited (137) "), "{ps}");
    assert!(row("done").contains("Exited (0) "), "{ps}");
}

fn http_body(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// `kill -9` of a container's supervisor: the container is not killed by SIGPIPE for writing
/// output nobody reads; its state follows from the facts (stopped, exited with the reason, not
/// "unknown"); it starts again under a new supervisor, with its log and published port back.
#[test]
fn a_container_whose_supervisor_dies_is_stopped_with_a_reason_and_starts_again() {
    let env = Env::new();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    let script = "n=$(( $(cat /runs 2>/dev/null || echo 0) + 1 )); echo $n > /runs; mkdir -p /www; \
                  echo run-$n > /www/index.html; httpd -p 80 -h /www; while true; do echo tick-$n; sleep 0.02; done";
    env.ok(&["run", "-d", "--name", "sup", "-p", &publish, &env.image, "sh", "-c", script]);
    assert!(eventually(Duration::from_secs(10), || http_body(port).is_some_and(|b| b.contains("run-1"))));
    assert!(eventually(Duration::from_secs(10), || env.ok(&["logs", "sup"]).contains("tick-1")));
    let state = env.inspect("sup");
    let (id, pid) = (state["id"].as_str().expect("id").to_string(), state["pid"].as_i64().expect("pid"));
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.root().join("containers").join(&id).join("record.json")).expect("record")).expect("json");
    let shim = record["shim_pid"].as_i64().expect("shim pid");
    Command::new("kill").args(["-9", &shim.to_string()]).status().expect("kill");

    // It keeps writing with nobody reading: no SIGPIPE.
    std::thread::sleep(Duration::from_millis(1500));
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
    assert!(alive, "the container's init died when its supervisor did");

    let state = env.inspect("sup");
    assert_eq!(state["status"], "exited", "{state}");
    assert_eq!((state["exit"]["reason"].as_str(), state["exit"]["code"].as_i64()), (Some("SupervisorLost"), Some(137)), "{state}");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z ")), "stopped");
    let ps = env.ok(&["ps", "-a"]);
    assert!(ps.lines().any(|l| l.ends_with("sup") && l.contains("Exited (137, SupervisorLost)")), "{ps}");

    env.ok(&["start", "sup"]);
    assert!(eventually(Duration::from_secs(10), || http_body(port).is_some_and(|b| b.contains("run-2"))), "the published port is back");
    assert!(eventually(Duration::from_secs(10), || env.ok(&["logs", "sup"]).contains("tick-2")), "the log goes on");
    assert_eq!(env.ok(&["exec", "sup", "echo", "ok"]), "ok\n");
    env.ok(&["rm", "-f", "sup"]);
    assert!(host_traces(env.root(), &id).is_empty(), "{:?}", host_traces(env.root(), &id));
}

/// A strata root on its own small tmpfs (mounted over the test's root directory), so that the
/// test can fill the disk. Dropping it removes every container and unmounts it.
struct SmallDisk<'a> {
    env: &'a Env,
}

impl<'a> SmallDisk<'a> {
    fn mount(env: &'a Env, size: &str) -> SmallDisk<'a> {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(env.root())
            .status()
            .expect("mount");
        assert!(st.success(), "mounting a tmpfs");
        SmallDisk { env }
    }

    /// Write a file until the disk is full.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.env.root().join("fill")).expect("fill file");
        let chunk = vec![0u8; 256 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let mut small = [0u8; 512];
        while f.write_all(&small[..]).is_ok() {
            small[0] = small[0].wrapping_add(1);
        }
    }

    fn free(&self) {
        std::fs::remove_file(self.env.root().join("fill")).expect("free the disk");
    }
}

impl Drop for SmallDisk<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.env.root().join("fill"));
        if let Ok(out) = self.env.cmd().args(["ps", "-aq", "--no-trunc"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.env.cmd().args(["rm", "-f", id]).output();
            }
        }
        let _ = Command::new("umount").arg("-l").arg(self.env.root()).status();
    }
}

/// A full disk: the log copier keeps draining the container's output (it neither dies of
/// SIGPIPE nor blocks), resumes when space returns and says what it dropped; the exit status of
/// a container that ends while the disk is full is recorded and it can start again; a create
/// that fails for lack of space leaves its name free.
#[test]
fn a_full_disk_loses_no_exit_status_log_or_name() {
    let env = Env::new();
    let disk = SmallDisk::mount(&env, "40m");
    env.ok(&["pull", &env.image]);
    let script = "i=0; while true; do i=$((i+1)); echo line-$i; sleep 0.005; done";
    env.ok(&["run", "-d", "--name", "talker", "--network", "none", &env.image, "sh", "-c", script]);
    assert!(eventually(Duration::from_secs(10), || env.ok(&["logs", "talker"]).contains("line-5\n")));
    let pid = env.inspect("talker")["pid"].as_i64().expect("pid");
    let last_line = || {
        let logs = env.ok(&["logs", "talker"]);
        logs.lines().filter_map(|l| l.strip_prefix("line-")?.parse::<u64>().ok()).max().unwrap_or(0)
    };

    disk.fill();
    std::thread::sleep(Duration::from_millis(1500));
    let before = last_line();
    // The container goes on writing.
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
    assert!(alive, "the container died when its log could not be written");
    assert_eq!(env.inspect("talker")["status"], "running");
    // A create that fails for lack of space leaves the name free.
    env.fail(&["run", "-d", "--name", "second", "--network", "none", &env.image, "true"]);
    assert!(!env.root().join("names/second").exists(), "the name stays free");

    disk.free();
    // The log resumes, with a marker that says what was dropped.
    let resumed = eventually(Duration::from_secs(10), || last_line() > before + 50);
    if !resumed {
        let logs = env.ok(&["logs", "talker"]);
        let id = env.inspect("talker")["id"].as_str().unwrap_or_default().to_string();
        let shim_log = std::fs::read_to_string(env.root().join("containers").join(&id).join("shim.log")).unwrap_or_default();
        panic!("the log does not resume after line {before}: {}\n{}\nshim log: {shim_log}", &logs[logs.len().saturating_sub(1500)..], env.inspect("talker"));
    }
    let logs = env.ok(&["logs", "talker"]);
    let marker = logs.lines().find(|l| l.contains("were dropped")).unwrap_or_else(|| panic!("no marker in the log: {}", &logs[logs.len().saturating_sub(2000)..]));
    assert!(marker.contains("No space left on device"), "{marker}");
    env.ok(&["run", "-d", "--name", "second", "--network", "none", &env.image, "true"]);

    // The container ends while the disk is full: its exit status is recorded all the same.
    disk.fill();
    env.ok(&["kill", "talker"]);
    assert_eq!(env.ok(&["wait", "talker"]).trim(), "137");
    let state = env.inspect("talker");
    assert_eq!((state["status"].as_str(), state["exit"]["reason"].as_str()), (Some("exited"), Some("Signaled")), "{state}");
    disk.free();
    env.ok(&["start", "talker"]);
    assert_eq!(env.inspect("talker")["status"], "running");
    drop(disk);
}
