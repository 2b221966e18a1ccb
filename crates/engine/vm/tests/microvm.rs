//! A VM-isolated pod's microVM, engine level: the real Debian guest kernel (its modules carried
//! by our initramfs), the static guest agent as /init, QEMU `microvm` on TCG, a busybox rootfs
//! shared over virtio-9p, the agent reached over its virtio-serial port.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use strata_vm::accel::Accel;
use strata_vm::agent::protocol::{ContainerSpec, ExecRequest, GuestMessage, Request, Response, Stream, SHARE_MOUNT};
use strata_vm::agent::AgentClient;
use strata_vm::initramfs::{self, GuestKernel};
use strata_vm::qemu::{self, GuestDevices, Machine, AGENT_SOCKET};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
}

fn script(name: &str) -> PathBuf {
    let out = Command::new("bash").arg(repo().join("scripts").join(name)).stderr(Stdio::inherit()).output().expect("run script");
    assert!(out.status.success(), "scripts/{name} failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

struct Vm {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Vm {
    fn serial(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serial.log")).unwrap_or_default()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox (busybox-static)");
    for a in ["sh", "uname", "cat", "sleep", "echo", "hostname"] {
        std::os::unix::fs::symlink("busybox", bin.join(a)).expect("symlink");
    }
}

#[test]
fn a_container_in_the_microvm_runs_on_the_guest_kernel() {
    let kernel = GuestKernel::open(&script("guest-kernel.sh")).expect("guest kernel");
    let agent = std::env::var_os("STRATA_GUEST_AGENT").map(PathBuf::from).unwrap_or_else(|| script("guest-agent.sh"));
    let dir = tempfile::Builder::new().prefix("mvm-").tempdir_in("/var/tmp").expect("dir");
    let initrd = dir.path().join("initramfs.cpio");
    initramfs::build(&kernel, &agent, &initrd).expect("initramfs");
    let share = dir.path().join("share");
    busybox_rootfs(&share.join("c1/rootfs"));

    let m = Machine {
        name: "strata-microvm-test".into(),
        accel: Accel::Tcg,
        memory_mib: 256,
        cpus: 1,
        kernel: Some(kernel.vmlinuz.clone()),
        initrd: Some(initrd),
        append: format!("{} quiet", qemu::DEFAULT_APPEND),
        disk: None,
        seed: None,
        net: None,
        state_disk: None,
        start_paused: false,
        run_as: None,
        guest: Some(GuestDevices { share: Some(share.clone()) }),
    };
    let started = Instant::now();
    let child = Command::new(qemu::qemu_binary().expect("qemu"))
        .args(qemu::args(&m))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("qemu.err")).expect("err"))
        .spawn()
        .expect("qemu");
    let mut vm = Vm { child, dir };
    // The serial console into a file, for the failure messages.
    let serial_sock = vm.dir.path().join(qemu::SERIAL_SOCKET);
    let serial_log = vm.dir.path().join("serial.log");
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&serial_sock) {
                if let Ok(mut f) = std::fs::File::create(&serial_log) {
                    let _ = std::io::copy(&mut s, &mut f);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });

    let (tx, events) = mpsc::channel();
    let client = AgentClient::connect(&vm.dir.path().join(AGENT_SOCKET), Duration::from_secs(30), Some(tx)).expect("agent socket");
    let hello = client.call(Request::Hello, Duration::from_secs(180));
    let booted = started.elapsed();
    let release = match hello {
        Ok(Response::Hello { kernel_release, .. }) => kernel_release,
        other => panic!("hello: {other:?}\nserial:\n{}", vm.serial()),
    };
    assert_eq!(release, kernel.release);
    let host = nix::sys::utsname::uname().expect("uname").release().to_string_lossy().into_owned();
    eprintln!("guest {release}, host {host}: agent answered {booted:?} after QEMU started");

    let spec = |argv: &[&str]| ContainerSpec {
        rootfs: format!("{SHARE_MOUNT}/c1/rootfs"),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".into()],
        hostname: Some("vm-pod".into()),
        ..Default::default()
    };
    let t = Instant::now();
    client.call_ok(Request::Create { id: "c1".into(), spec: spec(&["sh", "-c", "uname -r; hostname; echo from-guest >&2; exit 7"]) }, Duration::from_secs(60)).expect("create");
    assert!(matches!(client.call(Request::Start { id: "c1".into() }, Duration::from_secs(60)), Ok(Response::Started { .. })));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = loop {
        match events.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| panic!("no exit\nserial:\n{}", vm.serial())) {
            GuestMessage::Output { id, stream, data } if id == "c1" => match stream {
                Stream::Stdout => out.extend(data),
                Stream::Stderr => err.extend(data),
            },
            GuestMessage::Exited { id, code, signal, .. } if id == "c1" => break (code, signal),
            _ => {}
        }
    };
    eprintln!("container create -> exit over 9p: {:?}", t.elapsed());
    assert_eq!(exit, (Some(7), None));
    assert_eq!(String::from_utf8_lossy(&out), format!("{}\nvm-pod\n", kernel.release));
    assert_eq!(String::from_utf8_lossy(&err), "from-guest\n");

    // exec into a running container.
    client.call_ok(Request::Create { id: "c2".into(), spec: spec(&["sleep", "1000"]) }, Duration::from_secs(60)).expect("create c2");
    client.call(Request::Start { id: "c2".into() }, Duration::from_secs(60)).expect("start c2");
    let exec = ExecRequest { id: "c2".into(), argv: vec!["cat".into(), "/proc/1/comm".into()], env: None, timeout_ms: Some(60_000) };
    match client.call(Request::Exec(exec), Duration::from_secs(90)) {
        Ok(Response::Exec(r)) => assert_eq!((String::from_utf8_lossy(&r.stdout).as_ref(), r.exit_code), ("sleep\n", 0)),
        other => panic!("exec: {other:?}"),
    }

    // What the VM costs beyond its containers (printed for docs/benchmarks.md and the
    // strata-vm RuntimeClass overhead): QEMU's resident memory outside the guest-RAM mapping,
    // the guest's own use (kernel, agent) and QEMU's CPU while the guest idles.
    let meminfo = ExecRequest { id: "c2".into(), argv: vec!["cat".into(), "/proc/meminfo".into()], env: None, timeout_ms: Some(60_000) };
    if let Ok(Response::Exec(r)) = client.call(Request::Exec(meminfo), Duration::from_secs(90)) {
        let text = String::from_utf8_lossy(&r.stdout).into_owned();
        let kb = |k: &str| text.lines().find(|l| l.starts_with(k)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        eprintln!("guest memory in use (MemTotal - MemAvailable): {} MiB of {} MiB", (kb("MemTotal:") - kb("MemAvailable:")) / 1024, kb("MemTotal:") / 1024);
    }
    let pid = vm.child.id();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut total, mut guest_ram) = (0u64, 0u64);
    let mut size = 0u64;
    for l in smaps.lines() {
        let mut w = l.split_whitespace();
        match (w.next(), w.next()) {
            (Some("Size:"), Some(v)) => size = v.parse().unwrap_or(0),
            (Some("Rss:"), Some(v)) => {
                let rss: u64 = v.parse().unwrap_or(0);
                total += rss;
                if size == 256 * 1024 {
                    guest_ram += rss;
                }
            }
            _ => {}
        }
    }
    eprintln!("QEMU RSS {} MiB, of which guest RAM {} MiB: {} MiB outside the guest", total / 1024, guest_ram / 1024, (total - guest_ram) / 1024);
    let ticks = || std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| {
        let f: Vec<u64> = s.rsplit(')').next()?.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        Some(f.get(11)? + f.get(12)?)
    });
    let (t0, c0) = (Instant::now(), ticks().unwrap_or(0));
    std::thread::sleep(Duration::from_secs(5));
    let used = (ticks().unwrap_or(0) - c0) as f64 / 100.0;
    eprintln!("QEMU CPU with the guest idle: {:.0} millicores", used / t0.elapsed().as_secs_f64() * 1000.0);

    // Power-off ends QEMU.
    client.call_ok(Request::PowerOff, Duration::from_secs(60)).expect("power off");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = vm.child.try_wait().expect("wait") {
            assert!(status.success(), "QEMU exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "QEMU still runs after power-off\nserial:\n{}", vm.serial());
        std::thread::sleep(Duration::from_millis(50));
    }
}
