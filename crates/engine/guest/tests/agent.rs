//! The guest agent's request loop driven over a unix socket pair on the host (as root): real
//! namespaces, real processes from a busybox rootfs, the real protocol. The VM around it is
//! tested by strata-vm's microVM tests.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use strata_guest::agent::{serve, OnPowerOff};
use strata_guest::protocol::{read_frame, write_frame, ContainerSpec, ExecRequest, ExecResult, GuestMessage, HostMessage, Request, Response, Stream};

const WAIT: Duration = Duration::from_secs(60);

struct Host {
    stream: UnixStream,
    next: u64,
    rx: mpsc::Receiver<GuestMessage>,
    replies: HashMap<u64, Response>,
    output: HashMap<(String, Stream), Vec<u8>>,
    exits: HashMap<String, (Option<i32>, Option<i32>)>,
    agent: Option<std::thread::JoinHandle<()>>,
}

impl Host {
    fn start() -> Host {
        let (host, guest) = UnixStream::pair().expect("socketpair");
        let guest_out = guest.try_clone().expect("clone");
        let agent = std::thread::spawn(move || serve(guest, guest_out, OnPowerOff::Return).expect("serve"));
        let mut reader = host.try_clone().expect("clone");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            while let Ok(Some(m)) = read_frame::<_, GuestMessage>(&mut reader) {
                if tx.send(m).is_err() {
                    return;
                }
            }
        });
        Host { stream: host, next: 1, rx, replies: HashMap::new(), output: HashMap::new(), exits: HashMap::new(), agent: Some(agent) }
    }

    fn pump(&mut self, until: Instant) -> bool {
        let Some(left) = until.checked_duration_since(Instant::now()) else { return false };
        match self.rx.recv_timeout(left) {
            Ok(GuestMessage::Reply { id, response }) => {
                self.replies.insert(id, response);
            }
            Ok(GuestMessage::Output { id, stream, data }) => self.output.entry((id, stream)).or_default().extend_from_slice(&data),
            Ok(GuestMessage::Exited { id, code, signal, .. }) => {
                assert!(self.exits.insert(id.clone(), (code, signal)).is_none(), "two exits for {id}");
            }
            Err(_) => return false,
        }
        true
    }

    fn call(&mut self, request: Request) -> Response {
        let id = self.next;
        self.next += 1;
        write_frame(&mut self.stream, &HostMessage { id, request }).expect("send");
        let until = Instant::now() + WAIT;
        loop {
            if let Some(r) = self.replies.remove(&id) {
                return r;
            }
            assert!(self.pump(until), "no reply to request {id}");
        }
    }

    fn ok(&mut self, request: Request) {
        let r = self.call(request.clone());
        assert_eq!(r, Response::Ok, "{request:?}");
    }

    fn error(&mut self, request: Request) -> String {
        match self.call(request.clone()) {
            Response::Error { message } => message,
            other => panic!("{request:?} answered {other:?}, not an error"),
        }
    }

    fn exec(&mut self, id: &str, argv: &[&str], timeout_ms: Option<u64>) -> ExecResult {
        match self.call(Request::Exec(ExecRequest { id: id.into(), argv: argv.iter().map(|s| s.to_string()).collect(), env: None, timeout_ms })) {
            Response::Exec(r) => r,
            other => panic!("exec {argv:?}: {other:?}"),
        }
    }

    fn wait_exit(&mut self, id: &str) -> (Option<i32>, Option<i32>) {
        let until = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.exits.get(id) {
                return *e;
            }
            assert!(self.pump(until), "{id} did not exit");
        }
    }

    fn out(&self, id: &str, stream: Stream) -> String {
        String::from_utf8_lossy(self.output.get(&(id.to_string(), stream)).map(|v| &v[..]).unwrap_or(b"")).into_owned()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(a) = self.agent.take() {
            let _ = a.join();
        }
    }
}

/// A rootfs of the host's static busybox.
fn rootfs() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("guest-rootfs-").tempdir_in("/var/tmp").expect("tempdir");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    // A hard link where it can be: a copy's write descriptor, inherited by another test
    // thread's forked child until it execs, makes exec of the copy fail with ETXTBSY meanwhile
    // (and a copying child process would be reaped by another test's agent, `waitpid(-1)`).
    let dest = bin.join("busybox");
    if std::fs::hard_link("/bin/busybox", &dest).is_err() {
        std::fs::copy("/bin/busybox", &dest).expect("busybox (apt-get install busybox-static)");
    }
    for applet in ["sh", "echo", "hostname", "cat", "sleep", "id", "tr", "ls", "true"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("symlink");
    }
    dir
}

fn spec(root: &Path, argv: &[&str], hostname: &str) -> ContainerSpec {
    ContainerSpec {
        rootfs: root.to_string_lossy().into_owned(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".into(), "GREETING=hello".into()],
        hostname: Some(hostname.into()),
        ..Default::default()
    }
}

#[test]
fn a_container_runs_in_namespaces_of_its_own_and_reports_output_and_exit_code() {
    let root = rootfs();
    let mut h = Host::start();
    let host_release = nix::sys::utsname::uname().expect("uname").release().to_string_lossy().into_owned();
    match h.call(Request::Hello) {
        Response::Hello { kernel_release, .. } => assert_eq!(kernel_release, host_release),
        other => panic!("hello: {other:?}"),
    }
    let script = "echo out; echo err >&2; hostname; echo pid=$$; id -u; id -G; echo $GREETING; ls /proc/1/ns/ >/dev/null && cat /proc/1/comm; exit 3";
    let mut s = spec(root.path(), &["sh", "-c", script], "pod-a");
    s.uid = 1234;
    s.gid = 1234;
    s.additional_gids = vec![5];
    s.cwd = Some("/bin".into());
    h.ok(Request::Create { id: "c1".into(), spec: s.clone() });
    assert!(h.error(Request::Create { id: "c1".into(), spec: s.clone() }).contains("already exists"));
    match h.call(Request::Start { id: "c1".into() }) {
        Response::Started { pid } => assert!(pid > 1),
        other => panic!("start: {other:?}"),
    }
    assert_eq!(h.wait_exit("c1"), (Some(3), None));
    // Its own UTS and PID namespaces (it is PID 1 there), the user and groups asked for.
    assert_eq!(h.out("c1", Stream::Stdout), "out\npod-a\npid=1\n1234\n1234 5\nhello\nsh\n");
    assert_eq!(h.out("c1", Stream::Stderr), "err\n");
    assert!(h.error(Request::Start { id: "c1".into() }).contains("already started"));
    // The agent's own hostname was not touched.
    assert_ne!(nix::unistd::gethostname().expect("hostname").to_string_lossy(), "pod-a");
    h.ok(Request::Remove { id: "c1".into() });

    // Bad input: clear errors, nothing recorded.
    let missing = spec(Path::new("/nonexistent-rootfs"), &["true"], "x");
    assert!(h.error(Request::Create { id: "c2".into(), spec: missing }).contains("not a directory"));
    assert!(h.error(Request::Create { id: "../c".into(), spec: s.clone() }).contains("invalid container id"));
    let mut escape = s.clone();
    escape.mounts = vec![strata_guest::protocol::BindMount { source: "/etc".into(), destination: "/../../etc".into(), readonly: true }];
    assert!(h.error(Request::Create { id: "c2".into(), spec: escape }).contains("without '..'"));
    assert!(h.error(Request::Start { id: "c2".into() }).contains("no container"));
    // Limits need cgroup v2 at /sys/fs/cgroup (the VM's init mounts it; this host is hybrid).
    let unified = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines().any(|l| l.contains(" /sys/fs/cgroup ") && l.contains(" - cgroup2 "));
    if !unified {
        let mut limited = s.clone();
        limited.resources.memory_max_bytes = Some(64 << 20);
        assert!(h.error(Request::Create { id: "c2".into(), spec: limited }).contains("need cgroup v2"));
    }
    h.ok(Request::Create { id: "c3".into(), spec: spec(root.path(), &["no-such-program"], "x") });
    let msg = h.error(Request::Start { id: "c3".into() });
    assert!(msg.contains("\"no-such-program\" not found"), "{msg}");
    h.ok(Request::Remove { id: "c3".into() });
}

#[test]
fn exec_signal_and_remove_reach_a_running_container() {
    let root = rootfs();
    let mut h = Host::start();
    let mut s = spec(root.path(), &["sleep", "1000"], "pod-b");
    let message = root.path().join("termination-log");
    std::fs::write(&message, b"").expect("termination-log");
    s.mounts = vec![
        strata_guest::protocol::BindMount { source: root.path().join("bin").to_string_lossy().into_owned(), destination: "/mnt/tools".into(), readonly: true },
        // A file mounted below /dev (kubelet's termination message path).
        strata_guest::protocol::BindMount { source: message.to_string_lossy().into_owned(), destination: "/dev/termination-log".into(), readonly: false },
    ];
    h.ok(Request::Create { id: "c".into(), spec: s });
    assert!(matches!(h.call(Request::Start { id: "c".into() }), Response::Started { .. }));

    // exec joins its namespaces and root: same hostname, its PID 1 is the container's sleep.
    let r = h.exec("c", &["sh", "-c", "hostname; cat /proc/1/comm; echo $GREETING; echo oops >&2; exit 7"], Some(30_000));
    assert_eq!((String::from_utf8_lossy(&r.stdout).as_ref(), String::from_utf8_lossy(&r.stderr).as_ref(), r.exit_code, r.timed_out), ("pod-b\nsleep\nhello\n", "oops\n", 7, false));
    // The bind mount is there and read-only.
    let r = h.exec("c", &["sh", "-c", "ls /mnt/tools/busybox && touch /mnt/tools/x"], Some(30_000));
    assert_eq!(String::from_utf8_lossy(&r.stdout), "/mnt/tools/busybox\n");
    assert_ne!(r.exit_code, 0);
    assert!(String::from_utf8_lossy(&r.stderr).contains("Read-only file system"), "{r:?}");
    // A /dev of its own: the usual nodes, /dev/shm, and the file mounted below it.
    let r = h.exec("c", &["sh", "-c", "echo done > /dev/termination-log && echo x > /dev/null && ls /dev && ls -d /dev/shm/"], Some(30_000));
    assert_eq!(r.exit_code, 0, "{r:?}");
    let listing = String::from_utf8_lossy(&r.stdout).into_owned();
    for n in ["null", "zero", "urandom", "tty", "termination-log", "fd", "shm"] {
        assert!(listing.split_whitespace().any(|w| w == n || w == format!("/dev/{n}/")), "{n} not in /dev: {listing}");
    }
    assert!(!listing.split_whitespace().any(|w| w == "sda" || w == "kmsg"), "the guest's whole /dev is visible: {listing}");
    assert_eq!(std::fs::read_to_string(&message).expect("message"), "done\n");
    // A timeout kills the command.
    let t = Instant::now();
    let r = h.exec("c", &["sleep", "30"], Some(300));
    assert!(r.timed_out && r.exit_code == 128 + libc::SIGKILL, "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(20));
    match h.call(Request::Exec(ExecRequest { id: "c".into(), argv: vec!["no-such-program".into()], env: None, timeout_ms: None })) {
        Response::Error { message } => assert!(message.contains("not found"), "{message}"),
        other => panic!("{other:?}"),
    }

    h.ok(Request::Signal { id: "c".into(), signal: libc::SIGKILL });
    assert_eq!(h.wait_exit("c"), (None, Some(libc::SIGKILL)));
    // Signalling an exited container is not an error; exec into it is.
    h.ok(Request::Signal { id: "c".into(), signal: libc::SIGTERM });
    assert!(h.error(Request::Exec(ExecRequest { id: "c".into(), argv: vec!["true".into()], env: None, timeout_ms: None })).contains("not running"));
    h.ok(Request::Remove { id: "c".into() });
    assert!(h.error(Request::Remove { id: "c".into() }).contains("no container"));

    // Removing a running container kills it.
    h.ok(Request::Create { id: "d".into(), spec: spec(root.path(), &["sleep", "1000"], "pod-d") });
    let Response::Started { pid } = h.call(Request::Start { id: "d".into() }) else { panic!("start d") };
    h.ok(Request::Remove { id: "d".into() });
    assert_eq!(h.wait_exit("d"), (None, Some(libc::SIGKILL)));
    assert!(!Path::new(&format!("/proc/{pid}")).exists() || std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|c| c.trim() != "sleep").unwrap_or(true));
}

#[test]
fn streams_carry_stdin_a_terminal_resizes_exit_codes_and_loopback_connections() {
    let root = rootfs();
    let mut h = Host::start();
    h.ok(Request::Create { id: "c".into(), spec: spec(root.path(), &["sleep", "1000"], "pod-s") });
    assert!(matches!(h.call(Request::Start { id: "c".into() }), Response::Started { .. }));
    let exec = |argv: &[&str]| ExecRequest { id: "c".into(), argv: argv.iter().map(|s| s.to_string()).collect(), env: None, timeout_ms: None };
    let started = |r: Response| matches!(r, Response::Started { pid } if pid > 0);

    // Input reaches the command; its end is an end of file; the exit code comes as Exited.
    let r = h.call(Request::ExecStream { stream: "x-in".into(), exec: exec(&["sh", "-c", "while read l; do echo got:$l; done; echo eof >&2; exit 3"]), tty: None, stdin: true });
    assert!(started(r));
    h.ok(Request::Input { stream: "x-in".into(), data: b"one\ntwo\n".to_vec() });
    h.ok(Request::CloseInput { stream: "x-in".into() });
    assert_eq!(h.wait_exit("x-in"), (Some(3), None));
    assert_eq!(h.out("x-in", Stream::Stdout), "got:one\ngot:two\n");
    assert_eq!(h.out("x-in", Stream::Stderr), "eof\n");
    assert!(h.error(Request::Input { stream: "x-in".into(), data: b"late".to_vec() }).contains("no stream"));

    // A terminal: the command has one (a /dev/pts of the container's /dev), resizes reach it,
    // output is one stream.
    let r = h.call(Request::ExecStream { stream: "x-tty".into(), exec: exec(&["sh", "-c", "busybox tty; read l; busybox stty size; echo err >&2; exit 5"]), tty: Some((24, 80)), stdin: true });
    assert!(started(r));
    h.ok(Request::Resize { stream: "x-tty".into(), rows: 33, cols: 99 });
    h.ok(Request::Input { stream: "x-tty".into(), data: b"go\n".to_vec() });
    assert_eq!(h.wait_exit("x-tty"), (Some(5), None));
    let out = h.out("x-tty", Stream::Stdout);
    assert!(out.contains("/dev/pts/") && out.contains("33 99") && out.contains("err"), "{out:?}");
    assert!(h.error(Request::Resize { stream: "x-in2".into(), rows: 1, cols: 1 }).contains("no stream"));

    // Cancel kills the command; a duplicate name and a missing program are refused.
    assert!(started(h.call(Request::ExecStream { stream: "x-k".into(), exec: exec(&["sleep", "1000"]), tty: None, stdin: false })));
    assert!(h.error(Request::ExecStream { stream: "x-k".into(), exec: exec(&["true"]), tty: None, stdin: false }).contains("already exists"));
    h.ok(Request::Cancel { stream: "x-k".into() });
    assert_eq!(h.wait_exit("x-k"), (None, Some(nix::sys::signal::Signal::SIGKILL as i32)));
    let msg = h.error(Request::ExecStream { stream: "x-no".into(), exec: exec(&["/no/such/command"]), tty: None, stdin: false });
    assert!(msg.contains("/no/such/command"), "{msg}");

    // A connection to the agent's loopback (here the host's: the test has no network
    // namespace), both ways, ended by the server.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    h.ok(Request::Connect { stream: "x-c".into(), port });
    let (mut server, _) = listener.accept().expect("accept");
    use std::io::{Read, Write};
    server.write_all(b"hello").expect("write");
    h.ok(Request::Input { stream: "x-c".into(), data: b"ping".to_vec() });
    h.ok(Request::CloseInput { stream: "x-c".into() });
    let mut got = Vec::new();
    server.set_read_timeout(Some(WAIT)).expect("timeout");
    server.read_to_end(&mut got).expect("read to the host's end of input");
    assert_eq!(got, b"ping");
    drop(server);
    assert_eq!(h.wait_exit("x-c"), (Some(0), None));
    assert_eq!(h.out("x-c", Stream::Stdout), "hello");
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let msg = h.error(Request::Connect { stream: "x-c2".into(), port: closed });
    assert!(msg.contains("refused"), "{msg}");
    h.ok(Request::Remove { id: "c".into() });
}

/// A container's main process with stdin (a pipe fed by `Input` named by the container's id,
/// ended by `CloseInput`) or with a terminal (resized by `Resize`, output as one stream), as
/// `kubectl attach` and `stdin`/`tty` in a pod spec need.
#[test]
fn a_containers_main_process_takes_input_and_may_have_a_terminal() {
    let root = rootfs();
    let mut h = Host::start();
    let mut s = spec(root.path(), &["sh", "-c", "while read l; do echo main:$l; done; echo eof >&2; exit 4"], "pod-in");
    s.stdin = true;
    h.ok(Request::Create { id: "in".into(), spec: s });
    assert!(matches!(h.call(Request::Start { id: "in".into() }), Response::Started { .. }));
    h.ok(Request::Input { stream: "in".into(), data: b"one\n".to_vec() });
    h.ok(Request::Input { stream: "in".into(), data: b"two\n".to_vec() });
    h.ok(Request::CloseInput { stream: "in".into() });
    assert_eq!(h.wait_exit("in"), (Some(4), None));
    assert_eq!((h.out("in", Stream::Stdout), h.out("in", Stream::Stderr)), ("main:one\nmain:two\n".to_string(), "eof\n".to_string()));

    let mut s = spec(root.path(), &["sh", "-c", "busybox tty; read l; busybox stty size; echo err >&2; exit 6"], "pod-tty");
    (s.stdin, s.tty) = (true, true);
    h.ok(Request::Create { id: "tty".into(), spec: s });
    assert!(matches!(h.call(Request::Start { id: "tty".into() }), Response::Started { .. }));
    h.ok(Request::Resize { stream: "tty".into(), rows: 40, cols: 120 });
    h.ok(Request::Input { stream: "tty".into(), data: b"go\n".to_vec() });
    assert_eq!(h.wait_exit("tty"), (Some(6), None));
    let out = h.out("tty", Stream::Stdout);
    assert!(out.contains("/dev/pts/") && out.contains("40 120") && out.contains("err"), "{out:?}");
    assert_eq!(h.out("tty", Stream::Stderr), "");

    // Without either, there is nothing to feed; removal forgets the input.
    h.ok(Request::Create { id: "plain".into(), spec: spec(root.path(), &["true"], "pod-p") });
    assert!(matches!(h.call(Request::Start { id: "plain".into() }), Response::Started { .. }));
    assert!(h.error(Request::Input { stream: "plain".into(), data: b"x".to_vec() }).contains("no stream"));
    h.ok(Request::Remove { id: "in".into() });
    assert!(h.error(Request::Input { stream: "in".into(), data: b"x".to_vec() }).contains("no stream"));
}
