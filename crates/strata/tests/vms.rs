//! End-to-end VM tests: the real `strata` binary, real QEMU (TCG here), a Debian guest kernel
//! and a busybox initramfs built by `scripts/vm-assets.sh` (cached in /var/tmp). Run as root.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use strata_testkit::free_port;

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

fn assets() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/vm-assets.sh");
        let out = Command::new("bash").arg(script).output().expect("run vm-assets.sh");
        assert!(out.status.success(), "vm-assets.sh: {}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

struct Env {
    root: tempfile::TempDir,
    names: Vec<String>,
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// One VM test at a time: TCG guests on a loaded 2-core machine boot slowly, and Debian's
/// kernel on `microvm,acpi=on` can stall in early timer calibration when starved of CPU.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Env {
    fn new() -> Env {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        assets();
        // A short root: QEMU's socket paths must fit in sun_path.
        let root = tempfile::Builder::new().prefix("svm-").tempdir_in("/var/tmp").expect("root");
        Env { root, names: Vec::new(), _serial: serial }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
        c.arg("--root").arg(self.root.path()).stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run strata")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "strata {args:?}: {}\nstdout={}\nstderr={}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fail(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "strata {args:?} unexpectedly succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn create_args(&mut self, name: &str) -> Vec<String> {
        self.names.push(name.to_string());
        let a = assets();
        vec![
            "vm".into(),
            "create".into(),
            name.into(),
            "--kernel".into(),
            a.join("vmlinuz").display().to_string(),
            "--initrd".into(),
            a.join("initrd.gz").display().to_string(),
            "--append".into(),
            "console=ttyS0 earlyprintk=ttyS0 quiet panic=-1 tsc_early_khz=2000000 no_timer_check".into(),
            "--memory".into(),
            "256M".into(),
        ]
    }

    fn logs(&self, name: &str) -> String {
        self.ok(&["vm", "logs", name])
    }

    fn wait_log(&self, name: &str, pred: impl Fn(&str) -> bool, what: &str) -> String {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            // Empty until `create` has written the VM's record.
            let out = self.run(&["vm", "logs", name]);
            let l = String::from_utf8_lossy(&out.stdout).into_owned();
            if pred(&l) {
                return l;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; console log:\n{l}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn info(&self, name: &str) -> serde_json::Value {
        let out = self.ok(&["vm", "list", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        v.as_array().expect("array").iter().find(|x| x["name"] == name).cloned().unwrap_or(serde_json::Value::Null)
    }

    fn console(&self, name: &str) -> Child {
        self.cmd().args(["vm", "console", name]).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().expect("console")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = self.run(&["vm", "rm", "-f", n]);
        }
    }
}

/// QEMU processes whose command line carries `-name NAME`.
fn qemu_processes(name: &str) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        let is_qemu = args.first().is_some_and(|a| String::from_utf8_lossy(a).contains("qemu-system"));
        if is_qemu && args.windows(2).any(|w| w[0] == b"-name" && w[1] == name.as_bytes()) {
            n += 1;
        }
    }
    n
}

fn wait_until(mut pred: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ticks(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| l.strip_prefix("TICK "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn vm_lifecycle_console_pause_snapshot_stop() {
    let mut env = Env::new();
    let name = format!("life{}", std::process::id());
    let args = env.create_args(&name);
    let out = env.cmd().args(&args).output().expect("create");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "create: {stderr}");
    assert!(stderr.contains("TCG"), "the TCG fallback is announced: {stderr}");
    env.wait_log(&name, |l| l.contains("STRATA-GUEST-UP"), "the guest marker");

    let info = env.info(&name);
    assert_eq!(info["state"], "running", "{info}");
    assert_eq!(info["accelerator"], "tcg", "{info}");
    assert!(info["pid"].as_i64().is_some_and(|p| p > 0), "{info}");
    assert!(info["uptime_seconds"].as_i64().is_some(), "{info}");
    assert_eq!(qemu_processes(&name), 1);

    // Console input reaches the guest.
    let mut console = env.console(&name);
    let mut stdin = console.stdin.take().expect("stdin");
    stdin.write_all(b"hello strata\n").expect("write");
    env.wait_log(&name, |l| l.contains("GOT: hello strata"), "the echoed console line");

    // QEMU's usage: CPU time spent booting, resident memory, the guest's size.
    let stats = env.ok(&["vm", "stats", &name]);
    let row: Vec<&str> = stats.lines().nth(1).expect("a row").split_whitespace().collect();
    assert_eq!(row[0], name, "{stats}");
    let cpu: f64 = row[1].trim_end_matches('s').parse().expect("cpu seconds");
    assert!(cpu > 0.5, "booting under TCG takes CPU: {stats}");
    assert!(row[2].ends_with("MB") && row[3] == "268.435MB", "{stats}");
        // The balloon: the guest gives memory back, and takes it again; never above its size.
    assert_eq!(env.info(&name)["memory_actual_mib"], 256);
    env.ok(&["vm", "set-memory", &name, "128M"]);
    wait_until(|| env.info(&name)["memory_actual_mib"] == 128, "the balloon to inflate to 128 MiB");
    let err = env.fail(&["vm", "set-memory", &name, "1G"]);
    assert!(err.contains("between 32 MiB and 256 MiB"), "{err}");
    env.ok(&["vm", "set-memory", &name, "256M"]);
    wait_until(|| env.info(&name)["memory_actual_mib"] == 256, "the balloon to deflate");

    // Pause: QEMU reports paused and the guest clock stops.
    stdin.write_all(b"ticker\n").expect("write");
    env.wait_log(&name, |l| ticks(l).len() >= 3, "ticks");
    env.ok(&["vm", "pause", &name]);
    let info = env.info(&name);
    assert_eq!(info["state"], "paused", "{info}");
    assert_eq!(info["qemu_status"], "paused", "{info}");
    std::thread::sleep(Duration::from_millis(500));
    let before = ticks(&env.logs(&name)).len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ticks(&env.logs(&name)).len(), before, "no guest output while paused");
    env.fail(&["vm", "pause", &name]);
    env.ok(&["vm", "resume", &name]);
    env.wait_log(&name, |l| ticks(l).len() >= before + 3, "ticks after resume");
    assert_eq!(env.info(&name)["state"], "running");

    // Snapshot and restore: the guest's tick counter (in guest memory) goes back.
    env.ok(&["vm", "snapshot", &name, "s1"]);
    let at_snapshot = *ticks(&env.logs(&name)).last().expect("a tick");
    let n = ticks(&env.logs(&name)).len();
    env.wait_log(&name, |l| ticks(l).len() >= n + 10, "ticks after the snapshot");
    let latest = *ticks(&env.logs(&name)).last().expect("a tick");
    assert!(latest >= at_snapshot + 5.0, "{latest} vs {at_snapshot}");
    env.ok(&["vm", "restore", &name, "s1"]);
    let n = ticks(&env.logs(&name)).len();
    let log = env.wait_log(&name, |l| ticks(l).len() >= n + 2, "ticks after the restore");
    let after = ticks(&log)[n..].to_vec();
    assert!(after.last().is_some_and(|&t| t < latest), "the counter went back: {after:?} vs {latest}");
    let err = env.fail(&["vm", "restore", &name, "nope"]);
    assert!(err.contains("no such snapshot nope"), "{err}");
    assert_eq!(env.info(&name)["state"], "running", "a failed restore leaves the VM running");

    // Graceful stop: the guest sees the ACPI power button and powers off.
    drop(stdin);
    let t = Instant::now();
    env.ok(&["vm", "stop", "--time", "60", &name]);
    assert!(t.elapsed() < Duration::from_secs(60), "powered off before the timeout");
    assert!(env.logs(&name).contains("STRATA-POWER-BUTTON"), "the guest saw the power button");
    let info = env.info(&name);
    assert_eq!(info["state"], "exited", "{info}");
    assert_eq!(info["exit_code"], 0, "{info}");
    assert_eq!((info["exit_reason"].as_str(), info["exit_signal"].as_str()), (Some("Completed"), None), "{info}");
    assert_eq!(qemu_processes(&name), 0);
    let _ = console.wait();

    // Start again (a new QEMU), then kill it.
    env.ok(&["vm", "start", &name]);
    env.wait_log(&name, |l| l.matches("STRATA-GUEST-UP").count() >= 2, "the second boot");
    assert_eq!(qemu_processes(&name), 1);
    env.ok(&["vm", "kill", &name]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.info(&name)["state"] != "exited" {
        assert!(Instant::now() < deadline, "kill took effect");
        std::thread::sleep(Duration::from_millis(100));
    }
    let info = env.info(&name);
    assert_eq!(info["exit_code"], 137, "{info}");
    assert_eq!((info["exit_reason"].as_str(), info["exit_signal"].as_str()), (Some("Signaled"), Some("SIGKILL")), "{info}");
    assert_eq!(qemu_processes(&name), 0);

    env.ok(&["vm", "rm", &name]);
    assert!(env.info(&name).is_null());
    assert_eq!(std::fs::read_dir(env.root.path().join("vms")).expect("ls").count(), 0);
    assert_eq!(std::fs::read_dir(env.root.path().join("vm-names")).expect("ls").count(), 0);
}

#[test]
fn vm_outlives_a_killed_cli_and_is_readopted() {
    let mut env = Env::new();
    let name = format!("surv{}", std::process::id());
    let mut args = env.create_args(&name);
    args.push("--attach".into());
    let mut cli = env.cmd().args(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("create");
    env.wait_log(&name, |l| l.contains("STRATA-GUEST-UP"), "the guest marker");
    cli.kill().expect("SIGKILL the CLI");
    let _ = cli.wait();
    std::thread::sleep(Duration::from_millis(300));

    let info = env.info(&name);
    assert_eq!(info["state"], "running", "{info}");
    assert_eq!(info["qemu_status"], "running", "re-adopted over QMP: {info}");
    assert_eq!(qemu_processes(&name), 1);
    let err = env.fail(&["vm", "start", &name]);
    assert!(err.contains("running"), "{err}");
    let out = env.run(&args[..args.len() - 1].iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success(), "a second create with the same name fails");
    assert_eq!(qemu_processes(&name), 1, "never a second QEMU");

    // Still controllable from a new process.
    let mut console = env.console(&name);
    console.stdin.take().expect("stdin").write_all(b"still here\n").expect("write");
    env.wait_log(&name, |l| l.contains("GOT: still here"), "console after re-adoption");
    env.ok(&["vm", "rm", "-f", &name]);
    assert_eq!(qemu_processes(&name), 0);
    let _ = console.wait();
}

#[test]
fn vm_errors_are_clear_and_leave_nothing() {
    let mut env = Env::new();
    let a = assets();
    let name = format!("bad{}", std::process::id());
    env.names.push(name.clone());
    let empty = |env: &Env| {
        for d in ["vms", "vm-names"] {
            let p = env.root.path().join(d);
            let n = std::fs::read_dir(&p).map(|r| r.count()).unwrap_or(0);
            assert_eq!(n, 0, "{} is empty", p.display());
        }
        assert_eq!(qemu_processes(&name), 0);
    };

    let err = env.fail(&["vm", "create", &name, "--kernel", "/nonexistent/vmlinuz"]);
    assert!(err.contains("kernel /nonexistent/vmlinuz") && err.lines().count() == 1, "{err}");
    empty(&env);

    let kernel = a.join("vmlinuz").display().to_string();
    let out = env
        .cmd()
        .args(["vm", "create", &name, "--kernel", &kernel])
        .env("STRATA_QEMU", "/nonexistent/qemu")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("/nonexistent/qemu") && err.lines().count() == 1, "{err}");
    empty(&env);

    // A file QEMU cannot boot: QEMU itself refuses, and everything is cleaned up.
    let junk = env.root.path().join("junk");
    std::fs::write(&junk, b"not a kernel").expect("junk");
    let err = env.fail(&["vm", "create", &name, "--kernel", &junk.display().to_string()]);
    assert!(err.contains("QEMU failed to start") && err.lines().count() == 1, "{err}");
    std::fs::remove_file(&junk).expect("rm junk");
    empty(&env);

    for verb in ["stop", "kill", "rm", "logs", "console", "pause", "start"] {
        let err = env.fail(&["vm", verb, "nosuchvm"]);
        assert!(err.contains("no such VM: nosuchvm"), "{verb}: {err}");
    }
    empty(&env);
}

/// An initramfs (gzip'd newc cpio, in `dir`) whose /init loads the guest kernel's pvpanic driver
/// (`pvpanic`, `pvpanic-mmio`: modules in Debian's kernel) and crashes the kernel (sysrq `c`).
fn pvpanic_initrd(dir: &Path) -> PathBuf {
    let kernel = Command::new("bash").arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/guest-kernel.sh")).output().expect("guest-kernel.sh");
    assert!(kernel.status.success(), "guest-kernel.sh: {}", String::from_utf8_lossy(&kernel.stderr));
    let kernel = String::from_utf8_lossy(&kernel.stdout).trim().to_string();
    let script = r#"set -euo pipefail
mkdir -p "$1/root/bin" "$1/root/lib"
cp "$(command -v busybox)" "$1/root/bin/busybox"
for m in pvpanic pvpanic-mmio; do cp "$(find "$2/lib/modules" -name "$m.ko" | head -n1)" "$1/root/lib/"; done
printf '#!/bin/busybox sh\n/bin/busybox mkdir -p /proc\n/bin/busybox mount -t proc proc /proc\n/bin/busybox insmod /lib/pvpanic.ko\n/bin/busybox insmod /lib/pvpanic-mmio.ko\necho c > /proc/sysrq-trigger\n' > "$1/root/init"
chmod +x "$1/root/init"
cd "$1/root" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$1/pvpanic.gz"
"#;
    let out = Command::new("bash").args(["-c", script, "pvpanic"]).arg(dir).arg(&kernel).output().expect("bash");
    assert!(out.status.success(), "building the pvpanic initramfs: {}", String::from_utf8_lossy(&out.stderr));
    dir.join("pvpanic.gz")
}

/// A guest whose kernel panics is recorded as such, whatever QEMU's exit code (`vm list`:
/// exit reason GuestPanicked, the panic as its message): read on the serial console, or, with
/// the console elsewhere, reported by the pvpanic device (QMP GUEST_PANICKED). A kernel that
/// stays halted after its panic (`panic=0`) does not keep QEMU running.
#[test]
fn a_guest_kernel_panic_is_recorded_from_the_console_or_pvpanic() {
    let mut env = Env::new();
    // Boot `name` with this initramfs (default: the test guest's) and command line, without a
    // network; wait until it has exited: its `vm list` record.
    let boot = |env: &mut Env, name: &str, initrd: Option<&Path>, append: &str| {
        let mut args = env.create_args(name);
        let set = |args: &mut Vec<String>, flag: &str, value: String| {
            let at = args.iter().position(|a| a == flag).expect(flag) + 1;
            args[at] = value;
        };
        if let Some(i) = initrd {
            set(&mut args, "--initrd", i.display().to_string());
        }
        set(&mut args, "--append", append.to_string());
        args.extend(["--network".into(), "none".into()]);
        env.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        wait_until(|| env.info(name)["state"] == "exited", &format!("VM {name} to exit: {}", env.info(name)));
        env.info(name)
    };
    // The console: no init at all ("VFS: Unable to mount root fs"), panic=0: the kernel stays
    // halted; the supervisor ends QEMU.
    let name = format!("panic{}", std::process::id());
    let info = boot(&mut env, &name, None, "console=ttyS0 earlyprintk=ttyS0 panic=0 tsc_early_khz=2000000 no_timer_check rdinit=/nonexistent");
    assert_eq!(info["exit_reason"], "GuestPanicked", "{info}");
    assert!(info["exit_message"].as_str().is_some_and(|m| m.starts_with("Kernel panic - not syncing: VFS: Unable to mount root fs")), "{info}");
    assert_eq!(qemu_processes(&name), 0);
    assert!(env.ok(&["vm", "list"]).contains("GuestPanicked"), "vm list shows why");

    // pvpanic: the kernel's messages go to the screen only; its driver tells QEMU.
    let initrd = pvpanic_initrd(env.root.path());
    let name = format!("pvpanic{}", std::process::id());
    let info = boot(&mut env, &name, Some(&initrd), "console=tty0 panic=0 tsc_early_khz=2000000 no_timer_check");
    assert_eq!(info["exit_reason"], "GuestPanicked", "{info}");
    assert_eq!(info["exit_message"], "the guest reported a kernel panic through its pvpanic device (QEMU's panic action: poweroff)", "{info}");
    assert!(!env.logs(&name).contains("Kernel panic"), "nothing on the serial console");
    assert_eq!(qemu_processes(&name), 0);
}

/// QEMU dropped root once the machine was built: a uid of its own, no capabilities.
fn assert_unprivileged(pid: i64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("QEMU's status");
    let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).map(str::trim).unwrap_or("").to_string();
    let uid: u64 = field("Uid:").split_whitespace().next().and_then(|u| u.parse().ok()).expect("uid");
    assert!(uid >= 1_900_000_000, "QEMU runs as uid {uid}");
    assert_eq!(field("CapEff:"), "0000000000000000", "QEMU has no capabilities");
    assert_eq!(field("NoNewPrivs:"), "1", "seccomp sandbox implies no_new_privs");
}

fn sha256(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}


fn http_get(port: u16) -> std::io::Result<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: guest\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// A disk image boots through firmware (SeaBIOS + SYSLINUX on q35) from a per-VM qcow2 overlay:
/// the guest's writes persist across restarts of that VM, a second VM from the same base starts
/// clean, and the base file is never written. The cloud-init seed reaches the guest (the guest
/// mounts the CIDATA disk and prints its meta-data and user-data), and `-p` forwards a host
/// port to the guest's HTTP server through user-mode networking.
#[test]
fn vm_boots_a_disk_image_with_cloud_init_and_port_forward() {
    let mut env = Env::new();
    let base = env.root.path().join("base.qcow2");
    std::fs::copy(assets().join("disk.qcow2"), &base).expect("copy base");
    let base_sum = sha256(&base);
    let user_data = env.root.path().join("user-data.yaml");
    std::fs::write(&user_data, "#cloud-config\nruncmd:\n  - echo strata-user-data-marker\n").expect("user-data");
    let port = free_port();
    let (a, b) = (format!("disk{}", std::process::id()), format!("disk{}b", std::process::id()));
    env.names.extend([a.clone(), b.clone()]);
    let base_s = base.display().to_string();
    let publish = format!("127.0.0.1:{port}:80");
    env.ok(&[
        "vm",
        "create",
        &a,
        "--disk",
        &base_s,
        "--disk-size",
        "64M",
        "--cloud-init",
        &user_data.display().to_string(),
        "--network",
        "user",
        "-p",
        &publish,
    ]);
    let log = env.wait_log(&a, |l| l.contains("STRATA-GUEST-UP"), "the disk VM to boot");
    assert!(log.contains("BOOTCOUNT 1"), "{log}");
    assert!(log.contains(&format!("SEED-HOSTNAME {a}")), "meta-data names the host: {log}");
    assert!(log.contains("SEED-USERDATA   - echo strata-user-data-marker"), "user-data reaches the guest: {log}");
    assert!(log.contains("STRATA-NET-UP 10.0.2.15/24"), "{log}");
    let body = http_get(port).expect("the forwarded port answers");
    assert!(body.contains("served by the strata test guest"), "{body}");

    let info = env.info(&a);
    assert_eq!(info["network"], "user", "{info}");
    assert_eq!(info["image"], base_s.as_str(), "{info}");
    assert_eq!(info["ports"][0], format!("127.0.0.1:{port}->80/tcp"), "{info}");
    assert_eq!(info["state"], "running", "{info}");
    assert_unprivileged(info["pid"].as_i64().expect("pid"));
    // The VM's disk is an overlay on the base, grown to the asked size.
    let id = info["id"].as_str().expect("id");
    let overlay = env.root.path().join("vms").join(id).join("disk.qcow2");
    let out = Command::new("qemu-img").args(["info", "--output=json", "-U"]).arg(&overlay).output().expect("qemu-img");
    let qi: serde_json::Value = serde_json::from_slice(&out.stdout).expect("qemu-img json");
    assert_eq!(qi["backing-filename"], base_s.as_str(), "{qi}");
    assert_eq!(qi["virtual-size"], 64 << 20, "{qi}");

    // Snapshots live in the overlay.
    env.ok(&["vm", "snapshot", &a, "s1"]);
    env.ok(&["vm", "restore", &a, "s1"]);

    // Graceful stop, start again: the guest's write to its disk survived.
    env.ok(&["vm", "stop", "--time", "60", &a]);
    assert_eq!(env.info(&a)["exit_code"], 0);
    env.ok(&["vm", "start", &a]);
    env.wait_log(&a, |l| l.contains("BOOTCOUNT 2"), "the second boot to see the first boot's write");
    env.ok(&["vm", "rm", "-f", &a]);
    assert!(!env.root.path().join("vms").join(id).exists());

    // A second VM from the same base starts from the base's content: nothing leaked into it.
    env.ok(&["vm", "create", &b, "--disk", &base_s, "--network", "none"]);
    let log = env.wait_log(&b, |l| l.contains("STRATA-GUEST-UP"), "the second disk VM to boot");
    assert!(log.contains("BOOTCOUNT 1") && !log.contains("SEED-") && !log.contains("STRATA-NET-UP"), "{log}");
    assert_eq!(env.info(&b)["network"], "none");
    env.ok(&["vm", "rm", "-f", &b]);
    assert_eq!(sha256(&base), base_sum, "the base image was never written");
    assert_eq!(qemu_processes(&a) + qemu_processes(&b), 0);
}

/// Bad disk, seed and network requests: one-line errors naming the problem, nothing left.
#[test]
fn vm_disk_and_network_errors_leave_nothing() {
    let mut env = Env::new();
    let name = format!("baddisk{}", std::process::id());
    env.names.push(name.clone());
    let disk = assets().join("disk.qcow2").display().to_string();
    // A regular file that is no disk image: qemu-img calls it raw, and firmware could not boot it.
    let junk = env.root.path().join("junk.img");
    std::fs::write(&junk, vec![b'x'; 4096]).expect("junk");
    let junk = junk.display().to_string();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_port = format!("127.0.0.1:{}:80", busy.local_addr().expect("addr").port());
    let cases: &[(&[&str], &str)] = &[
        (&["--disk", "/nonexistent/disk.qcow2"], "disk image /nonexistent/disk.qcow2"),
        (&["--disk", &junk], "not a bootable disk image: a raw image without a boot sector (no 55 AA signature at byte 510)"),
        (&["--disk", &disk, "--disk-size", "8M"], "smaller than the image"),
        (&["--disk", &disk, "--disk-size", "lots"], "invalid disk size"),
        (&["--disk", &disk, "--cloud-init", "/nonexistent/ud"], "cloud-init user-data /nonexistent/ud"),
        (&["--disk", &disk, "-p", &busy_port], "cannot be published"),
        (&["--disk", &disk, "--network", "none", "-p", "8080:80"], "without a network"),
        (&["--disk", &disk, "--network", "host"], "invalid network"),
        (&["--disk", &disk, "--append", "x"], "needs a kernel"),
        (&[], "--kernel"),
    ];
    for (args, want) in cases {
        let mut full = vec!["vm", "create", name.as_str()];
        full.extend_from_slice(args);
        let err = env.fail(&full);
        assert!(err.contains(want), "{args:?}: {err}");
        // strata's own errors are one line; clap's usage errors (no --kernel/--disk) are longer.
        assert!(args.is_empty() || err.trim().lines().count() == 1, "{args:?}: one-line error: {err}");
        for d in ["vms", "vm-names"] {
            let n = std::fs::read_dir(env.root.path().join(d)).map(|r| r.count()).unwrap_or(0);
            assert_eq!(n, 0, "{args:?} left something in {d}");
        }
        assert_eq!(qemu_processes(&name), 0);
    }
}

/// Bridge networking: a tap on the node bridge, an address from the bridge's IPAM handed to
/// the guest through the cloud-init seed's network-config, the guest reachable at that address
/// and through a published port (proxied by the VM's supervisor); the address survives a
/// restart, and removal deletes the tap and releases the lease.
#[test]
fn vm_on_the_node_bridge_is_reachable_and_cleaned_up() {
    let mut env = Env::new();
    let name = format!("br{}", std::process::id());
    let port = free_port();
    let mut args = env.create_args(&name);
    args.extend(["--network".into(), "bridge".into(), "-p".into(), format!("127.0.0.1:{port}:80")]);
    env.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let log = env.wait_log(&name, |l| l.contains("STRATA-GUEST-UP"), "the bridged VM to boot");
    let info = env.info(&name);
    assert_eq!(info["network"], "bridge", "{info}");
    let ip = info["ip"].as_str().expect("the VM has an address").to_string();
    assert!(ip.starts_with("10.89."), "{ip}");
    assert!(log.contains(&format!("STRATA-NET-UP {ip}/16")), "the guest configured its leased address: {log}");
    let id = info["id"].as_str().expect("id").to_string();
    assert_unprivileged(info["pid"].as_i64().expect("pid"));
    let tap = format!("stv{}", &id[..12]);
    let master = std::fs::read_link(format!("/sys/class/net/{tap}/master")).expect("the tap is on a bridge");
    assert_eq!(master.file_name().and_then(|n| n.to_str()), Some("strata0"));

    let direct = {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect((ip.as_str(), 80)).expect("connect to the guest");
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
        let mut b = String::new();
        s.read_to_string(&mut b).expect("read");
        b
    };
    assert!(direct.contains("served by the strata test guest"), "{direct}");
    let proxied = http_get(port).expect("the published port answers");
    assert!(proxied.contains("served by the strata test guest"), "{proxied}");

    env.ok(&["vm", "stop", "--time", "60", &name]);
    // `stop` returns once QEMU's exit is recorded; the supervisor that serves the port exits
    // right after (it failed once in CI when checked in that instant).
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "the port closes with the VM");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A tap that disappeared while the VM was stopped (by hand, or a host reboot) is made again.
    let del = Command::new("ip").args(["link", "delete", &tap]).status().expect("ip link delete");
    assert!(del.success() && !Path::new("/sys/class/net").join(&tap).exists());
    env.ok(&["vm", "start", &name]);
    env.wait_log(&name, |l| l.matches("STRATA-GUEST-UP").count() == 2, "the second boot");
    assert_eq!(env.info(&name)["ip"], ip.as_str(), "the address is kept across restarts");
    assert!(http_get(port).expect("published again").contains("served by the strata test guest"));

    env.ok(&["vm", "rm", "-f", &name]);
    assert!(!Path::new("/sys/class/net").join(&tap).exists(), "the tap is removed");
    let leased = std::fs::read_dir("/run/strata/ipam/strata")
        .map(|d| d.flatten().any(|e| std::fs::read_to_string(e.path()).is_ok_and(|c| c.contains(&id))))
        .unwrap_or(false);
    assert!(!leased, "the lease is released");
}

/// Taps on the host named like a VM's (`stv` + 12 hex digits of its id).
fn vm_taps() -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("stv"))
        .collect()
}

/// Bridge IPAM leases: (address, owner id).
fn leases() -> std::collections::BTreeSet<(String, String)> {
    std::fs::read_dir("/run/strata/ipam/strata")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<std::net::Ipv4Addr>().is_ok())
        .map(|e| {
            let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), owner.lines().next().unwrap_or("").trim().to_string())
        })
        .collect()
}

/// `kill -9` of `strata vm create` at random moments leaves nothing half-done: every listed VM
/// is what its facts say (QEMU up in prelaunch, its tap on the bridge, its lease), removable
/// with `vm rm -f` at once, and afterwards no tap, lease, overlay, name or QEMU is left. Fewer
/// iterations than the container loop: each create starts a QEMU, and the delays reach 1.5 s
/// (a create takes about a second here, so 5-150 ms would only ever hit its beginning).
#[test]
fn kill_9_of_vm_create_leaves_nothing_half_done() {
    let mut env = Env::new();
    let base = env.root.path().join("base.qcow2");
    std::fs::copy(assets().join("disk.qcow2"), &base).expect("copy base");
    let taps_before = vm_taps();
    let leases_before = leases();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1;
    eprintln!("random seed {seed}");
    let mut rng = seed;
    let mut below = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    // Issue 13 asks for at least 50 kill -9 iterations.
    let iterations = 50;
    let a = assets();
    let (kernel, initrd, disk) = (a.join("vmlinuz").display().to_string(), a.join("initrd.gz").display().to_string(), base.display().to_string());
    for i in 0..iterations {
        let name = format!("k{}x{i}", std::process::id());
        env.names.push(name.clone());
        let mut args: Vec<&str> = vec!["vm", "create", &name, "--network", "bridge"];
        if i % 2 == 0 {
            args.extend(["--kernel", &kernel, "--initrd", &initrd]);
        } else {
            args.extend(["--disk", &disk]);
        }
        let mut child = env.cmd().args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
        std::thread::sleep(Duration::from_millis(5 + below(1500)));
        let _ = child.kill();
        let _ = child.wait();
    }

    let list: Vec<serde_json::Value> = serde_json::from_str(&env.ok(&["vm", "list", "-o", "json"])).expect("json");
    eprintln!("{} of {iterations} VMs listed", list.len());
    let root = env.root.path().display().to_string();
    for vm in &list {
        let (name, id) = (vm["name"].as_str().expect("name"), vm["id"].as_str().expect("id"));
        // Created (QEMU up with its vCPUs stopped) or started: as QEMU itself says.
        let expected = match vm["state"].as_str() {
            Some("created") => "prelaunch",
            Some("running") => "running",
            _ => panic!("{name} is neither created nor running: {vm}"),
        };
        assert_eq!(vm["qemu_status"].as_str(), Some(expected), "{vm}");
        assert_eq!(qemu_processes(name), 1, "{vm}");
        let tap = format!("stv{}", &id[..12]);
        let master = std::fs::read_link(format!("/sys/class/net/{tap}/master")).expect("the tap is on the bridge");
        assert_eq!(master.file_name().and_then(|n| n.to_str()), Some("strata0"));
        let ip = vm["ip"].as_str().unwrap_or_else(|| panic!("a bridged VM has an address: {vm}"));
        let lease = std::fs::read_to_string(format!("/run/strata/ipam/strata/{ip}")).unwrap_or_default();
        assert!(lease.starts_with(id), "the lease of {ip} is {name}'s: {lease:?}");
    }
    // Every name is held by a listed VM.
    for e in std::fs::read_dir(env.root.path().join("vm-names")).expect("names").flatten() {
        let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
        assert!(list.iter().any(|v| v["id"] == owner.as_str()), "name {:?} held by {owner:?}, not listed", e.file_name());
    }
    // Every new tap and lease belongs to a listed VM.
    let ids: Vec<String> = list.iter().map(|v| v["id"].as_str().expect("id").to_string()).collect();
    let ours = |owner: &str| ids.iter().any(|id| id == owner);
    for tap in vm_taps().difference(&taps_before) {
        assert!(vm_dir_of_tap(tap), "tap {tap} belongs to no VM");
    }
    for (ip, owner) in leases().difference(&leases_before) {
        // Another test's pod sandbox (its network namespace pinned under /run/strata/netns; a VM
        // has none) may take a lease meanwhile on this shared machine.
        let known = ours(owner)
            || Path::new("/run/strata/netns").join(owner).exists()
            || std::fs::read_dir("/var/tmp").into_iter().flatten().flatten().any(|r| {
                ["vms", "containers", "root/vms", "root/containers"].iter().any(|k| r.path().join(k).join(owner).exists())
            });
        assert!(known, "lease {ip} is held by {owner}, which has no workload");
    }

    for vm in &list {
        let t = Instant::now();
        env.ok(&["vm", "rm", "-f", vm["id"].as_str().expect("id")]);
        assert!(t.elapsed() < Duration::from_secs(15), "vm rm -f took {:?}", t.elapsed());
    }
    assert!(env.ok(&["vm", "list", "-o", "json"]).trim() == "[]");
    for dir in ["vms", "vm-names", "intents/vms"] {
        let left: Vec<_> = std::fs::read_dir(env.root.path().join(dir)).into_iter().flatten().flatten().map(|e| e.path()).collect();
        assert!(left.is_empty(), "{dir} still holds {left:?}");
    }
    for id in &ids {
        assert!(!Path::new("/sys/class/net").join(format!("stv{}", &id[..12])).exists(), "tap of {id} left");
        assert!(!leases().iter().any(|(_, o)| o == id), "lease of {id} left");
    }
    for tap in vm_taps().difference(&taps_before) {
        assert!(vm_dir_of_tap(tap), "tap {tap} left without a VM");
    }
    let trash = env.root.path().join("trash");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&trash).map(|d| d.count() > 0).unwrap_or(false) {
        assert!(Instant::now() < deadline, "trash not emptied");
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmd = std::fs::read_to_string(p.path().join("cmdline")).unwrap_or_default().replace('\0', " ");
        // A remover of the (now empty) trash is only exiting.
        assert!(!cmd.contains(&root) || cmd.starts_with("rm -rf -- "), "process left: {cmd}");
    }
}

/// Is there a VM directory for tap `tap` (`stv` + the id's start) under a strata root in /var/tmp:
/// this test's and other tests' (`/var/tmp/svm-*`, or a server's agent root
/// `/var/tmp/strata-api-*/root`), which may make VMs meanwhile on this shared machine?
fn vm_dir_of_tap(tap: &str) -> bool {
    std::fs::read_dir("/var/tmp").into_iter().flatten().flatten().any(|r| {
        [r.path().join("vms"), r.path().join("root/vms")]
            .iter()
            .any(|d| std::fs::read_dir(d).into_iter().flatten().flatten().any(|e| e.file_name().to_string_lossy().starts_with(&tap[3..])))
    })
}

/// `kill -9` of a VM's supervisor: the VM keeps running and gets a new supervisor, so its
/// console, console log and published port work again; `vm rm -f` then removes its tap and
/// lease whatever state the supervisor was in.
#[test]
fn a_vm_whose_supervisor_dies_gets_a_new_one() {
    let mut env = Env::new();
    let name = format!("sup{}", std::process::id());
    let port = free_port();
    let mut args = env.create_args(&name);
    args.extend(["--network".into(), "bridge".into(), "-p".into(), format!("127.0.0.1:{port}:80")]);
    env.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    env.wait_log(&name, |l| l.contains("STRATA-GUEST-UP"), "the guest to boot");
    let info = env.info(&name);
    let id = info["id"].as_str().expect("id").to_string();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.root.path().join("vms").join(&id).join("record.json")).expect("record")).expect("json");
    let supervisor = record["supervisor_pid"].as_i64().expect("supervisor pid");
    Command::new("kill").args(["-9", &supervisor.to_string()]).status().expect("kill");
    std::thread::sleep(Duration::from_millis(300));

    let info = env.info(&name);
    assert_eq!(info["state"], "running", "{info}");
    let mut console = env.console(&name);
    console.stdin.take().expect("stdin").write_all(b"after the loss\n").expect("write");
    env.wait_log(&name, |l| l.contains("GOT: after the loss"), "console input and the console log after the supervisor died");
    let body = http_get(port).expect("the published port answers again");
    assert!(body.contains("served by the strata test guest"), "{body}");

    // Killed again, and removed before anyone looks: the tap still goes.
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.root.path().join("vms").join(&id).join("record.json")).expect("record")).expect("json");
    let replacement = record["supervisor_pid"].as_i64().expect("supervisor pid");
    assert_ne!(replacement, supervisor, "a new supervisor was recorded");
    Command::new("kill").args(["-9", &replacement.to_string()]).status().expect("kill");
    env.ok(&["vm", "rm", "-f", &name]);
    let _ = console.wait();
    assert_eq!(qemu_processes(&name), 0);
    assert!(!Path::new("/sys/class/net").join(format!("stv{}", &id[..12])).exists(), "the tap is removed");
    assert!(!leases().iter().any(|(_, o)| *o == id), "the lease is released");
    assert!(env.info(&name).is_null());
}
